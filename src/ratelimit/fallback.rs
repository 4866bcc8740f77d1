//! Degrade, don't stop: a shared limiter (Redis) with the node's own in-process limiter standing
//! in while the shared one cannot be reached.
//!
//! Refusing every login and OTP check while Redis is down would turn a cache outage into a
//! platform outage, though the store (which holds the accounts) is fine. During an outage each
//! node limits on its own: an attacker spreading guesses over N nodes gets N times the budget
//! for as long as it lasts, which is the price of staying up. The outage is logged once (warn),
//! every decision made by the stand-in is counted (`hexmarket_rate_limiter_fallbacks_total`),
//! and `/ready` names the degraded state.
//!
//! While degraded, callers do not wait for Redis on every call (a blackholed Redis would add
//! the command timeout to each login): one call per [`PROBE_INTERVAL`] tries Redis again, and
//! the first that succeeds ends the outage. Counts made locally during the outage are not
//! carried over to Redis; they only ever made the limit stricter on this node.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use prometheus_client::metrics::counter::Counter;

use super::local::LocalLimiter;
use super::{Decision, LimitError, Quota, RateLimiter, SharedLimiter};

/// How often, while degraded, one call tries the shared limiter again.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// A shared limiter with a local stand-in for its outages.
pub struct FallbackLimiter {
    shared: SharedLimiter,
    local: LocalLimiter,
    degraded: AtomicBool,
    /// Milliseconds since `epoch` of the last try of `shared` while degraded.
    last_probe_ms: AtomicU64,
    epoch: Instant,
    fallbacks: Counter,
}

impl FallbackLimiter {
    /// Limits with `shared`, and with a fresh local limiter while `shared` is unavailable,
    /// counting each such decision in `fallbacks`.
    pub fn new(shared: SharedLimiter, fallbacks: Counter) -> Self {
        FallbackLimiter {
            shared,
            local: LocalLimiter::new(),
            degraded: AtomicBool::new(false),
            last_probe_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            fallbacks,
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether this call should go to the shared limiter: always when it is healthy, and
    /// for one caller per probe interval while it is not.
    fn try_shared(&self) -> bool {
        if !self.degraded.load(Ordering::Acquire) {
            return true;
        }
        let now = self.now_ms();
        let last = self.last_probe_ms.load(Ordering::Acquire);
        let interval = u64::try_from(PROBE_INTERVAL.as_millis()).unwrap_or(u64::MAX);
        now.saturating_sub(last) >= interval
            && self
                .last_probe_ms
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    /// Runs `shared`, or `local` when the shared limiter is (or just turned out to be)
    /// unreachable. Only [`LimitError::Unavailable`] falls back: an invalid quota is the
    /// caller's bug on either backend.
    async fn decide<T>(
        &self,
        shared: impl Future<Output = Result<T, LimitError>>,
        local: impl Future<Output = Result<T, LimitError>>,
    ) -> Result<T, LimitError> {
        if self.try_shared() {
            match shared.await {
                Ok(answer) => {
                    if self.degraded.swap(false, Ordering::AcqRel) {
                        tracing::info!(
                            backend = self.shared.backend(),
                            "shared rate limiter reachable again; limits are shared again"
                        );
                    }
                    return Ok(answer);
                }
                Err(LimitError::Unavailable(why)) => {
                    self.last_probe_ms.store(self.now_ms(), Ordering::Release);
                    if !self.degraded.swap(true, Ordering::AcqRel) {
                        tracing::warn!(
                            backend = self.shared.backend(),
                            error = %why,
                            "shared rate limiter unreachable; this node limits on its own until it returns"
                        );
                    }
                }
                Err(other) => return Err(other),
            }
        }
        self.fallbacks.inc();
        local.await
    }
}

#[async_trait]
impl RateLimiter for FallbackLimiter {
    fn backend(&self) -> &'static str {
        if self.degraded() {
            self.local.backend()
        } else {
            self.shared.backend()
        }
    }

    fn degraded(&self) -> bool {
        self.degraded.load(Ordering::Acquire)
    }

    async fn hit(&self, key: &str, quota: Quota) -> Result<Decision, LimitError> {
        self.decide(self.shared.hit(key, quota), self.local.hit(key, quota))
            .await
    }

    async fn check(&self, key: &str, quota: Quota) -> Result<Decision, LimitError> {
        self.decide(self.shared.check(key, quota), self.local.check(key, quota))
            .await
    }

    async fn reset(&self, key: &str) -> Result<(), LimitError> {
        // A key counted locally during an outage must be forgotten too.
        self.local.reset(key).await?;
        self.decide(self.shared.reset(key), async { Ok(()) }).await
    }
}

/// Wraps `shared` so that its outages fall back to a local limiter.
pub fn with_local_fallback(shared: SharedLimiter, fallbacks: Counter) -> SharedLimiter {
    Arc::new(FallbackLimiter::new(shared, fallbacks))
}
