//! `coditect-issuer audit` reads what the running server recorded.

use coditect_tests::issuer::{IssuerServer, admin, create_license, hardware_id};
use serde_json::json;

#[test]
fn the_audit_command_lists_what_the_server_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = IssuerServer::start(dir.path());
    let license = create_license(
        dir.path(),
        &["--email", "audit@example.com", "--tier", "pilot-starter"],
    );
    server
        .post_json(
            "/api/v1/licenses/activate",
            &json!({"license_key": license.key, "hardware_id": hardware_id("audited")}),
        )
        .expect_status(201);
    server
        .post_json(
            "/api/v1/auth/login",
            &json!({"email": "nobody@example.com", "password": "wrong password!"}),
        )
        .expect_problem(401, "invalid_credentials");
    admin(dir.path(), &["license", "revoke", &license.id]).assert_success();
    // Stopping the server (SIGKILL) may lose at most the batch in flight;
    // wait until the activation row is there first.
    let mut rows = serde_json::Value::Null;
    for _ in 0..100 {
        let out = admin(dir.path(), &["audit", "--json"]);
        out.assert_success();
        rows = out.json();
        let events: Vec<String> = rows
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["event"].as_str().unwrap().to_owned())
            .collect();
        if events.contains(&"activate".to_owned()) && events.contains(&"failed_login".to_owned()) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    server.kill();
    let rows = rows.as_array().unwrap().clone();
    let find = |event: &str| {
        rows.iter()
            .find(|r| r["event"] == event)
            .unwrap_or_else(|| panic!("no {event} row in {rows:?}"))
            .clone()
    };
    assert_eq!(find("license_created")["actor"], "admin");
    assert_eq!(find("license_revoked")["subject_id"], license.id.as_str());
    let activate = find("activate");
    assert_eq!(activate["ip"], "127.0.0.1");
    assert_eq!(activate["outcome"], "ok");
    assert_eq!(activate["actor"], format!("license:{}", license.id));
    let failed = find("failed_login");
    assert_eq!(failed["outcome"], "invalid_credentials");
    assert_eq!(failed["ip"], "127.0.0.1");
    let text = serde_json::to_string(&rows).unwrap();
    assert!(
        !text.contains(&license.key),
        "the license key is never audited"
    );
    assert!(
        !text.contains("wrong password!"),
        "passwords are never audited"
    );

    // Filters.
    let only = admin(dir.path(), &["audit", "--json", "--event", "activate"]).json();
    assert!(
        only.as_array()
            .unwrap()
            .iter()
            .all(|r| r["event"] == "activate")
    );
    let none = admin(dir.path(), &["audit", "--json", "--since", "2099-01-01"]).json();
    assert_eq!(none.as_array().unwrap().len(), 0);
    let bad = admin(dir.path(), &["audit", "--since", "someday"]);
    assert!(!bad.success());
    assert!(bad.all_output().contains("--since"));
    // The human form names the events too.
    let human = admin(dir.path(), &["audit"]).all_output();
    assert!(human.contains("license_revoked") && human.contains("failed_login"));
}
