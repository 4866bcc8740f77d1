//! The rate limiter contract, run against both backends, plus what is specific to each.
//!
//! The Redis tests use the real Redis at `redis://127.0.0.1:6379` and FAIL when it is not
//! there: Redis is part of every dev and CI machine, a missing one must not go unnoticed. Each
//! test uses its own prefix and keys, so tests (and concurrent runs) can share one Redis.
//! Quotas are short (a few per few hundred milliseconds) to keep the suite fast.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hexmarket::ratelimit::fallback::FallbackLimiter;
use hexmarket::ratelimit::local::LocalLimiter;
use hexmarket::ratelimit::redis::RedisLimiter;
use hexmarket::ratelimit::{Decision, LimitError, Quota, RateLimiter};

const REDIS_URL: &str = "redis://127.0.0.1:6379";
/// Longest wait for any one call; only reached when the limiter is broken.
const PATIENCE: Duration = Duration::from_secs(5);
/// 3 per 600 ms: a burst of 3, then one every 200 ms.
const SHORT: Quota = Quota::new(3, Duration::from_millis(600));
/// `SHORT`'s emission interval.
const SHORT_INTERVAL: Duration = Duration::from_millis(200);
/// A quota nothing in a test outlives, for properties that must not depend on timing.
const LONG: Quota = Quota::new(5, Duration::from_secs(60));

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn new_local_limiter() -> Arc<LocalLimiter> {
    Arc::new(LocalLimiter::new())
}

/// A prefix no other test (or test run) uses.
fn unique_prefix() -> String {
    format!("test_{}", uuid::Uuid::new_v4().simple())
}

/// A key no other test uses, shaped like the keys callers build.
fn unique_key(what: &str) -> String {
    format!("{what}:{}@example.com", uuid::Uuid::new_v4().simple())
}

fn new_redis_limiter() -> Arc<RedisLimiter> {
    redis_limiter_with_prefix(&unique_prefix())
}

fn redis_limiter_with_prefix(prefix: &str) -> Arc<RedisLimiter> {
    Arc::new(RedisLimiter::new(REDIS_URL, prefix).expect("RedisLimiter::new does not connect"))
}

/// Awaits `future`, failing the test instead of hanging when it takes longer than `PATIENCE`.
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(PATIENCE, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what} did not finish within {PATIENCE:?}"),
    }
}

async fn hit(limiter: &dyn RateLimiter, key: &str, quota: Quota) -> Decision {
    match within("hit", limiter.hit(key, quota)).await {
        Ok(decision) => decision,
        Err(err) => panic!(
            "hit on the {} limiter failed (the Redis tests need Redis at {REDIS_URL}): {err}",
            limiter.backend()
        ),
    }
}

async fn reset(limiter: &dyn RateLimiter, key: &str) {
    if let Err(err) = within("reset", limiter.reset(key)).await {
        panic!(
            "reset on the {} limiter failed (the Redis tests need Redis at {REDIS_URL}): {err}",
            limiter.backend()
        );
    }
}

async fn assert_allowed(limiter: &dyn RateLimiter, key: &str, quota: Quota, remaining: u32) {
    let decision = hit(limiter, key, quota).await;
    assert_eq!(
        decision,
        Decision::Allowed { remaining },
        "{key:?} under {quota:?}"
    );
}

/// Hits `key` until it is limited, which must take exactly `quota.limit` allowed hits (the key
/// is expected to be fresh); returns the limited hit's `retry_after`.
async fn exhaust(limiter: &dyn RateLimiter, key: &str, quota: Quota) -> Duration {
    for remaining in (0..quota.limit).rev() {
        assert_allowed(limiter, key, quota, remaining).await;
    }
    assert_limited(limiter, key, quota).await
}

async fn assert_limited(limiter: &dyn RateLimiter, key: &str, quota: Quota) -> Duration {
    match hit(limiter, key, quota).await {
        Decision::Limited { retry_after } => {
            assert!(retry_after > Duration::ZERO, "retry_after is never zero");
            retry_after
        }
        allowed => panic!("{key:?} under {quota:?}: expected to be limited, got {allowed:?}"),
    }
}

async fn check(limiter: &dyn RateLimiter, key: &str, quota: Quota) -> Decision {
    match within("check", limiter.check(key, quota)).await {
        Ok(decision) => decision,
        Err(err) => panic!("check on the {} limiter failed: {err}", limiter.backend()),
    }
}

// ---------------------------------------------------------------------------------------------
// The contract, for any backend
// ---------------------------------------------------------------------------------------------

async fn checking_answers_what_a_hit_would_and_counts_nothing(limiter: Arc<dyn RateLimiter>) {
    let key = unique_key("login:ip");
    for _ in 0..10 {
        assert_eq!(
            check(&*limiter, &key, LONG).await,
            Decision::Allowed {
                remaining: LONG.limit - 1
            }
        );
    }
    for remaining in (0..LONG.limit).rev() {
        assert_eq!(
            check(&*limiter, &key, LONG).await,
            Decision::Allowed { remaining }
        );
        assert_allowed(&*limiter, &key, LONG, remaining).await;
    }
    let Decision::Limited { retry_after } = check(&*limiter, &key, LONG).await else {
        panic!("a checked key past its limit must be limited");
    };
    let hit_wait = assert_limited(&*limiter, &key, LONG).await;
    assert!(retry_after >= hit_wait && retry_after <= LONG.window);
    // A reset is seen by checks too; other quotas of the key were never touched.
    assert_eq!(
        check(&*limiter, &key, SHORT).await,
        Decision::Allowed {
            remaining: SHORT.limit - 1
        }
    );
    reset(&*limiter, &key).await;
    assert!(check(&*limiter, &key, LONG).await.is_allowed());
}

async fn a_burst_of_exactly_the_limit_is_allowed_then_the_key_is_limited_until_the_next_emission(
    limiter: Arc<dyn RateLimiter>,
) {
    let key = unique_key("login:account");
    let started = Instant::now();
    let retry_after = exhaust(&*limiter, &key, SHORT).await;
    let elapsed = started.elapsed();

    // The next event is due one emission interval after the first, however long the burst
    // took; 1 ms of slack covers the backends' microsecond rounding.
    assert!(
        retry_after <= SHORT_INTERVAL,
        "retry_after {retry_after:?} exceeds the emission interval"
    );
    assert!(
        retry_after + Duration::from_millis(1) >= SHORT_INTERVAL.saturating_sub(elapsed),
        "retry_after {retry_after:?} is too short: the burst took only {elapsed:?}"
    );
    // Still limited when asked again.
    assert_limited(&*limiter, &key, SHORT).await;
}

async fn the_remaining_count_goes_down_by_one_per_allowed_event(limiter: Arc<dyn RateLimiter>) {
    let key = unique_key("otp:send:+4915112345678");
    let quota = Quota::new(7, Duration::from_secs(60));
    for remaining in [6, 5, 4, 3, 2, 1, 0] {
        assert_allowed(&*limiter, &key, quota, remaining).await;
    }
    assert_limited(&*limiter, &key, quota).await;
}

async fn one_more_event_is_allowed_after_waiting_retry_after(limiter: Arc<dyn RateLimiter>) {
    let key = unique_key("login:ip");
    let retry_after = exhaust(&*limiter, &key, SHORT).await;
    tokio::time::sleep(retry_after).await;
    assert_allowed(&*limiter, &key, SHORT, 0).await;

    // Only one: the next one is again an emission interval away.
    let again = assert_limited(&*limiter, &key, SHORT).await;
    assert!(again <= SHORT_INTERVAL, "{again:?}");
    assert!(again > SHORT_INTERVAL / 2, "{again:?}");
}

async fn the_whole_burst_is_back_after_a_quiet_window(limiter: Arc<dyn RateLimiter>) {
    let key = unique_key("api:token");
    let quota = Quota::new(3, Duration::from_millis(300));
    exhaust(&*limiter, &key, quota).await;
    tokio::time::sleep(quota.window).await;
    exhaust(&*limiter, &key, quota).await;
}

async fn hits_while_limited_are_not_counted(limiter: Arc<dyn RateLimiter>) {
    let key = unique_key("otp:verify");
    let started = Instant::now();
    let mut previous = exhaust(&*limiter, &key, SHORT).await;

    // Hammer the key: it must open again one emission interval after the burst, as if nobody
    // had knocked in between, and the wait it announces must only ever shrink.
    let mut knocks = 0;
    loop {
        match hit(&*limiter, &key, SHORT).await {
            Decision::Allowed { remaining } => {
                assert_eq!(remaining, 0);
                break;
            }
            Decision::Limited { retry_after } => {
                assert!(
                    retry_after <= previous,
                    "the wait grew from {previous:?} to {retry_after:?} while limited"
                );
                previous = retry_after;
                knocks += 1;
            }
        }
        assert!(
            started.elapsed() < SHORT_INTERVAL + Duration::from_millis(150),
            "still limited {:?} after the burst, with an emission interval of {SHORT_INTERVAL:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(knocks >= 10, "only {knocks} hits while limited");
    let next = assert_limited(&*limiter, &key, SHORT).await;
    assert!(next <= SHORT_INTERVAL, "{next:?}");
}

async fn keys_are_limited_independently_of_each_other(limiter: Arc<dyn RateLimiter>) {
    let key = unique_key("login:account");
    exhaust(&*limiter, &key, LONG).await;
    // Keys that contain, extend or merely resemble the limited one are other keys.
    for other in [
        unique_key("login:account"),
        format!("{key}:"),
        format!("{key}x"),
        key[..key.len() - 1].to_owned(),
        key.to_uppercase(),
        format!(" {key}"),
        String::new(),
    ] {
        assert_allowed(&*limiter, &other, LONG, LONG.limit - 1).await;
    }
    assert_limited(&*limiter, &key, LONG).await;
}

async fn the_same_key_under_different_quotas_is_limited_independently(
    limiter: Arc<dyn RateLimiter>,
) {
    let key = unique_key("login:ip:10.0.0.1");
    exhaust(&*limiter, &key, SHORT).await;
    let other_limit = Quota::new(SHORT.limit + 1, SHORT.window);
    let other_window = Quota::new(SHORT.limit, SHORT.window + Duration::from_millis(1));
    assert_allowed(&*limiter, &key, other_limit, other_limit.limit - 1).await;
    assert_allowed(&*limiter, &key, other_window, other_window.limit - 1).await;
    assert_limited(&*limiter, &key, SHORT).await;
}

async fn reset_lets_a_limited_key_through_again_under_every_quota(limiter: Arc<dyn RateLimiter>) {
    let key = unique_key("login:account");
    let bystander = unique_key("login:account");
    exhaust(&*limiter, &key, LONG).await;
    exhaust(&*limiter, &key, SHORT).await;
    exhaust(&*limiter, &bystander, LONG).await;

    reset(&*limiter, &key).await;

    exhaust(&*limiter, &key, LONG).await;
    exhaust(&*limiter, &key, SHORT).await;
    // Only the reset key is forgotten.
    assert_limited(&*limiter, &bystander, LONG).await;
}

async fn resetting_a_key_that_was_never_hit_succeeds(limiter: Arc<dyn RateLimiter>) {
    reset(&*limiter, &unique_key("never:seen")).await;
}

async fn concurrent_hits_on_one_key_allow_exactly_the_limit(limiter: Arc<dyn RateLimiter>) {
    let key = unique_key("api:burst");
    let quota = Quota::new(10, Duration::from_secs(60));
    let hits: Vec<_> = (0..50)
        .map(|_| {
            let limiter = limiter.clone();
            let key = key.clone();
            tokio::spawn(async move { hit(&*limiter, &key, quota).await })
        })
        .collect();
    let mut remaining_seen = BTreeSet::new();
    let mut limited = 0;
    for task in hits {
        match within("a concurrent hit", task).await.expect("hit task") {
            Decision::Allowed { remaining } => {
                assert!(
                    remaining_seen.insert(remaining),
                    "remaining {remaining} reported twice"
                );
            }
            Decision::Limited { .. } => limited += 1,
        }
    }
    assert_eq!(remaining_seen, (0..10).collect::<BTreeSet<u32>>());
    assert_eq!(limited, 40);
}

async fn keys_of_any_length_and_content_are_accepted_and_kept_apart(limiter: Arc<dyn RateLimiter>) {
    let base = unique_key("login:account");
    let long = format!("{base}:{}", "x".repeat(10_000));
    let long_twin = format!("{}y", &long[..long.len() - 1]);
    let unicode = format!("{base}:Zoë 🚲 \u{0}\n*?[]{{}}");
    for key in [&long, &long_twin, &unicode] {
        exhaust(&*limiter, key, LONG).await;
    }
    reset(&*limiter, &long).await;
    assert_allowed(&*limiter, &long, LONG, LONG.limit - 1).await;
    assert_limited(&*limiter, &long_twin, LONG).await;
    assert_limited(&*limiter, &unicode, LONG).await;
}

async fn quotas_that_allow_nothing_are_rejected(limiter: Arc<dyn RateLimiter>) {
    let key = unique_key("api");
    for quota in [
        Quota::new(0, Duration::from_secs(1)),
        Quota::new(1, Duration::ZERO),
        Quota::new(1, Duration::from_micros(500)),
    ] {
        let result = within("hit", limiter.hit(&key, quota)).await;
        assert!(
            matches!(result, Err(LimitError::InvalidQuota(q)) if q == quota),
            "{quota:?}: {result:?}"
        );
    }
}

/// Defines one test per contract property, each on a fresh limiter from `$new_limiter`. The
/// runtime has several threads so that concurrent hits really race.
macro_rules! contract_tests {
    ($new_limiter:expr) => {
        contract_tests!(@each $new_limiter;
            a_burst_of_exactly_the_limit_is_allowed_then_the_key_is_limited_until_the_next_emission,
            the_remaining_count_goes_down_by_one_per_allowed_event,
            one_more_event_is_allowed_after_waiting_retry_after,
            the_whole_burst_is_back_after_a_quiet_window,
            hits_while_limited_are_not_counted,
            keys_are_limited_independently_of_each_other,
            the_same_key_under_different_quotas_is_limited_independently,
            reset_lets_a_limited_key_through_again_under_every_quota,
            resetting_a_key_that_was_never_hit_succeeds,
            concurrent_hits_on_one_key_allow_exactly_the_limit,
            keys_of_any_length_and_content_are_accepted_and_kept_apart,
            quotas_that_allow_nothing_are_rejected,
            checking_answers_what_a_hit_would_and_counts_nothing,
        );
    };
    (@each $new_limiter:expr; $($property:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $property() {
                super::$property($new_limiter).await;
            }
        )+
    };
}

// ---------------------------------------------------------------------------------------------
// LocalLimiter
// ---------------------------------------------------------------------------------------------

mod local_limiter {
    use super::*;

    contract_tests!(new_local_limiter());

    #[tokio::test]
    async fn reports_its_backend_as_local() {
        assert_eq!(new_local_limiter().backend(), "local");
    }

    #[tokio::test]
    async fn idle_keys_are_forgotten_once_their_state_no_longer_matters() {
        let limiter = new_local_limiter();
        // One event leaves a key's state relevant for one emission interval: 150 ms here.
        let quota = Quota::new(2, Duration::from_millis(300));
        for i in 0..200 {
            hit(&*limiter, &format!("api:{i}"), quota).await;
        }
        limiter.forget_idle();
        assert_eq!(limiter.tracked_keys(), 200, "every key still matters");

        tokio::time::sleep(Duration::from_millis(200)).await;
        limiter.forget_idle();
        assert_eq!(limiter.tracked_keys(), 0);
    }

    #[tokio::test]
    async fn a_stream_of_distinct_keys_does_not_grow_memory_without_bound() {
        let limiter = Arc::new(LocalLimiter::with_sweep_interval(Duration::from_millis(20)));
        let quota = Quota::new(1, Duration::from_millis(30));
        let per_round = 300;
        for round in 0..5 {
            for i in 0..per_round {
                hit(&*limiter, &format!("login:ip:{round}.{i}"), quota).await;
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        // Nobody called `forget_idle`: the shards swept themselves as they were used. The
        // last round's keys may remain, and stale keys in a shard the last round missed.
        let tracked = limiter.tracked_keys();
        assert!(
            tracked <= 2 * per_round,
            "{tracked} keys tracked after 5 rounds of {per_round}"
        );
    }

    #[tokio::test]
    async fn resetting_forgets_the_key_entirely() {
        let limiter = new_local_limiter();
        hit(&*limiter, "login:account:a@example.com", SHORT).await;
        hit(&*limiter, "login:account:a@example.com", LONG).await;
        assert_eq!(limiter.tracked_keys(), 1);
        reset(&*limiter, "login:account:a@example.com").await;
        assert_eq!(limiter.tracked_keys(), 0);
    }
}

// ---------------------------------------------------------------------------------------------
// RedisLimiter
// ---------------------------------------------------------------------------------------------

mod redis_limiter {
    use super::*;

    contract_tests!(new_redis_limiter());

    #[tokio::test]
    async fn reports_its_backend_as_redis() {
        assert_eq!(new_redis_limiter().backend(), "redis");
    }

    #[tokio::test]
    async fn two_nodes_with_the_same_prefix_share_every_limit() {
        let prefix = unique_prefix();
        let node_a = redis_limiter_with_prefix(&prefix);
        let node_b = redis_limiter_with_prefix(&prefix);
        let key = unique_key("login:account");
        let quota = Quota::new(3, Duration::from_secs(60));

        assert_allowed(&*node_a, &key, quota, 2).await;
        assert_allowed(&*node_b, &key, quota, 1).await;
        assert_allowed(&*node_a, &key, quota, 0).await;
        assert_limited(&*node_b, &key, quota).await;
        assert_limited(&*node_a, &key, quota).await;

        // A reset on one node counts on the other as well.
        reset(&*node_b, &key).await;
        assert_allowed(&*node_a, &key, quota, 2).await;
    }

    #[tokio::test]
    async fn nodes_with_different_prefixes_do_not_share_limits() {
        let platform_a = new_redis_limiter();
        let platform_b = new_redis_limiter();
        let key = unique_key("login:account");
        exhaust(&*platform_a, &key, LONG).await;
        exhaust(&*platform_b, &key, LONG).await;
    }

    #[tokio::test]
    async fn keys_vanish_from_redis_once_their_state_no_longer_matters() {
        let limiter = new_redis_limiter();
        let key = unique_key("otp:send");
        let state = limiter.redis_key_for(&key, SHORT).expect("a valid quota");
        let index = limiter.redis_index_key_for(&key);
        exhaust(&*limiter, &key, SHORT).await;

        let mut redis = direct_connection().await;
        for name in [&state, &index] {
            let ttl: i64 = query(&mut redis, ::redis::cmd("PTTL").arg(name)).await;
            assert!(
                ttl > 0 && ttl <= SHORT.window.as_millis() as i64,
                "{name} expires in {ttl} ms"
            );
        }
        tokio::time::sleep(SHORT.window + Duration::from_millis(50)).await;
        let left: i64 = query(&mut redis, ::redis::cmd("EXISTS").arg(&state).arg(&index)).await;
        assert_eq!(left, 0, "keys still in Redis after the window");
    }

    #[tokio::test]
    async fn reset_deletes_the_keys_from_redis() {
        let limiter = new_redis_limiter();
        let key = unique_key("login:account");
        hit(&*limiter, &key, SHORT).await;
        hit(&*limiter, &key, LONG).await;
        let names = [
            limiter.redis_key_for(&key, SHORT).expect("a valid quota"),
            limiter.redis_key_for(&key, LONG).expect("a valid quota"),
            limiter.redis_index_key_for(&key),
        ];
        let mut redis = direct_connection().await;
        let present: i64 = query(&mut redis, ::redis::cmd("EXISTS").arg(&names[..])).await;
        assert_eq!(present, 3);

        reset(&*limiter, &key).await;
        let left: i64 = query(&mut redis, ::redis::cmd("EXISTS").arg(&names[..])).await;
        assert_eq!(left, 0);
    }

    #[tokio::test]
    async fn redis_keys_follow_the_documented_layout() {
        let limiter = redis_limiter_with_prefix("platform");
        let quota = Quota::new(5, Duration::from_secs(3600));
        assert_eq!(
            limiter
                .redis_key_for("otp:send:+4915112345678", quota)
                .unwrap(),
            "platform:rl:5:3600000:otp:send:+4915112345678"
        );
        let long = limiter
            .redis_key_for(&"k".repeat(1000), quota)
            .expect("a valid quota");
        assert!(long.len() < 100, "long keys are stored as a digest: {long}");
    }

    #[tokio::test]
    async fn hits_keep_working_after_redis_forgets_the_script() {
        let limiter = new_redis_limiter();
        let key = unique_key("api");
        assert_allowed(&*limiter, &key, LONG, 4).await;
        // What a Redis restart does to the script cache.
        let mut redis = direct_connection().await;
        let _: String = query(&mut redis, ::redis::cmd("SCRIPT").arg("FLUSH")).await;
        assert_allowed(&*limiter, &key, LONG, 3).await;
    }

    #[tokio::test]
    async fn an_unreachable_redis_answers_unavailable_quickly_instead_of_hanging() {
        let url = format!("redis://127.0.0.1:{}", closed_port());
        let limiter =
            RedisLimiter::new(&url, &unique_prefix()).expect("RedisLimiter::new does not connect");
        let started = Instant::now();
        // Twice: the second call tries to connect again rather than remembering the failure.
        for _ in 0..2 {
            let hit = within("hit", limiter.hit("login:account:a@example.com", SHORT)).await;
            assert!(matches!(hit, Err(LimitError::Unavailable(_))), "{hit:?}");
            let reset = within("reset", limiter.reset("login:account:a@example.com")).await;
            assert!(
                matches!(reset, Err(LimitError::Unavailable(_))),
                "{reset:?}"
            );
        }
        assert!(started.elapsed() < PATIENCE, "took {:?}", started.elapsed());
    }

    async fn direct_connection() -> ::redis::aio::MultiplexedConnection {
        let client = ::redis::Client::open(REDIS_URL).expect("a valid Redis URL");
        within(
            "connecting to Redis",
            client.get_multiplexed_async_connection(),
        )
        .await
        .unwrap_or_else(|err| panic!("these tests need Redis at {REDIS_URL}: {err}"))
    }

    async fn query<T: ::redis::FromRedisValue>(
        connection: &mut ::redis::aio::MultiplexedConnection,
        cmd: &mut ::redis::Cmd,
    ) -> T {
        within("a Redis query", cmd.query_async(connection))
            .await
            .expect("the Redis query")
    }
}

/// A local port nothing listens on.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

// ---------------------------------------------------------------------------------------------
// FallbackLimiter
// ---------------------------------------------------------------------------------------------

fn fallback_over(
    url: &str,
) -> (
    Arc<FallbackLimiter>,
    prometheus_client::metrics::counter::Counter,
) {
    let counter = prometheus_client::metrics::counter::Counter::default();
    let shared = Arc::new(RedisLimiter::new(url, &unique_prefix()).expect("a Redis URL"));
    (
        Arc::new(FallbackLimiter::new(shared, counter.clone())),
        counter,
    )
}

/// Over a reachable Redis: Redis decides, nothing falls back.
mod fallback_limiter_with_redis {
    use super::*;

    contract_tests!(fallback_over(REDIS_URL).0);

    #[tokio::test]
    async fn decides_with_redis_and_counts_no_fallback() {
        let (limiter, fallbacks) = fallback_over(REDIS_URL);
        exhaust(&*limiter, &unique_key("login:account"), LONG).await;
        assert_eq!(limiter.backend(), "redis");
        assert!(!limiter.degraded());
        assert_eq!(fallbacks.get(), 0);
    }
}

/// Over a Redis that is down: the local stand-in honours the same contract.
mod fallback_limiter_without_redis {
    use super::*;

    contract_tests!(fallback_over(&format!("redis://127.0.0.1:{}", closed_port())).0);

    #[tokio::test]
    async fn limits_locally_while_redis_is_down_and_counts_each_fallback() {
        let (limiter, fallbacks) = fallback_over(&format!("redis://127.0.0.1:{}", closed_port()));
        let key = unique_key("login:account");
        exhaust(&*limiter, &key, LONG).await;
        assert!(limiter.degraded());
        assert_eq!(limiter.backend(), "local");
        assert_eq!(fallbacks.get(), u64::from(LONG.limit) + 1);
        reset(&*limiter, &key).await;
        assert_allowed(&*limiter, &key, LONG, LONG.limit - 1).await;
    }

    #[tokio::test]
    async fn goes_back_to_redis_when_it_returns() {
        let port = closed_port();
        let (limiter, fallbacks) = fallback_over(&format!("redis://127.0.0.1:{port}"));
        let key = unique_key("login:account");
        assert_allowed(&*limiter, &key, LONG, LONG.limit - 1).await;
        assert!(limiter.degraded());

        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("the closed port is free");
        let forwarding = tokio::spawn(crate::http::proxy(listener, "127.0.0.1:6379"));
        let deadline = Instant::now() + PATIENCE * 4;
        while limiter.degraded() {
            assert!(Instant::now() < deadline, "Redis was not used again");
            tokio::time::sleep(Duration::from_millis(100)).await;
            check(&*limiter, &key, LONG).await;
        }
        assert_eq!(limiter.backend(), "redis");
        let counted = fallbacks.get();
        // Redis never saw the hit made during the outage.
        assert_allowed(&*limiter, &key, LONG, LONG.limit - 1).await;
        assert_eq!(fallbacks.get(), counted);
        forwarding.abort();
    }
}
