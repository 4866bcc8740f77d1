//! Notifications in the store: the outbox of messages for external channels and each user's
//! in-app feed.
//!
//! **Outbox.** A message is one row of `notifications` keyed by its id (derived from the
//! order event, recipient and channel, so deriving an event again meets the row that is
//! there). While it waits for an attempt it also has a row in `notification_queue` partition
//! `pending`; when it is given up on, one in partition `dead`. The message row is written
//! first and the queue row after it, and [`OutboxRepo::enqueue`] puts back a missing queue row
//! of a pending message, so a crash in between leaves nothing a second derivation does not
//! repair. Sent messages keep their row (with its state) for [`MESSAGE_RETENTION`]: that row
//! is what makes a second derivation a no-op.
//!
//! **Feed.** partition = user id; clustering = `{inverted ms:020}.{id}` so a scan reads newest
//! first, plus `id:{id}` reference rows (sorted after every entry, and excluded from pages) to
//! find an entry by id.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::typed::{Change, ModifyError, Rows, Versioned};
use super::{Key, MAX_PAGE, ScanRange, SharedStore, StoreError, StoreResult, Version};
use crate::domain::ids::UserId;
use crate::domain::notification::{DeliveryState, FeedItem, OutboxMessage};
use crate::store::Table;

/// How long a message's row is kept after it was written.
pub const MESSAGE_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long an in-app notification is kept.
pub const FEED_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);
/// Feed entries looked at to count the unread ones.
pub const UNREAD_SCAN: usize = 1000;

const PENDING: &str = "pending";
const DEAD: &str = "dead";
/// Reference rows sort after every entry (entries start with a digit).
const REF_PREFIX: &str = "id:";

/// A message's place in the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueEntry {
    pub due: DateTime<Utc>,
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
                .insert(&Self::queue_key(PENDING, message.id), &QueueEntry { due })
                .await?;
        }
        Ok(new)
    }

    pub async fn get(&self, id: Uuid) -> StoreResult<Option<Versioned<OutboxMessage>>> {
        self.messages.get(&Self::message_key(id)).await
    }

    /// Ids of queued messages due at `now`, at most `limit`, scanning the whole queue.
    pub async fn due(&self, now: DateTime<Utc>, limit: usize) -> StoreResult<Vec<Uuid>> {
        let mut due = Vec::new();
        let mut after = None;
        loop {
            let range = ScanRange {
                after: after.take(),
                before: None,
                limit: MAX_PAGE,
            };
            let (rows, next) = self.queue.scan(PENDING, range).await?;
            for (key, row) in rows {
                if row.value.due <= now
                    && let Ok(id) = Uuid::parse_str(&key.clustering)
                {
                    due.push(id);
                    if due.len() >= limit {
                        return Ok(due);
                    }
                }
            }
            match next {
                Some(n) => after = Some(n),
                None => return Ok(due),
            }
        }
    }

    /// Writes the outcome of an attempt: the message row by compare-and-set (`None`: another
    /// writer changed it first), then its queue rows (a retry keeps its queue row with the
    /// new due time; a sent, skipped or dead one leaves the queue, a dead one for the dead
    /// letters).
    pub async fn record(
        &self,
        expected: Version,
        message: &OutboxMessage,
    ) -> StoreResult<Option<Version>> {
        let Ok(version) = self
            .messages
            .update(&Self::message_key(message.id), expected, message)
            .await?
        else {
            return Ok(None);
        };
        let pending = Self::queue_key(PENDING, message.id);
        match message.state {
            DeliveryState::Pending => {
                self.queue
                    .modify(&pending, |_| {
                        Ok::<_, StoreError>(Change::Put(
                            QueueEntry {
                                due: message.next_at,
                            },
                            (),
                        ))
                    })
                    .await
                    .map_err(flatten)?;
            }
            state => {
                if state == DeliveryState::Dead {
                    let due = QueueEntry {
                        due: message.done_at.unwrap_or(message.next_at),
                    };
                    let _ = self
                        .queue
                        .insert(&Self::queue_key(DEAD, message.id), &due)
                        .await?;
                }
                self.remove(&pending).await?;
            }
        }
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
                .insert(&Self::queue_key(PENDING, id), &QueueEntry { due: now })
                .await?;
        }
        self.remove(&dead).await?;
        Ok(revived)
    }
}

fn flatten(e: ModifyError<StoreError>) -> StoreError {
    match e {
        ModifyError::Store(e) | ModifyError::Rejected(e) => e,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum FeedRow {
    Entry(FeedItem),
    Ref { key: String },
}

/// Every user's in-app feed.
#[derive(Clone)]
pub struct FeedRepo {
    rows: Rows<FeedRow>,
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

    fn entry_clustering(item: &FeedItem) -> String {
        let inverted = i64::MAX - item.at.timestamp_millis().max(0);
        format!("{inverted:020}.{}", item.id.simple())
    }

    fn reference(user: UserId, id: Uuid) -> Key {
        Key::new(user.to_string(), format!("{REF_PREFIX}{}", id.simple()))
    }

    /// Adds an entry to `user`'s feed unless it is there; `true` when it was new.
    pub async fn add(&self, user: UserId, item: &FeedItem) -> StoreResult<bool> {
        let clustering = Self::entry_clustering(item);
        let key = Key::new(user.to_string(), clustering.clone());
        let new = self
            .rows
            .insert(&key, &FeedRow::Entry(item.clone()))
            .await?
            .is_ok();
        // Written after the entry: an entry without its reference is found again by the
        // next add of the same item, which writes it.
        let _ = self
            .rows
            .insert(
                &Self::reference(user, item.id),
                &FeedRow::Ref { key: clustering },
            )
            .await?;
        Ok(new)
    }

    /// Entries after the cursor `after` (from a previous page), newest first.
    pub async fn page(
        &self,
        user: UserId,
        after: Option<String>,
        limit: usize,
    ) -> StoreResult<FeedPage> {
        let range = ScanRange {
            after,
            before: Some(REF_PREFIX.to_owned()),
            limit,
        };
        let (rows, next) = self.rows.scan(&user.to_string(), range).await?;
        let items = rows
            .into_iter()
            .filter_map(|(_, row)| match row.value {
                FeedRow::Entry(item) => Some(item),
                FeedRow::Ref { .. } => None,
            })
            .collect();
        Ok(FeedPage { items, next })
    }

    /// How many of the newest [`UNREAD_SCAN`] entries are unread.
    pub async fn unread(&self, user: UserId) -> StoreResult<usize> {
        let mut count = 0;
        let mut seen = 0;
        let mut after = None;
        while seen < UNREAD_SCAN {
            let page = self
                .page(user, after.take(), (UNREAD_SCAN - seen).min(MAX_PAGE))
                .await?;
            seen += page.items.len();
            count += page.items.iter().filter(|i| i.read_at.is_none()).count();
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        Ok(count)
    }

    /// Marks one entry read (reading it twice keeps the first time). `None`: the user has no
    /// such entry.
    pub async fn mark_read(
        &self,
        user: UserId,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<FeedItem>> {
        let Some(reference) = self.rows.get(&Self::reference(user, id)).await? else {
            return Ok(None);
        };
        let FeedRow::Ref { key } = reference.value else {
            return Ok(None);
        };
        let (item, _) = self
            .rows
            .modify(&Key::new(user.to_string(), key), |current| match current {
                Some(FeedRow::Entry(item)) if item.read_at.is_none() => {
                    let read = FeedItem {
                        read_at: Some(now),
                        ..item.clone()
                    };
                    Ok(Change::Put(FeedRow::Entry(read.clone()), Some(read)))
                }
                Some(FeedRow::Entry(item)) => Ok(Change::Keep(Some(item.clone()))),
                _ => Ok(Change::Keep(None)),
            })
            .await
            .map_err(flatten)?;
        Ok(item)
    }

    /// Marks every unread entry among the newest [`UNREAD_SCAN`] read; returns how many.
    pub async fn mark_all_read(&self, user: UserId, now: DateTime<Utc>) -> StoreResult<usize> {
        let mut unread = Vec::new();
        let mut after = None;
        let mut seen = 0;
        while seen < UNREAD_SCAN {
            let page = self
                .page(user, after.take(), (UNREAD_SCAN - seen).min(MAX_PAGE))
                .await?;
            seen += page.items.len();
            unread.extend(
                page.items
                    .into_iter()
                    .filter(|i| i.read_at.is_none())
                    .map(|i| i.id),
            );
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        let mut marked = 0;
        for id in unread {
            if self.mark_read(user, id, now).await?.is_some() {
                marked += 1;
            }
        }
        Ok(marked)
    }
}
