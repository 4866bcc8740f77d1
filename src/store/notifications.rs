//! Notifications in the store: the outbox of messages for external channels and each user's
//! in-app feed.
//!
//! **Outbox.** A message is one row of `notifications` keyed by its id (derived from the
//! order event, recipient and channel, so deriving an event again meets the row that is
//! there). While it waits for an attempt it also has a row in `notification_queue` partition
//! `due`, clustered by when the attempt is due (`{ms:020}.{id}`), so the sender reads the due
//! rows from where it left off and never walks the rows of messages already sent (the store
//! keeps those as tombstones until it compacts them) nor those due later. When a message is
//! given up on it has a row in partition `dead`. The message row is written first and the
//! queue row after it, and [`OutboxRepo::enqueue`] puts back a missing queue row of a pending
//! message, so a crash in between leaves nothing a second derivation does not repair. A
//! queue row that no longer matches its message (a crash between writing the new one and
//! removing the old, a redelivery) is put right when it comes due ([`OutboxRepo::requeue`]).
//! Sent messages keep their row (with its state) for [`MESSAGE_RETENTION`]: that row is what
//! makes a second derivation a no-op.
//!
//! Rows queued before the queue was ordered by time sit in partition `pending`, keyed by id;
//! a scan of the whole queue moves them into `due` first.
//!
//! **Webhooks.** An endpoint is a row in partition `owner:{user}`; a reference row in
//! `vendor:{vendor}` (a store's endpoints) or `platform` (an admin's) finds it for delivery.
//! Each delivery is an outbox message, also listed (newest first) in `notification_queue`
//! partition `hook:{endpoint}`: the endpoint's delivery log.
//!
//! **Feed.** partition = user id; clustering = `{inverted ms:020}.{id}` so a scan reads newest
//! first. An entry is found by id among the newest [`UNREAD_SCAN`] (the ones that can still be
//! unread).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::typed::{Change, ModifyError, Rows, Versioned};
use super::{Key, MAX_PAGE, ScanRange, SharedStore, StoreError, StoreResult, Version};
use crate::domain::ids::{UserId, VendorId};
use crate::domain::notification::{DeliveryState, FeedItem, OutboxMessage};
use crate::domain::webhook::{WebhookEndpoint, WebhookScope};
use crate::store::Table;

/// How long a message's row is kept after it was written.
pub const MESSAGE_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long an in-app notification is kept.
pub const FEED_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);
/// Feed entries looked at to count the unread ones.
pub const UNREAD_SCAN: usize = 1000;

const DUE: &str = "due";
/// Where pending messages were queued, by id, before the queue was ordered by time.
const LEGACY_PENDING: &str = "pending";
const DEAD: &str = "dead";

/// A message's place in the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueEntry {
    pub due: DateTime<Utc>,
}

/// A pending message's row in the queue, as a scan found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub id: Uuid,
    /// When its attempt is due, as the row's key has it.
    pub due: DateTime<Utc>,
    key: Key,
}

/// The outbox: messages and their queue.
#[derive(Clone)]
pub struct OutboxRepo {
    messages: Rows<OutboxMessage>,
    queue: Rows<QueueEntry>,
}

impl OutboxRepo {
    pub fn new(store: SharedStore) -> Self {
        OutboxRepo {
            messages: Rows::new(store.clone(), Table::Notifications).with_ttl(MESSAGE_RETENTION),
            queue: Rows::new(store, Table::NotificationQueue),
        }
    }

    fn message_key(id: Uuid) -> Key {
        Key::single(id.simple().to_string())
    }

    fn queue_key(partition: &str, id: Uuid) -> Key {
        Key::new(partition, id.simple().to_string())
    }

    /// The queue row of a message pending until `due`.
    fn due_key(due: DateTime<Utc>, id: Uuid) -> Key {
        Key::new(DUE, format!("{}.{}", due_clustering(due), id.simple()))
    }

    fn queued(key: Key) -> Option<Queued> {
        let (ms, id) = key.clustering.split_once('.')?;
        Some(Queued {
            id: Uuid::parse_str(id).ok()?,
            due: DateTime::from_timestamp_millis(ms.parse().ok()?)?,
            key,
        })
    }

    /// Puts a message in the outbox unless it is there already; `true` when it was new. A
    /// pending message always ends with its queue row.
    pub async fn enqueue(&self, message: &OutboxMessage) -> StoreResult<bool> {
        let (new, pending) = match self
            .messages
            .insert(&Self::message_key(message.id), message)
            .await?
        {
            Ok(_) => (true, Some(message.next_at)),
            Err(Some(existing)) => (
                false,
                (existing.value.state == DeliveryState::Pending).then_some(existing.value.next_at),
            ),
            Err(None) => (false, None),
        };
        if let Some(due) = pending {
            // Already queued is just as good.
            let _ = self
                .queue
                .insert(&Self::due_key(due, message.id), &QueueEntry { due })
                .await?;
        }
        Ok(new)
    }

    pub async fn get(&self, id: Uuid) -> StoreResult<Option<Versioned<OutboxMessage>>> {
        self.messages.get(&Self::message_key(id)).await
    }

    /// Queued messages due at `now`, oldest first, at most `limit`. The scan starts at `from`
    /// (rows due earlier are not looked at); `None` scans the whole queue, and first moves the
    /// rows queued by id into time order.
    pub async fn due(
        &self,
        now: DateTime<Utc>,
        from: Option<DateTime<Utc>>,
        limit: usize,
    ) -> StoreResult<Vec<Queued>> {
        if from.is_none() {
            self.order_legacy().await?;
        }
        let mut due = Vec::new();
        let mut after = from.map(due_clustering);
        // A row due at `now`'s millisecond is included: its key is longer than this bound.
        let before = due_clustering(now + chrono::Duration::milliseconds(1));
        loop {
            let range = ScanRange {
                after: after.take(),
                before: Some(before.clone()),
                limit: MAX_PAGE.min(limit - due.len()),
            };
            let (rows, next) = self.queue.scan(DUE, range).await?;
            due.extend(rows.into_iter().filter_map(|(key, _)| Self::queued(key)));
            match next {
                Some(n) if due.len() < limit => after = Some(n),
                _ => return Ok(due),
            }
        }
    }

    /// Moves the rows queued by id (before the queue was ordered by time) into time order.
    async fn order_legacy(&self) -> StoreResult<()> {
        loop {
            let (rows, next) = self
                .queue
                .scan(LEGACY_PENDING, ScanRange::first(MAX_PAGE))
                .await?;
            for (key, row) in &rows {
                if let Ok(id) = Uuid::parse_str(&key.clustering) {
                    let due = row.value.due;
                    let _ = self
                        .queue
                        .insert(&Self::due_key(due, id), &QueueEntry { due })
                        .await?;
                }
                self.remove(key).await?;
            }
            if next.is_none() {
                return Ok(());
            }
        }
    }

    /// Whether `queued` is where its message's queue row belongs.
    pub fn in_place(queued: &Queued, message: &OutboxMessage) -> bool {
        message.state == DeliveryState::Pending
            && Self::due_key(message.next_at, message.id) == queued.key
    }

    /// Puts the queue rows of `queued`'s message where its state says (`None`: it is gone):
    /// a pending one's row at its due time (kept if there), a dead one's among the dead
    /// letters; and `queued` removed unless it is that row.
    pub async fn requeue(
        &self,
        queued: &Queued,
        message: Option<&OutboxMessage>,
    ) -> StoreResult<()> {
        match message {
            Some(m) if m.state == DeliveryState::Pending => {
                let key = Self::due_key(m.next_at, m.id);
                if key == queued.key {
                    return Ok(());
                }
                let _ = self
                    .queue
                    .insert(&key, &QueueEntry { due: m.next_at })
                    .await?;
            }
            Some(m) if m.state == DeliveryState::Dead => {
                let at = QueueEntry {
                    due: m.done_at.unwrap_or(m.next_at),
                };
                let _ = self.queue.insert(&Self::queue_key(DEAD, m.id), &at).await?;
            }
            _ => {}
        }
        self.remove(&queued.key).await
    }

    /// Writes the outcome of an attempt on the message `queued` found: the message row by
    /// compare-and-set (`None`: another writer changed it first), then its queue rows (a retry
    /// is queued at its new due time; a sent, skipped or dead one leaves the queue, a dead one
    /// for the dead letters).
    pub async fn record(
        &self,
        expected: Version,
        message: &OutboxMessage,
        queued: &Queued,
    ) -> StoreResult<Option<Version>> {
        let Ok(version) = self
            .messages
            .update(&Self::message_key(message.id), expected, message)
            .await?
        else {
            return Ok(None);
        };
        self.requeue(queued, Some(message)).await?;
        Ok(Some(version))
    }

    async fn remove(&self, key: &Key) -> StoreResult<()> {
        self.queue
            .modify(key, |_| Ok::<_, StoreError>(Change::Delete(())))
            .await
            .map_err(flatten)?;
        Ok(())
    }

    /// Dead letters after `after` (a notification id), at most `limit`, and the cursor of the
    /// next page.
    pub async fn dead(
        &self,
        after: Option<Uuid>,
        limit: usize,
    ) -> StoreResult<(Vec<OutboxMessage>, Option<Uuid>)> {
        let range = match after {
            Some(id) => ScanRange::after(id.simple().to_string(), limit),
            None => ScanRange::first(limit),
        };
        let (rows, next) = self.queue.scan(DEAD, range).await?;
        let mut out = Vec::with_capacity(rows.len());
        for (key, _) in &rows {
            if let Ok(id) = Uuid::parse_str(&key.clustering)
                && let Some(message) = self.get(id).await?
            {
                out.push(message.value);
            }
        }
        let next = next.and_then(|_| {
            rows.last()
                .and_then(|(k, _)| Uuid::parse_str(&k.clustering).ok())
        });
        Ok((out, next))
    }

    /// Sends a message again whatever came of it (a manual redelivery): pending now, with a new
    /// round of attempts. `None`: no such message.
    pub async fn resend(&self, id: Uuid, now: DateTime<Utc>) -> StoreResult<Option<OutboxMessage>> {
        let (message, _) = self
            .messages
            .modify(&Self::message_key(id), |current| match current {
                Some(m) => {
                    let again = OutboxMessage {
                        state: DeliveryState::Pending,
                        attempts: 0,
                        next_at: now,
                        done_at: None,
                        created_at: now,
                        ..m.clone()
                    };
                    Ok(Change::Put(again.clone(), Some(again)))
                }
                None => Ok(Change::Keep(None)),
            })
            .await
            .map_err(flatten)?;
        if message.is_some() {
            // A row it had in the queue before no longer matches it: put right when it comes due.
            let _ = self
                .queue
                .insert(&Self::due_key(now, id), &QueueEntry { due: now })
                .await?;
            self.remove(&Self::queue_key(DEAD, id)).await?;
        }
        Ok(message)
    }

    /// Gives a dead letter another round of attempts. `None`: no such dead letter.
    pub async fn revive(&self, id: Uuid, now: DateTime<Utc>) -> StoreResult<Option<OutboxMessage>> {
        let dead = Self::queue_key(DEAD, id);
        if self.queue.get(&dead).await?.is_none() {
            return Ok(None);
        }
        let (revived, _) = self
            .messages
            .modify(&Self::message_key(id), |current| match current {
                Some(m) if m.state == DeliveryState::Dead => {
                    let revived = OutboxMessage {
                        state: DeliveryState::Pending,
                        attempts: 0,
                        next_at: now,
                        done_at: None,
                        ..m.clone()
                    };
                    Ok(Change::Put(revived.clone(), Some(revived)))
                }
                Some(m) => Ok(Change::Keep(Some(m.clone()))),
                None => Ok(Change::Keep(None)),
            })
            .await
            .map_err(flatten)?;
        if let Some(message) = &revived
            && message.state == DeliveryState::Pending
        {
            let _ = self
                .queue
                .insert(&Self::due_key(now, id), &QueueEntry { due: now })
                .await?;
        }
        self.remove(&dead).await?;
        Ok(revived)
    }
}

/// A due time as the queue orders it: milliseconds since the epoch, fixed width.
fn due_clustering(due: DateTime<Utc>) -> String {
    format!("{:020}", due.timestamp_millis().max(0))
}

fn flatten(e: ModifyError<StoreError>) -> StoreError {
    match e {
        ModifyError::Store(e) | ModifyError::Rejected(e) => e,
    }
}

/// Every user's in-app feed.
#[derive(Clone)]
pub struct FeedRepo {
    rows: Rows<FeedItem>,
}

/// One page of a feed, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedPage {
    pub items: Vec<FeedItem>,
    /// Where the next page starts (absent on the last).
    pub next: Option<String>,
}

impl FeedRepo {
    pub fn new(store: SharedStore) -> Self {
        FeedRepo {
            rows: Rows::new(store, Table::NotificationFeed).with_ttl(FEED_RETENTION),
        }
    }

    fn key(user: UserId, item: &FeedItem) -> Key {
        let inverted = i64::MAX - item.at.timestamp_millis().max(0);
        Key::new(
            user.to_string(),
            format!("{inverted:020}.{}", item.id.simple()),
        )
    }

    /// Adds an entry to `user`'s feed unless it is there; `true` when it was new.
    pub async fn add(&self, user: UserId, item: &FeedItem) -> StoreResult<bool> {
        Ok(self
            .rows
            .insert(&Self::key(user, item), item)
            .await?
            .is_ok())
    }

    /// Entries after the cursor `after` (from a previous page), newest first.
    pub async fn page(
        &self,
        user: UserId,
        after: Option<String>,
        limit: usize,
    ) -> StoreResult<FeedPage> {
        let (rows, next) = self
            .rows
            .scan(
                &user.to_string(),
                ScanRange {
                    after,
                    before: None,
                    limit,
                },
            )
            .await?;
        Ok(FeedPage {
            items: rows.into_iter().map(|(_, row)| row.value).collect(),
            next,
        })
    }

    /// The newest [`UNREAD_SCAN`] entries.
    async fn newest(&self, user: UserId) -> StoreResult<Vec<FeedItem>> {
        let mut items = Vec::new();
        let mut after = None;
        while items.len() < UNREAD_SCAN {
            let page = self
                .page(
                    user,
                    after.take(),
                    (UNREAD_SCAN - items.len()).min(MAX_PAGE),
                )
                .await?;
            items.extend(page.items);
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        Ok(items)
    }

    /// How many of the newest [`UNREAD_SCAN`] entries are unread.
    pub async fn unread(&self, user: UserId) -> StoreResult<usize> {
        Ok(self
            .newest(user)
            .await?
            .iter()
            .filter(|i| i.read_at.is_none())
            .count())
    }

    /// Marks one of the newest [`UNREAD_SCAN`] entries read (reading it twice keeps the first
    /// time). `None`: the user has no such entry.
    pub async fn mark_read(
        &self,
        user: UserId,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<FeedItem>> {
        let newest = self.newest(user).await?;
        let Some(item) = newest.into_iter().find(|i| i.id == id) else {
            return Ok(None);
        };
        self.mark(user, &item, now).await
    }

    async fn mark(
        &self,
        user: UserId,
        item: &FeedItem,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<FeedItem>> {
        let (item, _) = self
            .rows
            .modify(&Self::key(user, item), |current| match current {
                Some(item) if item.read_at.is_none() => {
                    let read = FeedItem {
                        read_at: Some(now),
                        ..item.clone()
                    };
                    Ok(Change::Put(read.clone(), Some(read)))
                }
                Some(item) => Ok(Change::Keep(Some(item.clone()))),
                None => Ok(Change::Keep(None)),
            })
            .await
            .map_err(flatten)?;
        Ok(item)
    }

    /// Marks every unread entry among the newest [`UNREAD_SCAN`] read; returns how many.
    pub async fn mark_all_read(&self, user: UserId, now: DateTime<Utc>) -> StoreResult<usize> {
        let mut marked = 0;
        for item in self.newest(user).await? {
            if item.read_at.is_none() && self.mark(user, &item, now).await?.is_some() {
                marked += 1;
            }
        }
        Ok(marked)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum HookRow {
    Endpoint(WebhookEndpoint),
    Ref { owner: UserId },
}

/// Webhook endpoints and their delivery logs.
#[derive(Clone)]
pub struct WebhookRepo {
    rows: Rows<HookRow>,
    log: Rows<QueueEntry>,
}

const PLATFORM: &str = "platform";

impl WebhookRepo {
    pub fn new(store: SharedStore) -> Self {
        WebhookRepo {
            rows: Rows::new(store.clone(), Table::Webhooks),
            log: Rows::new(store, Table::NotificationQueue).with_ttl(MESSAGE_RETENTION),
        }
    }

    fn owner_key(owner: UserId, id: Uuid) -> Key {
        Key::new(format!("owner:{owner}"), id.simple().to_string())
    }

    fn scope_partition(scope: &WebhookScope) -> String {
        match scope {
            WebhookScope::Store { vendor_id } => format!("vendor:{vendor_id}"),
            WebhookScope::Platform => PLATFORM.to_owned(),
        }
    }

    /// Registers an endpoint (its reference first: a reference without its endpoint is
    /// skipped by delivery).
    pub async fn create(&self, endpoint: &WebhookEndpoint) -> StoreResult<()> {
        let reference = Key::new(
            Self::scope_partition(&endpoint.scope),
            endpoint.id.simple().to_string(),
        );
        let _ = self
            .rows
            .insert(
                &reference,
                &HookRow::Ref {
                    owner: endpoint.owner,
                },
            )
            .await?;
        let _ = self
            .rows
            .insert(
                &Self::owner_key(endpoint.owner, endpoint.id),
                &HookRow::Endpoint(endpoint.clone()),
            )
            .await?;
        Ok(())
    }

    /// `owner`'s endpoints.
    pub async fn of_owner(&self, owner: UserId) -> StoreResult<Vec<WebhookEndpoint>> {
        let (rows, _) = self
            .rows
            .scan(&format!("owner:{owner}"), ScanRange::first(MAX_PAGE))
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(_, row)| match row.value {
                HookRow::Endpoint(e) => Some(e),
                HookRow::Ref { .. } => None,
            })
            .collect())
    }

    pub async fn get(&self, owner: UserId, id: Uuid) -> StoreResult<Option<WebhookEndpoint>> {
        Ok(match self.rows.get(&Self::owner_key(owner, id)).await? {
            Some(Versioned {
                value: HookRow::Endpoint(e),
                ..
            }) => Some(e),
            _ => None,
        })
    }

    /// Removes an endpoint and its reference; `false` when `owner` has no such endpoint.
    pub async fn delete(&self, owner: UserId, id: Uuid) -> StoreResult<bool> {
        let Some(endpoint) = self.get(owner, id).await? else {
            return Ok(false);
        };
        let key = Self::owner_key(owner, id);
        self.rows
            .modify(&key, |_| Ok::<_, StoreError>(Change::Delete(())))
            .await
            .map_err(flatten)?;
        let reference = Key::new(
            Self::scope_partition(&endpoint.scope),
            id.simple().to_string(),
        );
        self.rows
            .modify(&reference, |_| Ok::<_, StoreError>(Change::Delete(())))
            .await
            .map_err(flatten)?;
        Ok(true)
    }

    /// The endpoints that hear of `vendor`'s orders: the store's own and the platform's.
    pub async fn for_vendor(&self, vendor: VendorId) -> StoreResult<Vec<WebhookEndpoint>> {
        let mut out = Vec::new();
        for partition in [format!("vendor:{vendor}"), PLATFORM.to_owned()] {
            let (rows, _) = self
                .rows
                .scan(&partition, ScanRange::first(MAX_PAGE))
                .await?;
            for (key, row) in rows {
                if let HookRow::Ref { owner } = row.value
                    && let Ok(id) = Uuid::parse_str(&key.clustering)
                    && let Some(endpoint) = self.get(owner, id).await?
                {
                    out.push(endpoint);
                }
            }
        }
        Ok(out)
    }

    fn log_key(endpoint: Uuid, at: DateTime<Utc>, delivery: Uuid) -> Key {
        let inverted = i64::MAX - at.timestamp_millis().max(0);
        Key::new(
            format!("hook:{}", endpoint.simple()),
            format!("{inverted:020}.{}", delivery.simple()),
        )
    }

    /// Lists a delivery in its endpoint's log (once).
    pub async fn log(&self, endpoint: Uuid, at: DateTime<Utc>, delivery: Uuid) -> StoreResult<()> {
        let _ = self
            .log
            .insert(
                &Self::log_key(endpoint, at, delivery),
                &QueueEntry { due: at },
            )
            .await?;
        Ok(())
    }

    /// Delivery ids of an endpoint, newest first, after the cursor `after`.
    pub async fn deliveries(
        &self,
        endpoint: Uuid,
        after: Option<String>,
        limit: usize,
    ) -> StoreResult<(Vec<Uuid>, Option<String>)> {
        let range = ScanRange {
            after,
            before: None,
            limit,
        };
        let (rows, next) = self
            .log
            .scan(&format!("hook:{}", endpoint.simple()), range)
            .await?;
        let ids = rows
            .iter()
            .filter_map(|(key, _)| {
                key.clustering
                    .rsplit_once('.')
                    .and_then(|(_, id)| Uuid::parse_str(id).ok())
            })
            .collect();
        Ok((ids, next))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::domain::account::NotificationEvent;
    use crate::domain::ids::OrderId;
    use crate::domain::notification::{Audience, Medium, MessageOf};
    use crate::store::embedded::EmbeddedStore;

    fn message(due: DateTime<Utc>) -> OutboxMessage {
        OutboxMessage::pending(
            MessageOf {
                id: Uuid::new_v4(),
                medium: Medium::Email,
                recipient: UserId::new(),
                audience: Audience::Customer,
                event: NotificationEvent::OrderPaid,
                order_id: OrderId::new(),
                order_seq: 2,
                endpoint: None,
            },
            due,
        )
    }

    fn ids(queued: &[Queued]) -> Vec<Uuid> {
        queued.iter().map(|q| q.id).collect()
    }

    /// Records `outcome` of the message `queued` found, over its current row.
    async fn record(outbox: &OutboxRepo, queued: &Queued, outcome: &OutboxMessage) {
        let row = outbox.get(outcome.id).await.unwrap().unwrap();
        let written = outbox.record(row.version, outcome, queued).await.unwrap();
        assert!(written.is_some());
    }

    fn repo() -> (tempfile::TempDir, OutboxRepo) {
        let dir = tempfile::tempdir().unwrap();
        let store: SharedStore = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        (dir, OutboxRepo::new(store))
    }

    #[tokio::test]
    async fn the_queue_gives_due_messages_oldest_first_from_where_it_is_asked_to_start() {
        let (_dir, outbox) = repo();
        let t0 = Utc::now();
        let secs = chrono::Duration::seconds;
        let (a, b, later) = (message(t0 + secs(1)), message(t0), message(t0 + secs(60)));
        for m in [&a, &b, &later] {
            assert!(outbox.enqueue(m).await.unwrap());
        }
        assert!(
            !outbox.enqueue(&a).await.unwrap(),
            "a second enqueue is a no-op"
        );

        let now = t0 + secs(2);
        let due = outbox.due(now, None, 10).await.unwrap();
        assert_eq!(ids(&due), [b.id, a.id], "oldest first, none due later");
        assert_eq!(outbox.due(now, None, 1).await.unwrap().len(), 1);
        let from = outbox.due(now, Some(t0 + secs(1)), 10).await.unwrap();
        assert_eq!(ids(&from), [a.id], "rows due before `from` are not read");
        // Due at the very millisecond asked for.
        assert_eq!(ids(&outbox.due(t0, None, 10).await.unwrap()), [b.id]);

        // b sent: it leaves the queue. a retried in 30 s: it moves there.
        let sent = OutboxMessage {
            state: DeliveryState::Sent,
            done_at: Some(now),
            ..b.clone()
        };
        record(&outbox, &due[0], &sent).await;
        let retry = OutboxMessage {
            attempts: 1,
            next_at: now + secs(30),
            ..a.clone()
        };
        assert!(OutboxRepo::in_place(&due[1], &a));
        record(&outbox, &due[1], &retry).await;
        assert!(outbox.due(now, None, 10).await.unwrap().is_empty());
        let again = outbox.due(now + secs(40), None, 10).await.unwrap();
        assert_eq!(ids(&again), [a.id]);
        assert!(OutboxRepo::in_place(&again[0], &retry));
        assert_eq!(
            ids(&outbox.due(now + secs(90), None, 10).await.unwrap()),
            [a.id, later.id]
        );
    }

    #[tokio::test]
    async fn a_row_that_no_longer_matches_its_message_is_put_right() {
        let (_dir, outbox) = repo();
        let t0 = Utc::now();
        let m = message(t0);
        outbox.enqueue(&m).await.unwrap();
        // A redelivery while it waits: the message is due anew, its old row stays behind.
        let now = t0 + chrono::Duration::seconds(5);
        let resent = outbox.resend(m.id, now).await.unwrap().unwrap();
        let due = outbox.due(now, None, 10).await.unwrap();
        assert_eq!(ids(&due), [m.id, m.id]);
        assert!(!OutboxRepo::in_place(&due[0], &resent));
        assert!(OutboxRepo::in_place(&due[1], &resent));
        outbox.requeue(&due[0], Some(&resent)).await.unwrap();
        outbox.requeue(&due[1], Some(&resent)).await.unwrap();
        let due = outbox.due(now, None, 10).await.unwrap();
        assert_eq!(due.len(), 1, "the old row is gone, the right one kept");
        assert!(OutboxRepo::in_place(&due[0], &resent));

        // Given up on, but the queue row outlived it (a crash in between): it goes to the
        // dead letters and leaves the queue.
        let dead = OutboxMessage {
            state: DeliveryState::Dead,
            done_at: Some(now),
            ..resent.clone()
        };
        let row = outbox.get(m.id).await.unwrap().unwrap();
        outbox
            .messages
            .update(&OutboxRepo::message_key(m.id), row.version, &dead)
            .await
            .unwrap()
            .unwrap();
        outbox.requeue(&due[0], Some(&dead)).await.unwrap();
        assert!(outbox.due(now, None, 10).await.unwrap().is_empty());
        assert_eq!(outbox.dead(None, 10).await.unwrap().0.len(), 1);
        // A queue row whose message is gone is dropped.
        outbox.enqueue(&message(t0)).await.unwrap();
        let due = outbox.due(now, None, 10).await.unwrap();
        outbox.requeue(&due[0], None).await.unwrap();
        assert!(outbox.due(now, None, 10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn rows_queued_by_id_are_moved_into_time_order_by_a_whole_scan() {
        let (_dir, outbox) = repo();
        let t0 = Utc::now();
        let m = message(t0);
        outbox
            .messages
            .insert(&OutboxRepo::message_key(m.id), &m)
            .await
            .unwrap()
            .unwrap();
        let legacy = OutboxRepo::queue_key(LEGACY_PENDING, m.id);
        outbox
            .queue
            .insert(&legacy, &QueueEntry { due: t0 })
            .await
            .unwrap()
            .unwrap();

        assert!(outbox.due(t0, Some(t0), 10).await.unwrap().is_empty());
        let due = outbox.due(t0, None, 10).await.unwrap();
        assert_eq!(ids(&due), [m.id]);
        assert!(OutboxRepo::in_place(&due[0], &m));
        assert!(outbox.queue.get(&legacy).await.unwrap().is_none());
    }
}
