//! Signing in with Google (a real OpenID provider, `oidc-provider` on
//! node: tests/oidc) and GitHub (the fake of `coditect_tests::fake_github`)
//! against the real issuer binary, the test playing the browser: it
//! follows the redirects one by one and keeps the cookies.
//!
//! Covered: a new person gets a verified account and is signed in, and
//! signs in again with the same identity; GitHub's verified primary email;
//! an existing account is linked only when its owner is signed in, and a
//! provider email of an account the browser does not hold is refused; an
//! unverified email is refused; a forged, replayed or other browser's
//! `state`, a replayed code and an ID token with another nonce are refused;
//! ID tokens changed on the way (audience, issuer, expiry, nonce,
//! signature, algorithm: [`IdTokenProxy`]) are refused; a CLI code works only with its
//! own loopback redirect URI;
//! the audit log records sign-ins, links and refusals; a provider without
//! configuration is not offered; and the sign-in, link and refusal in
//! headless Chromium. The flows without Chromium run on SQLite and on
//! PostgreSQL.

use coditect_tests::billing::stripe_env;
use coditect_tests::database::{Backend, TestDatabase};
use coditect_tests::fake_github::{FakeGitHub, GitHubUser};
use coditect_tests::fake_stripe::{self, FakeStripe};
use coditect_tests::id_token_proxy::{IdTokenProxy, Tamper};
use coditect_tests::issuer::{IssuerServer, TEST_RATE_LIMITS, admin};
use coditect_tests::oidc::OidcProvider;
use coditect_tests::web_browser::{Answer, WebBrowser};
use serde_json::{Value, json};

struct Bed {
    dir: tempfile::TempDir,
    oidc: OidcProvider,
    /// Between the issuer and the provider, for the tampered ID tokens.
    proxy: Option<IdTokenProxy>,
    github: FakeGitHub,
    stripe: FakeStripe,
    issuer: IssuerServer,
    /// Dropped last: the issuer works on it until then.
    db: TestDatabase,
}

fn bed(test: &str, backend: Backend) -> Option<Bed> {
    bed_with(test, backend, false)
}

/// The test bed; with `proxy`, the issuer's Google issuer URL is an
/// [`IdTokenProxy`] in front of the provider.
fn bed_with(test: &str, backend: Backend, proxy: bool) -> Option<Bed> {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = TestDatabase::create(backend, dir.path())?;
    let oidc = OidcProvider::start(test)?;
    let github = FakeGitHub::start(vec![
        GitHubUser {
            id: 7001,
            login: "octo".into(),
            emails: vec![
                ("octo-old@example.com".into(), false, true),
                ("octo@example.com".into(), true, true),
            ],
        },
        GitHubUser {
            id: 7002,
            login: "unverified".into(),
            emails: vec![("dan@example.com".into(), true, false)],
        },
    ]);
    let mut env: Vec<(String, String)> = oidc.issuer_env();
    let proxy = proxy.then(|| IdTokenProxy::start(oidc.issuer()));
    if let Some(p) = &proxy {
        env.retain(|(k, _)| k != "GOOGLE_ISSUER_URL");
        env.push(("GOOGLE_ISSUER_URL".into(), p.issuer_url()));
    }
    env.extend(github.issuer_env());
    let stripe = FakeStripe::start(fake_stripe::Config::default());
    env.extend(stripe_env(&stripe));
    let mut refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    refs.extend_from_slice(TEST_RATE_LIMITS);
    let issuer = IssuerServer::start_with_env(dir.path(), &refs);
    oidc.register(issuer.base_url());
    Some(Bed {
        dir,
        oidc,
        proxy,
        github,
        stripe,
        issuer,
        db,
    })
}

impl Bed {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer.base_url())
    }

    /// Starts a sign-in with `provider` and returns the provider's URL.
    fn start(&self, browser: &mut WebBrowser, provider: &str, query: &str) -> String {
        let a = browser.get(&self.url(&format!("/auth/{provider}/start{query}")));
        assert_eq!(a.status, 303, "{}", a.body);
        a.location.expect("a redirect to the provider")
    }

    /// Goes through the provider (with `extra` added to its URL: the
    /// account to use) and returns our callback URL, not yet opened.
    fn through_provider(
        &self,
        browser: &mut WebBrowser,
        provider_url: &str,
        extra: &str,
    ) -> String {
        let base = self.issuer.base_url().to_owned();
        let a = browser.follow_until(&format!("{provider_url}{extra}"), |next| {
            next.starts_with(&base)
        });
        let callback = a
            .location
            .clone()
            .unwrap_or_else(|| panic!("back to us: {a:?}"));
        assert!(callback.contains("/callback?"), "{callback}");
        callback
    }

    /// A whole sign-in; returns the callback's answer.
    fn sign_in(
        &self,
        browser: &mut WebBrowser,
        provider: &str,
        query: &str,
        extra: &str,
    ) -> Answer {
        let url = self.start(browser, provider, query);
        let callback = self.through_provider(browser, &url, extra);
        browser.get(&callback)
    }

    fn account_page(&self, browser: &mut WebBrowser) -> Answer {
        browser.get(&self.url("/account"))
    }

    fn audit(&self) -> Vec<Value> {
        admin(self.dir.path(), &["audit", "--json"])
            .assert_success()
            .json()
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until the audit log has `event` with `outcome` (rows are
    /// written in batches).
    fn wait_for_audit(&self, event: &str, outcome: &str) -> Value {
        for _ in 0..200 {
            if let Some(row) = self
                .audit()
                .into_iter()
                .find(|r| r["event"] == event && r["outcome"] == outcome)
            {
                return row;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("no audit row {event}/{outcome}: {:#?}", self.audit());
    }
}

fn signed_in_as(bed: &Bed, browser: &mut WebBrowser, email: &str) {
    let page = bed.account_page(browser);
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.body.contains(email), "{}", page.body);
}

fn hint(email: &str) -> String {
    format!("&login_hint={}", email.replace('+', "%2B"))
}

coditect_tests::on_both_backends!(
    a_new_person_signs_up_and_in_with_google,
    github_signs_in_with_the_verified_primary_email_only,
    an_existing_account_is_linked_only_by_its_signed_in_owner,
    forged_replayed_and_mixed_up_answers_are_refused,
    coditect_login_signs_in_through_the_browser,
    coditect_login_device_is_approved_in_a_browser,
    tampered_id_tokens_are_refused,
    a_cli_code_is_bound_to_its_redirect_uri,
);

fn a_new_person_signs_up_and_in_with_google(backend: Backend) {
    let Some(bed) = bed("a_new_person_signs_up_and_in_with_google", backend) else {
        return;
    };
    // Both providers are offered next to the password form.
    let signin = WebBrowser::new().get(&bed.url("/signin"));
    assert!(
        signin.body.contains("Sign in with Google"),
        "{}",
        signin.body
    );
    assert!(signin.body.contains("Sign in with GitHub"));
    let signup = WebBrowser::new().get(&bed.url("/signup?plan=pilot-professional&interval=year"));
    assert!(
        signup
            .body
            .contains("/auth/google/start?plan=pilot-professional&amp;interval=year"),
        "{}",
        signup.body
    );

    // From the signup page with a plan: the new account goes on to Stripe
    // Checkout for that plan, as the signup form does.
    let mut buyer = WebBrowser::new();
    let to_stripe = bed.sign_in(
        &mut buyer,
        "google",
        "?plan=pilot-professional&interval=year",
        &hint("buyer@example.com"),
    );
    assert_eq!(to_stripe.status, 303, "{}", to_stripe.body);
    let checkout = to_stripe.location.unwrap();
    assert!(checkout.starts_with(&bed.stripe.base_url()), "{checkout}");
    signed_in_as(&bed, &mut buyer, "buyer@example.com");

    let mut browser = WebBrowser::new();
    let url = bed.start(&mut browser, "google", "");
    assert!(url.starts_with(bed.oidc.issuer()), "{url}");
    for part in [
        "code_challenge_method=S256",
        "nonce=",
        "state=",
        "scope=openid",
    ] {
        assert!(url.contains(part), "{part} in {url}");
    }
    let callback = bed.through_provider(&mut browser, &url, &hint("ann@example.com"));
    let done = browser.get(&callback);
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(done.location.as_deref(), Some(bed.url("/account").as_str()));
    signed_in_as(&bed, &mut browser, "ann@example.com");
    let row = bed.wait_for_audit("signup", "ok");
    assert!(row["detail"].as_str().unwrap().contains("google"), "{row}");

    // The same callback again: its state was used.
    let again = browser.get(&callback);
    assert_eq!(again.status, 400);
    assert!(
        again.body.contains("This sign-in expired"),
        "{}",
        again.body
    );
    bed.wait_for_audit("provider_login", "state_invalid");

    // Another browser, the same Google account: the same account.
    let mut other = WebBrowser::new();
    let done = bed.sign_in(&mut other, "google", "", &hint("ann@example.com"));
    assert_eq!(done.status, 303, "{}", done.body);
    signed_in_as(&bed, &mut other, "ann@example.com");
    // The email is verified: the password sign-in of that address exists
    // but no password matches it.
    let login = bed.issuer.post_json(
        "/api/v1/auth/login",
        &json!({"email": "ann@example.com", "password": "not anyone's password"}),
    );
    assert_eq!(login.status, 401);
}

fn github_signs_in_with_the_verified_primary_email_only(backend: Backend) {
    let Some(bed) = bed(
        "github_signs_in_with_the_verified_primary_email_only",
        backend,
    ) else {
        return;
    };
    let mut browser = WebBrowser::new();
    let url = bed.start(&mut browser, "github", "");
    assert!(url.starts_with(&bed.github.base_url()), "{url}");
    assert!(url.contains("code_challenge_method=S256"), "{url}");
    let callback = bed.through_provider(&mut browser, &url, "&login=octo");
    let done = browser.get(&callback);
    assert_eq!(done.status, 303, "{}", done.body);
    signed_in_as(&bed, &mut browser, "octo@example.com");

    // A primary email GitHub has not verified: no account.
    let mut browser = WebBrowser::new();
    let refused = bed.sign_in(&mut browser, "github", "", "&login=unverified");
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(
        refused.body.contains("Email not verified"),
        "{}",
        refused.body
    );
    assert_eq!(bed.account_page(&mut browser).status, 303, "not signed in");
    bed.wait_for_audit("provider_login", "email_unverified");
    assert_eq!(bed.github.refused_exchanges(), 0);
}

fn an_existing_account_is_linked_only_by_its_signed_in_owner(backend: Backend) {
    let Some(bed) = bed(
        "an_existing_account_is_linked_only_by_its_signed_in_owner",
        backend,
    ) else {
        return;
    };
    let api = bed.issuer.client();
    api.post_json(
        "/api/v1/auth/signup",
        &json!({"email": "bea@example.com", "password": "a long password 1", "company_name": "Bea Co"}),
    )
    .expect_status(202);

    // Google says bea@example.com (verified), but this browser does not
    // hold the account: refused, nothing linked.
    let mut stranger = WebBrowser::new();
    let refused = bed.sign_in(&mut stranger, "google", "", &hint("bea@example.com"));
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert!(
        refused.body.contains("already has an account"),
        "{}",
        refused.body
    );
    assert!(refused.body.contains("sign in with your password first"));
    bed.wait_for_audit("provider_login", "email_taken");

    // Signed in with the password, the owner links Google.
    let token = api
        .post_json(
            "/api/v1/auth/login",
            &json!({"email": "bea@example.com", "password": "a long password 1"}),
        )
        .expect_status(200)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut owner = WebBrowser::new();
    owner.set_cookie("coditect_session", &token);
    let page = bed.account_page(&mut owner);
    assert!(page.body.contains("Link Google"), "{}", page.body);
    let linked = bed.sign_in(&mut owner, "google", "?link=1", &hint("bea@example.com"));
    assert_eq!(linked.status, 303, "{}", linked.body);
    assert_eq!(linked.location.unwrap(), bed.url("/account?done=linked"));
    bed.wait_for_audit("provider_link", "ok");

    // From now on Google signs in to it, in any browser.
    let mut later = WebBrowser::new();
    let done = bed.sign_in(&mut later, "google", "", &hint("bea@example.com"));
    assert_eq!(done.status, 303, "{}", done.body);
    signed_in_as(&bed, &mut later, "bea@example.com");

    // A Google account whose email is not verified is never linked.
    let mut owner_again = WebBrowser::new();
    owner_again.set_cookie("coditect_session", &token);
    let refused = bed.sign_in(&mut owner_again, "github", "?link=1", "&login=unverified");
    assert_eq!(refused.status, 403, "{}", refused.body);
}

fn forged_replayed_and_mixed_up_answers_are_refused(backend: Backend) {
    let Some(bed) = bed("forged_replayed_and_mixed_up_answers_are_refused", backend) else {
        return;
    };
    // An unverified Google email.
    let mut browser = WebBrowser::new();
    let refused = bed.sign_in(
        &mut browser,
        "google",
        "",
        &hint("unverified+carl@example.com"),
    );
    assert_eq!(refused.status, 403, "{}", refused.body);

    // A forged state.
    let mut browser = WebBrowser::new();
    let url = bed.start(&mut browser, "google", "");
    let callback = bed.through_provider(&mut browser, &url, &hint("dora@example.com"));
    let state = callback
        .split("state=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    let forged = callback.replace(state, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    let a = browser.get(&forged);
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.body.contains("This sign-in expired"));

    // The right callback opened by another browser (no state cookie): a
    // link an attacker sends to someone else signs no one in.
    let mut other = WebBrowser::new();
    let a = other.get(&callback);
    assert_eq!(a.status, 400, "{}", a.body);
    assert_eq!(bed.account_page(&mut other).status, 303);

    // A used code with a fresh state of the right browser: the provider
    // refuses it.
    let code_of = |u: &str| {
        u.split("code=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap()
            .to_owned()
    };
    let mut browser = WebBrowser::new();
    let url = bed.start(&mut browser, "google", "");
    let used = bed.through_provider(&mut browser, &url, &hint("dora@example.com"));
    assert_eq!(browser.get(&used).status, 303);
    let mut browser = WebBrowser::new();
    let url = bed.start(&mut browser, "google", "");
    let fresh = bed.through_provider(&mut browser, &url, &hint("dora@example.com"));
    let a = browser.get(&fresh.replace(&code_of(&fresh), &code_of(&used)));
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.body.contains("Sign-in refused"), "{}", a.body);
    bed.wait_for_audit("provider_login", "provider_refused");

    // A code issued to another application (its audience): the browser's
    // authorization request was changed to name that client; the code
    // does not sign anyone in here.
    let mut browser = WebBrowser::new();
    let url = bed.start(&mut browser, "google", "");
    let other = url.replace(
        &format!("client_id={}", coditect_tests::oidc::CLIENT_ID),
        &format!("client_id={}", coditect_tests::oidc::OTHER_CLIENT_ID),
    );
    assert_ne!(other, url);
    let callback = bed.through_provider(&mut browser, &other, &hint("frank@example.com"));
    let a = browser.get(&callback);
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.body.contains("Sign-in refused"), "{}", a.body);
    assert_eq!(bed.account_page(&mut browser).status, 303, "not signed in");

    // An ID token issued for another sign-in's nonce: the authorization
    // request was changed on the way (as an attacker would), the ID token
    // carries that other nonce, and our check refuses it.
    let mut browser = WebBrowser::new();
    let url_a = bed.start(&mut browser, "google", "");
    let url_b = bed.start(&mut browser, "google", "");
    let nonce = |u: &str| {
        u.split("nonce=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap()
            .to_owned()
    };
    let tampered = url_b.replace(&nonce(&url_b), &nonce(&url_a));
    let callback = bed.through_provider(&mut browser, &tampered, &hint("erin@example.com"));
    let a = browser.get(&callback);
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.body.contains("Sign-in refused"), "{}", a.body);
    assert_eq!(bed.account_page(&mut browser).status, 303, "not signed in");
    let rows = bed.audit();
    assert!(
        rows.iter().any(|r| r["event"] == "provider_login"
            && r["detail"]
                .as_str()
                .is_some_and(|d| d.contains("nonce") || d.contains("Nonce"))),
        "{rows:#?}"
    );
    // Nothing of the flows' secrets is in the log.
    let log = bed.issuer.log();
    assert!(!log.contains(&nonce(&url_a)));
}

#[test]
fn unconfigured_providers_are_not_offered() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = IssuerServer::start_with_env(dir.path(), TEST_RATE_LIMITS);
    let page = WebBrowser::new().get(&format!("{}/signin", issuer.base_url()));
    assert!(!page.body.contains("Sign in with"), "{}", page.body);
    let a = WebBrowser::new().get(&format!("{}/auth/google/start", issuer.base_url()));
    assert_eq!(a.status, 404);
    assert!(a.body.contains("not offered"), "{}", a.body);
}

/// `coditect login` through the browser: the CLI prints the page (no
/// terminal here, so it opens no browser), the test plays the browser
/// (GitHub through the fake), the CLI gets its session from the loopback
/// redirect, and `coditect license machines` works with it. The code works
/// once; a redirect that is not loopback is refused.
fn coditect_login_signs_in_through_the_browser(backend: Backend) {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    use coditect_tests::cli::Cli;

    let Some(bed) = bed("coditect_login_signs_in_through_the_browser", backend) else {
        return;
    };
    let cli = Cli::new();
    let mut child = cli
        .command(&["--json", "login", "--server", bed.issuer.base_url()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run coditect login");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let url = loop {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("coditect login prints the page to open");
        if let Some(i) = line.find("http")
            && line.contains("/cli/login?")
        {
            break line[i..].trim().to_owned();
        }
    };
    assert!(url.contains("code_challenge_method=S256"), "{url}");
    assert!(
        url.contains("redirect_uri=http%3A%2F%2F127.0.0.1%3A"),
        "{url}"
    );

    let mut browser = WebBrowser::new();
    let page = browser.get(&url);
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Sign in with GitHub"), "{}", page.body);
    let href = page
        .body
        .split("id=\"with-github\" href=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("the GitHub button")
        .replace("&amp;", "&");
    let a = browser.get(&bed.url(&href));
    assert_eq!(a.status, 303, "{}", a.body);
    let callback = bed.through_provider(&mut browser, &a.location.unwrap(), "&login=octo");
    let back = browser.get(&callback);
    assert_eq!(back.status, 303, "{}", back.body);
    let loopback = back.location.expect("to the CLI's loopback");
    assert!(loopback.starts_with("http://127.0.0.1:"), "{loopback}");
    let done = browser.get(&loopback);
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(done.body.contains("Signed in"), "{}", done.body);

    let out = child.wait_with_output().expect("coditect login ends");
    assert!(out.status.success(), "{out:?}");
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(doc["signed_in"], true, "{doc}");
    assert_eq!(doc["email"], "octo@example.com", "{doc}");

    let machines = cli.run(&["--json", "license", "machines"]);
    machines.assert_success();
    assert_eq!(machines.json()["licenses"], json!([]), "{machines}");

    // The code is spent: a second exchange is refused.
    let code = loopback
        .split("code=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    let redirect_uri = loopback.split('?').next().unwrap();
    bed.issuer
        .post_json(
            "/api/v1/auth/cli/token",
            &json!({
                "code": code,
                "code_verifier": "dBjftJeZ4CVP-mJ0wTdCJ8ka2h-xMyS-_pq9NdDBFHg",
                "redirect_uri": redirect_uri,
            }),
        )
        .expect_problem(404, "code_invalid");

    // Only loopback redirects.
    let bad = WebBrowser::new().get(&bed.url(
        "/cli/login?redirect_uri=https%3A%2F%2Fevil.example%2Fcb&state=abcdefgh&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256",
    ));
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body.contains("not valid"), "{}", bad.body);
}

/// `coditect login --device` (RFC 8628): the CLI shows a code and polls;
/// the test, as the person on another device, signs in with GitHub at the
/// page, approves the code, and the CLI gets its session. Polling sooner
/// than the interval is answered `slow_down`; an unknown device code
/// `code_invalid`.
fn coditect_login_device_is_approved_in_a_browser(backend: Backend) {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    use coditect_tests::cli::Cli;

    let Some(bed) = bed("coditect_login_device_is_approved_in_a_browser", backend) else {
        return;
    };
    // The polling rules, through the API.
    let api = bed.issuer.client();
    let start = api
        .post_json("/api/v1/auth/device/code", &json!({}))
        .expect_status(200);
    assert_eq!(start["interval"], 5, "{start}");
    let poll = json!({"device_code": start["device_code"]});
    api.post_json("/api/v1/auth/device/token", &poll)
        .expect_problem(409, "authorization_pending");
    api.post_json("/api/v1/auth/device/token", &poll)
        .expect_problem(409, "slow_down");
    api.post_json(
        "/api/v1/auth/device/token",
        &json!({"device_code": "not-a-device-code"}),
    )
    .expect_problem(404, "code_invalid");

    let cli = Cli::new();
    let mut child = cli
        .command(&[
            "--json",
            "login",
            "--device",
            "--server",
            bed.issuer.base_url(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run coditect login --device");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let url = loop {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("coditect login --device prints the page and the code");
        if let Some(i) = line.find("or open http") {
            break line[i + "or open ".len()..].trim().to_owned();
        }
    };
    assert!(url.contains("/device?user_code="), "{url}");
    let code = url.split("user_code=").nth(1).unwrap().to_owned();

    let mut browser = WebBrowser::new();
    let page = browser.get(&url);
    assert_eq!(page.status, 200, "{}", page.body);
    let href = page
        .body
        .split("id=\"with-github\" href=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("the GitHub button")
        .replace("&amp;", "&");
    let a = browser.get(&bed.url(&href));
    let callback = bed.through_provider(&mut browser, &a.location.unwrap(), "&login=octo");
    let back = browser.get(&callback);
    assert_eq!(back.status, 303, "{}", back.body);
    let device_page = back.location.unwrap();
    assert!(
        device_page.ends_with(&format!("/device?user_code={code}")),
        "{device_page}"
    );
    let form = browser.get(&device_page);
    assert!(form.body.contains(&code), "{}", form.body);
    let csrf = form
        .body
        .split("name=\"csrf_token\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("the form's CSRF token")
        .to_owned();
    let done = browser.post_form(
        &bed.url("/device"),
        &format!("csrf_token={csrf}&user_code={}", code.to_lowercase()),
    );
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(done.body.contains("Device signed in"), "{}", done.body);

    let out = child
        .wait_with_output()
        .expect("coditect login --device ends");
    assert!(out.status.success(), "{out:?}");
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(doc["email"], "octo@example.com", "{doc}");
    cli.run(&["--json", "license", "machines"]).assert_success();
    bed.wait_for_audit("device_login", "approved");
}

/// ID tokens changed on the way from the provider (by the
/// [`IdTokenProxy`] between the issuer and the provider's token endpoint):
/// another audience, another issuer, expired, another sign-in's nonce, a
/// broken signature, no signature (`"alg": "none"`), HS256 with the client
/// secret as the key. Each is refused with the "Sign-in refused" page, an
/// audited refusal naming the ID token, no session and no account; the
/// same sign-in through the proxy with nothing changed succeeds, so the
/// refusals are the checks' doing.
fn tampered_id_tokens_are_refused(backend: Backend) {
    let Some(bed) = bed_with("tampered_id_tokens_are_refused", backend, true) else {
        return;
    };
    let proxy = bed.proxy.as_ref().expect("the bed has the proxy");
    let accounts = |email: &str| {
        bed.db.count(&format!(
            "SELECT COUNT(*) FROM users WHERE email = '{email}'"
        ))
    };

    // Untouched (re-signed by the proxy's key, which its JWKS serves).
    let mut browser = WebBrowser::new();
    let done = bed.sign_in(&mut browser, "google", "", &hint("gina@example.com"));
    assert_eq!(done.status, 303, "{}", done.body);
    signed_in_as(&bed, &mut browser, "gina@example.com");
    assert_eq!(proxy.rewritten(), 1);

    for (tamper, email, what) in [
        (Tamper::Audience, "aud@example.com", "audience"),
        (Tamper::Issuer, "iss@example.com", "issuer"),
        (Tamper::Expired, "exp@example.com", "expired"),
        (Tamper::Nonce, "nonce@example.com", "nonce"),
        (Tamper::Signature, "sig@example.com", "signature"),
        (Tamper::Unsigned, "none@example.com", "signature"),
        (
            Tamper::Hs256WithClientSecret,
            "hs256@example.com",
            "signature",
        ),
    ] {
        proxy.set(tamper);
        let before = proxy.rewritten();
        // Refusals naming `what` so far.
        let refusals = || {
            bed.audit()
                .iter()
                .filter(|r| {
                    r["event"] == "provider_login"
                        && r["outcome"] == "provider_refused"
                        && r["detail"]
                            .as_str()
                            .is_some_and(|d| d.to_lowercase().contains(what))
                })
                .count()
        };
        let refused_before = refusals();
        let mut browser = WebBrowser::new();
        let a = bed.sign_in(&mut browser, "google", "", &hint(email));
        assert_eq!(
            proxy.rewritten(),
            before + 1,
            "{tamper:?}: went through the proxy"
        );
        assert_eq!(a.status, 400, "{tamper:?}: {}", a.body);
        assert!(a.body.contains("Sign-in refused"), "{tamper:?}: {}", a.body);
        assert_eq!(
            bed.account_page(&mut browser).status,
            303,
            "{tamper:?}: not signed in"
        );
        assert_eq!(accounts(email), 0, "{tamper:?}: no account");
        // The refused token is in no log.
        let token = proxy.last_id_token().expect("the proxy's token");
        assert!(
            !bed.issuer.log().contains(&token),
            "{tamper:?}: token logged"
        );
        let signature = token.rsplit('.').next().unwrap_or_default();
        assert!(
            signature.is_empty() || !bed.issuer.log().contains(signature),
            "{tamper:?}"
        );
        // The refusal is audited, saying what was wrong with the token.
        let mut audited = false;
        for _ in 0..200 {
            if refusals() > refused_before {
                audited = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(audited, "{tamper:?}: {:#?}", bed.audit());
    }
    // The person who signed in untouched still has one account, and no
    // identity was added by the refused ones.
    assert_eq!(accounts("gina@example.com"), 1);
    assert_eq!(bed.db.count("SELECT COUNT(*) FROM provider_identities"), 1);
}

/// The loopback exchange of `coditect login` (RFC 8252): a code asked for
/// with one redirect URI is refused with another, even with the right
/// PKCE verifier; the failed exchange uses the code up, so the right
/// redirect URI afterwards is refused too.
fn a_cli_code_is_bound_to_its_redirect_uri(backend: Backend) {
    let Some(bed) = bed("a_cli_code_is_bound_to_its_redirect_uri", backend) else {
        return;
    };
    // RFC 7636's example verifier and its S256 challenge.
    let verifier = "dBjftJeZ4CVP-mJ0wTdCJ8ka2h-xMyS-_pq9NdDBFHg";
    let redirect_uri = "http://127.0.0.1:45678/callback";
    let mut browser = WebBrowser::new();
    let page = browser.get(&bed.url(
        "/cli/login?redirect_uri=http%3A%2F%2F127.0.0.1%3A45678%2Fcallback&state=abcdefgh&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256",
    ));
    assert_eq!(page.status, 200, "{}", page.body);
    let href = page
        .body
        .split("id=\"with-github\" href=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("the GitHub button")
        .replace("&amp;", "&");
    let a = browser.get(&bed.url(&href));
    assert_eq!(a.status, 303, "{}", a.body);
    let callback = bed.through_provider(&mut browser, &a.location.unwrap(), "&login=octo");
    let back = browser.get(&callback);
    assert_eq!(back.status, 303, "{}", back.body);
    let loopback = back.location.expect("to the CLI's loopback");
    assert!(loopback.starts_with(redirect_uri), "{loopback}");
    assert!(loopback.contains("state=abcdefgh"), "{loopback}");
    let code = loopback
        .split("code=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();

    // Another port of the loopback: refused, and the code is gone.
    bed.issuer
        .post_json(
            "/api/v1/auth/cli/token",
            &json!({
                "code": code,
                "code_verifier": verifier,
                "redirect_uri": "http://127.0.0.1:45679/callback",
            }),
        )
        .expect_problem(404, "code_invalid");
    bed.issuer
        .post_json(
            "/api/v1/auth/cli/token",
            &json!({
                "code": code,
                "code_verifier": verifier,
                "redirect_uri": redirect_uri,
            }),
        )
        .expect_problem(404, "code_invalid");
    bed.wait_for_audit("cli_login", "code_invalid");
}

/// The web sign-in in a real browser, headless Chromium: "Sign in with
/// Google" on the sign-in page (the real OpenID provider signs its default
/// account in and consents) lands on the account page of a new account;
/// an owner signed in with the password clicks "Link GitHub", after which
/// "Sign in with GitHub" (the fake GitHub's first user) signs in to that
/// account; a Google sign-in of an unverified email shows "Email not
/// verified" and signs nobody in.
/// Without Chromium and chromedriver this says so and passes; with
/// `CI=true` it fails.
#[test]
fn signing_in_with_google_and_github_in_chromium() {
    use std::time::{Duration, Instant};

    use coditect_tests::browser::{ChromeDriver, chromium_capabilities, tools_or_skip};
    use fantoccini::{Client, ClientBuilder, Locator};
    use hyper_util::client::legacy::connect::HttpConnector;

    const PATIENCE: Duration = Duration::from_secs(90);

    async fn where_we_are(c: &Client) -> String {
        let url = c
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_default();
        let source = c.source().await.unwrap_or_default();
        format!("at {url}:\n{source}")
    }

    async fn wait_for_url(c: &Client, what: &str, ok: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(url) = c.current_url().await
                && ok(url.as_str())
            {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "the browser did not get to {what}, {}",
                    where_we_are(c).await
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn text_of(c: &Client, css: &str) -> String {
        match c
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(css))
            .await
        {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(e) => panic!("no `{css}` ({e}), {}", where_we_are(c).await),
        }
    }

    async fn click(c: &Client, css: &str) {
        match c
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(css))
            .await
        {
            Ok(e) => e.click().await.expect("click"),
            Err(e) => panic!("no `{css}` ({e}), {}", where_we_are(c).await),
        }
    }

    let test = "signing_in_with_google_and_github_in_chromium";
    let Some(tools) = tools_or_skip(test) else {
        return;
    };
    let Some(bed) = bed(test, Backend::Sqlite) else {
        return;
    };
    let driver = ChromeDriver::start(&tools);
    let profile = tempfile::Builder::new()
        .prefix("coditect-chromium-")
        .tempdir()
        .expect("a temporary Chromium profile");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let client = runtime.block_on(async {
        ClientBuilder::new(HttpConnector::new())
            .capabilities(chromium_capabilities(&tools, profile.path()))
            .connect(&driver.url())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "chromedriver could not start Chromium: {e}\n{}",
                    driver.log()
                )
            })
    });
    let base = bed.issuer.base_url().to_owned();
    // An account with a password whose email GitHub's first user has.
    bed.issuer
        .client()
        .post_json(
            "/api/v1/auth/signup",
            &json!({"email": "octo@example.com", "password": "a long password 1", "company_name": "Octo Co"}),
        )
        .expect_status(202);
    // The start of a Google sign-in of an unverified email: the state
    // cookie and the provider's URL, for Chromium to go on with (the test
    // names the provider's account in the URL, which no button does).
    let mut http = WebBrowser::new();
    let unverified_url = format!(
        "{}{}",
        bed.start(&mut http, "google", ""),
        hint("unverified+carl@example.com")
    );
    let state_cookie = http.cookie("coditect_oauth").expect("the state cookie");
    let c = client.clone();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(async move {
            // Sign up with Google: the provider's default account.
            c.goto(&format!("{base}/signin"))
                .await
                .expect("open /signin");
            click(&c, "#with-google").await;
            wait_for_url(&c, "the account page", |u| u.ends_with("/account")).await;
            assert_eq!(text_of(&c, "#account-email").await, "alice@example.com");
            c.delete_all_cookies().await.expect("clear the cookies");

            // Signed in with the password, the owner links GitHub.
            c.goto(&format!("{base}/signin"))
                .await
                .expect("open /signin");
            let email = c
                .wait()
                .at_most(PATIENCE)
                .for_element(Locator::Css("#email"))
                .await
                .expect("the email field");
            email.send_keys("octo@example.com").await.expect("type");
            let password = c
                .find(Locator::Css("#password"))
                .await
                .expect("the password field");
            password.send_keys("a long password 1").await.expect("type");
            password.send_keys("\u{E007}").await.expect("Enter");
            wait_for_url(&c, "the account page", |u| u.ends_with("/account")).await;
            click(&c, "#link-github").await;
            wait_for_url(&c, "the linked account page", |u| {
                u.ends_with("/account?done=linked")
            })
            .await;
            c.delete_all_cookies().await.expect("clear the cookies");

            // From now on GitHub signs in to it.
            c.goto(&format!("{base}/signin"))
                .await
                .expect("open /signin");
            click(&c, "#with-github").await;
            wait_for_url(&c, "the account page", |u| u.ends_with("/account")).await;
            assert_eq!(text_of(&c, "#account-email").await, "octo@example.com");
            c.delete_all_cookies().await.expect("clear the cookies");

            // An unverified email is refused, and nobody is signed in.
            c.goto(&format!("{base}/signin"))
                .await
                .expect("open /signin");
            // (Through the page's script: chromedriver's cookie command
            // refuses an IP address as the domain.)
            c.execute(
                "document.cookie = arguments[0] + '; path=/auth'",
                vec![json!(format!("coditect_oauth={state_cookie}"))],
            )
            .await
            .expect("the state cookie");
            c.goto(&unverified_url).await.expect("open the provider");
            assert_eq!(text_of(&c, "h1").await, "Email not verified");
            c.goto(&format!("{base}/account"))
                .await
                .expect("open /account");
            wait_for_url(&c, "the sign-in page", |u| u.ends_with("/signin")).await;
        })
    }));
    let _ = runtime.block_on(client.close());
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    bed.wait_for_audit("provider_link", "ok");
    bed.wait_for_audit("provider_login", "email_unverified");
}
