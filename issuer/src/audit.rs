//! The audit log: who did what, from where, with what outcome.
//!
//! Rows never carry a password, license key, token or secret. The API writes
//! through [`AuditLog`], which batches rows on a background task (renewals
//! stay reads); admin commands write directly with [`record`].

use rusqlite::{Connection, params};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::db::Db;

/// One audit event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    pub at: i64,
    /// `signup`, `login`, `logout`, `failed_login`, `lockout`, `activate`,
    /// `deactivate`, `validate`, `license_created`, `license_revoked`, …
    pub event: String,
    /// `ok`, `refused`, or a refusal code such as `too_many_activations`.
    pub outcome: String,
    /// `user:<id>`, `license:<id>`, `email:<address>` or `admin`.
    pub actor: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub subject_type: Option<String>,
    pub subject_id: Option<String>,
    /// A short, secret-free note.
    pub detail: Option<String>,
}

impl Event {
    pub fn new(at: i64, event: &str, outcome: &str) -> Self {
        Event {
            at,
            event: event.to_owned(),
            outcome: outcome.to_owned(),
            actor: None,
            ip: None,
            user_agent: None,
            subject_type: None,
            subject_id: None,
            detail: None,
        }
    }

    pub fn actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }

    pub fn subject(mut self, kind: &str, id: impl Into<String>) -> Self {
        self.subject_type = Some(kind.to_owned());
        self.subject_id = Some(id.into());
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn client(mut self, client: &Client) -> Self {
        self.ip = client.ip.clone();
        self.user_agent = client.user_agent.clone();
        self
    }
}

/// Where a request came from, for the audit log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Client {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// The longest user agent kept.
const MAX_USER_AGENT: usize = 256;

impl Client {
    pub fn new(ip: Option<String>, user_agent: Option<&str>) -> Self {
        Client {
            ip,
            user_agent: user_agent.map(|ua| {
                ua.chars()
                    .filter(|c| !c.is_control())
                    .take(MAX_USER_AGENT)
                    .collect()
            }),
        }
    }
}

/// Writes one event now.
pub fn record(conn: &Connection, e: &Event) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO audit_log (at, event, outcome, actor, ip, user_agent, subject_type,
             subject_id, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        e.at,
        e.event,
        e.outcome,
        e.actor,
        e.ip,
        e.user_agent,
        e.subject_type,
        e.subject_id,
        e.detail
    ])?;
    Ok(())
}

/// Reads events, oldest first.
pub fn query(
    conn: &Connection,
    since: Option<i64>,
    event: Option<&str>,
    limit: u32,
) -> rusqlite::Result<Vec<Event>> {
    let mut stmt = conn.prepare(
        "SELECT at, event, outcome, actor, ip, user_agent, subject_type, subject_id, detail
         FROM (SELECT * FROM audit_log
               WHERE at >= coalesce(?1, 0) AND (?2 IS NULL OR event = ?2)
               ORDER BY id DESC LIMIT ?3)
         ORDER BY id",
    )?;
    let rows = stmt.query_map(params![since, event, limit], |r| {
        Ok(Event {
            at: r.get(0)?,
            event: r.get(1)?,
            outcome: r.get(2)?,
            actor: r.get(3)?,
            ip: r.get(4)?,
            user_agent: r.get(5)?,
            subject_type: r.get(6)?,
            subject_id: r.get(7)?,
            detail: r.get(8)?,
        })
    })?;
    rows.collect()
}

/// The API's audit writer: events go to a background task that writes them
/// in batches, one transaction each.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Message>,
}

enum Message {
    Event(Box<Event>),
    /// Answered once everything queued before it is written.
    Flush(oneshot::Sender<()>),
}

const BATCH: usize = 256;

impl AuditLog {
    /// Starts the writer on the current tokio runtime.
    pub fn start(db: Db) -> Self {
        let (tx, mut rx) = mpsc::channel::<Message>(8192);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            while rx.recv_many(&mut batch, BATCH).await > 0 {
                let mut events = Vec::with_capacity(batch.len());
                let mut flushes = Vec::new();
                for m in batch.drain(..) {
                    match m {
                        Message::Event(e) => events.push(*e),
                        Message::Flush(done) => flushes.push(done),
                    }
                }
                let count = events.len();
                let written = db
                    .run_write(move |c| {
                        let tx = c.transaction()?;
                        for e in &events {
                            record(&tx, e)?;
                        }
                        tx.commit()?;
                        Ok::<_, crate::db::DbError>(())
                    })
                    .await;
                if let Err(e) = written {
                    tracing::error!(error = %e, lost = count, "cannot write audit events");
                }
                for done in flushes {
                    let _ = done.send(());
                }
            }
        });
        AuditLog { tx }
    }

    /// Queues an event; waits only if thousands are already queued.
    pub async fn log(&self, event: Event) {
        if self.tx.send(Message::Event(Box::new(event))).await.is_err() {
            tracing::error!("the audit writer has stopped");
        }
    }

    /// Waits until every event queued so far is written.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Message::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_filter() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("a.db")).unwrap();
        let conn = db.conn().unwrap();
        let client = Client::new(Some("203.0.113.9".into()), Some("curl/8\u{7}"));
        record(
            &conn,
            &Event::new(10, "login", "ok")
                .actor("user:u1")
                .client(&client),
        )
        .unwrap();
        record(
            &conn,
            &Event::new(20, "validate", "ok").subject("activation", "a1"),
        )
        .unwrap();
        let all = query(&conn, None, None, 100).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].user_agent.as_deref(), Some("curl/8"));
        assert_eq!(query(&conn, Some(15), None, 100).unwrap().len(), 1);
        assert_eq!(
            query(&conn, None, Some("login"), 100).unwrap()[0]
                .ip
                .as_deref(),
            Some("203.0.113.9")
        );
    }

    #[tokio::test]
    async fn the_background_writer_writes_batches() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("a.db")).unwrap();
        let log = AuditLog::start(db.clone());
        for i in 0..500 {
            log.log(Event::new(i, "validate", "ok")).await;
        }
        log.flush().await;
        let n: i64 = db
            .conn()
            .unwrap()
            .query_row("SELECT count(*) FROM audit_log", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 500);
    }
}
