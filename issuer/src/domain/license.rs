//! Licenses and their activations (seats): what they are, when a license
//! is usable, and why an operation on them is refused. The seat rules are
//! enforced by the store's `activate_seat` / `renew_seat` / `free_seat`,
//! each one transaction (see `docs/ARCHITECTURE.md`, "Seats").

use verifier::{Entitlements, HardwareId, ProjectLimit};

use super::StorageError;
use super::license_key::LicenseKey;
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
    /// Activated air-gapped (`license issue-offline`): its token is good
    /// until then and cannot be called back, so only the operator frees
    /// the seat before that time.
    pub offline_until: Option<i64>,
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
    /// When the seats freed by the holder within the last
    /// [`TRANSFER_WINDOW`] were freed, oldest first.
    pub recent_transfers: Vec<i64>,
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
    /// A plan or quantity change lowered the seats below the machines
    /// activated; this one is beyond the limit (see [`seat_rank_allowed`]).
    #[error("the license now allows {max} machines and {used} are activated")]
    SeatOverLimit { max: u32, used: u32 },
    /// The holder freed as many seats as the plan allows per window.
    #[error("the license's {allowed} seat transfers per 30 days are used up")]
    TransferLimit { allowed: u32, next_at: i64 },
    /// The seat holds an air-gapped token until `until`.
    #[error("the machine was activated offline; its seat is held until its token expires")]
    OfflineSeat { until: i64 },
    /// Freeing a machine other than the asking one needs proof of standing.
    #[error(
        "freeing another machine's seat needs an active machine or a signed-in account of the license's organization"
    )]
    NotAllowedToFree,
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
            LicenseError::SeatOverLimit { .. } => "seat_over_limit",
            LicenseError::TransferLimit { .. } => "transfer_limit_reached",
            LicenseError::OfflineSeat { .. } => "offline_seat",
            LicenseError::NotAllowedToFree => "not_allowed_to_free",
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

/// Who frees a seat.
#[derive(Debug, Clone)]
pub enum Releaser<'a> {
    /// A key holder: the machine asking and, when the request carries a
    /// session, the organization of the signed-in account.
    Holder {
        key: &'a LicenseKey,
        machine: &'a HardwareId,
        organization: Option<&'a str>,
    },
    /// The operator (an admin command): frees any seat, offline ones too,
    /// and is never counted as a transfer.
    Operator { license_id: &'a str },
    /// A signed-in member of `organization` (the account page), naming the
    /// license by its id: frees the seats of its organization's licenses
    /// under the same rules as a key holder with a session (offline seats
    /// protected, counted as a transfer).
    Organization {
        license_id: &'a str,
        organization: &'a str,
    },
}

/// A freed seat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freed {
    pub license: License,
    /// The activation as it is now (deactivated).
    pub activation: Activation,
    /// Seats still in use.
    pub devices_used: u32,
    /// The holder's transfers in the window, this one included if counted.
    pub recent_transfers: Vec<i64>,
    /// This freeing counted as a transfer.
    pub counted: bool,
}

/// Seat transfers are counted over this window (30 days).
pub const TRANSFER_WINDOW: i64 = 30 * 86_400;

/// The seat transfers a license allows per [`TRANSFER_WINDOW`]: its plan's
/// count per seat, at least the plan's minimum (3 for an unknown plan).
pub fn transfers_allowed(license: &License) -> u32 {
    let (per_seat, min) = super::plans::find(&license.tier)
        .map_or((2, 3), |p| (p.transfers_per_seat, p.min_transfers));
    per_seat.saturating_mul(license.max_activations).max(min)
}

/// A license's seat transfers at `now`, for its holder to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferUse {
    pub allowed: u32,
    pub used: u32,
    /// When the next transfer is possible, when none is now.
    pub next_at: Option<i64>,
}

/// How many transfers `recent` (freeing times, oldest first) leaves.
pub fn transfer_use(license: &License, recent: &[i64], now: i64) -> TransferUse {
    let since = now.saturating_sub(TRANSFER_WINDOW);
    let in_window: Vec<i64> = recent.iter().copied().filter(|t| *t > since).collect();
    let allowed = transfers_allowed(license);
    let used = u32::try_from(in_window.len()).unwrap_or(u32::MAX);
    // With `used >= allowed`, one becomes possible when the
    // (used - allowed + 1)-th oldest leaves the window.
    let next_at = (used >= allowed)
        .then(|| in_window.get((used - allowed) as usize))
        .flatten()
        .map(|t| t.saturating_add(TRANSFER_WINDOW));
    TransferUse {
        allowed,
        used,
        next_at,
    }
}

/// Whether a machine activated `rank`-th on the license (0 = the first
/// of those still active, by activation time) keeps its seat. After a
/// downgrade lowers `max_activations` below the machines active, the ones
/// activated first keep renewing and the latest are refused until the
/// holder frees enough seats: the order is fixed when a machine activates,
/// so renewing more often wins nothing and the outcome does not depend on
/// which machine renews first.
pub fn seat_rank_allowed(license: &License, rank: u32, used: u32) -> Result<(), LicenseError> {
    if rank < license.max_activations {
        Ok(())
    } else {
        Err(LicenseError::SeatOverLimit {
            max: license.max_activations,
            used,
        })
    }
}

/// What the store knows when a seat is to be freed.
#[derive(Debug, Clone, Copy)]
pub struct ReleaseFacts<'a> {
    pub license: &'a License,
    pub target: &'a Activation,
    /// The asking machine holds an active seat on the license.
    pub asker_active: bool,
    /// Seats in use before freeing.
    pub devices_used: u32,
    /// The holder's transfers, oldest first.
    pub recent_transfers: &'a [i64],
}

/// What freeing does, decided before anything is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// The seat is already free: nothing to write, nothing counted.
    AlreadyFree,
    /// Free it; `counted` says whether it uses one of the transfers.
    Free { counted: bool },
}

/// The seat rules for freeing a seat at `now`:
/// - the operator frees any seat, uncounted;
/// - a seat held by an air-gapped token is the operator's to free until
///   that token expires;
/// - a holder frees another machine's seat only from a machine active on
///   the license or with a session of the license's organization;
/// - freeing counts as a transfer, capped per window, except while the
///   license has more machines active than seats (after a downgrade the
///   holder must be able to come back within the limit).
pub fn release(
    by: &Releaser<'_>,
    facts: ReleaseFacts<'_>,
    now: i64,
) -> Result<Release, LicenseError> {
    let ReleaseFacts {
        license,
        target,
        asker_active,
        devices_used,
        recent_transfers,
    } = facts;
    if !target.active {
        return Ok(Release::AlreadyFree);
    }
    let (machine, organization) = match by {
        Releaser::Operator { .. } => return Ok(Release::Free { counted: false }),
        Releaser::Holder {
            machine,
            organization,
            ..
        } => (Some(*machine), *organization),
        Releaser::Organization { organization, .. } => (None, Some(*organization)),
    };
    if let Some(until) = target.offline_until.filter(|until| now < *until) {
        return Err(LicenseError::OfflineSeat { until });
    }
    let own_seat = machine.is_some_and(|m| target.hardware_id == m.to_hex());
    let organization_member =
        organization.is_some() && organization == license.organization_id.as_deref();
    if !own_seat && !asker_active && !organization_member {
        return Err(LicenseError::NotAllowedToFree);
    }
    if devices_used > license.max_activations {
        return Ok(Release::Free { counted: false });
    }
    let transfers = transfer_use(license, recent_transfers, now);
    match transfers.next_at {
        Some(next_at) => Err(LicenseError::TransferLimit {
            allowed: transfers.allowed,
            next_at,
        }),
        None => Ok(Release::Free { counted: true }),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_796_256_000;

    fn license(tier: &str, seats: u32) -> License {
        License {
            id: "lic".into(),
            key_hint: "ABCD".into(),
            organization_id: Some("org".into()),
            organization_name: None,
            email: "a@example.com".into(),
            tier: tier.into(),
            status: LicenseStatus::Active,
            expires_at: NOW + 365 * 86_400,
            max_activations: seats,
            max_projects: ProjectLimit::Unlimited,
            ai_requests: 0,
            created_at: NOW,
            revoked_reason: None,
        }
    }

    fn machine(n: u8, offline_until: Option<i64>) -> (HardwareId, Activation) {
        let hw = HardwareId::from_machine_id(&format!("m{n}"));
        let a = Activation {
            id: format!("act{n}"),
            license_id: "lic".into(),
            hardware_id: hw.to_hex(),
            machine_name: None,
            active: true,
            activated_at: NOW,
            last_validated_at: NOW,
            deactivated_at: None,
            offline_until,
        };
        (hw, a)
    }

    #[test]
    fn transfers_scale_with_seats_and_never_fall_below_the_minimum() {
        assert_eq!(transfers_allowed(&license("pilot-starter", 1)), 3);
        assert_eq!(transfers_allowed(&license("pilot-professional", 3)), 6);
        assert_eq!(transfers_allowed(&license("pilot-professional", 30)), 60);
        assert_eq!(transfers_allowed(&license("unknown-plan", 0)), 3);
    }

    #[test]
    fn the_next_transfer_is_when_enough_leave_the_window() {
        let lic = license("pilot-starter", 1);
        let t = transfer_use(&lic, &[NOW - 10, NOW - 5], NOW);
        assert_eq!((t.used, t.next_at), (2, None));
        let t = transfer_use(&lic, &[NOW - 30, NOW - 20, NOW - 10], NOW);
        assert_eq!(t.next_at, Some(NOW - 30 + TRANSFER_WINDOW));
        // After a downgrade more may be in the window than allowed: the
        // next one waits for the surplus to leave too.
        let t = transfer_use(&lic, &[NOW - 40, NOW - 30, NOW - 20, NOW - 10], NOW);
        assert_eq!(t.next_at, Some(NOW - 30 + TRANSFER_WINDOW));
        // Older than the window: not counted.
        let t = transfer_use(&lic, &[NOW - TRANSFER_WINDOW, NOW - 1], NOW);
        assert_eq!((t.used, t.next_at), (1, None));
    }

    #[test]
    fn release_rules() {
        let lic = license("pilot-professional", 3);
        let key = LicenseKey::parse("CODITECT-PILOT-AAAA-BBBB-CCCC").unwrap();
        let (own, target) = machine(1, None);
        let (stranger, _) = machine(9, None);
        fn facts<'a>(
            license: &'a License,
            target: &'a Activation,
            asker_active: bool,
            devices_used: u32,
            recent_transfers: &'a [i64],
        ) -> ReleaseFacts<'a> {
            ReleaseFacts {
                license,
                target,
                asker_active,
                devices_used,
                recent_transfers,
            }
        }
        let holder = |machine, organization| Releaser::Holder {
            key: &key,
            machine,
            organization,
        };
        let counted = Some(Release::Free { counted: true });
        assert_eq!(
            release(&holder(&own, None), facts(&lic, &target, true, 2, &[]), NOW).ok(),
            counted
        );
        // Another machine's seat: a seat or the organization's session.
        assert!(matches!(
            release(
                &holder(&stranger, None),
                facts(&lic, &target, false, 2, &[]),
                NOW
            ),
            Err(LicenseError::NotAllowedToFree)
        ));
        assert!(matches!(
            release(
                &holder(&stranger, Some("other")),
                facts(&lic, &target, false, 2, &[]),
                NOW
            ),
            Err(LicenseError::NotAllowedToFree)
        ));
        assert_eq!(
            release(
                &holder(&stranger, Some("org")),
                facts(&lic, &target, false, 2, &[]),
                NOW
            )
            .ok(),
            counted
        );
        assert_eq!(
            release(
                &holder(&stranger, None),
                facts(&lic, &target, true, 2, &[]),
                NOW
            )
            .ok(),
            counted
        );
        // The cap, and no count while over the seats.
        const SIX: &[i64] = &[NOW - 6, NOW - 5, NOW - 4, NOW - 3, NOW - 2, NOW - 1];
        assert!(matches!(
            release(&holder(&own, None), facts(&lic, &target, true, 3, SIX), NOW),
            Err(LicenseError::TransferLimit { allowed: 6, next_at }) if next_at == NOW - 6 + TRANSFER_WINDOW
        ));
        assert_eq!(
            release(&holder(&own, None), facts(&lic, &target, true, 4, SIX), NOW).ok(),
            Some(Release::Free { counted: false })
        );
        // Offline seats: the operator only, until the token expires.
        let (_, offline) = machine(2, Some(NOW + 100));
        let (offline_hw, _) = machine(2, None);
        assert!(matches!(
            release(&holder(&offline_hw, None), facts(&lic, &offline, true, 2, &[]), NOW),
            Err(LicenseError::OfflineSeat { until }) if until == NOW + 100
        ));
        assert_eq!(
            release(
                &holder(&offline_hw, None),
                facts(&lic, &offline, true, 2, &[]),
                NOW + 100
            )
            .ok(),
            counted
        );
        let operator = Releaser::Operator { license_id: "lic" };
        assert_eq!(
            release(&operator, facts(&lic, &offline, false, 2, SIX), NOW).ok(),
            Some(Release::Free { counted: false })
        );
        // A free seat: nothing to do, whoever asks.
        let freed = Activation {
            active: false,
            ..target.clone()
        };
        assert_eq!(
            release(
                &holder(&stranger, None),
                facts(&lic, &freed, false, 2, SIX),
                NOW
            )
            .ok(),
            Some(Release::AlreadyFree)
        );
    }

    #[test]
    fn the_first_activated_machines_keep_their_seats() {
        let lic = license("pilot-starter", 1);
        assert!(seat_rank_allowed(&lic, 0, 3).is_ok());
        assert!(matches!(
            seat_rank_allowed(&lic, 1, 3),
            Err(LicenseError::SeatOverLimit { max: 1, used: 3 })
        ));
    }
}
