//! The wire types of the CODITECT license API, defined once.
//!
//! The issuer answers with these types and the CLI reads them, so the two
//! cannot drift apart: the requests and responses of `/api/v1/licenses/*`
//! ([`licenses`]) and `/api/v1/auth/*` ([`auth`]), the
//! `application/problem+json` body of every refusal ([`problem`]), and the
//! one definition of the license key format ([`license_key`]).
//!
//! The crate is plain data: no I/O, no clock, no network. With the feature
//! `openapi` (the issuer's build) every type is also a poem-openapi `Object`
//! carrying the validators and descriptions of the published OpenAPI
//! document; without it (the CLI's build) the types are serde structs only.

#![forbid(unsafe_code)]

pub mod auth;
pub mod license_key;
pub mod licenses;
pub mod problem;

pub use auth::{
    AccountAnswer, CliTokenRequest, CliTokenResponse, DeviceCodeResponse, DeviceTokenRequest,
    LoginRequest, LoginResponse, NewPasswordRequest, PasswordResetRequest, SignupRequest,
    SignupResponse, VerifyEmailRequest,
};
pub use licenses::{
    ActivateRequest, ActivationView, DeactivateRequest, DeactivateResponse, EntitlementsView,
    FeaturesResponse, GrantResponse, LicenseList, LicenseSummary, LicenseWithActivations,
    TokenView, TransfersView, ValidateRequest,
};
pub use problem::Problem;
