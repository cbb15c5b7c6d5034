//! Where secrets come from: `NAME` or `NAME_FILE`, the token signing key,
//! and the generated JWT secret of development runs.

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use verifier::TokenSigner;
use zeroize::Zeroizing;

use super::{ConfigError, Env, Notices, invalid};
use crate::domain::license_key::{KeyPepper, MIN_PEPPER_LEN};
use crate::keys;

/// `NAME` or the contents of the file named by `NAME_FILE` (not both).
pub(super) fn secret(
    env: &dyn Env,
    name: &'static str,
) -> Result<Option<Zeroizing<String>>, ConfigError> {
    let file_var = format!("{name}_FILE");
    match (env.get(name), env.get(&file_var)) {
        (Some(_), Some(_)) => Err(ConfigError::Invalid {
            var: name,
            reason: format!("set either {name} or {file_var}, not both"),
        }),
        (Some(v), None) => Ok(Some(Zeroizing::new(v))),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::Invalid {
                var: name,
                reason: format!("cannot read {file_var} ({path}): {e}"),
            })?;
            Ok(Some(Zeroizing::new(
                text.trim_end_matches(['\n', '\r']).to_owned(),
            )))
        }
        (None, None) => Ok(None),
    }
}

pub(super) fn signer(
    env: &dyn Env,
    production: bool,
    notices: &mut Notices,
) -> Result<(TokenSigner, bool), ConfigError> {
    let key_file = env.get("SIGNING_KEY_FILE");
    let (key, origin, file_kid): (SigningKey, String, Option<String>) =
        match (env.get("SIGNING_KEY"), key_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "SIGNING_KEY",
                    "set either SIGNING_KEY or SIGNING_KEY_FILE, not both",
                ));
            }
            (Some(pem), None) => (
                keys::parse_pem(&Zeroizing::new(pem), "SIGNING_KEY")
                    .map_err(|e| ConfigError::Key(e.to_string()))?,
                "SIGNING_KEY".into(),
                None,
            ),
            (None, Some(path)) => {
                let path = PathBuf::from(path);
                let key =
                    keys::read_pem_file(&path).map_err(|e| ConfigError::Key(e.to_string()))?;
                (key, path.display().to_string(), kid_from_file_name(&path))
            }
            (None, None) if production => return Err(ConfigError::MissingSigningKey),
            (None, None) => (
                keys::parse_pem(keys::DEVELOPMENT_KEY_PEM, "development key")
                    .map_err(|e| ConfigError::Key(e.to_string()))?,
                "development key".into(),
                None,
            ),
        };
    let dev_public = keys::parse_pem(keys::DEVELOPMENT_KEY_PEM, "development key")
        .map_err(|e| ConfigError::Key(e.to_string()))?
        .verifying_key();
    let is_development = key.verifying_key() == dev_public;
    if is_development && production {
        return Err(ConfigError::DevelopmentKeyInProduction);
    }
    let kid = if is_development {
        keys::DEVELOPMENT_KID.to_owned()
    } else {
        env.get("SIGNING_KEY_ID")
            .or(file_kid)
            .unwrap_or_else(|| keys::default_kid(&key.verifying_key()))
    };
    if is_development {
        notices.push(format!(
            "signing with the DEVELOPMENT key (kid {kid}, from {origin}); only development builds of the CLI trust its tokens"
        ));
    }
    let signer = TokenSigner::new(&kid, key).map_err(|e| ConfigError::Invalid {
        var: "SIGNING_KEY_ID",
        reason: e.to_string(),
    })?;
    Ok((signer, is_development))
}

/// `keys generate` names files `<kid>.pem`; such a file keeps its kid.
fn kid_from_file_name(path: &Path) -> Option<String> {
    let stem = path.file_name()?.to_str()?.strip_suffix(".pem")?;
    verifier::is_valid_kid(stem).then(|| stem.to_owned())
}

/// In development without JWT_SECRET, a random secret is kept in the data
/// directory so sessions survive a restart.
pub(super) fn development_jwt_secret(data_dir: &Path) -> Result<Zeroizing<Vec<u8>>, ConfigError> {
    generated_secret(&data_dir.join("jwt-secret"), "JWT_SECRET")
}

/// `LICENSE_KEY_PEPPER` (or `_FILE`): the secret that keys the stored
/// hashes of license keys. Production refuses to start without one of at
/// least [`MIN_PEPPER_LEN`] bytes; development generates one and keeps it in
/// the data directory (`license-key-pepper`), so keys stay valid across
/// restarts. Losing or changing it makes every stored key unfindable.
pub(super) fn license_key_pepper(
    env: &dyn Env,
    production: bool,
    data_dir: &Path,
    notices: &mut Notices,
) -> Result<KeyPepper, ConfigError> {
    match secret(env, "LICENSE_KEY_PEPPER")? {
        Some(s) if s.len() >= MIN_PEPPER_LEN => Ok(KeyPepper::new(s.as_bytes())),
        Some(_) | None if production => Err(ConfigError::MissingKeyPepper),
        Some(s) => {
            notices.push(format!(
                "LICENSE_KEY_PEPPER is shorter than {MIN_PEPPER_LEN} bytes; acceptable only in development"
            ));
            Ok(KeyPepper::new(s.as_bytes()))
        }
        None => {
            let path = data_dir.join("license-key-pepper");
            notices.push(format!(
                "LICENSE_KEY_PEPPER is not set; using a generated pepper kept in {}",
                path.display()
            ));
            let kept = generated_secret(&path, "LICENSE_KEY_PEPPER")?;
            Ok(KeyPepper::new(&kept))
        }
    }
}

/// A random secret kept at `path` (64 hex characters, mode 0600), made on
/// first use; for development runs without the variable `var`.
fn generated_secret(path: &Path, var: &'static str) -> Result<Zeroizing<Vec<u8>>, ConfigError> {
    let io = |e: std::io::Error| ConfigError::Invalid {
        var,
        reason: format!("cannot keep a generated secret in {}: {e}", path.display()),
    };
    let existing = || -> Result<Option<Zeroizing<Vec<u8>>>, ConfigError> {
        match std::fs::read(path) {
            Ok(kept) if kept.len() >= 32 => Ok(Some(Zeroizing::new(kept))),
            Ok(_) => Err(ConfigError::Invalid {
                var,
                reason: format!(
                    "{} holds under 32 bytes; delete it to have a new secret made",
                    path.display()
                ),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(e)),
        }
    };
    if let Some(kept) = existing()? {
        return Ok(kept);
    }
    let mut secret = Zeroizing::new(vec![0u8; 32]);
    getrandom::fill(&mut secret).map_err(|e| ConfigError::Key(e.to_string()))?;
    let hexed = Zeroizing::new(hex::encode(&*secret).into_bytes());
    // Never over one another process made meanwhile: every process on this
    // folder must use the same secret (a license key stored under one
    // pepper is found under no other).
    if crate::fsutil::write_new_private_file(path, &hexed).map_err(io)? {
        return Ok(hexed);
    }
    existing()?.ok_or_else(|| io(std::io::ErrorKind::NotFound.into()))
}

/// The public keys `/api/v1/keys` publishes: the signing key's first, then
/// those of `PUBLISHED_KEYS_FILE` (a JWK Set: the previous key while its
/// tokens live, the next key before the switch). A kid may not stand for
/// two keys; production refuses the development key.
pub(super) fn published_keys(
    env: &dyn Env,
    signer: &TokenSigner,
    production: bool,
) -> Result<Vec<keys::Jwk>, ConfigError> {
    let bad = |reason: String| invalid("PUBLISHED_KEYS_FILE", &reason);
    let current = ed25519_dalek::VerifyingKey::from_bytes(&signer.public_key())
        .map_err(|_| ConfigError::Key("the signing key has no valid public key".into()))?;
    let mut out = vec![keys::Jwk::new(signer.kid(), &current)];
    let Some(path) = env.get("PUBLISHED_KEYS_FILE") else {
        return Ok(out);
    };
    let text =
        std::fs::read_to_string(&path).map_err(|e| bad(format!("cannot read {path}: {e}")))?;
    let dev_public = keys::parse_pem(keys::DEVELOPMENT_KEY_PEM, "development key")
        .map_err(|e| ConfigError::Key(e.to_string()))?
        .verifying_key();
    for (kid, public) in keys::parse_public_jwks(&text).map_err(|e| bad(format!("{path}: {e}")))? {
        if production && public == dev_public {
            return Err(bad(format!(
                "{path} holds the development key ({kid}); production publishes only production keys"
            )));
        }
        if kid == signer.kid() {
            if public == current {
                continue;
            }
            return Err(bad(format!(
                "{path} gives kid {kid} another key than the signing key's"
            )));
        }
        if public == current {
            return Err(bad(format!(
                "{path} publishes the signing key under another kid ({kid})"
            )));
        }
        out.push(keys::Jwk::new(&kid, &public));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Overrides};

    fn load(env: &dyn Env) -> Result<Config, ConfigError> {
        Config::load(env, &Overrides::default(), &mut Vec::new())
    }

    #[test]
    fn processes_starting_at_once_on_a_new_data_folder_share_one_generated_pepper() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("new");
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let data = data.clone();
                std::thread::spawn(move || {
                    let cfg = load(&[("CODITECT_DATA_DIR", data.to_str().unwrap())]).unwrap();
                    let key = crate::domain::license_key::LicenseKey::parse(
                        "CODITECT-PILOT-ABCD-EFGH-JKMN",
                    )
                    .unwrap();
                    key.hash(&cfg.license_key_pepper)
                })
            })
            .collect();
        let peppers: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(peppers.windows(2).all(|w| w[0] == w[1]));
    }

    #[test]
    fn secrets_can_come_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let f = dir.path().join("jwt");
        std::fs::write(&f, "0123456789abcdef0123456789abcdef-from-file\n").unwrap();
        let cfg = load(&[
            ("CODITECT_DATA_DIR", d),
            ("JWT_SECRET_FILE", f.to_str().unwrap()),
        ])
        .unwrap();
        assert_eq!(
            &*cfg.jwt_secret,
            b"0123456789abcdef0123456789abcdef-from-file"
        );
        assert!(
            load(&[
                ("CODITECT_DATA_DIR", d),
                ("JWT_SECRET_FILE", f.to_str().unwrap()),
                ("JWT_SECRET", "x")
            ])
            .is_err()
        );
    }

    #[test]
    fn published_keys_add_the_previous_and_next_keys_after_the_signing_key() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let next = keys::generate().unwrap().verifying_key();
        let jwks = |entries: &[(&str, &ed25519_dalek::VerifyingKey)]| {
            let keys: Vec<keys::Jwk> = entries.iter().map(|(k, v)| keys::Jwk::new(k, v)).collect();
            serde_json::json!({ "keys": keys }).to_string()
        };
        let file = dir.path().join("published.jwks.json");
        let f = file.to_str().unwrap();
        std::fs::write(&file, jwks(&[("next-2027", &next)])).unwrap();
        let cfg = load(&[("CODITECT_DATA_DIR", d), ("PUBLISHED_KEYS_FILE", f)]).unwrap();
        let kids: Vec<&str> = cfg.published_keys.iter().map(|k| k.kid.as_str()).collect();
        assert_eq!(kids, [keys::DEVELOPMENT_KID, "next-2027"]);
        // Production publishes no development key.
        let prod_key = dir.path().join("prod.pem");
        keys::write_pem_file(&prod_key, &keys::generate().unwrap()).unwrap();
        let dev = keys::parse_pem(keys::DEVELOPMENT_KEY_PEM, "dev")
            .unwrap()
            .verifying_key();
        std::fs::write(&file, jwks(&[("old-dev", &dev)])).unwrap();
        let production = [
            ("CODITECT_DATA_DIR", d),
            ("CODITECT_ENV", "production"),
            ("JWT_SECRET", "0123456789abcdef0123456789abcdef-production"),
            (
                "LICENSE_KEY_PEPPER",
                "0123456789abcdef0123456789abcdef-pepper",
            ),
            ("SIGNING_KEY_FILE", prod_key.to_str().unwrap()),
            ("STRIPE_SECRET_KEY", "sk_test_x"),
            ("STRIPE_WEBHOOK_SECRET", "whsec_x"),
            ("STRIPE_PRICE_STARTER_MONTHLY", "price_sm"),
            ("STRIPE_PRICE_STARTER_ANNUAL", "price_sa"),
            ("STRIPE_PRICE_PRO_MONTHLY", "price_pm"),
            ("STRIPE_PRICE_PRO_ANNUAL", "price_pa"),
            ("SMTP_URL", "smtp://127.0.0.1:1"),
            ("PUBLISHED_KEYS_FILE", f),
        ];
        match load(&production) {
            Err(ConfigError::Invalid { var, reason }) => {
                assert_eq!(var, "PUBLISHED_KEYS_FILE");
                assert!(reason.contains("development key"), "{reason}");
            }
            other => panic!("production published the development key: {other:?}"),
        }
        std::fs::write(&file, jwks(&[("next-2027", &next)])).unwrap();
        assert_eq!(load(&production).unwrap().published_keys.len(), 2);
        // Without the file, only the signing key.
        let cfg = load(&[("CODITECT_DATA_DIR", d)]).unwrap();
        assert_eq!(cfg.published_keys.len(), 1);
        // One kid for two keys, the signing key under another kid, a file
        // that is not a JWK Set: refused, naming the variable.
        let dev = keys::parse_pem(keys::DEVELOPMENT_KEY_PEM, "dev")
            .unwrap()
            .verifying_key();
        for bad in [
            jwks(&[(keys::DEVELOPMENT_KID, &next)]),
            jwks(&[("renamed", &dev)]),
            "{\"keys\": [{\"kty\": \"RSA\", \"kid\": \"r\"}]}".to_owned(),
            "not json".to_owned(),
        ] {
            std::fs::write(&file, &bad).unwrap();
            match load(&[("CODITECT_DATA_DIR", d), ("PUBLISHED_KEYS_FILE", f)]) {
                Err(ConfigError::Invalid { var, .. }) => {
                    assert_eq!(var, "PUBLISHED_KEYS_FILE", "{bad}")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
