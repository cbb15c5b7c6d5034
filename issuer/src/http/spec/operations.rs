//! What the document says about each operation beyond what the framework
//! knows: who may call it and every refusal it can answer (made by the code
//! that refuses), and the table of all problem codes for
//! `docs/integrators.md`.

use std::collections::BTreeMap;

use poem::http::StatusCode;

use super::examples::EXAMPLE_NOW;
use crate::app::billing::BillingError;
use crate::domain::account::AccountError;
use crate::domain::input::FieldError;
use crate::domain::license::{LicenseError, LicenseStatus};
use crate::http::problem::{ApiError, NewProblem, Problem};

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (`security: []`); a license key, when one is needed, is in
    /// the body.
    Public,
    /// A session: `Authorization: Bearer` (the framework declares it).
    Session,
    /// The license key in `X-License-Key` (the framework declares it).
    LicenseKey,
    /// Anyone, and a session when one is sent (`deactivate`: proof of
    /// standing to free another machine's seat).
    OptionalSession,
}

/// What the spec says about one operation beyond what the framework knows.
pub struct Operation {
    pub id: &'static str,
    pub access: Access,
    /// Takes a JSON body: 400 (not JSON), 413 (too large), 415 (not
    /// `application/json`) and 422 (a field is invalid) are possible.
    pub body: bool,
    /// Counted by a rate limit (`RATE_LIMIT_*`): 429 is possible.
    pub limited: bool,
    /// Reads or writes the database: 500 and 503 are possible.
    pub storage: bool,
    /// The refusals of its own, as the code makes them.
    pub refusals: fn() -> Vec<Problem>,
}

/// Every operation of the API, in the order of the document.
pub const OPERATIONS: &[Operation] = &[
    Operation {
        id: "healthz",
        access: Access::Public,
        body: false,
        limited: false,
        storage: false,
        refusals: Vec::new,
    },
    Operation {
        id: "readyz",
        access: Access::Public,
        body: false,
        limited: false,
        storage: false,
        refusals: || {
            vec![
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_ready",
                    "Not ready",
                    "The database is not reachable.",
                ),
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "draining",
                    "Stopping",
                    "This instance is stopping; send new requests elsewhere.",
                ),
            ]
        },
    },
    Operation {
        id: "signup",
        access: Access::Public,
        body: true,
        limited: true,
        storage: true,
        refusals: || {
            vec![
                account(AccountError::SignupClosed),
                account(AccountError::SignupFull),
            ]
        },
    },
    Operation {
        id: "login",
        access: Access::Public,
        body: true,
        limited: true,
        storage: true,
        refusals: || {
            vec![
                account(AccountError::InvalidCredentials),
                account(AccountError::Locked {
                    until: EXAMPLE_NOW - 60,
                }),
            ]
        },
    },
    Operation {
        id: "cliToken",
        access: Access::Public,
        body: true,
        limited: true,
        storage: true,
        refusals: || vec![account(AccountError::CodeInvalid)],
    },
    Operation {
        id: "deviceCode",
        access: Access::Public,
        body: false,
        limited: true,
        storage: true,
        refusals: Vec::new,
    },
    Operation {
        id: "deviceToken",
        access: Access::Public,
        body: true,
        limited: false,
        storage: true,
        refusals: || {
            vec![
                account(AccountError::AuthorizationPending),
                account(AccountError::SlowDown),
                account(AccountError::CodeInvalid),
            ]
        },
    },
    Operation {
        id: "verifyEmail",
        access: Access::Public,
        body: true,
        limited: false,
        storage: true,
        refusals: || vec![account(AccountError::LinkInvalid)],
    },
    Operation {
        id: "requestPasswordReset",
        access: Access::Public,
        body: true,
        limited: true,
        storage: true,
        refusals: Vec::new,
    },
    Operation {
        id: "newPassword",
        access: Access::Public,
        body: true,
        limited: true,
        storage: true,
        refusals: || vec![account(AccountError::LinkInvalid)],
    },
    Operation {
        id: "logout",
        access: Access::Session,
        body: false,
        limited: false,
        storage: true,
        refusals: || vec![account(AccountError::Unauthorized)],
    },
    Operation {
        id: "activate",
        access: Access::Public,
        body: true,
        limited: true,
        storage: true,
        refusals: || {
            let mut all = vec![
                license(LicenseError::NotFound),
                license(LicenseError::TooManyActivations { max: 3 }),
            ];
            all.extend(inactive());
            all
        },
    },
    Operation {
        id: "validate",
        access: Access::Public,
        body: true,
        limited: true,
        storage: true,
        refusals: || {
            let mut all = vec![
                license(LicenseError::NotFound),
                license(LicenseError::NotActivated),
                license(LicenseError::SeatOverLimit { max: 1, used: 2 }),
            ];
            all.extend(inactive());
            all
        },
    },
    Operation {
        id: "deactivate",
        access: Access::OptionalSession,
        body: true,
        limited: true,
        storage: true,
        refusals: || {
            let later = EXAMPLE_NOW + 86_400;
            vec![
                account(AccountError::Unauthorized),
                license(LicenseError::NotFound),
                license(LicenseError::ActivationNotFound),
                license(LicenseError::NotActivated),
                license(LicenseError::NotAllowedToFree),
                license(LicenseError::OfflineSeat { until: later }),
                license(LicenseError::TransferLimit {
                    allowed: 3,
                    next_at: later,
                }),
            ]
        },
    },
    Operation {
        id: "listLicenses",
        access: Access::Session,
        body: false,
        limited: false,
        storage: true,
        refusals: || vec![account(AccountError::Unauthorized)],
    },
    Operation {
        id: "features",
        access: Access::LicenseKey,
        body: false,
        limited: true,
        storage: true,
        refusals: || {
            vec![
                crate::http::api::licenses::no_license_key(),
                license(LicenseError::NotFound),
            ]
        },
    },
    Operation {
        id: "billingCheckout",
        access: Access::Session,
        body: true,
        limited: true,
        storage: true,
        refusals: || {
            vec![
                account(AccountError::Unauthorized),
                billing(BillingError::PilotFull),
                billing(BillingError::AlreadySubscribed),
                billing(BillingError::NotConfigured),
                billing_unavailable(),
            ]
        },
    },
    Operation {
        id: "billingPortal",
        access: Access::Session,
        body: false,
        limited: true,
        storage: true,
        refusals: || {
            vec![
                account(AccountError::Unauthorized),
                billing(BillingError::NoCustomer),
                billing(BillingError::NotConfigured),
                billing_unavailable(),
            ]
        },
    },
    Operation {
        id: "listKeys",
        access: Access::Public,
        body: false,
        limited: false,
        storage: false,
        refusals: Vec::new,
    },
];

fn account(e: AccountError) -> Problem {
    ApiError::from(e).problem().clone()
}

fn license(e: LicenseError) -> Problem {
    ApiError::from(e).problem().clone()
}

fn billing(e: BillingError) -> Problem {
    ApiError::from(e).problem().clone()
}

/// The `billing_unavailable` refusal (made here: the conversion of a
/// Stripe failure logs it).
fn billing_unavailable() -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "billing_unavailable",
        "Payments unavailable",
        "The payment provider cannot be reached right now. Try again in a minute.",
    )
}

/// The refusals of a license that is not usable (activate, validate).
fn inactive() -> Vec<Problem> {
    let now = EXAMPLE_NOW;
    vec![
        license(LicenseError::Inactive(LicenseStatus::Suspended)),
        license(LicenseError::Inactive(LicenseStatus::Revoked)),
        license(LicenseError::Inactive(LicenseStatus::Canceled)),
        license(LicenseError::Expired {
            since: now - 86_400,
        }),
        license(LicenseError::PaymentOverdue {
            since: now - 86_400,
            failed_at: now - 8 * 86_400,
        }),
    ]
}

/// The refusals any operation with these traits can answer, besides its
/// own.
fn common_refusals(op: &Operation) -> Vec<Problem> {
    let mut all = Vec::new();
    if op.body {
        all.push(Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Invalid request",
            "The request could not be read: send a JSON body with the fields this operation documents (see /docs).",
        ));
        all.push(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "Request too large",
            format!(
                "The request body must be at most {} bytes.",
                crate::http::middleware::body_limit::MAX_BODY_BYTES
            ),
        ));
        all.push(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Unsupported media type",
            "Send the request body as application/json.",
        ));
        let field = match op.id {
            "signup" | "login" | "requestPasswordReset" => {
                FieldError::new("email", "must be an email address such as name@example.com")
            }
            "verifyEmail" | "newPassword" => FieldError::new("token", "is required"),
            "cliToken" => FieldError::new("code", "is required"),
            "deviceToken" => FieldError::new("device_code", "is required"),
            "billingCheckout" => {
                FieldError::new("plan", "must be one of: pilot-starter, pilot-professional")
            }
            _ => FieldError::new("hardware_id", "must be 64 hexadecimal characters"),
        };
        all.push(Problem::from(field));
    }
    if op.limited {
        all.push(Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "Too many requests",
            "Too many requests from your network address: at most 10 per minute. Try again in 6 seconds.",
        ));
    }
    if op.storage {
        all.push(ApiError::internal_problem());
        all.push(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "Temporarily unavailable",
            "The service cannot reach its database right now. Nothing was changed; try again in a few seconds.",
        ));
    }
    all
}

/// Every refusal an operation can answer, its own first.
pub fn refusals(op: &Operation) -> Vec<Problem> {
    let mut all = (op.refusals)();
    all.extend(common_refusals(op));
    all
}

/// The refusals that belong to no operation of the document.
fn other_refusals() -> Vec<(Problem, &'static str)> {
    use crate::app::billing::webhook::WebhookError;
    let any = "any request";
    let mut all = vec![
        (
            Problem::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "Not found",
                "There is no such resource.",
            ),
            any,
        ),
        (
            Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed",
                "This resource does not accept this HTTP method.",
            ),
            any,
        ),
    ];
    for e in [
        WebhookError::NotConfigured,
        WebhookError::MissingSignature,
        WebhookError::BadSignature,
        WebhookError::Stale(0),
        WebhookError::TooLarge,
        WebhookError::BadPayload(String::new()),
        WebhookError::Unavailable(String::new()),
        WebhookError::Internal(String::new()),
    ] {
        let status = crate::http::api::billing::webhook_status(&e);
        all.push((
            Problem::new(status, e.code(), "Webhook refused", e.to_string()),
            "`POST /webhooks/stripe` (Stripe only)",
        ));
    }
    all
}

/// The table of problem `code`s in `docs/integrators.md`: every refusal of
/// every operation ([`OPERATIONS`]) and the others, by code and status.
pub fn error_codes_markdown() -> String {
    // (code, status) → (title, where)
    let mut rows: BTreeMap<(String, u16), (String, Vec<String>)> = BTreeMap::new();
    let mut add = |p: &Problem, at: String| {
        let row = rows
            .entry((p.code.clone(), p.status))
            .or_insert_with(|| (p.title.clone(), Vec::new()));
        if !row.1.contains(&at) {
            row.1.push(at);
        }
    };
    for op in OPERATIONS {
        for p in refusals(op) {
            add(&p, format!("`{}`", op.id));
        }
    }
    for (p, at) in other_refusals() {
        add(&p, at.to_owned());
    }
    let mut out = String::from("| `code` | HTTP | title | returned by |\n|---|---|---|---|\n");
    for ((code, status), (title, at)) in rows {
        let at = at.join(", ");
        out.push_str(&format!("| `{code}` | {status} | {title} | {at} |\n"));
    }
    out
}
