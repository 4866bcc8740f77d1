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
    /// Couriers who declined or let the offer lapse; not asked again for this order while
    /// anyone else can be (see [`DispatchRecord::asks_everyone_again`]).
    #[serde(default)]
    pub declined: Vec<UserId>,
    /// When the last of them did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_declined_at: Option<DateTime<Utc>>,
    pub state: DispatchState,
}

/// How long after the last decline an order that nobody else can take is offered again to
/// the couriers who turned it down (their day moved on: they may be free now).
pub const ASK_AGAIN_AFTER: chrono::Duration = chrono::Duration::minutes(2);

impl DispatchRecord {
    /// The record after `courier` turned the order down (or let the offer lapse): they are not
    /// asked again for now, and the order looks for the next courier at once.
    pub fn declined_by(mut self, courier: UserId, now: DateTime<Utc>) -> Self {
        self.declined.push(courier);
        self.last_declined_at = Some(now);
        self.state = DispatchState::Waiting { next_at: now };
        self
    }

    /// Whether an order that found nobody should forget who declined it: someone did, and
    /// the last of them [`ASK_AGAIN_AFTER`] ago or longer (a row written without the time, by
    /// an older node, counts from when the order started waiting).
    pub fn asks_everyone_again(&self, now: DateTime<Utc>) -> bool {
        !self.declined.is_empty()
            && now - self.last_declined_at.unwrap_or(self.since) >= ASK_AGAIN_AFTER
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn couriers_who_declined_are_asked_again_two_minutes_after_the_last_of_them() {
        let now = Utc::now();
        let record = DispatchRecord {
            order_id: OrderId::new(),
            vendor_id: VendorId::new(),
            since: now,
            attempts: 1,
            declined: Vec::new(),
            last_declined_at: None,
            state: DispatchState::Waiting { next_at: now },
        };
        assert!(!record.asks_everyone_again(now + ASK_AGAIN_AFTER));
        let first = record.declined_by(UserId::new(), now);
        let both = first.declined_by(UserId::new(), now + chrono::Duration::seconds(30));
        let last = now + chrono::Duration::seconds(30);
        assert!(!both.asks_everyone_again(last + ASK_AGAIN_AFTER - chrono::Duration::seconds(1)));
        assert!(both.asks_everyone_again(last + ASK_AGAIN_AFTER));
    }
}
