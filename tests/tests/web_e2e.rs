//! The web pages of the real issuer binary over HTTP (issue 4): landing,
//! signup form with its CSRF protection and field errors, the closed and
//! full pages, Stripe Checkout (a local fake) and the success and cancel
//! pages, and their security headers.
//!
//! A small client here plays the browser: it keeps cookies, sends `Origin`
//! on posts like a browser does, and does not follow redirects, so each
//! step can be checked.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use coditect_tests::billing::{BillingEnv, files_containing, open_db, query_rows};
use coditect_tests::issuer::IssuerServer;
use serde_json::json;

const PASSWORD: &str = "correct horse battery staple";

fn data_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("coditect-web-e2e-")
        .tempdir()
        .expect("a temporary data directory")
}

/// An answer, read whole.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The `Set-Cookie` of cookie `name`.
    fn set_cookie(&self, name: &str) -> Option<&str> {
        self.headers_named("set-cookie")
            .into_iter()
            .find(|c| c.starts_with(&format!("{name}=")))
    }

    fn expect(&self, status: u16) -> &Self {
        assert_eq!(
            self.status, status,
            "expected HTTP {status}, got {}: {}",
            self.status, self.body
        );
        self
    }

    /// An HTML page (never a JSON error) with our security headers.
    fn expect_page(&self, status: u16) -> &Self {
        self.expect(status);
        assert_eq!(
            self.header("content-type"),
            Some("text/html; charset=utf-8"),
            "{}",
            self.body
        );
        assert!(self.body.starts_with("<!doctype html>"), "{}", self.body);
        let csp = self.header("content-security-policy").expect("a CSP");
        assert!(csp.starts_with("default-src 'none';"), "{csp}");
        assert!(
            !csp.contains("script-src") && !csp.contains("unsafe-inline"),
            "the pages run no script: {csp}"
        );
        assert!(csp.contains("style-src 'self'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(self.header("x-frame-options"), Some("DENY"));
        assert_eq!(self.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(self.header("referrer-policy"), Some("same-origin"));
        self
    }

    fn expect_no_store(&self) -> &Self {
        assert_eq!(
            self.header("cache-control"),
            Some("no-store"),
            "{:?}",
            self.headers
        );
        self
    }

    fn contains(&self, text: &str) -> &Self {
        assert!(
            self.body.contains(text),
            "the page lacks {text:?}:\n{}",
            self.body
        );
        self
    }

    fn lacks(&self, text: &str) -> &Self {
        assert!(
            !self.body.contains(text),
            "the page shows {text:?}:\n{}",
            self.body
        );
        self
    }

    /// The text of the element with this id (its content up to the next tag).
    fn element_text(&self, id: &str) -> Option<String> {
        let start = self.body.find(&format!("id=\"{id}\""))?;
        let open_end = start + self.body[start..].find('>')? + 1;
        let close = open_end + self.body[open_end..].find('<')?;
        Some(html_escape::decode_html_entities(&self.body[open_end..close]).into_owned())
    }

    /// The value of the hidden CSRF field of the form.
    fn csrf_field(&self) -> String {
        let marker = "name=\"csrf_token\" value=\"";
        let start = self
            .body
            .find(marker)
            .unwrap_or_else(|| panic!("no CSRF field:\n{}", self.body))
            + marker.len();
        let end = start + self.body[start..].find('"').expect("closing quote");
        self.body[start..end].to_owned()
    }
}

/// A browser stand-in: cookies by name (every cookie of the site has the
/// path `/signup`, and the tests only visit pages under it after setting
/// one), `Origin` on posts, no redirects followed.
struct WebClient {
    agent: ureq::Agent,
    base: String,
    cookies: Mutex<BTreeMap<String, String>>,
}

fn form_encode(fields: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (name, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        for (j, part) in [name, value].iter().enumerate() {
            if j == 1 {
                out.push('=');
            }
            for b in part.bytes() {
                match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                        out.push(char::from(b));
                    }
                    b' ' => out.push('+'),
                    _ => out.push_str(&format!("%{b:02X}")),
                }
            }
        }
    }
    out
}

impl WebClient {
    fn new(base: &str) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .proxy(None)
            .timeout_global(Some(Duration::from_secs(60)))
            .build();
        WebClient {
            agent: config.into(),
            base: base.trim_end_matches('/').to_owned(),
            cookies: Mutex::new(BTreeMap::new()),
        }
    }

    fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http") {
            path_or_url.to_owned()
        } else {
            format!("{}{path_or_url}", self.base)
        }
    }

    fn cookie(&self, name: &str) -> Option<String> {
        self.cookies.lock().unwrap().get(name).cloned()
    }

    fn set_cookie_value(&self, name: &str, value: &str) {
        self.cookies
            .lock()
            .unwrap()
            .insert(name.to_owned(), value.to_owned());
    }

    fn forget_cookies(&self) {
        self.cookies.lock().unwrap().clear();
    }

    fn cookie_header(&self) -> Option<String> {
        let jar = self.cookies.lock().unwrap();
        (!jar.is_empty()).then(|| {
            jar.iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    fn read(&self, resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Answer {
        let mut resp = resp.unwrap_or_else(|e| panic!("request failed: {e}"));
        let headers: Vec<(String, String)> = resp
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        for (name, value) in &headers {
            if name == "set-cookie"
                && let Some((pair, _)) = value.split_once(';').or(Some((value, "")))
                && let Some((n, v)) = pair.split_once('=')
            {
                let mut jar = self.cookies.lock().unwrap();
                if value.contains("Max-Age=0") {
                    jar.remove(n);
                } else {
                    jar.insert(n.to_owned(), v.to_owned());
                }
            }
        }
        Answer {
            status: resp.status().as_u16(),
            headers,
            body: resp.body_mut().read_to_string().unwrap_or_default(),
        }
    }

    fn get(&self, path: &str) -> Answer {
        let mut req = self.agent.get(self.url(path)).header("Accept", "text/html");
        if let Some(c) = self.cookie_header() {
            req = req.header("Cookie", &c);
        }
        self.read(req.call())
    }

    /// Posts a form as a browser on our pages would (with `Origin`).
    fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> Answer {
        let origin = self.base.clone();
        self.post_form_from(path, fields, Some(&origin))
    }

    fn post_form_from(&self, path: &str, fields: &[(&str, &str)], origin: Option<&str>) -> Answer {
        let mut req = self
            .agent
            .post(self.url(path))
            .header("Accept", "text/html")
            .header("Content-Type", "application/x-www-form-urlencoded");
        if let Some(o) = origin {
            req = req.header("Origin", o);
        }
        if let Some(c) = self.cookie_header() {
            req = req.header("Cookie", &c);
        }
        self.read(req.send(form_encode(fields)))
    }

    /// Loads the form and sends it with these fields (and its CSRF token).
    fn sign_up(&self, fields: &[(&str, &str)]) -> Answer {
        let form = self.get("/signup");
        form.expect_page(200);
        let token = form.csrf_field();
        let mut all: Vec<(&str, &str)> = vec![("csrf_token", &token)];
        all.extend_from_slice(fields);
        self.post_form("/signup", &all)
    }

    /// Opens the newest confirmation link mailed to `email` (the `count`-th
    /// one) and presses its button: the answer (a 303 to Stripe when the
    /// signup continues to the payment).
    fn confirm(&self, issuer: &IssuerServer, email: &str, count: usize) -> Answer {
        let link = issuer.wait_for_mailed_link(email, "/signup/verify", count);
        let page = self.get(&link);
        page.expect_page(200).contains("Confirm");
        let token = page.csrf_field();
        let value = |name: &str| {
            let marker = format!("name=\"{name}\" value=\"");
            let at = page.body.find(&marker).map(|i| i + marker.len()).unwrap();
            page.body[at..at + page.body[at..].find('"').unwrap()].to_owned()
        };
        let (link_token, plan, interval) = (value("token"), value("plan"), value("interval"));
        self.post_form(
            "/signup/verify",
            &[
                ("csrf_token", &token),
                ("token", &link_token),
                ("plan", &plan),
                ("interval", &interval),
            ],
        )
    }
}

fn good_fields<'a>(email: &'a str, plan: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("email", email),
        ("password", PASSWORD),
        ("company_name", "Acme Robotics GmbH"),
        ("plan", plan),
        ("interval", "month"),
    ]
}

/// Pays on the fake Stripe's hosted page; returns where Stripe sends the
/// browser afterwards.
fn pay(web: &WebClient, checkout_url: &str) -> String {
    let page = web.get(checkout_url);
    page.expect(200);
    assert!(page.body.contains("4242 4242 4242 4242"), "{}", page.body);
    // The page's form posts to its own address.
    let paid = web.post_form_from(
        checkout_url,
        &[
            ("email", ""),
            ("card_number", "4242 4242 4242 4242"),
            ("card_expiry", "12 / 34"),
            ("card_cvc", "123"),
            ("billing_name", "Test Customer"),
        ],
        None,
    );
    paid.expect(303);
    paid.header("location").expect("a redirect").to_owned()
}

fn users(dir: &std::path::Path) -> usize {
    query_rows(&open_db(dir), "SELECT id FROM users").len()
}

/// The landing page once the issuer has read the prices from Stripe (it
/// does so in the background as it starts); panics after 20 s.
fn landing_with_prices(web: &WebClient, shows: &str) -> Answer {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let home = web.get("/");
        if home.body.contains(shows) {
            return home;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the landing page never showed {shows}:\n{}",
            home.body
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn landing_page_shows_the_plans_and_the_way_in() {
    let dir = data_dir();
    let env = BillingEnv::start(dir.path(), &[]);
    let web = WebClient::new(env.issuer.base_url());
    let home = landing_with_prices(&web, "$19<small>/month</small>");
    home.expect_page(200)
        .contains("Start your pilot")
        .contains("href=\"/signup\"")
        .contains("Pilot Starter")
        .contains("$19<small>/month</small>")
        .contains("$190/year")
        .contains("Pilot Professional")
        .contains("$49<small>/month</small>")
        .contains("$490/year")
        .contains("3 projects")
        .contains("Unlimited projects")
        .contains("1000 AI requests")
        .contains("3 devices")
        .contains("id=\"install\"")
        .contains("npm install -g @coditect-ai/coditect-core")
        .contains("href=\"/docs\"")
        .contains("href=\"/assets/site.css\"");
    let css = web.get("/assets/site.css");
    css.expect(200);
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    assert!(css.body.contains(".key"), "{}", css.body);
    // The API keeps answering JSON beside the pages.
    let health = web.get("/healthz");
    health.expect(200);
    assert!(health.body.contains("ok"));
    // An unknown page is a page too, not a JSON problem.
    web.get("/no-such-page")
        .expect_page(404)
        .contains("Page not found");
    let api_404 = web.get("/api/v1/no-such-thing");
    assert_eq!(api_404.status, 404);
    assert_eq!(
        api_404.header("content-type"),
        Some("application/problem+json")
    );
}

/// The prices on the pages are the amounts of Stripe's price objects, and
/// what a checkout then charges; before they are read, and without
/// payments, no amount is made up.
#[test]
fn the_prices_shown_are_the_ones_stripe_charges() {
    use coditect_tests::fake_stripe::{Config, PRICE_PROFESSIONAL_ANNUAL, PRICE_STARTER_MONTHLY};
    let mut config = Config::default();
    for price in &mut config.prices {
        if price.id == PRICE_STARTER_MONTHLY {
            price.unit_amount = 2_350;
        }
        if price.id == PRICE_PROFESSIONAL_ANNUAL {
            price.unit_amount = 52_000;
        }
    }
    let dir = data_dir();
    let env = BillingEnv::start_with_stripe(config, dir.path(), &[]);
    let web = WebClient::new(env.issuer.base_url());
    landing_with_prices(&web, "$23.50<small>/month</small>")
        .expect_page(200)
        .contains("$190/year")
        .contains("$49<small>/month</small>")
        .contains("$520/year")
        .lacks("$19<small>");
    web.get("/signup?plan=pilot-starter")
        .expect_page(200)
        .contains("$23.50/mo or $190/yr")
        .contains("$49/mo or $520/yr");
    // A checkout of the shown price charges exactly that.
    let p = env.buy("price@example.com", "pilot-starter", "month");
    let sub = env
        .stripe
        .subscription(&p.subscription_id)
        .expect("the subscription");
    let invoice_id = sub["latest_invoice"].as_str().expect("an invoice id");
    let invoice = env.stripe.invoice(invoice_id).expect("the invoice");
    assert_eq!(invoice["amount_paid"], 2_350, "{invoice}");
    assert_eq!(invoice["currency"], "usd");

    // No payments: the plans without amounts.
    let plain_dir = data_dir();
    let plain = IssuerServer::start(plain_dir.path());
    WebClient::new(plain.base_url())
        .get("/")
        .expect_page(200)
        .contains("Pilot Starter")
        .contains("price shown at checkout")
        .lacks("$19")
        .lacks("$49");
}

#[test]
fn the_form_sets_a_csrf_cookie_and_allows_posting_to_stripe() {
    let dir = data_dir();
    let env = BillingEnv::start(dir.path(), &[]);
    let web = WebClient::new(env.issuer.base_url());
    landing_with_prices(&web, "$49<small>/month</small>");
    let form = web.get("/signup?plan=pilot-professional");
    form.expect_page(200)
        .expect_no_store()
        .contains("name=\"email\"")
        .contains("name=\"password\"")
        .contains("name=\"company_name\"")
        .contains("value=\"pilot-professional\" checked")
        .contains("value=\"month\" checked")
        .contains("$49/mo or $490/yr");
    let set = form.set_cookie("coditect_csrf").expect("a CSRF cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/signup", "Max-Age="] {
        assert!(set.contains(attr), "{set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP here: {set}");
    assert_eq!(Some(form.csrf_field()), web.cookie("coditect_csrf"));
    // The form may be sent to us, and redirected to Stripe Checkout (here
    // the fake's origin), nowhere else.
    let csp = form.header("content-security-policy").unwrap();
    assert!(
        csp.contains(&format!("form-action 'self' {};", env.stripe.base_url())),
        "{csp}"
    );
    // Loading it again keeps the token (two tabs both work).
    let again = web.get("/signup");
    assert!(again.set_cookie("coditect_csrf").is_none());
    assert_eq!(again.csrf_field(), form.csrf_field());
}

#[test]
fn posts_without_the_matching_token_or_from_another_site_are_refused() {
    let dir = data_dir();
    let env = BillingEnv::start(dir.path(), &[]);
    let web = WebClient::new(env.issuer.base_url());
    let fields = good_fields("csrf@example.com", "pilot-starter");
    let expired = |a: &Answer| {
        a.expect_page(403)
            .expect_no_store()
            .contains("This form expired")
            .contains("href=\"/signup\"");
    };
    // No cookie, no field.
    expired(&web.post_form("/signup", &fields));
    // A field but no cookie.
    let token = web.get("/signup").csrf_field();
    let cookie = web.cookie("coditect_csrf").unwrap();
    web.forget_cookies();
    let mut with_token = vec![("csrf_token", token.as_str())];
    with_token.extend_from_slice(&fields);
    expired(&web.post_form("/signup", &with_token));
    // Cookie and field differ.
    web.set_cookie_value("coditect_csrf", &cookie);
    let other = "A".repeat(43);
    let mut mismatched = vec![("csrf_token", other.as_str())];
    mismatched.extend_from_slice(&fields);
    expired(&web.post_form("/signup", &mismatched));
    // The cookie but no field.
    expired(&web.post_form("/signup", &fields));
    // Both right, but sent from another site's page.
    expired(&web.post_form_from("/signup", &with_token, Some("https://evil.example")));
    expired(&web.post_form_from("/signup", &with_token, Some("null")));
    // Not a form at all.
    let json = web
        .agent
        .post(web.url("/signup"))
        .header("Content-Type", "application/json")
        .header("Cookie", &format!("coditect_csrf={cookie}"))
        .send(json!({"email": "csrf@example.com"}).to_string());
    expired(&web.read(json));
    assert_eq!(users(dir.path()), 0, "a refused post creates nothing");
    assert!(env.stripe.checkout_session_ids().is_empty());
    // Both right from our own page: accepted (without Origin too, as older
    // browsers send it).
    let ok = web.post_form_from("/signup", &with_token, None);
    ok.expect_page(200).contains("Check your inbox");
    assert_eq!(users(dir.path()), 1);
    // The pages of the mailed links check their posts the same way.
    for path in ["/signup/verify", "/signup/reset"] {
        let fields = [
            ("csrf_token", token.as_str()),
            ("token", "anything"),
            ("email", "csrf@example.com"),
        ];
        expired(&web.post_form_from(path, &fields, Some("https://evil.example")));
        expired(&web.post_form_from(path, &fields[1..], None));
    }
}

#[test]
fn field_errors_are_shown_beside_the_fields_with_the_values_kept() {
    let dir = data_dir();
    let env = BillingEnv::start(dir.path(), &[]);
    let web = WebClient::new(env.issuer.base_url());
    let secret = "short-pw";
    let resp = web.sign_up(&[
        ("email", "not-an-email"),
        ("password", secret),
        ("company_name", "Acme & <Sons>"),
        ("plan", "enterprise"),
        ("interval", "weekly"),
    ]);
    resp.expect_page(422)
        .expect_no_store()
        .contains("Please correct the fields marked below")
        .contains("value=\"not-an-email\"")
        .contains("value=\"Acme &amp; &lt;Sons&gt;\"")
        .lacks("<Sons>")
        .lacks(secret);
    assert_eq!(
        resp.element_text("email-error").as_deref(),
        Some("Enter an email address such as name@example.com.")
    );
    assert_eq!(
        resp.element_text("password-error").as_deref(),
        Some("The password must be 10 to 128 characters long.")
    );
    assert_eq!(
        resp.element_text("plan-error").as_deref(),
        Some("Choose a plan.")
    );
    assert_eq!(
        resp.element_text("interval-error").as_deref(),
        Some("Choose monthly or annual billing.")
    );
    assert!(resp.element_text("company_name-error").is_none());
    // Each message sits in its field's block, after its input.
    for (input, error) in [
        ("id=\"email\"", "id=\"email-error\""),
        ("id=\"password\"", "id=\"password-error\""),
    ] {
        let i = resp.body.find(input).unwrap();
        let e = resp.body.find(error).unwrap();
        let block_end = i + resp.body[i..].find("</div>").unwrap();
        assert!(i < e && e < block_end, "{error} is not beside {input}");
    }
    assert!(
        resp.body.contains("aria-describedby=\"email-error\""),
        "{}",
        resp.body
    );
    // Empty fields have their own words; the company is checked too.
    let empty = web.sign_up(&[("plan", "pilot-starter"), ("interval", "year")]);
    empty.expect_page(422);
    assert_eq!(
        empty.element_text("email-error").as_deref(),
        Some("Enter your email address.")
    );
    assert_eq!(
        empty.element_text("password-error").as_deref(),
        Some("Choose a password.")
    );
    assert_eq!(
        empty.element_text("company_name-error").as_deref(),
        Some("Enter your company's name.")
    );
    empty.contains("value=\"year\" checked");
    assert_eq!(users(dir.path()), 0);
}

#[test]
fn a_good_form_creates_the_account_and_redirects_to_checkout() {
    let dir = data_dir();
    let env = BillingEnv::start(dir.path(), &[]);
    let web = WebClient::new(env.issuer.base_url());
    let inbox = web.sign_up(&good_fields("  Buyer@Example.com ", "pilot-professional"));
    inbox
        .expect_page(200)
        .expect_no_store()
        .contains("Check your inbox");
    assert!(env.stripe.checkout_session_ids().is_empty());
    let resp = web.confirm(&env.issuer, "Buyer@Example.com", 1);
    resp.expect(303).expect_no_store();
    let location = resp.header("location").unwrap();
    let sessions = env.stripe.checkout_session_ids();
    assert_eq!(sessions.len(), 1);
    assert_eq!(location, env.stripe.checkout_page_url(&sessions[0]));
    let set = resp
        .set_cookie("coditect_checkout")
        .expect("a checkout cookie");
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/signup", "Max-Age=86400"] {
        assert!(set.contains(attr), "{set}");
    }
    let session = env.stripe.checkout_session(&sessions[0]).unwrap();
    assert_eq!(
        session["success_url"],
        format!(
            "{}/signup/success?session_id={{CHECKOUT_SESSION_ID}}",
            env.issuer.base_url()
        )
    );
    assert_eq!(
        session["cancel_url"],
        format!("{}/signup/cancel", env.issuer.base_url())
    );
    let rows = query_rows(
        &open_db(dir.path()),
        "SELECT u.email, o.name FROM users u JOIN organizations o ON o.id = u.organization_id",
    );
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["email"], "Buyer@Example.com");
    assert_eq!(rows[0]["name"], "Acme Robotics GmbH");

    // The same person again (an abandoned checkout): a wrong password
    // gets the answer a new address gets (tests/tests/accounts_e2e.rs), the
    // right one continues.
    let other = WebClient::new(env.issuer.base_url());
    let mut wrong = good_fields("buyer@example.com", "pilot-starter");
    wrong[1] = ("password", "not the password at all");
    wrong[2] = ("company_name", "Someone Else Inc");
    let refused = other.sign_up(&wrong);
    refused
        .expect_page(200)
        .contains("Check your inbox")
        .lacks("Acme Robotics");
    let again = other.sign_up(&good_fields("buyer@example.com", "pilot-starter"));
    again.expect(303);
    assert_eq!(users(dir.path()), 1);
    assert_eq!(env.stripe.checkout_session_ids().len(), 2);
    // The audit log is written in the background: wait for it.
    let expected = [
        "signup:ok",
        "email_verified:ok",
        "checkout_started:ok",
        "failed_login:invalid_credentials",
        "signup:email_taken",
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let events: Vec<String> = query_rows(
            &open_db(dir.path()),
            "SELECT event, outcome FROM audit_log ORDER BY id",
        )
        .iter()
        .map(|r| {
            format!(
                "{}:{}",
                r["event"].as_str().unwrap(),
                r["outcome"].as_str().unwrap()
            )
        })
        .collect();
        if expected.iter().all(|x| events.iter().any(|e| e == x)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "audit events missing: {events:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_key_is_shown_once_and_only_to_the_browser_that_paid() {
    let dir = data_dir();
    let env = BillingEnv::start(dir.path(), &[]);
    let web = WebClient::new(env.issuer.base_url());
    web.sign_up(&good_fields("once@example.com", "pilot-starter"))
        .expect_page(200);
    let started = web.confirm(&env.issuer, "once@example.com", 1);
    started.expect(303);
    let success_url = pay(&web, started.header("location").unwrap());
    let session_id = env.stripe.checkout_session_ids()[0].clone();
    assert_eq!(
        success_url,
        format!(
            "{}/signup/success?session_id={session_id}",
            env.issuer.base_url()
        )
    );
    // Another browser (a foreign checkout cookie, or none) learns nothing.
    let stranger = WebClient::new(env.issuer.base_url());
    stranger
        .get(&success_url)
        .expect_page(404)
        .expect_no_store()
        .contains("We cannot show this order here")
        .lacks("CODITECT-PILOT-");
    stranger.set_cookie_value("coditect_checkout", &"B".repeat(43));
    stranger
        .get(&success_url)
        .expect_page(404)
        .lacks("CODITECT-PILOT-");
    // A made-up session id, with the right cookie.
    web.get("/signup/success?session_id=cs_test_nothing")
        .expect_page(404);
    web.get("/signup/success").expect_page(404);
    // The buyer's browser: the key, once.
    let shown = web.get(&success_url);
    shown
        .expect_page(200)
        .expect_no_store()
        .contains("Welcome to CODITECT!")
        .contains("Pilot Starter")
        .contains("npm install -g @coditect-ai/coditect-core")
        .contains("coditect license status")
        .contains("once@example.com");
    let key = shown.element_text("license-key").expect("the key");
    assert!(
        key.starts_with("CODITECT-PILOT-") && key.len() == 29,
        "{key}"
    );
    shown.contains(&format!("coditect activate {key}"));
    let again = web.get(&success_url);
    again
        .expect_page(200)
        .expect_no_store()
        .contains("Your license key was already shown")
        .contains("once@example.com")
        .contains(&key[key.len() - 4..])
        .lacks(&key);
    // The cancel page.
    web.get("/signup/cancel")
        .expect_page(200)
        .expect_no_store()
        .contains("Nothing was charged")
        .contains("href=\"/signup\"");
    // Buying again for the same organization: a clear page, no checkout.
    let twice = WebClient::new(env.issuer.base_url());
    let refused = twice.sign_up(&good_fields("once@example.com", "pilot-professional"));
    refused
        .expect_page(409)
        .contains("You already have a subscription");
    assert_eq!(env.stripe.checkout_session_ids().len(), 1);
}

/// The web path keeps the key for the success page (shown once); once shown
/// and mailed, the key is in no file of the data folder (database, WAL,
/// journal): the wiped column and the mail body leave no copy behind.
#[test]
fn once_shown_and_mailed_the_web_key_is_nowhere_in_the_database_files() {
    let dir = data_dir();
    let env = BillingEnv::start(dir.path(), &[]);
    let web = WebClient::new(env.issuer.base_url());
    web.sign_up(&good_fields("disk-web@example.com", "pilot-starter"))
        .expect_page(200)
        .contains("Check your inbox");
    let started = web.confirm(&env.issuer, "disk-web@example.com", 1);
    started.expect(303);
    let success_url = pay(&web, started.header("location").unwrap());
    let shown = web.get(&success_url);
    shown.expect_page(200);
    let key = shown.element_text("license-key").expect("the key");
    assert!(key.starts_with("CODITECT-PILOT-"), "{key}");
    web.get(&success_url)
        .expect_page(200)
        .contains("Your license key was already shown")
        .lacks(&key);

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let unsent = || {
        query_rows(
            &open_db(dir.path()),
            "SELECT id FROM email_outbox WHERE sent_at IS NULL",
        )
        .len()
    };
    while unsent() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the mail was not sent"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let files_with_key = || files_containing(dir.path(), &key);
    // The scrub of the write-ahead log follows the writes; give it a moment.
    let mut found = files_with_key();
    while !found.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        found = files_with_key();
    }
    assert!(
        found.is_empty(),
        "the key {key} is still on disk in {found:?}"
    );
}

#[test]
fn closed_signup_shows_a_page_not_an_error() {
    let dir = data_dir();
    let env = BillingEnv::start(dir.path(), &[("ENABLE_PILOT_SIGNUP", "false")]);
    let web = WebClient::new(env.issuer.base_url());
    web.get("/signup")
        .expect_page(200)
        .contains("Pilot signup is closed")
        .lacks("<form");
    let posted = web.post_form("/signup", &good_fields("late@example.com", "pilot-starter"));
    posted.expect_page(403).contains("Pilot signup is closed");
    assert_eq!(users(dir.path()), 0);
}

#[test]
fn a_full_pilot_shows_a_page_not_an_error() {
    let dir = data_dir();
    let env = BillingEnv::start(dir.path(), &[("PILOT_USERS_LIMIT", "1")]);
    let web = WebClient::new(env.issuer.base_url());
    // One place: the form is there, and someone pays for it (an unpaid
    // account takes no place).
    let form = web.get("/signup");
    form.expect_page(200).contains("<form");
    env.account("unpaid@example.com", "Unpaid Ltd");
    web.get("/signup").expect_page(200).contains("<form");
    env.buy("first@example.com", "pilot-starter", "month");
    web.get("/signup")
        .expect_page(200)
        .contains("The pilot is full")
        .lacks("<form");
    let token = form.csrf_field();
    let mut fields = vec![("csrf_token", token.as_str())];
    fields.extend(good_fields("second@example.com", "pilot-starter"));
    web.post_form("/signup", &fields)
        .expect_page(403)
        .contains("The pilot is full");
    assert_eq!(users(dir.path()), 2);
}

#[test]
fn without_payments_or_with_stripe_down_the_pages_say_so() {
    // No Stripe configured at all.
    let dir = data_dir();
    let plain = IssuerServer::start(dir.path());
    let web = WebClient::new(plain.base_url());
    web.get("/signup")
        .expect_page(503)
        .contains("Payments are not available")
        .lacks("<form");
    drop(plain);

    // Stripe configured but failing.
    let dir = data_dir();
    let env = BillingEnv::start(dir.path(), &[]);
    env.stripe
        .fail_next_requests("POST", "/v1/checkout/sessions", 500, 10);
    let web = WebClient::new(env.issuer.base_url());
    web.sign_up(&good_fields("down@example.com", "pilot-starter"))
        .expect_page(200);
    let resp = web.confirm(&env.issuer, "down@example.com", 1);
    resp.expect_page(503)
        .contains("We could not reach our payment provider")
        .contains("value=\"down@example.com\"")
        .contains("<form");
    assert!(resp.set_cookie("coditect_checkout").is_none());
}

#[test]
fn signup_posts_share_the_signup_rate_limit_and_say_so_in_a_page() {
    let dir = data_dir();
    let env = BillingEnv::start(dir.path(), &[("RATE_LIMIT_SIGNUP", "1/hour")]);
    let web = WebClient::new(env.issuer.base_url());
    // The form itself is not limited; the first post is.
    let first = web.sign_up(&[("email", "x")]);
    first.expect_page(422);
    assert!(first.header("ratelimit-limit").is_some());
    let second = web.sign_up(&[("email", "x")]);
    second
        .expect_page(429)
        .contains("Too many signups from your network address");
    assert!(second.header("retry-after").is_some());
    // The JSON signup counts against the same quota.
    let json = env.client().post_json(
        "/api/v1/auth/signup",
        &json!({"email": "j@example.com", "password": PASSWORD, "company_name": "J"}),
    );
    json.expect_problem(429, "rate_limited");
}

#[test]
fn behind_https_the_cookies_are_secure_and_the_origin_is_the_public_one() {
    let dir = data_dir();
    let public = "https://licenses.example";
    let env = BillingEnv::start(dir.path(), &[("PUBLIC_BASE_URL", public)]);
    let web = WebClient::new(env.issuer.base_url());
    let form = web.get("/signup");
    form.expect_page(200);
    let csrf = form.set_cookie("coditect_csrf").expect("a CSRF cookie");
    assert!(csrf.ends_with("; Secure"), "{csrf}");
    let token = form.csrf_field();
    let mut fields = vec![("csrf_token", token.as_str())];
    fields.extend(good_fields("secure@example.com", "pilot-starter"));
    // The server's own address is not its public origin.
    web.post_form("/signup", &fields)
        .expect_page(403)
        .contains("https://licenses.example");
    web.post_form_from("/signup", &fields, Some(public))
        .expect_page(200);
    // The mailed link names the public address; this client reaches the
    // server directly, with the public origin.
    let link = env
        .issuer
        .wait_for_mailed_link("secure@example.com", "/signup/verify", 1);
    assert!(link.starts_with(public), "{link}");
    let link_token = link
        .split("token=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    let ok = web.post_form_from(
        "/signup/verify",
        &[
            ("csrf_token", token.as_str()),
            ("token", link_token),
            ("plan", "pilot-starter"),
            ("interval", "month"),
        ],
        Some(public),
    );
    ok.expect(303);
    let checkout = ok
        .set_cookie("coditect_checkout")
        .expect("a checkout cookie");
    assert!(checkout.ends_with("; Secure"), "{checkout}");
}

/// Issue 13, item 6: the form answers a registered address with a wrong
/// password exactly as it answers a new address ("check your inbox", the
/// same status and page), so it tells nobody who has an account. Nothing
/// of the existing account changes (its password and organization, no
/// checkout); its owner gets a mail with a reset link instead, and the
/// audit log records `signup` / `email_taken`.
#[test]
fn the_form_answers_a_registered_email_as_it_answers_a_new_one() {
    let dir = data_dir();
    let env = BillingEnv::start(dir.path(), &[]);
    env.account("owner@example.com", "Owner Ltd");
    let taken = WebClient::new(env.issuer.base_url());
    let mut wrong = good_fields("owner@example.com", "pilot-starter");
    wrong[1] = ("password", "not the owner's password");
    wrong[2] = ("company_name", "Squatter Inc");
    let answer_taken = taken.sign_up(&wrong);
    let fresh = WebClient::new(env.issuer.base_url());
    let answer_new = fresh.sign_up(&good_fields("fresh@example.com", "pilot-starter"));
    assert_eq!(answer_taken.status, 200);
    assert_eq!(answer_taken.status, answer_new.status);
    assert_eq!(
        answer_taken.body.replace("owner@example.com", "EMAIL"),
        answer_new.body.replace("fresh@example.com", "EMAIL"),
        "the same page"
    );
    answer_taken
        .contains("Check your inbox")
        .lacks("already registered");
    // Nothing changed for the owner: same password, same organization, no
    // checkout; the owner was mailed a reset link.
    assert!(env.stripe.checkout_session_ids().is_empty());
    env.client()
        .post_json(
            "/api/v1/auth/login",
            &json!({"email": "owner@example.com", "password": PASSWORD}),
        )
        .expect_status(200);
    let rows = query_rows(
        &open_db(dir.path()),
        "SELECT o.name FROM users u JOIN organizations o ON o.id = u.organization_id
         WHERE u.email = 'owner@example.com'",
    );
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["name"], "Owner Ltd");
    env.issuer
        .wait_for_mailed_link("owner@example.com", "/signup/reset", 1);
    env.issuer
        .wait_for_mailed_link("fresh@example.com", "/signup/verify", 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while query_rows(
        &open_db(dir.path()),
        "SELECT id FROM audit_log WHERE event = 'signup' AND outcome = 'email_taken'
           AND actor = 'email:owner@example.com'",
    )
    .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no email_taken audit row"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The password-reset pages: asking answers alike for a known and an
/// unknown email (only the known one is mailed); the mailed link's page
/// sets the new password once; a second use changes nothing.
#[test]
fn the_reset_pages_mail_a_link_that_sets_a_new_password_once() {
    let dir = data_dir();
    let env = BillingEnv::start(dir.path(), &[]);
    env.account("owner@example.com", "Owner Ltd");
    let web = WebClient::new(env.issuer.base_url());
    let ask = |email: &str| {
        let form = web.get("/signup/reset");
        form.expect_page(200).contains("Reset your password");
        let token = form.csrf_field();
        web.post_form("/signup/reset", &[("csrf_token", &token), ("email", email)])
    };
    let known = ask("owner@example.com");
    let unknown = ask("nobody@example.com");
    assert_eq!((known.status, unknown.status), (200, 200));
    assert_eq!(
        known.body.replace("owner@example.com", "EMAIL"),
        unknown.body.replace("nobody@example.com", "EMAIL")
    );
    let link = env
        .issuer
        .wait_for_mailed_link("owner@example.com", "/signup/reset", 1);
    assert!(
        env.issuer
            .mailed_links("nobody@example.com", "/signup/reset")
            .is_empty()
    );
    let page = web.get(&link);
    page.expect_page(200).contains("Choose a new password");
    let csrf = page.csrf_field();
    let link_token = link.split("token=").nth(1).unwrap().to_owned();
    let set = |password: &str| {
        web.post_form(
            "/signup/reset",
            &[
                ("csrf_token", csrf.as_str()),
                ("token", link_token.as_str()),
                ("password", password),
            ],
        )
    };
    set("a brand new passphrase")
        .expect_page(200)
        .contains("Your password is changed");
    set("yet another passphrase")
        .expect_page(400)
        .contains("This link does not work");
    let login = |password: &str| {
        env.client().post_json(
            "/api/v1/auth/login",
            &json!({"email": "owner@example.com", "password": password}),
        )
    };
    login("a brand new passphrase").expect_status(200);
    login("yet another passphrase").expect_problem(401, "invalid_credentials");
}
