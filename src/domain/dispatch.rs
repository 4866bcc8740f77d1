//! An order waiting for a courier, as the dispatch queue stores it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::ids::{OrderId, UserId, VendorId};

/// Where an order's dispatch stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum DispatchState {
    Waiting {
        next_at: DateTime<Utc>,
    },
    Offered {
        offer_id: Uuid,
        courier: UserId,
        expires_at: DateTime<Utc>,
    },
    Assigning {
        courier: UserId,
        /// When the courier accepted; the loop finishes the assignment only if it is still
        /// unfinished a while later (its own node crashed), never alongside it.
        #[serde(default)]
        since: Option<DateTime<Utc>>,
    },
}

/// An order waiting for a courier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DispatchRecord {
    pub order_id: OrderId,
    pub vendor_id: VendorId,
    pub since: DateTime<Utc>,
    /// Offers made so far, plus rounds that found nobody.
    pub attempts: u32,
    /// Couriers who declined or let the offer lapse; not asked again for this order.
    #[serde(default)]
    pub declined: Vec<UserId>,
    pub state: DispatchState,
}

impl DispatchRecord {
    /// The record after `courier` turned the order down (or let the offer lapse): they are not
    /// asked again, and the order looks for the next courier at once.
    pub fn declined_by(mut self, courier: UserId, now: DateTime<Utc>) -> Self {
        self.declined.push(courier);
        self.state = DispatchState::Waiting { next_at: now };
        self
    }
}

/// An order nobody has taken yet, for admins.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UnassignedOrder {
    #[schema(value_type = String, format = Uuid)]
    pub order_id: OrderId,
    #[schema(value_type = String, format = Uuid)]
    pub vendor_id: VendorId,
    pub since: DateTime<Utc>,
    pub attempts: u32,
}
