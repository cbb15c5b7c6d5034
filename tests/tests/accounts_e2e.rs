//! Seat integrity and abuse resistance of accounts (issue 13, items 5–7),
//! against the real issuer binary (and the real CLI): only paid
//! organizations fill the pilot; addresses are verified by a mailed
//! single-use link and unverified, unpaid accounts expire; passwords are
//! reset by a mailed single-use link that ends every session; failed
//! sign-ins slow down the client that fails (and, past a high ceiling,
//! every client that never signed in), never the owner at their own
//! address. Each refusal is checked with its code and with the state that
//! must not have changed. Mail is read from the issuer's log (development
//! without `SMTP_URL`); the web form's answer is in `web_e2e.rs`.

use coditect_tests::billing::BillingEnv;
use coditect_tests::cli::Cli;
use coditect_tests::database::{Backend, TestDatabase};
use coditect_tests::issuer::{Client, IssuerServer};
use coditect_tests::on_both_backends;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";

fn data_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("coditect-accounts-e2e-")
        .tempdir()
        .expect("temp dir")
}

/// Sign-ins are counted per client address: the issuer trusts one proxy,
/// and each test client names its address in `X-Forwarded-For`. The
/// per-address request limit is raised so that only the failure counts
/// decide.
const FROM_PROXY: &[(&str, &str)] = &[
    ("TRUST_PROXY", "1"),
    ("RATE_LIMIT_LOGIN", "1000/min"),
    ("RATE_LIMIT_SIGNUP", "1000/min"),
];

fn from(issuer: &IssuerServer, ip: &str) -> Client {
    issuer.client().with_header("x-forwarded-for", ip)
}

fn signup(client: &Client, email: &str, password: &str) -> Value {
    client
        .post_json(
            "/api/v1/auth/signup",
            &json!({"email": email, "password": password, "company_name": "Acme"}),
        )
        .expect_status(202)
}

fn login(client: &Client, email: &str, password: &str) -> coditect_tests::issuer::HttpResponse {
    client.post_json(
        "/api/v1/auth/login",
        &json!({"email": email, "password": password}),
    )
}

fn token_of(link: &str) -> String {
    link.split("token=")
        .nth(1)
        .and_then(|t| t.split('&').next())
        .expect("a token in the link")
        .to_owned()
}

/// Item 7: a stranger failing from their address is slowed down (429
/// `sign_in_delayed`, `Retry-After`), even with the right password, and
/// gets no session; the owner at their own address signs in.
fn a_strangers_failures_slow_the_stranger_and_not_the_owner(backend: Backend) {
    let dir = data_dir();
    let Some(db) = TestDatabase::create(backend, dir.path()) else {
        return;
    };
    let issuer = IssuerServer::start_with_env(dir.path(), FROM_PROXY);
    let owner = from(&issuer, "198.51.100.7");
    let stranger = from(&issuer, "203.0.113.9");
    signup(&owner, "owner@example.com", PASSWORD);
    for _ in 0..5 {
        login(&stranger, "owner@example.com", "guess guess guess")
            .expect_problem(401, "invalid_credentials");
    }
    let sessions = db.count("SELECT count(*) FROM sessions");
    let refused = login(&stranger, "owner@example.com", PASSWORD);
    refused.expect_problem(429, "sign_in_delayed");
    let wait = refused.retry_after.expect("Retry-After");
    assert!((1..=30).contains(&wait), "{wait}");
    assert_eq!(
        db.count("SELECT count(*) FROM sessions"),
        sessions,
        "the refused attempt made no session"
    );
    // Another address of the stranger's is its own count; the owner is
    // not locked out.
    login(&owner, "owner@example.com", PASSWORD).expect_status(200);
    assert_eq!(db.count("SELECT count(*) FROM sessions"), sessions + 1);
    // Still delayed for the stranger, also on a second try.
    login(&stranger, "owner@example.com", PASSWORD).expect_problem(429, "sign_in_delayed");
}

on_both_backends!(a_strangers_failures_slow_the_stranger_and_not_the_owner);

/// Item 7, the global bound: failures from many addresses together slow
/// down every address that never signed in to the email (a fresh one with
/// the right password is refused), but not the owner's known address.
#[test]
fn many_addresses_together_slow_new_clients_but_not_the_owners_address() {
    let dir = data_dir();
    let issuer = IssuerServer::start_with_env(dir.path(), FROM_PROXY);
    let owner = from(&issuer, "198.51.100.7");
    signup(&owner, "owner@example.com", PASSWORD);
    login(&owner, "owner@example.com", PASSWORD).expect_status(200);
    // 50 failures (the ceiling) from ten addresses, five each.
    for n in 0..10 {
        let c = from(&issuer, &format!("203.0.113.{}", 10 + n));
        for _ in 0..5 {
            login(&c, "owner@example.com", "guess guess guess")
                .expect_problem(401, "invalid_credentials");
        }
    }
    let fresh = from(&issuer, "192.0.2.55");
    let refused = login(&fresh, "owner@example.com", PASSWORD);
    refused.expect_problem(429, "sign_in_delayed");
    assert!(refused.retry_after.is_some_and(|s| s >= 1));
    login(&owner, "owner@example.com", PASSWORD).expect_status(200);
}

/// Item 5: unpaid signups take no place; once the one place is paid for,
/// a new signup is refused (`signup_full`) and creates no user, and an
/// unpaid organization cannot start a checkout (`signup_full`, no Stripe
/// session).
#[test]
fn unpaid_signups_take_no_place_and_a_paid_pilot_refuses_more() {
    let dir = data_dir();
    let env = BillingEnv::start(
        dir.path(),
        &[
            ("PILOT_USERS_LIMIT", "1"),
            ("RATE_LIMIT_SIGNUP", "1000/min"),
        ],
    );
    let db = TestDatabase::create(Backend::Sqlite, dir.path()).unwrap();
    let waiting = env.account("waiting@example.com", "Waiting Ltd");
    for n in 0..3 {
        signup(&env.client(), &format!("unpaid{n}@example.com"), PASSWORD);
    }
    env.buy("paid@example.com", "pilot-starter", "month");
    let users = db.count("SELECT count(*) FROM users");
    let r = env.client().post_json(
        "/api/v1/auth/signup",
        &json!({"email": "late@example.com", "password": PASSWORD, "company_name": "Late"}),
    );
    r.expect_problem(403, "signup_full");
    assert_eq!(db.count("SELECT count(*) FROM users"), users);
    let sessions = env.stripe.checkout_session_ids().len();
    env.start_checkout(&waiting, "pilot-starter", "month")
        .expect_problem(403, "signup_full");
    assert_eq!(env.stripe.checkout_session_ids().len(), sessions);
    assert_eq!(
        db.count("SELECT count(*) FROM checkouts WHERE organization_id IN (SELECT organization_id FROM users WHERE email = 'waiting@example.com')"),
        0
    );
}

/// Item 5: the verification link works once (again: `link_invalid`, and
/// the address stays verified as it was); an unverified, unpaid squatter
/// of an address keeps it only until `UNVERIFIED_ACCOUNT_TTL`, then the
/// owner's signup takes it.
#[test]
fn a_verification_link_works_once_and_an_unverified_squatter_expires() {
    let dir = data_dir();
    let db = TestDatabase::create(Backend::Sqlite, dir.path()).unwrap();
    let issuer = IssuerServer::start_with_env(
        dir.path(),
        &[
            ("UNVERIFIED_ACCOUNT_TTL", "3s"),
            ("RATE_LIMIT_SIGNUP", "1000/min"),
        ],
    );
    let c = issuer.client();
    signup(&c, "new@example.com", PASSWORD);
    let link = issuer.wait_for_mailed_link("new@example.com", "/signup/verify", 1);
    let token = token_of(&link);
    c.post_json("/api/v1/auth/verify-email", &json!({"token": token}))
        .expect_status(200);
    let verified_at = db.one("SELECT email_verified_at FROM users WHERE email = 'new@example.com'");
    assert!(verified_at["email_verified_at"].is_i64(), "{verified_at}");
    c.post_json("/api/v1/auth/verify-email", &json!({"token": token}))
        .expect_problem(404, "link_invalid");
    c.post_json("/api/v1/auth/verify-email", &json!({"token": "made-up"}))
        .expect_problem(404, "link_invalid");
    assert_eq!(
        db.one("SELECT email_verified_at FROM users WHERE email = 'new@example.com'"),
        verified_at
    );

    // A squatter takes victim@; the owner's signup gets the usual answer
    // but changes nothing while the squatter's account is young.
    signup(&c, "victim@example.com", "squatter password");
    signup(&c, "victim@example.com", PASSWORD);
    login(&c, "victim@example.com", PASSWORD).expect_problem(401, "invalid_credentials");
    assert_eq!(
        db.count("SELECT count(*) FROM users WHERE email = 'victim@example.com'"),
        1
    );
    // The owner was told by mail (a reset link), not the squatter.
    issuer.wait_for_mailed_link("victim@example.com", "/signup/reset", 1);
    // Past the TTL, unverified and unpaid: the owner's signup frees it.
    std::thread::sleep(std::time::Duration::from_secs(4));
    signup(&c, "victim@example.com", PASSWORD);
    login(&c, "victim@example.com", PASSWORD).expect_status(200);
    login(&c, "victim@example.com", "squatter password").expect_problem(401, "invalid_credentials");
    // The verified account, as old, stays.
    login(&c, "new@example.com", PASSWORD).expect_status(200);
}

/// Item 5: a reset request answers the same for a known and an unknown
/// email and mails only the known one; the link sets the password once,
/// ends every session, and a second use is refused (`link_invalid`)
/// without changing the password. `coditect login --reset` asks for it.
fn a_password_reset_is_mailed_used_once_and_ends_every_session(backend: Backend) {
    let dir = data_dir();
    let Some(_db) = TestDatabase::create(backend, dir.path()) else {
        return;
    };
    let issuer = IssuerServer::start_with_env(
        dir.path(),
        &[
            ("RATE_LIMIT_SIGNUP", "1000/min"),
            ("RATE_LIMIT_LOGIN", "1000/min"),
        ],
    );
    let c = issuer.client();
    signup(&c, "reset@example.com", PASSWORD);
    let session = login(&c, "reset@example.com", PASSWORD).expect_status(200);
    let bearer = session["access_token"].as_str().unwrap().to_owned();
    let signed_in = c.clone().with_bearer(&bearer);
    signed_in.get("/api/v1/licenses").expect_status(200);

    let known = c.post_json(
        "/api/v1/auth/password-reset",
        &json!({"email": "reset@example.com"}),
    );
    let unknown = c.post_json(
        "/api/v1/auth/password-reset",
        &json!({"email": "nobody@example.com"}),
    );
    assert_eq!((known.status, unknown.status), (202, 202));
    assert_eq!(known.body, unknown.body, "the same answer");
    let link = issuer.wait_for_mailed_link("reset@example.com", "/signup/reset", 1);
    assert!(
        issuer
            .mailed_links("nobody@example.com", "/signup/reset")
            .is_empty()
    );
    let token = token_of(&link);

    let new_password = "a brand new passphrase";
    c.post_json(
        "/api/v1/auth/new-password",
        &json!({"token": token, "password": new_password}),
    )
    .expect_status(200);
    signed_in
        .get("/api/v1/licenses")
        .expect_problem(401, "unauthorized");
    login(&c, "reset@example.com", PASSWORD).expect_problem(401, "invalid_credentials");
    // Used once: the second use changes nothing.
    c.post_json(
        "/api/v1/auth/new-password",
        &json!({"token": token, "password": "yet another passphrase"}),
    )
    .expect_problem(404, "link_invalid");
    login(&c, "reset@example.com", "yet another passphrase")
        .expect_problem(401, "invalid_credentials");
    login(&c, "reset@example.com", new_password).expect_status(200);

    // The CLI asks for a link the same way.
    let out = Cli::new().run(&[
        "--server",
        issuer.base_url(),
        "login",
        "--reset",
        "--email",
        "reset@example.com",
    ]);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("/signup/reset"), "{}", out.stdout);
    issuer.wait_for_mailed_link("reset@example.com", "/signup/reset", 2);
}

on_both_backends!(a_password_reset_is_mailed_used_once_and_ends_every_session);
