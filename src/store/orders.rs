//! Orders in the store: one versioned row per order id holding the whole [`OrderRecord`], the
//! order's append-only event log, the indexes of orders by customer and by vendor, and the
//! pending payment deadlines.
//!
//! The event log is the source of truth: an event is appended with insert-if-absent at its
//! sequence number (so two writers can never both record event `n`), and the row follows it.
//! [`OrderRepo::recover`] rolls a row that fell behind its log forward.
//!
//! Deadlines live in `order_timers`, partitioned by the UTC hour of the deadline
//! (`YYYYMMDDHH`) and clustered by `{deadline millis:020}:{order id}`, so the rows due by a
//! given time are a prefix of a few hour partitions.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::catalog::id_key;
use super::journal::{AtEvent, Journal};
use super::seq_key;
use super::typed::{Rows, Versioned};
use super::{Key, MAX_PAGE, ScanRange, SharedStore, StoreError, StoreResult, Table, Version};
use crate::domain::ids::{OrderId, UserId, VendorId};
use crate::domain::order::{Order, OrderEvent, OrderRecord};

/// How many attempts a roll-forward makes when other writers keep moving the row.
const RECOVER_ATTEMPTS: usize = 16;

/// An index row: enough to find the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderIndexEntry {
    pub order_id: OrderId,
    pub created_at: DateTime<Utc>,
}

/// A pending deadline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderTimer {
    pub order_id: OrderId,
    pub deadline: DateTime<Utc>,
}

/// A deadline that has passed, with the version needed to delete its row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueTimer {
    pub timer: OrderTimer,
    pub version: Version,
}

/// What [`OrderRepo::recover`] found: the row brought up to its log, and the events that had
/// to be applied to get there (their side effects may not have happened yet).
#[derive(Debug, Clone)]
pub struct Recovered {
    pub record: Versioned<OrderRecord>,
    pub replayed: Vec<OrderEvent>,
}

/// Typed access to the order tables.
#[derive(Clone)]
pub struct OrderRepo {
    pub orders: Rows<Order>,
    pub records: Rows<OrderRecord>,
    pub events: Rows<OrderEvent>,
    pub by_customer: Rows<OrderIndexEntry>,
    pub by_vendor: Rows<OrderIndexEntry>,
    pub timers: Rows<OrderTimer>,
    /// Every event is noted here before it is appended, for the consumers of order events.
    pub journal: Journal,
}

impl OrderRepo {
    pub fn new(store: SharedStore) -> Self {
        OrderRepo {
            orders: Rows::new(store.clone(), Table::Orders),
            records: Rows::new(store.clone(), Table::Orders),
            events: Rows::new(store.clone(), Table::OrderEvents),
            by_customer: Rows::new(store.clone(), Table::CustomerOrders),
            by_vendor: Rows::new(store.clone(), Table::VendorOrders),
            timers: Rows::new(store.clone(), Table::OrderTimers),
            journal: Journal::new(store),
        }
    }

    pub async fn get(&self, id: OrderId) -> StoreResult<Option<Versioned<Order>>> {
        self.orders.get(&id_key(id)).await
    }

    /// Creates the order's row if it does not exist yet; on conflict, the row that is there.
    pub async fn insert(
        &self,
        order: &Order,
    ) -> StoreResult<Result<Version, Option<Versioned<Order>>>> {
        self.orders.insert(&id_key(order.id), order).await
    }

    /// The order's row with its progress, as stored (possibly behind its event log).
    #[tracing::instrument(skip(self), fields(order_id = %id))]
    pub async fn load(&self, id: OrderId) -> StoreResult<Option<Versioned<OrderRecord>>> {
        self.records.get(&id_key(id)).await
    }

    /// Creates the row if absent; on conflict, the row that is there.
    pub async fn insert_record(
        &self,
        record: &OrderRecord,
    ) -> StoreResult<Result<Version, Option<Versioned<OrderRecord>>>> {
        self.records.insert(&id_key(record.id()), record).await
    }

    /// Replaces the row if still at `expected`; on conflict, the row as it is now.
    pub async fn update_record(
        &self,
        expected: Version,
        record: &OrderRecord,
    ) -> StoreResult<Result<Version, Option<Versioned<OrderRecord>>>> {
        self.records
            .update(&id_key(record.id()), expected, record)
            .await
    }

    /// Appends `event` at its sequence number, after noting it in the journal (a note without
    /// its event is harmless; an event without its note would never reach the consumers). If
    /// that number is taken, the event stored there.
    #[tracing::instrument(skip(self, event), fields(order_id = %id, seq = event.seq))]
    pub async fn append_event(
        &self,
        id: OrderId,
        event: &OrderEvent,
    ) -> StoreResult<Result<(), Option<OrderEvent>>> {
        self.journal.note(id, None, None, event).await?;
        self.append(id, event).await
    }

    /// [`append_event`](Self::append_event) of the event that follows `before` (the order's
    /// row as it was), with the order's parties in the journal's note.
    pub async fn append_event_to(
        &self,
        before: &OrderRecord,
        event: &OrderEvent,
    ) -> StoreResult<Result<(), Option<OrderEvent>>> {
        let then = AtEvent::after(before, event);
        let id = before.id();
        let customer = Some(before.order.customer_id);
        self.journal.note(id, customer, Some(then), event).await?;
        self.append(id, event).await
    }

    async fn append(
        &self,
        id: OrderId,
        event: &OrderEvent,
    ) -> StoreResult<Result<(), Option<OrderEvent>>> {
        let key = Key::new(id.to_string(), seq_key(event.seq));
        Ok(match self.events.insert(&key, event).await? {
            Ok(_) => Ok(()),
            Err(existing) => Err(existing.map(|v| v.value)),
        })
    }

    /// Event `seq` of the order, if it was appended.
    pub async fn event(&self, id: OrderId, seq: u64) -> StoreResult<Option<OrderEvent>> {
        let key = Key::new(id.to_string(), seq_key(seq));
        Ok(self.events.get(&key).await?.map(|v| v.value))
    }

    /// Up to `limit` events with a sequence number above `after_seq`, oldest first, and the
    /// sequence number to continue after when there may be more.
    pub async fn events_after(
        &self,
        id: OrderId,
        after_seq: u64,
        limit: usize,
    ) -> StoreResult<(Vec<OrderEvent>, Option<u64>)> {
        let (rows, next) = self
            .events
            .scan(&id.to_string(), ScanRange::after(seq_key(after_seq), limit))
            .await?;
        let events: Vec<OrderEvent> = rows.into_iter().map(|(_, v)| v.value).collect();
        let next = next.and(events.last().map(|e| e.seq));
        Ok((events, next))
    }

    /// Reads the row and rolls it forward over any events its log has beyond it (a process
    /// that died between appending an event and updating the row leaves exactly that).
    #[tracing::instrument(skip(self), fields(order_id = %id))]
    pub async fn recover(&self, id: OrderId) -> StoreResult<Option<Recovered>> {
        for _ in 0..RECOVER_ATTEMPTS {
            let Some(mut current) = self.load(id).await? else {
                return Ok(None);
            };
            let mut replayed = Vec::new();
            let mut next = current.value.clone();
            loop {
                let before = next.seq;
                let (events, more) = self.events_after(id, next.seq, MAX_PAGE).await?;
                for event in &events {
                    // Sequence numbers are dense; a gap would mean a lost write, and nothing
                    // past it is applied.
                    if event.seq == next.seq + 1 {
                        next.apply(event);
                        replayed.push(event.clone());
                    }
                }
                if more.is_none() || next.seq == before {
                    break;
                }
            }
            if replayed.is_empty() {
                return Ok(Some(Recovered {
                    record: current,
                    replayed,
                }));
            }
            tracing::warn!(
                order_id = %id,
                from = current.value.seq,
                to = next.seq,
                "order row was behind its event log; rolling it forward"
            );
            match self.update_record(current.version, &next).await? {
                Ok(version) => {
                    current = Versioned {
                        version,
                        value: next,
                    };
                    return Ok(Some(Recovered {
                        record: current,
                        replayed,
                    }));
                }
                // Someone else moved the row meanwhile: read it again.
                Err(_) => continue,
            }
        }
        Err(StoreError::Unavailable(format!(
            "order {id}: gave up rolling the row forward after {RECOVER_ATTEMPTS} conflicts"
        )))
    }

    /// Writes the customer and vendor index rows of an order (idempotent).
    pub async fn index(&self, order: &Order) -> StoreResult<()> {
        let entry = OrderIndexEntry {
            order_id: order.id,
            created_at: order.created_at,
        };
        let clustering = order.id.to_string();
        let by_customer = Key::new(order.customer_id.to_string(), clustering.clone());
        let by_vendor = Key::new(order.vendor_id.to_string(), clustering);
        // A row already there is this same entry: the order id is unique. The two rows are
        // independent, so they are written at once (one group commit, not two).
        let _ = futures_util::future::try_join(
            self.by_customer.insert(&by_customer, &entry),
            self.by_vendor.insert(&by_vendor, &entry),
        )
        .await?;
        Ok(())
    }

    /// One page of a customer's order ids, oldest first, after `after`.
    pub async fn customer_orders(
        &self,
        customer: UserId,
        after: Option<OrderId>,
        limit: usize,
    ) -> StoreResult<(Vec<OrderId>, Option<OrderId>)> {
        index_page(&self.by_customer, &customer.to_string(), after, limit).await
    }

    /// One page of a vendor's order ids, oldest first, after `after`.
    pub async fn vendor_orders(
        &self,
        vendor: VendorId,
        after: Option<OrderId>,
        limit: usize,
    ) -> StoreResult<(Vec<OrderId>, Option<OrderId>)> {
        index_page(&self.by_vendor, &vendor.to_string(), after, limit).await
    }

    /// One page of every order, in the store's order; `cursor` is the previous page's `next`.
    pub async fn all_orders(
        &self,
        cursor: Option<String>,
        limit: usize,
    ) -> StoreResult<(Vec<OrderRecord>, Option<String>)> {
        let (rows, next) = self.records.scan_table(cursor, limit).await?;
        Ok((rows.into_iter().map(|(_, v)| v.value).collect(), next))
    }

    /// Records the deadline of an unpaid order (idempotent).
    pub async fn put_timer(&self, id: OrderId, deadline: DateTime<Utc>) -> StoreResult<()> {
        let timer = OrderTimer {
            order_id: id,
            deadline,
        };
        // An existing row is this same timer: the key holds both the deadline and the id.
        self.timers
            .insert(&timer_key(id, deadline), &timer)
            .await?
            .ok();
        Ok(())
    }

    /// Deletes the deadline of an order (no-op when it is gone already).
    pub async fn delete_timer(&self, id: OrderId, deadline: DateTime<Utc>) -> StoreResult<()> {
        let key = timer_key(id, deadline);
        if let Some(row) = self.timers.get(&key).await? {
            // A conflict means another node deleted it first.
            self.timers.delete(&key, row.version).await?.ok();
        }
        Ok(())
    }

    /// Deletes a due timer read by [`due_timers`](Self::due_timers).
    pub async fn delete_due(&self, due: &DueTimer) -> StoreResult<()> {
        let key = timer_key(due.timer.order_id, due.timer.deadline);
        self.timers.delete(&key, due.version).await?.ok();
        Ok(())
    }

    /// Up to `limit` timers of the hour bucket holding `bucket_time` whose deadline is at or
    /// before `now`, earliest first.
    pub async fn due_timers(
        &self,
        bucket_time: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<DueTimer>> {
        let range = ScanRange {
            after: None,
            before: Some(format!("{:020}", now.timestamp_millis().max(0) + 1)),
            limit,
        };
        let (rows, _) = self.timers.scan(&hour_bucket(bucket_time), range).await?;
        Ok(rows
            .into_iter()
            .map(|(_, v)| DueTimer {
                timer: v.value,
                version: v.version,
            })
            .collect())
    }
}

/// The partition of the timers due in `at`'s UTC hour.
pub fn hour_bucket(at: DateTime<Utc>) -> String {
    at.format("%Y%m%d%H").to_string()
}

fn timer_key(id: OrderId, deadline: DateTime<Utc>) -> Key {
    Key::new(
        hour_bucket(deadline),
        format!("{:020}:{id}", deadline.timestamp_millis().max(0)),
    )
}

async fn index_page(
    rows: &Rows<OrderIndexEntry>,
    partition: &str,
    after: Option<OrderId>,
    limit: usize,
) -> StoreResult<(Vec<OrderId>, Option<OrderId>)> {
    let range = match after {
        Some(after) => ScanRange::after(after.to_string(), limit),
        None => ScanRange::first(limit),
    };
    let (rows, next) = rows.scan(partition, range).await?;
    let ids: Vec<OrderId> = rows.into_iter().map(|(_, v)| v.value.order_id).collect();
    let next = next.and(ids.last().copied());
    Ok((ids, next))
}
