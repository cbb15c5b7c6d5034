//! The issuer's HTTP API, as the CLI uses it.

use std::time::Duration;

use proto::{
    AccountAnswer, ActivateRequest, DeactivateRequest, DeactivateResponse, GrantResponse,
    LicenseList, LoginRequest, LoginResponse, PasswordResetRequest, Problem, ValidateRequest,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

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

/// Largest answer read from the issuer.
const MAX_ANSWER_BYTES: u64 = 1024 * 1024;

/// What the issuer answered.
#[derive(Debug)]
pub enum Reply<T> {
    Ok(T),
    /// A problem document: the issuer refused, with this HTTP status.
    Refused {
        status: u16,
        problem: Problem,
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

    /// The status and body of an answer (an unreadable body reads as empty).
    fn receive(
        &self,
        resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> CliResult<(u16, Vec<u8>)> {
        let mut resp = resp.map_err(|e| self.unreachable(&e))?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_vec()
            .unwrap_or_default();
        Ok((status, body))
    }

    /// A refusal: the issuer's problem document, or an error when the
    /// answer is none.
    fn refused<T>(&self, status: u16, body: &[u8]) -> CliResult<Reply<T>> {
        match serde_json::from_slice::<Problem>(body) {
            Ok(problem) => Ok(Reply::Refused { status, problem }),
            Err(_) => Err(CliError::user(
                "server_error",
                format!("the license server at {} answered HTTP {status}", self.base),
                Some("try again later; if it persists, contact support".to_owned()),
            )),
        }
    }

    /// An answer whose success body is a `T`.
    fn read<T: DeserializeOwned>(
        &self,
        resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> CliResult<Reply<T>> {
        let (status, body) = self.receive(resp)?;
        if !(200..300).contains(&status) {
            return self.refused(status, &body);
        }
        serde_json::from_slice(&body).map(Reply::Ok).map_err(|e| {
            CliError::user(
                "server_error",
                format!(
                    "the license server at {} answered HTTP {status} with a body coditect cannot read ({e})",
                    self.base
                ),
                Some("check --server points at the CODITECT license server".to_owned()),
            )
        })
    }

    /// An answer whose success has no body worth reading.
    fn read_empty(
        &self,
        resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> CliResult<Reply<()>> {
        let (status, body) = self.receive(resp)?;
        if (200..300).contains(&status) {
            return Ok(Reply::Ok(()));
        }
        self.refused(status, &body)
    }

    fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> CliResult<Reply<T>> {
        self.read(self.agent.post(&self.url(path)).send_json(body))
    }

    /// `POST /licenses/activate`.
    pub fn activate(
        &self,
        key: &str,
        hardware_id: &str,
        machine_name: &str,
    ) -> CliResult<Reply<GrantResponse>> {
        self.post(
            "/licenses/activate",
            &ActivateRequest {
                license_key: key.to_owned(),
                hardware_id: hardware_id.to_owned(),
                machine_name: Some(machine_name.to_owned()),
            },
        )
    }

    /// `POST /licenses/validate`: a fresh token for an activated machine.
    pub fn validate(&self, key: &str, hardware_id: &str) -> CliResult<Reply<GrantResponse>> {
        self.post(
            "/licenses/validate",
            &ValidateRequest {
                license_key: key.to_owned(),
                hardware_id: hardware_id.to_owned(),
                client_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
            },
        )
    }

    /// `POST /licenses/deactivate`, with the session of `bearer` when one
    /// is given (proof of standing for freeing another machine's seat).
    pub fn deactivate(
        &self,
        request: &DeactivateRequest,
        bearer: Option<&str>,
    ) -> CliResult<Reply<DeactivateResponse>> {
        let mut call = self.agent.post(&self.url("/licenses/deactivate"));
        if let Some(bearer) = bearer {
            call = call.header("authorization", &format!("Bearer {bearer}"));
        }
        self.read(call.send_json(request))
    }

    /// `POST /auth/login`.
    pub fn login(&self, request: &LoginRequest) -> CliResult<Reply<LoginResponse>> {
        self.post("/auth/login", request)
    }

    /// `POST /auth/cli/token`: the code of a browser sign-in for a session.
    pub fn cli_token(
        &self,
        request: &proto::CliTokenRequest,
    ) -> CliResult<Reply<proto::CliTokenResponse>> {
        self.post("/auth/cli/token", request)
    }

    /// `POST /auth/device/code`: a device authorization.
    pub fn device_code(&self) -> CliResult<Reply<proto::DeviceCodeResponse>> {
        self.post("/auth/device/code", &serde_json::json!({}))
    }

    /// `POST /auth/device/token`: one poll of a device authorization.
    pub fn device_token(
        &self,
        request: &proto::DeviceTokenRequest,
    ) -> CliResult<Reply<proto::CliTokenResponse>> {
        self.post("/auth/device/token", request)
    }

    /// `POST /auth/password-reset`: mails a reset link if the email has an
    /// account (the answer is the same when it has none).
    pub fn request_password_reset(
        &self,
        request: &PasswordResetRequest,
    ) -> CliResult<Reply<AccountAnswer>> {
        self.post("/auth/password-reset", request)
    }

    /// `POST /auth/logout`: ends the session of `bearer`.
    pub fn logout(&self, bearer: &str) -> CliResult<Reply<()>> {
        self.read_empty(
            self.agent
                .post(&self.url("/auth/logout"))
                .header("authorization", &format!("Bearer {bearer}"))
                .send_empty(),
        )
    }

    /// `GET /licenses`: the signed-in user's licenses and their machines.
    pub fn licenses(&self, bearer: &str) -> CliResult<Reply<LicenseList>> {
        self.read(
            self.agent
                .get(&self.url("/licenses"))
                .header("authorization", &format!("Bearer {bearer}"))
                .call(),
        )
    }
}

/// The error shown for a refusal by the issuer: its words, and where to go.
pub fn refusal_error(code: &str, detail: &str, server: &str) -> CliError {
    let hint = match code {
        "license_not_found" => "check the key in your confirmation email".to_owned(),
        "too_many_activations" => "run `coditect deactivate` on a machine you no longer use (or `coditect license machines` to list them), then activate again".to_owned(),
        "seat_over_limit" => "your plan now has fewer seats than activated machines: run `coditect deactivate` on a machine you no longer use (or `coditect deactivate --machine ID`, see `coditect license machines`), then `coditect license renew` here".to_owned(),
        "transfer_limit_reached" => "seat transfers are limited per 30 days; wait until the date above, or contact support@coditect.ai if a machine was lost".to_owned(),
        "offline_seat" => "that machine was activated offline; ask your administrator to free its seat".to_owned(),
        "not_allowed_to_free" => "run this on a machine that is activated on the license, or sign in first with `coditect login`".to_owned(),
        "license_suspended" | "payment_overdue" => {
            "update your payment method in the billing portal (on your account page, link below), then run `coditect license renew`".to_owned()
        }
        "license_expired" => {
            "renew your subscription in the billing portal (on your account page, link below), then run `coditect license renew`".to_owned()
        }
        "license_canceled" => {
            "the subscription was canceled: start a new one from your account page (link below), then run `coditect license renew`".to_owned()
        }
        "license_revoked" => "`coditect license renew` checks again; `coditect activate NEW-KEY` replaces the license on this machine".to_owned(),
        "not_activated" => "this machine's seat was freed; run `coditect activate` to use it here again".to_owned(),
        "invalid_field" => "check the value and try again".to_owned(),
        "rate_limited" => "wait a minute and try again".to_owned(),
        _ => "try again later; if it persists, contact support@coditect.ai".to_owned(),
    };
    let err = CliError::user(code, detail.to_owned(), Some(hint));
    match code {
        "license_suspended" | "license_expired" | "license_canceled" | "payment_overdue" => {
            err.with_url(crate::error::account_url(server))
        }
        _ => err,
    }
}
