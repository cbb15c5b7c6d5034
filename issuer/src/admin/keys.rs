//! `keys generate` and `keys list`: signing keys.

use std::path::PathBuf;

use serde_json::json;

use super::{AdminError, print_json};
use crate::config::Overrides;
use crate::keys::{self, Jwk};
use crate::serve::load_config;

pub fn keys_generate(
    kid: Option<&str>,
    out: Option<PathBuf>,
    json: bool,
) -> Result<(), AdminError> {
    let key = keys::generate()?;
    let kid = match kid {
        Some(k) if verifier::is_valid_kid(k) => k.to_owned(),
        Some(_) => {
            return Err(AdminError::User(
                "--kid must be 1-64 characters of A-Z a-z 0-9 . _ -".into(),
            ));
        }
        None => keys::default_kid(&key.verifying_key()),
    };
    let path = match out {
        Some(p) => p,
        None => {
            let config = load_config(&Overrides::default())?;
            let dir = config.data_dir.join("keys");
            std::fs::create_dir_all(&dir)
                .map_err(|e| AdminError::User(format!("cannot create {}: {e}", dir.display())))?;
            dir.join(format!("{kid}.pem"))
        }
    };
    keys::write_pem_file(&path, &key)?;
    let jwk = Jwk::new(&kid, &key.verifying_key());
    if json {
        return print_json(&json!({ "kid": kid, "private_key_file": path, "jwk": jwk }));
    }
    println!("kid: {kid}");
    println!(
        "private key: {} (mode 0600; keep it secret)",
        path.display()
    );
    println!("public JWK (add to keys/trusted.jwks.json for CLI releases):");
    println!(
        "{}",
        serde_json::to_string_pretty(&jwk).map_err(|e| AdminError::Unexpected(e.to_string()))?
    );
    Ok(())
}

pub fn keys_list(json: bool) -> Result<(), AdminError> {
    let config = load_config(&Overrides::default())?;
    let current = Jwk::new(
        config.signer.kid(),
        &ed25519_dalek::VerifyingKey::from_bytes(&config.signer.public_key())
            .map_err(|e| AdminError::Unexpected(e.to_string()))?,
    );
    let dir = config.data_dir.join("keys");
    let mut stored = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "pem"))
        {
            match keys::read_pem_file(&path) {
                Ok(k) => {
                    let kid = path
                        .file_stem()
                        .and_then(|s| s.to_str())
                        .filter(|s| verifier::is_valid_kid(s))
                        .map_or_else(|| keys::default_kid(&k.verifying_key()), str::to_owned);
                    stored.push((path, Some(Jwk::new(&kid, &k.verifying_key()))));
                }
                Err(_) => stored.push((path, None)),
            }
        }
    }
    if json {
        return print_json(&json!({
            "signing": { "jwk": current, "development": config.signing_key_is_development },
            "stored": stored.iter().map(|(p, j)| json!({ "file": p, "jwk": j })).collect::<Vec<_>>(),
        }));
    }
    println!(
        "signing key: {}{}",
        current.kid,
        if config.signing_key_is_development {
            " (DEVELOPMENT key: not for production)"
        } else {
            ""
        }
    );
    println!("  x: {}", current.x);
    println!("keys in {}:", dir.display());
    if stored.is_empty() {
        println!("  (none)");
    }
    for (path, jwk) in stored {
        match jwk {
            Some(j) => println!("  {}  x: {}  ({})", j.kid, j.x, path.display()),
            None => println!("  unreadable: {}", path.display()),
        }
    }
    Ok(())
}
