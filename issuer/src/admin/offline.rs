//! `license issue-offline`: a token file for an air-gapped machine.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{AdminError, run};
use crate::app::{licenses, now};
use crate::config::Overrides;
use crate::domain::{input, rfc3339};
use crate::serve::{load_config, migrations_for, open_store};

/// The file `coditect activate --offline-request` writes.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineRequest {
    pub format: String,
    pub license_key: String,
    pub hardware_id: String,
    #[serde(default)]
    pub machine_name: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
}

pub const OFFLINE_REQUEST_FORMAT: &str = "coditect-activation-request-v1";
pub const OFFLINE_TOKEN_FORMAT: &str = "coditect-license-token-v1";

/// The file `coditect activate --token-file` imports.
#[derive(Debug, Serialize, Deserialize)]
pub struct OfflineToken {
    pub format: String,
    /// base64url (no padding) of the COSE_Sign1 bytes.
    pub token: String,
    pub license_id: String,
    pub expires_at: String,
}

pub fn issue_offline(
    request: &Path,
    out: &Path,
    valid_for: Option<&str>,
) -> Result<(), AdminError> {
    let text = std::fs::read_to_string(request)
        .map_err(|e| AdminError::User(format!("cannot read {}: {e}", request.display())))?;
    let req: OfflineRequest = serde_json::from_str(&text).map_err(|e| {
        AdminError::User(format!(
            "{} is not an activation request from `coditect activate --offline-request`: {e}",
            request.display()
        ))
    })?;
    if req.format != OFFLINE_REQUEST_FORMAT {
        return Err(AdminError::User(format!(
            "{}: unknown format `{}` (expected {OFFLINE_REQUEST_FORMAT})",
            request.display(),
            req.format
        )));
    }
    let field = |e: input::FieldError| AdminError::User(format!("{}: {}", request.display(), e));
    let key = input::license_key("license_key", &req.license_key).map_err(field)?;
    let hw = input::hardware_id("hardware_id", &req.hardware_id).map_err(field)?;
    let name = input::optional_name("machine_name", req.machine_name.as_deref()).map_err(field)?;
    let now = now();
    let valid_for = valid_for
        .map(|v| {
            humantime::parse_duration(v)
                .map_err(|_| AdminError::User(format!("--valid-for: `{v}` is not a duration")))
        })
        .transpose()?;
    let config = load_config(&Overrides::default())?;
    let store = run(open_store(&config, migrations_for(&config)))?;
    let issued = run(async {
        Ok(licenses::activate_offline(
            &store,
            &config.signer,
            &key,
            &hw,
            name.as_deref(),
            valid_for.map(|d| d.as_secs()),
            now,
        )
        .await?)
    })?;
    let grant = &issued.grant;
    let expires_at = issued.token.claims.expires_at;
    let file = OfflineToken {
        format: OFFLINE_TOKEN_FORMAT.into(),
        token: {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&issued.token.bytes)
        },
        license_id: grant.license.id.clone(),
        expires_at: rfc3339(i64::try_from(expires_at).unwrap_or(i64::MAX)),
    };
    let body =
        serde_json::to_vec_pretty(&file).map_err(|e| AdminError::Unexpected(e.to_string()))?;
    crate::fsutil::write_private_file(out, &body)
        .map_err(|e| AdminError::User(format!("cannot write {}: {e}", out.display())))?;
    println!(
        "token for machine {} on license {} written to {} (good until {}); import it with `coditect activate --token-file {}`",
        name.as_deref().unwrap_or("(unnamed)"),
        grant.license.id,
        out.display(),
        file.expires_at,
        out.display()
    );
    Ok(())
}
