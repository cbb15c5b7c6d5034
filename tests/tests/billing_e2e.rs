//! Paid signup over HTTP against the real issuer and a fake Stripe:
//! checkout, the webhook events it triggers, the license and its mail.

use coditect_tests::billing::{BillingEnv, open_db, query_rows};

fn data_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

#[test]
fn a_paid_checkout_makes_one_license_and_one_mail() {
    let dir = data_dir();
    let env = BillingEnv::start(dir.path(), &[]);
    let p = env.buy("buyer@example.com", "pilot-professional", "month");
    let deliveries = env.stripe.deliveries();
    assert!(
        deliveries.iter().all(|d| d.succeeded()),
        "{deliveries:#?}\n{}",
        env.issuer.log()
    );
    let db = open_db(dir.path());
    let licenses = query_rows(&db, "SELECT * FROM licenses");
    assert_eq!(licenses.len(), 1, "{licenses:#?}");
    assert_eq!(licenses[0]["tier"], "pilot-professional");
    assert_eq!(licenses[0]["max_activations"], 3);
    assert_eq!(
        licenses[0]["stripe_subscription_id"],
        p.subscription_id.as_str()
    );
    let mails = query_rows(&db, "SELECT * FROM email_outbox");
    assert_eq!(mails.len(), 1, "{mails:#?}");
    assert_eq!(mails[0]["recipient"], "buyer@example.com");
}
