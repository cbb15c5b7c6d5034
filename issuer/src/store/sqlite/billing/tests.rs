//! Tests of billing on SQLite: event order, payments, deletion, and an
//! event that fails half-way.

use super::*;
use crate::domain::license_key::KeyPepper;
use crate::store::sqlite::Db;

use crate::domain::billing::Graces;
use crate::store::conformance::{rules_with, snapshot as snap};

fn rules() -> BillingRules {
    rules_with(Graces {
        billing: 100,
        past_due: 1_000,
    })
}

fn setup() -> (
    tempfile::TempDir,
    r2d2::PooledConnection<r2d2_sqlite::SqliteConnectionManager>,
) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("state.sqlite3")).unwrap();
    let conn = db.conn().unwrap();
    conn.execute_batch(
        "INSERT INTO organizations (id, name, stripe_customer_id, created_at)
             VALUES ('org1', 'Acme', 'cus_1', 1);
         INSERT INTO licenses (id, key_hash, key_hint, organization_id, email, tier, status,
             expires_at, max_activations, max_projects, ai_requests, stripe_subscription_id,
             created_at, updated_at)
         VALUES ('lic1', printf('%064d', 1), 'AAAA', 'org1', 'a@example.com', 'pilot-starter',
             'active', 0, 1, 3, 100, 'sub_1', 1, 1);",
    )
    .unwrap();
    (dir, conn)
}

fn license(conn: &Connection) -> (String, String, i64, i64) {
    conn.query_row(
        "SELECT tier, status, max_activations, expires_at FROM licenses",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )
    .unwrap()
}

fn apply(conn: &Connection, s: &SubscriptionSnapshot, at: i64) -> Applied {
    let a = apply_snapshot(conn, "org1", s, at, at).unwrap();
    sync_license(conn, &s.id, &rules(), at).unwrap();
    a
}

#[test]
fn newer_states_win_whatever_the_order() {
    let (_dir, conn) = setup();
    assert_eq!(
        apply(&conn, &snap("active", "price_pm", 2, 5_000), 20),
        Applied::Yes
    );
    assert_eq!(
        apply(&conn, &snap("active", "price_sm", 1, 4_000), 10),
        Applied::Stale
    );
    assert_eq!(
        license(&conn),
        ("pilot-professional".into(), "active".into(), 6, 5_100)
    );
    // The same second is applied in delivery order.
    assert_eq!(
        apply(&conn, &snap("active", "price_pm", 1, 5_000), 20),
        Applied::Yes
    );
    assert_eq!(license(&conn).2, 3);
}

#[test]
fn payments_move_the_period_forward_only_and_clear_past_due() {
    let (_dir, conn) = setup();
    apply(&conn, &snap("active", "price_sm", 1, 5_000), 10);
    record_failed_payment(&conn, "org1", "sub_1", "cus_1", 30, 30).unwrap();
    sync_license(&conn, "sub_1", &rules(), 30).unwrap();
    assert_eq!(
        license(&conn).3,
        30 + 1_000,
        "past due: the grace from the failure"
    );
    record_payment(&conn, "org1", "sub_1", "cus_1", Some(9_000), 40, 40).unwrap();
    sync_license(&conn, "sub_1", &rules(), 40).unwrap();
    assert_eq!(license(&conn).3, 9_100);
    // An older invoice.paid does not move it back.
    record_payment(&conn, "org1", "sub_1", "cus_1", Some(5_000), 35, 41).unwrap();
    sync_license(&conn, "sub_1", &rules(), 41).unwrap();
    assert_eq!(license(&conn).3, 9_100);
    let status: String = conn
        .query_row("SELECT status FROM subscriptions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(status, "active");
}

#[test]
fn paused_suspends_deleted_ends_for_good_and_revoked_stays_revoked() {
    let (_dir, conn) = setup();
    apply(&conn, &snap("paused", "price_sm", 1, 5_000), 10);
    assert_eq!(license(&conn).1, "suspended");
    apply(&conn, &snap("active", "price_sm", 1, 5_000), 11);
    assert_eq!(license(&conn).1, "active");
    record_deletion(&conn, "org1", "sub_1", "cus_1", 12, 12).unwrap();
    sync_license(&conn, "sub_1", &rules(), 12).unwrap();
    assert_eq!(license(&conn).1, "canceled");
    assert_eq!(
        apply(&conn, &snap("active", "price_sm", 1, 9_000), 99),
        Applied::Stale,
        "a deleted subscription never comes back"
    );
    assert_eq!(license(&conn).1, "canceled");
    conn.execute("UPDATE licenses SET status = 'revoked'", [])
        .unwrap();
    conn.execute("DELETE FROM subscriptions", []).unwrap();
    apply(&conn, &snap("active", "price_pm", 1, 9_000), 100);
    assert_eq!(license(&conn).1, "revoked");
}

fn count(conn: &Connection, table: &str) -> i64 {
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_failure_half_way_leaves_nothing_and_the_retry_applies_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("unit.sqlite3")).unwrap();
    let mut conn = db.conn().unwrap();
    conn.execute_batch(
        "INSERT INTO organizations (id, name, stripe_customer_id, created_at)
             VALUES ('org1', 'Acme', 'cus_1', 1);
         INSERT INTO users (id, email, password_hash, organization_id, created_at)
             VALUES ('u1', 'owner@example.com', 'x', 'org1', 1);",
    )
    .unwrap();
    let event = StripeEvent {
        id: "evt_1".into(),
        kind: "checkout.session.completed".into(),
        created: 1_000,
        change: BillingChange::CheckoutCompleted {
            customer: "cus_1".into(),
            session_id: "cs_1".into(),
            subscription: SubscriptionSnapshot {
                id: "sub_1".into(),
                customer_id: "cus_1".into(),
                status: "active".into(),
                price_id: Some("price_pm".into()),
                quantity: 1,
                current_period_end: Some(50_000),
                cancel_at_period_end: false,
            },
        },
    };
    let rules = rules_with(Graces {
        billing: 2 * 86_400,
        past_due: 7 * 86_400,
    });
    // The last step (queueing the mail) fails, as a full disk would.
    conn.execute_batch(
        "CREATE TRIGGER fail_mail BEFORE INSERT ON email_outbox
         BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
    )
    .unwrap();
    assert!(apply_event(&mut conn, &event, &rules, &KeyPepper::new(b"pepper"), 2_000).is_err());
    for table in [
        "stripe_events",
        "licenses",
        "subscriptions",
        "email_outbox",
        "audit_log",
    ] {
        assert_eq!(
            count(&conn, table),
            0,
            "{table} kept part of a failed event"
        );
    }
    // Stripe retries once the problem is gone: applied once, then a duplicate.
    conn.execute_batch("DROP TRIGGER fail_mail").unwrap();
    let (outcome, mailed) =
        apply_event(&mut conn, &event, &rules, &KeyPepper::new(b"pepper"), 3_000).unwrap();
    assert_eq!((outcome, mailed), (Outcome::Applied, true));
    let (outcome, mailed) =
        apply_event(&mut conn, &event, &rules, &KeyPepper::new(b"pepper"), 4_000).unwrap();
    assert_eq!((outcome, mailed), (Outcome::Duplicate, false));
    for table in ["stripe_events", "licenses", "subscriptions", "email_outbox"] {
        assert_eq!(count(&conn, table), 1, "{table}");
    }
    let expires: i64 = conn
        .query_row("SELECT expires_at FROM licenses", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        expires,
        50_000 + 2 * 86_400,
        "period end plus BILLING_GRACE"
    );
}
