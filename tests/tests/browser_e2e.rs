//! Paid signup in a real browser (issue 4): headless Chromium, driven
//! through chromedriver, goes from the landing page through the signup
//! form and the (fake) Stripe Checkout page to the success page; the key it
//! shows then activates over the API, and the token verifies with the
//! `verifier` crate against the issuer's published keys. Also: the success
//! page waits for a late webhook, and `/docs` (Swagger UI under its
//! hash-pinned CSP) renders.
//!
//! Without Chromium and chromedriver these tests say so loudly and pass;
//! with `CI=true` they fail (`.ci/run` installs both).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use coditect_tests::billing::BillingEnv;
use coditect_tests::browser::{ChromeDriver, chromium_capabilities, tools_or_skip};
use coditect_tests::issuer::{
    IssuerServer, decode_token, hardware_id, key_ring_from_jwks, mailed_links, unix_now,
};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;
use verifier::{HardwareId, ProjectLimit, verify};

/// How long any one thing may take to appear in the browser (the machine
/// is shared and slow at times: generous, never a measure of speed).
const PATIENCE: Duration = Duration::from_secs(90);

const PASSWORD: &str = "correct horse battery staple";

fn data_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("coditect-browser-e2e-")
        .tempdir()
        .expect("a temporary data directory")
}

/// Runs `flow` with a fresh headless Chromium session; the session is
/// closed afterwards, also when the flow panics (the panic then goes on).
/// `None` when the browser is missing outside CI (after a loud message).
fn with_browser<T, F, Fut>(test: &str, flow: F) -> Option<T>
where
    F: FnOnce(Client) -> Fut,
    Fut: Future<Output = T>,
{
    let tools = tools_or_skip(test)?;
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
    let outcome =
        std::panic::catch_unwind(AssertUnwindSafe(|| runtime.block_on(flow(client.clone()))));
    let _ = runtime.block_on(client.close());
    match outcome {
        Ok(value) => Some(value),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// The page's address and source, for failure messages.
async fn where_we_are(c: &Client) -> String {
    let url = c
        .current_url()
        .await
        .map(|u| u.to_string())
        .unwrap_or_else(|e| format!("(no URL: {e})"));
    let source = c
        .source()
        .await
        .unwrap_or_else(|e| format!("(no source: {e})"));
    format!("at {url}:\n{source}")
}

/// Waits until the browser's address satisfies `ok`.
async fn wait_for_url(c: &Client, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(url) = c.current_url().await
            && ok(url.as_str())
        {
            return url.to_string();
        }
        if Instant::now() > deadline {
            panic!(
                "the browser did not get to {what} within {PATIENCE:?}, {}",
                where_we_are(c).await
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits for an element matching the CSS selector.
async fn wait_for(c: &Client, css: &str) -> fantoccini::elements::Element {
    match c
        .wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css(css))
        .await
    {
        Ok(e) => e,
        Err(e) => panic!("no `{css}` ({e}), {}", where_we_are(c).await),
    }
}

/// Waits until the page's heading (`main h1`) reads `expected`: after a
/// form is sent, the old page's heading may still be there for a moment,
/// or be gone between finding and reading it.
async fn wait_for_heading(c: &Client, expected: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(h1) = c.find(Locator::Css("main h1")).await
            && h1.text().await.is_ok_and(|t| t == expected)
        {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "no heading \"{expected}\" within {PATIENCE:?}, {}",
                where_we_are(c).await
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn click(c: &Client, css: &str) {
    let element = wait_for(c, css).await;
    if let Err(e) = element.click().await {
        panic!("cannot click `{css}` ({e}), {}", where_we_are(c).await);
    }
}

async fn type_into(c: &Client, css: &str, text: &str) {
    let element = wait_for(c, css).await;
    if let Err(e) = element.send_keys(text).await {
        panic!("cannot type into `{css}` ({e}), {}", where_we_are(c).await);
    }
}

/// Landing page → "Start your pilot" → the form, filled in and sent →
/// "check your inbox" → the link of the mail (read from the issuer's log,
/// `log`) → confirm → Stripe's page. Returns the checkout page's address.
async fn sign_up_in_browser(
    c: &Client,
    base: &str,
    stripe_base: &str,
    email: &str,
    log: impl Fn() -> String,
) -> String {
    c.goto(&format!("{base}/"))
        .await
        .expect("open the landing page");
    let start = match c.find(Locator::LinkText("Start your pilot")).await {
        Ok(link) => link,
        Err(e) => panic!(
            "no \"Start your pilot\" link ({e}), {}",
            where_we_are(c).await
        ),
    };
    start.click().await.expect("click Start your pilot");
    wait_for_url(c, "the signup form", |u| u.ends_with("/signup")).await;
    type_into(c, "#email", email).await;
    type_into(c, "#password", PASSWORD).await;
    type_into(c, "#company_name", "Browser Test GmbH").await;
    click(c, "input[name=plan][value=pilot-professional]").await;
    click(c, "input[name=interval][value=year]").await;
    click(c, "form.signup button[type=submit]").await;
    wait_for_heading(c, "Check your inbox").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let link = loop {
        if let Some(link) = mailed_links(&log(), email, "/signup/verify").pop() {
            break link;
        }
        assert!(Instant::now() < deadline, "no mail: {}", log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    c.goto(&link).await.expect("open the mailed link");
    click(c, "form.signup button[type=submit]").await;
    let pay_prefix = format!("{stripe_base}/pay/");
    wait_for_url(c, "Stripe Checkout", |u| u.starts_with(&pay_prefix)).await
}

/// The key shown on the success page, once it is there.
async fn shown_key(c: &Client) -> String {
    let key = wait_for(c, "#license-key")
        .await
        .text()
        .await
        .expect("the key's text");
    let page = where_we_are(c).await;
    assert!(page.contains("Welcome to CODITECT!"), "{page}");
    assert!(
        page.contains("npm install -g @coditect-ai/coditect-core"),
        "{page}"
    );
    assert!(page.contains(&format!("coditect activate {key}")), "{page}");
    key
}

/// Activates `key` over the API and verifies the token with the verifier
/// and the issuer's JWK Set; checks what the token says.
fn activate_and_verify(issuer: &IssuerServer, key: &str, email: &str) {
    assert!(
        key.starts_with("CODITECT-PILOT-") && key.len() == 29,
        "{key}"
    );
    let hw = hardware_id("browser-e2e-machine");
    let activated = issuer
        .post_json(
            "/api/v1/licenses/activate",
            &json!({"license_key": key, "hardware_id": hw, "machine_name": "browser e2e"}),
        )
        .expect_status(201);
    let jwks = issuer.get("/api/v1/keys").expect_status(200);
    let ring = key_ring_from_jwks(&jwks);
    let token = decode_token(
        activated["token"]["token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token in {activated}")),
    );
    let machine = HardwareId::from_hex(&hw).expect("64 hex");
    let claims = verify(&token, &ring, unix_now(), &machine)
        .unwrap_or_else(|e| panic!("the token of the bought key does not verify: {e:?}"));
    assert_eq!(claims.tier, "pilot-professional");
    assert_eq!(claims.email, email);
    assert_eq!(claims.organization, "Browser Test GmbH");
    assert_eq!(claims.entitlements.max_projects, ProjectLimit::Unlimited);
    assert_eq!(claims.entitlements.max_devices, 3);
    assert_eq!(claims.entitlements.ai_requests, 1000);
    assert_eq!(claims.hardware_id, machine);
}

#[test]
fn a_pilot_bought_in_the_browser_gives_a_key_that_activates() {
    let dir = data_dir();
    let env = BillingEnv::start(dir.path(), &[]);
    let base = env.issuer.base_url().to_owned();
    let stripe_base = env.stripe.base_url();
    let email = "browser.buyer@example.com";
    let log = env.issuer.log_handle();
    let key = with_browser(
        "a_pilot_bought_in_the_browser_gives_a_key_that_activates",
        |c| async move {
            sign_up_in_browser(&c, &base, &stripe_base, email, log).await;
            let page = where_we_are(&c).await;
            assert!(page.contains("4242 4242 4242 4242"), "{page}");
            click(&c, "#submit").await;
            let success_prefix = format!("{base}/signup/success?session_id=");
            wait_for_url(&c, "the success page", |u| u.starts_with(&success_prefix)).await;
            let key = shown_key(&c).await;
            // Shown once: a reload no longer has it.
            c.refresh().await.expect("reload");
            wait_for_heading(&c, "Your license key was already shown").await;
            assert!(!where_we_are(&c).await.contains(&key));
            key
        },
    );
    let Some(key) = key else { return };
    activate_and_verify(&env.issuer, &key, email);
}

#[test]
fn the_success_page_waits_for_a_late_confirmation() {
    let dir = data_dir();
    let env = BillingEnv::start(dir.path(), &[]);
    let base = env.issuer.base_url().to_owned();
    let stripe_base = env.stripe.base_url();
    let email = "late.webhook@example.com";
    let log = env.issuer.log_handle();
    let stripe = &env.stripe;
    let key = with_browser(
        "the_success_page_waits_for_a_late_confirmation",
        |c| async move {
            sign_up_in_browser(&c, &base, &stripe_base, email, log).await;
            // The browser gets back before Stripe's events do.
            stripe.pause_deliveries();
            click(&c, "#submit").await;
            let success_prefix = format!("{base}/signup/success?session_id=");
            wait_for_url(&c, "the success page", |u| u.starts_with(&success_prefix)).await;
            wait_for_heading(&c, "Finishing your order…").await;
            assert!(!stripe.queued_events().is_empty(), "events are held back");
            let deliveries = stripe.resume_deliveries();
            assert!(deliveries.iter().all(|d| d.succeeded()), "{deliveries:#?}");
            // The page reloads itself and then shows the key.
            shown_key(&c).await
        },
    );
    let Some(key) = key else { return };
    activate_and_verify(&env.issuer, &key, email);
}

#[test]
fn api_docs_render_under_their_content_security_policy() {
    let dir = data_dir();
    let issuer = IssuerServer::start(dir.path());
    let base = issuer.base_url().to_owned();
    let rendered = with_browser(
        "api_docs_render_under_their_content_security_policy",
        |c| async move {
            c.goto(&format!("{base}/docs")).await.expect("open /docs");
            // Swagger UI builds the operations with its scripts, from the spec
            // it fetches: a blank page (a script refused by the CSP) has none.
            wait_for(&c, ".opblock").await;
            let operations = c
                .find_all(Locator::Css(".opblock"))
                .await
                .expect("the operations")
                .len();
            let title = wait_for(&c, ".info .title")
                .await
                .text()
                .await
                .unwrap_or_default();
            (operations, title)
        },
    );
    let Some((operations, title)) = rendered else {
        return;
    };
    assert!(operations >= 8, "only {operations} operations rendered");
    assert!(title.contains("CODITECT Licensing API"), "{title}");
}
