//! The courier journal: what couriers did that no order's log says — offers made to them and
//! how they answered, the cells they were seen online in (once per cell and hour), the ETA
//! they were given at pickup — in time order, for analytics to fold.
//!
//! Like the order journal it is partitioned by minute of the writer's wall clock and read
//! with [`read_minutes`](super::journal::read_minutes) up to a little before the reader's
//! clock. Unlike it, entries are the events themselves and are kept (no time to live): a
//! rebuild of the rollups reads them all again.

use uuid::Uuid;

use super::journal::{Position, bucket, read_minutes, time_key};
use super::{Key, SharedStore, StoreResult, Table, encode};
use crate::domain::analytics::CourierEvent;

/// Typed access to `courier_journal`.
#[derive(Clone)]
pub struct CourierJournal {
    store: SharedStore,
}

impl CourierJournal {
    pub fn new(store: SharedStore) -> Self {
        CourierJournal { store }
    }

    fn key(event: &CourierEvent) -> Key {
        Key::new(
            bucket(event.at_ms).to_string(),
            format!(
                "{}.{}.{}",
                time_key(event.at_ms),
                event.courier.as_uuid().simple(),
                event.id.simple()
            ),
        )
    }

    /// Appends `events`; durable when this returns.
    pub async fn append(&self, events: &[CourierEvent]) -> StoreResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let rows = events
            .iter()
            .map(|e| Ok((Self::key(e), encode(Table::CourierJournal, e)?)))
            .collect::<StoreResult<Vec<_>>>()?;
        self.store.put(Table::CourierJournal, rows, None).await
    }

    /// Up to `limit` events after `from`, stamped at or before `until_ms`, oldest first.
    pub async fn read(
        &self,
        from: &Position,
        until_ms: i64,
        limit: usize,
    ) -> StoreResult<(Vec<CourierEvent>, Position)> {
        read_minutes(
            &self.store,
            Table::CourierJournal,
            from,
            until_ms,
            limit,
            |e: &CourierEvent| e.at_ms,
        )
        .await
    }

    /// Hands every event stamped at or before `until_ms` to `each`, in no particular order
    /// (a rebuild's fold does not depend on it), and returns the position just past them.
    pub async fn all_until(
        &self,
        until_ms: i64,
        mut each: impl FnMut(CourierEvent),
    ) -> StoreResult<Position> {
        let mut cursor = None;
        loop {
            let page = self
                .store
                .scan_table(Table::CourierJournal, cursor, super::MAX_PAGE)
                .await?;
            for row in &page.rows {
                let event: CourierEvent = super::decode(Table::CourierJournal, &row.data)?;
                if event.at_ms <= until_ms {
                    each(event);
                }
            }
            if page.next.is_none() || page.rows.is_empty() {
                break;
            }
            cursor = page.next;
        }
        // Every key stamped at `until_ms` sorts before this one ('~' after any hex digit).
        Ok(Position {
            minute: bucket(until_ms),
            after: Some(format!("{}.~", time_key(until_ms))),
        })
    }

    /// A fresh event id (time-ordered).
    pub fn new_id() -> Uuid {
        Uuid::now_v7()
    }
}
