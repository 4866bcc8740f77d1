//! Folding the journals into the rollups, a page at a time.
//!
//! A page of order-journal notes and a page of courier events become one batch. Each order
//! in the page is read once: its facts (what analytics folded of it so far), and the events
//! of its log after the last one folded. Notes are then walked in journal order, and each
//! folds the order's events up to its own number: a note that repeats an event (two writers
//! noted the same number) or comes after a later one folds nothing, so every event of an
//! order's log is folded exactly once, whatever the journal says. A note whose event is not
//! in the log yet stops the page there until it appears, or [`GIVE_UP_AFTER`] passes.

use std::collections::{BTreeMap, HashMap};

use chrono::Utc;
use futures_util::StreamExt as _;
use futures_util::stream;

use super::{Analytics, AnalyticsError};
use crate::domain::analytics::{
    Deltas, OrderFacts, OrderMoney, fold_courier_event, fold_order_event,
};
use crate::domain::ids::OrderId;
use crate::domain::order::OrderEvent;
use crate::store::analytics::{Batch, Head};
use crate::store::journal::{Position, SETTLE, bucket};
use crate::store::typed::Versioned;

/// The consumer's name (its cursor row).
pub const CONSUMER: &str = "analytics";
/// How long a lease lasts without renewal.
const LEASE: chrono::Duration = chrono::Duration::seconds(15);
/// Notes (and courier events) read per page.
const PAGE: usize = 256;
/// Most pages one round reads.
const PAGES_PER_ROUND: usize = 40;
/// Orders read at once.
const CONCURRENCY: usize = 32;
/// A note whose event is still missing this long after it was written is passed over.
const GIVE_UP_AFTER: chrono::Duration = chrono::Duration::seconds(60);
/// Where analytics that never ran starts reading the journals (a rebuild reads everything).
const FIRST_START_LOOKBACK: chrono::Duration = chrono::Duration::hours(1);

/// An order as read for one page: its facts and the events of its log after them.
struct Loaded {
    facts: OrderFacts,
    events: Vec<OrderEvent>,
}

impl Analytics {
    /// One round: folds what the journals have up to the settle horizon. Returns how many
    /// notes and courier events were folded.
    pub async fn round(&self) -> Result<usize, AnalyticsError> {
        let inner = &self.inner;
        let start = Position::at((Utc::now() - FIRST_START_LOOKBACK).timestamp_millis());
        let Some(mut lease) = inner
            .journal
            .lease(CONSUMER, inner.node, start.clone(), LEASE)
            .await?
        else {
            if let Some(head) = inner.repo.current_head().await? {
                self.know_generation(head.value.generation);
            }
            return Ok(0);
        };
        let head = inner.repo.head(&start).await?;
        let mut head = inner.repo.finish(head).await?;
        self.know_generation(head.value.generation);
        let mut folded = 0;
        for _ in 0..PAGES_PER_ROUND {
            let (next, count, more) = self.page(head).await?;
            head = next;
            folded += count;
            if lease.cursor.lease_until - Utc::now() < LEASE / 2 || !more {
                lease.cursor.position = head.value.orders.clone();
                lease.cursor.lease_until = Utc::now() + LEASE;
                lease.version = inner
                    .journal
                    .save_cursor(CONSUMER, lease.version, &lease.cursor)
                    .await?
                    .ok_or(AnalyticsError::Lost)?;
            }
            if !more {
                break;
            }
        }
        Ok(folded)
    }

    /// Folds one page of each journal; returns the head after it, how much was folded and
    /// whether there may be more.
    async fn page(
        &self,
        head: Versioned<Head>,
    ) -> Result<(Versioned<Head>, usize, bool), AnalyticsError> {
        let inner = &self.inner;
        let generation = head.value.generation;
        let until = Utc::now().timestamp_millis() - SETTLE.as_millis() as i64;
        let (notes, end) = inner.journal.read(&head.value.orders, until, PAGE).await?;
        let (events, couriers_to) = inner
            .couriers
            .read(&head.value.couriers, until, PAGE)
            .await?;
        let full = notes.len() >= PAGE || events.len() >= PAGE;

        // Every order the page names, read once.
        let mut wanted: Vec<OrderId> = notes.iter().map(|n| n.order_id).collect();
        wanted.extend(events.iter().filter_map(|e| e.order()));
        wanted.sort();
        wanted.dedup();
        let loaded: Vec<Result<(OrderId, Loaded), AnalyticsError>> = stream::iter(wanted)
            .map(|order| {
                let this = self.clone();
                async move { Ok((order, this.load(generation, order).await?)) }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut orders: HashMap<OrderId, Loaded> = HashMap::new();
        for outcome in loaded {
            let (order, l) = outcome?;
            orders.insert(order, l);
        }

        let mut deltas = Deltas::default();
        let mut touched: BTreeMap<OrderId, ()> = BTreeMap::new();
        let mut orders_to = None;
        let mut stopped = false;
        for note in &notes {
            let Some(order) = orders.get_mut(&note.order_id) else {
                continue;
            };
            let there = order.events.iter().any(|e| e.seq == note.seq);
            let young = Utc::now() - note.at() <= GIVE_UP_AFTER;
            // The order's row (its money) is written with its first event: wait for it too.
            if young && ((!there && note.seq > order.facts.applied) || order.facts.order.is_none())
            {
                stopped = true;
                break;
            }
            for event in order.events.iter().filter(|e| e.seq <= note.seq) {
                if event.seq > order.facts.applied {
                    fold_order_event(&mut order.facts, event, &mut deltas);
                    touched.insert(note.order_id, ());
                }
            }
            orders_to = Some(Position {
                minute: bucket(note.at_ms),
                after: Some(note.clustering()),
            });
        }
        let orders_to = match orders_to {
            Some(p) if stopped || notes.len() >= PAGE => p,
            _ if stopped => head.value.orders.clone(),
            _ => end,
        };
        for event in &events {
            let facts = match event.order() {
                Some(order) => {
                    touched.insert(order, ());
                    orders.get_mut(&order).map(|l| &mut l.facts)
                }
                None => None,
            };
            fold_courier_event(event, facts, &mut deltas);
        }
        let folded = notes.len() + events.len();
        if deltas.is_empty()
            && touched.is_empty()
            && orders_to == head.value.orders
            && couriers_to == head.value.couriers
        {
            return Ok((head, folded, false));
        }
        let batch = Batch {
            cells: deltas.0.into_iter().collect(),
            facts: touched
                .into_keys()
                .filter_map(|order| orders.remove(&order).map(|l| (order, l.facts)))
                .collect(),
        };
        let head = inner
            .repo
            .apply(head, batch, orders_to, couriers_to)
            .await?;
        Ok((head, folded, full && !stopped))
    }

    /// An order's facts in `generation` (read from its row the first time) and the events
    /// of its log after them.
    async fn load(&self, generation: u64, order: OrderId) -> Result<Loaded, AnalyticsError> {
        let inner = &self.inner;
        let mut facts = inner
            .repo
            .facts(generation, order)
            .await?
            .unwrap_or_default();
        if facts.order.is_none()
            && let Some(record) = inner.orders.load(order).await?
        {
            let cell = self.store_cell(record.value.order.vendor_id).await?;
            facts.order = OrderMoney::of(&record.value, cell, inner.default_rates);
        }
        let mut events = Vec::new();
        let mut after = facts.applied;
        loop {
            let (page, next) = inner
                .orders
                .events_after(order, after, crate::store::MAX_PAGE)
                .await?;
            after = page.last().map_or(after, |e| e.seq);
            events.extend(page);
            if next.is_none() {
                break;
            }
        }
        Ok(Loaded { facts, events })
    }
}
