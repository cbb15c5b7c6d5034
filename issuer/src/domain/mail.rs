//! Mail in the outbox: what a mail is, where it stands, and the retry rule.
//!
//! A mail is written to the outbox in the same transaction as the change
//! that needs it (so it is never lost, nor sent for a change that rolled
//! back); the sender (`app::mail`) claims due mail, delivers it and records
//! the outcome through the store.

use std::time::Duration;

use zeroize::Zeroizing;

/// One mail to send.
#[derive(Clone, PartialEq, Eq)]
pub struct Mail {
    /// What the mail is (`license_key`), for the log and the audit trail.
    pub kind: &'static str,
    pub to: String,
    pub subject: String,
    /// Plain-text body.
    pub body: String,
}

impl std::fmt::Debug for Mail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The body may hold a license key.
        f.debug_struct("Mail")
            .field("kind", &self.kind)
            .field("to", &self.to)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

/// A claimed mail is not taken again for this long (seconds): longer than
/// a batch that times out mail by mail. After a crash mid-send the mail is
/// tried again then.
pub const CLAIM_SECS: i64 = 15 * 60;
/// The longest wait between two attempts (seconds).
pub const MAX_RETRY_DELAY_SECS: i64 = 3600;
/// After this many failed attempts a mail is left for an operator.
pub const MAX_ATTEMPTS: i64 = 20;
/// `next_attempt_at` of an unsent mail that will not be tried again.
pub const GAVE_UP: i64 = i64::MAX;
/// The longest `last_error` kept.
const MAX_ERROR_LEN: usize = 300;

/// A mail taken from the outbox to be sent.
pub struct DueMail {
    pub id: String,
    pub kind: String,
    pub recipient: String,
    pub subject: String,
    /// `None` only if the row was tampered with (bodies go with sending).
    pub body: Option<Zeroizing<String>>,
}

/// Why a send failed. `error` never holds the body or the SMTP password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub error: String,
    /// Trying again cannot help (the recipient is not an address).
    pub permanent: bool,
}

impl Failure {
    pub fn transient(error: impl Into<String>) -> Self {
        Failure {
            error: shorten(error.into()),
            permanent: false,
        }
    }

    pub fn permanent(error: impl Into<String>) -> Self {
        Failure {
            error: shorten(error.into()),
            permanent: true,
        }
    }
}

fn shorten(mut text: String) -> String {
    if text.len() > MAX_ERROR_LEN {
        let mut end = MAX_ERROR_LEN;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// What happens to a mail after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    RetryAt { attempts: i64, at: i64 },
    GaveUp { attempts: i64 },
}

impl Next {
    /// The mail's `next_attempt_at` after this decision.
    pub fn next_attempt_at(self) -> i64 {
        match self {
            Next::RetryAt { at, .. } => at,
            Next::GaveUp { .. } => GAVE_UP,
        }
    }

    pub fn attempts(self) -> i64 {
        match self {
            Next::RetryAt { attempts, .. } | Next::GaveUp { attempts } => attempts,
        }
    }
}

/// After a failed attempt at `now` of a mail tried `attempts_before` times:
/// try again later, or give up (a permanent failure, or too many).
pub fn after_failure(
    attempts_before: i64,
    failure: &Failure,
    now: i64,
    retry_initial: Duration,
) -> Next {
    let attempts = attempts_before.saturating_add(1);
    if failure.permanent || attempts >= MAX_ATTEMPTS {
        Next::GaveUp { attempts }
    } else {
        Next::RetryAt {
            attempts,
            at: now.saturating_add(retry_delay(retry_initial, attempts)),
        }
    }
}

/// Seconds to wait after the `attempts`-th failure: the initial delay (at
/// least a second), doubled per further failure, at most an hour.
pub fn retry_delay(retry_initial: Duration, attempts: i64) -> i64 {
    let initial = i64::try_from(retry_initial.as_secs())
        .unwrap_or(i64::MAX)
        .max(1);
    let doublings = u32::try_from(attempts.saturating_sub(1).max(0)).unwrap_or(u32::MAX);
    initial
        .saturating_mul(2_i64.saturating_pow(doublings))
        .min(MAX_RETRY_DELAY_SECS)
}

/// Where a mail in the outbox stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxStatus {
    Sent,
    /// Waiting for its (next) attempt.
    Waiting,
    /// Failed for good or too often; an operator decides (`mail retry`).
    GivenUp,
}

impl OutboxStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxStatus::Sent => "sent",
            OutboxStatus::Waiting => "waiting",
            OutboxStatus::GivenUp => "given_up",
        }
    }

    /// The status of a row sent at `sent_at` (if ever) with its next
    /// attempt at `next_attempt_at`.
    pub fn of(sent_at: Option<i64>, next_attempt_at: i64) -> Self {
        match sent_at {
            Some(_) => OutboxStatus::Sent,
            None if next_attempt_at == GAVE_UP => OutboxStatus::GivenUp,
            None => OutboxStatus::Waiting,
        }
    }
}

/// How much mail waits in the outbox (for the metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxBacklog {
    /// Unsent mails still to be tried.
    pub waiting: u64,
    /// Unsent mails given up on (an operator decides: `mail retry`).
    pub given_up: u64,
    /// When the oldest unsent mail (waiting or given up) was queued.
    pub oldest_unsent_at: Option<i64>,
}

/// One outbox row as an operator sees it: never the body, which can hold
/// a license key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub id: String,
    pub kind: String,
    pub recipient: String,
    pub subject: String,
    pub created_at: i64,
    pub attempts: i64,
    pub status: OutboxStatus,
    pub sent_at: Option<i64>,
    /// When it is tried next (`Waiting` only).
    pub next_attempt_at: Option<i64>,
    pub last_error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_from_the_initial_delay_up_to_an_hour() {
        let delays: Vec<i64> = (1..=9)
            .map(|n| retry_delay(Duration::from_secs(30), n))
            .collect();
        assert_eq!(delays, [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(retry_delay(Duration::from_millis(200), 1), 1);
        assert_eq!(retry_delay(Duration::from_secs(1), 1_000), 3600);
        assert_eq!(retry_delay(Duration::MAX, 1), 3600);
    }

    #[test]
    fn failures_retry_until_permanent_or_too_many() {
        let t = Failure::transient("refused");
        let p = Failure::permanent("no such address");
        let d = Duration::from_secs(30);
        assert_eq!(
            after_failure(0, &t, 100, d),
            Next::RetryAt {
                attempts: 1,
                at: 130
            }
        );
        assert_eq!(after_failure(0, &p, 100, d), Next::GaveUp { attempts: 1 });
        assert_eq!(
            after_failure(MAX_ATTEMPTS - 1, &t, 100, d),
            Next::GaveUp {
                attempts: MAX_ATTEMPTS
            }
        );
        assert_eq!(Next::GaveUp { attempts: 1 }.next_attempt_at(), GAVE_UP);
        let long = Failure::transient("é".repeat(400));
        assert!(long.error.len() <= MAX_ERROR_LEN + '…'.len_utf8());
    }
}
