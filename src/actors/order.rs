//! The order actor: owns one order, moves it through its state machine one command at a time,
//! and records every accepted command as an event before acknowledging it.
//!
//! Each command is decided on the actor's copy of the row, then persisted in two writes: the
//! event is appended to the order's log at the next sequence number (insert-if-absent, so no
//! two writers ever record the same step), then the row is updated by compare-and-set. The log
//! is the truth: if the process dies between the two writes, or another activation wrote
//! first, the row is rolled forward from the log ([`OrderRepo::recover`]) before anything else
//! is decided. Only then do the side effects run — the event is published on the bus and the
//! order's stock reservation is released (expired, cancelled, rejected, payment failed) or,
//! for an order that was paid (or whose payment was given back), its sold units are put back
//! on sale. Side effects are idempotent and re-run on activation, so a crash between
//! persisting and acting is repaired by the next activation.
//!
//! Stock contract: checkout reserves an order's stock with
//! [`InventoryService::reserve`](crate::catalog::inventory::InventoryService::reserve) under the
//! reservation id `order_id.to_string()`. "Paid" means sold: before `paid` is recorded the
//! actor takes the units ([`InventoryService::take`]: commit the hold, or hold afresh and
//! commit when it expired), and an order whose units cannot be had is not paid
//! ([`CommandError::OutOfStock`]). A crash after the take and before the event leaves units
//! sold to an unpaid order: the payment's settlement ([`SettlePayment`]) takes them again (a
//! no-op) and records `paid`, or records the payment as given back, which puts them back.
//!
//! Unpaid orders expire: [`create`] records a deadline row in `order_timers`, and
//! [`run_expiry`] (one per node) sends [`ApplyCommand`] with `Expire` to each order whose
//! deadline passed. The rows survive restarts, so the deadlines do too.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use chrono::{DateTime, Timelike as _, Utc};

use super::registry::{ActorError, Entity, Passivate, Registry};
use crate::bus::SharedBus;
use crate::catalog::inventory::{InventoryService, ReserveFailure};
use crate::clock::Clock;
use crate::dispatch::queue::DispatchQueue;
use crate::domain::ids::OrderId;
use crate::domain::money::Money;
use crate::domain::order::{
    IllegalTransition, OrderCommand, OrderEvent, OrderEventKind, OrderRecord, OrderStatus,
};
use crate::store::coupons::{CouponRepo, RedeemError};
use crate::store::live::{OpenOrder, OpenOrdersRepo, VendorFeedRepo};
use crate::store::orders::{DueTimer, OrderRepo};
use crate::store::typed::Versioned;
use crate::store::{StoreError, StoreResult};
use crate::streams::frames::{InboxFrame, PublishedEvent};
use crate::streams::{order_topic, vendor_topic};

/// How many times a command is re-decided after another writer recorded an event first.
const COMMAND_ATTEMPTS: usize = 8;
/// How often each node looks for unpaid orders past their deadline.
pub const EXPIRY_SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// How far back the first sweep after a start looks for deadlines missed while down.
const EXPIRY_LOOKBACK_HOURS: i64 = 7 * 24;
/// Timers handled per scan of an hour bucket.
const TIMER_PAGE: usize = 200;
/// A timer whose order never appeared (checkout died before writing it) is dropped this long
/// after its deadline.
const ORPHAN_TIMER_GRACE: chrono::Duration = chrono::Duration::hours(1);

/// What an order actor needs.
#[derive(Clone)]
pub struct OrderDeps {
    pub repo: OrderRepo,
    pub bus: SharedBus,
    pub inventory: InventoryService,
    pub clock: Clock,
    /// The platform's live settings (how long an order may wait for its payment).
    pub settings: crate::settings::SettingsView,
    /// Each vendor's feed of order events (for `/ws/vendor`).
    pub feed: VendorFeedRepo,
    /// Orders in flight (for live operations).
    pub open: OpenOrdersRepo,
    /// Orders waiting for a courier.
    pub dispatch: DispatchQueue,
    /// Coupons, whose redemptions follow their orders' payment.
    pub coupons: CouponRepo,
}

/// One order.
pub struct OrderActor {
    id: OrderId,
    deps: OrderDeps,
    /// The row as last persisted; `None` when unknown (no such order yet, or a write whose
    /// outcome is unknown): the next message reloads it.
    state: Option<Versioned<OrderRecord>>,
}

impl Actor for OrderActor {
    type Context = Context<Self>;
}

impl Entity for OrderActor {
    type Id = OrderId;
    type Deps = OrderDeps;
    const KIND: &'static str = "order";

    fn activate(
        id: OrderId,
        deps: OrderDeps,
    ) -> Pin<Box<dyn Future<Output = Result<Self, StoreError>> + Send>> {
        Box::pin(async move {
            let state = reload(&deps, id).await?;
            Ok(OrderActor { id, deps, state })
        })
    }
}

/// Returns the order as it is (`None`: no such order).
#[derive(Debug, Message)]
#[rtype(result = "Result<Option<OrderRecord>, StoreError>")]
pub struct GetOrder;

/// Applies a command and persists its event; answers with the order after it.
#[derive(Debug, Message)]
#[rtype(result = "Result<OrderRecord, CommandError>")]
pub struct ApplyCommand(pub OrderCommand);

/// Creates the order (see [`create`]); answers with it as stored. Creating an order that
/// exists answers the stored order.
#[derive(Debug, Message)]
#[rtype(result = "Result<OrderRecord, StoreError>")]
pub struct CreateOrder(pub OrderRecord);

/// Why a command was not applied.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("no such order")]
    NotFound,
    #[error(transparent)]
    Illegal(#[from] IllegalTransition),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the order kept changing under this command; try again")]
    Contended,
    /// The order's units cannot be had any more (its hold expired and someone bought them).
    #[error("the order's stock is no longer available")]
    OutOfStock,
    /// The order's coupon was given back when it expired, and has no redemption left now.
    #[error("the order's coupon has no redemption left")]
    CouponExhausted,
}

/// Settles the order with its checkout's succeeded payment: the order is paid (taking its
/// stock, reviving it if it expired or its payment failed), or its share of the payment is
/// owed back. Answers what the payment still owes this order.
#[derive(Debug, Message)]
#[rtype(result = "Result<Settled, CommandError>")]
pub struct SettlePayment;

/// Where an order stands with its checkout's payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// Paid (or further on), and nothing is owed back.
    Attached,
    /// `amount` is owed back to the payer under `reference` (one refund per reference);
    /// `record` says whether the refund is still to be recorded on the order once made (a
    /// returned payment is recorded before it is made).
    Owed {
        amount: Money,
        reference: &'static str,
        record: bool,
    },
}

/// The reference of the refund of a payment an order could no longer be served for.
pub const LATE_PAYMENT_REFUND: &str = "late";
/// The reference of the refund of a paid order that was cancelled or rejected.
pub const CLOSED_ORDER_REFUND: &str = "closed";

type Outcome<T, E> = (Option<Versioned<OrderRecord>>, Result<T, E>);

impl Handler<GetOrder> for OrderActor {
    type Result = AtomicResponse<Self, Result<Option<OrderRecord>, StoreError>>;

    #[tracing::instrument(name = "order.get", skip_all, fields(order_id = %self.id))]
    fn handle(&mut self, _: GetOrder, _: &mut Context<Self>) -> Self::Result {
        let known = self.state.clone();
        let deps = self.deps.clone();
        let id = self.id;
        let work = async move {
            match known {
                // Another node's activation may have moved the order on: one read of the
                // row tells (the row only ever moves forward).
                Some(state) => match deps.repo.load(id).await {
                    Ok(Some(stored)) if stored.value.seq > state.value.seq => {
                        let answer = Ok(Some(stored.value.clone()));
                        (Some(stored), answer)
                    }
                    Ok(_) => {
                        let answer = Ok(Some(state.value.clone()));
                        (Some(state), answer)
                    }
                    Err(e) => (Some(state), Err(e)),
                },
                None => match reload(&deps, id).await {
                    Ok(state) => {
                        let answer = Ok(state.as_ref().map(|s| s.value.clone()));
                        (state, answer)
                    }
                    Err(e) => (None, Err(e)),
                },
            }
        };
        AtomicResponse::new(Box::pin(work.into_actor(self).map(adopt)))
    }
}

impl Handler<ApplyCommand> for OrderActor {
    type Result = AtomicResponse<Self, Result<OrderRecord, CommandError>>;

    #[tracing::instrument(name = "order.command", skip_all, fields(order_id = %self.id, command = ?command))]
    fn handle(
        &mut self,
        ApplyCommand(command): ApplyCommand,
        _: &mut Context<Self>,
    ) -> Self::Result {
        let work = execute(self.deps.clone(), self.id, self.state.clone(), command);
        // AtomicResponse: the next message waits until this one is persisted or refused.
        AtomicResponse::new(Box::pin(work.into_actor(self).map(adopt)))
    }
}

impl Handler<SettlePayment> for OrderActor {
    type Result = AtomicResponse<Self, Result<Settled, CommandError>>;

    #[tracing::instrument(name = "order.settle", skip_all, fields(order_id = %self.id))]
    fn handle(&mut self, _: SettlePayment, _: &mut Context<Self>) -> Self::Result {
        let work = settle_payment(self.deps.clone(), self.id, self.state.clone());
        AtomicResponse::new(Box::pin(work.into_actor(self).map(adopt)))
    }
}

impl Handler<CreateOrder> for OrderActor {
    type Result = AtomicResponse<Self, Result<OrderRecord, StoreError>>;

    #[tracing::instrument(name = "order.create", skip_all, fields(order_id = %self.id))]
    fn handle(&mut self, CreateOrder(record): CreateOrder, _: &mut Context<Self>) -> Self::Result {
        let deps = self.deps.clone();
        let id = self.id;
        let work = async move {
            if record.id() != id {
                return (
                    None,
                    Err(StoreError::Misuse(format!(
                        "order {} sent to the actor of order {id}",
                        record.id()
                    ))),
                );
            }
            match create(&deps, record).await {
                Ok(created) => {
                    let answer = Ok(created.value.clone());
                    (Some(created), answer)
                }
                Err(e) => (None, Err(e)),
            }
        };
        AtomicResponse::new(Box::pin(work.into_actor(self).map(adopt)))
    }
}

impl Handler<Passivate> for OrderActor {
    type Result = ();

    fn handle(&mut self, _: Passivate, ctx: &mut Context<Self>) {
        // Every change was persisted before it was acknowledged: nothing to write.
        tracing::debug!(order_id = %self.id, "order passivated");
        ctx.stop();
    }
}

fn adopt<T, E>(
    (state, answer): Outcome<T, E>,
    actor: &mut OrderActor,
    _: &mut Context<OrderActor>,
) -> Result<T, E> {
    actor.state = state;
    answer
}

/// Creates an order awaiting payment: its deadline row and its index rows (together), its
/// `created` event (sequence 1) and finally its row, in that order so that a crash at any point leaves
/// nothing a retry cannot finish (every step is idempotent). The deadline is
/// `now + payment_timeout` unless the record names one. Creating an order that exists returns
/// the stored order unchanged.
#[tracing::instrument(skip_all, fields(order_id = %record.id()))]
pub async fn create(deps: &OrderDeps, record: OrderRecord) -> StoreResult<Versioned<OrderRecord>> {
    let id = record.id();
    if let Some(existing) = deps.repo.load(id).await? {
        return Ok(existing);
    }
    let now = deps.clock.now();
    let timeout = chrono::Duration::from_std(deps.settings.get().payment_timeout())
        .unwrap_or(chrono::Duration::minutes(15));
    let expires_at = record.expires_at.unwrap_or(now + timeout);
    // A new order starts from scratch whatever the caller filled in beyond its details.
    let mut record = OrderRecord {
        delivery_address: record.delivery_address.clone(),
        totals: record.totals,
        payment_id: record.payment_id.clone(),
        rates: record.rates,
        discount: record.discount.clone(),
        handoff_code: Some(crate::domain::courier::new_handoff_code()),
        ..OrderRecord::pending(record.order.clone(), expires_at)
    };
    // The deadline and the index rows do not depend on each other: they share one commit.
    futures_util::future::try_join(
        deps.repo.put_timer(id, expires_at),
        deps.repo.index(&record.order),
    )
    .await?;
    let event = OrderEvent {
        seq: 1,
        at: now,
        kind: OrderEventKind::Created,
        status_after: OrderStatus::PendingPayment,
    };
    let event = match deps.repo.append_event_to(&record, &event).await? {
        Ok(()) => event,
        // An earlier attempt got this far: keep its event.
        Err(Some(earlier)) if earlier.kind == OrderEventKind::Created => earlier,
        Err(_) => {
            return Err(StoreError::Misuse(format!(
                "order {id} has events but no row"
            )));
        }
    };
    record.apply(&event);
    match deps.repo.insert_record(&record).await? {
        Ok(version) => {
            publish(deps, &record, &event).await;
            Ok(Versioned {
                version,
                value: record,
            })
        }
        Err(Some(existing)) => Ok(existing),
        Err(None) => Err(StoreError::Unavailable(format!(
            "order {id}: the row conflicted but cannot be read"
        ))),
    }
}

/// Applies a command outside the order's actor (tools, tests, and callers on a node that does
/// not host the actor). Safe alongside a live actor: whichever writes second finds the event's
/// sequence number taken, reloads from the log and decides again.
pub async fn apply_command(
    deps: &OrderDeps,
    id: OrderId,
    command: OrderCommand,
) -> Result<OrderRecord, CommandError> {
    execute(deps.clone(), id, None, command).await.1
}

/// See [`SettlePayment`].
async fn settle_payment(
    deps: OrderDeps,
    id: OrderId,
    state: Option<Versioned<OrderRecord>>,
) -> Outcome<Settled, CommandError> {
    let current = match state {
        Some(state) => state,
        None => match reload(&deps, id).await {
            Ok(Some(state)) => state,
            Ok(None) => return (None, Err(CommandError::NotFound)),
            Err(e) => return (None, Err(e.into())),
        },
    };
    let record = &current.value;
    let total = record.totals.map(|t| t.total);
    if let Some(amount) = record.payment_returned {
        let owed = Settled::Owed {
            amount,
            reference: LATE_PAYMENT_REFUND,
            record: false,
        };
        return (Some(current), Ok(owed));
    }
    if record.paid_at.is_some() {
        let closed = matches!(
            record.status(),
            OrderStatus::Cancelled | OrderStatus::Rejected
        );
        let settled = match total {
            Some(total) if closed && !record.has_refund(CLOSED_ORDER_REFUND) => {
                let left = total.amount_minor - record.refunded_minor();
                if left > 0 {
                    Settled::Owed {
                        amount: Money::new(left, total.currency),
                        reference: CLOSED_ORDER_REFUND,
                        record: true,
                    }
                } else {
                    Settled::Attached
                }
            }
            _ => Settled::Attached,
        };
        return (Some(current), Ok(settled));
    }
    let (state, paid) = execute(deps.clone(), id, Some(current), OrderCommand::MarkPaid).await;
    match paid {
        Ok(_) => return (state, Ok(Settled::Attached)),
        Err(
            CommandError::OutOfStock | CommandError::CouponExhausted | CommandError::Illegal(_),
        ) => {}
        Err(e) => return (state, Err(e)),
    }
    // Not payable (its stock is gone, or it was cancelled): the payment goes back. The
    // decision is an event, so it is durable before the money moves.
    let Some(amount) = total else {
        return (state, Ok(Settled::Attached));
    };
    let (state, returned) = execute(deps, id, state, OrderCommand::ReturnPayment { amount }).await;
    match returned {
        Ok(record) => match record.payment_returned {
            Some(amount) => (
                state,
                Ok(Settled::Owed {
                    amount,
                    reference: LATE_PAYMENT_REFUND,
                    record: false,
                }),
            ),
            None => (state, Ok(Settled::Attached)),
        },
        // Paid meanwhile (another node): attached after all.
        Err(CommandError::Illegal(_)) => match state.as_ref().map(|s| s.value.paid_at) {
            Some(Some(_)) => (state, Ok(Settled::Attached)),
            _ => (state, Err(CommandError::Contended)),
        },
        Err(e) => (state, Err(e)),
    }
}

/// Loads the order, rolls it forward over its log, and repairs side effects a crash may have
/// cut short.
async fn reload(deps: &OrderDeps, id: OrderId) -> StoreResult<Option<Versioned<OrderRecord>>> {
    let Some(recovered) = deps.repo.recover(id).await? else {
        return Ok(None);
    };
    let record = &recovered.record.value;
    if recovered.replayed.is_empty() {
        settle(deps, record).await;
    } else {
        for event in &recovered.replayed {
            after_persist(deps, record, event).await;
        }
    }
    Ok(Some(recovered.record))
}

/// Decides and persists one command, re-deciding on the newest state when another writer
/// recorded an event first.
async fn execute(
    deps: OrderDeps,
    id: OrderId,
    mut state: Option<Versioned<OrderRecord>>,
    command: OrderCommand,
) -> Outcome<OrderRecord, CommandError> {
    for _ in 0..COMMAND_ATTEMPTS {
        let (current, fresh) = match state.take() {
            Some(current) => (current, false),
            None => match reload(&deps, id).await {
                Ok(Some(current)) => (current, true),
                Ok(None) => return (None, Err(CommandError::NotFound)),
                Err(e) => return (None, Err(e.into())),
            },
        };
        if let OrderCommand::Refund { reference, .. } = &command
            && current.value.has_refund(reference)
        {
            // Recorded before (a retried request): the order as it is.
            let answer = Ok(current.value.clone());
            return (Some(current), answer);
        }
        let (status_after, kind) = match current.value.decide(&command) {
            Ok(decided) => decided,
            // The log may have moved on without this actor (another node, or a write it did
            // not see through): refuse only on the stored state.
            Err(_) if !fresh => continue,
            Err(illegal) => return (Some(current), Err(illegal.into())),
        };
        if command == OrderCommand::MarkPaid {
            // Paid means sold: the units, and the coupon's redemption, are taken before the
            // event says so.
            if let Err(e) = take_stock(&deps, &current.value).await {
                return (Some(current), Err(e));
            }
            if let Err(e) = use_coupon(&deps, &current.value).await {
                return (Some(current), Err(e));
            }
        }
        let event = OrderEvent {
            seq: current.value.seq + 1,
            at: deps.clock.now(),
            kind,
            status_after,
        };
        match deps.repo.append_event_to(&current.value, &event).await {
            Ok(Ok(())) => {}
            // The log is ahead of what this actor knew: reload and decide again.
            Ok(Err(_)) => continue,
            // The append may or may not have happened: reload before the next message.
            Err(e) => return (None, Err(e.into())),
        }
        let mut next = current.value.clone();
        next.apply(&event);
        match deps.repo.update_record(current.version, &next).await {
            Ok(Ok(version)) => {
                after_persist(&deps, &next, &event).await;
                let answer = Ok(next.clone());
                return (
                    Some(Versioned {
                        version,
                        value: next,
                    }),
                    answer,
                );
            }
            // The event is recorded, so the command happened: bring the row up to the log.
            Ok(Err(_)) | Err(_) => {
                return match deps.repo.recover(id).await {
                    Ok(Some(recovered)) => {
                        let latest = &recovered.record.value;
                        after_persist(&deps, latest, &event).await;
                        for other in recovered.replayed.iter().filter(|e| e.seq != event.seq) {
                            after_persist(&deps, latest, other).await;
                        }
                        let answer = Ok(latest.clone());
                        (Some(recovered.record), answer)
                    }
                    Ok(None) => (None, Err(CommandError::NotFound)),
                    Err(e) => (None, Err(e.into())),
                };
            }
        }
    }
    (None, Err(CommandError::Contended))
}

/// Sells the order's units to it (see [`InventoryService::take`]).
async fn take_stock(deps: &OrderDeps, record: &OrderRecord) -> Result<(), CommandError> {
    let items: Vec<_> = record
        .order
        .lines
        .iter()
        .map(|l| (l.product_id, l.quantity))
        .collect();
    match deps.inventory.take(&record.id().to_string(), &items).await {
        Ok(()) => Ok(()),
        Err(ReserveFailure::Short(_)) => Err(CommandError::OutOfStock),
        // Too many checkouts on a product right now: the settlement retries later.
        Err(ReserveFailure::Busy(_)) => Err(CommandError::Contended),
        Err(ReserveFailure::Store(e)) => Err(e.into()),
    }
}

/// Marks the order's coupon redemption used (taking one again if it had been given back).
async fn use_coupon(deps: &OrderDeps, record: &OrderRecord) -> Result<(), CommandError> {
    let Some(discount) = &record.discount else {
        return Ok(());
    };
    let (order, customer, now) = (record.id(), record.order.customer_id, deps.clock.now());
    // As the checkout counts holds: stale once twice the payment window has passed.
    let stale_before = now
        - chrono::Duration::from_std(deps.settings.get().payment_timeout() * 2)
            .unwrap_or(chrono::Duration::hours(1));
    match deps
        .coupons
        .change(&discount.code, |c| {
            c.use_for(order, customer, now, stale_before)
        })
        .await
    {
        Ok(_) => Ok(()),
        Err(RedeemError::Refused(_)) => Err(CommandError::CouponExhausted),
        Err(RedeemError::Store(e)) => Err(e.into()),
    }
}

/// Gives back the coupon redemption of an order that ended without being paid.
async fn give_back_coupon(deps: &OrderDeps, record: &OrderRecord) {
    let Some(discount) = &record.discount else {
        return;
    };
    let order = record.id();
    if let Err(e) = deps
        .coupons
        .change(&discount.code, |c| Ok(c.give_back(order)))
        .await
    {
        tracing::warn!(order_id = %order, error = %e, "coupon redemption not given back; retried on the next activation");
    }
}

/// Side effects of a persisted event: publish it, then release or restock the stock and drop
/// the payment deadline once the order stops waiting for payment.
async fn after_persist(deps: &OrderDeps, record: &OrderRecord, event: &OrderEvent) {
    publish(deps, record, event).await;
    stock_and_timer(deps, record, event.status_after).await;
    in_flight(deps, record, event.status_after).await;
}

/// Re-runs the (idempotent) effects of the event that led to the order's current status, in
/// case the process died before they ran.
async fn settle(deps: &OrderDeps, record: &OrderRecord) {
    stock_and_timer(deps, record, record.status()).await;
    in_flight(deps, record, record.status()).await;
}

/// Keeps the set of orders in flight and the dispatch queue in step with the order: an order
/// is in flight from paid to its end, and waits for a courier from accepted until one is
/// assigned. Both writes are idempotent, so re-running them after a crash is harmless.
async fn in_flight(deps: &OrderDeps, record: &OrderRecord, entered: OrderStatus) {
    use OrderStatus as S;
    let id = record.id();
    let outcome = match entered {
        S::Paid => {
            deps.open
                .open(&OpenOrder {
                    order_id: id,
                    vendor_id: record.order.vendor_id,
                    since: record.paid_at.unwrap_or(record.order.updated_at),
                })
                .await
        }
        S::Accepted | S::Preparing | S::ReadyForPickup if record.courier_id.is_none() => {
            deps.dispatch.enqueue(id, record.order.vendor_id).await
        }
        S::Delivered | S::Cancelled | S::Refunded | S::Rejected => {
            if entered != S::Delivered
                && let Some(courier) = record.courier_id
            {
                // The courier stops carrying it (their session tells their actor).
                let frame = InboxFrame::OrderCancelled { order_id: id };
                let topic = crate::streams::inbox_topic(courier);
                let payload = serde_json::to_vec(&frame).unwrap_or_default();
                if let Err(e) = deps.bus.publish(&topic, Bytes::from(payload)).await {
                    tracing::warn!(topic, error = %e, "courier not told of a cancelled order");
                }
            }
            deps.open.close(id).await
        }
        _ => Ok(()),
    };
    if let Err(e) = outcome {
        tracing::warn!(order_id = %id, error = %e, "order's in-flight bookkeeping not written; retried on the next activation");
    }
}

/// What entering an exit does to the order's stock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StockEffect {
    /// Unpaid: the held units become available again.
    Release,
    /// Paid and then cancelled or rejected, or its payment given back: the sold units go
    /// back on sale (once, keyed by the order's reservation).
    Restock,
}

fn stock_effect(record: &OrderRecord, entered: OrderStatus) -> Option<StockEffect> {
    match entered {
        OrderStatus::Expired
        | OrderStatus::PaymentFailed
        | OrderStatus::Rejected
        | OrderStatus::Cancelled => {
            // An order that can never be paid any more gives back whatever a take sold to it
            // before a crash; only such an order restocks without having been paid.
            let sold = record.paid_at.is_some() || record.payment_returned.is_some();
            Some(if sold {
                StockEffect::Restock
            } else {
                StockEffect::Release
            })
        }
        _ => None,
    }
}

async fn stock_and_timer(deps: &OrderDeps, record: &OrderRecord, entered: OrderStatus) {
    let Some(effect) = stock_effect(record, entered) else {
        return;
    };
    let id = record.id();
    if record.paid_at.is_none() {
        give_back_coupon(deps, record).await;
    }
    let reservation = id.to_string();
    let products = record.order.products();
    if let Err(e) = deps.inventory.release(&reservation, &products).await {
        tracing::warn!(order_id = %id, error = %e, "stock not released; retried on the next activation");
    }
    if effect == StockEffect::Restock
        && let Err(e) = deps.inventory.restock(&reservation, &products).await
    {
        tracing::warn!(order_id = %id, error = %e, "sold stock not put back on sale; retried on the next activation");
    }
    if let Some(deadline) = record.expires_at
        && record.status() != OrderStatus::PendingPayment
        && let Err(e) = deps.repo.delete_timer(id, deadline).await
    {
        tracing::warn!(order_id = %id, error = %e, "payment deadline not deleted; the sweeper will");
    }
}

async fn publish(deps: &OrderDeps, record: &OrderRecord, event: &OrderEvent) {
    let message = PublishedEvent {
        order_id: record.id(),
        vendor_id: record.order.vendor_id,
        event,
    };
    let payload = match serde_json::to_vec(&message) {
        Ok(bytes) => Bytes::from(bytes),
        Err(e) => {
            tracing::error!(order_id = %record.id(), error = %e, "order event not encodable");
            return;
        }
    };
    // The log is durable; the bus only carries the live copy.
    let topic = order_topic(record.id());
    if let Err(e) = deps.bus.publish(&topic, payload).await {
        tracing::warn!(topic, error = %e, "order event not published");
    }
    // Vendors see their orders from the payment on.
    if record.paid_at.is_none() {
        return;
    }
    let vendor = record.order.vendor_id;
    let entry = match deps.feed.append(vendor, record.id(), event).await {
        Ok(entry) => entry,
        Err(e) => {
            tracing::warn!(order_id = %record.id(), error = %e, "order event not put on the vendor feed");
            return;
        }
    };
    let topic = vendor_topic(vendor);
    match serde_json::to_vec(&entry) {
        Ok(bytes) => {
            if let Err(e) = deps.bus.publish(&topic, Bytes::from(bytes)).await {
                tracing::warn!(topic, error = %e, "vendor feed entry not published");
            }
        }
        Err(e) => tracing::error!(error = %e, "vendor feed entry not encodable"),
    }
}

/// Expires unpaid orders past their deadline until `parts` returns `None` (the node stopped).
/// `parts` is asked before every store call and dropped after it, so the sweeper never keeps a
/// stopped node's store open for longer than one call. The first round runs one period after
/// the start.
pub async fn run_expiry<F>(parts: F, clock: Clock, every: Duration)
where
    F: Fn() -> Option<(Registry<OrderActor>, OrderRepo)>,
{
    let mut oldest = clock.now() - chrono::Duration::hours(EXPIRY_LOOKBACK_HOURS);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match sweep(&parts, clock.now(), oldest).await {
            Ok(Some(next)) => oldest = next,
            Ok(None) => return,
            Err(e) => tracing::warn!(error = %e, "order expiry sweep failed; retrying"),
        }
    }
}

/// Sends `Expire` to every order whose deadline in the hour buckets from `from`'s to `now`'s
/// passed. Returns the oldest bucket that still holds due timers (to look at again), or
/// `now`'s; `None` when the node stopped.
async fn sweep<F>(
    parts: &F,
    now: DateTime<Utc>,
    from: DateTime<Utc>,
) -> StoreResult<Option<DateTime<Utc>>>
where
    F: Fn() -> Option<(Registry<OrderActor>, OrderRepo)>,
{
    let current = start_of_hour(now);
    let mut bucket = start_of_hour(from);
    let mut oldest_left = None;
    while bucket <= current {
        loop {
            let Some((_, repo)) = parts() else {
                return Ok(None);
            };
            let due = repo.due_timers(bucket, now, TIMER_PAGE).await?;
            drop(repo);
            let mut done = 0;
            for timer in &due {
                let Some((orders, repo)) = parts() else {
                    return Ok(None);
                };
                if expire_one(&orders, &repo, timer, now).await {
                    done += 1;
                }
            }
            if done < due.len() {
                oldest_left.get_or_insert(bucket);
                break;
            }
            if due.len() < TIMER_PAGE {
                break;
            }
        }
        bucket += chrono::Duration::hours(1);
    }
    Ok(Some(oldest_left.unwrap_or(current)))
}

/// Expires one order; `true` when its timer is settled and deleted.
async fn expire_one(
    orders: &Registry<OrderActor>,
    repo: &OrderRepo,
    due: &DueTimer,
    now: DateTime<Utc>,
) -> bool {
    let id = due.timer.order_id;
    let settled = match orders.send(id, ApplyCommand(OrderCommand::Expire)).await {
        Ok(Ok(_)) => {
            tracing::info!(order_id = %id, "unpaid order expired");
            true
        }
        // Paid, cancelled or failed meanwhile: nothing to expire.
        Ok(Err(CommandError::Illegal(_))) => true,
        Ok(Err(CommandError::NotFound)) => due.timer.deadline + ORPHAN_TIMER_GRACE < now,
        Ok(Err(e)) => {
            tracing::warn!(order_id = %id, error = %e, "order not expired; retrying");
            false
        }
        Err(e @ (ActorError::Activation(_) | ActorError::Crashed | ActorError::Unavailable)) => {
            tracing::warn!(order_id = %id, error = %e, "order not expired; retrying");
            false
        }
    };
    if !settled {
        return false;
    }
    match repo.delete_due(due).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(order_id = %id, error = %e, "expired order's timer not deleted");
            false
        }
    }
}

fn start_of_hour(at: DateTime<Utc>) -> DateTime<Utc> {
    at.with_minute(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(at)
}
