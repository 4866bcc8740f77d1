//! The durable queue of orders waiting for a courier (table `dispatches`, partition
//! `pending`), which the dispatcher loop works through.

use std::sync::Arc;

use tokio::sync::Notify;

use crate::clock::Clock;
use crate::domain::dispatch::{DispatchRecord, DispatchState};
use crate::domain::ids::{OrderId, VendorId};
use crate::store::typed::{Rows, Versioned};
use crate::store::{Key, MAX_PAGE, ScanRange, SharedStore, StoreResult, Table};

const PENDING: &str = "pending";

pub(crate) fn key(order: OrderId) -> Key {
    Key::new(PENDING, order.to_string())
}

/// The queue of orders waiting for a courier; cheap to clone.
#[derive(Clone)]
pub struct DispatchQueue {
    pub(crate) rows: Rows<DispatchRecord>,
    pub(crate) wake: Arc<Notify>,
    clock: Clock,
}

impl DispatchQueue {
    pub fn new(store: SharedStore, clock: Clock) -> Self {
        DispatchQueue {
            rows: Rows::new(store, Table::Dispatches),
            wake: Arc::new(Notify::new()),
            clock,
        }
    }

    /// Puts an order in the queue (once: queueing it again changes nothing) and wakes the
    /// dispatcher.
    pub async fn enqueue(&self, order: OrderId, vendor: VendorId) -> StoreResult<()> {
        let key = key(order);
        if self.rows.get(&key).await?.is_none() {
            let now = self.clock.now();
            let record = DispatchRecord {
                order_id: order,
                vendor_id: vendor,
                since: now,
                attempts: 0,
                declined: Vec::new(),
                last_declined_at: None,
                state: DispatchState::Waiting { next_at: now },
            };
            // Losing to another enqueue of the same order is the same outcome.
            let _ = self.rows.insert(&key, &record).await?;
        }
        self.wake.notify_one();
        Ok(())
    }

    /// Every queued order (at most `max`).
    pub async fn pending(&self, max: usize) -> StoreResult<Vec<Versioned<DispatchRecord>>> {
        let mut out = Vec::new();
        let mut range = ScanRange::first(max.min(MAX_PAGE));
        loop {
            let (rows, next) = self.rows.scan(PENDING, range).await?;
            out.extend(rows.into_iter().map(|(_, row)| row));
            match next {
                Some(after) if out.len() < max => {
                    range = ScanRange::after(after, (max - out.len()).min(MAX_PAGE));
                }
                _ => return Ok(out),
            }
        }
    }
}
