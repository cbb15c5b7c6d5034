//! `audit`: the audit log.

use serde_json::json;

use super::{AdminError, parse_expiry, print_json, run, store};
use crate::app::now;
use crate::domain::rfc3339;

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
    let store = store()?;
    let events = run(async { Ok(store.audit_events(since, event, limit).await?) })?;
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
