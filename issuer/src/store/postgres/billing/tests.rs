//! Tests of billing on PostgreSQL: what the conformance suite does not
//! check (event order in detail, payments, deletion, an event that fails
//! half-way, the reveal window), and what only several processes sharing
//! one database can do (simultaneous deliveries, events, reveals and
//! customers). Each test has a database of its own; the fixtures are
//! written with SQL, so only the billing code is under test.

use super::super::PgStore;
use super::super::testing::TestDatabase;
use crate::domain::billing::{
    BillingChange, BillingRules, Graces, Outcome, REVEAL_WINDOW, Reveal, StripeEvent,
    SubscriptionSnapshot,
};
use crate::domain::license::{License, LicenseStatus};
use crate::store::conformance::{rules_with, snapshot as snap};
use crate::store::{Billing, Licenses};

/// A store on a new database, or `None` (the harness said why) when no
/// server answers.
async fn fresh() -> Option<(TestDatabase, PgStore)> {
    let db = TestDatabase::create().await?;
    let store = PgStore::open(
        db.url(),
        crate::store::Migrations::Apply,
        crate::store::test_pepper(),
    )
    .await
    .unwrap();
    Some((db, store))
}

/// A second issuer process on the same database: a pool of its own.
async fn another_process(db: &TestDatabase) -> PgStore {
    PgStore::open(
        db.url(),
        crate::store::Migrations::Apply,
        crate::store::test_pepper(),
    )
    .await
    .unwrap()
}

async fn sql(store: &PgStore, batch: &str) {
    let conn = store.db.conn().await.unwrap();
    conn.batch_execute(batch).await.unwrap();
}

async fn count(store: &PgStore, table: &str) -> i64 {
    let conn = store.db.conn().await.unwrap();
    conn.query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

/// Graces of 100 s (paid period) and 1,000 s (past due).
fn rules() -> BillingRules {
    rules_with(Graces {
        billing: 100,
        past_due: 1_000,
    })
}

fn event(id: &str, created: i64, change: BillingChange) -> StripeEvent {
    StripeEvent {
        id: id.into(),
        kind: "test".into(),
        created,
        change,
    }
}

/// Organization `org1` (customer `cus_1`) with user `u1`.
const ORGANIZATION: &str = "
    INSERT INTO organizations (id, name, stripe_customer_id, created_at)
        VALUES ('org1', 'Acme', 'cus_1', 1);
    INSERT INTO users (id, email, password_hash, organization_id, created_at)
        VALUES ('u1', 'owner@example.com', 'x', 'org1', 1);";

/// License `lic1` of subscription `sub_1`, which has no row yet.
const LICENSE: &str = "
    INSERT INTO licenses (id, key_hash, key_hint, organization_id, email, tier, status,
        expires_at, max_activations, max_projects, ai_requests, stripe_subscription_id,
        created_at, updated_at)
    VALUES ('lic1', lpad('1', 64, '0'), 'AAAA', 'org1', 'a@example.com', 'pilot-starter',
        'active', 0, 1, 3, 100, 'sub_1', 1, 1);";

/// A store with `org1`, `u1` and `lic1`.
async fn setup() -> Option<(TestDatabase, PgStore)> {
    let (db, store) = fresh().await?;
    sql(&store, ORGANIZATION).await;
    sql(&store, LICENSE).await;
    Some((db, store))
}

async fn changed(store: &PgStore, id: &str, s: SubscriptionSnapshot, at: i64) -> Outcome {
    let e = event(id, at, BillingChange::SubscriptionChanged { snapshot: s });
    store.apply_stripe_event(&e, &rules(), at).await.unwrap().0
}

async fn apply(store: &PgStore, id: &str, at: i64, change: BillingChange) -> Outcome {
    store
        .apply_stripe_event(&event(id, at, change), &rules(), at)
        .await
        .unwrap()
        .0
}

async fn license(store: &PgStore) -> License {
    store.license("lic1").await.unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_states_win_whatever_the_order() {
    let Some((_db, store)) = setup().await else {
        return;
    };
    let newer = snap("active", "price_pm", 2, 5_000);
    assert_eq!(changed(&store, "evt_1", newer, 20).await, Outcome::Applied);
    let older = snap("active", "price_sm", 1, 4_000);
    assert_eq!(changed(&store, "evt_2", older, 10).await, Outcome::Stale);
    let l = license(&store).await;
    assert_eq!(
        (l.tier.as_str(), l.status, l.max_activations, l.expires_at),
        ("pilot-professional", LicenseStatus::Active, 6, 5_100)
    );
    // The same second is applied in delivery order.
    let same = snap("active", "price_pm", 1, 5_000);
    assert_eq!(changed(&store, "evt_3", same, 20).await, Outcome::Applied);
    assert_eq!(license(&store).await.max_activations, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_move_the_period_forward_only_and_clear_past_due() {
    let Some((_db, store)) = setup().await else {
        return;
    };
    changed(&store, "evt_0", snap("active", "price_sm", 1, 5_000), 10).await;
    let failed = BillingChange::PaymentFailed {
        customer: "cus_1".into(),
        subscription_id: "sub_1".into(),
        invoice: None,
    };
    assert_eq!(apply(&store, "evt_1", 30, failed).await, Outcome::Applied);
    assert_eq!(
        license(&store).await.expires_at,
        30 + 1_000,
        "past due: the grace from the failure"
    );
    let paid = |end: i64| BillingChange::InvoicePaid {
        customer: "cus_1".into(),
        subscription_id: "sub_1".into(),
        period_end: Some(end),
        invoice: None,
    };
    apply(&store, "evt_2", 40, paid(9_000)).await;
    assert_eq!(license(&store).await.expires_at, 9_100);
    // An older invoice.paid does not move it back.
    apply(&store, "evt_3", 35, paid(5_000)).await;
    assert_eq!(license(&store).await.expires_at, 9_100);
    let conn = store.db.conn().await.unwrap();
    let row = conn
        .query_one(
            "SELECT status, past_due_since, current_period_end FROM subscriptions",
            &[],
        )
        .await
        .unwrap();
    let (status, since, end): (String, Option<i64>, Option<i64>) =
        (row.get(0), row.get(1), row.get(2));
    assert_eq!((status.as_str(), since, end), ("active", None, Some(9_000)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_suspends_deleted_ends_for_good_and_revoked_stays_revoked() {
    let Some((_db, store)) = setup().await else {
        return;
    };
    changed(&store, "evt_1", snap("paused", "price_sm", 1, 5_000), 10).await;
    assert_eq!(license(&store).await.status, LicenseStatus::Suspended);
    changed(&store, "evt_2", snap("active", "price_sm", 1, 5_000), 11).await;
    assert_eq!(license(&store).await.status, LicenseStatus::Active);
    let deleted = BillingChange::SubscriptionDeleted {
        customer: "cus_1".into(),
        subscription_id: "sub_1".into(),
    };
    assert_eq!(apply(&store, "evt_3", 12, deleted).await, Outcome::Applied);
    assert_eq!(license(&store).await.status, LicenseStatus::Canceled);
    assert_eq!(
        changed(&store, "evt_4", snap("active", "price_sm", 1, 9_000), 99).await,
        Outcome::Stale,
        "a deleted subscription never comes back"
    );
    assert_eq!(license(&store).await.status, LicenseStatus::Canceled);
    store.revoke_license("lic1", None, 99).await.unwrap();
    sql(&store, "DELETE FROM subscriptions").await;
    changed(&store, "evt_5", snap("active", "price_pm", 1, 9_000), 100).await;
    assert_eq!(license(&store).await.status, LicenseStatus::Revoked);
}

fn checkout_completed(id: &str) -> StripeEvent {
    event(
        id,
        1_000,
        BillingChange::CheckoutCompleted {
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
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_half_way_leaves_nothing_and_the_retry_applies_once() {
    let Some((_db, store)) = fresh().await else {
        return;
    };
    sql(&store, ORGANIZATION).await;
    let event = checkout_completed("evt_1");
    let rules = rules_with(Graces {
        billing: 2 * 86_400,
        past_due: 7 * 86_400,
    });
    // The last steps (queueing the mail) fail, as a full disk would.
    sql(
        &store,
        "CREATE FUNCTION fail_mail() RETURNS trigger LANGUAGE plpgsql
             AS $$ BEGIN RAISE EXCEPTION 'disk full'; END $$;
         CREATE TRIGGER fail_mail BEFORE INSERT ON email_outbox
             FOR EACH ROW EXECUTE FUNCTION fail_mail();",
    )
    .await;
    assert!(
        store
            .apply_stripe_event(&event, &rules, 2_000)
            .await
            .is_err()
    );
    for table in [
        "stripe_events",
        "licenses",
        "subscriptions",
        "email_outbox",
        "audit_log",
    ] {
        assert_eq!(
            count(&store, table).await,
            0,
            "{table} kept part of a failed event"
        );
    }
    assert!(!store.stripe_event_seen("evt_1").await.unwrap());
    // Stripe retries once the problem is gone: applied once, then a duplicate.
    sql(&store, "DROP TRIGGER fail_mail ON email_outbox").await;
    let applied = store.apply_stripe_event(&event, &rules, 3_000).await;
    assert_eq!(applied.unwrap(), (Outcome::Applied, true));
    let again = store.apply_stripe_event(&event, &rules, 4_000).await;
    assert_eq!(again.unwrap(), (Outcome::Duplicate, false));
    for table in [
        "stripe_events",
        "licenses",
        "subscriptions",
        "email_outbox",
        "audit_log",
    ] {
        assert_eq!(count(&store, table).await, 1, "{table}");
    }
    let conn = store.db.conn().await.unwrap();
    let expires: i64 = conn
        .query_one("SELECT expires_at FROM licenses", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        expires,
        50_000 + 2 * 86_400,
        "period end plus BILLING_GRACE"
    );
    let recipient: String = conn
        .query_one("SELECT recipient FROM email_outbox", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(recipient, "owner@example.com", "no checkout: the owner");
}

/// Checkout `cs_1` of `u1`, started in browser `h` at 900.
const CHECKOUT: &str = "
    INSERT INTO checkouts (id, organization_id, user_id, plan, billing_interval,
        browser_hash, created_at)
    VALUES ('cs_1', 'org1', 'u1', 'pilot-professional', 'month', 'h', 900);";

async fn reveal_key_column(store: &PgStore) -> Option<String> {
    let conn = store.db.conn().await.unwrap();
    conn.query_one("SELECT reveal_key FROM checkouts", &[])
        .await
        .unwrap()
        .get(0)
}

/// How many times `checkouts` was vacuumed by hand (autovacuum is
/// counted apart). A vacuum is counted when it ends; older servers report
/// it a moment later, so this waits up to 5 s for `at_least`.
async fn vacuums(store: &PgStore, at_least: i64) -> i64 {
    let conn = store.db.conn().await.unwrap();
    let mut n = 0;
    for _ in 0..50 {
        n = conn
            .query_one(
                "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'checkouts'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if n >= at_least {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_never_shown_are_wiped_after_the_reveal_window() {
    let Some((_db, store)) = setup().await else {
        return;
    };
    sql(&store, CHECKOUT).await;
    sql(
        &store,
        "UPDATE checkouts SET license_id = 'lic1', completed_at = 1000,
             reveal_key = 'CODITECT-PILOT-AAAA-BBBB-CCCC'",
    )
    .await;
    assert_eq!(
        store
            .wipe_stale_reveals(1_000 + REVEAL_WINDOW - 1)
            .await
            .unwrap(),
        0
    );
    assert!(
        reveal_key_column(&store).await.is_some(),
        "still within the window"
    );
    assert_eq!(vacuums(&store, 0).await, 0, "nothing wiped, no vacuum");
    assert_eq!(
        store
            .wipe_stale_reveals(1_000 + REVEAL_WINDOW + 1)
            .await
            .unwrap(),
        1
    );
    assert_eq!(reveal_key_column(&store).await, None);
    assert_eq!(
        vacuums(&store, 1).await,
        1,
        "the old row version is vacuumed"
    );
    // Wiped before it was shown: the page says where it went.
    assert!(matches!(
        store.reveal_key("cs_1", "h", 1_000 + REVEAL_WINDOW + 2).await.unwrap(),
        Reveal::AlreadyShown { key_hint, .. } if key_hint == "AAAA"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_processes_deliver_one_event_at_once_and_it_applies_once() {
    let Some((db, store)) = fresh().await else {
        return;
    };
    sql(&store, ORGANIZATION).await;
    sql(&store, CHECKOUT).await;
    let processes = [store.clone(), another_process(&db).await];
    let event = checkout_completed("evt_1");
    let tasks: Vec<_> = (0..20)
        .map(|n| {
            let (store, event) = (processes[n % 2].clone(), event.clone());
            tokio::spawn(async move { store.apply_stripe_event(&event, &rules(), 2_000).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap().unwrap());
    }
    let applied = outcomes
        .iter()
        .filter(|o| **o == (Outcome::Applied, true))
        .count();
    let duplicates = outcomes
        .iter()
        .filter(|o| **o == (Outcome::Duplicate, false))
        .count();
    assert_eq!((applied, duplicates), (1, 19), "{outcomes:?}");
    for table in [
        "stripe_events",
        "licenses",
        "subscriptions",
        "email_outbox",
        "audit_log",
    ] {
        assert_eq!(count(&store, table).await, 1, "{table}");
    }
    // The browser that paid sees the key once.
    let Reveal::Key { key, .. } = store.reveal_key("cs_1", "h", 2_001).await.unwrap() else {
        panic!("the key was not kept for the browser");
    };
    let lic = store
        .license_by_key(&crate::domain::license_key::LicenseKey::parse(&key).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lic.email, "owner@example.com");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_events_of_a_new_subscription_keep_the_newest_state() {
    let Some((db, store)) = setup().await else {
        return;
    };
    let processes = [store.clone(), another_process(&db).await];
    // Ten snapshots, all at once, of a subscription with no row yet: they
    // race to create it, and whichever commits last, the newest state
    // (quantity 10, as of 110) is the one kept.
    let tasks: Vec<_> = (1..=10u32)
        .map(|n| {
            let store = processes[n as usize % 2].clone();
            tokio::spawn(async move {
                let s = snap("active", "price_pm", n, 5_000);
                let at = 100 + i64::from(n);
                changed(&store, &format!("evt_{n}"), s, at).await
            })
        })
        .collect();
    for t in tasks {
        let outcome = t.await.unwrap();
        assert!(matches!(outcome, Outcome::Applied | Outcome::Stale));
    }
    let conn = store.db.conn().await.unwrap();
    let row = conn
        .query_one("SELECT quantity, state_at FROM subscriptions", &[])
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (10, 110));
    assert_eq!(license(&store).await.max_activations, 30, "3 per seat");
    // Invoices of a subscription not seen yet, all at once: one row, and
    // the period ends at the latest paid end.
    let tasks: Vec<_> = (1..=10i64)
        .map(|n| {
            let store = processes[n as usize % 2].clone();
            tokio::spawn(async move {
                let paid = BillingChange::InvoicePaid {
                    customer: "cus_1".into(),
                    subscription_id: "sub_2".into(),
                    period_end: Some(1_000 * n),
                    invoice: None,
                };
                apply(&store, &format!("evt_paid_{n}"), 200 + n, paid).await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), Outcome::Applied);
    }
    let ends: Vec<Option<i64>> = conn
        .query(
            "SELECT current_period_end FROM subscriptions WHERE stripe_subscription_id = 'sub_2'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ends, [Some(10_000)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_reveals_show_the_key_once() {
    let Some((db, store)) = setup().await else {
        return;
    };
    sql(&store, CHECKOUT).await;
    sql(
        &store,
        "UPDATE checkouts SET license_id = 'lic1', completed_at = 1000,
             reveal_key = 'CODITECT-PILOT-AAAA-BBBB-CCCC'",
    )
    .await;
    let processes = [store.clone(), another_process(&db).await];
    let tasks: Vec<_> = (0..10)
        .map(|n| {
            let store = processes[n % 2].clone();
            tokio::spawn(async move { store.reveal_key("cs_1", "h", 1_010).await })
        })
        .collect();
    let mut shown = 0;
    for t in tasks {
        match t.await.unwrap().unwrap() {
            Reveal::Key { key, email, .. } => {
                assert_eq!(
                    (key.as_str(), email.as_str()),
                    ("CODITECT-PILOT-AAAA-BBBB-CCCC", "a@example.com")
                );
                shown += 1;
            }
            Reveal::AlreadyShown { key_hint, .. } => assert_eq!(key_hint, "AAAA"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(shown, 1);
    assert_eq!(reveal_key_column(&store).await, None, "wiped as shown");
    assert!(
        vacuums(&store, 1).await >= 1,
        "the old row version is vacuumed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_first_checkouts_keep_one_customer() {
    let Some((db, store)) = fresh().await else {
        return;
    };
    sql(
        &store,
        "INSERT INTO organizations (id, name, created_at) VALUES ('org1', 'Acme', 1)",
    )
    .await;
    let processes = [store.clone(), another_process(&db).await];
    let tasks: Vec<_> = (0..10)
        .map(|n| {
            let store = processes[n % 2].clone();
            tokio::spawn(
                async move { store.set_stripe_customer("org1", &format!("cus_{n}")).await },
            )
        })
        .collect();
    let mut kept = Vec::new();
    for t in tasks {
        kept.push(t.await.unwrap().unwrap());
    }
    kept.dedup();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(
        store.stripe_customer("org1").await.unwrap(),
        Some(kept[0].clone())
    );
    assert!(store.set_stripe_customer("nope", "cus_x").await.is_err());
    assert_eq!(store.stripe_customer("nope").await.unwrap(), None);
}
