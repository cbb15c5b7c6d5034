//! The CODITECT license issuer: accounts, licenses, activations and signed
//! license tokens over an HTTP API, plus the operator's admin commands.
//!
//! The layers (see `docs/ARCHITECTURE.md`), each a folder, each importing
//! only the ones before it:
//!
//! | layer | what it holds |
//! |---|---|
//! | [`domain`] | the rules: plans, keys, licenses and seats, subscriptions, tokens; no I/O |
//! | [`store`] | storage: the one interface with all SQL behind it (SQLite) |
//! | [`app`] | the use cases and the process's workers (audit writer, mail sender) |
//! | [`http`] | router, middleware, JSON API and web pages |
//!
//! [`config`], [`keys`], [`logging`] and [`fsutil`] are read by all of them; [`serve`]
//! and [`admin`] put the parts together for the `coditect-issuer` binary.

// `ApiError` is the response enum of the HTTP API (a problem document per
// status); it is only built on the error path, where its size costs nothing.
#![allow(clippy::result_large_err)]

pub mod admin;
pub mod app;
pub mod config;
pub mod domain;
pub mod fsutil;
pub mod http;
pub mod keys;
pub mod logging;
pub mod serve;
pub mod store;
