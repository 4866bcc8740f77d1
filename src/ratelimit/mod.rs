//! Rate limits: how often one caller-chosen key may do something.
//!
//! Used for login brute-force protection (per account and per IP), OTP send and verify caps and
//! general API limits. Two backends sit behind [`RateLimiter`]: [`local::LocalLimiter`]
//! (in-process) for a single node, and [`redis::RedisLimiter`] when several nodes serve one
//! platform and must share every limit, wrapped in [`fallback::FallbackLimiter`] so that a
//! Redis outage degrades to per-node limits instead of refusing everyone.
//!
//! # Semantics
//!
//! Both backends run the same algorithm, GCRA (the generic cell rate algorithm, a token bucket
//! stated in time): a [`Quota`] of `limit` events per `window` allows a burst of `limit` events
//! at once, then one more every *emission interval* `window / limit`. The state per key is one
//! timestamp, the theoretical arrival time (TAT) of the next event at the steady rate. An event
//! is allowed when the TAT is at most `window - interval` ahead of now, and then pushes it one
//! interval further. A limited event changes nothing, so hammering a limited key never extends
//! its lockout. Once the TAT lies in the past the key is indistinguishable from a fresh one,
//! which is when both backends forget it.
//!
//! All arithmetic is in whole microseconds in `Gcra`, which the Redis script mirrors line for
//! line, so the same contract tests pass for both backends. Windows count in whole
//! milliseconds (they are part of the Redis key), and a quota is checked before use: see
//! [`LimitError::InvalidQuota`].
//!
//! Keys are opaque: any string works. Keys longer than [`MAX_KEY_LEN`] bytes are replaced by a
//! SHA-256 digest so that neither backend stores unbounded caller input.

pub mod fallback;
pub mod local;
pub mod redis;

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sha2::{Digest, Sha256};

/// `limit` events per `window`, spread evenly (GCRA): a burst of `limit` is allowed, then one
/// more every `window / limit`.
///
/// The window counts in whole milliseconds; anything finer is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    pub limit: u32,
    pub window: Duration,
}

/// Longest window a [`Quota`] may have. Bounds every timestamp the Redis script computes well
/// below 2^53 microseconds, where Lua's double-precision numbers stop being exact.
pub const MAX_WINDOW: Duration = Duration::from_secs(366 * 24 * 60 * 60);

impl Quota {
    /// `limit` events per `window`.
    pub const fn new(limit: u32, window: Duration) -> Self {
        Quota { limit, window }
    }

    /// `limit` events per second.
    pub const fn per_second(limit: u32) -> Self {
        Quota::new(limit, Duration::from_secs(1))
    }

    /// `limit` events per minute.
    pub const fn per_minute(limit: u32) -> Self {
        Quota::new(limit, Duration::from_secs(60))
    }

    /// `limit` events per hour.
    pub const fn per_hour(limit: u32) -> Self {
        Quota::new(limit, Duration::from_secs(60 * 60))
    }

    /// The window in whole milliseconds, as it appears in Redis keys.
    pub fn window_ms(&self) -> u64 {
        u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX)
    }

    /// How often one more event is allowed once the burst is used up: `window / limit`, in
    /// whole microseconds. `None` for a quota [`LimitError::InvalidQuota`] would reject.
    pub fn emission_interval(&self) -> Option<Duration> {
        Gcra::new(*self)
            .ok()
            .map(|gcra| Duration::from_micros(gcra.interval_us))
    }
}

/// Whether one event may go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The event was counted; `remaining` more are allowed right now.
    Allowed { remaining: u32 },
    /// The event was not counted; the next one is allowed after `retry_after` (never zero).
    Limited { retry_after: Duration },
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allowed { .. })
    }
}

/// What can go wrong while rate limiting.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    /// The shared store cannot be reached or did not answer in time; the caller decides
    /// whether to fail open or closed.
    #[error("rate limiter unavailable: {0}")]
    Unavailable(String),
    /// The quota allows nothing or cannot be represented: a limit of zero, a window shorter than
    /// a millisecond or longer than [`MAX_WINDOW`], or more than one event per microsecond.
    /// A programming error, reported instead of guessing what was meant.
    #[error("invalid rate limit quota: {0:?}")]
    InvalidQuota(Quota),
}

/// Counts events per key and says which may go ahead.
#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Which backend this is, for logs and `/ready`.
    fn backend(&self) -> &'static str;

    /// Whether decisions are made by a stand-in because this backend cannot be reached (see
    /// [`fallback::FallbackLimiter`]).
    fn degraded(&self) -> bool {
        false
    }

    /// Counts one event for `key` under `quota` and says whether it is allowed. A limited event
    /// is not counted.
    ///
    /// The same key under different quotas is limited independently, so one key can carry
    /// both a burst limit and a daily limit.
    async fn hit(&self, key: &str, quota: Quota) -> Result<Decision, LimitError>;

    /// Says what [`hit`](Self::hit) would answer for `key` under `quota` right now, without
    /// counting anything: for limits that count only some outcomes (failed logins per
    /// address), checked before the attempt and hit after it when it failed.
    async fn check(&self, key: &str, quota: Quota) -> Result<Decision, LimitError>;

    /// Forgets `key` under every quota (e.g. after a successful login).
    async fn reset(&self, key: &str) -> Result<(), LimitError>;
}

/// The rate limiter shared by the whole process.
pub type SharedLimiter = Arc<dyn RateLimiter>;

/// Longest key stored as given; longer keys are stored as a digest.
pub const MAX_KEY_LEN: usize = 256;

/// Marks digested keys. A key the caller passes that starts with it is digested too, so no
/// caller key can ever equal the digest of another one.
const DIGEST_MARK: &str = "~sha256:";

/// The key as stored: `key` itself, or a fixed-length digest when it is longer than
/// [`MAX_KEY_LEN`] (or could be mistaken for a digest).
pub(crate) fn stored_key(key: &str) -> Cow<'_, str> {
    if key.len() <= MAX_KEY_LEN && !key.starts_with(DIGEST_MARK) {
        return Cow::Borrowed(key);
    }
    let digest = Sha256::digest(key.as_bytes());
    let mut stored = String::with_capacity(DIGEST_MARK.len() + 2 * digest.len());
    stored.push_str(DIGEST_MARK);
    for byte in digest {
        // Writing to a String cannot fail.
        let _ = write!(stored, "{byte:02x}");
    }
    Cow::Owned(stored)
}

/// GCRA parameters of one quota, in microseconds.
///
/// `interval_us` is the emission interval (`window / limit`), `tolerance_us` how far the TAT may
/// run ahead of now for an event to still be allowed (`interval * (limit - 1)`): together they
/// allow a burst of `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Gcra {
    limit: u32,
    window_ms: u64,
    interval_us: u64,
    tolerance_us: u64,
}

/// The result of one GCRA step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Allowed; store `tat` as the key's new TAT.
    Allowed { tat: u64 },
    /// Limited; store nothing. Allowed again `retry_after_us` from now.
    Limited { retry_after_us: u64 },
}

impl Gcra {
    pub(crate) fn new(quota: Quota) -> Result<Self, LimitError> {
        let invalid = || LimitError::InvalidQuota(quota);
        let window_ms = quota.window_ms();
        if quota.limit == 0 || window_ms == 0 || quota.window > MAX_WINDOW {
            return Err(invalid());
        }
        // Cannot overflow: the window is at most MAX_WINDOW, about 3.2e13 microseconds.
        let window_us = window_ms * 1000;
        let interval_us = window_us / u64::from(quota.limit);
        if interval_us == 0 {
            return Err(invalid());
        }
        Ok(Gcra {
            limit: quota.limit,
            window_ms,
            interval_us,
            tolerance_us: interval_us * u64::from(quota.limit - 1),
        })
    }

    pub(crate) fn limit(&self) -> u32 {
        self.limit
    }

    pub(crate) fn window_ms(&self) -> u64 {
        self.window_ms
    }

    pub(crate) fn interval_us(&self) -> u64 {
        self.interval_us
    }

    pub(crate) fn tolerance_us(&self) -> u64 {
        self.tolerance_us
    }

    /// One event at `now` for a key whose stored TAT is `tat` (`None` when the key is fresh).
    ///
    /// The Redis script implements exactly this; keep the two in step.
    pub(crate) fn step(&self, tat: Option<u64>, now: u64) -> Step {
        // A TAT in the past means a full burst is available: same as a fresh key.
        let tat = tat.map_or(now, |tat| tat.max(now));
        let ahead = tat - now;
        if ahead > self.tolerance_us {
            Step::Limited {
                retry_after_us: ahead - self.tolerance_us,
            }
        } else {
            Step::Allowed {
                tat: tat + self.interval_us,
            }
        }
    }

    /// What `step` would decide at `now`, as a decision, without a new TAT to store.
    pub(crate) fn peek(&self, tat: Option<u64>, now: u64) -> Decision {
        match self.step(tat, now) {
            Step::Allowed { tat } => self.allowed(tat - now),
            Step::Limited { retry_after_us } => Gcra::limited(retry_after_us),
        }
    }

    /// The decision for an allowed event that moved the TAT to `ahead_us` past now.
    pub(crate) fn allowed(&self, ahead_us: u64) -> Decision {
        // `ahead_us` is at most `limit * interval` for an allowed event; every whole interval
        // left below that is one more event allowed right now.
        let budget_us = self.tolerance_us + self.interval_us;
        let remaining = budget_us.saturating_sub(ahead_us) / self.interval_us;
        Decision::Allowed {
            remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
        }
    }

    /// The decision for a limited event that may be retried after `retry_after_us`.
    pub(crate) fn limited(retry_after_us: u64) -> Decision {
        Decision::Limited {
            // Never zero: a limited caller must wait for something.
            retry_after: Duration::from_micros(retry_after_us.max(1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gcra(limit: u32, window_ms: u64) -> Gcra {
        Gcra::new(Quota::new(limit, Duration::from_millis(window_ms))).expect("a valid quota")
    }

    /// Runs `step` and turns it into a decision the way both backends do, updating `tat`.
    fn hit(gcra: &Gcra, tat: &mut Option<u64>, now: u64) -> Decision {
        match gcra.step(*tat, now) {
            Step::Allowed { tat: next } => {
                *tat = Some(next);
                gcra.allowed(next - now)
            }
            Step::Limited { retry_after_us } => Gcra::limited(retry_after_us),
        }
    }

    #[test]
    fn a_burst_of_limit_is_allowed_then_one_per_interval() {
        let gcra = gcra(3, 600);
        let mut tat = None;
        for remaining in [2, 1, 0] {
            assert_eq!(hit(&gcra, &mut tat, 0), Decision::Allowed { remaining });
        }
        assert_eq!(
            hit(&gcra, &mut tat, 0),
            Decision::Limited {
                retry_after: Duration::from_millis(200)
            }
        );
        assert_eq!(
            hit(&gcra, &mut tat, 150_000),
            Decision::Limited {
                retry_after: Duration::from_millis(50)
            }
        );
        assert_eq!(
            hit(&gcra, &mut tat, 200_000),
            Decision::Allowed { remaining: 0 }
        );
        // After a full window of silence the whole burst is back.
        assert_eq!(
            hit(&gcra, &mut tat, 800_000),
            Decision::Allowed { remaining: 2 }
        );
    }

    #[test]
    fn peeking_answers_like_a_hit_and_changes_nothing() {
        let gcra = gcra(2, 1000);
        let mut tat = None;
        assert_eq!(gcra.peek(tat, 0), Decision::Allowed { remaining: 1 });
        assert_eq!(hit(&gcra, &mut tat, 0), Decision::Allowed { remaining: 1 });
        assert_eq!(gcra.peek(tat, 0), Decision::Allowed { remaining: 0 });
        assert_eq!(gcra.peek(tat, 0), Decision::Allowed { remaining: 0 });
        assert_eq!(hit(&gcra, &mut tat, 0), Decision::Allowed { remaining: 0 });
        assert_eq!(
            gcra.peek(tat, 0),
            Decision::Limited {
                retry_after: Duration::from_millis(500)
            }
        );
    }

    #[test]
    fn a_limit_of_one_allows_one_event_per_window() {
        let gcra = gcra(1, 1000);
        let mut tat = None;
        assert_eq!(hit(&gcra, &mut tat, 5), Decision::Allowed { remaining: 0 });
        assert_eq!(
            hit(&gcra, &mut tat, 5),
            Decision::Limited {
                retry_after: Duration::from_secs(1)
            }
        );
        assert_eq!(
            hit(&gcra, &mut tat, 1_000_005),
            Decision::Allowed { remaining: 0 }
        );
    }

    #[test]
    fn quotas_that_allow_nothing_or_cannot_be_represented_are_invalid() {
        for quota in [
            Quota::new(0, Duration::from_secs(1)),
            Quota::new(1, Duration::ZERO),
            Quota::new(1, Duration::from_micros(999)),
            Quota::new(1, MAX_WINDOW + Duration::from_millis(1)),
            Quota::new(2_000, Duration::from_millis(1)),
        ] {
            assert!(
                matches!(Gcra::new(quota), Err(LimitError::InvalidQuota(q)) if q == quota),
                "{quota:?}"
            );
        }
        assert!(Gcra::new(Quota::new(1000, Duration::from_millis(1))).is_ok());
        assert!(Gcra::new(Quota::new(u32::MAX, MAX_WINDOW)).is_ok());
    }

    #[test]
    fn short_keys_are_stored_as_given_and_long_ones_as_a_digest() {
        assert_eq!(stored_key("login:ip:10.0.0.1"), "login:ip:10.0.0.1");
        let longest = "k".repeat(MAX_KEY_LEN);
        assert_eq!(stored_key(&longest), longest.as_str());

        let long = "k".repeat(MAX_KEY_LEN + 1);
        let digest = stored_key(&long);
        assert!(digest.starts_with(DIGEST_MARK));
        assert_eq!(digest.len(), DIGEST_MARK.len() + 64);
        assert_ne!(digest, stored_key(&"k".repeat(MAX_KEY_LEN + 2)));

        // A caller key that looks like a digest is digested itself, so it cannot alias one.
        assert_ne!(stored_key(&digest), digest);
    }
}
