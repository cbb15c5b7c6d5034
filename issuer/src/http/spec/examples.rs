//! Example bodies of every request and success answer, made from the wire
//! types (so they cannot drift from the schemas).

use std::collections::BTreeMap;

use poem_openapi::types::ToJSON;
use serde_json::Value;

use crate::http::api::auth::{
    AccountAnswer, CliTokenRequest, CliTokenResponse, DeviceCodeResponse, DeviceTokenRequest,
    LoginRequest, LoginResponse, NewPasswordRequest, PasswordResetRequest, SignupRequest,
    SignupResponse, VerifyEmailRequest,
};
use crate::http::api::billing::{
    BillingInterval, CheckoutRequest, CheckoutResponse, PlanId, PortalResponse,
};
use crate::http::api::health::HealthStatus;
use crate::http::api::licenses::{
    ActivateRequest, ActivationView, DeactivateRequest, DeactivateResponse, EntitlementsView,
    FeaturesResponse, GrantResponse, LicenseList, LicenseSummary, LicenseWithActivations,
    TokenView, TransfersView, ValidateRequest,
};
use crate::keys::{Jwk, JwkSet};

/// The example bodies of an operation.
pub(super) struct Examples {
    pub(super) request: Option<Value>,
    pub(super) responses: Vec<(&'static str, Value)>,
}

/// The time of the examples (2026-01-05T08:00:00Z): the document does not
/// change with the clock.
pub(super) const EXAMPLE_NOW: i64 = 1_767_600_000;
const EXAMPLE_KEY: &str = "CODITECT-PILOT-7K3M-Q9TX-4HWA";
const EXAMPLE_HARDWARE_ID: &str =
    "5f2c4e0b9a7d4c1e8f3a6b2d0c9e7f1a4b8d2c6e0f3a7b1d5c9e2f6a0b4d8c1e";
const EXAMPLE_EMAIL: &str = "ada@example.com";

fn example_summary() -> LicenseSummary {
    LicenseSummary {
        id: "lic_01J9Z4Q8B7W2K5X3M6N8P0R1S2".into(),
        tier: "pilot-professional".into(),
        plan_name: "Pilot Professional".into(),
        status: "active".into(),
        email: EXAMPLE_EMAIL.into(),
        organization: Some("Acme Ltd".into()),
        expires_at: "2026-12-31T00:00:00Z".into(),
        key_hint: "4HWA".into(),
        entitlements: EntitlementsView {
            max_projects: None,
            ai_requests: 1000,
            max_devices: 3,
        },
        devices_used: 1,
        transfers: TransfersView {
            allowed: 3,
            used: 0,
            remaining: 3,
            window_days: 30,
            next_at: None,
        },
    }
}

fn example_activation() -> ActivationView {
    ActivationView {
        id: "act_01J9Z4R2C3D4E5F6G7H8J9K0L1".into(),
        hardware_id: EXAMPLE_HARDWARE_ID.into(),
        machine_name: Some("ada-laptop".into()),
        status: "active".into(),
        activated_at: "2026-01-05T09:30:00Z".into(),
        last_validated_at: "2026-01-06T09:30:00Z".into(),
        deactivated_at: None,
        offline_until: None,
    }
}

fn example_grant() -> GrantResponse {
    GrantResponse {
        license: example_summary(),
        activation: example_activation(),
        token: TokenView {
            token: "0oRYIaIBJwRYHGRldi0yMDI2LTAxAKBZAQ2rAXgbaHR0cHM6Ly9saWNlbnNpbmcuY29kaXRlY3Q"
                .into(),
            expires_at: "2026-01-09T09:30:00Z".into(),
            renew_after: "2026-01-07T09:30:00Z".into(),
        },
    }
}

fn example_cli_session() -> CliTokenResponse {
    CliTokenResponse {
        access_token: "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c3JfMDEifQ.c2lnbmF0dXJl"
            .into(),
        token_type: "Bearer".into(),
        expires_in: 3600,
        expires_at: "2026-01-05T10:30:00Z".into(),
        email: EXAMPLE_EMAIL.into(),
    }
}

pub(super) fn examples() -> BTreeMap<&'static str, Examples> {
    let j = |v: &dyn ToJSONValue| v.value();
    let answer = |status: &str, next: &str| AccountAnswer {
        status: status.into(),
        next: next.into(),
    };
    let mut deactivated = example_activation();
    deactivated.status = "deactivated".into();
    deactivated.deactivated_at = Some("2026-01-07T10:00:00Z".into());
    let mut freed = example_summary();
    freed.devices_used = 0;
    freed.transfers.used = 1;
    freed.transfers.remaining = 2;
    let entries = [
        (
            "healthz",
            None,
            vec![("200", j(&HealthStatus { status: "ok".into() }))],
        ),
        (
            "readyz",
            None,
            vec![(
                "200",
                j(&HealthStatus {
                    status: "ready".into(),
                }),
            )],
        ),
        (
            "signup",
            Some(j(&SignupRequest {
                email: EXAMPLE_EMAIL.into(),
                password: "correct horse battery staple".into(),
                company_name: "Acme Ltd".into(),
            })),
            vec![(
                "202",
                j(&SignupResponse {
                    status: "accepted".into(),
                    email: EXAMPLE_EMAIL.into(),
                    next: "Sign in with POST /api/v1/auth/login. A link to confirm the address was mailed to it; an account neither confirmed nor paid for is deleted after UNVERIFIED_ACCOUNT_TTL.".into(),
                }),
            )],
        ),
        (
            "login",
            Some(j(&LoginRequest {
                email: EXAMPLE_EMAIL.into(),
                password: "correct horse battery staple".into(),
            })),
            vec![(
                "200",
                j(&LoginResponse {
                    access_token: "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c3JfMDEifQ.c2lnbmF0dXJl".into(),
                    token_type: "Bearer".into(),
                    expires_in: 3600,
                    expires_at: "2026-01-05T10:30:00Z".into(),
                }),
            )],
        ),
        (
            "cliToken",
            Some(j(&CliTokenRequest {
                code: "Yk2Vb7Qn4Lx9Tc1Rm6Wd3Hs8Jf5Gp0Za".into(),
                code_verifier: "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into(),
                redirect_uri: "http://127.0.0.1:49152/callback".into(),
            })),
            vec![("200", j(&example_cli_session()))],
        ),
        (
            "deviceCode",
            None,
            vec![(
                "200",
                j(&DeviceCodeResponse {
                    device_code: "Gm8Rt2Kx5Vb9Nq3Lw7Hc1Jd4Fs6Py0Ta".into(),
                    user_code: "WDJB-MJHT".into(),
                    verification_uri: "https://licenses.example.com/device".into(),
                    verification_uri_complete:
                        "https://licenses.example.com/device?user_code=WDJB-MJHT".into(),
                    expires_in: 600,
                    interval: 5,
                }),
            )],
        ),
        (
            "deviceToken",
            Some(j(&DeviceTokenRequest {
                device_code: "Gm8Rt2Kx5Vb9Nq3Lw7Hc1Jd4Fs6Py0Ta".into(),
            })),
            vec![("200", j(&example_cli_session()))],
        ),
        (
            "verifyEmail",
            Some(j(&VerifyEmailRequest {
                token: "q3V8mXn2Lr7Tb0Yc5Wd9Hs4Jk6Fp1Ga".into(),
            })),
            vec![("200", j(&answer("done", "The address is confirmed.")))],
        ),
        (
            "requestPasswordReset",
            Some(j(&PasswordResetRequest {
                email: EXAMPLE_EMAIL.into(),
            })),
            vec![(
                "202",
                j(&answer(
                    "accepted",
                    "If this email has an account, a link to choose a new password is on its way (valid for an hour).",
                )),
            )],
        ),
        (
            "newPassword",
            Some(j(&NewPasswordRequest {
                token: "q3V8mXn2Lr7Tb0Yc5Wd9Hs4Jk6Fp1Ga".into(),
                password: "a new long passphrase".into(),
            })),
            vec![(
                "200",
                j(&answer(
                    "done",
                    "The password is changed and every session has ended. Sign in with POST /api/v1/auth/login.",
                )),
            )],
        ),
        ("logout", None, vec![]),
        (
            "activate",
            Some(j(&ActivateRequest {
                license_key: EXAMPLE_KEY.into(),
                hardware_id: EXAMPLE_HARDWARE_ID.into(),
                machine_name: Some("ada-laptop".into()),
            })),
            vec![("201", j(&example_grant())), ("200", j(&example_grant()))],
        ),
        (
            "validate",
            Some(j(&ValidateRequest {
                license_key: EXAMPLE_KEY.into(),
                hardware_id: EXAMPLE_HARDWARE_ID.into(),
                client_version: Some("0.4.0".into()),
            })),
            vec![("200", j(&example_grant()))],
        ),
        (
            "deactivate",
            Some(j(&DeactivateRequest {
                license_key: EXAMPLE_KEY.into(),
                hardware_id: EXAMPLE_HARDWARE_ID.into(),
                activation_id: None,
            })),
            vec![(
                "200",
                j(&DeactivateResponse {
                    license: freed,
                    activation: deactivated,
                }),
            )],
        ),
        (
            "listLicenses",
            None,
            vec![(
                "200",
                j(&LicenseList {
                    licenses: vec![LicenseWithActivations {
                        license: example_summary(),
                        activations: vec![example_activation()],
                    }],
                }),
            )],
        ),
        (
            "features",
            None,
            vec![(
                "200",
                j(&FeaturesResponse {
                    license_id: example_summary().id,
                    tier: "pilot-professional".into(),
                    plan_name: "Pilot Professional".into(),
                    status: "active".into(),
                    expires_at: "2026-12-31T00:00:00Z".into(),
                    entitlements: example_summary().entitlements,
                }),
            )],
        ),
        (
            "billingCheckout",
            Some(j(&CheckoutRequest {
                plan: PlanId::PilotProfessional,
                interval: BillingInterval::Month,
            })),
            vec![(
                "200",
                j(&CheckoutResponse {
                    session_id: "cs_test_a1B2c3D4e5F6g7H8".into(),
                    url: "https://checkout.stripe.com/c/pay/cs_test_a1B2c3D4e5F6g7H8".into(),
                }),
            )],
        ),
        (
            "billingPortal",
            None,
            vec![(
                "200",
                j(&PortalResponse {
                    url: "https://billing.stripe.com/p/session/test_YWNjdF8x".into(),
                }),
            )],
        ),
        (
            "listKeys",
            None,
            vec![(
                "200",
                j(&JwkSet {
                    keys: vec![Jwk {
                        kty: "OKP".into(),
                        crv: "Ed25519".into(),
                        x: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo".into(),
                        kid: "coditect-2026-01".into(),
                        alg: "EdDSA".into(),
                        use_: "sig".into(),
                    }],
                }),
            )],
        ),
    ];
    entries
        .into_iter()
        .map(|(id, request, responses)| (id, Examples { request, responses }))
        .collect()
}

/// A poem-openapi object as the JSON it is sent as.
trait ToJSONValue {
    fn value(&self) -> Value;
}

impl<T: ToJSON> ToJSONValue for T {
    fn value(&self) -> Value {
        self.to_json().unwrap_or(Value::Null)
    }
}
