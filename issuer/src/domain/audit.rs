//! The audit log's records: who did what, from where, with what outcome.
//! Rows never carry a password, license key, token or secret.

use serde::Serialize;

/// One audit event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    pub at: i64,
    /// `signup`, `login`, `logout`, `failed_login`, `lockout`, `activate`,
    /// `deactivate`, `validate`, `license_created`, `license_revoked`, …
    pub event: String,
    /// `ok`, `refused`, or a refusal code such as `too_many_activations`.
    pub outcome: String,
    /// `user:<id>`, `license:<id>`, `email:<address>` or `admin`.
    pub actor: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub subject_type: Option<String>,
    pub subject_id: Option<String>,
    /// A short, secret-free note.
    pub detail: Option<String>,
}

impl Event {
    pub fn new(at: i64, event: &str, outcome: &str) -> Self {
        Event {
            at,
            event: event.to_owned(),
            outcome: outcome.to_owned(),
            actor: None,
            ip: None,
            user_agent: None,
            subject_type: None,
            subject_id: None,
            detail: None,
        }
    }

    pub fn actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }

    pub fn subject(mut self, kind: &str, id: impl Into<String>) -> Self {
        self.subject_type = Some(kind.to_owned());
        self.subject_id = Some(id.into());
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn client(mut self, client: &Client) -> Self {
        self.ip = client.ip.clone();
        self.user_agent = client.user_agent.clone();
        self
    }
}

/// Where a request came from, for the audit log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Client {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// The longest user agent kept.
const MAX_USER_AGENT: usize = 256;

impl Client {
    pub fn new(ip: Option<String>, user_agent: Option<&str>) -> Self {
        Client {
            ip,
            user_agent: user_agent.map(|ua| {
                ua.chars()
                    .filter(|c| !c.is_control())
                    .take(MAX_USER_AGENT)
                    .collect()
            }),
        }
    }
}
