//! Redis rate limits, shared by every node using the same Redis and prefix.
//!
//! Each hit (and each check, which runs the same script without writing) is ONE Lua script (sent with EVALSHA, loaded again by itself after a Redis
//! restart), so reading and updating a key's state is atomic however many nodes hit it at
//! once. The script reads the clock with `TIME`, so every node measures against the same
//! clock whatever the skew between them. (Writing after `TIME` needs script effects
//! replication, the default since Redis 5.) A key's state is stored with an expiry set to the
//! moment it stops mattering, so idle keys vanish from Redis by themselves.
//!
//! `reset` must forget a key under every quota it was used with, but the state of each quota
//! lives under its own Redis key. Rather than SCAN the keyspace, each hit also records its
//! state key in a small per-key index set (expiring with the longest-lived state), which
//! `reset` deletes together with the states it lists, again in one script. The reset script
//! deletes keys it reads from the index, which standalone Redis allows; Redis Cluster would
//! additionally need the state and index keys in one hash slot.
//!
//! The connection is opened on first use, so a node can start while Redis is down; nothing
//! waits for Redis longer than [`COMMAND_TIMEOUT`], and every failure is
//! [`LimitError::Unavailable`], leaving the caller to fail open or closed.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use redis::aio::ConnectionManager;
use redis::{ErrorKind, RedisError, ServerErrorKind};
use tokio::time::timeout;

use super::{Decision, Gcra, LimitError, Quota, RateLimiter, stored_key};
use crate::redis_link::RedisLink;

/// Longest a caller waits for one hit or reset, connecting included.
pub const COMMAND_TIMEOUT: Duration = crate::redis_link::COMMAND_TIMEOUT;

/// One GCRA step, mirroring [`Gcra::step`] in whole microseconds of Redis server time.
///
/// KEYS[1]: the state key (holds the TAT), KEYS[2]: the key's index set.
/// ARGV[1]: emission interval, ARGV[2]: tolerance, both in microseconds; ARGV[3]: `1` to count
/// the event (a hit), `0` to only say what a hit would answer (a check), writing nothing.
/// Returns `{1, tat - now}` when allowed, `{0, retry_after}` when limited.
///
/// Every number stays below 2^53 (the quota's window is bounded), so Lua's doubles are exact.
const HIT_SCRIPT: &str = r"
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])

-- A missing (or unreadable) state, or a TAT in the past, is a fresh key.
local tat = now
local stored = redis.call('GET', KEYS[1])
if stored then
  local parsed = tonumber(stored)
  if parsed and parsed > now then
    tat = parsed
  end
end

local ahead = tat - now
if ahead > tolerance then
  -- Limited: nothing is written, so retrying while limited does not extend the wait.
  return {0, ahead - tolerance}
end

local next_tat = tat + interval
if ARGV[3] == '0' then
  return {1, next_tat - now}
end
-- The state matters until its TAT passes; after that a missing key means the same.
local ttl_ms = math.ceil((next_tat - now) / 1000)
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', ttl_ms)
redis.call('SADD', KEYS[2], KEYS[1])
if redis.call('PTTL', KEYS[2]) < ttl_ms then
  redis.call('PEXPIRE', KEYS[2], ttl_ms)
end
return {1, next_tat - now}
";

/// Deletes a key's index set (KEYS[1]) and every state it lists.
const RESET_SCRIPT: &str = r"
local states = redis.call('SMEMBERS', KEYS[1])
for _, state in ipairs(states) do
  redis.call('DEL', state)
end
redis.call('DEL', KEYS[1])
return #states
";

/// Every Redis key this backend uses, so the layout lives in one place. `key` is always the
/// stored form of a caller's key (see [`stored_key`]).
mod keys {
    use super::Gcra;

    /// The TAT of `key` under one quota.
    pub(super) fn state(prefix: &str, gcra: &Gcra, key: &str) -> String {
        format!("{prefix}:rl:{}:{}:{key}", gcra.limit(), gcra.window_ms())
    }

    /// The set of `key`'s state keys, for `reset`. `idx` cannot be mistaken for the digits of
    /// a state key's limit, so the two never collide.
    pub(super) fn index(prefix: &str, key: &str) -> String {
        format!("{prefix}:rl:idx:{key}")
    }
}

/// The Redis-backed [`RateLimiter`]: every node using the same Redis and prefix shares every
/// limit.
pub struct RedisLimiter {
    link: RedisLink,
    prefix: String,
    hit_script: LuaScript,
    reset_script: LuaScript,
    // Whether the last call reached Redis, so that an outage is logged once, not per call.
    reachable: AtomicBool,
}

impl RedisLimiter {
    /// Creates the limiter without contacting Redis: the connection is opened on first use, so
    /// a process can start while Redis is down.
    ///
    /// # Errors
    ///
    /// [`LimitError::Unavailable`] when `url` is not a Redis URL.
    pub fn new(url: &str, prefix: &str) -> Result<Self, LimitError> {
        Ok(RedisLimiter {
            link: RedisLink::new(url).map_err(LimitError::Unavailable)?,
            prefix: prefix.to_owned(),
            hit_script: LuaScript::new(HIT_SCRIPT),
            reset_script: LuaScript::new(RESET_SCRIPT),
            reachable: AtomicBool::new(true),
        })
    }

    /// The Redis key holding `key`'s state under `quota`, for operators inspecting Redis and
    /// for tests.
    ///
    /// # Errors
    ///
    /// [`LimitError::InvalidQuota`] for a quota `hit` would reject.
    pub fn redis_key_for(&self, key: &str, quota: Quota) -> Result<String, LimitError> {
        let gcra = Gcra::new(quota)?;
        Ok(keys::state(&self.prefix, &gcra, &stored_key(key)))
    }

    /// The Redis key listing `key`'s states, for operators and tests.
    pub fn redis_index_key_for(&self, key: &str) -> String {
        keys::index(&self.prefix, &stored_key(key))
    }

    /// Runs `script` with `keys` and `args`, bounded by [`COMMAND_TIMEOUT`], and keeps track
    /// of whether Redis is reachable.
    async fn run<T: redis::FromRedisValue>(
        &self,
        what: &'static str,
        script: &LuaScript,
        keys: &[&str],
        args: &[u64],
    ) -> Result<T, LimitError> {
        let call = async {
            let mut connection = self
                .link
                .connection()
                .await
                .map_err(LimitError::Unavailable)?;
            script
                .invoke::<T>(&mut connection, keys, args)
                .await
                .map_err(unavailable)
        };
        let result = match timeout(COMMAND_TIMEOUT, call).await {
            Ok(result) => result,
            Err(_) => Err(LimitError::Unavailable(format!(
                "Redis did not answer {what} within {COMMAND_TIMEOUT:?}"
            ))),
        };
        match &result {
            Ok(_) => {
                if !self.reachable.swap(true, Ordering::Relaxed) {
                    tracing::info!(prefix = %self.prefix, "Redis rate limiter reachable again");
                }
            }
            Err(err) => {
                if self.reachable.swap(false, Ordering::Relaxed) {
                    tracing::warn!(prefix = %self.prefix, error = %err, "Redis rate limiter unavailable");
                } else {
                    tracing::debug!(prefix = %self.prefix, error = %err, "Redis rate limiter still unavailable");
                }
            }
        }
        result
    }
}

impl fmt::Debug for RedisLimiter {
    // Written by hand so that the URL, which may hold a password, is never logged.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Whether a GCRA step records the event (a hit) or only reports what a hit would decide.
#[derive(Clone, Copy)]
enum Consume {
    Yes,
    No,
}

impl RedisLimiter {
    /// One step of the hit script; the script writes nothing when told not to consume.
    async fn gcra(
        &self,
        key: &str,
        quota: Quota,
        consume: Consume,
    ) -> Result<Decision, LimitError> {
        let gcra = Gcra::new(quota)?;
        let key = stored_key(key);
        let state = keys::state(&self.prefix, &gcra, &key);
        let index = keys::index(&self.prefix, &key);
        let (what, write) = match consume {
            Consume::Yes => ("a rate limit hit", 1),
            Consume::No => ("a rate limit check", 0),
        };
        let reply = self
            .run(
                what,
                &self.hit_script,
                &[state.as_str(), index.as_str()],
                &[gcra.interval_us(), gcra.tolerance_us(), write],
            )
            .await?;
        decision(&gcra, reply)
    }
}

#[async_trait]
impl RateLimiter for RedisLimiter {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn hit(&self, key: &str, quota: Quota) -> Result<Decision, LimitError> {
        self.gcra(key, quota, Consume::Yes).await
    }

    async fn check(&self, key: &str, quota: Quota) -> Result<Decision, LimitError> {
        self.gcra(key, quota, Consume::No).await
    }

    async fn reset(&self, key: &str) -> Result<(), LimitError> {
        let index = keys::index(&self.prefix, &stored_key(key));
        let _states: i64 = self
            .run(
                "a rate limit reset",
                &self.reset_script,
                &[index.as_str()],
                &[],
            )
            .await?;
        Ok(())
    }
}

/// A Lua script run with EVALSHA, so that each call sends the digest rather than the source.
///
/// `redis::Script` does the same but needs the `redis` crate's `script` feature, which this
/// crate does not enable. This needs no SHA-1 of its own either: Redis computes the digest and
/// returns it from SCRIPT LOAD.
struct LuaScript {
    source: &'static str,
    // The digest from the last SCRIPT LOAD; it never changes, but Redis may forget the script
    // (a restart, SCRIPT FLUSH), which NOSCRIPT reports and a reload repairs.
    sha: Mutex<Option<String>>,
}

impl LuaScript {
    fn new(source: &'static str) -> Self {
        LuaScript {
            source,
            sha: Mutex::new(None),
        }
    }

    async fn invoke<T: redis::FromRedisValue>(
        &self,
        connection: &mut ConnectionManager,
        keys: &[&str],
        args: &[u64],
    ) -> Result<T, RedisError> {
        let known = self.sha.lock().clone();
        let sha = match known {
            Some(sha) => sha,
            None => self.load(connection).await?,
        };
        match Self::evalsha(&sha, keys, args)
            .query_async(connection)
            .await
        {
            Err(err) if err.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                tracing::debug!("Redis forgot the rate limit script; loading it again");
                let sha = self.load(connection).await?;
                Self::evalsha(&sha, keys, args)
                    .query_async(connection)
                    .await
            }
            result => result,
        }
    }

    async fn load(&self, connection: &mut ConnectionManager) -> Result<String, RedisError> {
        let sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(self.source)
            .query_async(connection)
            .await?;
        *self.sha.lock() = Some(sha.clone());
        Ok(sha)
    }

    fn evalsha(sha: &str, keys: &[&str], args: &[u64]) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(sha).arg(keys.len()).arg(keys).arg(args);
        cmd
    }
}

/// The decision the hit script answered with `{allowed, micros}`.
fn decision(gcra: &Gcra, (allowed, micros): (i64, i64)) -> Result<Decision, LimitError> {
    // The script only answers `{0|1, non-negative}`; anything else means something other than
    // this script answered, and guessing either way could lock users out.
    match (allowed, u64::try_from(micros)) {
        (1, Ok(ahead_us)) => Ok(gcra.allowed(ahead_us)),
        (0, Ok(retry_after_us)) => Ok(Gcra::limited(retry_after_us)),
        _ => Err(LimitError::Unavailable(format!(
            "unexpected rate limit script reply {{{allowed}, {micros}}}"
        ))),
    }
}

fn unavailable(err: RedisError) -> LimitError {
    LimitError::Unavailable(err.to_string())
}
