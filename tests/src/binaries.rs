//! Finding and building the workspace's binaries from a test.
//!
//! Cargo sets `CARGO_BIN_EXE_*` only for binaries of the test's own package,
//! so the tests here build `coditect-issuer` and `coditect` themselves, in
//! the profile the test binary itself came from. A build with features (the
//! test CLI: `dev-keys`, `test-hooks`) goes to a target folder of its own,
//! `<target>/e2e`, so `<target>/<profile>/coditect` is only ever what a
//! plain `cargo build` makes: `cargo test --release` must not leave a test
//! CLI where the release build is expected.

use std::path::PathBuf;
use std::process::{Command, ExitStatus};

use crate::repo_root;

/// The target directory and profile name this test binary lives in
/// (`<target>/<profile>/deps/<test>`), honouring `CARGO_TARGET_DIR`.
pub fn target_dir_and_profile() -> (PathBuf, String) {
    let from_exe = std::env::current_exe().ok().and_then(|exe| {
        let deps = exe.parent()?;
        if deps.file_name()? != "deps" {
            return None;
        }
        let profile_dir = deps.parent()?;
        let profile = profile_dir.file_name()?.to_str()?.to_owned();
        Some((profile_dir.parent()?.to_path_buf(), profile))
    });
    if let Some(found) = from_exe {
        return found;
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| {
            if p.is_relative() {
                repo_root().join(p)
            } else {
                p
            }
        })
        .unwrap_or_else(|| repo_root().join("target"));
    (target, "debug".to_owned())
}

/// The target folder of builds with `features` (see the module's text).
fn target_dir_for(features: Option<&str>) -> (PathBuf, String) {
    let (target_dir, profile) = target_dir_and_profile();
    match features {
        None => (target_dir, profile),
        Some(_) => (target_dir.join(TEST_BUILDS), profile),
    }
}

/// The target folder (under this test's) of builds with features.
pub const TEST_BUILDS: &str = "e2e";

/// Where [`cargo_build`] puts binary `bin` built with `features`.
pub fn built_path(bin: &str, features: Option<&str>) -> PathBuf {
    let (target_dir, profile) = target_dir_for(features);
    target_dir
        .join(profile)
        .join(format!("{bin}{}", std::env::consts::EXE_SUFFIX))
}

/// `cargo build -p PACKAGE --bin BIN [--features F]` in the profile of this
/// test, into its target directory, or with features into
/// `<target>/e2e`.
pub fn cargo_build(
    package: &str,
    bin: &str,
    features: Option<&str>,
) -> std::io::Result<ExitStatus> {
    let (target_dir, profile) = target_dir_for(features);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(repo_root())
        .args(["build", "--quiet", "-p", package, "--bin", bin])
        .arg("--target-dir")
        .arg(&target_dir);
    if let Some(features) = features {
        cmd.args(["--features", features]);
    }
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    cmd.status()
}
