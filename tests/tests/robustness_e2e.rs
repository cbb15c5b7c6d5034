//! 1,000 mixed concurrent requests (good, bad, malformed) against the real
//! issuer: no 5xx, every error a problem document, the server healthy after.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};

use coditect_tests::issuer::{IssuerServer, create_license, hardware_id};
use serde_json::json;

const THREADS: usize = 20;
const PER_THREAD: usize = 50;

#[test]
fn a_thousand_mixed_concurrent_requests_never_get_a_5xx() {
    let dir = tempfile::tempdir().unwrap();
    let server = IssuerServer::start(dir.path());
    let license = create_license(
        dir.path(),
        &[
            "--email",
            "mixed@example.com",
            "--tier",
            "pilot-professional",
            "--max-devices",
            "5",
        ],
    );
    let client = server.client();
    // One machine activated, so that validations can succeed.
    client
        .post_json(
            "/api/v1/licenses/activate",
            &json!({"license_key": license.key, "hardware_id": hardware_id("good-machine")}),
        )
        .expect_status(201);

    let key = Arc::new(license.key.clone());
    let barrier = Arc::new(Barrier::new(THREADS));
    let server_errors = Arc::new(Mutex::new(Vec::new()));
    let transport_errors = Arc::new(AtomicUsize::new(0));
    let successes = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let client = server.client();
            let key = Arc::clone(&key);
            let barrier = Arc::clone(&barrier);
            let server_errors = Arc::clone(&server_errors);
            let transport_errors = Arc::clone(&transport_errors);
            let successes = Arc::clone(&successes);
            std::thread::spawn(move || {
                barrier.wait();
                for i in 0..PER_THREAD {
                    let n = t * PER_THREAD + i;
                    let good_hw = hardware_id("good-machine");
                    let result = match n % 10 {
                        0 => client.try_get("/healthz"),
                        1 => client.try_post_json(
                            "/api/v1/licenses/validate",
                            &json!({"license_key": *key, "hardware_id": good_hw}),
                        ),
                        2 => client.try_post_json(
                            "/api/v1/licenses/activate",
                            &json!({"license_key": *key, "hardware_id": hardware_id(&format!("m{n}"))}),
                        ),
                        3 => client.try_post_raw(
                            "/api/v1/licenses/validate",
                            "application/json",
                            "{\"license_key\": \"CODITECT-PILOT-",
                        ),
                        4 => client.try_post_raw("/api/v1/auth/login", "text/plain", "hello"),
                        5 => client.try_post_json(
                            "/api/v1/licenses/activate",
                            &json!({"license_key": 12, "hardware_id": null, "extra": [1, 2]}),
                        ),
                        6 => client.try_post_json(
                            "/api/v1/auth/login",
                            &json!({"email": format!("user{n}@example.com"), "password": "wrong password!"}),
                        ),
                        7 => client.try_get("/api/v1/licenses"),
                        8 => client.try_post_raw(
                            "/api/v1/licenses/deactivate",
                            "application/json",
                            &"[".repeat(5000),
                        ),
                        _ => client.try_get(&format!("/api/v1/no/such/{n}")),
                    };
                    match result {
                        Err(_) => {
                            transport_errors.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) if r.status >= 500 => {
                            server_errors.lock().unwrap().push(format!("{}: {}", r.status, r.body));
                        }
                        Ok(r) if r.status >= 400 => {
                            let p = r.json();
                            assert!(
                                r.content_type.as_deref() == Some("application/problem+json"),
                                "error without a problem document: {} {}",
                                r.status,
                                r.body
                            );
                            assert!(p["code"].is_string(), "{}", r.body);
                        }
                        Ok(_) => {
                            successes.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let server_errors = server_errors.lock().unwrap();
    assert!(server_errors.is_empty(), "5xx responses: {server_errors:?}");
    assert_eq!(
        transport_errors.load(Ordering::Relaxed),
        0,
        "{}",
        server.log()
    );
    assert!(
        successes.load(Ordering::Relaxed) >= 100,
        "the good requests succeed"
    );
    // Still healthy and still serving licenses.
    server.get("/readyz").expect_status(200);
    server
        .post_json(
            "/api/v1/licenses/validate",
            &json!({"license_key": license.key, "hardware_id": hardware_id("good-machine")}),
        )
        .expect_status(200);
}
