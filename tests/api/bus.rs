//! The bus contract. Each property is a function over a `dyn Bus`, run against every backend:
//! the in-process `LocalBus`, and `RedisBus` against the real Redis that every dev and CI
//! machine runs (those tests fail, rather than skip, when Redis is not there). Backend-specific
//! behaviour (topic cleanup, several nodes, outages) has its own tests below the contract.

use std::future::Future;
use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hexmarket::bus::local::LocalBus;
use hexmarket::bus::redis::RedisBus;
use hexmarket::bus::{Bus, BusError, Delivery, SUBSCRIPTION_CAPACITY, Subscription};

const REDIS_URL: &str = "redis://127.0.0.1:6379";
const REDIS_ADDR: &str = "127.0.0.1:6379";
/// Longest wait for something that should happen; only reached when the bus is broken.
const PATIENCE: Duration = Duration::from_secs(5);
/// How long a subscription must stay silent to count as having received nothing. Redis
/// delivers in well under a millisecond locally, so this is generous.
const QUIET: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn new_local_bus() -> Arc<LocalBus> {
    Arc::new(LocalBus::new())
}

/// A prefix no other test (or test run) uses, so tests can share one Redis.
fn unique_prefix() -> String {
    format!("test_{}", uuid::Uuid::new_v4().simple())
}

/// A `RedisBus` on the shared Redis, with its own prefix. Panics when Redis is unreachable:
/// Redis is part of the test environment, a missing one must not go unnoticed.
async fn new_redis_bus() -> Arc<RedisBus> {
    redis_bus_with_prefix(&unique_prefix()).await
}

async fn redis_bus_with_prefix(prefix: &str) -> Arc<RedisBus> {
    let bus = RedisBus::new(REDIS_URL, prefix).expect("a valid Redis URL");
    if let Err(err) = bus.ping().await {
        panic!("these tests need Redis at {REDIS_URL}: {err}");
    }
    Arc::new(bus)
}

fn payload(text: impl Into<String>) -> Bytes {
    Bytes::from(text.into())
}

/// Awaits `future`, failing the test instead of hanging when it takes longer than `PATIENCE`.
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(PATIENCE, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what} did not finish within {PATIENCE:?}"),
    }
}

async fn publish(bus: &dyn Bus, topic: &str, text: impl Into<String>) {
    within("publish", bus.publish(topic, payload(text)))
        .await
        .expect("publish");
}

async fn subscribe(bus: &dyn Bus, topic: &str) -> Subscription {
    within("subscribe", bus.subscribe(topic))
        .await
        .expect("subscribe")
}

async fn next_delivery(subscription: &mut Subscription) -> Delivery {
    within("receiving", subscription.recv())
        .await
        .expect("the subscription closed")
}

async fn next_message(subscription: &mut Subscription) -> String {
    match next_delivery(subscription).await {
        Delivery::Message(bytes) => String::from_utf8(bytes.to_vec()).expect("UTF-8 payload"),
        Delivery::Lagged(n) => panic!("expected a message, the subscription lagged by {n}"),
    }
}

async fn assert_receives_nothing(subscription: &mut Subscription) {
    if let Ok(delivery) = tokio::time::timeout(QUIET, subscription.recv()).await {
        panic!("expected nothing, got {delivery:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// The contract, for any backend
// ---------------------------------------------------------------------------------------------

async fn a_subscriber_receives_what_is_published_after_it_subscribed_in_order(bus: Arc<dyn Bus>) {
    publish(&*bus, "orders.1", "before anyone listened").await;
    let mut subscription = subscribe(&*bus, "orders.1").await;
    for i in 0..50 {
        publish(&*bus, "orders.1", format!("update {i}")).await;
    }
    for i in 0..50 {
        assert_eq!(next_message(&mut subscription).await, format!("update {i}"));
    }
    assert_receives_nothing(&mut subscription).await;
}

async fn every_subscriber_of_a_topic_receives_each_message(bus: Arc<dyn Bus>) {
    let mut first = subscribe(&*bus, "couriers.7").await;
    let mut second = subscribe(&*bus, "couriers.7").await;
    publish(&*bus, "couriers.7", "at the door").await;
    publish(&*bus, "couriers.7", "delivered").await;
    for subscription in [&mut first, &mut second] {
        assert_eq!(next_message(subscription).await, "at the door");
        assert_eq!(next_message(subscription).await, "delivered");
    }
}

async fn topics_are_isolated_from_each_other(bus: Arc<dyn Bus>) {
    let mut orders = subscribe(&*bus, "orders.1").await;
    let mut other_order = subscribe(&*bus, "orders.2").await;
    // A topic that is a prefix of another must not match it either.
    let mut prefix_of_both = subscribe(&*bus, "orders").await;
    publish(&*bus, "orders.2", "for order 2").await;
    publish(&*bus, "orders.1", "for order 1").await;
    assert_eq!(next_message(&mut orders).await, "for order 1");
    assert_eq!(next_message(&mut other_order).await, "for order 2");
    assert_receives_nothing(&mut orders).await;
    assert_receives_nothing(&mut other_order).await;
    assert_receives_nothing(&mut prefix_of_both).await;
}

async fn a_dropped_subscription_leaves_the_other_subscribers_of_its_topic_receiving(
    bus: Arc<dyn Bus>,
) {
    let leaving = subscribe(&*bus, "carts.3").await;
    let mut staying = subscribe(&*bus, "carts.3").await;
    drop(leaving);
    publish(&*bus, "carts.3", "still here").await;
    assert_eq!(next_message(&mut staying).await, "still here");

    // Once nobody listens the topic goes away; subscribing again brings it back.
    drop(staying);
    let mut returning = subscribe(&*bus, "carts.3").await;
    publish(&*bus, "carts.3", "welcome back").await;
    assert_eq!(next_message(&mut returning).await, "welcome back");
}

async fn publishing_to_a_topic_nobody_subscribes_to_succeeds(bus: Arc<dyn Bus>) {
    publish(&*bus, "orders.nobody-listens", "into the void").await;
}

async fn a_slow_subscriber_is_told_how_many_messages_it_lost_without_slowing_the_publisher(
    bus: Arc<dyn Bus>,
) {
    let lost = 44;
    let total = SUBSCRIPTION_CAPACITY + lost;
    let mut slow = subscribe(&*bus, "couriers.9.position").await;
    let mut fast = subscribe(&*bus, "couriers.9.position").await;
    // Reading each message on the fast subscription before publishing the next proves that
    // every message reached the slow subscription's buffer as well, which never reads.
    for i in 0..total {
        publish(&*bus, "couriers.9.position", i.to_string()).await;
        assert_eq!(next_message(&mut fast).await, i.to_string());
    }
    assert_eq!(
        next_delivery(&mut slow).await,
        Delivery::Lagged(lost as u64),
        "the slow subscriber must learn it lost the oldest messages",
    );
    // What is left is the newest `SUBSCRIPTION_CAPACITY` messages, in order.
    for i in lost..total {
        assert_eq!(next_message(&mut slow).await, i.to_string());
    }
}

async fn invalid_topic_names_are_rejected(bus: Arc<dyn Bus>) {
    let too_long = "a".repeat(201);
    for topic in [
        "",
        "orders 1",
        "orders/1",
        "orders\n1",
        "commandé",
        "*",
        too_long.as_str(),
    ] {
        assert!(
            matches!(
                bus.publish(topic, payload("x")).await,
                Err(BusError::InvalidTopic(_))
            ),
            "publishing to {topic:?} must be rejected",
        );
        assert!(
            matches!(bus.subscribe(topic).await, Err(BusError::InvalidTopic(_))),
            "subscribing to {topic:?} must be rejected",
        );
    }
    let longest = format!("Aa0_.:-{}", "z".repeat(193));
    let mut subscription = subscribe(&*bus, &longest).await;
    publish(&*bus, &longest, "accepted").await;
    assert_eq!(next_message(&mut subscription).await, "accepted");
}

async fn a_reachable_bus_answers_ping(bus: Arc<dyn Bus>) {
    within("ping", bus.ping()).await.expect("ping");
}

/// Defines one `#[tokio::test]` per contract property, each on a fresh bus from `$new_bus`.
macro_rules! contract_tests {
    ($new_bus:expr) => {
        contract_tests!(@each $new_bus;
            a_subscriber_receives_what_is_published_after_it_subscribed_in_order,
            every_subscriber_of_a_topic_receives_each_message,
            topics_are_isolated_from_each_other,
            a_dropped_subscription_leaves_the_other_subscribers_of_its_topic_receiving,
            publishing_to_a_topic_nobody_subscribes_to_succeeds,
            a_slow_subscriber_is_told_how_many_messages_it_lost_without_slowing_the_publisher,
            invalid_topic_names_are_rejected,
            a_reachable_bus_answers_ping,
        );
    };
    (@each $new_bus:expr; $($property:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $property() {
                super::$property($new_bus).await;
            }
        )+
    };
}

// ---------------------------------------------------------------------------------------------
// LocalBus
// ---------------------------------------------------------------------------------------------

mod local_bus {
    use super::*;

    contract_tests!(new_local_bus());

    #[tokio::test]
    async fn reports_its_backend_as_local() {
        assert_eq!(new_local_bus().backend(), "local");
    }

    #[tokio::test]
    async fn dropping_the_last_subscription_of_a_topic_forgets_the_topic() {
        let bus = new_local_bus();
        let first = subscribe(&*bus, "orders.1").await;
        let second = subscribe(&*bus, "orders.1").await;
        let other = subscribe(&*bus, "orders.2").await;
        assert_eq!(bus.topic_count(), 2);
        drop(first);
        assert_eq!(bus.topic_count(), 2, "orders.1 still has a subscriber");
        drop(second);
        assert_eq!(bus.topic_count(), 1, "orders.1 has no subscriber left");
        drop(other);
        assert_eq!(bus.topic_count(), 0);
    }

    #[tokio::test]
    async fn publishing_to_topics_nobody_subscribes_to_keeps_nothing_in_memory() {
        let bus = new_local_bus();
        for i in 0..1000 {
            publish(&*bus, &format!("orders.{i}"), "nobody cares").await;
        }
        assert_eq!(bus.topic_count(), 0);
    }

    #[tokio::test]
    async fn subscriptions_outliving_the_bus_end_instead_of_waiting_forever() {
        let bus = new_local_bus();
        let mut subscription = subscribe(&*bus, "orders.1").await;
        drop(bus);
        assert_eq!(within("receiving", subscription.recv()).await, None);
    }
}

// ---------------------------------------------------------------------------------------------
// RedisBus
// ---------------------------------------------------------------------------------------------

mod redis_bus {
    use super::*;

    contract_tests!(new_redis_bus().await);

    #[tokio::test]
    async fn reports_its_backend_as_redis() {
        assert_eq!(new_redis_bus().await.backend(), "redis");
    }

    #[tokio::test]
    async fn two_nodes_with_the_same_prefix_see_each_others_messages() {
        let prefix = unique_prefix();
        let node_a = redis_bus_with_prefix(&prefix).await;
        let node_b = redis_bus_with_prefix(&prefix).await;
        let mut on_a = subscribe(&*node_a, "orders.1").await;
        let mut on_b = subscribe(&*node_b, "orders.1").await;

        publish(&*node_a, "orders.1", "from a").await;
        publish(&*node_b, "orders.1", "from b").await;

        for subscription in [&mut on_a, &mut on_b] {
            assert_eq!(next_message(subscription).await, "from a");
            assert_eq!(next_message(subscription).await, "from b");
        }
    }

    #[tokio::test]
    async fn nodes_with_different_prefixes_do_not_see_each_others_messages() {
        let platform_a = new_redis_bus().await;
        let platform_b = new_redis_bus().await;
        let mut on_a = subscribe(&*platform_a, "orders.1").await;
        let mut on_b = subscribe(&*platform_b, "orders.1").await;

        publish(&*platform_a, "orders.1", "for platform a").await;
        publish(&*platform_b, "orders.1", "for platform b").await;

        assert_eq!(next_message(&mut on_a).await, "for platform a");
        assert_eq!(next_message(&mut on_b).await, "for platform b");
        assert_receives_nothing(&mut on_a).await;
        assert_receives_nothing(&mut on_b).await;
    }

    #[tokio::test]
    async fn a_node_subscribes_once_per_topic_and_unsubscribes_when_its_last_subscriber_leaves() {
        let bus = new_redis_bus().await;
        let channel = bus.channel_for("orders.1");
        let first = subscribe(&*bus, "orders.1").await;
        let second = subscribe(&*bus, "orders.1").await;
        assert_eq!(redis_subscriber_count(&channel).await, 1);

        drop(first);
        assert_eq!(redis_subscriber_count(&channel).await, 1);

        drop(second);
        let deadline = Instant::now() + PATIENCE;
        while redis_subscriber_count(&channel).await != 0 {
            assert!(
                Instant::now() < deadline,
                "{channel} still subscribed in Redis after its last subscriber left",
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn an_unreachable_redis_answers_unavailable_quickly_instead_of_hanging() {
        let url = format!("redis://127.0.0.1:{}", closed_port());
        let bus = RedisBus::new(&url, &unique_prefix()).expect("RedisBus::new does not connect");
        let started = Instant::now();

        let ping = within("ping", bus.ping()).await;
        assert!(matches!(ping, Err(BusError::Unavailable(_))), "{ping:?}");
        let published = within("publish", bus.publish("orders.1", payload("x"))).await;
        assert!(
            matches!(published, Err(BusError::Unavailable(_))),
            "{published:?}"
        );
        for _ in 0..2 {
            let subscribed = within("subscribe", bus.subscribe("orders.1")).await;
            assert!(
                matches!(subscribed, Err(BusError::Unavailable(_))),
                "{:?}",
                subscribed.map(|_| "a subscription"),
            );
        }
        assert!(started.elapsed() < PATIENCE, "took {:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_bus_created_while_redis_is_down_starts_working_once_redis_is_up() {
        let proxy = FlakyProxy::start(false);
        let bus = RedisBus::new(&proxy.url(), &unique_prefix()).expect("RedisBus::new");
        assert!(matches!(
            within("ping", bus.ping()).await,
            Err(BusError::Unavailable(_))
        ));
        assert!(matches!(
            within("subscribe", bus.subscribe("orders.1")).await,
            Err(BusError::Unavailable(_))
        ));

        proxy.restore();
        let mut subscription = eventually("subscribing after Redis came up", || {
            bus.subscribe("orders.1")
        })
        .await;
        eventually("publishing after Redis came up", || {
            bus.publish("orders.1", payload("hello"))
        })
        .await;
        assert_eq!(next_message(&mut subscription).await, "hello");
    }

    #[tokio::test]
    async fn subscriptions_resume_by_themselves_after_the_connection_to_redis_is_lost() {
        let prefix = unique_prefix();
        let proxy = FlakyProxy::start(true);
        let bus = RedisBus::new(&proxy.url(), &prefix).expect("RedisBus::new");
        let direct = redis_bus_with_prefix(&prefix).await;
        let mut subscription = subscribe(&bus, "orders.1").await;
        publish(&*direct, "orders.1", "before the outage").await;
        assert_eq!(next_message(&mut subscription).await, "before the outage");

        proxy.cut();
        let subscribed = within("subscribe", bus.subscribe("orders.2")).await;
        assert!(
            matches!(subscribed, Err(BusError::Unavailable(_))),
            "subscribing during the outage: {:?}",
            subscribed.map(|_| "a subscription"),
        );
        // Long enough for reconnect attempts to fail and back off.
        tokio::time::sleep(Duration::from_millis(500)).await;
        proxy.restore();

        // Messages published during the outage are lost (the bus is at most once); the
        // existing subscription starts receiving again once the bus has re-subscribed.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut attempt = 0;
        let first = loop {
            publish(&*direct, "orders.1", format!("after the outage {attempt}")).await;
            if let Ok(delivery) =
                tokio::time::timeout(Duration::from_millis(200), subscription.recv()).await
            {
                break delivery.expect("the subscription survives the outage");
            }
            assert!(
                Instant::now() < deadline,
                "no delivery after Redis came back"
            );
            attempt += 1;
        };
        assert!(
            matches!(&first, Delivery::Message(m) if m.starts_with(b"after the outage")),
            "{first:?}",
        );
        eventually("publishing after the outage", || {
            bus.publish("orders.1", payload("publisher is back"))
        })
        .await;
        loop {
            if next_message(&mut subscription).await == "publisher is back" {
                break;
            }
        }
    }

    /// How many connections Redis counts as subscribed to `channel`, asked on a connection of
    /// its own so the bus under test is not involved.
    async fn redis_subscriber_count(channel: &str) -> i64 {
        let client = ::redis::Client::open(REDIS_URL).expect("a valid Redis URL");
        let mut connection = within(
            "connecting to Redis",
            client.get_multiplexed_async_connection(),
        )
        .await
        .expect("Redis is reachable");
        let (_, count): (String, i64) = ::redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query_async(&mut connection)
            .await
            .expect("PUBSUB NUMSUB");
        count
    }
}

/// A local port nothing listens on.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// Retries `attempt` every 100 ms until it succeeds, for up to 20 s (past the bus's reconnect
/// backoff cap).
async fn eventually<T, F, Fut>(what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, BusError>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match within(what, attempt()).await {
            Ok(value) => return value,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("{what}: still failing after 20 s: {err}"),
        }
    }
}

/// A TCP proxy to the test Redis that can simulate an outage: `cut` severs every open
/// connection and makes new ones close at once (what a client sees while Redis restarts),
/// `restore` lets connections through again. Plain threads, so it works whatever the test's
/// runtime is doing, and it only affects the bus under test, never other users of Redis.
struct FlakyProxy {
    port: u16,
    state: Arc<ProxyState>,
}

struct ProxyState {
    up: AtomicBool,
    stopped: AtomicBool,
    open: std::sync::Mutex<Vec<TcpStream>>,
}

impl FlakyProxy {
    fn start(up: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let port = listener.local_addr().expect("proxy address").port();
        let state = Arc::new(ProxyState {
            up: AtomicBool::new(up),
            stopped: AtomicBool::new(false),
            open: std::sync::Mutex::new(Vec::new()),
        });
        let accepting = state.clone();
        thread::spawn(move || accept_loop(&listener, &accepting));
        FlakyProxy { port, state }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn cut(&self) {
        self.state.up.store(false, Ordering::SeqCst);
        for stream in self.state.open.lock().expect("proxy lock").drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.state.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for FlakyProxy {
    fn drop(&mut self) {
        self.state.stopped.store(true, Ordering::SeqCst);
        self.cut();
    }
}

fn accept_loop(listener: &TcpListener, state: &Arc<ProxyState>) {
    while !state.stopped.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(_) => return,
        };
        if !state.up.load(Ordering::SeqCst) {
            // Dropping closes the connection before the client's handshake gets an answer.
            continue;
        }
        let _ = client.set_nonblocking(false);
        let Ok(server) = TcpStream::connect(REDIS_ADDR) else {
            continue;
        };
        let (Ok(client_reader), Ok(server_reader)) = (client.try_clone(), server.try_clone())
        else {
            continue;
        };
        {
            let mut open = state.open.lock().expect("proxy lock");
            for stream in [&client, &server] {
                if let Ok(clone) = stream.try_clone() {
                    open.push(clone);
                }
            }
        }
        thread::spawn(move || pipe(client_reader, server));
        thread::spawn(move || pipe(server_reader, client));
    }
}

/// Copies one direction of a proxied connection; when either side ends, both do.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = io::copy(&mut from, &mut to);
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
