//! Orders: one vendor's share of a checkout, and the states it moves through.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

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

/// One product line of an order, with the price it was sold at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderLine {
    #[schema(value_type = String, format = Uuid)]
    pub product_id: ProductId,
    pub title: String,
    pub quantity: u32,
    pub unit_price: Money,
}

/// An order as stored.
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
}
