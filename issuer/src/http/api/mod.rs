//! The JSON API under `/api/v1` and the probes, one file per tag, plus the
//! request-body extractor that reads the body the middleware parsed.

pub mod auth;
pub mod billing;
pub mod body;
pub mod health;
pub mod licenses;
pub mod public_keys;
