//! The order journal: one small row per order event, in time order across all orders, for the
//! consumers of order events (notifications today) to read with a durable cursor.
//!
//! An order's log is partitioned by order, so "every event since my cursor" cannot be read
//! from it. [`OrderRepo::append_event`](super::orders::OrderRepo::append_event) therefore notes
//! each event here *before* appending it: partition = minute since the epoch, clustering =
//! `{ms:020}.{order}.{seq:020}`. A note is only a pointer; the consumer reads the event
//! itself from the order's log, which is the truth. A note whose event never got appended (the
//! writer died in between, or lost the race for that number) points at nothing or at another
//! writer's event — which that writer noted too, under the same order and number, so deriving
//! from either note gives the same messages.
//!
//! Notes are stamped with the wall clock of the node that writes them, and consumers read only
//! up to a little before their own wall clock ([`SETTLE`]), so a note being written as the
//! cursor passes is not skipped. Each consumer keeps its position and a lease in one versioned
//! row ([`ConsumerCursor`]): one node at a time reads for a consumer, and a node that stops
//! renewing hands over after the lease runs out.

use std::time::Duration;

use chrono::{DateTime, TimeZone as _, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::typed::{Rows, Versioned};
use super::{Key, MAX_PAGE, ScanRange, SharedStore, StoreResult, Table, Version, decode, encode};
use crate::domain::account::NotificationEvent;
use crate::domain::ids::{OrderId, UserId};
use crate::domain::notification::event_of;
use crate::domain::order::{OrderEvent, OrderEventKind, OrderRecord};

const BUCKET_MS: i64 = 60_000;
/// How long notes are kept: far longer than any consumer may lag.
pub const RETENTION: Duration = Duration::from_secs(14 * 24 * 3600);
/// How far behind the wall clock consumers read: a note is written within this time of the
/// clock reading that stamps it.
pub const SETTLE: Duration = Duration::from_millis(1500);

/// "Order `order_id` has (or is about to have) event `seq`", with what its writer knew of it:
/// enough for a consumer to pass over the events that are nobody's news, or only the
/// customer's, without reading the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalNote {
    pub order_id: OrderId,
    pub seq: u64,
    /// Milliseconds since the epoch, by the writer's wall clock.
    pub at_ms: i64,
    /// Whether the writer described the event (`event`, `customer`); notes of old writers
    /// did not.
    #[serde(default)]
    pub described: bool,
    /// The notification the writer's event is; none when it is nobody's news.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<NotificationEvent>,
    /// The order's customer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<UserId>,
    /// Who else the event concerned when it happened; none from writers that did not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub then: Option<AtEvent>,
}

/// An order's parties as of one event, with the event applied: whether the order was paid
/// (its store hears of it from then on) and its courier. Recipients are those of the event's
/// moment, not of the moment a consumer reads it: an order made ready before its courier was
/// assigned is not the courier's news.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AtEvent {
    #[serde(default)]
    pub paid: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub courier: Option<UserId>,
}

impl AtEvent {
    /// The parties once `event` is applied to an order whose row is `record` (the row before
    /// the event, or any row that has not dropped a payment or a courier since).
    pub fn after(record: &OrderRecord, event: &OrderEvent) -> AtEvent {
        AtEvent {
            paid: record.paid_at.is_some() || event.kind == OrderEventKind::Paid,
            courier: match &event.kind {
                OrderEventKind::CourierAssigned { courier } => Some(*courier),
                _ => record.courier_id,
            },
        }
    }
}

impl JournalNote {
    pub fn at(&self) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(self.at_ms)
            .single()
            .unwrap_or_default()
    }

    pub fn clustering(&self) -> String {
        format!(
            "{}.{}.{:020}",
            time_key(self.at_ms),
            self.order_id.as_uuid().simple(),
            self.seq
        )
    }
}

/// Where a consumer is: the last note it has handled (notes are ordered by minute, then by
/// clustering key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Minute since the epoch of the partition being read.
    pub minute: i64,
    /// The clustering key of the last note handled in that minute (none: from its start).
    pub after: Option<String>,
}

impl Position {
    /// The start of the minute containing `at_ms`.
    pub fn at(at_ms: i64) -> Self {
        Position {
            minute: bucket(at_ms),
            after: None,
        }
    }
}

/// A consumer's cursor and lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerCursor {
    pub position: Position,
    /// The node reading for the consumer, until `lease_until`.
    pub holder: Uuid,
    pub lease_until: DateTime<Utc>,
}

/// Typed access to `order_journal` and the consumers' cursors.
#[derive(Clone)]
pub struct Journal {
    store: SharedStore,
    cursors: Rows<ConsumerCursor>,
}

impl Journal {
    pub fn new(store: SharedStore) -> Self {
        Journal {
            cursors: Rows::new(store.clone(), Table::JournalCursors),
            store,
        }
    }

    /// Notes `event` of `order` (placed by `customer`), stamped now; durable when this
    /// returns.
    pub async fn note(
        &self,
        order: OrderId,
        customer: Option<UserId>,
        then: Option<AtEvent>,
        event: &OrderEvent,
    ) -> StoreResult<()> {
        self.note_at(JournalNote {
            order_id: order,
            seq: event.seq,
            at_ms: Utc::now().timestamp_millis(),
            described: true,
            event: event_of(&event.kind),
            customer,
            then,
        })
        .await
    }

    pub async fn note_at(&self, note: JournalNote) -> StoreResult<()> {
        let key = Key::new(bucket(note.at_ms).to_string(), note.clustering());
        let data = encode(Table::OrderJournal, &note)?;
        self.store
            .put(Table::OrderJournal, vec![(key, data)], Some(RETENTION))
            .await
    }

    /// Up to `limit` notes after `from` and stamped at or before `until_ms`, oldest first, and
    /// the position after the last one returned (or `from` unchanged when there are none). A
    /// reader that has reached `until_ms` gets the position of the minute it is in, so it
    /// never walks the same empty minutes twice.
    pub async fn read(
        &self,
        from: &Position,
        until_ms: i64,
        limit: usize,
    ) -> StoreResult<(Vec<JournalNote>, Position)> {
        read_minutes(
            &self.store,
            Table::OrderJournal,
            from,
            until_ms,
            limit,
            |n: &JournalNote| n.at_ms,
        )
        .await
    }

    /// Takes (or renews) `consumer`'s lease for `node` for `length`; a consumer that never
    /// ran starts at `start`. `None` while another node holds it.
    pub async fn lease(
        &self,
        consumer: &str,
        node: Uuid,
        start: Position,
        length: chrono::Duration,
    ) -> StoreResult<Option<Lease>> {
        let now = Utc::now();
        let (mut cursor, version) = match self.cursor(consumer).await? {
            Some(found) => (found.value, found.version),
            None => (
                ConsumerCursor {
                    position: start,
                    holder: node,
                    lease_until: now,
                },
                0,
            ),
        };
        if cursor.holder != node && cursor.lease_until > now {
            return Ok(None);
        }
        cursor.holder = node;
        cursor.lease_until = now + length;
        Ok(self
            .save_cursor(consumer, version, &cursor)
            .await?
            .map(|version| Lease { cursor, version }))
    }

    /// The cursor of `consumer`, if it ever ran.
    pub async fn cursor(&self, consumer: &str) -> StoreResult<Option<Versioned<ConsumerCursor>>> {
        self.cursors.get(&Key::single(consumer)).await
    }

    /// Writes the cursor if it is still at `expected` (0: creates it). `false`: another node
    /// wrote it first.
    pub async fn save_cursor(
        &self,
        consumer: &str,
        expected: Version,
        cursor: &ConsumerCursor,
    ) -> StoreResult<Option<Version>> {
        let key = Key::single(consumer);
        let outcome = if expected == 0 {
            self.cursors.insert(&key, cursor).await?
        } else {
            self.cursors.update(&key, expected, cursor).await?
        };
        Ok(outcome.ok())
    }
}

/// A consumer's cursor as this node holds it, with the version of its row.
pub struct Lease {
    pub cursor: ConsumerCursor,
    pub version: Version,
}

/// Up to `limit` rows of a minute-partitioned journal `table` (clustering keys sorting in
/// time order) after `from` and stamped (by `stamp`) at or before `until_ms`, oldest first,
/// and the position after the last one returned; see [`Journal::read`].
pub async fn read_minutes<T: serde::de::DeserializeOwned>(
    store: &SharedStore,
    table: Table,
    from: &Position,
    until_ms: i64,
    limit: usize,
    stamp: impl Fn(&T) -> i64,
) -> StoreResult<(Vec<T>, Position)> {
    let limit = limit.clamp(1, MAX_PAGE);
    let last_minute = bucket(until_ms);
    let mut notes = Vec::new();
    let mut position = from.clone();
    while position.minute <= last_minute {
        let range = ScanRange {
            after: position.after.clone(),
            before: None,
            limit: limit - notes.len(),
        };
        let page = store
            .scan(table, &position.minute.to_string(), range)
            .await?;
        for row in &page.rows {
            let note: T = decode(table, &row.data)?;
            if stamp(&note) > until_ms {
                return Ok((notes, position));
            }
            position.after = Some(row.key.clustering.clone());
            notes.push(note);
        }
        if notes.len() >= limit {
            return Ok((notes, position));
        }
        if page.next.is_some() {
            continue;
        }
        if position.minute == last_minute {
            break;
        }
        position = Position {
            minute: position.minute + 1,
            after: None,
        };
    }
    Ok((notes, position))
}

/// The minute since the epoch of `at_ms`: the partition of journal rows stamped then.
pub fn bucket(at_ms: i64) -> i64 {
    at_ms.max(0).div_euclid(BUCKET_MS)
}

/// A clustering key prefix for `at_ms` that sorts in time order.
pub fn time_key(at_ms: i64) -> String {
    format!("{:020}", at_ms.max(0))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::embedded::EmbeddedStore;

    #[tokio::test]
    async fn notes_are_read_in_time_order_across_minutes_up_to_the_horizon() {
        let dir = tempfile::tempdir().unwrap();
        let store: SharedStore = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let journal = Journal::new(store);
        let base = 1_764_000_000_000 - 1_764_000_000_000 % BUCKET_MS;
        let notes: Vec<JournalNote> = [
            base + 10,
            base + 20,
            base + BUCKET_MS + 5,
            base + 3 * BUCKET_MS,
        ]
        .into_iter()
        .enumerate()
        .map(|(i, at_ms)| JournalNote {
            order_id: OrderId::new(),
            seq: i as u64 + 1,
            at_ms,
            described: false,
            event: None,
            customer: None,
            then: None,
        })
        .collect();
        // Written out of order: the journal orders them.
        for note in notes.iter().rev() {
            journal.note_at(*note).await.unwrap();
        }
        let start = Position::at(base);
        let (read, position) = journal
            .read(&start, base + 2 * BUCKET_MS, 100)
            .await
            .unwrap();
        assert_eq!(read, notes[..3]);
        // Nothing new up to the same horizon; the last note comes when the horizon passes it.
        let (again, position) = journal
            .read(&position, base + 2 * BUCKET_MS, 100)
            .await
            .unwrap();
        assert!(again.is_empty());
        let (rest, _) = journal
            .read(&position, base + 4 * BUCKET_MS, 100)
            .await
            .unwrap();
        assert_eq!(rest, notes[3..]);
        // Pages of one.
        let (first, position) = journal.read(&start, base + 4 * BUCKET_MS, 1).await.unwrap();
        assert_eq!(first, notes[..1]);
        let (second, _) = journal
            .read(&position, base + 4 * BUCKET_MS, 1)
            .await
            .unwrap();
        assert_eq!(second, notes[1..2]);
    }

    #[tokio::test]
    async fn a_cursor_is_written_by_one_node_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let store: SharedStore = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let journal = Journal::new(store);
        let cursor = ConsumerCursor {
            position: Position::at(0),
            holder: Uuid::new_v4(),
            lease_until: Utc::now(),
        };
        let v1 = journal.save_cursor("c", 0, &cursor).await.unwrap().unwrap();
        assert_eq!(journal.save_cursor("c", 0, &cursor).await.unwrap(), None);
        assert!(
            journal
                .save_cursor("c", v1, &cursor)
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(journal.save_cursor("c", v1, &cursor).await.unwrap(), None);
    }
}
