//! Redis pub/sub bus, for several nodes serving one platform.
//!
//! Publishing goes through the shared [`RedisLink`] connection, opened on first use. Subscriptions share ONE
//! pub/sub connection per bus, owned by a background task that SUBSCRIBEs each Redis channel
//! once, however many local subscribers the topic has, and fans incoming messages out to a
//! per-topic broadcast channel. Redis may be down at start or go away later: nothing here waits
//! for it longer than a couple of seconds, and the task reconnects and re-subscribes by itself.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::Mutex;
use redis::aio::{PubSubSink, PubSubStream};
use redis::{Msg, RedisError};
use tokio::sync::{Notify, broadcast, mpsc, oneshot};
use tokio::time::{Instant, sleep_until, timeout};

use super::{Bus, BusError, Subscription, capacity_for, validate_topic};
use crate::redis_link::{COMMAND_TIMEOUT, CONNECT_TIMEOUT, RedisLink};

/// Longest a caller of `subscribe` waits, queueing behind other subscribes included.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(2);
/// First delay before reconnecting the pub/sub connection after a failed attempt.
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(250);
/// Cap of the reconnect backoff, which is also how long a recovered Redis can go unnoticed.
const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(10);
/// How often the idle pub/sub connection is PINGed, to notice a peer that vanished without
/// closing the socket (a half-open TCP connection would otherwise look healthy forever).
const HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(15);
/// Subscribe requests waiting for the pub/sub task.
const COMMAND_QUEUE: usize = 1024;
/// Channels per SUBSCRIBE when re-subscribing after a reconnect, to keep each command small.
const RESUBSCRIBE_BATCH: usize = 512;

/// Every Redis name this backend uses, so the layout lives in one place.
mod keys {
    /// The Redis channel carrying `topic`.
    pub(super) fn channel(prefix: &str, topic: &str) -> String {
        format!("{prefix}:bus:{topic}")
    }
}

/// The Redis-backed [`Bus`]: every node using the same Redis and prefix sees every message.
pub struct RedisBus {
    // The publishing connection; the pub/sub task is spawned through it too, so it is pinned
    // to the runtime the bus was created on.
    link: RedisLink,
    prefix: String,
    // Replaced if the task ever stops (its runtime shut down), so the bus heals itself.
    fanout: Mutex<Option<Fanout>>,
}

impl RedisBus {
    /// Creates the bus without contacting Redis: connections are opened on first use, so a
    /// process can start while Redis is down.
    ///
    /// # Errors
    ///
    /// [`BusError::Unavailable`] when `url` is not a Redis URL.
    pub fn new(url: &str, prefix: &str) -> Result<Self, BusError> {
        Ok(RedisBus {
            link: RedisLink::new(url).map_err(BusError::Unavailable)?,
            prefix: prefix.to_owned(),
            fanout: Mutex::new(None),
        })
    }

    /// The Redis channel that carries `topic`, for operators inspecting Redis and for tests.
    pub fn channel_for(&self, topic: &str) -> String {
        keys::channel(&self.prefix, topic)
    }

    /// Sends one command on the publishing connection, bounded by [`COMMAND_TIMEOUT`].
    async fn command<T: redis::FromRedisValue>(
        &self,
        what: &'static str,
        cmd: redis::Cmd,
    ) -> Result<T, BusError> {
        let run = async {
            let mut connection = self
                .link
                .connection()
                .await
                .map_err(BusError::Unavailable)?;
            cmd.query_async::<T>(&mut connection)
                .await
                .map_err(unavailable)
        };
        match timeout(COMMAND_TIMEOUT, run).await {
            Ok(result) => result,
            Err(_) => Err(BusError::Unavailable(format!(
                "Redis did not answer {what} within {COMMAND_TIMEOUT:?}"
            ))),
        }
    }

    /// A handle on the running pub/sub task, starting it if needed. Started lazily so that a
    /// process that only publishes never holds a pub/sub connection.
    fn fanout(&self) -> Fanout {
        let mut slot = self.fanout.lock();
        if let Some(fanout) = slot.as_ref().filter(|fanout| !fanout.commands.is_closed()) {
            return fanout.clone();
        }
        let (commands, receiver) = mpsc::channel(COMMAND_QUEUE);
        let releases = Arc::new(Releases::default());
        let task = PubSubTask::new(self.link.client().clone(), receiver, releases.clone());
        // The handle is not kept: the task ends by itself once the bus drops its sender.
        drop(self.link.spawn(task.run()));
        let fanout = Fanout { commands, releases };
        *slot = Some(fanout.clone());
        fanout
    }
}

impl fmt::Debug for RedisBus {
    // Written by hand so that the URL, which may hold a password, is never logged.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBus")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Bus for RedisBus {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn publish(&self, topic: &str, payload: Bytes) -> Result<(), BusError> {
        validate_topic(topic)?;
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(keys::channel(&self.prefix, topic))
            .arg(payload.as_ref());
        // The reply is how many subscribers got it, across all nodes: nothing to act on.
        self.command::<i64>("PUBLISH", cmd).await.map(drop)
    }

    async fn subscribe(&self, topic: &str) -> Result<Subscription, BusError> {
        validate_topic(topic)?;
        let channel = keys::channel(&self.prefix, topic);
        let fanout = self.fanout();
        let (reply, answer) = oneshot::channel();
        let request = async {
            let command = Command::Subscribe {
                channel: channel.clone(),
                reply,
            };
            fanout.commands.send(command).await.map_err(|_| stopped())?;
            answer.await.map_err(|_| stopped())?
        };
        let receiver = match timeout(SUBSCRIBE_TIMEOUT, request).await {
            Ok(result) => result?,
            // If the task still completes the SUBSCRIBE, it finds nobody to hand the receiver
            // to and releases the channel again.
            Err(_) => {
                return Err(BusError::Unavailable(format!(
                    "Redis did not confirm SUBSCRIBE within {SUBSCRIBE_TIMEOUT:?}"
                )));
            }
        };
        let guard = ReleaseOnDrop {
            releases: fanout.releases,
            channel,
        };
        Ok(Subscription::new(receiver, Some(Box::new(guard))))
    }

    async fn ping(&self) -> Result<(), BusError> {
        self.command::<String>("PING", redis::cmd("PING"))
            .await
            .map(drop)
    }
}

fn unavailable(err: RedisError) -> BusError {
    BusError::Unavailable(err.to_string())
}

fn stopped() -> BusError {
    BusError::Unavailable("the Redis pub/sub task stopped".to_owned())
}

/// What the bus asks of the pub/sub task.
enum Command {
    /// Subscribe to `channel` (SUBSCRIBE in Redis if nobody here is yet) and answer with a
    /// receiver once Redis confirmed, so that anything published afterwards is delivered.
    Subscribe {
        channel: String,
        reply: oneshot::Sender<Result<broadcast::Receiver<Bytes>, BusError>>,
    },
}

/// The bus's handle on its pub/sub task.
#[derive(Clone)]
struct Fanout {
    commands: mpsc::Sender<Command>,
    releases: Arc<Releases>,
}

/// Channels that may have lost their last subscriber, waiting for the task to check them.
///
/// A set rather than a queue: guards are dropped in synchronous code where a bounded channel
/// could be full, and a set cannot hold more entries than there are live channels.
#[derive(Default)]
struct Releases {
    pending: Mutex<HashSet<String>>,
    wake: Notify,
}

impl Releases {
    fn mark(&self, channel: String) {
        self.pending.lock().insert(channel);
        self.wake.notify_one();
    }

    fn take(&self) -> HashSet<String> {
        std::mem::take(&mut *self.pending.lock())
    }
}

/// Held by a [`Subscription`]; dropping it lets the task UNSUBSCRIBE once the topic has no
/// subscriber left on this node.
struct ReleaseOnDrop {
    releases: Arc<Releases>,
    channel: String,
}

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        self.releases.mark(std::mem::take(&mut self.channel));
    }
}

/// The state of the one pub/sub connection.
enum Link {
    Up {
        sink: PubSubSink,
        stream: PubSubStream,
        next_health_check: Instant,
    },
    Down(Outage),
}

/// Bookkeeping while the pub/sub connection is down, so that an outage is logged once.
struct Outage {
    since: Instant,
    failed_attempts: u32,
    retry_at: Instant,
    // Whether the outage was already logged at warn level.
    reported: bool,
}

/// What woke the pub/sub task.
enum Event {
    Command(Option<Command>),
    Released,
    Message(Option<Msg>),
    HealthCheck,
    Reconnect,
}

/// Owns the pub/sub connection and the per-channel broadcast senders.
struct PubSubTask {
    client: redis::Client,
    commands: mpsc::Receiver<Command>,
    releases: Arc<Releases>,
    // Every channel with local subscribers, SUBSCRIBEd whenever the link is up.
    channels: HashMap<String, broadcast::Sender<Bytes>>,
    link: Link,
}

impl PubSubTask {
    fn new(
        client: redis::Client,
        commands: mpsc::Receiver<Command>,
        releases: Arc<Releases>,
    ) -> Self {
        let now = Instant::now();
        PubSubTask {
            client,
            commands,
            releases,
            channels: HashMap::new(),
            // Not connected yet and due to try now; not an outage worth a warning until an
            // attempt fails.
            link: Link::Down(Outage {
                since: now,
                failed_attempts: 0,
                retry_at: now,
                reported: false,
            }),
        }
    }

    async fn run(mut self) {
        loop {
            match self.next_event().await {
                Event::Command(Some(Command::Subscribe { channel, reply })) => {
                    let result = self.subscribe(&channel).await;
                    // The caller gave up waiting: its receiver is gone, the channel may have
                    // no subscriber left.
                    if reply.send(result).is_err() {
                        self.releases.mark(channel);
                    }
                }
                // The bus was dropped. Ending drops every broadcast sender, which tells the
                // remaining subscriptions that the topic is shut down.
                Event::Command(None) => break,
                Event::Released => self.release_idle_channels().await,
                Event::Message(Some(message)) => self.deliver(&message),
                Event::Message(None) => self.lose_link("the connection closed"),
                Event::HealthCheck => self.check_health().await,
                Event::Reconnect => {
                    // Failures are recorded by `connect` itself; the timer is re-armed there.
                    let _ = self.connect().await;
                }
            }
        }
        tracing::debug!("Redis pub/sub task stopped");
    }

    async fn next_event(&mut self) -> Event {
        let (stream, wake_at, up) = match &mut self.link {
            Link::Up {
                stream,
                next_health_check,
                ..
            } => (Some(stream), *next_health_check, true),
            Link::Down(outage) => (None, outage.retry_at, false),
        };
        let message = async {
            match stream {
                Some(stream) => stream.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            command = self.commands.recv() => Event::Command(command),
            () = self.releases.wake.notified() => Event::Released,
            message = message => Event::Message(message),
            () = sleep_until(wake_at) => if up { Event::HealthCheck } else { Event::Reconnect },
        }
    }

    async fn subscribe(&mut self, channel: &str) -> Result<broadcast::Receiver<Bytes>, BusError> {
        if let Link::Down(outage) = &self.link {
            // Connect right away only when a retry is due anyway: during an outage every
            // subscriber retrying would otherwise turn into a connection attempt.
            if outage.retry_at > Instant::now() {
                return Err(BusError::Unavailable(
                    "Redis pub/sub connection is down; reconnecting in the background".to_owned(),
                ));
            }
            self.connect().await?;
        }
        if let Some(sender) = self.channels.get(channel) {
            return Ok(sender.subscribe());
        }
        let Link::Up { sink, .. } = &mut self.link else {
            return Err(BusError::Unavailable(
                "Redis pub/sub connection is down".to_owned(),
            ));
        };
        match timeout(COMMAND_TIMEOUT, sink.subscribe(channel)).await {
            Ok(Ok(())) => {
                // The channel is `{prefix}:bus:{topic}`; topics contain no `:bus:`.
                let topic = channel.rsplit_once(":bus:").map_or(channel, |(_, t)| t);
                let (sender, receiver) = broadcast::channel(capacity_for(topic));
                self.channels.insert(channel.to_owned(), sender);
                Ok(receiver)
            }
            Ok(Err(err)) => {
                if breaks_link(&err) {
                    self.lose_link(&err.to_string());
                }
                Err(unavailable(err))
            }
            Err(_) => {
                self.lose_link("SUBSCRIBE timed out");
                Err(BusError::Unavailable(format!(
                    "Redis did not confirm SUBSCRIBE within {COMMAND_TIMEOUT:?}"
                )))
            }
        }
    }

    /// Forgets, and UNSUBSCRIBEs from, the released channels nobody subscribes to any more.
    async fn release_idle_channels(&mut self) {
        let idle: Vec<String> = self
            .releases
            .take()
            .into_iter()
            .filter(|channel| {
                self.channels
                    .get(channel)
                    .is_some_and(|sender| sender.receiver_count() == 0)
            })
            .collect();
        if idle.is_empty() {
            return;
        }
        for channel in &idle {
            self.channels.remove(channel);
        }
        // While down there is nothing to undo: the channels are simply not re-subscribed.
        let Link::Up { sink, .. } = &mut self.link else {
            return;
        };
        match timeout(COMMAND_TIMEOUT, sink.unsubscribe(&idle)).await {
            Ok(Ok(())) => tracing::trace!(channels = idle.len(), "unsubscribed"),
            Ok(Err(err)) if !breaks_link(&err) => {
                // Harmless: at worst Redis sends messages for these channels, which are dropped.
                tracing::warn!(error = %err, "Redis refused UNSUBSCRIBE");
            }
            Ok(Err(err)) => self.lose_link(&err.to_string()),
            Err(_) => self.lose_link("UNSUBSCRIBE timed out"),
        }
    }

    fn deliver(&self, message: &Msg) {
        if let Some(sender) = self.channels.get(message.get_channel_name()) {
            // An error only means the last receiver just dropped; its release is pending.
            let _ = sender.send(Bytes::copy_from_slice(message.get_payload_bytes()));
        }
        // Otherwise the channel was released while this message was in flight.
    }

    async fn check_health(&mut self) {
        let Link::Up {
            sink,
            next_health_check,
            ..
        } = &mut self.link
        else {
            return;
        };
        *next_health_check = Instant::now() + HEALTH_CHECK_INTERVAL;
        match timeout(COMMAND_TIMEOUT, sink.ping::<redis::Value>()).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => self.lose_link(&format!("PING failed: {err}")),
            Err(_) => self.lose_link("PING timed out"),
        }
    }

    /// Opens a new pub/sub connection and SUBSCRIBEs every channel that has subscribers.
    async fn connect(&mut self) -> Result<(), BusError> {
        // Channels whose subscribers all left while down are not worth subscribing again.
        let pending = self.releases.take();
        self.channels
            .retain(|channel, sender| !(pending.contains(channel) && sender.receiver_count() == 0));
        match self.open().await {
            Ok((sink, stream)) => {
                if let Link::Down(outage) = &self.link
                    && outage.reported
                {
                    tracing::info!(
                        down_for = ?outage.since.elapsed(),
                        attempts = outage.failed_attempts + 1,
                        channels = self.channels.len(),
                        "Redis pub/sub connection restored",
                    );
                }
                self.link = Link::Up {
                    sink,
                    stream,
                    next_health_check: Instant::now() + HEALTH_CHECK_INTERVAL,
                };
                Ok(())
            }
            Err(err) => {
                self.record_failed_attempt(&err);
                Err(err)
            }
        }
    }

    async fn open(&self) -> Result<(PubSubSink, PubSubStream), BusError> {
        let pubsub = match timeout(CONNECT_TIMEOUT, self.client.get_async_pubsub()).await {
            Ok(result) => result.map_err(unavailable)?,
            Err(_) => {
                return Err(BusError::Unavailable(format!(
                    "no connection to Redis within {CONNECT_TIMEOUT:?}"
                )));
            }
        };
        let (mut sink, stream) = pubsub.split();
        let channels: Vec<&String> = self.channels.keys().collect();
        for batch in channels.chunks(RESUBSCRIBE_BATCH) {
            match timeout(COMMAND_TIMEOUT, sink.subscribe(batch)).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => return Err(unavailable(err)),
                Err(_) => {
                    return Err(BusError::Unavailable(
                        "re-subscribing after reconnecting timed out".to_owned(),
                    ));
                }
            }
        }
        Ok((sink, stream))
    }

    fn record_failed_attempt(&mut self, err: &BusError) {
        let now = Instant::now();
        let outage = match &mut self.link {
            Link::Down(outage) => outage,
            // Not reachable from `connect`, which only runs while down; handled all the same.
            Link::Up { .. } => {
                self.lose_link(&err.to_string());
                return;
            }
        };
        outage.failed_attempts = outage.failed_attempts.saturating_add(1);
        outage.retry_at = now + backoff(outage.failed_attempts);
        if outage.reported {
            tracing::debug!(
                error = %err,
                attempts = outage.failed_attempts,
                "Redis pub/sub still unreachable",
            );
        } else {
            outage.reported = true;
            tracing::warn!(
                error = %err,
                "cannot reach Redis for pub/sub; subscribing fails until it is back, retrying in \
                 the background",
            );
        }
    }

    /// Drops a broken connection and schedules an immediate reconnect (Redis restarting is the
    /// usual cause, and it is often back at once); the backoff starts with the next failure.
    fn lose_link(&mut self, reason: &str) {
        if matches!(self.link, Link::Down(_)) {
            return;
        }
        tracing::warn!(
            reason,
            channels = self.channels.len(),
            "lost the Redis pub/sub connection; reconnecting, messages published meanwhile are \
             not delivered",
        );
        let now = Instant::now();
        self.link = Link::Down(Outage {
            since: now,
            failed_attempts: 0,
            retry_at: now,
            reported: true,
        });
    }
}

/// Whether a failed command means the connection itself is unusable, as opposed to Redis
/// refusing that one command.
fn breaks_link(err: &RedisError) -> bool {
    err.is_io_error() || err.is_unrecoverable_error() || err.is_connection_dropped()
}

/// Delay before the next reconnect attempt after `failures` consecutive failures: doubling
/// from [`RECONNECT_MIN_DELAY`] up to [`RECONNECT_MAX_DELAY`], with jitter so that many nodes
/// do not reconnect in lockstep after a Redis restart.
fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    let delay = RECONNECT_MIN_DELAY
        .saturating_mul(1 << doublings)
        .min(RECONNECT_MAX_DELAY);
    delay.mul_f64(0.5 + rand::random::<f64>() / 2.0)
}
