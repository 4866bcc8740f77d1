//! Booking: order events from the journal become transactions, and verified deliveries whose
//! hold is over are released.
//!
//! Each page of journal notes is derived concurrently, booked as one batch, and only then is
//! the cursor moved past it; a node that dies in between derives the same keys again and
//! books nothing twice. A note whose event is not in the order's log yet stops the page there
//! until it appears, or [`GIVE_UP_AFTER`] passes (its writer died or lost the race).
//!
//! Everything a transaction says is derived from the order's log, never from what the ledger
//! booked before, so deriving twice gives the same entries: a refund is shared in proportion
//! to what the refunds before it in the log left of each share, and it comes out of the
//! payable balances only when the order's release was computed through an earlier event.

use chrono::Utc;
use futures_util::StreamExt as _;
use futures_util::stream;

use super::{Ledger, LedgerError};
use crate::domain::account::NotificationEvent;
use crate::domain::coupon::FundedBy;
use crate::domain::ledger::{
    Discount, LedgerTx, Parties, Shares, TxKind, gross_refunds, payment_entries, refund_entries,
    release_entries, release_left, returned_entries,
};
use crate::domain::order::{OrderEvent, OrderEventKind, OrderRecord};
use crate::store::StoreResult;
use crate::store::journal::{JournalNote, Lease, Position, SETTLE};
use crate::store::ledger::{MAX_BATCH, PendingRelease};

/// The consumer's name (its cursor row).
pub const CONSUMER: &str = "ledger";
/// How long a lease lasts without renewal.
const LEASE: chrono::Duration = chrono::Duration::seconds(15);
/// Notes read (and transactions booked) per page.
const PAGE: usize = MAX_BATCH;
/// Most pages one round reads before doing its other work.
const PAGES_PER_ROUND: usize = 40;
/// Notes derived at once.
const CONCURRENCY: usize = 64;
/// A note whose event is still missing this long after it was written is dropped.
const GIVE_UP_AFTER: chrono::Duration = chrono::Duration::seconds(60);
/// Where a ledger that never ran starts reading the journal: this far back (it books the
/// events of its first hour too; those before are not in it).
const FIRST_START_LOOKBACK: chrono::Duration = chrono::Duration::hours(1);
/// Releases handled per round.
const RELEASES_PER_ROUND: usize = 256;

/// What one note gives.
enum Derived {
    Done {
        tx: Option<LedgerTx>,
        release: Option<PendingRelease>,
    },
    /// The event is not in the log yet: stop before this note for now.
    NotYet,
}

const NOTHING: Derived = Derived::Done {
    tx: None,
    release: None,
};

/// An order's money: the shares of its payment by its frozen rates (today's default for
/// orders placed before rates were frozen), its parties, its discount and what was paid.
struct OrderMoney {
    shares: Shares,
    parties: Parties,
    discount: Discount,
    paid: i64,
}

impl OrderMoney {
    fn of(record: &OrderRecord, default: crate::domain::ledger::Rates) -> Option<OrderMoney> {
        let totals = record.totals?;
        let rates = record.rates.unwrap_or(default);
        let subtotal = totals.subtotal.amount_minor;
        let (discount, goods) = match &record.discount {
            Some(d) if d.funded_by == FundedBy::Platform => (
                Discount {
                    platform: d.amount.amount_minor,
                    store: 0,
                },
                subtotal,
            ),
            Some(d) => (
                Discount {
                    platform: 0,
                    store: d.amount.amount_minor,
                },
                subtotal - d.amount.amount_minor,
            ),
            None => (Discount::default(), subtotal),
        };
        let shares = Shares::of(goods, totals.delivery_fee.amount_minor, rates);
        Some(OrderMoney {
            paid: shares.total() - discount.platform,
            shares,
            parties: Parties {
                store: record.order.vendor_id,
                courier: record.courier_id,
                currency: totals.total.currency,
            },
            discount,
        })
    }

    /// What the refunds of `amounts`, one after another, take off the shares.
    fn gross(&self, amounts: &[i64]) -> Vec<i64> {
        gross_refunds(self.paid, self.shares.total(), amounts)
    }
}

/// The amounts of the refunds in `events` numbered up to `through`.
fn refunds_through(events: &[OrderEvent], through: u64) -> Vec<i64> {
    events
        .iter()
        .filter(|e| e.seq <= through)
        .filter_map(|e| match &e.kind {
            OrderEventKind::Refunded { amount, .. } => Some(amount.amount_minor),
            _ => None,
        })
        .collect()
}

impl Ledger {
    /// Takes (or renews) the ledger's lease; `None` while another node holds it.
    pub(super) async fn lease(&self) -> StoreResult<Option<Lease>> {
        let start = Position::at((Utc::now() - FIRST_START_LOOKBACK).timestamp_millis());
        self.inner
            .journal
            .lease(CONSUMER, self.inner.node, start, LEASE)
            .await
    }

    /// Books the journal's notes up to the settle horizon, a page at a time.
    pub(super) async fn consume(&self, mut lease: Lease) -> Result<usize, LedgerError> {
        let inner = &self.inner;
        let mut booked = 0;
        for _ in 0..PAGES_PER_ROUND {
            let until = Utc::now().timestamp_millis() - SETTLE.as_millis() as i64;
            let (notes, end) = inner
                .journal
                .read(&lease.cursor.position, until, PAGE)
                .await?;
            let full = notes.len() >= PAGE;
            let outcomes: Vec<StoreResult<Derived>> = stream::iter(notes.iter().copied())
                .map(|note| {
                    let this = self.clone();
                    async move { this.derive(&note).await }
                })
                .buffered(CONCURRENCY)
                .collect()
                .await;
            let mut txs = Vec::new();
            let mut releases = Vec::new();
            let mut position = None;
            let mut stopped = false;
            for (note, outcome) in notes.iter().zip(outcomes) {
                match outcome? {
                    Derived::Done { tx, release } => {
                        txs.extend(tx);
                        releases.extend(release);
                        position = Some(Position {
                            minute: note.at_ms.div_euclid(60_000),
                            after: Some(note.clustering()),
                        });
                    }
                    Derived::NotYet => {
                        stopped = true;
                        break;
                    }
                }
            }
            booked += inner.repo.book(txs).await?.len();
            for release in &releases {
                inner.repo.schedule_release(release).await?;
            }
            let before = lease.cursor.position.clone();
            // Past the last note handled; a page read to its end may move on to where the
            // read stopped (the minute it reached).
            if let Some(p) = position.filter(|_| stopped || full) {
                lease.cursor.position = p;
            } else if !stopped {
                lease.cursor.position = end;
            }
            if lease.cursor.position != before || lease.cursor.lease_until - Utc::now() < LEASE / 2
            {
                lease.cursor.lease_until = Utc::now() + LEASE;
                lease.version = inner
                    .journal
                    .save_cursor(CONSUMER, lease.version, &lease.cursor)
                    .await?
                    .ok_or(LedgerError::Lost)?;
            }
            if stopped || !full {
                break;
            }
        }
        Ok(booked)
    }

    /// The transaction (or release) of one note.
    async fn derive(&self, note: &JournalNote) -> StoreResult<Derived> {
        let inner = &self.inner;
        let missing = || {
            if Utc::now() - note.at() > GIVE_UP_AFTER {
                NOTHING
            } else {
                Derived::NotYet
            }
        };
        // Money moves only on these; a note that says what it is can be passed over unread.
        if note.described
            && !matches!(
                note.event,
                Some(
                    NotificationEvent::OrderPaid
                        | NotificationEvent::OrderRefunded
                        | NotificationEvent::OrderDelivered
                )
            )
        {
            return Ok(NOTHING);
        }
        let Some(event) = inner.orders.event(note.order_id, note.seq).await? else {
            return Ok(missing());
        };
        if let OrderEventKind::Delivered { at_drop_off } = event.kind {
            let due_at = at_drop_off.then(|| {
                event.at
                    + chrono::Duration::from_std(inner.live.get().payout_hold()).unwrap_or_default()
            });
            return Ok(Derived::Done {
                tx: None,
                release: Some(PendingRelease {
                    order_id: note.order_id,
                    delivered_at: event.at,
                    due_at,
                }),
            });
        }
        if !matches!(
            event.kind,
            OrderEventKind::Paid
                | OrderEventKind::Refunded { .. }
                | OrderEventKind::PaymentReturned { .. }
        ) {
            return Ok(NOTHING);
        }
        let Some(record) = inner.orders.load(note.order_id).await? else {
            return Ok(missing());
        };
        let record = record.value;
        let default = inner.rates.default_rates();
        let Some(money) = OrderMoney::of(&record, default) else {
            return Ok(NOTHING);
        };
        let (shares, parties) = (money.shares, money.parties);
        let (kind, entries) = match &event.kind {
            OrderEventKind::Paid => (
                TxKind::Payment,
                payment_entries(&shares, parties, money.discount),
            ),
            OrderEventKind::PaymentReturned { amount } => {
                (TxKind::PaymentReturned, returned_entries(*amount))
            }
            OrderEventKind::Refunded { amount, .. } => {
                let events = self.events_through(&record, event.seq).await?;
                let mut amounts = refunds_through(&events, event.seq.saturating_sub(1));
                amounts.push(amount.amount_minor);
                let mut gross = money.gross(&amounts);
                let now = gross.pop().unwrap_or_default();
                let part = shares.refund_part(&shares.given_back(&gross), now);
                let released = inner
                    .repo
                    .tx(&LedgerTx::release_key(record.id()))
                    .await?
                    .is_some_and(|r| r.through.is_some_and(|t| t < event.seq));
                let discount_back = (now - amount.amount_minor).max(0);
                (
                    TxKind::Refund,
                    refund_entries(&part, parties, released, discount_back),
                )
            }
            _ => return Ok(NOTHING),
        };
        if entries.is_empty() {
            return Ok(NOTHING);
        }
        Ok(Derived::Done {
            tx: Some(LedgerTx {
                key: LedgerTx::order_key(record.id(), event.seq),
                seq: 0,
                at: event.at,
                kind,
                order_id: Some(record.id()),
                checkout_id: Some(record.order.checkout_id),
                payout_id: None,
                through: None,
                entries,
            }),
            release: None,
        })
    }

    /// The order's events numbered up to `through`.
    async fn events_through(
        &self,
        record: &OrderRecord,
        through: u64,
    ) -> StoreResult<Vec<OrderEvent>> {
        let mut events = Vec::new();
        let mut after = 0;
        loop {
            let (page, next) = self
                .inner
                .orders
                .events_after(record.id(), after, crate::store::MAX_PAGE)
                .await?;
            let done = next.is_none() || page.last().is_none_or(|e| e.seq >= through);
            after = page.last().map_or(after, |e| e.seq);
            events.extend(page.into_iter().filter(|e| e.seq <= through));
            if done {
                return Ok(events);
            }
        }
    }

    /// Books the releases whose hold is over.
    pub(super) async fn release_due(&self) -> Result<usize, LedgerError> {
        let inner = &self.inner;
        let now = inner.clock.now();
        let due = inner.repo.due_releases(now, RELEASES_PER_ROUND).await?;
        if due.is_empty() {
            return Ok(0);
        }
        let default = inner.rates.default_rates();
        let mut txs = Vec::with_capacity(due.len());
        for (_, release) in &due {
            let order = release.value.order_id;
            let Some(record) = inner.orders.load(order).await? else {
                continue;
            };
            let record = record.value;
            let Some(money) = OrderMoney::of(&record, default) else {
                continue;
            };
            let through = record.seq;
            let events = self.events_through(&record, through).await?;
            let taken = money.gross(&refunds_through(&events, through));
            let left = release_left(&money.shares, &taken);
            let entries = release_entries(&left, money.parties);
            if entries.is_empty() {
                continue;
            }
            txs.push(LedgerTx {
                key: LedgerTx::release_key(order),
                seq: 0,
                at: now,
                kind: TxKind::Release,
                order_id: Some(order),
                checkout_id: Some(record.order.checkout_id),
                payout_id: None,
                through: Some(through),
                entries,
            });
        }
        let booked = inner.repo.book(txs).await?.len();
        for (key, release) in &due {
            inner.repo.remove_release(key, release.version).await?;
        }
        Ok(booked)
    }
}
