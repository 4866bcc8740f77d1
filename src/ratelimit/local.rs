//! In-process rate limits, for a single node.
//!
//! # Why not `governor`
//!
//! `governor` (already a dependency, and the usual choice for in-process limits) implements
//! the same GCRA, but (as of 0.10) does not fit this trait:
//!
//! - it cannot forget one key: its keyed state stores expose `retain_recent`, `len` and
//!   `shrink_to_fit`, but no removal, so [`RateLimiter::reset`] (after a successful login, say)
//!   has nothing to call;
//! - its quota is fixed per limiter, while every [`RateLimiter::hit`] here names its own, so it
//!   would take one governor limiter per quota, and a reset would have to visit all of them;
//! - it keeps time in nanoseconds from its own clock, while the Redis backend keeps whole
//!   microseconds of server time; sharing `Gcra` keeps both backends' answers identical.
//!
//! Working around the first point means writing our own state store, after which governor
//! would contribute only the few lines of GCRA arithmetic in `Gcra::step`. So the state is
//! kept here: TATs in sharded, mutex-protected maps.
//!
//! # Memory
//!
//! A key's state only matters while its TAT is in the future; after that it is the same as no
//! state at all. Each shard drops such entries when it is next used after
//! [`DEFAULT_SWEEP_INTERVAL`], or sooner when it has doubled in size since its last sweep, so
//! a stream of distinct keys (a botnet's IP addresses) costs memory in proportion to the keys
//! active within the longest window, never more. [`LocalLimiter::forget_idle`] sweeps every
//! shard at once, for a periodic maintenance task.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;

use super::{Decision, Gcra, LimitError, Quota, RateLimiter, Step, stored_key};

/// Number of independently locked shards. A power of two well above the core count keeps
/// contention low; an empty shard costs a mutex and an unallocated map.
const SHARDS: usize = 64;
/// How long a shard keeps entries that no longer matter, at most, while it is in use.
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(10);
/// Size below which a shard never sweeps because it grew: small maps are cheap.
const MIN_GROWTH_SWEEP: usize = 1024;

/// The in-process [`RateLimiter`]: limits count events of this process only.
#[derive(Debug)]
pub struct LocalLimiter {
    // Every TAT is in microseconds since this instant.
    epoch: Instant,
    sweep_interval_us: u64,
    hasher: RandomState,
    shards: Box<[Mutex<Shard>]>,
}

/// One shard: the TATs of the keys that hash to it, for every quota each key was used with.
#[derive(Debug, Default)]
struct Shard {
    // Keyed by the key alone, so that `reset` removes every quota's state in one place.
    // A key is normally used with one or two quotas, so a vector beats a map here.
    keys: HashMap<String, Vec<Slot>>,
    next_sweep_us: u64,
    len_after_sweep: usize,
}

#[derive(Debug)]
struct Slot {
    gcra: Gcra,
    tat: u64,
}

impl LocalLimiter {
    pub fn new() -> Self {
        Self::with_sweep_interval(DEFAULT_SWEEP_INTERVAL)
    }

    /// A limiter whose shards drop idle entries every `interval` (when used); mostly for tests.
    pub fn with_sweep_interval(interval: Duration) -> Self {
        LocalLimiter {
            epoch: Instant::now(),
            sweep_interval_us: duration_us(interval),
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    /// How many keys have state, for metrics and for checking that idle keys are forgotten.
    pub fn tracked_keys(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().keys.len())
            .sum()
    }

    /// Forgets, in every shard, the keys whose state no longer matters.
    pub fn forget_idle(&self) {
        let now = self.now_us();
        let mut forgotten = 0;
        for shard in self.shards.iter() {
            forgotten += shard.lock().sweep(now, self.sweep_interval_us);
        }
        tracing::debug!(forgotten, "forgot idle rate limit keys");
    }

    fn now_us(&self) -> u64 {
        duration_us(self.epoch.elapsed())
    }

    fn shard(&self, key: &str) -> &Mutex<Shard> {
        // SHARDS is a power of two, so masking the hash picks a shard uniformly. Truncating
        // the hash to usize is fine: only its low bits are used.
        let index = (self.hasher.hash_one(key) as usize) & (SHARDS - 1);
        &self.shards[index]
    }
}

impl Default for LocalLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl Shard {
    /// One event for `key`, sweeping first when due.
    fn hit(&mut self, key: &str, gcra: Gcra, now: u64, sweep_interval_us: u64) -> Decision {
        let grown = self.keys.len() >= MIN_GROWTH_SWEEP.max(2 * self.len_after_sweep);
        if now >= self.next_sweep_us || grown {
            let forgotten = self.sweep(now, sweep_interval_us);
            if forgotten > 0 {
                tracing::trace!(forgotten, "forgot idle rate limit keys");
            }
        }

        let slots = match self.keys.get_mut(key) {
            Some(slots) => slots,
            // Allocates only for a key seen for the first time (or again after being idle).
            None => self.keys.entry(key.to_owned()).or_default(),
        };
        let slot = slots.iter_mut().find(|slot| slot.gcra == gcra);
        match gcra.step(slot.as_ref().map(|slot| slot.tat), now) {
            Step::Allowed { tat } => {
                match slot {
                    Some(slot) => slot.tat = tat,
                    None => slots.push(Slot { gcra, tat }),
                }
                gcra.allowed(tat - now)
            }
            // A fresh key is always allowed, so `slots` is not left empty here.
            Step::Limited { retry_after_us } => Gcra::limited(retry_after_us),
        }
    }

    /// Drops every state whose TAT has passed and returns how many keys went.
    fn sweep(&mut self, now: u64, sweep_interval_us: u64) -> usize {
        let before = self.keys.len();
        self.keys.retain(|_, slots| {
            slots.retain(|slot| slot.tat > now);
            !slots.is_empty()
        });
        let after = self.keys.len();
        // Give memory back after a spike, but not for every small fluctuation.
        if self.keys.capacity() > 4 * after.max(16) {
            self.keys.shrink_to_fit();
        }
        self.len_after_sweep = after;
        self.next_sweep_us = now.saturating_add(sweep_interval_us);
        before - after
    }
}

#[async_trait]
impl RateLimiter for LocalLimiter {
    fn backend(&self) -> &'static str {
        "local"
    }

    async fn hit(&self, key: &str, quota: Quota) -> Result<Decision, LimitError> {
        let gcra = Gcra::new(quota)?;
        let key = stored_key(key);
        let mut shard = self.shard(&key).lock();
        // Read the clock under the lock, so that events on one key are timed in the order
        // they are counted and a TAT never moves backwards.
        let now = self.now_us();
        Ok(shard.hit(&key, gcra, now, self.sweep_interval_us))
    }

    async fn check(&self, key: &str, quota: Quota) -> Result<Decision, LimitError> {
        let gcra = Gcra::new(quota)?;
        let key = stored_key(key);
        let shard = self.shard(&key).lock();
        let now = self.now_us();
        let tat = shard
            .keys
            .get(key.as_ref())
            .and_then(|slots| slots.iter().find(|slot| slot.gcra == gcra))
            .map(|slot| slot.tat);
        Ok(gcra.peek(tat, now))
    }

    async fn reset(&self, key: &str) -> Result<(), LimitError> {
        let key = stored_key(key);
        self.shard(&key).lock().keys.remove(key.as_ref());
        Ok(())
    }
}

fn duration_us(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}
