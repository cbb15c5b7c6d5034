//! Signing keys: creating them, reading them, and publishing their public
//! halves as a JWK Set (`docs/ARCHITECTURE.md`, "The license token").

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The key id of the development key pair in `keys/development/`. Its private
/// half is public, so a production configuration refuses it.
pub const DEVELOPMENT_KID: &str = "coditect-dev";

/// The development private key, compiled in so that a fresh checkout runs
/// with nothing configured.
pub const DEVELOPMENT_KEY_PEM: &str =
    include_str!("../../keys/development/coditect-dev.private.pem");

/// Why a key could not be made or read. Messages name the file, never the
/// key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read the signing key file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not an Ed25519 private key in PKCS#8 PEM form")]
    Parse { path: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("the operating system's random generator failed: {0}")]
    Random(String),
    #[error("{0}")]
    Invalid(String),
}

/// A new key from the operating system's CSPRNG.
pub fn generate() -> Result<SigningKey, KeyFileError> {
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut()).map_err(|e| KeyFileError::Random(e.to_string()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// A key id derived from the public key, for keys created without one.
pub fn default_kid(key: &VerifyingKey) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let short = URL_SAFE_NO_PAD.encode(digest.get(..6).unwrap_or_default());
    format!("coditect-{short}")
}

/// Reads a PKCS#8 PEM private key.
pub fn parse_pem(pem: &str, origin: &str) -> Result<SigningKey, KeyFileError> {
    SigningKey::from_pkcs8_pem(pem.trim()).map_err(|_| KeyFileError::Parse {
        path: origin.to_owned(),
    })
}

/// Reads a PKCS#8 PEM private key file.
pub fn read_pem_file(path: &Path) -> Result<SigningKey, KeyFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse_pem(&text, &path.display().to_string())
}

/// Writes the private key as PKCS#8 PEM, readable by its owner only, and
/// never over an existing file.
pub fn write_pem_file(path: &Path, key: &SigningKey) -> Result<(), KeyFileError> {
    let write_err = |source| KeyFileError::Write {
        path: path.display().to_string(),
        source,
    };
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| KeyFileError::Invalid(e.to_string()))?;
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(write_err)?;
    file.write_all(pem.as_bytes()).map_err(write_err)?;
    file.sync_all().map_err(write_err)
}

/// One public key in JWK form (RFC 8037).
#[derive(Debug, Clone, Serialize, PartialEq, Eq, poem_openapi::Object)]
pub struct Jwk {
    /// Key type: always `OKP`.
    pub kty: String,
    /// Curve: always `Ed25519`.
    pub crv: String,
    /// The public key, base64url without padding.
    pub x: String,
    /// Key id, as in the token's protected header.
    pub kid: String,
    /// Algorithm: always `EdDSA`.
    pub alg: String,
    /// Use: always `sig`.
    #[serde(rename = "use")]
    #[oai(rename = "use")]
    pub use_: String,
}

/// A JWK Set.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, poem_openapi::Object)]
pub struct JwkSet {
    /// The keys.
    pub keys: Vec<Jwk>,
}

impl Jwk {
    /// The JWK of a public key.
    pub fn new(kid: &str, key: &VerifyingKey) -> Self {
        Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: URL_SAFE_NO_PAD.encode(key.as_bytes()),
            kid: kid.into(),
            alg: "EdDSA".into(),
            use_: "sig".into(),
        }
    }
}

/// The Ed25519 public keys of a JWK Set (as `keys generate` prints them
/// and `/api/v1/keys` publishes them), with their kids.
pub fn parse_public_jwks(text: &str) -> Result<Vec<(String, VerifyingKey)>, String> {
    let doc: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let keys = doc["keys"]
        .as_array()
        .ok_or("not a JWK Set: no `keys` array")?;
    let mut out: Vec<(String, VerifyingKey)> = Vec::with_capacity(keys.len());
    for (i, key) in keys.iter().enumerate() {
        let kid = key["kid"]
            .as_str()
            .filter(|k| !k.is_empty())
            .ok_or(format!("key {i} has no kid"))?;
        if key["kty"] != "OKP" || key["crv"] != "Ed25519" {
            return Err(format!("key {kid} is not an Ed25519 (OKP) key"));
        }
        let x = key["x"]
            .as_str()
            .and_then(|x| URL_SAFE_NO_PAD.decode(x).ok())
            .and_then(|x| <[u8; 32]>::try_from(x).ok())
            .ok_or(format!("key {kid}: x is not 32 bytes of base64url"))?;
        let public =
            VerifyingKey::from_bytes(&x).map_err(|_| format!("key {kid}: not an Ed25519 point"))?;
        if out.iter().any(|(k, _)| k == kid) {
            return Err(format!("kid {kid} appears twice"));
        }
        out.push((kid.to_owned(), public));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn development_key_matches_its_published_jwk() {
        let key = parse_pem(DEVELOPMENT_KEY_PEM, "dev").unwrap();
        let jwks: serde_json::Value = serde_json::from_str(include_str!(
            "../../keys/development/coditect-dev.jwks.json"
        ))
        .unwrap();
        let published = &jwks["keys"][0];
        assert_eq!(published["kid"], DEVELOPMENT_KID);
        let ours = serde_json::to_value(Jwk::new(DEVELOPMENT_KID, &key.verifying_key())).unwrap();
        assert_eq!(&ours, published);
    }

    #[test]
    fn generated_keys_round_trip_through_pem_and_refuse_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        let key = generate().unwrap();
        write_pem_file(&path, &key).unwrap();
        assert_eq!(read_pem_file(&path).unwrap().to_bytes(), key.to_bytes());
        assert!(matches!(
            write_pem_file(&path, &key),
            Err(KeyFileError::Write { .. })
        ));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_ne!(generate().unwrap().to_bytes(), key.to_bytes());
    }

    #[test]
    fn garbage_key_files_are_refused_without_echoing_them() {
        let err = parse_pem(
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----",
            "x.pem",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("x.pem") && !msg.contains("c2VjcmV0"), "{msg}");
    }
}
