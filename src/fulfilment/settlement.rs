//! Settling payments with their orders: every captured payment ends attached to paid orders or
//! given back, whenever its success arrives and whatever stops the node on the way.
//!
//! A success is marked on the payment (`settle:pending`, see [`Payments::mark_unsettled`])
//! before the payment row moves, and the mark is cleared only once every order of the
//! checkout is settled. Settling one order is [`SettlePayment`] on its actor: the order is
//! paid once its units are sold — reviving it if it expired or its payment failed meanwhile —
//! or, when its stock is gone (or it was cancelled), the payment's share for it is recorded as
//! given back (an event on the order, so the decision is durable and the customer sees it)
//! and then refunded through the provider under a key derived from the order, so a retry
//! refunds once. A paid order that is cancelled or rejected is owed its remaining total the
//! same way. Refunding each order's share (rather than the whole payment) keeps what was
//! served paid for: Σ captured − Σ refunded = Σ totals of paid orders.
//!
//! Every step is idempotent, so the listener, a cancellation and the sweep ([`run_sweep`],
//! one per node, for marks older than [`SWEEP_GRACE`]) may all settle the same payment.

use std::sync::Arc;
use std::time::Duration;

use crate::actors::order::{ApplyCommand, CommandError, OrderActor, SettlePayment, Settled};
use crate::actors::registry::{ActorError, Registry};
use crate::domain::checkout::CheckoutRecord;
use crate::domain::ids::{CheckoutId, OrderId, PaymentId};
use crate::domain::order::OrderCommand;
use crate::payments::Payments;
use crate::payments::{
    OutcomeKind, Payment, PaymentError, PaymentListener, PaymentOutcome, PaymentStatus,
};
use crate::store::catalog::id_key;
use crate::store::typed::Rows;
use crate::store::{SharedStore, StoreError, Table};

/// How often each node looks for payments left unsettled.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(2);
/// A mark younger than this is left to whoever set it (the listener is probably on it).
pub const SWEEP_GRACE: chrono::Duration = chrono::Duration::seconds(2);
/// A mark on a payment that never succeeded (its success was claimed but not applied, and
/// nobody redelivered it) is dropped after this long.
const STALE_MARK: chrono::Duration = chrono::Duration::days(7);
/// Marks read per page of the sweep.
const SWEEP_PAGE: usize = 100;

/// Why a payment is not settled yet; the sweep tries again.
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    #[error(transparent)]
    Payment(#[from] PaymentError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("order {0}: {1}")]
    Order(OrderId, CommandError),
    #[error("order {0}: {1}")]
    Actor(OrderId, ActorError),
    #[error("no checkout {0}")]
    UnknownCheckout(CheckoutId),
}

/// Settles payments with the orders of their checkouts.
#[derive(Clone)]
pub struct Settlement {
    payments: Payments,
    orders: Registry<OrderActor>,
    checkouts: Rows<CheckoutRecord>,
}

impl Settlement {
    pub fn new(payments: Payments, orders: Registry<OrderActor>, store: SharedStore) -> Self {
        Settlement {
            payments,
            orders,
            checkouts: Rows::new(store, Table::Checkouts),
        }
    }

    /// What the payments service tells about every change: a success settles the payment, a
    /// failure moves the orders to `payment_failed` (releasing their stock). Failures are
    /// logged; the sweep finishes what a success left undone.
    pub fn listener(&self) -> PaymentListener {
        // The payments service holds its listener: a strong handle back would keep both (and
        // the store) alive forever.
        let payments = self.payments.downgrade();
        let (orders, checkouts) = (self.orders.clone(), self.checkouts.clone());
        Arc::new(move |outcome: PaymentOutcome| {
            let settlement = payments.upgrade().map(|payments| Settlement {
                payments,
                orders: orders.clone(),
                checkouts: checkouts.clone(),
            });
            Box::pin(async move {
                let Some(settlement) = settlement else {
                    return;
                };
                match outcome.kind {
                    OutcomeKind::Paid => {
                        if let Err(e) = settlement.settle(outcome.payment_id).await {
                            tracing::warn!(payment = %outcome.payment_id, error = %e, "payment not settled yet; the sweep retries");
                        }
                    }
                    OutcomeKind::PaymentFailed => settlement.fail(outcome.checkout_id).await,
                    OutcomeKind::Refunded { .. } => {}
                }
            })
        })
    }

    /// Marks the payment unsettled (before an order of it is closed, so the refund it will owe
    /// survives a crash).
    pub async fn mark(&self, payment: PaymentId) -> Result<(), SettleError> {
        Ok(self.payments.mark_unsettled(payment).await?)
    }

    /// Settles every order of the payment's checkout and clears the payment's mark when all
    /// are; `true` when settled. A payment that has not succeeded owes nothing yet (`false`).
    #[tracing::instrument(skip(self), fields(payment = %id))]
    pub async fn settle(&self, id: PaymentId) -> Result<bool, SettleError> {
        // Read first: a mark set while this runs has another version and stays.
        let mark = self.payments.unsettled_version(id).await?;
        let payment = self.payments.get(id).await?.ok_or(PaymentError::NotFound)?;
        if matches!(
            payment.status,
            PaymentStatus::Pending | PaymentStatus::Failed
        ) {
            return Ok(false);
        }
        let checkout = self.checkout(payment.checkout_id).await?;
        let mut first_error = None;
        for order in checkout.orders {
            if let Err(e) = self.settle_order(&payment, order).await {
                tracing::warn!(order_id = %order, error = %e, "order not settled with its payment yet");
                if first_error.is_none() {
                    first_error = Some(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        if let Some(version) = mark {
            self.payments.clear_unsettled(id, version).await?;
        }
        Ok(true)
    }

    async fn settle_order(&self, payment: &Payment, order: OrderId) -> Result<(), SettleError> {
        let settled = self
            .orders
            .send(order, SettlePayment)
            .await
            .map_err(|e| SettleError::Actor(order, e))?
            .map_err(|e| SettleError::Order(order, e))?;
        let Settled::Owed {
            amount,
            reference,
            record,
        } = settled
        else {
            return Ok(());
        };
        if amount.amount_minor <= 0 {
            return Ok(());
        }
        let key = refund_key(order, reference);
        self.payments
            .refund(payment.id, amount.amount_minor, &key)
            .await?;
        tracing::info!(order_id = %order, payment = %payment.id, amount_minor = amount.amount_minor, reference, "order's share of the payment given back");
        if record {
            let command = OrderCommand::Refund {
                amount,
                lines: Vec::new(),
                reference: reference.to_owned(),
            };
            self.orders
                .send(order, ApplyCommand(command))
                .await
                .map_err(|e| SettleError::Actor(order, e))?
                .map_err(|e| SettleError::Order(order, e))?;
        }
        Ok(())
    }

    /// The payment of a checkout failed: its orders stop waiting for it.
    async fn fail(&self, checkout: CheckoutId) {
        let checkout = match self.checkout(checkout).await {
            Ok(checkout) => checkout,
            Err(e) => {
                tracing::error!(error = %e, "payment failure not applied to its orders");
                return;
            }
        };
        for order in checkout.orders {
            match self
                .orders
                .send(order, ApplyCommand(OrderCommand::MarkPaymentFailed))
                .await
            {
                // Refused: the order moved on (paid by an earlier success, expired, cancelled).
                Ok(Ok(_) | Err(CommandError::Illegal(_))) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, order_id = %order, "payment failure not applied to an order")
                }
                Err(e) => {
                    tracing::error!(error = %e, order_id = %order, "payment failure not delivered to an order")
                }
            }
        }
    }

    async fn checkout(&self, id: CheckoutId) -> Result<CheckoutRecord, SettleError> {
        self.checkouts
            .get(&id_key(id))
            .await?
            .map(|c| c.value)
            .ok_or(SettleError::UnknownCheckout(id))
    }

    /// Settles every payment marked longer than [`SWEEP_GRACE`] ago.
    async fn sweep(&self) -> Result<(), SettleError> {
        let now = self.payments.clock().now();
        let mut after = None;
        loop {
            let (marks, next) = self.payments.unsettled_page(after, SWEEP_PAGE).await?;
            for (version, mark) in &marks {
                let age = now - mark.since;
                if age < SWEEP_GRACE {
                    continue;
                }
                match self.settle(mark.payment_id).await {
                    Ok(true) => {
                        tracing::info!(payment = %mark.payment_id, "unsettled payment settled by the sweep")
                    }
                    Ok(false) if age > STALE_MARK => {
                        self.payments
                            .clear_unsettled(mark.payment_id, *version)
                            .await?;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(payment = %mark.payment_id, error = %e, "unsettled payment not settled; retrying")
                    }
                }
            }
            match (next, marks.last()) {
                (Some(_), Some((_, last))) => after = Some(last.payment_id),
                _ => return Ok(()),
            }
        }
    }
}

/// The provider idempotency key of an order's refund named `reference`.
pub fn refund_key(order: OrderId, reference: &str) -> String {
    format!("refund:{order}:{reference}")
}

/// Settles payments left unsettled until `parts` returns `None` (the node stopped). `parts` is
/// asked once per round and dropped after it, so the sweep never keeps a stopped node alive.
pub async fn run_sweep<F>(parts: F, every: Duration)
where
    F: Fn() -> Option<Settlement>,
{
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(settlement) = parts() else {
            return;
        };
        if let Err(e) = settlement.sweep().await {
            tracing::warn!(error = %e, "settlement sweep failed; retrying");
        }
    }
}
