//! Notifications: every order event reaches the people it concerns, on the channels they
//! chose, once.
//!
//! A consumer of the order events, not a call in the order path: the order actor notes every
//! event in the order journal ([`crate::store::journal`]) before appending it, and this
//! service reads the journal behind a durable cursor ([`consumer`]). For each event it works
//! out who hears of it and on which channels (the rules of [`crate::domain::notification`]),
//! writes the recipient's in-app entry and publishes it live, and puts one message per
//! external channel in the outbox. The [`sender`] sends what the outbox holds, with retries
//! and backoff, and leaves what cannot be sent as a dead letter an admin can read and retry.
//!
//! Exactly once: every message's id is derived from (order event, recipient, channel), and
//! the outbox and the feed are written insert-if-absent under that id, so a consumer that
//! reads an event twice (after a crash, or on a second node) writes nothing twice. One node at
//! a time holds the consumer's lease and is the only one that consumes and sends; a node that
//! dies hands over when its lease runs out. A message a provider took is noted at once in a
//! node-local file ([`handed`]), so a process that dies before recording the outcome in the
//! store does not send it again after its restart; one whose provider took it in the instant
//! before the crash, or whose node is lost and replaced, is sent again with the same id
//! (email's `Message-ID`), which is the one case a receiver may see twice.

pub mod consumer;
pub mod handed;
pub mod push;
pub mod sender;
pub mod templates;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use uuid::Uuid;

use crate::bus::SharedBus;
use crate::clock::Clock;
use crate::domain::ids::UserId;
use crate::domain::notification::{FeedItem, Notice, OutboxMessage, notice_id};
use crate::notify::{SharedEmail, SharedSms};
use crate::store::catalog::CatalogRepo;
use crate::store::journal::Journal;
use crate::store::notifications::{FeedPage, FeedRepo, OutboxRepo, WebhookRepo};
use crate::store::orders::OrderRepo;
use crate::store::users::UserRepo;
use crate::store::{SharedStore, StoreResult};
use templates::Templates;

/// What the service is built from.
pub struct NotificationsParts {
    pub store: SharedStore,
    pub bus: SharedBus,
    pub clock: Clock,
    pub email: SharedEmail,
    pub sms: SharedSms,
    pub templates: Templates,
    /// Base URL of the site, for links in messages.
    pub public_url: String,
    /// This node, as the holder of the consumer's lease.
    pub node: Uuid,
    pub metrics: crate::metrics::Metrics,
    /// Whether webhook and push endpoints may be in private or loopback ranges.
    pub allow_private_webhooks: bool,
    /// The server's Web Push (VAPID) key.
    pub vapid: push::Vapid,
    /// What providers took, noted on this node's disk (survives a crash of the process).
    pub handed: handed::HandedLog,
}

/// The notification service.
#[derive(Clone)]
pub struct Notifications {
    inner: Arc<Inner>,
}

struct Inner {
    journal: Journal,
    orders: OrderRepo,
    users: UserRepo,
    vendors: CatalogRepo,
    outbox: OutboxRepo,
    feed: FeedRepo,
    webhooks: WebhookRepo,
    bus: SharedBus,
    clock: Clock,
    email: SharedEmail,
    sms: SharedSms,
    templates: Templates,
    public_url: String,
    node: Uuid,
    metrics: crate::metrics::Metrics,
    allow_private_webhooks: bool,
    vapid: push::Vapid,
    handed: handed::HandedLog,
    /// HTTP clients of webhook endpoints and push services.
    clients: webhooks::Clients,
    /// Until when this node holds the consumer's lease (as far as it knows).
    lease: Mutex<Option<DateTime<Utc>>>,
    /// Where the sender reads the queue from next.
    queue_cursor: Mutex<sender::QueueCursor>,
}

/// News for one user about something other than an order.
#[derive(Debug, Clone)]
pub struct UserNotice {
    pub recipient: UserId,
    pub kind: Notice,
    /// `ticket:{id}`, `product:{id}`, `vendor:{id}`.
    pub subject: String,
    /// What makes this notice one of its own (a message's number, a decision's id).
    pub occasion: String,
    pub at: DateTime<Utc>,
    pub title: String,
    pub body: String,
}

/// A user's feed, a page of it, and how many entries are unread.
#[derive(Debug, Clone)]
pub struct FeedView {
    pub page: FeedPage,
    pub unread: usize,
}

impl Notifications {
    pub fn new(parts: NotificationsParts) -> Self {
        // Webhook deliveries go out over HTTPS with the process-wide rustls provider; whoever
        // installed one first installed the same.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let store = parts.store;
        Notifications {
            inner: Arc::new(Inner {
                journal: Journal::new(store.clone()),
                orders: OrderRepo::new(store.clone()),
                users: UserRepo::new(store.clone()),
                vendors: CatalogRepo::new(store.clone()),
                outbox: OutboxRepo::new(store.clone()),
                webhooks: WebhookRepo::new(store.clone()),
                feed: FeedRepo::new(store),
                bus: parts.bus,
                clock: parts.clock,
                email: parts.email,
                sms: parts.sms,
                templates: parts.templates,
                public_url: parts.public_url,
                node: parts.node,
                metrics: parts.metrics,
                allow_private_webhooks: parts.allow_private_webhooks,
                vapid: parts.vapid,
                handed: parts.handed,
                clients: webhooks::Clients::default(),
                lease: Mutex::new(None),
                queue_cursor: Mutex::new(sender::QueueCursor::default()),
            }),
        }
    }

    /// Starts the consumer and the sender on this node; both stop when the service is dropped
    /// everywhere else (`service` returns `None`).
    pub fn start<F>(service: F) -> Vec<tokio::task::JoinHandle<()>>
    where
        F: Fn() -> Option<Notifications> + Clone + Send + 'static,
    {
        let consume = service.clone();
        vec![
            tokio::spawn(rounds("consumer", consumer::ROUND, move || {
                consume().map(|n| async move { n.consume().await.map(|_| ()) })
            })),
            tokio::spawn(rounds("sender", sender::ROUND, move || {
                service().map(|n| async move { n.send_due().await.map(|_| ()) })
            })),
        ]
    }

    /// A page of `user`'s feed, newest first, with the unread count.
    pub async fn feed(
        &self,
        user: UserId,
        after: Option<String>,
        limit: usize,
    ) -> StoreResult<FeedView> {
        let page = self.inner.feed.page(user, after, limit).await?;
        let unread = self.inner.feed.unread(user).await?;
        Ok(FeedView { page, unread })
    }

    /// How many of `user`'s entries are unread.
    pub async fn unread(&self, user: UserId) -> StoreResult<usize> {
        self.inner.feed.unread(user).await
    }

    /// Marks one of `user`'s entries read; `None` when they have no such entry.
    pub async fn mark_read(&self, user: UserId, id: Uuid) -> StoreResult<Option<FeedItem>> {
        self.inner
            .feed
            .mark_read(user, id, self.inner.clock.now())
            .await
    }

    /// Marks all of `user`'s entries read; how many were unread.
    pub async fn mark_all_read(&self, user: UserId) -> StoreResult<usize> {
        self.inner
            .feed
            .mark_all_read(user, self.inner.clock.now())
            .await
    }

    /// Messages given up on, a page at a time.
    pub async fn dead_letters(
        &self,
        after: Option<Uuid>,
        limit: usize,
    ) -> StoreResult<(Vec<OutboxMessage>, Option<Uuid>)> {
        self.inner.outbox.dead(after, limit).await
    }

    /// Gives a dead letter another round of attempts; `None` when there is no such letter.
    pub async fn retry_dead_letter(&self, id: Uuid) -> StoreResult<Option<OutboxMessage>> {
        self.inner.outbox.revive(id, self.inner.clock.now()).await
    }

    /// One message of the outbox, whatever its state.
    pub async fn message(&self, id: Uuid) -> StoreResult<Option<OutboxMessage>> {
        Ok(self.inner.outbox.get(id).await?.map(|v| v.value))
    }

    /// Tells `recipient` of something other than an order (a reply to their support ticket, a
    /// moderator's decision on their store): an entry in their in-app feed, published live.
    /// Written once however often it is told: its id comes from what it is about.
    #[tracing::instrument(skip(self, notice), fields(recipient = %notice.recipient, kind = notice.kind.as_str()))]
    pub async fn notify(&self, notice: UserNotice) -> StoreResult<()> {
        let item = FeedItem {
            id: notice_id(
                notice.kind,
                &notice.subject,
                &notice.occasion,
                notice.recipient,
            ),
            at: notice.at,
            event: None,
            audience: None,
            order_id: None,
            notice: Some(notice.kind),
            subject: Some(notice.subject),
            title: notice.title,
            body: notice.body,
            read_at: None,
        };
        if self.inner.feed.add(notice.recipient, &item).await? {
            self.inner.metrics.notification("in_app", "written").inc();
            self.publish(notice.recipient, &item).await;
        }
        Ok(())
    }

    /// Whether this node holds the lease now (with a margin, so it stops before it expires).
    fn leads(&self) -> bool {
        let margin = chrono::Duration::from_std(LEASE_MARGIN).unwrap_or_default();
        self.inner
            .lease
            .lock()
            .is_some_and(|until| until - margin > Utc::now())
    }

    /// Publishes a new in-app entry on its user's live topic.
    async fn publish(&self, user: UserId, item: &FeedItem) {
        let topic = crate::streams::notifications_topic(user);
        match serde_json::to_vec(item) {
            Ok(bytes) => {
                if let Err(e) = self.inner.bus.publish(&topic, Bytes::from(bytes)).await {
                    tracing::warn!(topic, error = %e, "notification not published live");
                }
            }
            Err(e) => tracing::error!(error = %e, "notification not encodable"),
        }
    }
}

/// Runs a round every `every` until `round` returns `None` (the service is gone); a round that
/// fails is logged and the next one tries again.
async fn rounds<F, R>(what: &'static str, every: Duration, round: F)
where
    F: Fn() -> Option<R>,
    R: std::future::Future<Output = StoreResult<()>>,
{
    loop {
        tokio::time::sleep(every).await;
        let Some(work) = round() else {
            return;
        };
        if let Err(e) = work.await {
            tracing::warn!(error = %e, "notification {what} round failed; retried");
        }
    }
}

/// How long before its lease runs out a node stops consuming and sending.
const LEASE_MARGIN: Duration = Duration::from_secs(3);
