//! In-process bus: one bounded tokio broadcast channel per topic that has subscribers.
//!
//! Only topics with at least one live subscription exist in memory. Publishing to any other
//! topic finds nothing and returns, so topic names that are used once (an order id, a courier
//! id) never accumulate. The subscription's guard removes the topic when its last subscriber
//! goes away.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::RwLock;
use tokio::sync::broadcast;

use super::{Bus, BusError, Subscription, capacity_for, validate_topic};

type Topics = RwLock<HashMap<String, broadcast::Sender<Bytes>>>;

/// The in-process [`Bus`]: messages reach subscribers of this process only.
#[derive(Debug, Default)]
pub struct LocalBus {
    // Shared with the subscription guards, which need to find their topic again on drop.
    topics: Arc<Topics>,
}

impl LocalBus {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many topics currently have subscribers, for metrics and for checking that topics are
    /// cleaned up.
    pub fn topic_count(&self) -> usize {
        self.topics.read().len()
    }
}

#[async_trait]
impl Bus for LocalBus {
    fn backend(&self) -> &'static str {
        "local"
    }

    async fn publish(&self, topic: &str, payload: Bytes) -> Result<(), BusError> {
        validate_topic(topic)?;
        // A read lock is enough: `send` only touches the channel's own state, so publishers on
        // different threads do not serialise on the map.
        if let Some(sender) = self.topics.read().get(topic) {
            // An error only means every receiver dropped since; their guard removes the topic.
            let _ = sender.send(payload);
        }
        Ok(())
    }

    async fn subscribe(&self, topic: &str) -> Result<Subscription, BusError> {
        validate_topic(topic)?;
        let receiver = {
            let mut topics = self.topics.write();
            match topics.get(topic) {
                Some(sender) => sender.subscribe(),
                None => {
                    let (sender, receiver) = broadcast::channel(capacity_for(topic));
                    topics.insert(topic.to_owned(), sender);
                    receiver
                }
            }
        };
        let guard = TopicGuard {
            topics: Arc::downgrade(&self.topics),
            topic: topic.to_owned(),
        };
        Ok(Subscription::new(receiver, Some(Box::new(guard))))
    }

    async fn ping(&self) -> Result<(), BusError> {
        Ok(())
    }
}

/// Removes its topic from the bus once the last subscriber is gone.
struct TopicGuard {
    // Weak so that outstanding subscriptions do not keep a dropped bus's map alive.
    topics: Weak<Topics>,
    topic: String,
}

impl Drop for TopicGuard {
    fn drop(&mut self) {
        let Some(topics) = self.topics.upgrade() else {
            return;
        };
        let mut topics = topics.write();
        // `Subscription` drops its receiver before this guard, so the count already excludes
        // it. Checking under the write lock means a concurrent subscribe to the same topic
        // either happened before (count > 0, topic kept) or will recreate the topic after.
        if topics
            .get(&self.topic)
            .is_some_and(|sender| sender.receiver_count() == 0)
        {
            topics.remove(&self.topic);
        }
    }
}
