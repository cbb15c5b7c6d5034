//! Where secrets come from: `NAME` or `NAME_FILE`, the token signing key,
//! and the generated JWT secret of development runs.

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use verifier::TokenSigner;
use zeroize::Zeroizing;

use super::{ConfigError, Env, Notices, invalid};
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
    let path = data_dir.join("jwt-secret");
    let io = |e: std::io::Error| ConfigError::Invalid {
        var: "JWT_SECRET",
        reason: format!("cannot keep a generated secret in {}: {e}", path.display()),
    };
    if let Ok(existing) = std::fs::read(&path)
        && existing.len() >= 32
    {
        return Ok(Zeroizing::new(existing));
    }
    std::fs::create_dir_all(data_dir).map_err(io)?;
    let mut secret = Zeroizing::new(vec![0u8; 32]);
    getrandom::fill(&mut secret).map_err(|e| ConfigError::Key(e.to_string()))?;
    let hexed = Zeroizing::new(hex::encode(&*secret).into_bytes());
    crate::fsutil::write_private_file(&path, &hexed).map_err(io)?;
    Ok(hexed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Overrides};

    fn load(env: &dyn Env) -> Result<Config, ConfigError> {
        Config::load(env, &Overrides::default(), &mut Vec::new())
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
}
