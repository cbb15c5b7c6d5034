//! A paid-signup test bed: a fake Stripe and the real issuer binary wired
//! to each other (the issuer's `STRIPE_API_BASE` is the fake, the fake
//! delivers its events to the issuer's `/webhooks/stripe`), plus helpers to
//! sign up, sign in and buy a plan over HTTP.

use std::path::Path;

use serde_json::{Value, json};

use crate::fake_stripe::{self, FakeStripe};
use crate::issuer::{Client, IssuerServer};

/// The issuer's Stripe settings for a fake.
pub fn stripe_env(stripe: &FakeStripe) -> Vec<(String, String)> {
    vec![
        ("STRIPE_SECRET_KEY".into(), stripe.api_key().to_owned()),
        (
            "STRIPE_WEBHOOK_SECRET".into(),
            stripe.webhook_secret().to_owned(),
        ),
        ("STRIPE_API_BASE".into(), stripe.base_url()),
        (
            "STRIPE_PRICE_STARTER_MONTHLY".into(),
            fake_stripe::PRICE_STARTER_MONTHLY.into(),
        ),
        (
            "STRIPE_PRICE_STARTER_ANNUAL".into(),
            fake_stripe::PRICE_STARTER_ANNUAL.into(),
        ),
        (
            "STRIPE_PRICE_PRO_MONTHLY".into(),
            fake_stripe::PRICE_PROFESSIONAL_MONTHLY.into(),
        ),
        (
            "STRIPE_PRICE_PRO_ANNUAL".into(),
            fake_stripe::PRICE_PROFESSIONAL_ANNUAL.into(),
        ),
    ]
}

/// A fake Stripe and an issuer that uses it.
pub struct BillingEnv {
    pub stripe: FakeStripe,
    pub issuer: IssuerServer,
}

/// A bought subscription.
#[derive(Debug, Clone)]
pub struct Purchase {
    /// Access token of the buyer.
    pub jwt: String,
    pub email: String,
    pub session_id: String,
    pub customer_id: String,
    pub subscription_id: String,
    pub event_ids: Vec<String>,
    /// Where Stripe sent the browser afterwards.
    pub redirect_url: Option<String>,
}

impl BillingEnv {
    /// Starts both, the issuer on `data_dir` with `env` on top of the
    /// Stripe settings.
    pub fn start(data_dir: &Path, env: &[(&str, &str)]) -> BillingEnv {
        Self::start_with_stripe(fake_stripe::Config::default(), data_dir, env)
    }

    /// Starts both, the fake Stripe set up with `config`.
    pub fn start_with_stripe(
        config: fake_stripe::Config,
        data_dir: &Path,
        env: &[(&str, &str)],
    ) -> BillingEnv {
        let stripe = FakeStripe::start(config);
        let mut all: Vec<(String, String)> = stripe_env(&stripe);
        all.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let issuer = IssuerServer::start_with_env(data_dir, &crate::issuer::env_refs(&all));
        stripe.set_webhook_url(Some(&format!("{}/webhooks/stripe", issuer.base_url())));
        BillingEnv { stripe, issuer }
    }

    pub fn client(&self) -> Client {
        self.issuer.client()
    }

    /// The license key the issuer mailed last, from its log (development
    /// mode without SMTP_URL writes mails there); waits up to 30 s.
    pub fn logged_key(&self) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let log = self.issuer.log();
            if let Some(i) = log.rfind("CODITECT-PILOT-") {
                return log[i..i + 29].to_owned();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no license key in the issuer's log:\n{log}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Signs up and signs in; returns the access token.
    pub fn account(&self, email: &str, company: &str) -> String {
        let client = self.client();
        client
            .post_json(
                "/api/v1/auth/signup",
                &json!({"email": email, "password": "correct horse battery staple", "company_name": company}),
            )
            .expect_status(202);
        let login = client
            .post_json(
                "/api/v1/auth/login",
                &json!({"email": email, "password": "correct horse battery staple"}),
            )
            .expect_status(200);
        login["access_token"]
            .as_str()
            .expect("login returns access_token")
            .to_owned()
    }

    /// `POST /api/v1/billing/checkout` as the holder of `jwt`; the raw answer.
    pub fn start_checkout(
        &self,
        jwt: &str,
        plan: &str,
        interval: &str,
    ) -> crate::issuer::HttpResponse {
        self.client().with_bearer(jwt).post_json(
            "/api/v1/billing/checkout",
            &json!({"plan": plan, "interval": interval}),
        )
    }

    /// A new account that buys `plan` billed every `interval`; the events
    /// have been delivered (and answered) when this returns.
    pub fn buy(&self, email: &str, plan: &str, interval: &str) -> Purchase {
        let jwt = self.account(email, "Acme Test Ltd");
        let started = self.start_checkout(&jwt, plan, interval).expect_status(200);
        let session_id = started["session_id"]
            .as_str()
            .expect("session_id")
            .to_owned();
        let done = self.stripe.complete_checkout(&session_id);
        Purchase {
            jwt,
            email: email.to_owned(),
            session_id,
            customer_id: done.customer_id,
            subscription_id: done.subscription_id,
            event_ids: done.event_ids,
            redirect_url: done.redirect_url,
        }
    }
}

/// The files directly in `dir` whose bytes contain `needle` (where a
/// secret could remain on disk: the database, its WAL, its journal).
pub fn files_containing(dir: &Path, needle: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read the folder") {
        let path = entry.expect("a folder entry").path();
        if path.is_file()
            && std::fs::read(&path)
                .expect("read the file")
                .windows(needle.len())
                .any(|w| w == needle.as_bytes())
        {
            found.push(path);
        }
    }
    found
}

/// Opens the issuer's database read-only.
pub fn open_db(data_dir: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(
        data_dir.join("issuer.sqlite3"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open the issuer's database")
}

/// One row of a query as JSON values, by column name.
pub fn query_rows(conn: &rusqlite::Connection, sql: &str) -> Vec<Value> {
    let mut stmt = conn.prepare(sql).expect("prepare");
    let names: Vec<String> = stmt
        .column_names()
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let rows = stmt
        .query_map([], |r| {
            let mut map = serde_json::Map::new();
            for (i, name) in names.iter().enumerate() {
                let v = match r.get_ref(i)? {
                    rusqlite::types::ValueRef::Null => Value::Null,
                    rusqlite::types::ValueRef::Integer(n) => json!(n),
                    rusqlite::types::ValueRef::Real(f) => json!(f),
                    rusqlite::types::ValueRef::Text(t) => json!(String::from_utf8_lossy(t)),
                    rusqlite::types::ValueRef::Blob(b) => json!(b.len()),
                };
                map.insert(name.clone(), v);
            }
            Ok(Value::Object(map))
        })
        .expect("query");
    rows.map(|r| r.expect("row")).collect()
}
