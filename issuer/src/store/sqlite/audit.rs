//! The audit log on SQLite: appending events and reading them back.

use rusqlite::{Connection, params};

use crate::domain::audit::Event;

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

/// Deletes up to `limit` events from before `before`, oldest first.
pub fn prune(conn: &Connection, before: i64, limit: u32) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "DELETE FROM audit_log WHERE id IN
             (SELECT id FROM audit_log WHERE at < ?1 ORDER BY at LIMIT ?2)",
    )?
    .execute(params![before, limit])
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::audit::Client;
    use crate::store::sqlite::Db;

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
}
