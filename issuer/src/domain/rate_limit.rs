//! The rate-limit rule (GCRA, the generic cell rate algorithm) on
//! millisecond timestamps, for counters kept in a database: what one
//! request does to a bucket's state, and what the outcome says (requests
//! left, time to wait). The same rule as the in-process limiters
//! (`governor`), so a limit behaves the same wherever it is counted.
//!
//! A bucket's whole state is one number, its *theoretical arrival time*
//! (TAT, Unix milliseconds): when the bucket would be empty again if no
//! further request came. With interval T (the period divided by the limit
//! N) and tolerance τ = T × (N − 1), a request at `now` is allowed when
//! `TAT − τ ≤ now`, and then moves the TAT to `max(TAT, now) + T`; a refused
//! request changes nothing. A bucket without state, or with a TAT at or
//! before `now`, is fresh: such a row can be deleted without changing any
//! answer.

/// One limit's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Milliseconds between two requests at the sustained rate (at least 1).
    pub interval_ms: i64,
    /// Requests allowed at once (the limit N, at least 1).
    pub burst: u32,
}

impl Gcra {
    /// N requests per `period_ms`: a burst of N, then one more every
    /// period / N (rounded down to the millisecond, at least 1 ms).
    pub fn per_period(burst: u32, period_ms: i64) -> Self {
        let burst = burst.max(1);
        Gcra {
            interval_ms: (period_ms / i64::from(burst)).max(1),
            burst,
        }
    }

    /// τ: how far ahead of `now` the TAT may be for a request to pass.
    pub fn tolerance_ms(&self) -> i64 {
        self.interval_ms
            .saturating_mul(i64::from(self.burst.saturating_sub(1)))
    }

    /// One request at `now_ms` against a bucket whose TAT is `stored`
    /// (`None`: no state). The rule the databases implement.
    pub fn step(&self, stored: Option<i64>, now_ms: i64) -> GcraOutcome {
        let tat = stored.unwrap_or(now_ms);
        if tat.saturating_sub(self.tolerance_ms()) <= now_ms {
            GcraOutcome {
                allowed: true,
                tat_ms: tat.max(now_ms).saturating_add(self.interval_ms),
            }
        } else {
            GcraOutcome {
                allowed: false,
                tat_ms: tat,
            }
        }
    }
}

/// What a request did to its bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcraOutcome {
    pub allowed: bool,
    /// The bucket's TAT after the request (unchanged when refused).
    pub tat_ms: i64,
}

impl GcraOutcome {
    /// Requests that would be allowed now, after this one (0 when refused).
    pub fn remaining(&self, gcra: &Gcra, now_ms: i64) -> u32 {
        if !self.allowed {
            return 0;
        }
        let full = gcra.tolerance_ms().saturating_add(gcra.interval_ms);
        let room = now_ms
            .saturating_add(full)
            .saturating_sub(self.tat_ms)
            .clamp(0, full);
        u32::try_from(room / gcra.interval_ms.max(1))
            .unwrap_or(gcra.burst)
            .min(gcra.burst)
    }

    /// Milliseconds until a request would be allowed (0 when allowed).
    pub fn wait_ms(&self, gcra: &Gcra, now_ms: i64) -> i64 {
        if self.allowed {
            return 0;
        }
        self.tat_ms
            .saturating_sub(gcra.tolerance_ms())
            .saturating_sub(now_ms)
            .max(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_n_then_one_every_interval() {
        // 5 a minute: one every 12 s.
        let g = Gcra::per_period(5, 60_000);
        assert_eq!((g.interval_ms, g.tolerance_ms()), (12_000, 48_000));
        let now = 1_000_000;
        let mut tat = None;
        for left in (0..5).rev() {
            let o = g.step(tat, now);
            assert!(o.allowed);
            assert_eq!(o.remaining(&g, now), left);
            tat = Some(o.tat_ms);
        }
        assert_eq!(tat, Some(now + 60_000));
        let refused = g.step(tat, now);
        assert_eq!(
            refused,
            GcraOutcome {
                allowed: false,
                tat_ms: now + 60_000
            }
        );
        assert_eq!(refused.wait_ms(&g, now), 12_000);
        assert_eq!(refused.remaining(&g, now), 0);
        assert!(!g.step(tat, now + 11_999).allowed);
        let again = g.step(tat, now + 12_000);
        assert!(again.allowed);
        assert_eq!(again.remaining(&g, now + 12_000), 0);
        // A bucket whose TAT has passed is as good as a fresh one.
        assert_eq!(g.step(Some(now), now + 5), g.step(None, now + 5));
    }

    #[test]
    fn odd_rates_keep_an_interval_of_at_least_a_millisecond() {
        assert_eq!(Gcra::per_period(7, 60_000).interval_ms, 8_571);
        let g = Gcra::per_period(1_000_000, 1_000);
        assert_eq!(g.interval_ms, 1);
        assert_eq!(g.step(None, 0).remaining(&g, 0), 999_999);
        let one = Gcra::per_period(1, 3_600_000);
        let first = one.step(None, 0);
        assert_eq!(first.remaining(&one, 0), 0);
        assert_eq!(one.step(Some(first.tat_ms), 0).wait_ms(&one, 0), 3_600_000);
    }
}
