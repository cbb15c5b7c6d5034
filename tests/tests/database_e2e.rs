//! The issuer's databases from the operator's side, with the real binary:
//! PostgreSQL selected by `DATABASE_URL`, migrations that two processes may
//! run at once, a database from a newer build refused, connection errors
//! that say what is wrong without printing the password, and the SQLite
//! backup taken while the server is serving, then restored.

use std::time::Duration;

use coditect_tests::database::{Backend, TestDatabase, postgres_server_url};
use coditect_tests::issuer::{
    IssuerServer, admin, admin_with_env, create_license, hardware_id, issuer_command,
    run_with_timeout, show_license,
};
use serde_json::json;

const ACTIVATE: &str = "/api/v1/licenses/activate";
const VALIDATE: &str = "/api/v1/licenses/validate";

fn data_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

#[test]
fn two_migrations_at_once_on_postgres_leave_one_schema_and_a_newer_one_is_refused() {
    let dir = data_dir();
    let Some(db) = TestDatabase::create(Backend::Postgres, dir.path()) else {
        return;
    };
    // Two processes start migrating the empty database at the same moment.
    let spawn = || {
        let mut cmd = issuer_command(dir.path(), &[]);
        cmd.arg("migrate");
        std::thread::spawn(move || run_with_timeout(cmd, Duration::from_secs(60)))
    };
    let (a, b) = (spawn(), spawn());
    // Every migrations/postgres/NNNN_*.sql, the newest setting the version.
    let numbers: Vec<u32> = std::fs::read_dir(coditect_tests::repo_file("migrations/postgres"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.strip_suffix(".sql")?.get(..4)?.parse().ok()
        })
        .collect();
    let newest = numbers.iter().max().copied().unwrap_or(0);
    for out in [a.join().unwrap(), b.join().unwrap()] {
        out.assert_success();
        assert!(
            out.stdout.contains(&format!("schema version {newest}\n")),
            "{out}"
        );
        assert!(out.stdout.contains("postgresql://postgres@"), "{out}");
    }
    assert_eq!(
        db.count("SELECT count(*) FROM schema_migrations"),
        i64::try_from(numbers.len()).unwrap()
    );

    // The server runs on it.
    let server = IssuerServer::start(dir.path());
    assert_eq!(server.get("/readyz").status, 200);
    drop(server);

    // A database a newer build migrated is refused, and left alone.
    db.execute(
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (99, 'future', 0)",
    );
    let newer = admin(dir.path(), &["migrate"]);
    assert_eq!(newer.code, Some(1), "{newer}");
    assert!(newer.stderr.contains("newer than this build"), "{newer}");
    let mut cmd = issuer_command(dir.path(), &[]);
    cmd.args(["serve", "--bind", "127.0.0.1:0"]);
    let refused = run_with_timeout(cmd, Duration::from_secs(30));
    assert_eq!(refused.code, Some(1), "{refused}");
    assert!(
        refused.stderr.contains("newer than this build"),
        "{refused}"
    );
    assert_eq!(db.count("SELECT max(version) FROM schema_migrations"), 99);
}

#[test]
fn database_urls_that_cannot_work_are_explained_without_the_password() {
    let dir = data_dir();
    let server = postgres_server_url();
    let host_part = server
        .trim_start_matches("postgresql://")
        .trim_start_matches("postgres://");
    let host_port = host_part
        .split_once('@')
        .map_or(host_part, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or("127.0.0.1:5432");
    let cases = [
        // Nothing listens on port 1.
        (
            "postgresql://issuer:hunter2-secret@127.0.0.1:1/licenses".to_owned(),
            "cannot open the database at postgresql://issuer@127.0.0.1:1/licenses",
        ),
        // The database does not exist on a server that answers.
        (
            format!("postgresql://postgres:hunter2-secret@{host_port}/no_such_database_here"),
            "no_such_database_here",
        ),
        (
            "postgresql://issuer:hunter2-secret@db/licenses?sslmode=sometimes".to_owned(),
            "sslmode=sometimes",
        ),
        (
            "postgresql://issuer:hunter2-secret@db".to_owned(),
            "names no database",
        ),
        (
            "mysql://issuer:hunter2-secret@db/x".to_owned(),
            "unknown scheme",
        ),
    ];
    for (url, says) in cases {
        let out = admin_with_env(dir.path(), &["migrate"], &[("DATABASE_URL", &url)]);
        assert!(!out.success(), "{url}: {out}");
        assert!(
            out.all_output().contains(says),
            "{url} should say {says:?}:\n{out}"
        );
        assert!(
            !out.all_output().contains("hunter2-secret"),
            "the password was printed:\n{out}"
        );
    }
    // The URL, password included, may come from a file (a mounted secret).
    let Some(db) = TestDatabase::create(Backend::Postgres, dir.path()) else {
        return;
    };
    let url_file = dir.path().join("database-url");
    std::fs::write(&url_file, format!("{}\n", db.url().unwrap())).unwrap();
    let mut cmd = issuer_command(dir.path(), &[]);
    cmd.env_remove("DATABASE_URL")
        .env("DATABASE_URL_FILE", &url_file)
        .arg("migrate");
    run_with_timeout(cmd, Duration::from_secs(60)).assert_success();
}

#[test]
fn a_backup_taken_while_serving_restores_every_license_and_seat() {
    let dir = data_dir();
    let server = IssuerServer::start(dir.path());
    let license = create_license(
        dir.path(),
        &[
            "--email",
            "backup@example.com",
            "--tier",
            "pilot-professional",
        ],
    );
    let hw = hardware_id("backed-up");
    server
        .post_json(
            ACTIVATE,
            &json!({"license_key": license.key, "hardware_id": hw}),
        )
        .expect_status(201);
    // Activations keep arriving while the copy is made.
    let client = server.client();
    let key = license.key.clone();
    let load = std::thread::spawn(move || {
        for i in 0..40 {
            let hw = hardware_id(&format!("during-backup-{i}"));
            let _ = client.try_post_json(ACTIVATE, &json!({"license_key": key, "hardware_id": hw}));
        }
    });
    let out_dir = data_dir();
    let copy = out_dir.path().join("issuer-backup.sqlite3");
    let copy_arg = copy.to_str().unwrap();
    let made = admin(dir.path(), &["backup", "--out", copy_arg, "--json"]);
    made.assert_success();
    assert_eq!(made.json()["backup"], copy_arg);
    load.join().unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&copy).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the copy is private: {mode:o}");
    }
    // Never over an existing file.
    let again = admin(dir.path(), &["backup", "--out", copy_arg]);
    assert_eq!(again.code, Some(1), "{again}");
    assert!(again.stderr.contains("exists already"), "{again}");
    drop(server);

    // The copy is a whole database: integrity holds and a server runs on it.
    let conn = rusqlite::Connection::open(&copy).unwrap();
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    drop(conn);
    let restored_dir = data_dir();
    let restored_url = format!("sqlite://{}", copy.display());
    // The keys in the copy are found under the pepper they were stored
    // with (in development, the data folder's generated one).
    let pepper = dir.path().join("license-key-pepper");
    let env = [
        ("DATABASE_URL", restored_url.as_str()),
        ("LICENSE_KEY_PEPPER_FILE", pepper.to_str().unwrap()),
    ];
    let restored = IssuerServer::start_with_env(restored_dir.path(), &env);
    restored
        .post_json(
            VALIDATE,
            &json!({"license_key": license.key, "hardware_id": hw}),
        )
        .expect_status(200);
    let out = admin_with_env(
        restored_dir.path(),
        &["license", "show", &license.id, "--json"],
        &env,
    );
    out.assert_success();
    assert_eq!(out.json()["email"], "backup@example.com");
    let original = show_license(dir.path(), &license.id);
    assert!(
        original["devices_used"].as_u64() >= out.json()["devices_used"].as_u64(),
        "the copy is of one moment during the load"
    );

    // Nothing to back up: said, and no file made.
    let empty = data_dir();
    let nothing = admin(empty.path(), &["backup", "--out", "copy.sqlite3"]);
    assert_eq!(nothing.code, Some(1), "{nothing}");
    assert!(nothing.stderr.contains("there is no database"), "{nothing}");
    assert!(!empty.path().join("copy.sqlite3").exists());

    // On PostgreSQL the command points to pg_dump.
    let pg_dir = data_dir();
    if let Some(_db) = TestDatabase::create(Backend::Postgres, pg_dir.path()) {
        let out = admin(pg_dir.path(), &["backup", "--out", "x.sqlite3"]);
        assert_eq!(out.code, Some(1), "{out}");
        assert!(out.stderr.contains("pg_dump"), "{out}");
    }
}

/// In production the server never changes the schema: on a database that
/// was not migrated it refuses to start, saying to run `migrate` (the
/// Cloud Run job) first; after `migrate` it starts.
#[test]
fn in_production_the_server_refuses_an_unmigrated_postgres_until_migrate_runs() {
    let dir = data_dir();
    let Some(db) = TestDatabase::create(Backend::Postgres, dir.path()) else {
        return;
    };
    let key = dir.path().join("production.pem");
    admin(
        dir.path(),
        &["keys", "generate", "--out", key.to_str().unwrap()],
    )
    .assert_success();
    let production = [
        ("CODITECT_ENV", "production"),
        ("JWT_SECRET", "production-test-jwt-secret-0123456789abcdef"),
        (
            "LICENSE_KEY_PEPPER",
            "production-test-key-pepper-0123456789abcdef",
        ),
        ("SIGNING_KEY_FILE", key.to_str().unwrap()),
        ("STRIPE_SECRET_KEY", "sk_test_production_migration"),
        ("STRIPE_WEBHOOK_SECRET", "whsec_production_migration"),
        ("STRIPE_PRICE_STARTER_MONTHLY", "price_sm"),
        ("STRIPE_PRICE_STARTER_ANNUAL", "price_sa"),
        ("STRIPE_PRICE_PRO_MONTHLY", "price_pm"),
        ("STRIPE_PRICE_PRO_ANNUAL", "price_pa"),
        ("SMTP_URL", "smtp://127.0.0.1:1"),
    ];
    let mut cmd = issuer_command(dir.path(), &production);
    cmd.args(["serve", "--bind", "127.0.0.1:0"]);
    let refused = run_with_timeout(cmd, Duration::from_secs(30));
    assert_eq!(refused.code, Some(1), "{refused}");
    assert!(
        refused
            .stderr
            .contains("run `coditect-issuer migrate` first"),
        "{refused}"
    );
    assert!(!refused.stderr.contains("listening on"), "{refused}");
    assert_eq!(
        db.count("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"),
        0,
        "nothing was created"
    );
    admin_with_env(dir.path(), &["migrate"], &production).assert_success();
    let server = IssuerServer::start_with_env(dir.path(), &production);
    assert_eq!(server.get("/readyz").status, 200);
}

/// The database goes away while the issuer serves: requests get 503
/// `database_unavailable` with `Retry-After` (never a 500, never a hang),
/// `/readyz` says not ready while `/healthz` stays up, and when the
/// database is back the issuer recovers on its own.
#[test]
fn a_database_outage_answers_503_and_the_issuer_recovers_on_its_own() {
    let dir = data_dir();
    let Some(db) = TestDatabase::create(Backend::Postgres, dir.path()) else {
        return;
    };
    let direct = db.url().unwrap().to_owned();
    // postgresql://USER@HOST:PORT/DB -> the same through the proxy.
    let (scheme_user, rest) = direct.split_once('@').unwrap();
    let (host_port, path) = rest.split_once('/').unwrap();
    let proxy = coditect_tests::tcp_proxy::TcpProxy::start(host_port);
    let via_proxy = format!("{scheme_user}@{}/{path}", proxy.addr());
    let env = [("DATABASE_URL", via_proxy.as_str())];
    let server = IssuerServer::start_with_env(dir.path(), &env);
    let license = create_license(
        dir.path(),
        &[
            "--email",
            "outage@example.com",
            "--tier",
            "pilot-professional",
        ],
    );
    let hw = hardware_id("through-an-outage");
    let body = json!({"license_key": license.key, "hardware_id": hw});
    server.post_json(ACTIVATE, &body).expect_status(201);
    server.post_json(VALIDATE, &body).expect_status(200);

    proxy.cut();
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let resp = server.post_json(VALIDATE, &body);
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "a request hung for {:?}",
            started.elapsed()
        );
        let problem = resp.expect_problem(503, "database_unavailable");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("try again")
        );
    }
    let raw = ureq::post(&format!("{}{VALIDATE}", server.base_url()))
        .config()
        .http_status_as_error(false)
        .build()
        .header("content-type", "application/json")
        .send(body.to_string())
        .unwrap();
    assert_eq!(raw.status(), 503);
    assert_eq!(
        raw.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("5")
    );
    // Without its database the instance is not ready (README), but alive.
    let not_ready = server.get("/readyz").expect_problem(503, "not_ready");
    assert_eq!(
        not_ready["detail"], "The database is not reachable.",
        "{not_ready}"
    );
    assert_eq!(server.get("/healthz").status, 200);
    assert!(
        !server.log().contains("internal error"),
        "an outage is not an internal error:\n{}",
        server.log()
    );

    proxy.restore();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let resp = server.post_json(VALIDATE, &body);
        if resp.status == 200 {
            break;
        }
        assert_eq!(resp.status, 503, "{}", resp.body);
        assert!(
            std::time::Instant::now() < deadline,
            "the issuer did not recover\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(server.get("/readyz").status, 200);
}
