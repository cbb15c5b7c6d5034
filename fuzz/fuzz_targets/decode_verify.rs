//! Fuzzes the token decoder and verifier.
//!
//! Every input goes, as is, to `verifier::authenticate` and `verifier::verify`
//! with a ring holding the fixture's key. Invariants:
//!
//! 1. Nothing panics (libFuzzer reports a panic as a crash).
//! 2. Whatever `authenticate` (and so `verify`) accepts is exactly what the
//!    issuer would produce: `TokenSigner::sign(&claims)` gives back the input
//!    byte for byte, or the input is that inside one CWT tag 61.
//! 3. `verify` is `authenticate` plus the documented time and machine rules:
//!    `verify` at the fixed time and `VerifiedToken::check` at the edges of
//!    the token's validity agree with an independent reference.
//!
//! The signature stands in the way of the claims decoder, so inputs that look
//! like a CBOR map are also signed by the target into a well-formed token (as
//! payload) and verified: the fuzzer then explores claims sets of its own
//! choosing. Such a token may only be refused for its payload, and if it is
//! accepted, invariants 2 and 3 hold for it too.

#![no_main]

use std::sync::LazyLock;

use coditect_verifier_fuzz::{Fixture, check_input};
use libfuzzer_sys::fuzz_target;

static FIXTURE: LazyLock<Fixture> = LazyLock::new(Fixture::new);

// The checks live in the library so that `verifier/tests/fuzz_regression.rs`
// replays the seeds and any crash files through exactly the same code.
fuzz_target!(|data: &[u8]| check_input(&FIXTURE, data));
