//! The CODITECT license issuer: accounts, licenses, activations and signed
//! license tokens over an HTTP API, plus the operator's admin commands.
//!
//! The binary `coditect-issuer` is a thin command line over this library;
//! the library form lets tests drive the API in-process.

// `ApiError` is the response enum of the HTTP API (a problem document per
// status); it is only built on the error path, where its size costs nothing.
#![allow(clippy::result_large_err)]

pub mod accounts;
pub mod admin;
pub mod api;
pub mod audit;
pub mod billing;
pub mod config;
pub mod db;
pub mod fsutil;
pub mod keys;
pub mod license_key;
pub mod licensing;
pub mod mail;
pub mod passwords;
pub mod plans;
pub mod serve;
pub mod tokens;
pub mod web;
