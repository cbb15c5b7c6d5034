//! Secrets at rest, and the bugs found on the way (issue 13, items 11–14),
//! against the real `coditect-issuer` and `coditect` binaries:
//!
//! - 11: license keys are stored as HMAC-SHA256 under `LICENSE_KEY_PEPPER`;
//!   a database from before the pepper keeps its keys; a wrong pepper finds
//!   nothing and changes nothing; production refuses to start without one.
//! - 12: a fresh data folder is 0700, the database and its WAL and SHM 0600,
//!   whatever the umask; a folder the operator chose keeps its mode.
//! - 13: an organization name is limited in bytes (the token's limit): a
//!   longer one is refused and creates nothing; the longest accepted one
//!   activates.
//! - 14: an offline activation request leaves the folder it is written to
//!   as it was.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use coditect_tests::cli::{Cli, unused_port};
use coditect_tests::database::{Backend, TestDatabase};
use coditect_tests::issuer::{
    Client, CommandOutput, IssuerServer, admin_with_env, decode_token, hardware_id, issuer_command,
    key_ring_from_jwks, run_with_timeout, unix_now,
};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

const ACTIVATE: &str = "/api/v1/licenses/activate";
const VALIDATE: &str = "/api/v1/licenses/validate";
const PEPPER: &str = "e2e-pepper-0123456789abcdef0123456789abcdef";
const OTHER_PEPPER: &str = "e2e-other-pepper-fedcba9876543210fedcba98";

fn data_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("coditect-secrets-e2e-")
        .tempdir()
        .expect("a temporary data directory")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// The hash the issuer stored before the pepper: hex(SHA-256(key)).
fn unkeyed_hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// What the issuer stores now: hex(HMAC-SHA256(pepper, SHA-256(key))).
fn peppered_hash(pepper: &str, key: &str) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(pepper.as_bytes()).expect("any key");
    mac.update(&Sha256::digest(key.as_bytes()));
    hex::encode(mac.finalize().into_bytes())
}

/// `license create … --json` with `env`; returns the id and the key.
fn create_license(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> (String, String) {
    let mut all = vec!["license", "create"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = admin_with_env(dir, &all, env);
    out.assert_success();
    let json = out.json();
    (
        json["id"].as_str().expect("an id").to_owned(),
        json["key"].as_str().expect("a key").to_owned(),
    )
}

fn activate(client: &Client, key: &str, machine: &str) -> coditect_tests::issuer::HttpResponse {
    client.post_json(
        ACTIVATE,
        &json!({"license_key": key, "hardware_id": hardware_id(machine), "machine_name": machine}),
    )
}

fn validate(client: &Client, key: &str, machine: &str) -> coditect_tests::issuer::HttpResponse {
    client.post_json(
        VALIDATE,
        &json!({"license_key": key, "hardware_id": hardware_id(machine)}),
    )
}

// ---------------------------------------------------------------------
// 11. License keys under a pepper
// ---------------------------------------------------------------------

/// The database holds the peppered hash of a key and nothing it could be
/// searched for on its own: not the key, not its SHA-256 (as text or
/// bytes), in the rows and, on SQLite, anywhere in the files.
fn the_database_holds_only_the_peppered_hash_of_a_key(backend: Backend) {
    let dir = data_dir();
    let Some(db) = TestDatabase::create(backend, dir.path()) else {
        return;
    };
    let env = [("LICENSE_KEY_PEPPER", PEPPER)];
    let (_, key) = create_license(
        dir.path(),
        &env,
        &[
            "--email",
            "pepper@example.com",
            "--tier",
            "pilot-professional",
        ],
    );
    {
        let server = IssuerServer::start_with_env(dir.path(), &env);
        activate(&server.client(), &key, "pepper-machine").expect_status(201);
        assert!(!server.log().contains(PEPPER), "the pepper is never logged");
    }
    let row = db.one("SELECT key_hash, key_hash_version FROM licenses");
    assert_eq!(row["key_hash"], json!(peppered_hash(PEPPER, &key)));
    assert_eq!(row["key_hash_version"], json!(2));
    let unkeyed = unkeyed_hash(&key);
    let mut dump = String::new();
    for table in ["licenses", "activations", "audit_log", "email_outbox"] {
        dump.push_str(&serde_json::to_string(&db.rows(&format!("SELECT * FROM {table}"))).unwrap());
    }
    assert!(!dump.contains(&unkeyed), "SHA-256(key) is in the rows");
    assert!(!dump.contains(&key), "the key is in the rows");
    if backend == Backend::Sqlite {
        let digest = Sha256::digest(key.as_bytes());
        for file in ["issuer.sqlite3", "issuer.sqlite3-wal"] {
            let Ok(bytes) = std::fs::read(dir.path().join(file)) else {
                continue;
            };
            for (what, needle) in [
                ("SHA-256(key) as text", unkeyed.as_bytes()),
                ("SHA-256(key) as bytes", digest.as_slice()),
                ("the key", key.as_bytes()),
            ] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle),
                    "{what} is in {file}"
                );
            }
        }
    }
}

/// A database whose rows hold the hash from before the pepper
/// (hex(SHA-256(key)), `key_hash_version` 1: what the migration gives
/// existing rows, and what an older issuer still writes during an
/// upgrade) keeps working: `migrate` converts such rows, and so does the
/// server as it starts; the keys then activate, and the unkeyed hash is
/// gone.
fn a_database_from_before_the_pepper_keeps_its_keys(backend: Backend) {
    let dir = data_dir();
    let Some(db) = TestDatabase::create(backend, dir.path()) else {
        return;
    };
    let env = [("LICENSE_KEY_PEPPER", PEPPER)];
    let org = "Legacy & Söhne";
    let (first_id, first) = create_license(
        dir.path(),
        &env,
        &[
            "--email",
            "legacy@example.com",
            "--tier",
            "pilot-professional",
            "--org",
            org,
        ],
    );
    let (second_id, second) = create_license(
        dir.path(),
        &env,
        &["--email", "legacy2@example.com", "--tier", "pilot-starter"],
    );
    // The old scheme, written as the old issuer did.
    for (id, key) in [(&first_id, &first), (&second_id, &second)] {
        db.execute(&format!(
            "UPDATE licenses SET key_hash = '{}', key_hash_version = 1 WHERE id = '{id}'",
            unkeyed_hash(key)
        ));
    }
    // `coditect-issuer migrate` converts them (the release's migrate step).
    admin_with_env(dir.path(), &["migrate"], &env).assert_success();
    assert_eq!(
        db.count("SELECT count(*) FROM licenses WHERE key_hash_version = 1"),
        0
    );
    // A row an older issuer writes after the migrate step is converted by
    // the next server start.
    db.execute(&format!(
        "UPDATE licenses SET key_hash = '{}', key_hash_version = 1 WHERE id = '{second_id}'",
        unkeyed_hash(&second)
    ));
    let server = IssuerServer::start_with_env(dir.path(), &env);
    let client = server.client();
    for (id, key) in [(&first_id, &first), (&second_id, &second)] {
        let row = db.one(&format!(
            "SELECT key_hash, key_hash_version FROM licenses WHERE id = '{id}'"
        ));
        assert_eq!(row["key_hash"], json!(peppered_hash(PEPPER, key)), "{id}");
        assert_eq!(row["key_hash_version"], json!(2), "{id}");
        let body = activate(&client, key, "upgraded-machine").expect_status(201);
        assert_eq!(body["license"]["id"], json!(id));
    }
    // The token of the upgraded license verifies and names its holder.
    let body = validate(&client, &first, "upgraded-machine").expect_status(200);
    let ring = key_ring_from_jwks(&client.get("/api/v1/keys").expect_status(200));
    let token = decode_token(body["token"]["token"].as_str().expect("a token"));
    let hw = verifier::HardwareId::from_machine_id("upgraded-machine");
    let claims = verifier::verify(&token, &ring, unix_now(), &hw).expect("the token verifies");
    assert_eq!(claims.organization, org);
    let dump = serde_json::to_string(&db.rows("SELECT * FROM licenses")).unwrap();
    for key in [&first, &second] {
        assert!(
            !dump.contains(&unkeyed_hash(key)),
            "an unkeyed hash is left"
        );
    }
}

/// Under another pepper no key is found (404 `license_not_found`, for
/// activation and renewal alike), and nothing changes: no activation, no
/// changed license row. Under the right pepper again, all is as before.
fn a_wrong_pepper_finds_no_key_and_changes_nothing(backend: Backend) {
    let dir = data_dir();
    let Some(db) = TestDatabase::create(backend, dir.path()) else {
        return;
    };
    let right = [("LICENSE_KEY_PEPPER", PEPPER)];
    let wrong = [("LICENSE_KEY_PEPPER", OTHER_PEPPER)];
    let (_, key) = create_license(
        dir.path(),
        &right,
        &[
            "--email",
            "wrong@example.com",
            "--tier",
            "pilot-professional",
        ],
    );
    {
        let server = IssuerServer::start_with_env(dir.path(), &right);
        activate(&server.client(), &key, "first-machine").expect_status(201);
    }
    let licenses = "SELECT id, key_hash, key_hash_version, status, expires_at FROM licenses";
    let activations =
        "SELECT id, license_id, hardware_id, status, last_validated_at FROM activations";
    let (licenses_before, activations_before) = (db.rows(licenses), db.rows(activations));
    {
        let server = IssuerServer::start_with_env(dir.path(), &wrong);
        let client = server.client();
        let refused =
            activate(&client, &key, "second-machine").expect_problem(404, "license_not_found");
        assert!(!refused.to_string().contains(&key), "{refused}");
        validate(&client, &key, "first-machine").expect_problem(404, "license_not_found");
        let log = server.log();
        assert!(
            !log.contains(PEPPER) && !log.contains(OTHER_PEPPER),
            "{log}"
        );
    }
    assert_eq!(db.rows(licenses), licenses_before, "a license row changed");
    assert_eq!(
        db.rows(activations),
        activations_before,
        "an activation changed"
    );
    let server = IssuerServer::start_with_env(dir.path(), &right);
    validate(&server.client(), &key, "first-machine").expect_status(200);
}

coditect_tests::on_both_backends!(
    the_database_holds_only_the_peppered_hash_of_a_key,
    a_database_from_before_the_pepper_keeps_its_keys,
    a_wrong_pepper_finds_no_key_and_changes_nothing,
);

/// Everything production needs, but the pepper.
fn production_env(dir: &Path) -> Vec<(String, String)> {
    let key = dir.join("production.pem");
    admin_with_env(
        dir,
        &[
            "keys",
            "generate",
            "--out",
            key.to_str().expect("a UTF-8 path"),
        ],
        &[],
    )
    .assert_success();
    [
        ("CODITECT_ENV", "production"),
        ("JWT_SECRET", "production-test-jwt-secret-0123456789abcdef"),
        ("SIGNING_KEY_FILE", key.to_str().expect("a UTF-8 path")),
        ("STRIPE_SECRET_KEY", "sk_test_pepper"),
        ("STRIPE_WEBHOOK_SECRET", "whsec_pepper"),
        ("STRIPE_PRICE_STARTER_MONTHLY", "price_sm"),
        ("STRIPE_PRICE_STARTER_ANNUAL", "price_sa"),
        ("STRIPE_PRICE_PRO_MONTHLY", "price_pm"),
        ("STRIPE_PRICE_PRO_ANNUAL", "price_pa"),
        ("SMTP_URL", "smtp://127.0.0.1:1"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

fn serve_once(dir: &Path, env: &[(String, String)]) -> CommandOutput {
    let env = coditect_tests::issuer::env_refs(env);
    let mut cmd = issuer_command(dir, &env);
    cmd.args(["serve", "--bind", "127.0.0.1:0"]);
    run_with_timeout(cmd, Duration::from_secs(20))
}

/// Production refuses to start without a pepper, or with one under 32
/// bytes: exit 1 naming the variable, never its value, before anything is
/// opened or generated. With a pepper from `LICENSE_KEY_PEPPER_FILE` it
/// starts.
#[test]
fn production_without_a_pepper_refuses_to_start_and_creates_nothing() {
    let dir = data_dir();
    let env = production_env(dir.path());
    let before: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let short = "tiny-pepper-7f3a";
    for extra in [None, Some(("LICENSE_KEY_PEPPER", short))] {
        let mut env = env.clone();
        env.extend(extra.map(|(k, v)| (k.to_owned(), v.to_owned())));
        let out = serve_once(dir.path(), &env);
        assert_eq!(out.code, Some(1), "{out}");
        assert!(out.stderr.contains("LICENSE_KEY_PEPPER"), "{out}");
        assert!(!out.stderr.contains("listening on"), "{out}");
        assert!(
            !out.all_output().contains(short),
            "the pepper was printed:\n{out}"
        );
    }
    let after: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(before, after, "a refused start left files behind");
    assert!(!dir.path().join("issuer.sqlite3").exists());
    assert!(!dir.path().join("license-key-pepper").exists());
    // From a file, a pepper of 32 bytes or more is accepted: it starts.
    let file = dir.path().join("pepper");
    std::fs::write(&file, format!("{PEPPER}\n")).unwrap();
    let mut env = env;
    env.push((
        "LICENSE_KEY_PEPPER_FILE".into(),
        file.to_str().unwrap().to_owned(),
    ));
    let server = IssuerServer::start_with_env(dir.path(), &coditect_tests::issuer::env_refs(&env));
    server.get("/readyz").expect_status(200);
    assert!(!server.log().contains(PEPPER), "the pepper was logged");
}

// ---------------------------------------------------------------------
// 12. The database's files are the owner's only
// ---------------------------------------------------------------------

/// A process that is killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `base` (an issuer command with its environment) run under `umask 022`
/// by a shell, with `args`.
fn under_umask_022(base: &Command, args: &[&str]) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("umask 022 && exec \"$@\"")
        .arg("sh")
        .arg(base.get_program())
        .args(args);
    for (name, value) in base.get_envs() {
        match value {
            Some(v) => cmd.env(name, v),
            None => cmd.env_remove(name),
        };
    }
    if let Some(dir) = base.get_current_dir() {
        cmd.current_dir(dir);
    }
    cmd
}

/// The real issuer, started under `umask 022` with a data folder that does
/// not exist yet, makes it 0700 (and the folder above it, which it also
/// made), its database, WAL and SHM 0600, and its generated secrets 0600;
/// the folder the operator gave, which existed, keeps its mode. A database
/// named in a shared (sticky, world-writable) folder is 0600 and leaves
/// that folder as it was.
#[test]
fn a_fresh_data_folder_and_its_database_files_are_owner_only_under_umask_022() {
    let parent = data_dir();
    set_mode(parent.path(), 0o755);
    let made = parent.path().join("fresh");
    let data = made.join("data");
    let data_text = data.to_str().unwrap();
    let base = issuer_command(parent.path(), &[("CODITECT_DATA_DIR", data_text)]);
    let port = unused_port();
    let bind = format!("127.0.0.1:{port}");
    let mut cmd = under_umask_022(&base, &["serve", "--bind", &bind]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _server = Running(cmd.spawn().expect("start the issuer"));
    let client = Client::new(&format!("http://{bind}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !client.try_get("/readyz").is_ok_and(|r| r.status == 200) {
        assert!(Instant::now() < deadline, "the issuer did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A write, so the WAL holds something.
    client
        .post_json(
            "/api/v1/auth/signup",
            &json!({"email": "umask@example.com", "password": "correct horse battery", "company_name": "Umask"}),
        )
        .expect_status(202);
    assert_eq!(mode(parent.path()), 0o755, "an existing folder changed");
    assert_eq!(mode(&made), 0o700);
    assert_eq!(mode(&data), 0o700);
    for file in [
        "issuer.sqlite3",
        "issuer.sqlite3-wal",
        "issuer.sqlite3-shm",
        "jwt-secret",
        "license-key-pepper",
    ] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }

    // A database in a shared folder: the file is private, the folder as
    // it was (its sticky bit too).
    let shared = data_dir();
    set_mode(shared.path(), 0o1777);
    let url = format!("sqlite://{}/shared.sqlite3", shared.path().display());
    let base = issuer_command(
        parent.path(),
        &[("DATABASE_URL", &url), ("CODITECT_DATA_DIR", data_text)],
    );
    let out = run_with_timeout(
        under_umask_022(&base, &["migrate"]),
        Duration::from_secs(30),
    );
    out.assert_success();
    assert_eq!(mode(shared.path()), 0o1777, "the shared folder changed");
    assert_eq!(mode(&shared.path().join("shared.sqlite3")), 0o600);
}

// ---------------------------------------------------------------------
// 13. Organization names fit the token
// ---------------------------------------------------------------------

/// 255 two-byte characters (510 bytes) passed the old check, counted in
/// characters, and made a license that could never be activated (500).
/// Now signup refuses it with 422 `invalid_field` naming `company_name`,
/// and `license create --org` with exit 1, and neither creates anything;
/// the longest name that is accepted (255 bytes) activates, and its token
/// carries the name.
fn an_organization_name_too_long_in_bytes_is_refused_and_creates_nothing(backend: Backend) {
    let dir = data_dir();
    let Some(db) = TestDatabase::create(backend, dir.path()) else {
        return;
    };
    let server = IssuerServer::start(dir.path());
    let client = server.client();
    let counts = || {
        (
            db.count("SELECT count(*) FROM organizations"),
            db.count("SELECT count(*) FROM users"),
            db.count("SELECT count(*) FROM licenses"),
        )
    };
    for too_long in ["é".repeat(255), "é".repeat(128), "😀".repeat(64)] {
        let problem = client
            .post_json(
                "/api/v1/auth/signup",
                &json!({"email": "long@example.com", "password": "correct horse battery", "company_name": too_long}),
            )
            .expect_problem(422, "invalid_field");
        assert_eq!(problem["field"], json!("company_name"), "{problem}");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("bytes"),
            "{problem}"
        );
        let out = admin_with_env(
            dir.path(),
            &[
                "license",
                "create",
                "--email",
                "long@example.com",
                "--tier",
                "pilot-starter",
                "--org",
                &too_long,
            ],
            &[],
        );
        assert_eq!(out.code, Some(1), "{out}");
        assert!(out.stderr.contains("--org"), "{out}");
        assert_eq!(counts(), (0, 0, 0), "something was created");
    }
    let longest = format!("{}x", "é".repeat(127));
    assert_eq!(longest.len(), 255);
    let (_, key) = create_license(
        dir.path(),
        &[],
        &[
            "--email",
            "longest@example.com",
            "--tier",
            "pilot-starter",
            "--org",
            &longest,
        ],
    );
    let body = activate(&client, &key, "longest-name-machine").expect_status(201);
    let ring = key_ring_from_jwks(&client.get("/api/v1/keys").expect_status(200));
    let token = decode_token(body["token"]["token"].as_str().expect("a token"));
    let hw = verifier::HardwareId::from_machine_id("longest-name-machine");
    let claims = verifier::verify(&token, &ring, unix_now(), &hw).expect("the token verifies");
    assert_eq!(claims.organization, longest);
    client
        .post_json(
            "/api/v1/auth/signup",
            &json!({"email": "longest@example.com", "password": "correct horse battery", "company_name": longest}),
        )
        .expect_status(202);
    assert_eq!(counts(), (2, 1, 1));
}

coditect_tests::on_both_backends!(
    an_organization_name_too_long_in_bytes_is_refused_and_creates_nothing
);

// ---------------------------------------------------------------------
// 14. An offline request leaves its folder alone
// ---------------------------------------------------------------------

/// `coditect activate --offline-request FILE` into a shared sticky folder
/// (mode 1777, like /tmp), named by an absolute path and by a relative
/// one: the request is written owner-only (0600), and the folder keeps
/// its mode, sticky bit included. Before, it was made 0700.
#[test]
fn an_offline_request_leaves_the_sticky_folder_it_is_written_to_as_it_was() {
    let shared = data_dir();
    set_mode(shared.path(), 0o1777);
    let key = "CODITECT-PILOT-ABCD-EFGH-JKMN";
    let cli = Cli::new();
    let absolute = shared.path().join("req.json");
    let out = cli.run(&[
        "activate",
        key,
        "--offline-request",
        absolute.to_str().unwrap(),
    ]);
    out.assert_success();
    assert_eq!(mode(shared.path()), 0o1777, "the folder's mode changed");
    assert_eq!(mode(&absolute), 0o600);
    let request: Value = serde_json::from_slice(&std::fs::read(&absolute).unwrap()).unwrap();
    assert_eq!(request["license_key"], json!(key));

    // Relative to a working folder that is itself shared.
    let cli = Cli::new();
    let mut cmd = cli.command(&["activate", key, "--offline-request", "relative.json"]);
    cmd.current_dir(shared.path());
    let out = coditect_tests::issuer::run_process(cmd, None, Duration::from_secs(30));
    out.assert_success();
    assert_eq!(mode(shared.path()), 0o1777, "the folder's mode changed");
    assert_eq!(mode(&shared.path().join("relative.json")), 0o600);
}
