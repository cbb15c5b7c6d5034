//! Long file: the suite is one list of checks, one per operation and
//! invariant, kept together so that every backend runs exactly the same.
//!
//! The conformance suite of the storage interface: the same test bodies for
//! every backend. Each check takes a fresh, empty, migrated store and uses
//! only the [`Store`](super::Store) trait, so what it proves holds for any
//! backend that passes it. A backend runs the suite with
//! [`conformance_tests!`](crate::conformance_tests) (see `store/sqlite/mod.rs`).
//!
//! Covered: every operation of the interface, and the invariants behind
//! them: seats never beyond the license's limit (also under concurrent
//! activations), a Stripe event applied once (also under concurrent
//! deliveries) and in order, the key mail queued with its license, a mail
//! claimed by one sender only, the lockout in the database, the rate-limit
//! counters (`conformance/rate_counters.rs`: GCRA, pruning, concurrent
//! checks of one bucket).

use std::sync::Arc;
use std::time::Duration;

use verifier::HardwareId;

use super::SharedStore;
use crate::domain::account::{
    AccountError, FAILURE_MEMORY_SECONDS, LinkPurpose, link_token_hash, sign_in_refused_until,
};
use crate::domain::audit::Event;
use crate::domain::billing::{
    BillingChange, BillingRules, CheckoutRecord, Graces, LicenseMailFacts, Outcome, REVEAL_WINDOW,
    Reveal, StripeEvent, SubscriptionSnapshot,
};
use crate::domain::license::{
    LicenseError, LicenseStatus, NewLicense, Releaser, Seat, TRANSFER_WINDOW, transfers_allowed,
};
use crate::domain::license_key::LicenseKey;
use crate::domain::mail::{CLAIM_SECS, Failure, Mail, Next, OutboxBacklog, OutboxStatus};
use crate::domain::plans;

mod identities;
mod rate_counters;
pub use identities::*;
pub use rate_counters::*;

/// A moment in 2026, the suite's "now".
pub const NOW: i64 = 1_796_256_000;
const DAY: i64 = 86_400;

fn hw(n: u32) -> HardwareId {
    HardwareId::from_machine_id(&format!("conformance-machine-{n}"))
}

fn new_license<'a>(plan: &str, devices: Option<u32>, org: Option<&'a str>) -> NewLicense<'a> {
    NewLicense {
        email: "owner@example.com",
        plan: plans::find(plan).unwrap(),
        expires_at: NOW + 30 * DAY,
        max_devices: devices,
        organization_id: org,
        stripe_subscription_id: None,
    }
}

/// A key holder asking from `machine`, without a session.
fn holder<'a>(key: &'a LicenseKey, machine: &'a HardwareId) -> Releaser<'a> {
    Releaser::Holder {
        key,
        machine,
        organization: None,
    }
}

async fn license(store: &SharedStore, devices: u32) -> LicenseKey {
    store
        .create_license(&new_license("pilot-professional", Some(devices), None), NOW)
        .await
        .unwrap()
        .1
}

/// Runs every check of the suite as its own test, each on a fresh store
/// made by `$fresh` (an async expression giving `Some((guard, SharedStore))`;
/// the guard keeps the database alive and drops it at the end).
#[macro_export]
macro_rules! conformance_tests {
    ($fresh:expr) => {
        $crate::conformance_tests!(@each $fresh;
            store_answers_and_is_at_the_latest_schema,
            signup_counts_users_and_refuses_taken_emails,
            sign_in_failures_lock_the_email_and_a_success_clears_them,
            sign_in_failures_count_per_client_and_per_email,
            only_paid_organizations_fill_the_pilot,
            account_links_work_once_and_a_reset_ends_every_session,
            unknown_emails_get_no_link_and_no_mail,
            unverified_unpaid_accounts_expire_and_free_their_email,
            sessions_end_at_sign_out_and_at_expiry,
            licenses_are_found_by_id_key_and_organization,
            seats_are_taken_reused_freed_and_never_exceeded,
            seat_transfers_are_capped_per_window,
            offline_seats_and_other_machines_seats_are_protected,
            a_downgrade_keeps_the_first_activated_machines,
            concurrent_activations_never_exceed_the_seats,
            renewals_refuse_each_unusable_state_with_its_reason,
            revoking_stops_renewals_and_unknown_licenses_are_refused,
            a_lost_key_is_replaced_for_its_organization_only,
            a_paid_checkout_creates_one_license_and_one_mail,
            concurrent_deliveries_of_one_event_apply_it_once,
            subscription_events_apply_in_order_whatever_the_delivery_order,
            a_failed_payment_ends_renewals_after_the_grace_and_says_why,
            customers_and_checkouts_are_kept_per_organization,
            pilot_facts_count_signups_activations_invoices_and_revenue_history,
            the_key_is_revealed_once_to_the_browser_that_paid,
            mail_is_claimed_once_retried_and_given_up,
            the_outbox_backlog_counts_unsent_mail_and_its_age,
            two_senders_never_claim_the_same_mail,
            a_stopping_sender_gives_its_claims_back,
            the_audit_log_appends_and_filters,
            old_audit_events_are_pruned_in_bounded_batches,
            rate_counters_allow_the_burst_then_refuse_with_the_wait,
            rate_counters_replenish_over_time,
            rate_counter_buckets_are_independent,
            expired_rate_counters_are_pruned_in_bounded_batches,
            concurrent_checks_of_one_bucket_never_allow_more_than_the_burst,
            provider_logins_are_taken_once_and_expire,
            identities_are_tied_to_one_user_one_per_provider,
            a_provider_signup_is_verified_and_tied_to_its_identity,
            cli_codes_are_taken_once_with_their_user_and_expire,
            device_codes_wait_for_approval_are_polled_slowly_and_used_once,
        );
    };
    (@each $fresh:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                // `None`: the backend is not available here (and the
                // harness has said so; under CI=true it fails instead).
                let Some((_guard, store)) = ($fresh) else {
                    return;
                };
                $crate::store::conformance::$name(store).await;
            }
        )*
    };
}

pub async fn store_answers_and_is_at_the_latest_schema(store: SharedStore) {
    store.ping().await.unwrap();
    assert!(store.schema_version().await.unwrap() >= 1);
    assert!(!store.location().is_empty());
}

pub async fn signup_counts_users_and_refuses_taken_emails(store: SharedStore) {
    assert_eq!(store.user_count().await.unwrap(), 0);
    let u = store
        .signup("a@x.io", "hash", "Acme", Some(2), NOW)
        .await
        .unwrap();
    assert_eq!(
        (u.organization_name.as_str(), u.role.as_str()),
        ("Acme", "owner")
    );
    assert!(matches!(
        store.signup("A@X.IO", "hash", "Acme", Some(2), NOW).await,
        Err(AccountError::EmailTaken)
    ));
    store
        .signup("b@x.io", "h", "B", Some(2), NOW)
        .await
        .unwrap();
    // Unpaid signups take no place in the pilot.
    store
        .signup("c@x.io", "h", "C", Some(2), NOW)
        .await
        .unwrap();
    assert!(matches!(
        store.signup("d@x.io", "h", "D", Some(0), NOW).await,
        Err(AccountError::SignupFull)
    ));
    assert_eq!(store.user_count().await.unwrap(), 3);
    let (_, found) = store.sign_in_lookup("a@X.io", "c", NOW).await.unwrap();
    let (user, hash) = found.unwrap();
    assert_eq!((user.id, hash.as_str()), (u.id, "hash"));
    let org = store.create_organization("Solo", NOW).await.unwrap();
    assert!(!org.is_empty());
    assert_eq!(store.user_count().await.unwrap(), 3, "no user with it");
}

pub async fn sign_in_failures_lock_the_email_and_a_success_clears_them(store: SharedStore) {
    // Five failures from one client delay it (an unknown email too).
    for i in 0..5 {
        let r = store
            .record_failed_sign_in("a@x.io", "c1", NOW + i)
            .await
            .unwrap();
        assert_eq!(r.client.failures, u32::try_from(i + 1).unwrap());
    }
    let (record, found) = store.sign_in_lookup("A@x.io", "c1", NOW + 5).await.unwrap();
    assert_eq!(found, None);
    assert_eq!(sign_in_refused_until(&record, NOW + 5), Some(NOW + 4 + 30));
    // Forgotten after the memory: the count starts again.
    let r = store
        .record_failed_sign_in("a@x.io", "c1", NOW + 4 + FAILURE_MEMORY_SECONDS)
        .await
        .unwrap();
    assert_eq!((r.client.failures, r.email.failures), (1, 1));
    // A success forgets this client's count and makes it known.
    store
        .clear_failed_sign_ins("a@x.io", "c1", NOW + 2 * FAILURE_MEMORY_SECONDS)
        .await
        .unwrap();
    let (record, _) = store.sign_in_lookup("a@x.io", "c1", NOW).await.unwrap();
    assert_eq!(record.client.failures, 0);
    assert_eq!(
        record.client_succeeded_at,
        Some(NOW + 2 * FAILURE_MEMORY_SECONDS)
    );
}

pub async fn sign_in_failures_count_per_client_and_per_email(store: SharedStore) {
    for _ in 0..3 {
        store
            .record_failed_sign_in("a@x.io", "stranger", NOW)
            .await
            .unwrap();
    }
    let r = store
        .record_failed_sign_in("A@X.IO", "owner", NOW)
        .await
        .unwrap();
    assert_eq!((r.client.failures, r.email.failures), (1, 4));
    let (owner, _) = store.sign_in_lookup("a@x.io", "owner", NOW).await.unwrap();
    assert_eq!((owner.client.failures, owner.email.failures), (1, 4));
    let (other, _) = store.sign_in_lookup("b@x.io", "owner", NOW).await.unwrap();
    assert_eq!((other.client.failures, other.email.failures), (0, 0));
}

pub async fn only_paid_organizations_fill_the_pilot(store: SharedStore) {
    assert_eq!(store.paid_organization_count(None).await.unwrap(), 0);
    let (paid, completed) = paying_organization(&store).await;
    store
        .signup("unpaid@x.io", "h", "U", Some(1), NOW)
        .await
        .unwrap();
    store
        .apply_stripe_event(&completed, &rules(), NOW + 20)
        .await
        .unwrap();
    assert_eq!(store.paid_organization_count(None).await.unwrap(), 1);
    assert_eq!(store.paid_organization_count(Some(&paid)).await.unwrap(), 0);
    assert!(matches!(
        store.signup("late@x.io", "h", "L", Some(1), NOW).await,
        Err(AccountError::SignupFull)
    ));
    store
        .signup("late@x.io", "h", "L", Some(2), NOW)
        .await
        .unwrap();
}

fn link_mail(to: &str) -> Mail {
    Mail {
        kind: "password_reset",
        to: to.into(),
        subject: "Reset".into(),
        body: "link".into(),
    }
}

pub async fn account_links_work_once_and_a_reset_ends_every_session(store: SharedStore) {
    let u = store
        .signup("a@x.io", "old", "Acme", None, NOW)
        .await
        .unwrap();
    let s1 = store.create_session(&u.id, NOW, NOW + 600).await.unwrap();
    let s2 = store.create_session(&u.id, NOW, NOW + 600).await.unwrap();
    let verify = link_token_hash("verify-token");
    assert!(
        store
            .issue_account_link(
                "A@x.io",
                LinkPurpose::VerifyEmail,
                &verify,
                NOW + 60,
                &link_mail("a@x.io"),
                NOW
            )
            .await
            .unwrap()
    );
    // Not a reset link; then used once; then never again.
    assert_eq!(
        store.reset_password(&verify, "new", NOW).await.unwrap(),
        None
    );
    assert_eq!(
        store.verify_email(&verify, NOW + 1).await.unwrap(),
        Some(u.clone())
    );
    assert_eq!(store.verify_email(&verify, NOW + 2).await.unwrap(), None);
    // An expired reset link changes nothing.
    let reset = link_token_hash("reset-token");
    store
        .issue_account_link(
            "a@x.io",
            LinkPurpose::ResetPassword,
            &reset,
            NOW + 60,
            &link_mail("a@x.io"),
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(
        store.reset_password(&reset, "new", NOW + 60).await.unwrap(),
        None
    );
    let (_, found) = store.sign_in_lookup("a@x.io", "c", NOW).await.unwrap();
    assert_eq!(found.unwrap().1, "old");
    assert!(store.session_user(&s1, NOW + 61).await.unwrap().is_some());
    // A good one: new password, every session ended, failures forgotten.
    let reset = link_token_hash("reset-token-2");
    store
        .issue_account_link(
            "a@x.io",
            LinkPurpose::ResetPassword,
            &reset,
            NOW + 600,
            &link_mail("a@x.io"),
            NOW,
        )
        .await
        .unwrap();
    for _ in 0..3 {
        store
            .record_failed_sign_in("a@x.io", "x", NOW)
            .await
            .unwrap();
    }
    assert_eq!(
        store.reset_password(&reset, "new", NOW + 70).await.unwrap(),
        Some(u.clone())
    );
    assert_eq!(
        store
            .reset_password(&reset, "newer", NOW + 71)
            .await
            .unwrap(),
        None
    );
    let (record, found) = store.sign_in_lookup("a@x.io", "x", NOW + 72).await.unwrap();
    assert_eq!(found.unwrap().1, "new");
    assert_eq!((record.client.failures, record.email.failures), (0, 0));
    for sid in [s1, s2] {
        assert_eq!(store.session_user(&sid, NOW + 72).await.unwrap(), None);
    }
    // The link mails were queued with their links.
    assert_eq!(store.outbox(false, 10).await.unwrap().len(), 3);
}

pub async fn unknown_emails_get_no_link_and_no_mail(store: SharedStore) {
    let issued = store
        .issue_account_link(
            "nobody@x.io",
            LinkPurpose::ResetPassword,
            &link_token_hash("t"),
            NOW + 60,
            &link_mail("nobody@x.io"),
            NOW,
        )
        .await
        .unwrap();
    assert!(!issued);
    assert!(store.outbox(false, 10).await.unwrap().is_empty());
}

pub async fn unverified_unpaid_accounts_expire_and_free_their_email(store: SharedStore) {
    let (paid_org, completed) = paying_organization(&store).await;
    store
        .apply_stripe_event(&completed, &rules(), NOW + 20)
        .await
        .unwrap();
    let squatter = store
        .signup("victim@x.io", "h", "Squat", None, NOW)
        .await
        .unwrap();
    store
        .create_session(&squatter.id, NOW, NOW + 600)
        .await
        .unwrap();
    store
        .issue_account_link(
            "victim@x.io",
            LinkPurpose::VerifyEmail,
            &link_token_hash("v1"),
            NOW + 60,
            &link_mail("victim@x.io"),
            NOW,
        )
        .await
        .unwrap();
    let verified = store
        .signup("real@x.io", "h", "Real", None, NOW)
        .await
        .unwrap();
    store
        .issue_account_link(
            "real@x.io",
            LinkPurpose::VerifyEmail,
            &link_token_hash("v2"),
            NOW + 60,
            &link_mail("real@x.io"),
            NOW,
        )
        .await
        .unwrap();
    store
        .verify_email(&link_token_hash("v2"), NOW + 1)
        .await
        .unwrap()
        .unwrap();
    // Too young: nothing; another email only: nothing.
    assert_eq!(
        store.delete_unverified_accounts(NOW, None).await.unwrap(),
        0
    );
    assert_eq!(
        store
            .delete_unverified_accounts(NOW + 1, Some("other@x.io"))
            .await
            .unwrap(),
        0
    );
    // Old enough: the unverified, unpaid one goes (the paid buyer, also
    // unverified, and the verified one stay).
    assert_eq!(
        store
            .delete_unverified_accounts(NOW + 1, Some("VICTIM@x.io"))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .delete_unverified_accounts(NOW + 100, None)
            .await
            .unwrap(),
        0
    );
    let (_, found) = store.sign_in_lookup("victim@x.io", "c", NOW).await.unwrap();
    assert_eq!(found, None);
    let (_, found) = store.sign_in_lookup("real@x.io", "c", NOW).await.unwrap();
    assert_eq!(found.unwrap().0.id, verified.id);
    assert_eq!(
        store
            .licenses_with_activations(Some(&paid_org))
            .await
            .unwrap()
            .len(),
        1
    );
    // The email is free again.
    store
        .signup("victim@x.io", "h", "Real owner", None, NOW + 2)
        .await
        .unwrap();
}

pub async fn sessions_end_at_sign_out_and_at_expiry(store: SharedStore) {
    let u = store
        .signup("a@x.io", "h", "Acme", None, NOW)
        .await
        .unwrap();
    let sid = store.create_session(&u.id, NOW, NOW + 60).await.unwrap();
    assert_eq!(
        store.session_user(&sid, NOW).await.unwrap(),
        Some(u.clone())
    );
    assert_eq!(store.session_user(&sid, NOW + 60).await.unwrap(), None);
    assert_eq!(
        store.session_user("no-such-session", NOW).await.unwrap(),
        None
    );
    store.end_session(&sid, NOW + 1).await.unwrap();
    store.end_session(&sid, NOW + 2).await.unwrap();
    assert_eq!(store.session_user(&sid, NOW + 3).await.unwrap(), None);
}

pub async fn licenses_are_found_by_id_key_and_organization(store: SharedStore) {
    let u = store
        .signup("a@x.io", "h", "Acme", None, NOW)
        .await
        .unwrap();
    let org = u.organization_id.as_str();
    let (mine, key) = store
        .create_license(&new_license("pilot-starter", None, Some(org)), NOW)
        .await
        .unwrap();
    assert_eq!(
        (mine.max_activations, mine.tier.as_str()),
        (1, "pilot-starter")
    );
    assert_eq!(mine.organization_name.as_deref(), Some("Acme"));
    assert_eq!(mine.key_hint, key.hint());
    let (other, _) = store
        .create_license(&new_license("pilot-professional", Some(5), None), NOW + 1)
        .await
        .unwrap();
    assert_eq!(other.max_activations, 5);
    assert_eq!(store.license(&mine.id).await.unwrap(), Some(mine.clone()));
    assert_eq!(store.license("nope").await.unwrap(), None);
    assert_eq!(
        store.license_by_key(&key).await.unwrap(),
        Some(mine.clone())
    );
    let stranger = LicenseKey::parse("CODITECT-PILOT-AAAA-BBBB-CCCC").unwrap();
    assert_eq!(store.license_by_key(&stranger).await.unwrap(), None);
    let of_org = store.licenses_with_activations(Some(org)).await.unwrap();
    assert_eq!(of_org.len(), 1);
    assert_eq!(of_org[0].0.id, mine.id);
    let all = store.licenses_with_activations(None).await.unwrap();
    let ids: Vec<&str> = all.iter().map(|(l, _)| l.id.as_str()).collect();
    assert_eq!(ids, [other.id.as_str(), mine.id.as_str()], "newest first");
}

pub async fn seats_are_taken_reused_freed_and_never_exceeded(store: SharedStore) {
    let key = license(&store, 2).await;
    let a = store
        .activate_seat(&key, &hw(1), Some("laptop"), None, NOW)
        .await
        .unwrap();
    assert_eq!((a.devices_used, a.already_active), (1, false));
    let again = store
        .activate_seat(&key, &hw(1), None, None, NOW + 5)
        .await
        .unwrap();
    assert_eq!(again.activation.id, a.activation.id);
    assert!(again.already_active);
    assert_eq!(again.activation.machine_name.as_deref(), Some("laptop"));
    store
        .activate_seat(&key, &hw(2), None, None, NOW)
        .await
        .unwrap();
    assert!(matches!(
        store.activate_seat(&key, &hw(3), None, None, NOW).await,
        Err(LicenseError::TooManyActivations { max: 2 })
    ));
    let freed = store
        .free_seat(&holder(&key, &hw(2)), Seat::Machine(&hw(2)), NOW + 10)
        .await
        .unwrap();
    assert_eq!(
        (
            freed.activation.active,
            freed.activation.deactivated_at,
            freed.devices_used
        ),
        (false, Some(NOW + 10), 1)
    );
    assert_eq!(
        (freed.counted, freed.recent_transfers.as_slice()),
        (true, &[NOW + 10][..])
    );
    // Freeing it again changes nothing and counts nothing.
    let again = store
        .free_seat(&holder(&key, &hw(2)), Seat::Machine(&hw(2)), NOW + 20)
        .await
        .unwrap();
    assert_eq!(
        (
            again.activation.deactivated_at,
            again.devices_used,
            again.counted
        ),
        (Some(NOW + 10), 1, false)
    );
    let third = store
        .activate_seat(&key, &hw(3), None, None, NOW)
        .await
        .unwrap();
    assert_eq!(third.devices_used, 2);
    // By activation id (another machine's seat, asked by an active
    // machine), and unknown ones.
    let by_id = store
        .free_seat(
            &holder(&key, &hw(1)),
            Seat::Activation(&third.activation.id),
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(
        (by_id.activation.id, by_id.devices_used),
        (third.activation.id, 1)
    );
    assert!(matches!(
        store
            .free_seat(&holder(&key, &hw(1)), Seat::Activation("nope"), NOW)
            .await,
        Err(LicenseError::ActivationNotFound)
    ));
    assert!(matches!(
        store
            .free_seat(&holder(&key, &hw(9)), Seat::Machine(&hw(9)), NOW)
            .await,
        Err(LicenseError::NotActivated)
    ));
    let acts = store.activations(&a.license.id).await.unwrap();
    assert_eq!(acts.len(), 3);
    assert!(acts[0].active, "active ones first");
    assert!(!acts[1].active && !acts[2].active);
}

pub async fn seat_transfers_are_capped_per_window(store: SharedStore) {
    // One seat: the starter plan's minimum of 3 transfers per window.
    let year = NewLicense {
        expires_at: NOW + 365 * DAY,
        ..new_license("pilot-starter", None, None)
    };
    let (lic, key) = store.create_license(&year, NOW).await.unwrap();
    assert_eq!(transfers_allowed(&lic), 3);
    for n in 1..=3 {
        let at = NOW + i64::from(n) * 100;
        store
            .activate_seat(&key, &hw(n), None, None, at)
            .await
            .unwrap();
        let freed = store
            .free_seat(&holder(&key, &hw(n)), Seat::Machine(&hw(n)), at + 1)
            .await
            .unwrap();
        assert!(freed.counted);
        assert_eq!(freed.recent_transfers.len(), n as usize);
    }
    // The fourth machine may take the free seat, but not give it up.
    let g = store
        .activate_seat(&key, &hw(4), None, None, NOW + 500)
        .await
        .unwrap();
    assert_eq!(g.recent_transfers, [NOW + 101, NOW + 201, NOW + 301]);
    match store
        .free_seat(&holder(&key, &hw(4)), Seat::Machine(&hw(4)), NOW + 600)
        .await
    {
        Err(LicenseError::TransferLimit { allowed, next_at }) => {
            assert_eq!((allowed, next_at), (3, NOW + 101 + TRANSFER_WINDOW));
        }
        other => panic!("{other:?}"),
    }
    // Nothing changed: the machine still holds its seat and renews.
    store
        .renew_seat(&key, &hw(4), NOW + 700)
        .await
        .expect("still active");
    assert_eq!(
        store
            .seat_transfers(&lic.id, NOW - TRANSFER_WINDOW)
            .await
            .unwrap()
            .len(),
        3
    );
    // The operator frees it, uncounted; once the first transfer leaves
    // the window, the holder may free a seat again.
    let freed = store
        .free_seat(
            &Releaser::Operator {
                license_id: &lic.id,
            },
            Seat::Activation(&g.activation.id),
            NOW + 800,
        )
        .await
        .unwrap();
    assert!(!freed.counted && !freed.activation.active);
    let later = NOW + 101 + TRANSFER_WINDOW;
    store
        .activate_seat(&key, &hw(5), None, None, later)
        .await
        .unwrap();
    let freed = store
        .free_seat(&holder(&key, &hw(5)), Seat::Machine(&hw(5)), later + 1)
        .await
        .unwrap();
    assert_eq!(freed.recent_transfers, [NOW + 201, NOW + 301, later + 1]);
}

pub async fn offline_seats_and_other_machines_seats_are_protected(store: SharedStore) {
    let org = store.create_organization("Acme", NOW).await.unwrap();
    let other_org = store.create_organization("Other", NOW).await.unwrap();
    let (lic, key) = store
        .create_license(&new_license("pilot-professional", None, Some(&org)), NOW)
        .await
        .unwrap();
    let until = NOW + 20 * DAY;
    let offline = store
        .activate_seat(&key, &hw(1), Some("air-gapped"), Some(until), NOW)
        .await
        .unwrap();
    assert_eq!(offline.activation.offline_until, Some(until));
    let online = store
        .activate_seat(&key, &hw(2), None, None, NOW)
        .await
        .unwrap();
    assert_eq!(online.activation.offline_until, None);
    // An offline seat: not even the machine itself (nor an active one)
    // frees it before its token expires.
    for asker in [hw(1), hw(2)] {
        match store
            .free_seat(&holder(&key, &asker), Seat::Machine(&hw(1)), NOW + 10)
            .await
        {
            Err(LicenseError::OfflineSeat { until: u }) => assert_eq!(u, until),
            other => panic!("{other:?}"),
        }
    }
    // Another machine's seat: not from a machine without a seat, nor with
    // a session of another organization.
    let stranger = hw(7);
    for organization in [None, Some(other_org.as_str())] {
        let by = Releaser::Holder {
            key: &key,
            machine: &stranger,
            organization,
        };
        assert!(matches!(
            store
                .free_seat(&by, Seat::Activation(&online.activation.id), NOW + 10)
                .await,
            Err(LicenseError::NotAllowedToFree)
        ));
    }
    let acts = store.activations(&lic.id).await.unwrap();
    assert!(acts.iter().all(|a| a.active), "nothing was freed");
    assert!(store.seat_transfers(&lic.id, 0).await.unwrap().is_empty());
    // With a session of the license's organization it may.
    let by = Releaser::Holder {
        key: &key,
        machine: &stranger,
        organization: Some(&org),
    };
    let freed = store
        .free_seat(&by, Seat::Activation(&online.activation.id), NOW + 20)
        .await
        .unwrap();
    assert!(freed.counted && !freed.activation.active);
    // The account page (a member of the organization, without the key):
    // another organization's member may not, its own may, counted; the
    // offline seat stays protected.
    let again = store
        .activate_seat(&key, &hw(3), None, None, NOW + 30)
        .await
        .unwrap();
    let member = |organization| Releaser::Organization {
        license_id: &lic.id,
        organization,
    };
    assert!(matches!(
        store
            .free_seat(
                &member(&other_org),
                Seat::Activation(&again.activation.id),
                NOW + 40
            )
            .await,
        Err(LicenseError::NotAllowedToFree)
    ));
    assert!(matches!(
        store
            .free_seat(
                &member(&org),
                Seat::Activation(&offline.activation.id),
                NOW + 40
            )
            .await,
        Err(LicenseError::OfflineSeat { .. })
    ));
    let freed = store
        .free_seat(
            &member(&org),
            Seat::Activation(&again.activation.id),
            NOW + 40,
        )
        .await
        .unwrap();
    assert!(freed.counted && !freed.activation.active);
    assert_eq!(freed.recent_transfers, [NOW + 20, NOW + 40]);
    // Past the offline token's expiry the holder frees it as any seat.
    store
        .free_seat(&holder(&key, &hw(1)), Seat::Machine(&hw(1)), until)
        .await
        .unwrap();
}

pub async fn a_downgrade_keeps_the_first_activated_machines(store: SharedStore) {
    let (org, completed) = paying_organization(&store).await;
    store
        .apply_stripe_event(&completed, &rules(), NOW + 20)
        .await
        .unwrap();
    let body = store.claim_mail(NOW + 20, 10).await.unwrap()[0]
        .body
        .clone()
        .unwrap();
    let key = LicenseKey::parse(body.trim_start_matches("key ")).unwrap();
    // Three machines on the three Professional seats, activated in turn.
    for n in 1..=3 {
        store
            .activate_seat(&key, &hw(n), None, None, NOW + 100 * i64::from(n))
            .await
            .unwrap();
    }
    // Down to Starter (one seat).
    let down = event(
        "evt_down",
        NOW + 1_000,
        BillingChange::SubscriptionChanged {
            snapshot: snapshot("active", "price_sm", 1, NOW + 30 * DAY),
        },
    );
    store
        .apply_stripe_event(&down, &rules(), NOW + 1_000)
        .await
        .unwrap();
    // The change recorded which machines lost their seat.
    let lost = store
        .audit_events(None, Some("seat_lost"), 10)
        .await
        .unwrap();
    let acts = store.licenses_with_activations(Some(&org)).await.unwrap()[0]
        .1
        .clone();
    let id_of = |n: u32| {
        acts.iter()
            .find(|a| a.hardware_id == hw(n).to_hex())
            .unwrap()
            .id
            .clone()
    };
    let mut lost_ids: Vec<String> = lost.iter().filter_map(|e| e.subject_id.clone()).collect();
    lost_ids.sort();
    let mut expected = vec![id_of(2), id_of(3)];
    expected.sort();
    assert_eq!(lost_ids, expected);
    // The first machine renews; the later two are refused, also when they
    // ask to activate again.
    let g = store.renew_seat(&key, &hw(1), NOW + 2_000).await.unwrap();
    assert_eq!((g.devices_used, g.license.max_activations), (3, 1));
    for n in [2, 3] {
        assert!(matches!(
            store.renew_seat(&key, &hw(n), NOW + 2_000).await,
            Err(LicenseError::SeatOverLimit { max: 1, used: 3 })
        ));
        assert!(matches!(
            store
                .activate_seat(&key, &hw(n), None, None, NOW + 2_000)
                .await,
            Err(LicenseError::SeatOverLimit { max: 1, used: 3 })
        ));
    }
    // Freeing the first one does not help the others while two remain;
    // over the limit, freeing is not counted as a transfer.
    let freed = store
        .free_seat(&holder(&key, &hw(1)), Seat::Machine(&hw(1)), NOW + 3_000)
        .await
        .unwrap();
    assert!(!freed.counted);
    assert!(matches!(
        store.renew_seat(&key, &hw(3), NOW + 3_000).await,
        Err(LicenseError::SeatOverLimit { max: 1, used: 2 })
    ));
    store
        .free_seat(&holder(&key, &hw(3)), Seat::Machine(&hw(3)), NOW + 3_100)
        .await
        .unwrap();
    // Within the limit again: the remaining machine renews.
    store.renew_seat(&key, &hw(2), NOW + 3_200).await.unwrap();
}

pub async fn concurrent_activations_never_exceed_the_seats(store: SharedStore) {
    let key = license(&store, 3).await;
    let tasks: Vec<_> = (0..20)
        .map(|n| {
            let (store, key) = (Arc::clone(&store), key.clone());
            tokio::spawn(async move { store.activate_seat(&key, &hw(n), None, None, NOW).await })
        })
        .collect();
    let mut granted = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(g) => {
                granted += 1;
                assert!(g.devices_used <= 3);
            }
            Err(LicenseError::TooManyActivations { max: 3 }) => {}
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(granted, 3);
    let lic = store.license_by_key(&key).await.unwrap().unwrap();
    let active = store.activations(&lic.id).await.unwrap();
    assert_eq!(active.iter().filter(|a| a.active).count(), 3);
}

pub async fn renewals_refuse_each_unusable_state_with_its_reason(store: SharedStore) {
    let key = license(&store, 3).await;
    store
        .activate_seat(&key, &hw(1), None, None, NOW)
        .await
        .unwrap();
    // Within the minute nothing is written; past it the time moves.
    let v = store.renew_seat(&key, &hw(1), NOW + 30).await.unwrap();
    assert_eq!(v.activation.last_validated_at, NOW);
    let v = store.renew_seat(&key, &hw(1), NOW + 100).await.unwrap();
    assert_eq!(v.activation.last_validated_at, NOW + 100);
    assert_eq!((v.devices_used, v.already_active), (1, true));
    assert!(matches!(
        store.renew_seat(&key, &hw(2), NOW).await,
        Err(LicenseError::NotActivated)
    ));
    assert!(matches!(
        store.renew_seat(&key, &hw(1), NOW + 30 * DAY).await,
        Err(LicenseError::Expired { since }) if since == NOW + 30 * DAY
    ));
    let stranger = LicenseKey::parse("CODITECT-PILOT-AAAA-BBBB-CCCC").unwrap();
    assert!(matches!(
        store.renew_seat(&stranger, &hw(1), NOW).await,
        Err(LicenseError::NotFound)
    ));
    store
        .free_seat(&holder(&key, &hw(1)), Seat::Machine(&hw(1)), NOW)
        .await
        .unwrap();
    assert!(matches!(
        store.renew_seat(&key, &hw(1), NOW).await,
        Err(LicenseError::NotActivated)
    ));
}

pub async fn revoking_stops_renewals_and_unknown_licenses_are_refused(store: SharedStore) {
    let key = license(&store, 3).await;
    store
        .activate_seat(&key, &hw(1), None, None, NOW)
        .await
        .unwrap();
    let id = store.license_by_key(&key).await.unwrap().unwrap().id;
    let revoked = store
        .revoke_license(&id, Some("chargeback"), NOW)
        .await
        .unwrap();
    assert_eq!(revoked.status, LicenseStatus::Revoked);
    assert_eq!(revoked.revoked_reason.as_deref(), Some("chargeback"));
    for result in [
        store.renew_seat(&key, &hw(1), NOW).await.map(|_| ()),
        store
            .activate_seat(&key, &hw(2), None, None, NOW)
            .await
            .map(|_| ()),
    ] {
        assert!(matches!(
            result,
            Err(LicenseError::Inactive(LicenseStatus::Revoked))
        ));
    }
    assert!(matches!(
        store.revoke_license("nope", None, NOW).await,
        Err(LicenseError::NotFound)
    ));
}

/// Billing rules of the suite: the test prices, graces of a day (paid
/// period) and a week (past due), a mail naming the key.
fn rules() -> BillingRules {
    rules_with(Graces {
        billing: DAY,
        past_due: 7 * DAY,
    })
}

/// The test prices (`price_sm`, `price_sa`: Starter; `price_pm`,
/// `price_pa`: Professional), these graces, and a mail that names the key.
/// Also used by the backends' own billing tests.
pub(crate) fn rules_with(graces: Graces) -> BillingRules {
    BillingRules {
        plan_of_price: Arc::new(|price: &str| match price {
            "price_sm" | "price_sa" => plans::find("pilot-starter"),
            "price_pm" | "price_pa" => plans::find("pilot-professional"),
            _ => None,
        }),
        graces,
        license_mail: Arc::new(|f: LicenseMailFacts<'_>| Mail {
            kind: "license_key",
            to: f.to.to_owned(),
            subject: format!("Your key ({})", f.plan_name),
            body: format!("key {}", f.key),
        }),
    }
}

/// Subscription `sub_1` of customer `cus_1` as Stripe describes it.
pub(crate) fn snapshot(status: &str, price: &str, quantity: u32, end: i64) -> SubscriptionSnapshot {
    SubscriptionSnapshot {
        id: "sub_1".into(),
        customer_id: "cus_1".into(),
        status: status.into(),
        price_id: Some(price.into()),
        quantity,
        current_period_end: Some(end),
        cancel_at_period_end: false,
    }
}

fn event(id: &str, created: i64, change: BillingChange) -> StripeEvent {
    StripeEvent {
        id: id.into(),
        kind: "test".into(),
        created,
        change,
    }
}

/// An organization with customer `cus_1` whose owner started checkout
/// `cs_1` in a browser (hash `browser`), and the completion event.
async fn paying_organization(store: &SharedStore) -> (String, StripeEvent) {
    let u = store
        .signup("buyer@x.io", "h", "Acme", None, NOW)
        .await
        .unwrap();
    let org = u.organization_id.clone();
    assert_eq!(
        store.set_stripe_customer(&org, "cus_1").await.unwrap(),
        "cus_1"
    );
    store
        .record_checkout(
            &CheckoutRecord {
                session_id: "cs_1".into(),
                organization_id: org.clone(),
                user_id: u.id,
                plan: "pilot-professional".into(),
                interval: "month".into(),
                browser_hash: Some("browser".into()),
            },
            NOW,
        )
        .await
        .unwrap();
    let completed = event(
        "evt_checkout",
        NOW + 10,
        BillingChange::CheckoutCompleted {
            customer: "cus_1".into(),
            session_id: "cs_1".into(),
            subscription: snapshot("active", "price_pm", 1, NOW + 30 * DAY),
        },
    );
    (org, completed)
}

pub async fn a_lost_key_is_replaced_for_its_organization_only(store: SharedStore) {
    let org = store.create_organization("Acme", NOW).await.unwrap();
    let other = store.create_organization("Other", NOW).await.unwrap();
    let (lic, old) = store
        .create_license(&new_license("pilot-starter", None, Some(&org)), NOW)
        .await
        .unwrap();
    store
        .activate_seat(&old, &hw(1), None, None, NOW)
        .await
        .unwrap();
    let new_key = LicenseKey::generate().unwrap();
    let mail = Mail {
        kind: "license_key",
        to: "owner@example.com".into(),
        subject: "Your new key".into(),
        body: format!("key {}", new_key.expose()),
    };
    // Another organization's member: refused, nothing changes.
    assert!(matches!(
        store
            .replace_key(&lic.id, &other, &new_key, &mail, NOW + 10)
            .await,
        Err(LicenseError::NotFound)
    ));
    assert!(store.license_by_key(&old).await.unwrap().is_some());
    assert!(store.claim_mail(NOW + 10, 10).await.unwrap().is_empty());
    // Its own: the old key finds nothing, the new one the same license
    // (the machine comes back on its seat), and the mail is queued.
    let replaced = store
        .replace_key(&lic.id, &org, &new_key, &mail, NOW + 20)
        .await
        .unwrap();
    assert_eq!(replaced.key_hint, new_key.hint());
    assert!(store.license_by_key(&old).await.unwrap().is_none());
    assert!(matches!(
        store.renew_seat(&old, &hw(1), NOW + 30).await,
        Err(LicenseError::NotFound)
    ));
    let grant = store
        .activate_seat(&new_key, &hw(1), None, None, NOW + 30)
        .await
        .unwrap();
    assert!(grant.already_active && grant.devices_used == 1);
    assert_eq!(grant.license.id, lic.id);
    let mails = store.claim_mail(NOW + 20, 10).await.unwrap();
    assert_eq!(mails.len(), 1);
    assert_eq!(
        mails[0].body.as_deref().map(|b| b.as_str()),
        Some(mail.body.as_str())
    );
    // A revoked license keeps its (dead) key.
    store.revoke_license(&lic.id, None, NOW + 40).await.unwrap();
    assert!(matches!(
        store
            .replace_key(
                &lic.id,
                &org,
                &LicenseKey::generate().unwrap(),
                &mail,
                NOW + 50
            )
            .await,
        Err(LicenseError::NotFound)
    ));
}

pub async fn a_paid_checkout_creates_one_license_and_one_mail(store: SharedStore) {
    let (org, completed) = paying_organization(&store).await;
    assert!(!store.stripe_event_seen("evt_checkout").await.unwrap());
    let (outcome, mailed) = store
        .apply_stripe_event(&completed, &rules(), NOW + 20)
        .await
        .unwrap();
    assert_eq!((outcome, mailed), (Outcome::Applied, true));
    assert!(store.stripe_event_seen("evt_checkout").await.unwrap());
    let (outcome, mailed) = store
        .apply_stripe_event(&completed, &rules(), NOW + 30)
        .await
        .unwrap();
    assert_eq!((outcome, mailed), (Outcome::Duplicate, false));
    let licenses = store.licenses_with_activations(Some(&org)).await.unwrap();
    assert_eq!(licenses.len(), 1);
    let lic = &licenses[0].0;
    assert_eq!(
        (lic.tier.as_str(), lic.max_activations),
        ("pilot-professional", 3)
    );
    assert_eq!(lic.expires_at, NOW + 30 * DAY + DAY, "period end + grace");
    assert_eq!(lic.email, "buyer@x.io");
    let mails = store.outbox(false, 10).await.unwrap();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].recipient, "buyer@x.io");
    let audit = store
        .audit_events(None, Some("license_created"), 10)
        .await
        .unwrap();
    assert_eq!(audit.len(), 1);
    assert!(store.has_live_subscription(&org).await.unwrap());
    // An event about a customer nobody has is recorded and ignored.
    let stranger = event(
        "evt_stranger",
        NOW,
        BillingChange::SubscriptionChanged {
            snapshot: SubscriptionSnapshot {
                customer_id: "cus_unknown".into(),
                ..snapshot("active", "price_pm", 1, NOW)
            },
        },
    );
    let (outcome, _) = store
        .apply_stripe_event(&stranger, &rules(), NOW)
        .await
        .unwrap();
    assert!(matches!(outcome, Outcome::Ignored(_)));
    assert!(store.stripe_event_seen("evt_stranger").await.unwrap());
    // A payload that lacks what its change needs is refused, not recorded.
    let bad = event(
        "evt_bad",
        NOW,
        BillingChange::Malformed {
            customer: "cus_1".into(),
            reason: "no id".into(),
        },
    );
    assert!(store.apply_stripe_event(&bad, &rules(), NOW).await.is_err());
    assert!(!store.stripe_event_seen("evt_bad").await.unwrap());
}

pub async fn concurrent_deliveries_of_one_event_apply_it_once(store: SharedStore) {
    let (org, completed) = paying_organization(&store).await;
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let (store, completed) = (Arc::clone(&store), completed.clone());
            tokio::spawn(async move {
                store
                    .apply_stripe_event(&completed, &rules(), NOW + 20)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut applied = 0;
    for t in tasks {
        if t.await.unwrap() == (Outcome::Applied, true) {
            applied += 1;
        }
    }
    assert_eq!(applied, 1);
    assert_eq!(
        store
            .licenses_with_activations(Some(&org))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(store.outbox(false, 10).await.unwrap().len(), 1);
}

pub async fn subscription_events_apply_in_order_whatever_the_delivery_order(store: SharedStore) {
    let (org, completed) = paying_organization(&store).await;
    store
        .apply_stripe_event(&completed, &rules(), NOW + 20)
        .await
        .unwrap();
    let changed = |id: &str, at: i64, s: SubscriptionSnapshot| {
        event(id, at, BillingChange::SubscriptionChanged { snapshot: s })
    };
    let newer = changed(
        "evt_2",
        NOW + 200,
        snapshot("active", "price_pm", 2, NOW + 40 * DAY),
    );
    let older = changed(
        "evt_1",
        NOW + 100,
        snapshot("active", "price_sm", 1, NOW + 35 * DAY),
    );
    let (o, _) = store
        .apply_stripe_event(&newer, &rules(), NOW)
        .await
        .unwrap();
    assert_eq!(o, Outcome::Applied);
    let (o, _) = store
        .apply_stripe_event(&older, &rules(), NOW)
        .await
        .unwrap();
    assert_eq!(o, Outcome::Stale);
    let lic = store.licenses_with_activations(Some(&org)).await.unwrap()[0]
        .0
        .clone();
    assert_eq!(
        (lic.tier.as_str(), lic.max_activations),
        ("pilot-professional", 6)
    );
    // Deleted, then a late update: stays canceled.
    let deleted = event(
        "evt_3",
        NOW + 300,
        BillingChange::SubscriptionDeleted {
            customer: "cus_1".into(),
            subscription_id: "sub_1".into(),
        },
    );
    store
        .apply_stripe_event(&deleted, &rules(), NOW)
        .await
        .unwrap();
    let late = changed(
        "evt_4",
        NOW + 400,
        snapshot("active", "price_pm", 1, NOW + 50 * DAY),
    );
    let (o, _) = store
        .apply_stripe_event(&late, &rules(), NOW)
        .await
        .unwrap();
    assert_eq!(o, Outcome::Stale);
    let lic = store.license(&lic.id).await.unwrap().unwrap();
    assert_eq!(lic.status, LicenseStatus::Canceled);
    assert!(!store.has_live_subscription(&org).await.unwrap());
}

pub async fn a_failed_payment_ends_renewals_after_the_grace_and_says_why(store: SharedStore) {
    let (org, completed) = paying_organization(&store).await;
    store
        .apply_stripe_event(&completed, &rules(), NOW + 20)
        .await
        .unwrap();
    let key_holder = store.licenses_with_activations(Some(&org)).await.unwrap()[0]
        .0
        .clone();
    let failed_at = NOW + 1_000;
    let failed = event(
        "evt_failed",
        failed_at,
        BillingChange::PaymentFailed {
            customer: "cus_1".into(),
            subscription_id: "sub_1".into(),
            invoice: None,
        },
    );
    store
        .apply_stripe_event(&failed, &rules(), failed_at)
        .await
        .unwrap();
    let lic = store.license(&key_holder.id).await.unwrap().unwrap();
    assert_eq!(lic.expires_at, failed_at + 7 * DAY, "the past-due grace");
    assert_eq!(lic.status, LicenseStatus::Active);
    // The key is not at hand here (it went by mail): read it from the mail.
    let body = store.claim_mail(NOW + 20, 10).await.unwrap()[0]
        .body
        .clone()
        .unwrap();
    let key = LicenseKey::parse(body.trim_start_matches("key ")).unwrap();
    store
        .activate_seat(&key, &hw(1), None, None, NOW + 30)
        .await
        .unwrap();
    match store.renew_seat(&key, &hw(1), failed_at + 7 * DAY).await {
        Err(LicenseError::PaymentOverdue {
            since,
            failed_at: f,
        }) => {
            assert_eq!((since, f), (failed_at + 7 * DAY, failed_at));
        }
        other => panic!("{other:?}"),
    }
    // Paid again: renewals work, until the new period's end.
    let paid = event(
        "evt_paid",
        failed_at + 10,
        BillingChange::InvoicePaid {
            customer: "cus_1".into(),
            subscription_id: "sub_1".into(),
            period_end: Some(NOW + 60 * DAY),
            invoice: None,
        },
    );
    store
        .apply_stripe_event(&paid, &rules(), failed_at + 10)
        .await
        .unwrap();
    store
        .renew_seat(&key, &hw(1), failed_at + 7 * DAY)
        .await
        .unwrap();
    let lic = store.license(&key_holder.id).await.unwrap().unwrap();
    assert_eq!(lic.expires_at, NOW + 60 * DAY + DAY);
}

pub async fn pilot_facts_count_signups_activations_invoices_and_revenue_history(
    store: SharedStore,
) {
    use crate::domain::billing::InvoiceFacts;
    let empty = store.pilot_facts(0, NOW).await.unwrap();
    assert_eq!(empty, crate::domain::stats::PilotFacts::default());
    let (_org, completed) = paying_organization(&store).await;
    store
        .apply_stripe_event(&completed, &rules(), NOW + 20)
        .await
        .unwrap();
    let body = store.claim_mail(NOW + 20, 10).await.unwrap()[0]
        .body
        .clone()
        .unwrap();
    let key = LicenseKey::parse(body.trim_start_matches("key ")).unwrap();
    store
        .activate_seat(&key, &hw(1), None, None, NOW + 30)
        .await
        .unwrap();
    let invoice = |id: &str| {
        Some(InvoiceFacts {
            id: id.into(),
            amount_minor: Some(4_900),
            currency: Some("usd".into()),
        })
    };
    let paid = BillingChange::InvoicePaid {
        customer: "cus_1".into(),
        subscription_id: "sub_1".into(),
        period_end: Some(NOW + 30 * DAY),
        invoice: invoice("in_1"),
    };
    let failed = || BillingChange::PaymentFailed {
        customer: "cus_1".into(),
        subscription_id: "sub_1".into(),
        invoice: invoice("in_2"),
    };
    let stranger = BillingChange::InvoicePaid {
        customer: "cus_stranger".into(),
        subscription_id: "sub_x".into(),
        period_end: None,
        invoice: invoice("in_x"),
    };
    for (id, at, change) in [
        ("evt_in1", NOW + 40, paid),
        ("evt_in2a", NOW + 50, failed()),
        ("evt_in2b", NOW + 60, failed()),
        ("evt_in2b", NOW + 60, failed()),
        ("evt_stranger", NOW + 61, stranger),
    ] {
        store
            .apply_stripe_event(&event(id, at, change), &rules(), at)
            .await
            .unwrap();
    }
    let deleted = event(
        "evt_deleted",
        NOW + 70,
        BillingChange::SubscriptionDeleted {
            customer: "cus_1".into(),
            subscription_id: "sub_1".into(),
        },
    );
    store
        .apply_stripe_event(&deleted, &rules(), NOW + 70)
        .await
        .unwrap();

    let all = store.pilot_facts(0, NOW + 100).await.unwrap();
    assert_eq!(
        all.signups_by_plan,
        [("pilot-professional".to_owned(), 1)].into()
    );
    assert_eq!((all.paid_licenses, all.activated_licenses), (1, 1));
    assert_eq!(
        (all.invoices_attempted, all.invoices_paid),
        (2, 1),
        "a repeated delivery and a stranger's invoice are not counted"
    );
    assert_eq!(all.active_machines, 1);
    let states: Vec<_> = all
        .history
        .iter()
        .map(|s| {
            (
                s.subscription_id.as_str(),
                s.at,
                s.status.as_str(),
                s.price_id.as_deref(),
                s.quantity,
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("sub_1", NOW + 20, "active", Some("price_pm"), 1),
            ("sub_1", NOW + 40, "active", Some("price_pm"), 1),
            ("sub_1", NOW + 50, "past_due", Some("price_pm"), 1),
            ("sub_1", NOW + 60, "past_due", Some("price_pm"), 1),
            ("sub_1", NOW + 70, "canceled", Some("price_pm"), 1),
        ]
    );
    // A later period: only what happened in it; the history up to its end.
    let later = store.pilot_facts(NOW + 45, NOW + 65).await.unwrap();
    assert!(later.signups_by_plan.is_empty());
    assert_eq!((later.paid_licenses, later.activated_licenses), (0, 0));
    assert_eq!((later.invoices_attempted, later.invoices_paid), (1, 0));
    assert_eq!(later.history.len(), 4);
    // A machine that has not renewed for more than a week is not in use.
    let quiet = store.pilot_facts(0, NOW + 30 + 8 * DAY).await.unwrap();
    assert_eq!(quiet.active_machines, 0);
}

pub async fn customers_and_checkouts_are_kept_per_organization(store: SharedStore) {
    let u = store
        .signup("a@x.io", "h", "Acme", None, NOW)
        .await
        .unwrap();
    let org = u.organization_id.clone();
    assert_eq!(store.stripe_customer(&org).await.unwrap(), None);
    assert_eq!(
        store.set_stripe_customer(&org, "cus_A").await.unwrap(),
        "cus_A"
    );
    // A second (simultaneous) first checkout keeps the first customer.
    assert_eq!(
        store.set_stripe_customer(&org, "cus_B").await.unwrap(),
        "cus_A"
    );
    assert_eq!(
        store.stripe_customer(&org).await.unwrap().as_deref(),
        Some("cus_A")
    );
    assert!(!store.has_live_subscription(&org).await.unwrap());
    let checkout = |id: &str| CheckoutRecord {
        session_id: id.into(),
        organization_id: org.clone(),
        user_id: u.id.clone(),
        plan: "pilot-starter".into(),
        interval: "month".into(),
        browser_hash: None,
    };
    store
        .record_checkout(&checkout("cs_old"), NOW - 2 * DAY)
        .await
        .unwrap();
    store.record_checkout(&checkout("cs_1"), NOW).await.unwrap();
    store
        .record_checkout(&checkout("cs_1"), NOW + 5)
        .await
        .unwrap();
    store
        .record_checkout(&checkout("cs_2"), NOW + 1)
        .await
        .unwrap();
    let mut open = store.open_checkouts(&org, NOW - DAY).await.unwrap();
    open.sort();
    assert_eq!(open, ["cs_1", "cs_2"]);
    store.checkout_expired("cs_1", NOW + 2).await.unwrap();
    assert_eq!(
        store.open_checkouts(&org, NOW - DAY).await.unwrap(),
        ["cs_2"]
    );
}

pub async fn the_key_is_revealed_once_to_the_browser_that_paid(store: SharedStore) {
    let (_, completed) = paying_organization(&store).await;
    assert_eq!(
        store.reveal_key("cs_1", "browser", NOW).await.unwrap(),
        Reveal::Pending
    );
    store
        .apply_stripe_event(&completed, &rules(), NOW + 20)
        .await
        .unwrap();
    assert_eq!(
        store.reveal_key("cs_1", "another", NOW + 30).await.unwrap(),
        Reveal::Unknown
    );
    assert_eq!(
        store
            .reveal_key("cs_none", "browser", NOW + 30)
            .await
            .unwrap(),
        Reveal::Unknown
    );
    let Reveal::Key { key, email, .. } =
        store.reveal_key("cs_1", "browser", NOW + 30).await.unwrap()
    else {
        panic!("the key was not revealed");
    };
    assert_eq!(email, "buyer@x.io");
    let key = LicenseKey::parse(&key).unwrap();
    assert!(matches!(
        store.reveal_key("cs_1", "browser", NOW + 40).await.unwrap(),
        Reveal::AlreadyShown { key_hint, .. } if key_hint == key.hint()
    ));
    // A key never shown is wiped after the window.
    assert_eq!(store.wipe_stale_reveals(NOW + 40).await.unwrap(), 0);
    assert_eq!(
        store
            .wipe_stale_reveals(NOW + 20 + REVEAL_WINDOW + 1)
            .await
            .unwrap(),
        0,
        "shown keys are wiped already"
    );
}

fn mail(to: &str) -> Mail {
    Mail {
        kind: "license_key",
        to: to.into(),
        subject: "Your key".into(),
        body: "key".into(),
    }
}

pub async fn mail_is_claimed_once_retried_and_given_up(store: SharedStore) {
    let second = store
        .enqueue_mail(&mail("b@x.io"), NOW + 200)
        .await
        .unwrap();
    let first = store
        .enqueue_mail(&mail("a@x.io"), NOW + 100)
        .await
        .unwrap();
    let later = store
        .enqueue_mail(&mail("c@x.io"), NOW + 10_000)
        .await
        .unwrap();
    let due = store.claim_mail(NOW + 500, 10).await.unwrap();
    let ids: Vec<&str> = due.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, [first.as_str(), second.as_str()], "oldest first");
    assert_eq!(due[0].body.as_deref().map(String::as_str), Some("key"));
    assert!(store.claim_mail(NOW + 501, 10).await.unwrap().is_empty());
    let again = store.claim_mail(NOW + 500 + CLAIM_SECS, 1).await.unwrap();
    assert_eq!(
        again[0].id, first,
        "after the claim ran out, the oldest again"
    );
    store.mail_sent(&first, NOW + 600).await.unwrap();
    let refused = Failure::transient("421 try later");
    let next = store
        .mail_failed(&second, NOW + 600, &refused, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        next,
        Some(Next::RetryAt {
            attempts: 1,
            at: NOW + 630
        })
    );
    let next = store
        .mail_failed(
            &later,
            NOW + 600,
            &Failure::permanent("no such address"),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert_eq!(next, Some(Next::GaveUp { attempts: 1 }));
    assert_eq!(
        store
            .mail_failed(&first, NOW + 700, &refused, Duration::from_secs(30))
            .await
            .unwrap(),
        None,
        "a sent mail is not failed afterwards"
    );
    let all = store.outbox(false, 10).await.unwrap();
    let status = |id: &str| all.iter().find(|e| e.id == id).unwrap().clone();
    assert_eq!(status(&first).status, OutboxStatus::Sent);
    assert_eq!(status(&second).status, OutboxStatus::Waiting);
    assert_eq!(status(&second).next_attempt_at, Some(NOW + 630));
    assert_eq!(status(&second).last_error.as_deref(), Some("421 try later"));
    assert_eq!(status(&later).status, OutboxStatus::GivenUp);
    let unsent: Vec<String> = store
        .outbox(true, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(unsent.len(), 2);
    assert!(store.retry_mail(&later, NOW + 800).await.unwrap());
    assert!(!store.retry_mail(&first, NOW + 800).await.unwrap(), "sent");
    assert!(!store.retry_mail("nope", NOW + 800).await.unwrap());
    let revived = store.claim_mail(NOW + 800, 10).await.unwrap();
    assert!(revived.iter().any(|d| d.id == later));
}

/// The metrics' view of the outbox: unsent mail by status and when the
/// oldest unsent one was queued; sent mail drops out of it. And of the
/// connection pool.
pub async fn the_outbox_backlog_counts_unsent_mail_and_its_age(store: SharedStore) {
    assert_eq!(
        store.outbox_backlog().await.unwrap(),
        OutboxBacklog::default(),
        "an empty outbox"
    );
    let oldest = store.enqueue_mail(&mail("a@x.io"), NOW).await.unwrap();
    let doomed = store
        .enqueue_mail(&mail("b@x.io"), NOW + 100)
        .await
        .unwrap();
    store
        .enqueue_mail(&mail("c@x.io"), NOW + 200)
        .await
        .unwrap();
    store
        .mail_failed(
            &doomed,
            NOW + 300,
            &Failure::permanent("no such address"),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert_eq!(
        store.outbox_backlog().await.unwrap(),
        OutboxBacklog {
            waiting: 2,
            given_up: 1,
            oldest_unsent_at: Some(NOW),
        }
    );
    store.mail_sent(&oldest, NOW + 400).await.unwrap();
    assert_eq!(
        store.outbox_backlog().await.unwrap(),
        OutboxBacklog {
            waiting: 1,
            given_up: 1,
            oldest_unsent_at: Some(NOW + 100),
        },
        "the given-up mail is still unsent, and now the oldest"
    );
    // The pool the metrics report: no connection lent out between calls.
    let pool = store.pool_status();
    assert!(pool.max > 0, "{pool:?}");
    assert_eq!(pool.in_use, 0, "{pool:?}");
    assert!(pool.idle >= 1 && pool.idle <= pool.max, "{pool:?}");
}

pub async fn two_senders_never_claim_the_same_mail(store: SharedStore) {
    for i in 0..40 {
        store
            .enqueue_mail(&mail(&format!("m{i}@x.io")), NOW + i)
            .await
            .unwrap();
    }
    let senders: Vec<_> = (0..4)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let batch = store.claim_mail(NOW + 100, 3).await.unwrap();
                    if batch.is_empty() {
                        return mine;
                    }
                    mine.extend(batch.into_iter().map(|d| d.id));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for s in senders {
        all.extend(s.await.unwrap());
    }
    let count = all.len();
    all.sort();
    all.dedup();
    assert_eq!(
        (count, all.len()),
        (40, 40),
        "each mail claimed exactly once"
    );
}

pub async fn a_stopping_sender_gives_its_claims_back(store: SharedStore) {
    let a = store.enqueue_mail(&mail("a@x.io"), NOW).await.unwrap();
    let b = store.enqueue_mail(&mail("b@x.io"), NOW).await.unwrap();
    let claimed = store.claim_mail(NOW, 10).await.unwrap();
    assert_eq!(claimed.len(), 2);
    // Mail `a` went out before the stop; `b` was still waiting its turn.
    store.mail_sent(&a, NOW + 1).await.unwrap();
    let released = store
        .release_mail(&[a.clone(), b.clone(), "no-such-mail".into()], NOW + 2)
        .await
        .unwrap();
    assert_eq!(released, 1, "only the unsent claim is given back");
    let again = store.claim_mail(NOW + 2, 10).await.unwrap();
    assert_eq!(
        again.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
        [b.as_str()],
        "another sender takes it at once, not after the claim"
    );
    assert_eq!(store.release_mail(&[], NOW + 3).await.unwrap(), 0);
}

pub async fn the_audit_log_appends_and_filters(store: SharedStore) {
    store
        .append_audit(&[
            Event::new(10, "login", "ok").actor("user:u1"),
            Event::new(20, "validate", "ok").subject("activation", "a1"),
            Event::new(30, "validate", "not_activated"),
        ])
        .await
        .unwrap();
    let all = store.audit_events(None, None, 100).await.unwrap();
    let kinds: Vec<(&str, &str)> = all
        .iter()
        .map(|e| (e.event.as_str(), e.outcome.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("login", "ok"),
            ("validate", "ok"),
            ("validate", "not_activated")
        ]
    );
    assert_eq!(
        store.audit_events(Some(15), None, 100).await.unwrap().len(),
        2
    );
    assert_eq!(
        store
            .audit_events(None, Some("validate"), 100)
            .await
            .unwrap()
            .len(),
        2
    );
    let newest = store.audit_events(None, None, 1).await.unwrap();
    assert_eq!(newest[0].at, 30, "the newest `limit`, oldest first");
    assert_eq!(all[1].subject_id.as_deref(), Some("a1"));
}

pub async fn old_audit_events_are_pruned_in_bounded_batches(store: SharedStore) {
    let events: Vec<Event> = (0..25)
        .map(|i| Event::new(1_000 + i, "stripe_webhook", "bad_signature"))
        .chain([Event::new(2_000, "login", "ok")])
        .collect();
    store.append_audit(&events).await.unwrap();
    // Before 1,020: 20 events, taken 8 at a time, oldest first.
    assert_eq!(store.prune_audit(1_020, 8).await.unwrap(), 8);
    let left = store.audit_events(None, None, 100).await.unwrap();
    assert_eq!(left.len(), 18);
    assert_eq!(left[0].at, 1_008, "the oldest went first");
    assert_eq!(store.prune_audit(1_020, 8).await.unwrap(), 8);
    assert_eq!(store.prune_audit(1_020, 8).await.unwrap(), 4);
    assert_eq!(store.prune_audit(1_020, 8).await.unwrap(), 0);
    let left = store.audit_events(None, None, 100).await.unwrap();
    let times: Vec<i64> = left.iter().map(|e| e.at).collect();
    assert_eq!(times, [1_020, 1_021, 1_022, 1_023, 1_024, 2_000]);
    // An event at the cut-off itself stays; nothing newer goes.
    assert_eq!(store.prune_audit(1_020, 100).await.unwrap(), 0);
    assert_eq!(store.prune_audit(2_000, 100).await.unwrap(), 5);
    assert_eq!(store.audit_events(None, None, 100).await.unwrap().len(), 1);
    assert_eq!(store.prune_audit(i64::MAX, 0).await.unwrap(), 0);
}
