//! In-process tests of every endpoint, through the same app the server runs.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use coditect_issuer::app::{self as api, AppState};
use coditect_issuer::config::{Config, Overrides};
use coditect_issuer::domain::license::NewLicense;
use coditect_issuer::domain::plans;
use coditect_issuer::http;
use poem::http::StatusCode;
use poem::test::{TestClient, TestResponse};
use serde_json::{Value, json};
use verifier::{HardwareId, KeyRing};

struct Harness {
    _dir: tempfile::TempDir,
    state: AppState,
    /// The SQLite file, for tests that look at or break the database.
    db_path: std::path::PathBuf,
}

fn harness_with(extra: &[(&str, &str)]) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_owned();
    let mut vars: Vec<(String, String)> = vec![
        ("CODITECT_DATA_DIR".into(), data),
        (
            "JWT_SECRET".into(),
            "test-secret-test-secret-test-secret!".into(),
        ),
    ];
    // These tests are not about rate limits (tests/rate_limits.rs is): all
    // their requests come from one unknown peer, so lift the limits.
    for var in [
        "RATE_LIMIT_LOGIN",
        "RATE_LIMIT_SIGNUP",
        "RATE_LIMIT_VALIDATE",
        "RATE_LIMIT_ACTIVATE",
        "RATE_LIMIT_LICENSE_IP",
    ] {
        vars.push((var.into(), "1000000/sec".into()));
    }
    vars.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    struct VecEnv(Vec<(String, String)>);
    impl coditect_issuer::config::Env for VecEnv {
        fn get(&self, name: &str) -> Option<String> {
            self.0
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }
    let config = Config::load(&VecEnv(vars), &Overrides::default(), &mut Vec::new()).unwrap();
    let coditect_issuer::config::DatabaseLocation::Sqlite(path) = &config.database else {
        panic!("the harness runs on SQLite");
    };
    let store =
        coditect_issuer::store::open_sqlite(path, config.license_key_pepper.clone()).unwrap();
    let db_path = path.clone();
    Harness {
        _dir: dir,
        state: AppState::new(config, store),
        db_path,
    }
}

fn harness() -> Harness {
    harness_with(&[])
}

impl Harness {
    /// A connection of its own to the database file.
    #[allow(dead_code)]
    fn sql(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(&self.db_path).unwrap()
    }

    fn client(&self) -> TestClient<impl poem::Endpoint> {
        TestClient::new(http::app(self.state.clone()))
    }

    async fn license(&self, plan: &str, devices: Option<u32>) -> (String, String) {
        let (lic, key) = self
            .state
            .store
            .create_license(
                &NewLicense {
                    email: "hal@az1.ai",
                    plan: plans::find(plan).unwrap(),
                    expires_at: api::now() + 90 * 86_400,
                    max_devices: devices,
                    organization_id: None,
                    stripe_subscription_id: None,
                },
                api::now(),
            )
            .await
            .unwrap();
        (lic.id, key.expose().to_owned())
    }

    fn ring(&self) -> KeyRing {
        KeyRing::new()
            .with_key(
                self.state.config.signer.kid(),
                &self.state.config.signer.public_key(),
            )
            .unwrap()
    }
}

async fn json_of(resp: TestResponse) -> Value {
    resp.json().await.value().deserialize::<Value>()
}

async fn problem(resp: TestResponse, status: StatusCode, code: &str) -> Value {
    resp.assert_status(status);
    resp.assert_content_type("application/problem+json");
    let body = json_of(resp).await;
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status.as_u16());
    assert!(body["request_id"].is_string(), "{body}");
    body
}

fn hw(n: u32) -> String {
    HardwareId::from_machine_id(&format!("machine-{n}")).to_hex()
}

#[tokio::test]
async fn health_and_readiness() {
    let h = harness();
    let c = h.client();
    let r = c.get("/healthz").send().await;
    r.assert_status_is_ok();
    assert_eq!(json_of(r).await["status"], "ok");
    let r = c.get("/readyz").send().await;
    r.assert_status_is_ok();
    assert_eq!(json_of(r).await["status"], "ready");
}

#[tokio::test]
async fn a_stopping_instance_is_not_ready_but_stays_alive() {
    let h = harness();
    let c = h.client();
    h.state.begin_draining();
    let r = c.get("/readyz").send().await;
    r.assert_status(StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json_of(r).await["code"], "draining");
    c.get("/healthz").send().await.assert_status_is_ok();
}

#[tokio::test]
async fn keys_are_published_as_a_jwk_set() {
    let h = harness();
    let r = h.client().get("/api/v1/keys").send().await;
    r.assert_status_is_ok();
    let body = json_of(r).await;
    let key = &body["keys"][0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert_eq!(key["alg"], "EdDSA");
    assert_eq!(key["use"], "sig");
    assert_eq!(key["kid"], "coditect-dev");
    let x = URL_SAFE_NO_PAD.decode(key["x"].as_str().unwrap()).unwrap();
    assert_eq!(x, h.state.config.signer.public_key());
}

#[tokio::test]
async fn activate_returns_a_token_that_verifies_and_reuses_the_seat() {
    let h = harness();
    let c = h.client();
    let (id, key) = h.license("pilot-professional", None).await;
    let body = json!({"license_key": key, "hardware_id": hw(1), "machine_name": "MacBook Pro"});
    let r = c
        .post("/api/v1/licenses/activate")
        .body_json(&body)
        .send()
        .await;
    r.assert_status(StatusCode::CREATED);
    let first = json_of(r).await;
    assert_eq!(first["license"]["id"], id);
    assert_eq!(first["license"]["devices_used"], 1);
    assert_eq!(first["license"]["plan_name"], "Pilot Professional");
    assert_eq!(
        first["license"]["entitlements"]["max_projects"],
        Value::Null
    );
    assert_eq!(first["activation"]["machine_name"], "MacBook Pro");

    let token = URL_SAFE_NO_PAD
        .decode(first["token"]["token"].as_str().unwrap())
        .unwrap();
    let now = u64::try_from(api::now()).unwrap();
    let hw1 = HardwareId::from_hex(&hw(1)).unwrap();
    let claims = verifier::verify(&token, &h.ring(), now, &hw1).unwrap();
    assert_eq!(claims.license_id, id);
    assert_eq!(claims.expires_at - claims.issued_at, 72 * 3600);
    assert_eq!(claims.renew_after - claims.issued_at, 24 * 3600);
    assert_eq!(claims.devices_used, 1);
    assert_eq!(
        verifier::verify(
            &token,
            &h.ring(),
            now,
            &HardwareId::from_hex(&hw(2)).unwrap()
        ),
        Err(verifier::VerifyError::HardwareMismatch)
    );

    // The same machine again: its existing activation, no new seat.
    let r = c
        .post("/api/v1/licenses/activate")
        .body_json(&body)
        .send()
        .await;
    r.assert_status_is_ok();
    let again = json_of(r).await;
    assert_eq!(again["activation"]["id"], first["activation"]["id"]);
    assert_eq!(again["license"]["devices_used"], 1);
}

#[tokio::test]
async fn activation_beyond_the_seat_limit_is_refused() {
    let h = harness();
    let c = h.client();
    let (_, key) = h.license("pilot-starter", None).await;
    let r = c
        .post("/api/v1/licenses/activate")
        .body_json(&json!({"license_key": key, "hardware_id": hw(1)}))
        .send()
        .await;
    r.assert_status(StatusCode::CREATED);
    let r = c
        .post("/api/v1/licenses/activate")
        .body_json(&json!({"license_key": key, "hardware_id": hw(2)}))
        .send()
        .await;
    let body = problem(r, StatusCode::FORBIDDEN, "too_many_activations").await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("coditect deactivate")
    );
}

#[tokio::test]
async fn validate_renews_only_activated_machines_of_usable_licenses() {
    let h = harness();
    let c = h.client();
    let (id, key) = h.license("pilot-professional", None).await;
    c.post("/api/v1/licenses/activate")
        .body_json(&json!({"license_key": key, "hardware_id": hw(1)}))
        .send()
        .await
        .assert_status(StatusCode::CREATED);
    let validate = |machine: String| {
        let body = json!({"license_key": key, "hardware_id": machine, "client_version": "1.0.0"});
        c.post("/api/v1/licenses/validate").body_json(&body).send()
    };
    let r = validate(hw(1)).await;
    r.assert_status_is_ok();
    let body = json_of(r).await;
    assert!(body["token"]["token"].as_str().unwrap().len() > 100);

    problem(
        validate(hw(2)).await,
        StatusCode::FORBIDDEN,
        "not_activated",
    )
    .await;

    for (status, code) in [
        ("suspended", "license_suspended"),
        ("canceled", "license_canceled"),
        ("revoked", "license_revoked"),
    ] {
        h.sql()
            .execute(
                "UPDATE licenses SET status = ?1 WHERE id = ?2",
                [status, id.as_str()],
            )
            .unwrap();
        problem(validate(hw(1)).await, StatusCode::FORBIDDEN, code).await;
    }
    h.sql()
        .execute(
            "UPDATE licenses SET status = 'active', expires_at = 1 WHERE id = ?1",
            [id.as_str()],
        )
        .unwrap();
    problem(
        validate(hw(1)).await,
        StatusCode::FORBIDDEN,
        "license_expired",
    )
    .await;
}

#[tokio::test]
async fn deactivate_frees_a_seat_by_machine_or_by_activation_id() {
    let h = harness();
    let c = h.client();
    let (_, key) = h.license("pilot-starter", Some(1)).await;
    let r = c
        .post("/api/v1/licenses/activate")
        .body_json(&json!({"license_key": key, "hardware_id": hw(1)}))
        .send()
        .await;
    let activation_id = json_of(r).await["activation"]["id"].clone();
    // A machine without a seat may not free another machine's.
    let r = c
        .post("/api/v1/licenses/deactivate")
        .body_json(
            &json!({"license_key": key, "hardware_id": hw(9), "activation_id": activation_id}),
        )
        .send()
        .await;
    problem(r, StatusCode::FORBIDDEN, "not_allowed_to_free").await;
    // The machine itself may, by its activation id.
    let r = c
        .post("/api/v1/licenses/deactivate")
        .body_json(
            &json!({"license_key": key, "hardware_id": hw(1), "activation_id": activation_id}),
        )
        .send()
        .await;
    r.assert_status_is_ok();
    let body = json_of(r).await;
    assert_eq!(body["activation"]["status"], "deactivated");
    assert_eq!(body["license"]["devices_used"], 0);
    // The seat is free for another machine.
    c.post("/api/v1/licenses/activate")
        .body_json(&json!({"license_key": key, "hardware_id": hw(2)}))
        .send()
        .await
        .assert_status(StatusCode::CREATED);
    let r = c
        .post("/api/v1/licenses/deactivate")
        .body_json(&json!({"license_key": key, "hardware_id": hw(2)}))
        .send()
        .await;
    r.assert_status_is_ok();
    // The asking machine is always named.
    let r = c
        .post("/api/v1/licenses/deactivate")
        .body_json(&json!({"license_key": key}))
        .send()
        .await;
    let p = problem(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field").await;
    assert_eq!(p["field"], "hardware_id");
    let r = c
        .post("/api/v1/licenses/deactivate")
        .body_json(&json!({"license_key": key, "hardware_id": hw(1), "activation_id": "nope"}))
        .send()
        .await;
    problem(r, StatusCode::NOT_FOUND, "activation_not_found").await;
}

#[tokio::test]
async fn bad_input_names_the_field() {
    let h = harness();
    let c = h.client();
    let (_, key) = h.license("pilot-starter", None).await;
    for (body, field) in [
        (
            json!({"license_key": "CODITECT-PILOT-0000", "hardware_id": hw(1)}),
            "license_key",
        ),
        (
            json!({"license_key": key, "hardware_id": "xyz"}),
            "hardware_id",
        ),
        (
            json!({"license_key": key, "hardware_id": hw(1), "machine_name": "a\u{7}b"}),
            "machine_name",
        ),
    ] {
        let r = c
            .post("/api/v1/licenses/activate")
            .body_json(&body)
            .send()
            .await;
        let p = problem(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field").await;
        assert_eq!(p["field"], field);
    }
    let r = c
        .post("/api/v1/licenses/activate")
        .body_json(&json!({"license_key": "CODITECT-PILOT-AAAA-BBBB-CCCC", "hardware_id": hw(1)}))
        .send()
        .await;
    problem(r, StatusCode::NOT_FOUND, "license_not_found").await;
}

#[tokio::test]
async fn malformed_requests_get_problems_not_500s() {
    let h = harness();
    let c = h.client();
    let r = c
        .post("/api/v1/licenses/activate")
        .content_type("application/json")
        .body("{not json")
        .send()
        .await;
    problem(r, StatusCode::BAD_REQUEST, "invalid_request").await;
    // Fields that do not fit the schema are named.
    for (body, field) in [
        (json!({"license_key": 5, "hardware_id": []}), "hardware_id"),
        (
            json!({"license_key": "CODITECT-PILOT-AAAA-BBBB-CCCC"}),
            "hardware_id",
        ),
        (
            json!({"license_key": "k".repeat(65), "hardware_id": hw(1)}),
            "license_key",
        ),
        (
            json!({"license_key": "CODITECT-PILOT-AAAA-BBBB-CCCC", "hardware_id": "a".repeat(65)}),
            "hardware_id",
        ),
        (
            json!({"license_key": "CODITECT-PILOT-AAAA-BBBB-CCCC", "hardware_id": hw(1), "machine_name": "m".repeat(256)}),
            "machine_name",
        ),
    ] {
        let r = c
            .post("/api/v1/licenses/activate")
            .body_json(&body)
            .send()
            .await;
        let p = problem(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field").await;
        assert_eq!(p["field"], field, "{body}");
    }
    let r = c
        .post("/api/v1/licenses/activate")
        .body_json(&json!([1, 2]))
        .send()
        .await;
    problem(r, StatusCode::BAD_REQUEST, "invalid_request").await;
    let r = c
        .post("/api/v1/licenses/activate")
        .content_type("application/json")
        .body(format!("{{\"license_key\": \"{}\"}}", "x".repeat(20_000)))
        .send()
        .await;
    problem(r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    let r = c
        .post("/api/v1/licenses/activate")
        .content_type("text/plain")
        .body("hello")
        .send()
        .await;
    problem(
        r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    problem(
        c.get("/api/v1/nothing").send().await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    problem(
        c.get("/api/v1/licenses/activate").send().await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
}

#[tokio::test]
async fn signup_login_list_and_logout() {
    let h = harness();
    let c = h.client();
    let signup = json!({"email": "hal@az1.ai", "password": "correct horse battery", "company_name": "AZ1.AI"});
    let r = c
        .post("/api/v1/auth/signup")
        .body_json(&signup)
        .send()
        .await;
    r.assert_status(StatusCode::ACCEPTED);
    let first = json_of(r).await;
    // The same email again gets the very same answer: signup does not tell
    // anyone which emails are registered.
    let r = c
        .post("/api/v1/auth/signup")
        .body_json(
            &json!({"email": "hal@az1.ai", "password": "another password!", "company_name": "X"}),
        )
        .send()
        .await;
    r.assert_status(StatusCode::ACCEPTED);
    assert_eq!(json_of(r).await, first);
    let org_id: String = h
        .sql()
        .query_row(
            "SELECT organization_id FROM users WHERE email = 'hal@az1.ai'",
            [],
            |r| r.get(0),
        )
        .unwrap();

    let r = c
        .post("/api/v1/auth/login")
        .body_json(&json!({"email": "HAL@az1.ai", "password": "correct horse battery"}))
        .send()
        .await;
    r.assert_status_is_ok();
    let login = json_of(r).await;
    assert_eq!(login["token_type"], "Bearer");
    assert_eq!(login["expires_in"], 86_400);
    let bearer = format!("Bearer {}", login["access_token"].as_str().unwrap());

    // A license of the organization, with one machine.
    let (_, key) = h
        .state
        .store
        .create_license(
            &NewLicense {
                email: "hal@az1.ai",
                plan: plans::find("pilot-starter").unwrap(),
                expires_at: api::now() + 86_400,
                max_devices: None,
                organization_id: Some(&org_id),
                stripe_subscription_id: None,
            },
            api::now(),
        )
        .await
        .unwrap();
    c.post("/api/v1/licenses/activate")
        .body_json(&json!({"license_key": key.expose(), "hardware_id": hw(1)}))
        .send()
        .await
        .assert_status(StatusCode::CREATED);
    let r = c
        .get("/api/v1/licenses")
        .header("authorization", &bearer)
        .send()
        .await;
    r.assert_status_is_ok();
    let list = json_of(r).await;
    assert_eq!(list["licenses"][0]["license"]["organization"], "AZ1.AI");
    assert_eq!(list["licenses"][0]["activations"][0]["hardware_id"], hw(1));
    assert!(
        !list.to_string().contains(key.expose()),
        "keys are never listed"
    );

    let r = c
        .post("/api/v1/auth/logout")
        .header("authorization", &bearer)
        .send()
        .await;
    r.assert_status(StatusCode::NO_CONTENT);
    let r = c
        .get("/api/v1/licenses")
        .header("authorization", &bearer)
        .send()
        .await;
    problem(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
    problem(
        c.get("/api/v1/licenses").send().await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    let r = c
        .get("/api/v1/licenses")
        .header("authorization", "Bearer not-a-jwt")
        .send()
        .await;
    problem(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test]
async fn wrong_password_and_unknown_email_look_the_same() {
    let h = harness();
    let c = h.client();
    c.post("/api/v1/auth/signup")
        .body_json(
            &json!({"email": "a@b.io", "password": "correct horse battery", "company_name": "B"}),
        )
        .send()
        .await
        .assert_status(StatusCode::ACCEPTED);
    let mut bodies = Vec::new();
    for (email, password) in [
        ("a@b.io", "wrong password!"),
        ("nobody@b.io", "correct horse battery"),
    ] {
        let r = c
            .post("/api/v1/auth/login")
            .body_json(&json!({"email": email, "password": password}))
            .send()
            .await;
        let mut body = problem(r, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
        body.as_object_mut().unwrap().remove("request_id");
        bodies.push(body);
    }
    assert_eq!(bodies[0], bodies[1]);
}

#[tokio::test]
async fn signup_validates_fields_and_honours_the_pilot_switches() {
    let h = harness();
    let c = h.client();
    for (body, field) in [
        (
            json!({"email": "nope", "password": "correct horse battery", "company_name": "A"}),
            "email",
        ),
        (
            json!({"email": "a@b.io", "password": "short", "company_name": "A"}),
            "password",
        ),
        (
            json!({"email": "a@b.io", "password": "correct horse battery", "company_name": "  "}),
            "company_name",
        ),
    ] {
        let r = c.post("/api/v1/auth/signup").body_json(&body).send().await;
        let p = problem(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field").await;
        assert_eq!(p["field"], field);
    }

    let closed = harness_with(&[("ENABLE_PILOT_SIGNUP", "false")]);
    let body = json!({"email": "a@b.io", "password": "correct horse battery", "company_name": "A"});
    let r = closed
        .client()
        .post("/api/v1/auth/signup")
        .body_json(&body)
        .send()
        .await;
    problem(r, StatusCode::FORBIDDEN, "signup_closed").await;

    // The pilot's places are paid organizations: unpaid signups take none
    // (tests/tests/accounts_e2e.rs fills one with a real checkout).
    let roomy = harness_with(&[("PILOT_USERS_LIMIT", "1")]);
    let other =
        json!({"email": "c@d.io", "password": "correct horse battery", "company_name": "C"});
    for body in [&body, &other] {
        roomy
            .client()
            .post("/api/v1/auth/signup")
            .body_json(body)
            .send()
            .await
            .assert_status(StatusCode::ACCEPTED);
    }
    let full = harness_with(&[("PILOT_USERS_LIMIT", "0")]);
    let r = full
        .client()
        .post("/api/v1/auth/signup")
        .body_json(&other)
        .send()
        .await;
    problem(r, StatusCode::FORBIDDEN, "signup_full").await;
}

#[tokio::test]
async fn features_need_a_valid_license_key_header() {
    let h = harness();
    let c = h.client();
    let (id, key) = h.license("pilot-starter", None).await;
    let r = c
        .get("/api/v1/licenses/features")
        .header("x-license-key", &key)
        .send()
        .await;
    r.assert_status_is_ok();
    let body = json_of(r).await;
    assert_eq!(body["license_id"], id);
    assert_eq!(body["entitlements"]["max_projects"], 3);
    assert_eq!(body["entitlements"]["ai_requests"], 100);
    assert_eq!(body["entitlements"]["max_devices"], 1);
    problem(
        c.get("/api/v1/licenses/features").send().await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    let r = c
        .get("/api/v1/licenses/features")
        .header("x-license-key", "CODITECT-PILOT-AAAA-BBBB-CCCC")
        .send()
        .await;
    problem(r, StatusCode::NOT_FOUND, "license_not_found").await;
}

#[tokio::test]
async fn the_committed_spec_is_what_the_server_serves() {
    let h = harness();
    let r = h.client().get("/openapi.json").send().await;
    r.assert_status_is_ok();
    let text = r.0.into_body().into_string().await.unwrap();
    let served: Value = serde_json::from_str(&text).unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../schemas/openapi.json");
    if std::env::var_os("UPDATE_SCHEMAS").is_some() {
        std::fs::write(path, format!("{text}\n")).unwrap();
    }
    let committed: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(
        served == committed,
        "schemas/openapi.json is out of date: run `UPDATE_SCHEMAS=1 cargo test -p coditect-issuer --test api` and commit it"
    );
    // `coditect-issuer openapi` prints the same document.
    assert_eq!(
        serde_json::from_str::<Value>(&http::spec_json()).unwrap(),
        served
    );
    // /docs shows the served document (it fetches it), not the framework's
    // unfinished one (which it would embed).
    let r = h.client().get("/docs").send().await;
    r.assert_status_is_ok();
    let page = r.0.into_body().into_string().await.unwrap();
    assert!(
        page.contains("let spec = \"/openapi.json\";"),
        "{}",
        &page[..200]
    );
    assert!(page.contains("url: spec,"));
    assert!(!page.contains("\"openapi\":"), "/docs embeds a document");
    assert!(!text.contains("allOf"), "a field is still wrapped in allOf");
    // Every operation documents a summary, a tag, examples and its error
    // responses.
    for (path, ops) in served["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            assert!(op["summary"].is_string(), "{method} {path} has no summary");
            assert!(op["tags"].is_array(), "{method} {path} has no tag");
            assert!(op["security"].is_array(), "{method} {path} has no security");
            let json_media = |content: &Value| {
                content
                    .as_object()
                    .and_then(|c| c.iter().find(|(t, _)| t.starts_with("application/json")))
                    .map(|(_, m)| m.clone())
            };
            if let Some(media) = json_media(&op["requestBody"]["content"]) {
                assert!(
                    media["example"].is_object(),
                    "{method} {path} has no request example"
                );
            }
            for (status, response) in op["responses"].as_object().unwrap() {
                if let Some(media) = json_media(&response["content"]) {
                    let media = media.as_object().unwrap();
                    assert!(
                        media.contains_key("example"),
                        "{method} {path} {status} has no example"
                    );
                }
                if let Some(media) = response["content"]["application/problem+json"].as_object() {
                    let examples = media["examples"].as_object().unwrap_or_else(|| {
                        panic!("{method} {path} {status} has no problem examples")
                    });
                    for (code, example) in examples {
                        assert_eq!(example["value"]["code"], code.as_str());
                        assert_eq!(example["value"]["status"].to_string(), *status);
                    }
                }
            }
            if path.starts_with("/api/v1/licenses/") || path.starts_with("/api/v1/auth/") {
                assert!(
                    op["responses"]["500"]["content"]["application/problem+json"].is_object(),
                    "{method} {path} does not document its errors"
                );
            }
        }
    }
    assert!(served["components"]["securitySchemes"]["BearerAuth"].is_object());
    assert_eq!(served["servers"][0]["url"], h.state.config.public_base_url);
}

/// Operation ids and tags are what generated clients are named after:
/// changing one breaks every integrator's code, so they are pinned here.
#[tokio::test]
async fn operation_ids_tags_and_statuses_are_stable() {
    let spec: Value = serde_json::from_str(&http::spec_json()).unwrap();
    let mut seen = Vec::new();
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let statuses: Vec<&str> = op["responses"]
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            // Only these cannot be refused (tests/clients/redocly.yaml).
            let id = op["operationId"].as_str().unwrap();
            assert_eq!(
                statuses.iter().any(|s| s.starts_with('4')),
                !["healthz", "readyz", "listKeys"].contains(&id),
                "{id}: {statuses:?}"
            );
            seen.push(format!(
                "{} {method} {path} [{}] {}",
                op["operationId"].as_str().unwrap(),
                op["tags"][0].as_str().unwrap(),
                statuses.join(" ")
            ));
        }
    }
    seen.sort();
    let expected = [
        "activate post /api/v1/licenses/activate [Licenses] 200 201 400 403 404 413 415 422 429 500 503",
        "billingCheckout post /api/v1/billing/checkout [Billing] 200 400 401 403 409 413 415 422 429 500 503",
        "billingPortal post /api/v1/billing/portal [Billing] 200 401 409 429 500 503",
        "cliToken post /api/v1/auth/cli/token [Auth] 200 400 404 413 415 422 429 500 503",
        "deactivate post /api/v1/licenses/deactivate [Licenses] 200 400 401 403 404 413 415 422 429 500 503",
        "deviceCode post /api/v1/auth/device/code [Auth] 200 429 500 503",
        "deviceToken post /api/v1/auth/device/token [Auth] 200 400 404 409 413 415 422 500 503",
        "features get /api/v1/licenses/features [Licenses] 200 401 404 429 500 503",
        "healthz get /healthz [Health] 200",
        "listKeys get /api/v1/keys [Keys] 200",
        "listLicenses get /api/v1/licenses [Licenses] 200 401 500 503",
        "login post /api/v1/auth/login [Auth] 200 400 401 413 415 422 429 500 503",
        "logout post /api/v1/auth/logout [Auth] 204 401 500 503",
        "newPassword post /api/v1/auth/new-password [Auth] 200 400 404 413 415 422 429 500 503",
        "readyz get /readyz [Health] 200 503",
        "requestPasswordReset post /api/v1/auth/password-reset [Auth] 202 400 413 415 422 429 500 503",
        "signup post /api/v1/auth/signup [Auth] 202 400 403 413 415 422 429 500 503",
        "validate post /api/v1/licenses/validate [Licenses] 200 400 403 404 413 415 422 429 500 503",
        "verifyEmail post /api/v1/auth/verify-email [Auth] 200 400 404 413 415 422 500 503",
    ];
    assert_eq!(seen, expected);
    // Each operation is described once in `http::spec::OPERATIONS`.
    let mut ids: Vec<&str> = http::spec::OPERATIONS.iter().map(|o| o.id).collect();
    ids.sort_unstable();
    let mut listed: Vec<&str> = expected
        .iter()
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    listed.sort_unstable();
    assert_eq!(ids, listed);
}

#[tokio::test]
async fn security_headers_are_on_every_response_errors_included() {
    let h = harness();
    let c = h.client();
    let (_, key) = h.license("pilot-starter", None).await;
    let responses = vec![
        ("/healthz", c.get("/healthz").send().await),
        ("/api/v1/keys", c.get("/api/v1/keys").send().await),
        ("/docs", c.get("/docs").send().await),
        ("/openapi.json", c.get("/openapi.json").send().await),
        ("/nope", c.get("/nope").send().await),
        (
            "/api/v1/licenses/activate",
            c.post("/api/v1/licenses/activate")
                .body_json(&json!({"license_key": key, "hardware_id": hw(1)}))
                .send()
                .await,
        ),
        (
            "/api/v1/licenses/validate",
            c.post("/api/v1/licenses/validate")
                .body_json(&json!({"license_key": key, "hardware_id": "bad"}))
                .send()
                .await,
        ),
        (
            "/api/v1/auth/login",
            c.post("/api/v1/auth/login")
                .content_type("application/json")
                .body("{")
                .send()
                .await,
        ),
        ("/api/v1/licenses", c.get("/api/v1/licenses").send().await),
    ];
    for (path, r) in &responses {
        let hv = |name: &str| {
            r.0.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        assert_eq!(
            hv("x-content-type-options").as_deref(),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(hv("x-frame-options").as_deref(), Some("DENY"), "{path}");
        assert!(
            hv("strict-transport-security").is_some_and(|v| v.contains("max-age=")),
            "{path}"
        );
        assert_eq!(
            hv("referrer-policy").as_deref(),
            Some("no-referrer"),
            "{path}"
        );
        let csp = hv("content-security-policy").unwrap_or_default();
        assert!(
            csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
            "{path}: {csp}"
        );
        if path.starts_with("/api/v1/") && *path != "/api/v1/keys" {
            assert_eq!(hv("cache-control").as_deref(), Some("no-store"), "{path}");
        }
        if *path == "/docs" {
            assert!(csp.contains("script-src 'self' 'sha256-"), "{csp}");
            assert!(!csp.contains("unsafe-eval"), "{csp}");
        }
    }
}

async fn login(c: &TestClient<impl poem::Endpoint>, email: &str, password: &str) -> TestResponse {
    c.post("/api/v1/auth/login")
        .header("user-agent", "coditect-test/1.0")
        .body_json(&json!({"email": email, "password": password}))
        .send()
        .await
}

#[tokio::test]
async fn five_failed_logins_delay_this_client_even_for_an_unknown_email() {
    let h = harness();
    let c = h.client();
    c.post("/api/v1/auth/signup")
        .body_json(&json!({"email": "lock@b.io", "password": "correct horse battery", "company_name": "B"}))
        .send()
        .await
        .assert_status(StatusCode::ACCEPTED);
    for email in ["lock@b.io", "nobody@b.io"] {
        for _ in 0..5 {
            problem(
                login(&c, email, "wrong password!").await,
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
            )
            .await;
        }
        // Delayed now: even the right password is refused, for a known and
        // an unknown email alike (so the delay reveals nothing).
        let r = login(&c, email, "correct horse battery").await;
        let retry: u64 =
            r.0.headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap();
        assert!((1..=30).contains(&retry), "{retry}");
        let p = problem(r, StatusCode::TOO_MANY_REQUESTS, "sign_in_delayed").await;
        assert!(p["detail"].as_str().unwrap().contains("Try again after"));
    }
    // The counts are in the database: a new app on the same database (a
    // restarted server) still refuses.
    let restarted = TestClient::new(http::app(h.state.clone()));
    problem(
        login(&restarted, "lock@b.io", "correct horse battery").await,
        StatusCode::TOO_MANY_REQUESTS,
        "sign_in_delayed",
    )
    .await;
    // After the delay it opens again.
    h.sql()
        .execute(
            "UPDATE sign_in_failures SET last_failure_at = last_failure_at - 60",
            [],
        )
        .unwrap();
    login(&c, "lock@b.io", "correct horse battery")
        .await
        .assert_status_is_ok();
}

#[tokio::test]
async fn audit_rows_are_written_for_each_event_and_hold_no_secrets() {
    let h = harness();
    let c = h.client();
    let password = "correct horse battery staple";
    c.post("/api/v1/auth/signup")
        .header("user-agent", "coditect-test/1.0")
        .body_json(&json!({"email": "audit@b.io", "password": password, "company_name": "B"}))
        .send()
        .await
        .assert_status(StatusCode::ACCEPTED);
    problem(
        login(&c, "audit@b.io", "wrong password!").await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    let r = login(&c, "audit@b.io", password).await;
    r.assert_status_is_ok();
    let jwt = json_of(r).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, key) = h.license("pilot-starter", Some(1)).await;
    let r = c
        .post("/api/v1/licenses/activate")
        .body_json(&json!({"license_key": key, "hardware_id": hw(1)}))
        .send()
        .await;
    r.assert_status(StatusCode::CREATED);
    let token = json_of(r).await["token"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    c.post("/api/v1/licenses/activate")
        .body_json(&json!({"license_key": key, "hardware_id": hw(2)}))
        .send()
        .await
        .assert_status(StatusCode::FORBIDDEN);
    c.post("/api/v1/licenses/validate")
        .body_json(&json!({"license_key": key, "hardware_id": hw(1)}))
        .send()
        .await
        .assert_status_is_ok();
    c.post("/api/v1/licenses/deactivate")
        .body_json(&json!({"license_key": key, "hardware_id": hw(1)}))
        .send()
        .await
        .assert_status_is_ok();
    c.post("/api/v1/auth/logout")
        .header("authorization", format!("Bearer {jwt}"))
        .send()
        .await
        .assert_status(StatusCode::NO_CONTENT);
    h.state.audit.flush().await;

    let events = h.state.store.audit_events(None, None, 1000).await.unwrap();
    let seen: Vec<(String, String)> = events
        .iter()
        .map(|e| (e.event.clone(), e.outcome.clone()))
        .collect();
    for expected in [
        ("signup", "ok"),
        ("failed_login", "invalid_credentials"),
        ("login", "ok"),
        ("activate", "ok"),
        ("activate", "too_many_activations"),
        ("validate", "ok"),
        ("deactivate", "ok"),
        ("logout", "ok"),
    ] {
        assert!(
            seen.contains(&(expected.0.to_owned(), expected.1.to_owned())),
            "missing {expected:?} in {seen:?}"
        );
    }
    let login_row = events.iter().find(|e| e.event == "login").unwrap();
    assert_eq!(login_row.user_agent.as_deref(), Some("coditect-test/1.0"));
    // The actor is the signed-in user (the JWT's subject), the subject the
    // new session; this in-process client has no socket peer, so no IP.
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(jwt.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    let user_id = claims["sub"].as_str().unwrap();
    assert_eq!(
        login_row.actor.as_deref(),
        Some(format!("user:{user_id}").as_str())
    );
    assert_eq!(login_row.subject_type.as_deref(), Some("session"));
    assert_eq!(login_row.subject_id.as_deref(), claims["sid"].as_str());
    assert_eq!(login_row.ip, None);

    // Nothing secret anywhere in the database file (WAL included).
    let dir = h.db_path.parent().unwrap().to_path_buf();
    let mut everything = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        if p.to_string_lossy().contains("sqlite3") {
            everything.extend(std::fs::read(&p).unwrap());
        }
    }
    let haystack = String::from_utf8_lossy(&everything);
    for secret in [password, key.as_str(), token.as_str(), jwt.as_str()] {
        assert!(
            !haystack.contains(secret),
            "a secret is stored in the database"
        );
    }
    let jwt_signature = jwt.rsplit('.').next().unwrap();
    assert!(!haystack.contains(jwt_signature));
}

#[tokio::test]
async fn an_internal_failure_answers_with_only_a_request_id() {
    let h = harness();
    let c = h.client();
    let (_, key) = h.license("pilot-starter", None).await;
    // Break the database under the running app.
    h.sql()
        .execute_batch("PRAGMA foreign_keys = OFF; DROP TABLE activations;")
        .unwrap();
    let r = c
        .post("/api/v1/licenses/activate")
        .body_json(&json!({"license_key": key, "hardware_id": hw(1)}))
        .send()
        .await;
    r.assert_status(StatusCode::INTERNAL_SERVER_ERROR);
    let header_id =
        r.0.headers()
            .get("x-request-id")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
    let body = json_of(r).await;
    assert_eq!(body["code"], "internal_error");
    assert_eq!(body["request_id"], header_id.as_str());
    let text = body.to_string().to_lowercase();
    for internal in [
        "sql",
        "table",
        "activations",
        "rusqlite",
        ".rs",
        "/tmp",
        "panicked",
    ] {
        assert!(!text.contains(internal), "{internal} leaked: {text}");
    }
}

/// The error code table of docs/integrators.md is generated from the code
/// (`http::spec::error_codes_markdown`; `UPDATE_SCHEMAS=1` rewrites it),
/// and lists every code the API's source makes.
#[test]
fn the_integrators_error_codes_are_the_codes_of_the_code() {
    const START: &str = "<!-- error-codes:start (generated: UPDATE_SCHEMAS=1 cargo test -p coditect-issuer --test api) -->\n";
    const END: &str = "<!-- error-codes:end -->";
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let path = format!("{root}/docs/integrators.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let (Some(start), Some(end)) = (doc.find(START), doc.find(END)) else {
        panic!("docs/integrators.md has no error-codes markers");
    };
    let table = http::spec::error_codes_markdown();
    if std::env::var_os("UPDATE_SCHEMAS").is_some() {
        let updated = format!("{}{START}{table}{}", &doc[..start], &doc[end..]);
        std::fs::write(&path, updated).unwrap();
    } else {
        assert_eq!(
            &doc[start + START.len()..end],
            table,
            "the error codes of docs/integrators.md are out of date: run `UPDATE_SCHEMAS=1 cargo test -p coditect-issuer --test api`"
        );
    }

    // Every code literal of the API's source: the line after a status
    // (`Problem::new(STATUS, "code", …)`), the first of a `(code, title,
    // detail)` tuple, or a `=> "code"` of an error's `code()`.
    let mut codes = std::collections::BTreeSet::new();
    let mut files = vec![
        format!("{root}/issuer/src/http/problem.rs"),
        format!("{root}/issuer/src/app/billing/webhook.rs"),
    ];
    for dir in ["issuer/src/http/api", "issuer/src/http/middleware"] {
        for entry in std::fs::read_dir(format!("{root}/{dir}")).unwrap() {
            files.push(entry.unwrap().path().to_string_lossy().into_owned());
        }
    }
    let literal = |s: &str| -> Option<String> {
        let s = s.trim().strip_prefix('"')?.strip_suffix("\",")?;
        (!s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            .then(|| s.to_owned())
    };
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if let Some((_, code)) = line.split_once("=> \"")
                && file.ends_with("webhook.rs")
                && let Some(code) = literal(&format!("\"{code}"))
            {
                codes.insert(code);
            }
            let Some(code) = literal(line) else { continue };
            let before = lines[..i].iter().rev().find(|l| !l.trim().is_empty());
            let after_status = before.is_some_and(|b| {
                let b = b.trim();
                b.ends_with("=> (")
                    || (b.ends_with(',') && (b.contains("StatusCode::") || b.starts_with("S::")))
            });
            if after_status {
                codes.insert(code);
            }
        }
    }
    assert!(codes.len() > 30, "the scan found too few codes: {codes:?}");
    // Made, but never an answer of the API.
    const NOT_ANSWERED: &[&str] = &[
        // Signup answers 202 whether or not the address is taken, so that
        // nobody learns which addresses are registered.
        "email_taken",
    ];
    for code in codes.iter().filter(|c| !NOT_ANSWERED.contains(&c.as_str())) {
        assert!(
            table.contains(&format!("| `{code}` |")),
            "`{code}` is made by the code but not in docs/integrators.md's table: add its refusal to http::spec (OPERATIONS or other_refusals)"
        );
    }
}
