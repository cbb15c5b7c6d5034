//! A real OpenID provider for the sign-in tests: `tests/oidc/provider.mjs`
//! (the `oidc-provider` package, installed by `scripts/oidc-provider.sh`)
//! run by node on a free loopback port. It signs in the account named by
//! the authorization request's `login_hint` and consents at once.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::json;

use crate::{missing_tool, repo_file};

pub const CLIENT_ID: &str = "coditect-web";
pub const CLIENT_SECRET: &str = "coditect-web-secret-for-tests";
/// Another application registered at the provider.
pub const OTHER_CLIENT_ID: &str = "another-application";

/// The running provider; dropping it stops node.
pub struct OidcProvider {
    child: Child,
    issuer: String,
    clients_file: PathBuf,
    _dir: tempfile_dir::Dir,
}

/// A folder removed on drop (the tests crate has tempfile only as a
/// dev-dependency).
mod tempfile_dir {
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl OidcProvider {
    /// Starts the provider, or `None` (after [`missing_tool`]) when node or
    /// the installed package is missing.
    pub fn start(test: &str) -> Option<OidcProvider> {
        let script = repo_file("tests/oidc/provider.mjs");
        if !repo_file("tests/oidc/node_modules/oidc-provider").is_dir() {
            missing_tool(
                test,
                "the oidc-provider package is not installed",
                "Run scripts/oidc-provider.sh (scripts/test.sh does)",
            );
            return None;
        }
        static STARTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("coditect-oidc-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the provider's folder");
        let clients_file = dir.join("clients.json");
        std::fs::write(&clients_file, "[]").expect("write the clients file");
        let child = Command::new("node")
            .arg(&script)
            .env("OIDC_CLIENTS_FILE", &clients_file)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                missing_tool(
                    test,
                    &format!("cannot run node: {e}"),
                    "Install Node.js 20 or later",
                );
                return None;
            }
        };
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("listening on ") {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        let issuer = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the OpenID provider prints its address");
        Some(OidcProvider {
            child,
            issuer,
            clients_file,
            _dir: tempfile_dir::Dir(dir),
        })
    }

    /// The issuer URL (`GOOGLE_ISSUER_URL`).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Registers the issuer at `issuer_base` as the client (before the
    /// provider's first request), and [`OTHER_CLIENT_ID`], another
    /// application with the same redirect URI (codes issued to it must not
    /// sign anyone in to ours).
    pub fn register(&self, issuer_base: &str) {
        let redirect = format!("{}/auth/google/callback", issuer_base.trim_end_matches('/'));
        let clients = json!([
            {
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "redirect_uris": [redirect],
                "grant_types": ["authorization_code"],
                "response_types": ["code"],
            },
            {
                "client_id": OTHER_CLIENT_ID,
                "client_secret": "another-application-secret",
                "redirect_uris": [redirect],
                "grant_types": ["authorization_code"],
                "response_types": ["code"],
            },
        ]);
        std::fs::write(&self.clients_file, clients.to_string()).expect("write the clients file");
    }

    /// The issuer's environment for this provider.
    pub fn issuer_env(&self) -> Vec<(String, String)> {
        vec![
            ("GOOGLE_CLIENT_ID".into(), CLIENT_ID.into()),
            ("GOOGLE_CLIENT_SECRET".into(), CLIENT_SECRET.into()),
            ("GOOGLE_ISSUER_URL".into(), self.issuer.clone()),
        ]
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
