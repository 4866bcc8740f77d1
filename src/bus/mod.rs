//! Publish/subscribe by topic, for live streams that cross actors and nodes.
//!
//! Two backends behind [`Bus`]: [`local::LocalBus`] (in-process, tokio broadcast channels) for
//! the embedded default, and [`redis::RedisBus`] (Redis pub/sub) when several nodes serve one
//! platform. Delivery is at most once and best effort by design: anything a client must not
//! miss is appended to a durable log first (an order's event log) and the bus only carries the
//! live copy. Every subscription is bounded; a subscriber that falls behind loses the oldest
//! messages and is told how many it lost, it never makes the publisher wait or grow memory.

pub mod local;
pub mod redis;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

/// How many messages a subscription to a shared topic buffers before the oldest are dropped.
pub const SUBSCRIPTION_CAPACITY: usize = 256;

/// The same for topics of one order or one courier (`order.…`, `courier.…`): a handful of
/// events in a lifetime, and one is allocated per watched order, so they stay small.
pub const ENTITY_CAPACITY: usize = 16;

/// The same for one vendor's order feed (`vendor.…`).
pub const VENDOR_CAPACITY: usize = 64;

/// How many messages a subscription to `topic` buffers. The buffer is allocated when the
/// topic gets its first subscriber, so it is the memory cost of a watched topic.
pub fn capacity_for(topic: &str) -> usize {
    if topic.starts_with("order.") || topic.starts_with("courier.") {
        ENTITY_CAPACITY
    } else if topic.starts_with("vendor.") {
        VENDOR_CAPACITY
    } else {
        SUBSCRIPTION_CAPACITY
    }
}

/// What can go wrong on the bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The broker cannot be reached; publishing or subscribing may work again later.
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    /// The topic name is empty, too long or contains characters outside `[A-Za-z0-9_.:-]`.
    #[error("invalid topic {0:?}")]
    InvalidTopic(String),
}

/// One message received on a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// A published payload.
    Message(Bytes),
    /// The subscriber fell behind and this many messages were dropped before the next one.
    Lagged(u64),
}

/// A live subscription to one topic. Dropping it unsubscribes.
pub struct Subscription {
    rx: tokio::sync::broadcast::Receiver<Bytes>,
    // Keeps backend bookkeeping (for instance the Redis SUBSCRIBE) alive while subscribed.
    _guard: Option<Box<dyn Send + Sync>>,
}

impl Subscription {
    pub(crate) fn new(
        rx: tokio::sync::broadcast::Receiver<Bytes>,
        guard: Option<Box<dyn Send + Sync>>,
    ) -> Self {
        Subscription { rx, _guard: guard }
    }

    /// Waits for the next delivery; `None` when the bus has shut the topic down.
    pub async fn recv(&mut self) -> Option<Delivery> {
        use tokio::sync::broadcast::error::RecvError;
        match self.rx.recv().await {
            Ok(payload) => Some(Delivery::Message(payload)),
            Err(RecvError::Lagged(n)) => Some(Delivery::Lagged(n)),
            Err(RecvError::Closed) => None,
        }
    }
}

/// Publish/subscribe by topic.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Which backend this is, for logs and `/ready`.
    fn backend(&self) -> &'static str;

    /// Publishes a payload to every current subscriber of `topic` on every node.
    async fn publish(&self, topic: &str, payload: Bytes) -> Result<(), BusError>;

    /// Subscribes to `topic`; messages published after this returns are delivered.
    async fn subscribe(&self, topic: &str) -> Result<Subscription, BusError>;

    /// Checks that the broker answers.
    async fn ping(&self) -> Result<(), BusError>;
}

/// The bus shared by the whole process.
pub type SharedBus = Arc<dyn Bus>;

/// Longest topic name accepted.
pub const MAX_TOPIC_LEN: usize = 200;

/// Checks a topic name: 1..=200 characters from `[A-Za-z0-9_.:-]`.
pub fn validate_topic(topic: &str) -> Result<(), BusError> {
    let ok = !topic.is_empty()
        && topic.len() <= MAX_TOPIC_LEN
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(BusError::InvalidTopic(topic.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_of_one_entity_get_small_buffers() {
        assert_eq!(capacity_for("order.0190.live"), ENTITY_CAPACITY);
        assert_eq!(capacity_for("courier.0190.inbox"), ENTITY_CAPACITY);
        assert_eq!(capacity_for("vendor.0190.orders"), VENDOR_CAPACITY);
        assert_eq!(capacity_for("couriers.presence"), SUBSCRIPTION_CAPACITY);
        assert_eq!(capacity_for("catalog.vendors"), SUBSCRIPTION_CAPACITY);
    }
}
