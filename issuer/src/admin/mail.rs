//! `mail list` and `mail retry`: the outbox.

use serde_json::json;

use super::{AdminError, print_json, run, store};
use crate::app::now;
use crate::domain::audit::Event;
use crate::domain::mail::{OutboxEntry, OutboxStatus};
use crate::domain::rfc3339;

fn outbox_entry_json(e: &OutboxEntry) -> serde_json::Value {
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
    let store = store()?;
    let entries = run(async { Ok(store.outbox(unsent_only, limit).await?) })?;
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
            OutboxStatus::Sent => {
                format!("sent {}", e.sent_at.map(rfc3339).unwrap_or_default())
            }
            OutboxStatus::Waiting => format!(
                "waiting, next attempt {}",
                e.next_attempt_at.map(rfc3339).unwrap_or_default()
            ),
            OutboxStatus::GivenUp => {
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
    let store = store()?;
    let now = now();
    run(async {
        if !store.retry_mail(id, now).await? {
            return Err(AdminError::User(format!(
                "no unsent mail {id} in the outbox; `coditect-issuer mail list --unsent` shows them"
            )));
        }
        let event = Event::new(now, "mail_retry", "ok")
            .actor("admin")
            .subject("mail", id);
        Ok(store.append_audit(&[event]).await?)
    })?;
    if json {
        return print_json(
            &json!({ "id": id, "status": "waiting", "next_attempt_at": rfc3339(now) }),
        );
    }
    println!("mail {id} is due again; the running issuer sends it within a few seconds");
    Ok(())
}
