//! `license create|list|show|revoke`.

use serde_json::json;

use super::{AdminError, print_json, run, store};
use crate::app::{licenses, now};
use crate::domain::license::{Activation, License, NewLicense};
use crate::domain::{input, plans, rfc3339};
use crate::store::SharedStore;

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

fn license_json(l: &License, activations: &[Activation]) -> serde_json::Value {
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
            "max_projects": crate::domain::license::project_limit_column(l.max_projects),
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
            "offline_until": a.offline_until.map(rfc3339),
        })).collect::<Vec<_>>(),
    })
}

fn print_license(l: &License, activations: &[Activation]) {
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
        if let Some(until) = a.offline_until {
            println!("    offline token valid until {}", rfc3339(until));
        }
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
    let email = input::email("email", &args.email)
        .map_err(|e| AdminError::User(format!("--email: {}", e.detail)))?;
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
        .map(|o| input::name("org", o))
        .transpose()
        .map_err(|e| AdminError::User(format!("--org: {}", e.detail)))?;
    let store = store()?;
    let (license, key) = run(async {
        let org_id = match &org {
            Some(name) => Some(store.create_organization(name, now).await?),
            None => None,
        };
        let new = NewLicense {
            email: &email,
            plan,
            expires_at,
            max_devices: args.max_devices,
            organization_id: org_id.as_deref(),
            stripe_subscription_id: None,
        };
        Ok(licenses::create(&store, &new, now).await?)
    })?;
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

/// A license named by id or by key, with its activations.
async fn find_license(
    store: &SharedStore,
    which: &str,
) -> Result<(License, Vec<Activation>), AdminError> {
    let license = licenses::find(store, which)
        .await?
        .ok_or_else(|| AdminError::User(format!("no license with id or key `{}`", which.trim())))?;
    let activations = store.activations(&license.id).await?;
    Ok((license, activations))
}

pub fn license_list(json: bool) -> Result<(), AdminError> {
    let store = store()?;
    let rows = run(async { Ok(store.licenses_with_activations(None).await?) })?;
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
    let store = store()?;
    let (license, acts) = run(find_license(&store, which))?;
    if json {
        return print_json(&license_json(&license, &acts));
    }
    print_license(&license, &acts);
    Ok(())
}

pub fn license_revoke(which: &str, reason: Option<&str>, json: bool) -> Result<(), AdminError> {
    let store = store()?;
    let now = now();
    let (revoked, acts) = run(async {
        let (license, _) = find_license(&store, which).await?;
        let revoked = licenses::revoke(&store, &license.id, reason, now).await?;
        let acts = store.activations(&revoked.id).await?;
        Ok((revoked, acts))
    })?;
    if json {
        return print_json(&license_json(&revoked, &acts));
    }
    println!(
        "license {} revoked: renewals are refused from now on; tokens already issued lapse within their lifetime",
        revoked.id
    );
    Ok(())
}

pub fn license_free(which: &str, activation_id: &str, json: bool) -> Result<(), AdminError> {
    let store = store()?;
    let now = now();
    let freed = run(async {
        let (license, _) = find_license(&store, which).await?;
        Ok(licenses::free_by_operator(&store, &license.id, activation_id.trim(), now).await?)
    })?;
    if json {
        let acts = run(async { Ok(store.activations(&freed.license.id).await?) })?;
        return print_json(&license_json(&freed.license, &acts));
    }
    println!(
        "seat of machine {} freed on license {} ({}/{} in use); not counted as a seat transfer",
        freed.activation.id, freed.license.id, freed.devices_used, freed.license.max_activations
    );
    if let Some(until) = freed.activation.offline_until.filter(|u| *u > now) {
        println!(
            "its offline token stays valid until {}: it cannot be called back",
            rfc3339(until)
        );
    }
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
