//! The live streams' names and wire frames, in one place: the bus topics sessions and actors
//! publish and subscribe to, and the JSON frames that travel on them and on the WebSockets.

pub mod frames;

use crate::domain::ids::{OrderId, UserId, VendorId};

/// The topic every node's courier index listens to.
pub const PRESENCE_TOPIC: &str = "couriers.presence";

/// The live topic of one order.
pub fn order_topic(id: OrderId) -> String {
    format!("order.{id}")
}

/// The live topic of one order's courier position (location frames).
pub fn order_live_topic(id: OrderId) -> String {
    format!("order.{id}.live")
}

/// The live topic of a vendor's order feed.
pub fn vendor_topic(id: VendorId) -> String {
    format!("vendor.{id}.orders")
}

/// The live topic of a user's in-app notifications.
pub fn notifications_topic(user: UserId) -> String {
    format!("user.{user}.notifications")
}

/// The topic of a courier's session.
pub fn inbox_topic(courier: UserId) -> String {
    format!("courier.{courier}.inbox")
}
