//! The orders service: who may see an order, the vendor's commands, cancellation, refunds, an
//! order's log and its courier's position, and the lists of orders a customer, a store and the
//! admins page through.
//!
//! An order is visible to its customer, the owner of its vendor, its assigned courier and
//! admins; anyone else is told it does not exist ([`OrderError::NotFound`]). Commands go through
//! the order's actor. Lists run oldest first, a page at a time, with the cursor of the previous
//! page.

use futures_util::stream::{self, StreamExt as _};
use serde::Serialize;

use crate::actors::order::{ApplyCommand, CommandError, GetOrder, OrderActor};
use crate::actors::{ActorError, Registry};
use crate::catalog::{Catalog, CatalogError};
use crate::dispatch::board::Board;
use crate::domain::identity::Role;
use crate::domain::ids::{OrderId, PaymentId, ProductId, UserId, VendorId};
use crate::domain::money::Money;
use crate::domain::order::{CancelledBy, OrderCommand, OrderEvent, OrderRecord, OrderStatus};
use crate::fulfilment::settlement::{SettleError, Settlement, refund_key};
use crate::payments::{PaymentError, Payments};
use crate::store::couriers::CourierRepo;
use crate::store::orders::OrderRepo;
use crate::store::{SharedStore, StoreError};
use crate::streams::frames::LocationFrame;

/// Order rows read at once when listing.
const READ_CONCURRENCY: usize = 16;

/// Who asks: the caller's id and role, and whether they act as an administrator (an admin with
/// a second factor).
#[derive(Debug, Clone, Copy)]
pub struct Viewer {
    pub id: UserId,
    pub role: Role,
    pub admin: bool,
}

/// How the caller relates to an order.
#[derive(Debug, Clone, Copy, Default)]
pub struct Parts {
    pub customer: bool,
    pub vendor: bool,
    pub courier: bool,
    pub admin: bool,
}

impl Parts {
    pub fn any(self) -> bool {
        self.customer || self.vendor || self.courier || self.admin
    }
}

/// One page of orders.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OrderPage {
    pub items: Vec<OrderRecord>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// One page of an order's events.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OrderEventPage {
    pub events: Vec<OrderEvent>,
    /// Pass as `after_seq` for the next page; absent on the last page.
    pub next_after_seq: Option<u64>,
}

/// Where an order's courier is, for clients that poll instead of holding a WebSocket.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Tracking {
    pub status: OrderStatus,
    pub courier: Option<LocationFrame>,
    pub eta_s: Option<u32>,
}

/// Which orders an admin lists.
#[derive(Debug, Clone, Copy, Default)]
pub struct AdminFilter {
    pub status: Option<OrderStatus>,
    pub vendor: Option<VendorId>,
    pub customer: Option<UserId>,
}

/// Why an order operation did not go through.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    /// No such order, or one the caller has no part in.
    #[error("no such order")]
    NotFound,
    #[error("{0}")]
    Forbidden(&'static str),
    /// A vendor's list asked by a vendor without a store.
    #[error("you do not run a store yet")]
    NoStore,
    /// Tracking asked of an order that reached its end.
    #[error("this order is no longer on its way")]
    TrackingEnded,
    #[error("the cursor is not one this API issued")]
    InvalidCursor,
    #[error("the order has no totals to refund")]
    NoTotals,
    #[error("the order was never paid")]
    NeverPaid,
    #[error("{0}")]
    AlreadyRefunded(String),
    #[error("{0} is not in the order")]
    NotInOrder(ProductId),
    #[error("{amount} more would exceed the order total of {total} ({refunded} refunded)")]
    RefundExceedsTotal {
        amount: i64,
        total: i64,
        refunded: i64,
    },
    #[error("paid order {0} has no payment")]
    NoPayment(OrderId),
    /// The refund a closing order is owed could not be marked for settlement.
    #[error(transparent)]
    Settle(#[from] SettleError),
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Payment(#[from] PaymentError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Actor(#[from] ActorError),
}

/// The orders service; cheap to clone.
#[derive(Clone)]
pub struct Orders {
    actors: Registry<OrderActor>,
    repo: OrderRepo,
    catalog: Catalog,
    payments: Payments,
    settlement: Settlement,
    board: Board,
    couriers: CourierRepo,
}

/// What [`Orders`] is built from.
pub struct OrdersParts {
    pub actors: Registry<OrderActor>,
    pub store: SharedStore,
    pub catalog: Catalog,
    pub payments: Payments,
    pub settlement: Settlement,
    pub board: Board,
    pub couriers: CourierRepo,
}

impl Orders {
    pub fn new(parts: OrdersParts) -> Self {
        Orders {
            actors: parts.actors,
            repo: OrderRepo::new(parts.store),
            catalog: parts.catalog,
            payments: parts.payments,
            settlement: parts.settlement,
            board: parts.board,
            couriers: parts.couriers,
        }
    }

    /// The order as its actor holds it, whoever asks.
    pub async fn load(&self, id: OrderId) -> Result<OrderRecord, OrderError> {
        self.actors
            .send(id, GetOrder)
            .await??
            .ok_or(OrderError::NotFound)
    }

    /// The order and the viewer's parts in it, if they have any.
    pub async fn visible(
        &self,
        viewer: &Viewer,
        id: OrderId,
    ) -> Result<(OrderRecord, Parts), OrderError> {
        let order = self.load(id).await?;
        let parts = self.parts(viewer, &order).await?;
        if parts.any() {
            Ok((order, parts))
        } else {
            Err(OrderError::NotFound)
        }
    }

    /// How a viewer relates to an order: its customer, its vendor, its courier, an admin, or
    /// none.
    pub async fn parts(&self, viewer: &Viewer, order: &OrderRecord) -> Result<Parts, OrderError> {
        let vendor = viewer.role == Role::Vendor
            && self
                .catalog
                .vendor_of(viewer.id)
                .await?
                .is_some_and(|v| v.id == order.order.vendor_id);
        Ok(Parts {
            customer: order.order.customer_id == viewer.id,
            vendor,
            courier: order.courier_id == Some(viewer.id),
            admin: viewer.admin,
        })
    }

    /// One order as the viewer may see it: the handoff code, which proves the parcel reached
    /// its customer, only for the customer.
    pub async fn get(&self, viewer: &Viewer, id: OrderId) -> Result<OrderRecord, OrderError> {
        let (order, parts) = self.visible(viewer, id).await?;
        Ok(if parts.customer {
            order
        } else {
            order.without_handoff_code()
        })
    }

    /// The order's events after `after_seq`, oldest first.
    pub async fn events(
        &self,
        viewer: &Viewer,
        id: OrderId,
        after_seq: u64,
        limit: usize,
    ) -> Result<OrderEventPage, OrderError> {
        self.visible(viewer, id).await?;
        let (events, next_after_seq) = self.events_after(id, after_seq, limit).await?;
        Ok(OrderEventPage {
            events,
            next_after_seq,
        })
    }

    /// The order's events after `after_seq`, for a caller already shown the order.
    pub async fn events_after(
        &self,
        id: OrderId,
        after_seq: u64,
        limit: usize,
    ) -> Result<(Vec<OrderEvent>, Option<u64>), OrderError> {
        Ok(self.repo.events_after(id, after_seq, limit).await?)
    }

    /// The courier's position and ETA while the order is on its way.
    pub async fn tracking(&self, viewer: &Viewer, id: OrderId) -> Result<Tracking, OrderError> {
        let (order, _) = self.visible(viewer, id).await?;
        if order.status().has_ended() {
            return Err(OrderError::TrackingEnded);
        }
        let courier = self.courier_position(&order).await;
        Ok(Tracking {
            status: order.status(),
            // A stored position has no ETA (0): it is computed from the next live one.
            eta_s: courier.as_ref().map(|c| c.eta_s).filter(|eta| *eta > 0),
            courier,
        })
    }

    /// Where the order's courier is, while the order is tracked: the latest live position this
    /// node has seen, else the courier's last stored one (without an ETA).
    pub async fn courier_position(&self, record: &OrderRecord) -> Option<LocationFrame> {
        if !record.is_tracked() {
            return None;
        }
        match self.board.get(record.id()) {
            Some(frame) => Some(frame),
            None => self.stored_position(record).await,
        }
    }

    /// The courier's last stored position, when this node has seen no live one.
    async fn stored_position(&self, record: &OrderRecord) -> Option<LocationFrame> {
        let courier = record.courier_id?;
        let point = crate::actors::courier::stored_position(&self.couriers, courier)
            .await
            .ok()??;
        Some(LocationFrame {
            lat: point.lat,
            lng: point.lng,
            heading_deg: point.heading_deg,
            speed_mps: point.speed_mps,
            recorded_at: point.recorded_at,
            eta_s: 0,
        })
    }

    /// Applies a vendor's command (accept, reject, preparing, ready) to one of its orders.
    pub async fn vendor_command(
        &self,
        viewer: &Viewer,
        id: OrderId,
        command: OrderCommand,
    ) -> Result<OrderRecord, OrderError> {
        let (order, parts) = self.visible(viewer, id).await?;
        if !parts.vendor {
            return Err(OrderError::Forbidden("only the order's vendor can do this"));
        }
        let order = self.apply(&order, command).await?;
        Ok(order.without_handoff_code())
    }

    /// Cancels an order: its customer (before the vendor accepted it) or an admin.
    pub async fn cancel(&self, viewer: &Viewer, id: OrderId) -> Result<OrderRecord, OrderError> {
        let (before, parts) = self.visible(viewer, id).await?;
        let by = if parts.admin {
            CancelledBy::Admin
        } else if parts.customer {
            CancelledBy::Customer
        } else {
            // The vendor turns orders down with reject; the courier cannot cancel.
            return Err(OrderError::Forbidden(
                "only the customer or an admin can cancel an order",
            ));
        };
        let order = self.apply(&before, OrderCommand::Cancel { by }).await?;
        Ok(order.without_handoff_code())
    }

    /// An admin cancels an order (the caller is known to be one).
    pub async fn admin_cancel(&self, id: OrderId) -> Result<OrderRecord, OrderError> {
        let before = self.load(id).await?;
        let command = OrderCommand::Cancel {
            by: CancelledBy::Admin,
        };
        let order = self.apply(&before, command).await?;
        Ok(order.without_handoff_code())
    }

    /// Applies a command to an order as it was read (`before`). A command that closes a paid
    /// order (cancel, reject) gives its money back: the payment is marked unsettled before the
    /// order closes, so the refund it is owed survives a crash (the settlement sweep finishes
    /// it), then settled at once; the order's units go back on sale as it closes.
    async fn apply(
        &self,
        before: &OrderRecord,
        command: OrderCommand,
    ) -> Result<OrderRecord, OrderError> {
        let id = before.id();
        let closing = matches!(
            command,
            OrderCommand::Cancel { .. } | OrderCommand::Reject { .. }
        );
        let payment = if closing && before.paid_at.is_some() {
            self.order_payment(before).await?
        } else {
            None
        };
        if let Some(payment) = payment {
            self.settlement.mark(payment).await?;
        }
        let order = self.actors.send(id, ApplyCommand(command)).await??;
        let Some(payment) = payment else {
            return Ok(order);
        };
        if let Err(e) = self.settlement.settle(payment).await {
            // The order is closed for good; the refund it is owed is retried by the sweep.
            tracing::warn!(order_id = %id, error = %e, "refund of a closed order not made yet");
            return Ok(order);
        }
        Ok(self.actors.send(id, GetOrder).await??.unwrap_or(order))
    }

    /// The payment that pays for an order: the one it names, or its checkout's (orders placed
    /// before they named it); `None` for an order paid outside any payment (tools, tests).
    async fn order_payment(&self, order: &OrderRecord) -> Result<Option<PaymentId>, OrderError> {
        if let Some(id) = order.payment_id.as_deref().and_then(|p| p.parse().ok()) {
            return Ok(Some(id));
        }
        Ok(self
            .payments
            .find_by_checkout(order.order.checkout_id)
            .await?
            .map(|p| p.id))
    }

    /// An admin refunds an order (the caller is known to be one, stepped up): chosen products'
    /// lines, or whatever is left of the order without `lines`. `key` names the refund, so a
    /// retry refunds once and answers the order as it is.
    pub async fn refund(
        &self,
        id: OrderId,
        key: &str,
        mut lines: Vec<ProductId>,
    ) -> Result<OrderRecord, OrderError> {
        let order = self.load(id).await?;
        // Admin keys have a namespace of their own, apart from the refunds hexmarket makes.
        let reference = format!("admin:{key}");
        if order.has_refund(&reference) {
            return Ok(order.without_handoff_code());
        }
        let Some(totals) = order.totals else {
            return Err(OrderError::NoTotals);
        };
        if order.paid_at.is_none() {
            return Err(OrderError::NeverPaid);
        }
        lines.sort();
        lines.dedup();
        let left = totals.total.amount_minor - order.refunded_minor();
        let amount = if lines.is_empty() {
            if left <= 0 {
                return Err(OrderError::AlreadyRefunded(
                    "the whole order was refunded already".to_owned(),
                ));
            }
            left
        } else {
            let refunded = order.refunded_lines();
            let mut sum = 0i64;
            for product in &lines {
                let line = order
                    .order
                    .lines
                    .iter()
                    .find(|l| l.product_id == *product)
                    .ok_or(OrderError::NotInOrder(*product))?;
                if refunded.contains(product) {
                    return Err(OrderError::AlreadyRefunded(format!(
                        "the line of {product} was refunded already"
                    )));
                }
                sum += line
                    .unit_price
                    .times(line.quantity)
                    .map_or(0, |m| m.amount_minor);
            }
            sum
        };
        if amount <= 0 || amount > left {
            return Err(OrderError::RefundExceedsTotal {
                amount,
                total: totals.total.amount_minor,
                refunded: order.refunded_minor(),
            });
        }
        let amount = Money::new(amount, totals.total.currency);
        let payment = self
            .order_payment(&order)
            .await?
            .ok_or(OrderError::NoPayment(id))?;
        self.payments
            .refund(payment, amount.amount_minor, &refund_key(id, &reference))
            .await?;
        let order = self
            .actors
            .send(
                id,
                ApplyCommand(OrderCommand::Refund {
                    amount,
                    lines,
                    reference,
                }),
            )
            .await??;
        Ok(order.without_handoff_code())
    }

    /// The customer's orders, oldest first.
    pub async fn customer_page(
        &self,
        customer: UserId,
        status: Option<OrderStatus>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<OrderPage, OrderError> {
        let cursor = id_cursor(cursor)?;
        self.index_page(status, limit, cursor, |after, n| {
            self.repo.customer_orders(customer, after, n)
        })
        .await
    }

    /// The orders of the vendor's store, oldest first.
    pub async fn vendor_page(
        &self,
        vendor_user: UserId,
        status: Option<OrderStatus>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<OrderPage, OrderError> {
        let cursor = id_cursor(cursor)?;
        let vendor = self
            .catalog
            .vendor_of(vendor_user)
            .await?
            .ok_or(OrderError::NoStore)?;
        self.index_page(status, limit, cursor, |after, n| {
            self.repo.vendor_orders(vendor.id, after, n)
        })
        .await
    }

    /// Every order, filtered by status, vendor or customer (the caller is known to be an
    /// admin).
    pub async fn admin_page(
        &self,
        filter: AdminFilter,
        limit: usize,
        cursor: Option<String>,
    ) -> Result<OrderPage, OrderError> {
        match (filter.vendor, filter.customer) {
            (Some(vendor), customer) => {
                let cursor = id_cursor(cursor.as_deref())?;
                let mut page = self
                    .index_page(filter.status, limit, cursor, |after, n| {
                        self.repo.vendor_orders(vendor, after, n)
                    })
                    .await?;
                page.items
                    .retain(|o| customer.is_none_or(|c| c == o.order.customer_id));
                Ok(page)
            }
            (None, Some(customer)) => {
                let cursor = id_cursor(cursor.as_deref())?;
                self.index_page(filter.status, limit, cursor, |after, n| {
                    self.repo.customer_orders(customer, after, n)
                })
                .await
            }
            (None, None) => self.table_page(filter.status, limit, cursor).await,
        }
    }

    /// Reads the orders of an index a page at a time, keeping those that pass `status`, until
    /// the page is full or the index ends.
    async fn index_page<F, Fut>(
        &self,
        status: Option<OrderStatus>,
        limit: usize,
        cursor: Option<OrderId>,
        read: F,
    ) -> Result<OrderPage, OrderError>
    where
        F: Fn(Option<OrderId>, usize) -> Fut,
        Fut: Future<Output = Result<(Vec<OrderId>, Option<OrderId>), StoreError>>,
    {
        let repo = &self.repo;
        let mut items = Vec::with_capacity(limit);
        let mut after = cursor;
        loop {
            let (ids, next) = read(after, limit).await?;
            let rows: Vec<_> = stream::iter(ids.iter().copied())
                .map(|id| async move { repo.load(id).await })
                .buffered(READ_CONCURRENCY)
                .collect()
                .await;
            for (id, row) in ids.iter().zip(rows) {
                // An index row whose order is not written yet (a checkout in progress) is
                // skipped.
                if let Some(row) = row?
                    && status.is_none_or(|s| s == row.value.status())
                {
                    // Lists never show handoff codes; the customer reads it on the order itself.
                    items.push(row.value.without_handoff_code());
                }
                if items.len() == limit {
                    let last_of_page = next.is_none() && ids.last() == Some(id);
                    return Ok(OrderPage {
                        items,
                        next_cursor: (!last_of_page).then(|| id.to_string()),
                    });
                }
            }
            match next {
                Some(next) => after = Some(next),
                None => {
                    return Ok(OrderPage {
                        items,
                        next_cursor: None,
                    });
                }
            }
        }
    }

    /// Reads the whole order table a store page at a time, never more rows than the page still
    /// has room for, so no row past the cursor is skipped.
    async fn table_page(
        &self,
        status: Option<OrderStatus>,
        limit: usize,
        mut cursor: Option<String>,
    ) -> Result<OrderPage, OrderError> {
        let mut items = Vec::with_capacity(limit);
        loop {
            let room = limit - items.len();
            let (rows, next) =
                self.repo
                    .all_orders(cursor.take(), room)
                    .await
                    .map_err(|e| match e {
                        StoreError::Misuse(_) => OrderError::InvalidCursor,
                        other => other.into(),
                    })?;
            items.extend(
                rows.into_iter()
                    .filter(|o| status.is_none_or(|s| s == o.status())),
            );
            cursor = next;
            if items.len() >= limit || cursor.is_none() {
                return Ok(OrderPage {
                    items,
                    next_cursor: cursor,
                });
            }
        }
    }
}

fn id_cursor(cursor: Option<&str>) -> Result<Option<OrderId>, OrderError> {
    cursor
        .map(|c| c.parse::<OrderId>().map_err(|_| OrderError::InvalidCursor))
        .transpose()
}
