//! The CLI's release packaging (issue 13, item 15): test builds of the CLI
//! (`dev-keys`, `test-hooks`) never land where `cargo build` puts the CLI,
//! and `scripts/package-cli.sh` refuses any binary whose `--version`
//! reports a development build, packaging nothing. The check is run on the
//! debug binaries the tests build anyway (a release build would cost
//! minutes); it is the same script the release packaging runs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use coditect_tests::binaries::{TEST_BUILDS, built_path, cargo_build, target_dir_and_profile};
use coditect_tests::cli::{CLI_FEATURES, cli_bin};
use coditect_tests::issuer::{CommandOutput, run_process};
use coditect_tests::repo_file;

const TIMEOUT: Duration = Duration::from_secs(120);

fn script(name: &str, args: &[&std::ffi::OsStr]) -> CommandOutput {
    let mut cmd = Command::new("bash");
    cmd.arg(repo_file(&format!("scripts/{name}"))).args(args);
    run_process(cmd, None, TIMEOUT)
}

fn check(bin: &Path) -> CommandOutput {
    script("check-distribution-cli.sh", &[bin.as_os_str()])
}

fn package(bin: &Path, out: &Path) -> CommandOutput {
    script(
        "package-cli.sh",
        &[
            "--binary".as_ref(),
            bin.as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
        ],
    )
}

/// The distribution build of the CLI (no features), where `cargo build`
/// puts it.
fn distribution_cli() -> PathBuf {
    let status = cargo_build("coditect-cli", "coditect", None);
    assert!(
        matches!(&status, Ok(s) if s.success()),
        "cannot build the CLI: {status:?}"
    );
    built_path("coditect", None)
}

fn files_in(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The test build says what it is (`dev-keys`, `test-hooks`); the check
/// refuses it (exit 1, saying why and how to build the right one), and
/// packaging it stops before anything is written.
#[test]
fn the_packaging_refuses_a_test_build_of_the_cli_and_writes_nothing() {
    let test_build = cli_bin();
    let out = check(&test_build);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("not a distribution build"), "{out}");
    assert!(out.stderr.contains("cargo build --release"), "{out}");
    let version = run_process(
        {
            let mut c = Command::new(&test_build);
            c.arg("--version");
            c
        },
        None,
        TIMEOUT,
    );
    for feature in ["dev-keys", "test-hooks"] {
        assert!(version.stdout.contains(feature), "{version}");
    }
    let dist = tempfile::tempdir().unwrap();
    let out_dir = dist.path().join("dist");
    let out = package(&test_build, &out_dir);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("refused"), "{out}");
    assert_eq!(
        files_in(&out_dir),
        Vec::<String>::new(),
        "something was packaged"
    );
}

/// The distribution build passes the check and is packaged: a tarball
/// named after the version and platform, with its SHA-256 beside it.
#[test]
fn the_packaging_accepts_the_distribution_build() {
    let bin = distribution_cli();
    let out = check(&bin);
    assert_eq!(out.code, Some(0), "{out}");
    let dist = tempfile::tempdir().unwrap();
    let out = package(&bin, dist.path());
    assert_eq!(out.code, Some(0), "{out}");
    let mut files = files_in(dist.path());
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(
        files[0].starts_with(&format!("coditect-{}-", env!("CARGO_PKG_VERSION")))
            && files[0].ends_with(".tar.gz"),
        "{files:?}"
    );
    let mut sum = Command::new("sha256sum");
    sum.arg("-c").arg(&files[1]).current_dir(dist.path());
    let verified = run_process(sum, None, TIMEOUT);
    assert_eq!(verified.code, Some(0), "{verified}");
}

/// A test build goes to `<target>/e2e`, so the CLI where `cargo build`
/// puts it (`<target>/<profile>/coditect`, what `cargo test --release`
/// left a test build at) stays a distribution build, and each keeps what
/// it is whichever is built last.
#[test]
fn test_builds_of_the_cli_never_land_where_cargo_build_puts_it() {
    let (target, profile) = target_dir_and_profile();
    let test_build = built_path("coditect", Some(CLI_FEATURES));
    assert_eq!(
        test_build.parent().unwrap(),
        target.join(TEST_BUILDS).join(&profile)
    );
    let _ = cli_bin();
    let distribution = distribution_cli();
    assert_eq!(distribution.parent().unwrap(), target.join(&profile));
    assert_eq!(check(&distribution).code, Some(0));
    assert_eq!(check(&test_build).code, Some(1));
}

/// Writes an offline activation request with `bin`, the test hooks' two
/// variables set; returns the request, or the failed run.
fn offline_request_with_hooks_set(bin: &Path, dir: &Path) -> Result<serde_json::Value, String> {
    let file = dir.join(format!(
        "request-{}.json",
        bin.parent()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("CODITECT_HOME", dir.join("home"))
        .env("CODITECT_TEST_NOW", "1000")
        .env("CODITECT_TEST_MACHINE_ID", "hooked-machine")
        .args(["activate", "CODITECT-PILOT-AAAA-BBBB-CCCC", "--name", "n"])
        .arg("--offline-request")
        .arg(&file);
    let out = run_process(cmd, None, TIMEOUT);
    if !out.success() {
        return Err(out.all_output());
    }
    let text = std::fs::read_to_string(&file).map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

/// A distribution build has no switch that moves its clock or its machine
/// id: with CODITECT_TEST_NOW and CODITECT_TEST_MACHINE_ID set, its offline
/// request carries the real time and this machine's id, where a test build
/// (the contrast that shows the variables are read at all) takes both.
#[test]
fn a_distribution_build_ignores_the_test_hooks_variables() {
    let dir = tempfile::tempdir().unwrap();
    let hooked = verifier::HardwareId::from_machine_id("hooked-machine").to_hex();

    let test_build = offline_request_with_hooks_set(&cli_bin(), dir.path())
        .expect("the test build writes a request");
    assert_eq!(test_build["hardware_id"], hooked.as_str());
    assert_eq!(test_build["created_at"], "1970-01-01T00:16:40Z");

    match offline_request_with_hooks_set(&distribution_cli(), dir.path()) {
        Ok(request) => {
            assert_ne!(request["hardware_id"], hooked.as_str(), "{request}");
            let year: u32 = request["created_at"].as_str().unwrap_or_default()[..4]
                .parse()
                .expect("a year");
            assert!(year >= 2026, "the real clock: {request}");
        }
        // A machine without a machine id: refused, not the variable's id.
        Err(output) => assert!(
            output.contains("no_machine_id") || output.contains("machine's id"),
            "{output}"
        ),
    }
}
