//! Licenses and their activations (seats): what they are, when a license
//! is usable, and why an operation on them is refused. The seat rules are
//! enforced by the store's `activate_seat` / `renew_seat` / `free_seat`,
//! each one transaction (see `docs/ARCHITECTURE.md`, "Seats").

use verifier::{Entitlements, HardwareId, ProjectLimit};

use super::StorageError;
use super::plans::Plan;

/// The lifecycle state of a license.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LicenseStatus {
    Active,
    Suspended,
    Revoked,
    Canceled,
    Expired,
}

impl LicenseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LicenseStatus::Active => "active",
            LicenseStatus::Suspended => "suspended",
            LicenseStatus::Revoked => "revoked",
            LicenseStatus::Canceled => "canceled",
            LicenseStatus::Expired => "expired",
        }
    }

    /// The status stored as `s`, if it is one.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "active" => LicenseStatus::Active,
            "suspended" => LicenseStatus::Suspended,
            "revoked" => LicenseStatus::Revoked,
            "canceled" => LicenseStatus::Canceled,
            "expired" => LicenseStatus::Expired,
            _ => return None,
        })
    }
}

/// A license as stored (the key itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct License {
    pub id: String,
    pub key_hint: String,
    pub organization_id: Option<String>,
    pub organization_name: Option<String>,
    pub email: String,
    pub tier: String,
    pub status: LicenseStatus,
    pub expires_at: i64,
    pub max_activations: u32,
    pub max_projects: ProjectLimit,
    pub ai_requests: u32,
    pub created_at: i64,
    pub revoked_reason: Option<String>,
}

impl License {
    /// What the license entitles its holder to (carried in tokens).
    pub fn entitlements(&self) -> Entitlements {
        Entitlements {
            max_projects: self.max_projects,
            ai_requests: self.ai_requests,
            max_devices: self.max_activations,
        }
    }

    /// Whether the license can be used at `now`; the error says why not.
    pub fn check_usable(&self, now: i64) -> Result<(), LicenseError> {
        match self.status {
            LicenseStatus::Active if now < self.expires_at => Ok(()),
            LicenseStatus::Active | LicenseStatus::Expired => Err(LicenseError::Expired {
                since: self.expires_at,
            }),
            other => Err(LicenseError::Inactive(other)),
        }
    }
}

/// One machine activated on a license.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activation {
    pub id: String,
    pub license_id: String,
    pub hardware_id: String,
    pub machine_name: Option<String>,
    pub active: bool,
    pub activated_at: i64,
    pub last_validated_at: i64,
    pub deactivated_at: Option<i64>,
}

/// What an activation or validation grants: the license, this machine's
/// activation, and how many seats are in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub license: License,
    pub activation: Activation,
    pub devices_used: u32,
    /// The machine was already active; no new seat was taken.
    pub already_active: bool,
}

/// Why a license operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum LicenseError {
    #[error("no license has this key")]
    NotFound,
    #[error("this machine is not activated on the license")]
    NotActivated,
    #[error("the license allows {max} activated machines and all are in use")]
    TooManyActivations { max: u32 },
    #[error("the license is {}", .0.as_str())]
    Inactive(LicenseStatus),
    #[error("the license expired")]
    Expired { since: i64 },
    /// Expired because the subscription's payment failed at `failed_at`
    /// and the past-due grace ran out at `since`.
    #[error("the subscription's payment is overdue")]
    PaymentOverdue { since: i64, failed_at: i64 },
    #[error("no activation with this id on the license")]
    ActivationNotFound,
    /// The token could not be signed (a server fault, never the holder's).
    #[error("cannot sign the license token: {0}")]
    Signing(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl LicenseError {
    /// The stable refusal code (as in the API's problem documents and the
    /// audit log), or `None` for a server fault.
    pub fn code(&self) -> Option<&'static str> {
        Some(match self {
            LicenseError::NotFound => "license_not_found",
            LicenseError::NotActivated => "not_activated",
            LicenseError::TooManyActivations { .. } => "too_many_activations",
            LicenseError::Inactive(LicenseStatus::Suspended) => "license_suspended",
            LicenseError::Inactive(LicenseStatus::Revoked) => "license_revoked",
            LicenseError::Inactive(LicenseStatus::Canceled) => "license_canceled",
            LicenseError::Inactive(LicenseStatus::Active | LicenseStatus::Expired)
            | LicenseError::Expired { .. } => "license_expired",
            LicenseError::PaymentOverdue { .. } => "payment_overdue",
            LicenseError::ActivationNotFound => "activation_not_found",
            LicenseError::Signing(_) | LicenseError::Storage(_) => return None,
        })
    }
}

/// What a new license is made of.
#[derive(Debug, Clone)]
pub struct NewLicense<'a> {
    pub email: &'a str,
    pub plan: &'static Plan,
    pub expires_at: i64,
    /// Overrides the plan's device count.
    pub max_devices: Option<u32>,
    pub organization_id: Option<&'a str>,
    pub stripe_subscription_id: Option<&'a str>,
}

/// `last_validated_at` is kept to this many seconds: validations in
/// between write nothing, so renewals are reads and scale across connections.
pub const VALIDATION_TIME_RESOLUTION: i64 = 60;

/// Which activation to free.
#[derive(Debug, Clone)]
pub enum Seat<'a> {
    Machine(&'a HardwareId),
    Activation(&'a str),
}

/// The license's status as its holder should read it at `now`: an active
/// license past its end is `expired`.
pub fn status_at(license: &License, now: i64) -> &'static str {
    match license.check_usable(now) {
        Err(LicenseError::Expired { .. }) => "expired",
        _ => license.status.as_str(),
    }
}

/// The stored form of a project limit (`NULL` = unlimited).
pub fn project_limit_column(limit: ProjectLimit) -> Option<u32> {
    match limit {
        ProjectLimit::Limited(n) => Some(n),
        ProjectLimit::Unlimited => None,
    }
}
