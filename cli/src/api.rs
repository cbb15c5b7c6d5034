//! The issuer's HTTP API, as the CLI uses it.

use std::time::Duration;

use serde_json::{Value, json};

use crate::error::{CliError, CliResult};

/// The default issuer of this build.
pub const DEFAULT_SERVER: &str = if cfg!(feature = "dev-keys") {
    "http://127.0.0.1:8080"
} else {
    "https://api.coditect.ai"
};

/// Timeout of a renewal attempted in the background of a normal command.
pub const BACKGROUND_TIMEOUT: Duration = Duration::from_secs(3);
/// Timeout of commands whose whole point is the network.
pub const FOREGROUND_TIMEOUT: Duration = Duration::from_secs(20);

/// What the issuer answered.
#[derive(Debug)]
pub enum Reply {
    Ok(Value),
    /// A problem document: the issuer refused.
    Refused {
        status: u16,
        code: String,
        detail: String,
    },
}

/// A client for one issuer.
pub struct Client {
    base: String,
    agent: ureq::Agent,
}

impl Client {
    pub fn new(base: &str, timeout: Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .user_agent(concat!("coditect/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Client {
            base: base.trim_end_matches('/').to_owned(),
            agent,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    fn unreachable(&self, e: &ureq::Error) -> CliError {
        CliError::user(
            "server_unreachable",
            format!("cannot reach the license server at {}: {e}", self.base),
            Some(
                "check your network connection, or the address given with --server / CODITECT_API_URL"
                    .to_owned(),
            ),
        )
    }

    fn read(
        &self,
        resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> CliResult<Reply> {
        let mut resp = resp.map_err(|e| self.unreachable(&e))?;
        let status = resp.status().as_u16();
        let body: Value = resp
            .body_mut()
            .with_config()
            .limit(1024 * 1024)
            .read_json()
            .unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            return Ok(Reply::Ok(body));
        }
        let code = body["code"].as_str().map(str::to_owned);
        let detail = body["detail"].as_str().map(str::to_owned);
        match (code, detail) {
            (Some(code), Some(detail)) => Ok(Reply::Refused {
                status,
                code,
                detail,
            }),
            _ => Err(CliError::user(
                "server_error",
                format!("the license server at {} answered HTTP {status}", self.base),
                Some("try again later; if it persists, contact support".to_owned()),
            )),
        }
    }

    pub fn post(&self, path: &str, body: &Value) -> CliResult<Reply> {
        self.read(self.agent.post(&self.url(path)).send_json(body))
    }

    pub fn post_authorized(&self, path: &str, bearer: &str) -> CliResult<Reply> {
        self.read(
            self.agent
                .post(&self.url(path))
                .header("authorization", &format!("Bearer {bearer}"))
                .send_empty(),
        )
    }

    pub fn get_authorized(&self, path: &str, bearer: &str) -> CliResult<Reply> {
        self.read(
            self.agent
                .get(&self.url(path))
                .header("authorization", &format!("Bearer {bearer}"))
                .call(),
        )
    }

    pub fn activate(&self, key: &str, hardware_id: &str, machine_name: &str) -> CliResult<Reply> {
        self.post(
            "/licenses/activate",
            &json!({ "license_key": key, "hardware_id": hardware_id, "machine_name": machine_name }),
        )
    }

    pub fn validate(&self, key: &str, hardware_id: &str) -> CliResult<Reply> {
        self.post(
            "/licenses/validate",
            &json!({
                "license_key": key,
                "hardware_id": hardware_id,
                "client_version": env!("CARGO_PKG_VERSION"),
            }),
        )
    }
}

/// The error shown for a refusal by the issuer: its words, and where to go.
pub fn refusal_error(code: &str, detail: &str, server: &str) -> CliError {
    let hint = match code {
        "license_not_found" => "check the key in your confirmation email".to_owned(),
        "too_many_activations" => "run `coditect deactivate` on a machine you no longer use (or `coditect license machines` to list them), then activate again".to_owned(),
        "license_suspended" | "license_expired" | "license_canceled" | "payment_overdue" => format!(
            "renew or update your subscription in the billing portal (sign in at {server}), then run `coditect license renew`"
        ),
        "license_revoked" => "`coditect license renew` checks again; `coditect activate NEW-KEY` replaces the license on this machine".to_owned(),
        "not_activated" => "this machine's seat was freed; run `coditect activate` to use it here again".to_owned(),
        "invalid_field" => "check the value and try again".to_owned(),
        "rate_limited" => "wait a minute and try again".to_owned(),
        _ => "try again later; if it persists, contact support@coditect.ai".to_owned(),
    };
    CliError::user(code, detail.to_owned(), Some(hint))
}
