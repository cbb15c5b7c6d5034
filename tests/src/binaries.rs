//! Finding and building the workspace's binaries from a test.
//!
//! Cargo sets `CARGO_BIN_EXE_*` only for binaries of the test's own package,
//! so the tests here build `coditect-issuer` and `coditect` themselves, into
//! the target directory and profile the test binary itself came from.

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

/// Where `cargo build` puts binary `bin` for this target directory and profile.
pub fn built_path(bin: &str) -> PathBuf {
    let (target_dir, profile) = target_dir_and_profile();
    target_dir
        .join(profile)
        .join(format!("{bin}{}", std::env::consts::EXE_SUFFIX))
}

/// `cargo build -p PACKAGE --bin BIN [--features F]` into the target
/// directory and profile of this test.
pub fn cargo_build(
    package: &str,
    bin: &str,
    features: Option<&str>,
) -> std::io::Result<ExitStatus> {
    let (target_dir, profile) = target_dir_and_profile();
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
