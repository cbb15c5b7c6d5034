//! The account page in a real browser: headless Chromium signs in with
//! email and password (by keyboard), reads the organization's license and
//! machines, frees a machine's seat (which the API then refuses to renew,
//! and the audit log records as a transfer), opens the billing portal of
//! the (fake) Stripe, and signs out. A post without the page's CSRF token
//! changes nothing. Screenshots at desktop and phone widths are written to
//! `docs/` when `UPDATE_SCREENSHOTS=1`.
//!
//! Without Chromium and chromedriver this says so loudly and passes; with
//! `CI=true` it fails (`scripts/test.sh` installs both).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use coditect_tests::billing::{BillingEnv, stripe_env};
use coditect_tests::browser::{ChromeDriver, chromium_capabilities, tools_or_skip};
use coditect_tests::issuer::{admin_with_env, env_refs, hardware_id};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

const PATIENCE: Duration = Duration::from_secs(90);
const PASSWORD: &str = "correct horse battery staple";

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

async fn where_we_are(c: &Client) -> String {
    let url = c
        .current_url()
        .await
        .map(|u| u.to_string())
        .unwrap_or_default();
    let source = c.source().await.unwrap_or_default();
    format!("at {url}:\n{source}")
}

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
                "the browser did not get to {what}, {}",
                where_we_are(c).await
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

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

async fn text_of(c: &Client, css: &str) -> String {
    wait_for(c, css).await.text().await.unwrap_or_default()
}

/// The account page's screenshot at `width` × `height`, written to
/// `docs/<name>` with `UPDATE_SCREENSHOTS=1`.
async fn screenshot(c: &Client, width: u32, height: u32, name: &str) {
    c.set_window_size(width, height)
        .await
        .expect("resize the window");
    // The layout settles on the next frame; the shot is of the page as it is.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let png = c.screenshot().await.expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    if std::env::var("UPDATE_SCREENSHOTS").as_deref() == Ok("1") {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../docs")
            .join(name);
        std::fs::write(&path, &png).expect("write the screenshot");
    }
}

#[test]
fn the_account_page_shows_the_license_frees_a_seat_opens_billing_and_signs_out() {
    let dir = tempfile::tempdir().expect("temp dir");
    let env = BillingEnv::start(dir.path(), &[]);
    let email = "owner@example.com";
    let bought = env.buy(email, "pilot-professional", "month");
    let key = env.logged_key();
    for machine in ["work-laptop", "build-server"] {
        env.client()
            .post_json(
                "/api/v1/licenses/activate",
                &json!({"license_key": key, "hardware_id": hardware_id(machine), "machine_name": machine}),
            )
            .expect_status(201);
    }
    let base = env.issuer.base_url().to_owned();
    let base_url = base.clone();
    let stripe_base = env.stripe.base_url();

    // A post without the page's token (another site's form) changes nothing.
    let forged = env.client().post_raw(
        "/account/free",
        "application/x-www-form-urlencoded",
        "license=x&activation=y",
    );
    assert_eq!(forged.status, 403, "{}", forged.body);

    let env_ref = &env;
    let old_key = key.clone();
    with_browser("account page", |c| async move {
        c.set_window_size(1280, 900)
            .await
            .expect("a desktop window");
        c.goto(&format!("{base}/account"))
            .await
            .expect("open /account");
        wait_for_url(&c, "the sign-in page", |u| u.ends_with("/signin")).await;
        // Labels name the fields; the form is sent with the keyboard.
        wait_for(&c, "label[for=email]").await;
        wait_for(&c, "label[for=password]").await;
        wait_for(&c, "#email")
            .await
            .send_keys(email)
            .await
            .expect("type");
        let password = wait_for(&c, "#password").await;
        password.send_keys("not the password").await.expect("type");
        password.send_keys("\u{E007}").await.expect("Enter");
        let error = text_of(&c, "#signin-error").await;
        assert!(error.contains("wrong"), "{error}");
        let password = wait_for(&c, "#password").await;
        password.send_keys(PASSWORD).await.expect("type");
        password.send_keys("\u{E007}").await.expect("Enter");
        wait_for_url(&c, "the account page", |u| u.ends_with("/account")).await;

        let page = where_we_are(&c).await;
        assert_eq!(text_of(&c, "#account-email").await, email);
        assert!(page.contains("Pilot Professional"), "{page}");
        assert!(page.contains("2 of 3 in use"), "{page}");
        assert!(page.contains("6 of 6 left in the last 30 days"), "{page}");
        assert_eq!(
            text_of(&c, "code.key-end").await,
            &old_key[old_key.len() - 4..]
        );
        assert!(
            !page.contains(&old_key),
            "the whole key is never on the page"
        );
        assert!(page.contains("Lost your license key?"), "{page}");
        for machine in ["work-laptop", "build-server"] {
            assert!(page.contains(machine), "{page}");
        }
        screenshot(&c, 1280, 900, "account-desktop.png").await;
        screenshot(&c, 390, 844, "account-phone.png").await;
        c.set_window_size(1280, 900)
            .await
            .expect("a desktop window");

        // Free the build server's seat.
        wait_for(&c, "button[aria-label='Free the seat of build-server']")
            .await
            .click()
            .await
            .expect("click Free");
        wait_for_url(&c, "the account page after freeing", |u| {
            u.ends_with("/account?done=freed")
        })
        .await;
        let page = where_we_are(&c).await;
        assert!(
            page.contains("The machine&#x27;s seat is free")
                || page.contains("The machine's seat is free"),
            "{page}"
        );
        assert!(page.contains("1 of 3 in use"), "{page}");
        assert!(page.contains("5 of 6 left in the last 30 days"), "{page}");
        assert!(!page.contains("build-server"), "{page}");
        // The freed machine is refused at renewal; the other renews.
        let validate = |machine: &str| {
            env_ref.client().post_json(
                "/api/v1/licenses/validate",
                &json!({"license_key": old_key, "hardware_id": hardware_id(machine)}),
            )
        };
        validate("build-server").expect_problem(403, "not_activated");
        validate("work-laptop").expect_status(200);

        // The billing portal, at Stripe.
        wait_for(&c, "#portal")
            .await
            .click()
            .await
            .expect("click portal");
        wait_for_url(&c, "the billing portal", |u| u.starts_with(&stripe_base)).await;

        // A lost key: replaced after the box is ticked (by keyboard).
        c.goto(&format!("{base}/account")).await.expect("back");
        wait_for(&c, "form.new-key input[name=confirm]")
            .await
            .send_keys(" ")
            .await
            .expect("tick the box");
        wait_for(&c, "form.new-key button")
            .await
            .click()
            .await
            .expect("new key");
        wait_for_url(&c, "the account page after the new key", |u| {
            u.ends_with("/account?done=new_key")
        })
        .await;
        assert!(where_we_are(&c).await.contains("A new key is on its way"));

        // Sign out: the session ends; /account asks to sign in again.
        wait_for(&c, "form[action='/signout'] button")
            .await
            .click()
            .await
            .expect("sign out");
        wait_for_url(&c, "the signed-out page", |u| {
            u.ends_with("/signin?done=signed_out")
        })
        .await;
        assert!(where_we_are(&c).await.contains("You are signed out"));
        c.goto(&format!("{base}/account")).await.expect("again");
        wait_for_url(&c, "the sign-in page", |u| u.ends_with("/signin")).await;
    });

    // The new key was mailed; the old one finds nothing; the laptop comes
    // back on its seat with the new one.
    let deadline = Instant::now() + Duration::from_secs(30);
    let new_key = loop {
        let log = env.issuer.log();
        let found = log
            .match_indices("CODITECT-PILOT-")
            .map(|(i, _)| log[i..(i + 29).min(log.len())].to_owned())
            .find(|k| k.len() == 29 && *k != key);
        if let Some(k) = found {
            break k;
        }
        assert!(Instant::now() < deadline, "no new key mailed:\n{log}");
        std::thread::sleep(Duration::from_millis(100));
    };
    env.client()
        .post_json(
            "/api/v1/licenses/validate",
            &json!({"license_key": key, "hardware_id": hardware_id("work-laptop")}),
        )
        .expect_problem(404, "license_not_found");
    let back = env
        .client()
        .post_json(
            "/api/v1/licenses/activate",
            &json!({"license_key": new_key, "hardware_id": hardware_id("work-laptop"), "machine_name": "work-laptop"}),
        )
        .expect_status(200);
    assert_eq!(back["license"]["devices_used"], 1, "{back}");
    // Audited as a seat transfer, like the API's deactivate.
    let vars = stripe_env(&env.stripe);
    let audit = admin_with_env(
        dir.path(),
        &["audit", "--event", "deactivate", "--json"],
        &env_refs(&vars),
    );
    audit.assert_success();
    let rows = audit.json();
    let rows = rows.as_array().expect("rows");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["outcome"], "ok");
    assert_eq!(rows[0]["detail"], "seat transfer");
    let audit = admin_with_env(
        dir.path(),
        &["audit", "--event", "key_replaced", "--json"],
        &env_refs(&vars),
    );
    audit.assert_success();
    let rows = audit.json();
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{rows}");
    assert_eq!(rows[0]["outcome"], "ok");
    // The portal returns to the account page.
    let portals = env
        .stripe
        .requests_to("POST", "/v1/billing_portal/sessions");
    assert_eq!(portals.len(), 1);
    let return_url = portals[0]
        .params
        .iter()
        .find(|(k, _)| k == "return_url")
        .map(|(_, v)| v.clone());
    assert_eq!(return_url, Some(format!("{base_url}/account")));
    let _ = bought;
}
