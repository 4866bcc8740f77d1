//! Orders: one vendor's share of a checkout, the states it moves through, and the events that
//! record each move.
//!
//! The state machine is the pure function [`transition`]: a status and a command give the next
//! status and the event to record, or an [`IllegalTransition`]. The happy path is
//! `pending_payment → paid → accepted → preparing → ready_for_pickup → picked_up → delivered`;
//! a courier is recorded on the way (`courier_assigned`): assigning one while the kitchen is
//! still busy keeps the status, assigning one to an order that is ready moves it to
//! `courier_assigned`. The exits are `rejected`, `cancelled`, `payment_failed`, `expired` and
//! `refunded`.
//!
//! Money: an order becomes `paid` only once its units are sold (the order actor takes the
//! stock before it records the event), also when a payment arrives after the order expired or
//! its payment failed (the order is revived). A payment the order can no longer be served for
//! is given back (`payment_returned`; a pending order then expires). Refunds keep the status
//! and are listed on the order; only a refund that completes the total moves it to `refunded`.
//!
//! [`Order`] is the core every reader needs; [`OrderRecord`] is the row as the order actor keeps
//! it (the core plus its progress), stored flattened so rows written with only the core still
//! decode and readers of the core ignore the rest.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::geo::GeoPoint;
use super::ids::{CheckoutId, OrderId, ProductId, UserId, VendorId};
use super::money::Money;

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    PendingPayment,
    Paid,
    Accepted,
    Preparing,
    ReadyForPickup,
    CourierAssigned,
    PickedUp,
    Delivered,
    Rejected,
    Cancelled,
    PaymentFailed,
    Expired,
    Refunded,
}

impl OrderStatus {
    /// The snake_case name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::PendingPayment => "pending_payment",
            OrderStatus::Paid => "paid",
            OrderStatus::Accepted => "accepted",
            OrderStatus::Preparing => "preparing",
            OrderStatus::ReadyForPickup => "ready_for_pickup",
            OrderStatus::CourierAssigned => "courier_assigned",
            OrderStatus::PickedUp => "picked_up",
            OrderStatus::Delivered => "delivered",
            OrderStatus::Rejected => "rejected",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::PaymentFailed => "payment_failed",
            OrderStatus::Expired => "expired",
            OrderStatus::Refunded => "refunded",
        }
    }

    /// Whether the order has reached its end (delivered, or one of the exits): nothing moves
    /// it on but a refund, and nobody tracks it any more.
    pub fn has_ended(self) -> bool {
        matches!(
            self,
            OrderStatus::Delivered
                | OrderStatus::Cancelled
                | OrderStatus::Refunded
                | OrderStatus::Rejected
                | OrderStatus::Expired
                | OrderStatus::PaymentFailed
        )
    }

    /// Whether the order was paid for on its way to this status (so money may be refunded).
    fn after_payment(self) -> bool {
        matches!(
            self,
            OrderStatus::Paid
                | OrderStatus::Accepted
                | OrderStatus::Preparing
                | OrderStatus::ReadyForPickup
                | OrderStatus::CourierAssigned
                | OrderStatus::PickedUp
                | OrderStatus::Delivered
                | OrderStatus::Refunded
        )
    }
}

impl std::fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One product line of an order, with the price it was sold at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderLine {
    #[schema(value_type = String, format = Uuid)]
    pub product_id: ProductId,
    pub title: String,
    pub quantity: u32,
    pub unit_price: Money,
}

/// An order as stored: the core every reader needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Order {
    #[schema(value_type = String, format = Uuid)]
    pub id: OrderId,
    #[schema(value_type = String, format = Uuid)]
    pub checkout_id: CheckoutId,
    #[schema(value_type = String, format = Uuid)]
    pub customer_id: UserId,
    #[schema(value_type = String, format = Uuid)]
    pub vendor_id: VendorId,
    pub status: OrderStatus,
    pub lines: Vec<OrderLine>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Order {
    /// Whether the order reached its customer (and so may be reviewed).
    pub fn is_delivered(&self) -> bool {
        self.status == OrderStatus::Delivered
    }

    pub fn contains(&self, product: ProductId) -> bool {
        self.lines.iter().any(|l| l.product_id == product)
    }

    /// The distinct products of the order (the ones its stock reservation holds).
    pub fn products(&self) -> Vec<ProductId> {
        let mut products: Vec<ProductId> = self.lines.iter().map(|l| l.product_id).collect();
        products.sort();
        products.dedup();
        products
    }
}

/// Where an order is delivered, as the order records it. Named apart from the checkout's
/// input (`domain::checkout::DeliveryAddress`) in the OpenAPI document: one name per shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = OrderDeliveryAddress)]
pub struct DeliveryAddress {
    /// The address as the customer wrote it.
    pub address: String,
    pub location: GeoPoint,
    /// Directions for the courier (floor, door code...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

/// What the customer pays for an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderTotals {
    pub subtotal: Money,
    pub delivery_fee: Money,
    pub total: Money,
}

/// Who cancelled an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CancelledBy {
    /// The customer, before the vendor accepted.
    Customer,
    /// An administrator, at any time before delivery.
    Admin,
}

/// An order with its progress, as the order actor stores it. Every field beyond the core
/// defaults, so rows written before a field existed still decode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderRecord {
    #[serde(flatten)]
    pub order: Order,
    /// Sequence number of the last event applied to this row (0: none yet).
    #[serde(default)]
    pub seq: u64,
    /// When an unpaid order expires.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub courier_id: Option<UserId>,
    #[serde(default)]
    pub delivery_address: Option<DeliveryAddress>,
    #[serde(default)]
    pub totals: Option<OrderTotals>,
    /// The payment (one per checkout) that pays for this order.
    #[serde(default)]
    pub payment_id: Option<String>,
    #[serde(default)]
    pub paid_at: Option<DateTime<Utc>>,
    /// Why the vendor rejected the order.
    #[serde(default)]
    pub rejection_reason: Option<String>,
    #[serde(default)]
    pub cancelled_by: Option<CancelledBy>,
    /// Money given back so far.
    #[serde(default)]
    pub refunded: Option<Money>,
    /// Every refund of the order, oldest first.
    #[serde(default)]
    pub refunds: Vec<OrderRefund>,
    /// Set when a payment arrived that the order could no longer be served for (it expired
    /// and its stock was sold to someone else, or it was cancelled): the amount given back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_returned: Option<Money>,
    /// The four digits the customer tells the courier at the door. Shown to the customer
    /// alone: every other reader gets the record through [`OrderRecord::without_handoff_code`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff_code: Option<String>,
    /// When the courier came within reach of the vendor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arrived_at_pickup_at: Option<DateTime<Utc>>,
    /// When the courier came within reach of the drop-off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arriving_at: Option<DateTime<Utc>>,
    /// The commission and courier-fee rates in force at checkout, which the order's money is
    /// shared by (none on orders placed before rates were recorded: today's defaults apply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rates: Option<crate::domain::ledger::Rates>,
    /// A coupon's discount on the goods, frozen at checkout (`totals.total` is net of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discount: Option<crate::domain::coupon::OrderDiscount>,
}

/// One refund of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderRefund {
    pub at: DateTime<Utc>,
    pub amount: Money,
    /// The products whose lines were refunded; empty for a refund of the whole order (or of
    /// what was left of it).
    #[schema(value_type = Vec<String>)]
    pub lines: Vec<ProductId>,
    /// What names the refund (the admin's `Idempotency-Key`, or `closed` for the refund of a
    /// paid order that was cancelled or rejected): a refund is recorded once per reference.
    pub reference: String,
}

/// A request to move an order on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderCommand {
    /// The payment succeeded and the order's units are sold (the actor takes the stock
    /// first): from `pending_payment`, or reviving an `expired` or `payment_failed` order.
    MarkPaid,
    /// A payment arrived that the order cannot be served for: it is given back.
    ReturnPayment {
        amount: Money,
    },
    MarkPaymentFailed,
    Expire,
    Accept,
    Reject {
        reason: String,
    },
    StartPreparing,
    MarkReady,
    AssignCourier {
        courier: UserId,
    },
    /// The courier reached the vendor (a geofence, not a status).
    RecordArrivedAtPickup,
    PickUp,
    /// The courier is about to reach the drop-off (a geofence, not a status).
    RecordArriving,
    /// Handed over; the courier checked the customer's handoff code first. `at_drop_off`: the
    /// courier's last position was inside the drop-off geofence (a verified delivery).
    Deliver {
        at_drop_off: bool,
    },
    Cancel {
        by: CancelledBy,
    },
    Refund {
        amount: Money,
        lines: Vec<ProductId>,
        reference: String,
    },
}

impl OrderCommand {
    /// The status this command aims for, named in [`IllegalTransition`].
    pub fn target(&self) -> OrderStatus {
        match self {
            OrderCommand::MarkPaid => OrderStatus::Paid,
            OrderCommand::ReturnPayment { .. } => OrderStatus::Expired,
            OrderCommand::MarkPaymentFailed => OrderStatus::PaymentFailed,
            OrderCommand::Expire => OrderStatus::Expired,
            OrderCommand::Accept => OrderStatus::Accepted,
            OrderCommand::Reject { .. } => OrderStatus::Rejected,
            OrderCommand::StartPreparing => OrderStatus::Preparing,
            OrderCommand::MarkReady => OrderStatus::ReadyForPickup,
            OrderCommand::AssignCourier { .. } => OrderStatus::CourierAssigned,
            OrderCommand::RecordArrivedAtPickup => OrderStatus::CourierAssigned,
            OrderCommand::PickUp => OrderStatus::PickedUp,
            OrderCommand::RecordArriving => OrderStatus::PickedUp,
            OrderCommand::Deliver { .. } => OrderStatus::Delivered,
            OrderCommand::Cancel { .. } => OrderStatus::Cancelled,
            OrderCommand::Refund { .. } => OrderStatus::Refunded,
        }
    }
}

/// What happened to an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OrderEventKind {
    Created,
    Paid,
    /// A payment the order could no longer be served for was given back.
    PaymentReturned {
        amount: Money,
    },
    PaymentFailed,
    Expired,
    Accepted,
    Rejected {
        reason: String,
    },
    Preparing,
    Ready,
    CourierAssigned {
        #[schema(value_type = String, format = Uuid)]
        courier: UserId,
    },
    ArrivedAtPickup,
    PickedUp,
    Arriving,
    Delivered {
        /// The handoff code matched and the courier was inside the drop-off geofence: the
        /// order's shares become payable after the hold period.
        #[serde(default)]
        at_drop_off: bool,
    },
    Cancelled {
        by: CancelledBy,
    },
    Refunded {
        amount: Money,
        #[schema(value_type = Vec<String>)]
        lines: Vec<ProductId>,
        #[serde(default)]
        reference: Option<String>,
    },
}

/// One entry of an order's event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderEvent {
    /// 1 for `created`, then one more for each event.
    pub seq: u64,
    pub at: DateTime<Utc>,
    pub kind: OrderEventKind,
    pub status_after: OrderStatus,
}

/// A command the order's status does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an order cannot go from {from} to {to}")]
pub struct IllegalTransition {
    pub from: OrderStatus,
    pub to: OrderStatus,
}

/// The state machine: the status after `command` and the event recording it.
pub fn transition(
    from: OrderStatus,
    command: &OrderCommand,
) -> Result<(OrderStatus, OrderEventKind), IllegalTransition> {
    use OrderCommand as C;
    use OrderStatus as S;
    let illegal = IllegalTransition {
        from,
        to: command.target(),
    };
    let next = match (from, command) {
        // A late payment revives an order whose stock can still be had.
        (S::PendingPayment | S::Expired | S::PaymentFailed, C::MarkPaid) => {
            (S::Paid, OrderEventKind::Paid)
        }
        (S::PendingPayment, C::ReturnPayment { amount }) => (
            S::Expired,
            OrderEventKind::PaymentReturned { amount: *amount },
        ),
        (S::Expired | S::PaymentFailed | S::Cancelled, C::ReturnPayment { amount }) => {
            (from, OrderEventKind::PaymentReturned { amount: *amount })
        }
        (S::PendingPayment, C::MarkPaymentFailed) => {
            (S::PaymentFailed, OrderEventKind::PaymentFailed)
        }
        (S::PendingPayment, C::Expire) => (S::Expired, OrderEventKind::Expired),
        (S::Paid, C::Accept) => (S::Accepted, OrderEventKind::Accepted),
        (S::Paid, C::Reject { reason }) => (
            S::Rejected,
            OrderEventKind::Rejected {
                reason: reason.clone(),
            },
        ),
        (S::Accepted, C::StartPreparing) => (S::Preparing, OrderEventKind::Preparing),
        (S::Preparing, C::MarkReady) => (S::ReadyForPickup, OrderEventKind::Ready),
        // The kitchen keeps working while a courier heads over: the status stays.
        (S::Accepted | S::Preparing, C::AssignCourier { courier }) => {
            (from, OrderEventKind::CourierAssigned { courier: *courier })
        }
        (S::ReadyForPickup | S::CourierAssigned, C::AssignCourier { courier }) => (
            S::CourierAssigned,
            OrderEventKind::CourierAssigned { courier: *courier },
        ),
        (S::ReadyForPickup | S::CourierAssigned, C::PickUp) => {
            (S::PickedUp, OrderEventKind::PickedUp)
        }
        (
            S::Accepted | S::Preparing | S::ReadyForPickup | S::CourierAssigned,
            C::RecordArrivedAtPickup,
        ) => (from, OrderEventKind::ArrivedAtPickup),
        (S::PickedUp, C::RecordArriving) => (from, OrderEventKind::Arriving),
        (S::PickedUp, C::Deliver { at_drop_off }) => (
            S::Delivered,
            OrderEventKind::Delivered {
                at_drop_off: *at_drop_off,
            },
        ),
        (S::PendingPayment | S::Paid, C::Cancel { by }) => {
            (S::Cancelled, OrderEventKind::Cancelled { by: *by })
        }
        (
            S::Accepted | S::Preparing | S::ReadyForPickup | S::CourierAssigned | S::PickedUp,
            C::Cancel {
                by: CancelledBy::Admin,
            },
        ) => (
            S::Cancelled,
            OrderEventKind::Cancelled {
                by: CancelledBy::Admin,
            },
        ),
        (
            status,
            C::Refund {
                amount,
                lines,
                reference,
            },
        ) if status.after_payment() || matches!(status, S::Cancelled | S::Rejected) => (
            S::Refunded,
            OrderEventKind::Refunded {
                amount: *amount,
                lines: lines.clone(),
                reference: Some(reference.clone()),
            },
        ),
        _ => return Err(illegal),
    };
    Ok(next)
}

impl OrderRecord {
    /// A new order awaiting payment until `expires_at`.
    pub fn pending(order: Order, expires_at: DateTime<Utc>) -> Self {
        OrderRecord {
            order: Order {
                status: OrderStatus::PendingPayment,
                ..order
            },
            seq: 0,
            expires_at: Some(expires_at),
            courier_id: None,
            delivery_address: None,
            totals: None,
            payment_id: None,
            paid_at: None,
            rejection_reason: None,
            cancelled_by: None,
            refunded: None,
            refunds: Vec::new(),
            payment_returned: None,
            rates: None,
            discount: None,
            handoff_code: None,
            arrived_at_pickup_at: None,
            arriving_at: None,
        }
    }

    /// The record as anyone but its customer may see it: without the handoff code.
    pub fn without_handoff_code(mut self) -> Self {
        self.handoff_code = None;
        self
    }

    /// Whether the courier's position is part of this order's story: a courier is assigned
    /// and the order has not reached its end.
    pub fn is_tracked(&self) -> bool {
        self.courier_id.is_some()
            && matches!(
                self.status(),
                OrderStatus::Accepted
                    | OrderStatus::Preparing
                    | OrderStatus::ReadyForPickup
                    | OrderStatus::CourierAssigned
                    | OrderStatus::PickedUp
            )
    }

    pub fn id(&self) -> OrderId {
        self.order.id
    }

    pub fn status(&self) -> OrderStatus {
        self.order.status
    }

    /// Whether a refund under `reference` was recorded.
    pub fn has_refund(&self, reference: &str) -> bool {
        self.refunds.iter().any(|r| r.reference == reference)
    }

    /// The products whose lines were refunded one by one.
    pub fn refunded_lines(&self) -> Vec<ProductId> {
        self.refunds
            .iter()
            .flat_map(|r| r.lines.iter().copied())
            .collect()
    }

    /// Minor units given back so far.
    pub fn refunded_minor(&self) -> i64 {
        self.refunded.map_or(0, |m| m.amount_minor)
    }

    /// [`transition`] plus what the status alone cannot tell: a courier must be assigned
    /// before a pickup, only an order that was paid can be refunded (and a refund short of the
    /// total keeps the status), and an order whose payment was given back is never paid.
    pub fn decide(
        &self,
        command: &OrderCommand,
    ) -> Result<(OrderStatus, OrderEventKind), IllegalTransition> {
        let from = self.status();
        let illegal = IllegalTransition {
            from,
            to: command.target(),
        };
        match command {
            OrderCommand::PickUp if self.courier_id.is_none() => return Err(illegal),
            OrderCommand::RecordArrivedAtPickup
                if self.courier_id.is_none() || self.arrived_at_pickup_at.is_some() =>
            {
                return Err(illegal);
            }
            OrderCommand::RecordArriving if self.arriving_at.is_some() => return Err(illegal),
            OrderCommand::Refund { .. }
                if matches!(from, OrderStatus::Cancelled | OrderStatus::Rejected)
                    && self.paid_at.is_none() =>
            {
                return Err(illegal);
            }
            OrderCommand::MarkPaid if self.payment_returned.is_some() => return Err(illegal),
            OrderCommand::ReturnPayment { .. }
                if self.payment_returned.is_some() || self.paid_at.is_some() =>
            {
                return Err(illegal);
            }
            _ => {}
        }
        let (status, kind) = transition(from, command)?;
        if let OrderCommand::Refund { amount, .. } = command
            && let Some(totals) = self.totals
            && self.refunded_minor().saturating_add(amount.amount_minor) < totals.total.amount_minor
        {
            // Part of the money went back: the order carries on where it was.
            return Ok((from, kind));
        }
        Ok((status, kind))
    }

    /// Applies a recorded event. Events at or below the row's sequence number were applied
    /// already and change nothing, so replaying a log is safe.
    pub fn apply(&mut self, event: &OrderEvent) {
        if event.seq <= self.seq {
            return;
        }
        self.seq = event.seq;
        self.order.status = event.status_after;
        self.order.updated_at = event.at;
        match &event.kind {
            OrderEventKind::Paid => self.paid_at = Some(event.at),
            OrderEventKind::Rejected { reason } => self.rejection_reason = Some(reason.clone()),
            OrderEventKind::CourierAssigned { courier } => self.courier_id = Some(*courier),
            OrderEventKind::ArrivedAtPickup => self.arrived_at_pickup_at = Some(event.at),
            OrderEventKind::Arriving => self.arriving_at = Some(event.at),
            OrderEventKind::Cancelled { by } => self.cancelled_by = Some(*by),
            OrderEventKind::Refunded {
                amount,
                lines,
                reference,
            } => {
                self.add_refunded(*amount);
                self.refunds.push(OrderRefund {
                    at: event.at,
                    amount: *amount,
                    lines: lines.clone(),
                    reference: reference.clone().unwrap_or_default(),
                });
            }
            OrderEventKind::PaymentReturned { amount } => {
                self.add_refunded(*amount);
                self.payment_returned = Some(*amount);
            }
            OrderEventKind::Created
            | OrderEventKind::PaymentFailed
            | OrderEventKind::Expired
            | OrderEventKind::Accepted
            | OrderEventKind::Preparing
            | OrderEventKind::Ready
            | OrderEventKind::PickedUp
            | OrderEventKind::Delivered { .. } => {}
        }
    }

    fn add_refunded(&mut self, amount: Money) {
        let total = match self.refunded {
            Some(before) if before.currency == amount.currency => Money::new(
                before.amount_minor.saturating_add(amount.amount_minor),
                amount.currency,
            ),
            _ => amount,
        };
        self.refunded = Some(total);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::money::Currency;
    use OrderCommand as C;
    use OrderStatus as S;

    fn refund() -> OrderCommand {
        C::Refund {
            amount: Money::new(500, Currency::EUR),
            lines: vec![ProductId::new()],
            reference: "r1".into(),
        }
    }

    fn returned() -> OrderCommand {
        C::ReturnPayment {
            amount: Money::new(1500, Currency::EUR),
        }
    }

    fn to(from: OrderStatus, command: &OrderCommand) -> Result<OrderStatus, IllegalTransition> {
        transition(from, command).map(|(status, _)| status)
    }

    #[test]
    fn every_legal_transition_lands_where_it_should() {
        let courier = UserId::new();
        let assign = C::AssignCourier { courier };
        let customer = C::Cancel {
            by: CancelledBy::Customer,
        };
        let admin = C::Cancel {
            by: CancelledBy::Admin,
        };
        let reject = C::Reject {
            reason: "closed".into(),
        };
        let legal = [
            (S::PendingPayment, C::MarkPaid, S::Paid),
            (S::Expired, C::MarkPaid, S::Paid),
            (S::PaymentFailed, C::MarkPaid, S::Paid),
            (S::PendingPayment, returned(), S::Expired),
            (S::Expired, returned(), S::Expired),
            (S::PaymentFailed, returned(), S::PaymentFailed),
            (S::Cancelled, returned(), S::Cancelled),
            (S::PendingPayment, C::MarkPaymentFailed, S::PaymentFailed),
            (S::PendingPayment, C::Expire, S::Expired),
            (S::PendingPayment, customer.clone(), S::Cancelled),
            (S::PendingPayment, admin.clone(), S::Cancelled),
            (S::Paid, C::Accept, S::Accepted),
            (S::Paid, reject, S::Rejected),
            (S::Paid, customer.clone(), S::Cancelled),
            (S::Paid, admin.clone(), S::Cancelled),
            (S::Paid, refund(), S::Refunded),
            (S::Accepted, C::StartPreparing, S::Preparing),
            (S::Accepted, assign.clone(), S::Accepted),
            (S::Accepted, admin.clone(), S::Cancelled),
            (S::Accepted, refund(), S::Refunded),
            (S::Preparing, C::MarkReady, S::ReadyForPickup),
            (S::Preparing, assign.clone(), S::Preparing),
            (S::Preparing, admin.clone(), S::Cancelled),
            (S::Preparing, refund(), S::Refunded),
            (S::ReadyForPickup, assign.clone(), S::CourierAssigned),
            (S::ReadyForPickup, C::PickUp, S::PickedUp),
            (S::ReadyForPickup, admin.clone(), S::Cancelled),
            (S::ReadyForPickup, refund(), S::Refunded),
            (S::CourierAssigned, assign.clone(), S::CourierAssigned),
            (S::CourierAssigned, C::PickUp, S::PickedUp),
            (S::CourierAssigned, admin.clone(), S::Cancelled),
            (S::CourierAssigned, refund(), S::Refunded),
            (S::PickedUp, C::Deliver { at_drop_off: true }, S::Delivered),
            (S::Accepted, C::RecordArrivedAtPickup, S::Accepted),
            (
                S::ReadyForPickup,
                C::RecordArrivedAtPickup,
                S::ReadyForPickup,
            ),
            (
                S::CourierAssigned,
                C::RecordArrivedAtPickup,
                S::CourierAssigned,
            ),
            (S::PickedUp, C::RecordArriving, S::PickedUp),
            (S::PickedUp, admin, S::Cancelled),
            (S::PickedUp, refund(), S::Refunded),
            (S::Delivered, refund(), S::Refunded),
            (S::Cancelled, refund(), S::Refunded),
            (S::Rejected, refund(), S::Refunded),
            (S::Refunded, refund(), S::Refunded),
        ];
        for (from, command, expected) in legal {
            assert_eq!(to(from, &command), Ok(expected), "{from} with {command:?}");
        }
    }

    #[test]
    fn illegal_transitions_name_where_they_came_from_and_were_going() {
        let customer = C::Cancel {
            by: CancelledBy::Customer,
        };
        let illegal = [
            (S::PendingPayment, C::Accept),
            (S::PendingPayment, C::PickUp),
            (S::PendingPayment, refund()),
            (S::Paid, C::MarkPaid),
            (S::Paid, C::Expire),
            (S::Paid, C::MarkReady),
            (S::Accepted, C::Accept),
            (S::Accepted, customer.clone()),
            (S::Accepted, C::MarkReady),
            (S::Preparing, customer),
            (S::Preparing, C::Deliver { at_drop_off: true }),
            (S::ReadyForPickup, C::StartPreparing),
            (S::PickedUp, C::PickUp),
            (S::PickedUp, C::RecordArrivedAtPickup),
            (S::Accepted, C::RecordArriving),
            (S::Delivered, C::RecordArriving),
            (S::Paid, C::RecordArrivedAtPickup),
            (
                S::Delivered,
                C::Cancel {
                    by: CancelledBy::Admin,
                },
            ),
            (S::Cancelled, C::MarkPaid),
            (S::Paid, returned()),
            (S::Delivered, returned()),
            (S::Cancelled, C::Accept),
            (S::PaymentFailed, refund()),
            (S::Expired, refund()),
            (
                S::Rejected,
                C::AssignCourier {
                    courier: UserId::new(),
                },
            ),
        ];
        for (from, command) in illegal {
            assert_eq!(
                to(from, &command),
                Err(IllegalTransition {
                    from,
                    to: command.target()
                }),
                "{from} with {command:?}"
            );
        }
    }

    fn record() -> OrderRecord {
        let now = Utc::now();
        OrderRecord::pending(
            Order {
                id: OrderId::new(),
                checkout_id: CheckoutId::new(),
                customer_id: UserId::new(),
                vendor_id: VendorId::new(),
                status: OrderStatus::PendingPayment,
                lines: Vec::new(),
                created_at: now,
                updated_at: now,
            },
            now,
        )
    }

    fn event(record: &OrderRecord, kind: OrderEventKind, status_after: OrderStatus) -> OrderEvent {
        OrderEvent {
            seq: record.seq + 1,
            at: Utc::now(),
            kind,
            status_after,
        }
    }

    #[test]
    fn pickup_needs_a_courier_and_refunds_need_a_payment() {
        let mut order = record();
        order.order.status = S::ReadyForPickup;
        assert!(order.decide(&C::PickUp).is_err());
        order.courier_id = Some(UserId::new());
        assert!(order.decide(&C::PickUp).is_ok());

        let mut cancelled = record();
        cancelled.order.status = S::Cancelled;
        assert!(cancelled.decide(&refund()).is_err());
        cancelled.paid_at = Some(Utc::now());
        assert!(cancelled.decide(&refund()).is_ok());
    }

    #[test]
    fn partial_refunds_keep_the_status_and_are_listed_and_the_last_one_ends_the_order() {
        let mut order = record();
        order.order.status = S::Delivered;
        order.paid_at = Some(Utc::now());
        let total = Money::new(1500, Currency::EUR);
        order.totals = Some(OrderTotals {
            subtotal: Money::new(1000, Currency::EUR),
            delivery_fee: Money::new(500, Currency::EUR),
            total,
        });
        let line = ProductId::new();
        let part = C::Refund {
            amount: Money::new(400, Currency::EUR),
            lines: vec![line],
            reference: "k1".into(),
        };
        let (status, kind) = order.decide(&part).unwrap();
        assert_eq!(status, S::Delivered);
        let refunded = event(&order, kind, status);
        order.apply(&refunded);
        assert!(order.has_refund("k1") && !order.has_refund("k2"));
        assert_eq!(order.refunded_lines(), vec![line]);
        assert_eq!(order.refunded_minor(), 400);
        let rest = C::Refund {
            amount: Money::new(1100, Currency::EUR),
            lines: Vec::new(),
            reference: "k2".into(),
        };
        let (status, kind) = order.decide(&rest).unwrap();
        assert_eq!(status, S::Refunded);
        order.apply(&event(&order, kind, status));
        assert_eq!((order.status(), order.refunds.len()), (S::Refunded, 2));
        assert_eq!(order.refunded, Some(total));
    }

    #[test]
    fn a_returned_payment_is_final_and_a_paid_order_never_returns_one() {
        let mut order = record();
        let (status, kind) = order.decide(&returned()).unwrap();
        assert_eq!(status, S::Expired);
        order.apply(&event(&order, kind, status));
        assert_eq!(order.payment_returned.map(|m| m.amount_minor), Some(1500));
        assert_eq!(order.refunded_minor(), 1500);
        assert!(order.decide(&C::MarkPaid).is_err());
        assert!(order.decide(&returned()).is_err());

        let mut paid = record();
        paid.order.status = S::Cancelled;
        paid.paid_at = Some(Utc::now());
        assert!(paid.decide(&returned()).is_err());
    }

    #[test]
    fn geofences_need_a_courier_are_recorded_once_and_keep_the_status() {
        let mut order = record();
        order.order.status = S::ReadyForPickup;
        assert!(order.decide(&C::RecordArrivedAtPickup).is_err());
        order.courier_id = Some(UserId::new());
        let (status, kind) = order.decide(&C::RecordArrivedAtPickup).unwrap();
        assert_eq!(
            (status, kind.clone()),
            (S::ReadyForPickup, OrderEventKind::ArrivedAtPickup)
        );
        let arrived = event(&order, kind, status);
        order.apply(&arrived);
        assert!(order.arrived_at_pickup_at.is_some());
        assert!(order.decide(&C::RecordArrivedAtPickup).is_err());
        assert!(order.is_tracked());
        order.order.status = S::Delivered;
        assert!(!order.is_tracked());
    }

    #[test]
    fn only_the_customer_view_keeps_the_handoff_code() {
        let mut order = record();
        order.handoff_code = Some("0427".into());
        let json = serde_json::to_value(order.clone().without_handoff_code()).unwrap();
        assert!(json.get("handoff_code").is_none());
        let json = serde_json::to_value(order).unwrap();
        assert_eq!(json["handoff_code"], "0427");
    }

    #[test]
    fn applying_events_moves_the_row_and_replays_are_ignored() {
        let mut order = record();
        let paid = event(&order, OrderEventKind::Paid, S::Paid);
        order.apply(&paid);
        assert_eq!((order.status(), order.seq), (S::Paid, 1));
        assert!(order.paid_at.is_some());
        let courier = UserId::new();
        let assigned = event(&order, OrderEventKind::CourierAssigned { courier }, S::Paid);
        order.apply(&assigned);
        assert_eq!(order.courier_id, Some(courier));
        // A replay of an older event changes nothing.
        order.apply(&paid);
        assert_eq!(order.seq, 2);
    }

    #[test]
    fn records_decode_from_rows_holding_only_the_core() {
        let core = record().order;
        let json = serde_json::to_vec(&core).unwrap_or_default();
        let decoded: Result<OrderRecord, _> = serde_json::from_slice(&json);
        assert!(matches!(decoded, Ok(r) if r.seq == 0 && r.order == core));
    }
}
