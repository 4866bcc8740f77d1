//! What the live side keeps in the store besides couriers: each vendor's order feed and the
//! set of orders in flight.
//!
//! The vendor feed gives every event of a vendor's paid orders a per-vendor sequence number,
//! so a vendor's screen can resume after a reconnect with `after_seq`. Numbers are handed out
//! by compare-and-set on a head row (`head:{vendor}`), the entry is then written at its number,
//! and a reference row (`ref:{order}` / order sequence) remembers which number an order event
//! got, so replaying an order's side effects never lists an event twice. A crash between
//! taking a number and writing the entry leaves a gap, never a duplicate.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::seq_key;
use super::typed::{Change, Rows};
use super::{Key, ScanRange, SharedStore, StoreError, StoreResult, Table};
use crate::domain::ids::{OrderId, VendorId};
use crate::domain::order::{OrderEvent, OrderEventKind, OrderStatus};

/// One entry of a vendor's feed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FeedEntry {
    /// Position in the vendor's feed: 1, 2, 3, … (a number may be missing, never repeated).
    pub seq: u64,
    #[schema(value_type = String, format = Uuid)]
    pub order_id: OrderId,
    /// The event's sequence number in the order's own log.
    pub order_seq: u64,
    pub at: DateTime<Utc>,
    pub kind: OrderEventKind,
    pub status_after: OrderStatus,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum FeedRow {
    Head { last_seq: u64 },
    Ref { feed_seq: u64 },
    Entry(FeedEntry),
}

/// Each vendor's feed of order events.
#[derive(Clone)]
pub struct VendorFeedRepo {
    rows: Rows<FeedRow>,
}

impl VendorFeedRepo {
    pub fn new(store: SharedStore) -> Self {
        VendorFeedRepo {
            rows: Rows::new(store, Table::VendorFeed),
        }
    }

    /// Puts an order event on its vendor's feed (once, however often it is called) and
    /// returns the entry.
    pub async fn append(
        &self,
        vendor: VendorId,
        order: OrderId,
        event: &OrderEvent,
    ) -> StoreResult<FeedEntry> {
        let reference = Key::new(format!("ref:{order}"), seq_key(event.seq));
        let entry_at = |seq: u64| FeedEntry {
            seq,
            order_id: order,
            order_seq: event.seq,
            at: event.at,
            kind: event.kind.clone(),
            status_after: event.status_after,
        };
        if let Some(found) = self.rows.get(&reference).await?
            && let FeedRow::Ref { feed_seq } = found.value
        {
            return Ok(entry_at(feed_seq));
        }
        let head = Key::single(format!("head:{vendor}"));
        let (seq, _) = self
            .rows
            .modify(&head, |current| {
                let last = match current {
                    Some(FeedRow::Head { last_seq }) => *last_seq,
                    _ => 0,
                };
                Ok::<_, StoreError>(Change::Put(FeedRow::Head { last_seq: last + 1 }, last + 1))
            })
            .await
            .map_err(|e| match e {
                super::typed::ModifyError::Store(e) | super::typed::ModifyError::Rejected(e) => e,
            })?;
        let entry = entry_at(seq);
        let key = Key::new(vendor.to_string(), seq_key(seq));
        // Numbers are never handed out twice, so the insert can only meet itself (a retry).
        let _ = self
            .rows
            .insert(&key, &FeedRow::Entry(entry.clone()))
            .await?;
        let _ = self
            .rows
            .insert(&reference, &FeedRow::Ref { feed_seq: seq })
            .await?;
        Ok(entry)
    }

    /// The last number handed out on a vendor's feed (0: none yet).
    pub async fn last_seq(&self, vendor: VendorId) -> StoreResult<u64> {
        Ok(
            match self
                .rows
                .get(&Key::single(format!("head:{vendor}")))
                .await?
            {
                Some(row) => match row.value {
                    FeedRow::Head { last_seq } => last_seq,
                    _ => 0,
                },
                None => 0,
            },
        )
    }

    /// Entries after `after_seq`, oldest first, at most `limit`.
    pub async fn after(
        &self,
        vendor: VendorId,
        after_seq: u64,
        limit: usize,
    ) -> StoreResult<Vec<FeedEntry>> {
        let range = if after_seq == 0 {
            ScanRange::first(limit)
        } else {
            ScanRange::after(seq_key(after_seq), limit)
        };
        let (rows, _) = self.rows.scan(&vendor.to_string(), range).await?;
        Ok(rows
            .into_iter()
            .filter_map(|(_, row)| match row.value {
                FeedRow::Entry(entry) => Some(entry),
                _ => None,
            })
            .collect())
    }
}

/// An order between paid and delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenOrder {
    pub order_id: OrderId,
    pub vendor_id: VendorId,
    pub since: DateTime<Utc>,
}

const OPEN: &str = "open";

/// The orders in flight, for live operations.
#[derive(Clone)]
pub struct OpenOrdersRepo {
    rows: Rows<OpenOrder>,
}

impl OpenOrdersRepo {
    pub fn new(store: SharedStore) -> Self {
        OpenOrdersRepo {
            rows: Rows::new(store, Table::OpenOrders),
        }
    }

    fn key(order: OrderId) -> Key {
        Key::new(OPEN, order.to_string())
    }

    /// Records an order as in flight (idempotent).
    pub async fn open(&self, order: &OpenOrder) -> StoreResult<()> {
        // Already open is just as good.
        let _ = self.rows.insert(&Self::key(order.order_id), order).await?;
        Ok(())
    }

    /// Forgets an order that reached its end (idempotent).
    pub async fn close(&self, order: OrderId) -> StoreResult<()> {
        let key = Self::key(order);
        if let Some(row) = self.rows.get(&key).await? {
            // A conflict means another writer changed it meanwhile; the next close removes it.
            let _ = self.rows.delete(&key, row.version).await?;
        }
        Ok(())
    }

    /// Every order in flight, up to `max`.
    pub async fn list(&self, max: usize) -> StoreResult<Vec<OpenOrder>> {
        let mut out = Vec::new();
        let mut range = ScanRange::first(max.min(super::MAX_PAGE));
        loop {
            let (rows, next) = self.rows.scan(OPEN, range).await?;
            out.extend(rows.into_iter().map(|(_, row)| row.value));
            match next {
                Some(after) if out.len() < max => {
                    range = ScanRange::after(after, (max - out.len()).min(super::MAX_PAGE));
                }
                _ => return Ok(out),
            }
        }
    }
}
