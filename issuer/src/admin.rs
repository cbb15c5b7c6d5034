//! Admin commands: run locally by an operator, never over HTTP.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::api::{now, rfc3339};
use crate::config::{ConfigError, Overrides};
use crate::db::DbError;
use crate::keys::{self, Jwk};
use crate::license_key::LicenseKey;
use crate::licensing::{self, License, LicenseError, NewLicense};
use crate::serve::{load_config, open_db};
use crate::{plans, tokens};

/// Why a command failed; the exit code tells scripts whether it was the
/// operator's input (1) or something unexpected (2).
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    User(String),
    #[error("{0}")]
    Unexpected(String),
}

impl AdminError {
    pub fn exit_code(&self) -> u8 {
        match self {
            AdminError::User(_) => 1,
            AdminError::Unexpected(_) => 2,
        }
    }
}

impl From<ConfigError> for AdminError {
    fn from(e: ConfigError) -> Self {
        AdminError::User(format!("configuration: {e}"))
    }
}

impl From<DbError> for AdminError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::NewerSchema { .. } => AdminError::User(e.to_string()),
            other => AdminError::Unexpected(other.to_string()),
        }
    }
}

impl From<LicenseError> for AdminError {
    fn from(e: LicenseError) -> Self {
        match e {
            LicenseError::Db(db) => db.into(),
            other => AdminError::User(other.to_string()),
        }
    }
}

impl From<keys::KeyFileError> for AdminError {
    fn from(e: keys::KeyFileError) -> Self {
        AdminError::User(e.to_string())
    }
}

fn print_json(value: &serde_json::Value) -> Result<(), AdminError> {
    let text =
        serde_json::to_string_pretty(value).map_err(|e| AdminError::Unexpected(e.to_string()))?;
    println!("{text}");
    Ok(())
}

pub fn migrate() -> Result<(), AdminError> {
    let config = load_config(&Overrides::default())?;
    let db = open_db(&config)?;
    let conn = db.conn()?;
    let version = crate::db::schema_version(&conn).map_err(DbError::from)?;
    println!(
        "database {} is at schema version {version}",
        db.path().display()
    );
    Ok(())
}

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

/// Arguments of `license create`.
pub struct CreateArgs {
    pub email: String,
    pub tier: String,
    pub expires: Option<String>,
    pub max_devices: Option<u32>,
    pub org: Option<String>,
    pub json: bool,
}

/// `--expires`: a date, an RFC 3339 time, or a duration from `now`.
pub fn parse_expiry(text: &str, now: i64) -> Result<i64, AdminError> {
    use time::format_description::well_known::Rfc3339;
    let text = text.trim();
    if let Ok(t) = time::OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(t.unix_timestamp());
    }
    let date_format = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(d) = time::Date::parse(text, &date_format) {
        return Ok(d.midnight().assume_utc().unix_timestamp());
    }
    if let Ok(d) = humantime::parse_duration(text) {
        return Ok(now.saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)));
    }
    Err(AdminError::User(format!(
        "--expires: `{text}` is not a date (2027-03-24), an RFC 3339 time or a duration (90days)"
    )))
}

fn license_json(l: &License, activations: &[licensing::Activation]) -> serde_json::Value {
    let used = activations.iter().filter(|a| a.active).count();
    json!({
        "id": l.id,
        "key_hint": l.key_hint,
        "tier": l.tier,
        "status": l.status.as_str(),
        "email": l.email,
        "organization": l.organization_name,
        "expires_at": rfc3339(l.expires_at),
        "max_activations": l.max_activations,
        "devices_used": used,
        "entitlements": {
            "max_projects": crate::api::licenses::entitlements_view(l).max_projects,
            "ai_requests": l.ai_requests,
            "max_devices": l.max_activations,
        },
        "created_at": rfc3339(l.created_at),
        "revoked_reason": l.revoked_reason,
        "activations": activations.iter().map(|a| json!({
            "id": a.id,
            "hardware_id": a.hardware_id,
            "machine_name": a.machine_name,
            "status": if a.active { "active" } else { "deactivated" },
            "activated_at": rfc3339(a.activated_at),
            "last_validated_at": rfc3339(a.last_validated_at),
        })).collect::<Vec<_>>(),
    })
}

fn print_license(l: &License, activations: &[licensing::Activation]) {
    let used = activations.iter().filter(|a| a.active).count();
    let plan = plans::find(&l.tier).map_or(l.tier.as_str(), |p| p.name);
    println!("license {}", l.id);
    println!("  plan:     {plan} ({})", l.tier);
    println!("  status:   {}", l.status.as_str());
    println!("  email:    {}", l.email);
    if let Some(org) = &l.organization_name {
        println!("  org:      {org}");
    }
    println!("  expires:  {}", rfc3339(l.expires_at));
    println!("  devices:  {used}/{}", l.max_activations);
    println!("  key:      CODITECT-PILOT-…-{}", l.key_hint);
    for a in activations {
        println!(
            "  machine {} {} {} last seen {}",
            a.id,
            if a.active {
                "active     "
            } else {
                "deactivated"
            },
            a.machine_name.as_deref().unwrap_or("(unnamed)"),
            rfc3339(a.last_validated_at)
        );
    }
}

pub fn license_create(args: &CreateArgs) -> Result<(), AdminError> {
    let plan = plans::find(&args.tier).ok_or_else(|| {
        AdminError::User(format!(
            "--tier: unknown plan `{}`; choose one of {}",
            args.tier,
            plans::ids()
        ))
    })?;
    if args.max_devices == Some(0) {
        return Err(AdminError::User(
            "--max-devices must be at least 1 (a license with no devices could never be activated)"
                .into(),
        ));
    }
    let email = crate::api::validate::email("email", &args.email)
        .map_err(|e| AdminError::User(format!("--email: {}", e.problem().detail)))?;
    let now = now();
    let expires_at = match &args.expires {
        Some(text) => parse_expiry(text, now)?,
        None => now.saturating_add(365 * 86_400),
    };
    if expires_at <= now {
        return Err(AdminError::User(
            "--expires: the date is in the past".into(),
        ));
    }
    let org = args
        .org
        .as_deref()
        .map(|o| crate::api::validate::name("org", o))
        .transpose()
        .map_err(|e| AdminError::User(format!("--org: {}", e.problem().detail)))?;
    let config = load_config(&Overrides::default())?;
    let db = open_db(&config)?;
    let conn = db.conn()?;
    let org_id = match &org {
        Some(name) => {
            let id = uuid::Uuid::new_v4().to_string();
            conn.execute(
                "INSERT INTO organizations (id, name, created_at) VALUES (?1, ?2, ?3)",
                rusqlite::params![id, name, now],
            )
            .map_err(DbError::from)?;
            Some(id)
        }
        None => None,
    };
    let (license, key) = licensing::create(
        &conn,
        &NewLicense {
            email: &email,
            plan,
            expires_at,
            max_devices: args.max_devices,
            organization_id: org_id.as_deref(),
            stripe_subscription_id: None,
        },
        now,
    )?;
    crate::audit::record(
        &conn,
        &crate::audit::Event::new(now, "license_created", "ok")
            .actor("admin")
            .subject("license", license.id.clone())
            .detail(format!("tier {}", license.tier)),
    )
    .map_err(DbError::from)?;
    if args.json {
        let mut v = license_json(&license, &[]);
        v["key"] = json!(key.expose());
        return print_json(&v);
    }
    println!("license created");
    println!("  key:      {}", key.expose());
    println!("            (shown only now: the database keeps a hash)");
    print_license(&license, &[]);
    Ok(())
}

/// A license named by id or by key.
fn find_license(conn: &rusqlite::Connection, which: &str) -> Result<License, AdminError> {
    let found = match LicenseKey::parse(which) {
        Ok(key) => licensing::find_by_key(conn, &key)?,
        Err(_) => licensing::get(conn, which.trim())?,
    };
    found.ok_or_else(|| AdminError::User(format!("no license with id or key `{}`", which.trim())))
}

pub fn license_list(json: bool) -> Result<(), AdminError> {
    let config = load_config(&Overrides::default())?;
    let db = open_db(&config)?;
    let conn = db.conn()?;
    let licenses = licensing::list(&conn, None)?;
    let mut rows = Vec::new();
    for l in licenses {
        let acts = licensing::activations(&conn, &l.id)?;
        rows.push((l, acts));
    }
    if json {
        return print_json(&json!(
            rows.iter()
                .map(|(l, a)| license_json(l, a))
                .collect::<Vec<_>>()
        ));
    }
    if rows.is_empty() {
        println!("no licenses yet; create one with `coditect-issuer license create`");
    }
    for (l, acts) in &rows {
        let used = acts.iter().filter(|a| a.active).count();
        println!(
            "{}  {:<18} {:<9} {}/{} devices  expires {}  {}",
            l.id,
            l.tier,
            l.status.as_str(),
            used,
            l.max_activations,
            rfc3339(l.expires_at),
            l.email
        );
    }
    Ok(())
}

pub fn license_show(which: &str, json: bool) -> Result<(), AdminError> {
    let config = load_config(&Overrides::default())?;
    let db = open_db(&config)?;
    let conn = db.conn()?;
    let license = find_license(&conn, which)?;
    let acts = licensing::activations(&conn, &license.id)?;
    if json {
        return print_json(&license_json(&license, &acts));
    }
    print_license(&license, &acts);
    Ok(())
}

pub fn license_revoke(which: &str, reason: Option<&str>, json: bool) -> Result<(), AdminError> {
    let config = load_config(&Overrides::default())?;
    let db = open_db(&config)?;
    let conn = db.conn()?;
    let license = find_license(&conn, which)?;
    let now = now();
    let revoked = licensing::revoke(&conn, &license.id, reason, now)?;
    let mut event = crate::audit::Event::new(now, "license_revoked", "ok")
        .actor("admin")
        .subject("license", revoked.id.clone());
    if let Some(r) = reason {
        event = event.detail(r.chars().take(200).collect::<String>());
    }
    crate::audit::record(&conn, &event).map_err(DbError::from)?;
    let acts = licensing::activations(&conn, &revoked.id)?;
    if json {
        return print_json(&license_json(&revoked, &acts));
    }
    println!(
        "license {} revoked: renewals are refused from now on; tokens already issued lapse within their lifetime",
        revoked.id
    );
    Ok(())
}

/// `audit`: prints the audit log, oldest first.
pub fn audit_list(
    since: Option<&str>,
    event: Option<&str>,
    limit: u32,
    json: bool,
) -> Result<(), AdminError> {
    let now = now();
    let since = since
        .map(|s| match humantime::parse_duration(s.trim()) {
            Ok(d) => Ok(now.saturating_sub(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))),
            Err(_) => parse_expiry(s, now).map_err(|_| {
                AdminError::User(format!(
                    "--since: `{s}` is not a date (2026-11-28), an RFC 3339 time or a duration (24h)"
                ))
            }),
        })
        .transpose()?;
    let config = load_config(&Overrides::default())?;
    let db = open_db(&config)?;
    let conn = db.conn()?;
    let events = crate::audit::query(&conn, since, event, limit).map_err(DbError::from)?;
    if json {
        return print_json(&json!(
            events
                .iter()
                .map(|e| {
                    let mut v = serde_json::to_value(e).unwrap_or_default();
                    v["at"] = json!(rfc3339(e.at));
                    v
                })
                .collect::<Vec<_>>()
        ));
    }
    if events.is_empty() {
        println!("no audit events");
    }
    for e in &events {
        println!(
            "{}  {:<16} {:<22} {:<44} ip={} {}{}",
            rfc3339(e.at),
            e.event,
            e.outcome,
            e.actor.as_deref().unwrap_or("-"),
            e.ip.as_deref().unwrap_or("-"),
            match (&e.subject_type, &e.subject_id) {
                (Some(t), Some(id)) => format!("{t}={id}"),
                _ => String::new(),
            },
            e.detail
                .as_deref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

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
    let field = |e: crate::api::problem::ApiError| {
        AdminError::User(format!("{}: {}", request.display(), e.problem().detail))
    };
    let key = crate::api::validate::license_key("license_key", &req.license_key).map_err(field)?;
    let hw = crate::api::validate::hardware_id("hardware_id", &req.hardware_id).map_err(field)?;
    let name = crate::api::validate::optional_name("machine_name", req.machine_name.as_deref())
        .map_err(field)?;
    let now = now();
    let valid_for = valid_for
        .map(|v| {
            humantime::parse_duration(v)
                .map_err(|_| AdminError::User(format!("--valid-for: `{v}` is not a duration")))
        })
        .transpose()?;
    let config = load_config(&Overrides::default())?;
    let db = open_db(&config)?;
    let mut conn = db.conn()?;
    let grant = licensing::activate(&mut conn, &key, &hw, name.as_deref(), now)?;
    let now_u = u64::try_from(now).unwrap_or(0);
    let license_end = u64::try_from(grant.license.expires_at).unwrap_or(0);
    let expires_at = valid_for
        .map_or(license_end, |d| now_u.saturating_add(d.as_secs()))
        .min(license_end);
    // An air-gapped machine cannot renew: the token is good for its whole
    // validity and renewal is never due.
    let token = tokens::issue_until(&config.signer, &grant, now_u, expires_at, expires_at)
        .map_err(|e| AdminError::Unexpected(e.to_string()))?;
    let file = OfflineToken {
        format: OFFLINE_TOKEN_FORMAT.into(),
        token: crate::api::licenses::token_view(&token).token,
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

fn outbox_entry_json(e: &crate::mail::OutboxEntry) -> serde_json::Value {
    json!({
        "id": e.id,
        "kind": e.kind,
        "recipient": e.recipient,
        "subject": e.subject,
        "status": e.status.as_str(),
        "created_at": rfc3339(e.created_at),
        "attempts": e.attempts,
        "sent_at": e.sent_at.map(rfc3339),
        "next_attempt_at": e.next_attempt_at.map(rfc3339),
        "last_error": e.last_error,
    })
}

/// `mail list`: the outbox, oldest first; never the bodies (they can hold
/// license keys).
pub fn mail_list(unsent_only: bool, limit: u32, json: bool) -> Result<(), AdminError> {
    let config = load_config(&Overrides::default())?;
    let db = open_db(&config)?;
    let conn = db.conn()?;
    let entries = crate::mail::list_outbox(&conn, unsent_only, limit).map_err(DbError::from)?;
    if json {
        return print_json(&json!(
            entries.iter().map(outbox_entry_json).collect::<Vec<_>>()
        ));
    }
    if entries.is_empty() {
        println!(
            "{}",
            if unsent_only {
                "no unsent mail"
            } else {
                "no mail"
            }
        );
    }
    for e in &entries {
        let state = match e.status {
            crate::mail::OutboxStatus::Sent => {
                format!("sent {}", e.sent_at.map(rfc3339).unwrap_or_default())
            }
            crate::mail::OutboxStatus::Waiting => format!(
                "waiting, next attempt {}",
                e.next_attempt_at.map(rfc3339).unwrap_or_default()
            ),
            crate::mail::OutboxStatus::GivenUp => {
                "GIVEN UP (fix the cause, then `coditect-issuer mail retry ID`)".to_owned()
            }
        };
        println!(
            "{}  {}  {:<12} {:<40} attempts={} {}{}",
            rfc3339(e.created_at),
            e.id,
            e.kind,
            e.recipient,
            e.attempts,
            state,
            e.last_error
                .as_deref()
                .map(|err| format!(" (last error: {err})"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// `mail retry`: an unsent mail is due now again, with a fresh count of
/// attempts; the running issuer sends it within seconds.
pub fn mail_retry(id: &str, json: bool) -> Result<(), AdminError> {
    let config = load_config(&Overrides::default())?;
    let db = open_db(&config)?;
    let conn = db.conn()?;
    let now = now();
    if !crate::mail::retry_now(&conn, id, now).map_err(DbError::from)? {
        return Err(AdminError::User(format!(
            "no unsent mail {id} in the outbox; `coditect-issuer mail list --unsent` shows them"
        )));
    }
    let event = crate::audit::Event::new(now, "mail_retry", "ok")
        .actor("admin")
        .subject("mail", id);
    crate::audit::record(&conn, &event).map_err(DbError::from)?;
    if json {
        return print_json(
            &json!({ "id": id, "status": "waiting", "next_attempt_at": rfc3339(now) }),
        );
    }
    println!("mail {id} is due again; the running issuer sends it within a few seconds");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_accepts_dates_times_and_durations() {
        let now = 1_796_256_000;
        assert_eq!(parse_expiry("2027-03-24", now).unwrap(), 1_805_846_400);
        assert_eq!(
            parse_expiry("2027-03-24T12:00:00Z", now).unwrap(),
            1_805_846_400 + 12 * 3600
        );
        assert_eq!(parse_expiry("90days", now).unwrap(), now + 90 * 86_400);
        assert!(parse_expiry("next tuesday", now).is_err());
    }
}
