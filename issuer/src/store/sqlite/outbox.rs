//! The mail outbox on SQLite: queueing inside the caller's transaction,
//! claiming due mail, recording each attempt's outcome, and the operator's
//! listing and retry.

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use zeroize::Zeroizing;

use super::scrub;
use crate::domain::mail::{
    CLAIM_SECS, DueMail, Failure, GAVE_UP, Mail, Next, OutboxBacklog, OutboxEntry, OutboxStatus,
    after_failure,
};

/// Queues a mail inside the caller's transaction; returns its id.
pub(super) fn enqueue(conn: &Connection, mail: &Mail, now: i64) -> rusqlite::Result<String> {
    let id = uuid::Uuid::new_v4().to_string();
    conn.execute(
        "INSERT INTO email_outbox (id, kind, recipient, subject, body, created_at, next_attempt_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
        params![id, mail.kind, mail.to, mail.subject, mail.body, now],
    )?;
    Ok(id)
}

/// Takes the due unsent mails, oldest first, and moves their next attempt
/// [`CLAIM_SECS`] ahead so that no other pass takes them too.
pub(super) fn claim_due(
    conn: &mut Connection,
    now: i64,
    limit: usize,
) -> rusqlite::Result<Vec<DueMail>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let due = {
        let mut stmt = tx.prepare(
            "SELECT id, kind, recipient, subject, body FROM email_outbox
             WHERE sent_at IS NULL AND next_attempt_at <= ?1
             ORDER BY created_at, id LIMIT ?2",
        )?;
        let rows = stmt.query_map(
            params![now, i64::try_from(limit).unwrap_or(i64::MAX)],
            |r| {
                Ok(DueMail {
                    id: r.get(0)?,
                    kind: r.get(1)?,
                    recipient: r.get(2)?,
                    subject: r.get(3)?,
                    body: r.get::<_, Option<String>>(4)?.map(Zeroizing::new),
                })
            },
        )?;
        rows.collect::<rusqlite::Result<Vec<_>>>()?
    };
    for mail in &due {
        tx.execute(
            "UPDATE email_outbox SET next_attempt_at = ?2 WHERE id = ?1",
            params![mail.id, now.saturating_add(CLAIM_SECS)],
        )?;
    }
    tx.commit()?;
    Ok(due)
}

/// The mail went out: the body (it can hold a license key) goes.
pub(super) fn record_sent(conn: &Connection, id: &str, now: i64) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE email_outbox
         SET sent_at = ?2, body = NULL, last_error = NULL, attempts = attempts + 1
         WHERE id = ?1",
        params![id, now],
    )?;
    scrub(conn);
    Ok(())
}

/// Counts a failed attempt and schedules the next one, or gives up.
/// `None` when the mail is no longer waiting.
pub(super) fn record_failure(
    conn: &mut Connection,
    id: &str,
    now: i64,
    failure: &Failure,
    retry_initial: Duration,
) -> rusqlite::Result<Option<Next>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let Some(before) = tx
        .query_row(
            "SELECT attempts FROM email_outbox WHERE id = ?1 AND sent_at IS NULL",
            [id],
            |r| r.get::<_, i64>(0),
        )
        .optional()?
    else {
        return Ok(None);
    };
    let next = after_failure(before, failure, now, retry_initial);
    tx.execute(
        "UPDATE email_outbox SET attempts = ?2, next_attempt_at = ?3, last_error = ?4
         WHERE id = ?1",
        params![id, next.attempts(), next.next_attempt_at(), failure.error],
    )?;
    tx.commit()?;
    Ok(Some(next))
}

/// The newest `limit` mails (only unsent ones if `unsent_only`), oldest
/// first.
pub(super) fn list(
    conn: &Connection,
    unsent_only: bool,
    limit: u32,
) -> rusqlite::Result<Vec<OutboxEntry>> {
    let mut stmt = conn.prepare(
        "SELECT id, kind, recipient, subject, created_at, attempts, sent_at,
                next_attempt_at, last_error
         FROM email_outbox
         WHERE sent_at IS NULL OR NOT ?1
         ORDER BY created_at DESC, id DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![unsent_only, limit], |r| {
        let sent_at: Option<i64> = r.get(6)?;
        let next: i64 = r.get(7)?;
        let status = OutboxStatus::of(sent_at, next);
        Ok(OutboxEntry {
            id: r.get(0)?,
            kind: r.get(1)?,
            recipient: r.get(2)?,
            subject: r.get(3)?,
            created_at: r.get(4)?,
            attempts: r.get(5)?,
            status,
            sent_at,
            next_attempt_at: (status == OutboxStatus::Waiting).then_some(next),
            last_error: r.get(8)?,
        })
    })?;
    let mut entries = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    entries.reverse();
    Ok(entries)
}

/// Makes an unsent mail due at `now` with a fresh count of attempts.
pub(super) fn retry_now(conn: &Connection, id: &str, now: i64) -> rusqlite::Result<bool> {
    let changed = conn.execute(
        "UPDATE email_outbox SET attempts = 0, next_attempt_at = ?2
         WHERE id = ?1 AND sent_at IS NULL",
        params![id, now],
    )?;
    Ok(changed == 1)
}

/// Makes claimed, unsent mails due at `now` again.
pub(super) fn release(conn: &mut Connection, ids: &[String], now: i64) -> rusqlite::Result<usize> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut released = 0;
    {
        let mut stmt = tx.prepare_cached(
            "UPDATE email_outbox SET next_attempt_at = ?2
             WHERE id = ?1 AND sent_at IS NULL AND next_attempt_at > ?2",
        )?;
        for id in ids {
            released += stmt.execute(params![id, now])?;
        }
    }
    tx.commit()?;
    Ok(released)
}

/// How many mails are unsent (waiting, given up) and when the oldest was
/// queued (the partial index `email_outbox_due` covers the unsent rows).
pub(super) fn backlog(conn: &Connection) -> rusqlite::Result<OutboxBacklog> {
    conn.query_row(
        "SELECT count(*) FILTER (WHERE next_attempt_at <> ?1),
                count(*) FILTER (WHERE next_attempt_at = ?1),
                min(created_at)
         FROM email_outbox WHERE sent_at IS NULL",
        [GAVE_UP],
        |r| {
            Ok(OutboxBacklog {
                waiting: r.get::<_, i64>(0)?.try_into().unwrap_or(0),
                given_up: r.get::<_, i64>(1)?.try_into().unwrap_or(0),
                oldest_unsent_at: r.get(2)?,
            })
        },
    )
}

#[cfg(test)]
mod tests {
    use super::super::Db;
    use super::*;
    use crate::domain::mail::{GAVE_UP, MAX_ATTEMPTS};

    fn mail(to: &str, body: &str) -> Mail {
        Mail {
            kind: "license_key",
            to: to.to_owned(),
            subject: "Your CODITECT license key (Pilot)".to_owned(),
            body: body.to_owned(),
        }
    }

    fn row(db: &Db, id: &str) -> (i64, Option<String>, i64, i64, Option<String>) {
        db.conn()
            .unwrap()
            .query_row(
                "SELECT attempts, body, next_attempt_at, COALESCE(sent_at, -1), last_error
                 FROM email_outbox WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .unwrap()
    }

    #[test]
    fn due_mail_is_claimed_oldest_first_and_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db.sqlite3")).unwrap();
        let mut conn = db.conn().unwrap();
        let second = enqueue(&conn, &mail("b@example.com", "B"), 200).unwrap();
        let first = enqueue(&conn, &mail("a@example.com", "A"), 100).unwrap();
        let later = enqueue(&conn, &mail("c@example.com", "C"), 10_000).unwrap();

        let due = claim_due(&mut conn, 500, 10).unwrap();
        let ids: Vec<&str> = due.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, [first.as_str(), second.as_str()]);
        assert_eq!(due[0].body.as_deref().map(String::as_str), Some("A"));
        // Claimed mail is not taken again while it is being sent...
        assert!(claim_due(&mut conn, 501, 10).unwrap().is_empty());
        // ...but is after the claim ran out (the sender died mid-send).
        let again = claim_due(&mut conn, 500 + CLAIM_SECS, 10).unwrap();
        assert_eq!(again.len(), 2);
        // Batches are as small as asked, the oldest first.
        let one = claim_due(&mut conn, 10_000, 1).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].id, first);
        let rest = claim_due(&mut conn, 10_000, 10).unwrap();
        let ids: Vec<&str> = rest.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, [second.as_str(), later.as_str()]);
    }

    #[test]
    fn sending_wipes_the_body_and_failures_back_off_until_given_up() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db.sqlite3")).unwrap();
        let mut conn = db.conn().unwrap();
        let ok = enqueue(&conn, &mail("a@example.com", "key"), 100).unwrap();
        let flaky = enqueue(&conn, &mail("b@example.com", "key"), 100).unwrap();
        let bad = enqueue(&conn, &mail("nobody", "key"), 100).unwrap();

        record_sent(&conn, &ok, 110).unwrap();
        assert_eq!(row(&db, &ok), (1, None, 100, 110, None));

        let initial = Duration::from_secs(30);
        let refused = Failure {
            error: "SMTP: Connection error: refused".into(),
            permanent: false,
        };
        let next = record_failure(&mut conn, &flaky, 110, &refused, initial).unwrap();
        assert_eq!(
            next,
            Some(Next::RetryAt {
                attempts: 1,
                at: 140
            })
        );
        let (attempts, body, next_at, sent, error) = row(&db, &flaky);
        assert_eq!((attempts, next_at, sent), (1, 140, -1));
        assert_eq!(
            body.as_deref(),
            Some("key"),
            "an unsent mail keeps its body"
        );
        assert_eq!(error.as_deref(), Some("SMTP: Connection error: refused"));
        let next = record_failure(&mut conn, &flaky, 140, &refused, initial).unwrap();
        assert_eq!(
            next,
            Some(Next::RetryAt {
                attempts: 2,
                at: 200
            })
        );
        for _ in 3..MAX_ATTEMPTS {
            record_failure(&mut conn, &flaky, 200, &refused, initial).unwrap();
        }
        let next = record_failure(&mut conn, &flaky, 200, &refused, initial).unwrap();
        assert_eq!(
            next,
            Some(Next::GaveUp {
                attempts: MAX_ATTEMPTS
            })
        );
        assert_eq!(row(&db, &flaky).2, GAVE_UP);

        let invalid = Failure {
            error: "the recipient is not a valid address".into(),
            permanent: true,
        };
        let next = record_failure(&mut conn, &bad, 110, &invalid, initial).unwrap();
        assert_eq!(next, Some(Next::GaveUp { attempts: 1 }));
        // A mail that went out meanwhile is left alone.
        assert_eq!(
            record_failure(&mut conn, &ok, 120, &refused, initial).unwrap(),
            None
        );
        assert_eq!(row(&db, &ok), (1, None, 100, 110, None));
        assert!(
            claim_due(&mut conn, i64::MAX - 1, 10).unwrap().is_empty(),
            "given-up mail is not taken again"
        );
    }

    #[test]
    fn the_outbox_listing_shows_where_each_mail_stands_and_retry_revives_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db.sqlite3")).unwrap();
        let mut conn = db.conn().unwrap();
        let sent = enqueue(&conn, &mail("a@example.com", "key"), 100).unwrap();
        let waiting = enqueue(&conn, &mail("b@example.com", "key"), 200).unwrap();
        let given_up = enqueue(&conn, &mail("nobody", "key"), 300).unwrap();
        record_sent(&conn, &sent, 110).unwrap();
        let refused = Failure {
            error: "SMTP: refused".into(),
            permanent: false,
        };
        record_failure(&mut conn, &waiting, 210, &refused, Duration::from_secs(30)).unwrap();
        let invalid = Failure {
            error: "the recipient is not a valid address".into(),
            permanent: true,
        };
        record_failure(&mut conn, &given_up, 310, &invalid, Duration::from_secs(30)).unwrap();

        let all = list(&conn, false, 10).unwrap();
        let seen: Vec<(&str, OutboxStatus, Option<i64>)> = all
            .iter()
            .map(|e| (e.id.as_str(), e.status, e.next_attempt_at))
            .collect();
        assert_eq!(
            seen,
            [
                (sent.as_str(), OutboxStatus::Sent, None),
                (waiting.as_str(), OutboxStatus::Waiting, Some(240)),
                (given_up.as_str(), OutboxStatus::GivenUp, None),
            ]
        );
        assert_eq!(all[1].last_error.as_deref(), Some("SMTP: refused"));
        let newest = list(&conn, false, 1).unwrap();
        assert_eq!(newest.len(), 1);
        assert_eq!(newest[0].id, given_up);
        let unsent: Vec<String> = list(&conn, true, 10)
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(unsent, [waiting.clone(), given_up.clone()]);

        assert!(retry_now(&conn, &given_up, 400).unwrap());
        assert!(
            !retry_now(&conn, &sent, 400).unwrap(),
            "sent mail stays sent"
        );
        assert!(!retry_now(&conn, "no-such-mail", 400).unwrap());
        let revived = &list(&conn, true, 10).unwrap()[1];
        assert_eq!(
            (revived.status, revived.attempts, revived.next_attempt_at),
            (OutboxStatus::Waiting, 0, Some(400))
        );
    }
}
