//! Random-looking Stripe ids (`cus_…`, `evt_…`).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// Random-looking ids: a per-process random key hashed with a counter.
pub(super) struct IdSource {
    pub(super) hasher: RandomState,
    pub(super) counter: AtomicU64,
}

impl IdSource {
    pub(super) fn new() -> IdSource {
        IdSource {
            hasher: RandomState::new(),
            counter: AtomicU64::new(0),
        }
    }

    /// `prefix` followed by `len` base-62 characters.
    pub(super) fn make(&self, prefix: &str, len: usize) -> String {
        const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let mut out = String::with_capacity(prefix.len() + len);
        out.push_str(prefix);
        let mut word = 0u64;
        let mut left = 0;
        for _ in 0..len {
            if left == 0 {
                let mut h = self.hasher.build_hasher();
                h.write_u64(self.counter.fetch_add(1, Ordering::Relaxed));
                word = h.finish();
                left = 10; // 62^10 < 2^64
            }
            out.push(ALPHABET[(word % 62) as usize] as char);
            word /= 62;
            left -= 1;
        }
        out
    }
}
