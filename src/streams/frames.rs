//! The JSON frames of the live streams.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::dispatch::UnassignedOrder;
use crate::domain::ids::{OrderId, VendorId};
use crate::domain::money::Money;
use crate::domain::order::{OrderEvent, OrderStatus};

/// What goes on the bus for every event, on `order.{order_id}`; the vendor's topic
/// `vendor.{vendor_id}.orders` carries the event as a [`FeedEntry`](crate::store::live::FeedEntry).
#[derive(Debug, Serialize)]
pub struct PublishedEvent<'a> {
    pub order_id: OrderId,
    pub vendor_id: VendorId,
    #[serde(flatten)]
    pub event: &'a OrderEvent,
}

/// A courier's position as a watcher sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LocationFrame {
    pub lat: f64,
    pub lng: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heading_deg: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed_mps: Option<f64>,
    pub recorded_at: DateTime<Utc>,
    /// Seconds until the drop-off, from the remaining route over recent speed.
    pub eta_s: u32,
}

/// A [`LocationFrame`] as it goes out on an order's live topic: `{"type":"location", …}`.
#[derive(Debug, Serialize)]
pub struct LocationMessage<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    frame: &'a LocationFrame,
}

impl<'a> From<&'a LocationFrame> for LocationMessage<'a> {
    fn from(frame: &'a LocationFrame) -> Self {
        LocationMessage {
            kind: "location",
            frame,
        }
    }
}

/// A place on an offer or assignment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stop {
    pub lat: f64,
    pub lng: f64,
    pub address: String,
}

/// What the courier is told about an order on offer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OfferSummary {
    pub vendor_name: String,
    pub items: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<Money>,
}

/// A message to a courier's session (topic `courier.{id}.inbox`), written by the dispatcher
/// and the order actor, read by the session (which passes it on to the courier as it is).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum InboxFrame {
    Offer {
        offer_id: Uuid,
        order_id: OrderId,
        summary: OfferSummary,
        pickup: Stop,
        dropoff: Stop,
        distance_m: u32,
        expires_at: DateTime<Utc>,
    },
    OfferWithdrawn {
        offer_id: Uuid,
    },
    Assignment {
        order_id: OrderId,
        pickup: Stop,
        dropoff: Stop,
    },
    /// The order was cancelled: the delivery leaves the courier's hands.
    OrderCancelled {
        order_id: OrderId,
    },
}

/// The first frame of an order watch (`snapshot`).
#[derive(Debug, Serialize)]
pub struct WatchSnapshot {
    pub order_id: OrderId,
    pub status: OrderStatus,
    pub seq: u64,
    pub eta_s: Option<u32>,
    pub courier: Option<LocationFrame>,
}

/// An order event as a watcher gets it (`event`).
#[derive(Debug, Serialize)]
pub struct WatchEvent<'a> {
    pub order_id: OrderId,
    #[serde(flatten)]
    pub event: &'a OrderEvent,
}

/// The first frame of a vendor's feed (`hello`): the feed's head.
#[derive(Debug, Serialize)]
pub struct VendorHello {
    pub vendor_id: VendorId,
    pub seq: u64,
}

/// The first frame of a user's notification stream (`hello`): how many are unread.
#[derive(Debug, Serialize)]
pub struct NotificationsHello {
    pub unread: usize,
}

/// A courier's request done (`ack`), by what it answers (`of`). Location acknowledgements,
/// the most frequent frame of all, are written by [`location_ack`].
#[derive(Debug, Serialize)]
#[serde(tag = "of", rename_all = "snake_case")]
pub enum CourierAck {
    GoOnline { online: bool },
    GoOffline { online: bool },
    OfferResponse { offer_id: Uuid },
    PickedUp { order_id: OrderId },
    Delivered { order_id: OrderId },
}

/// `{"type":"ack","of":"location","accepted":…,"dropped":…}`, written without building a JSON
/// value first.
pub fn location_ack(accepted: usize, dropped: usize) -> String {
    format!(r#"{{"type":"ack","of":"location","accepted":{accepted},"dropped":{dropped}}}"#)
}

/// One cell of the operations picture.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct CellOps {
    /// H3 cell index (resolution 7) as hex.
    pub cell: String,
    pub available_couriers: u32,
    pub busy_couriers: u32,
    pub open_orders: u32,
}

/// The operations picture admins watch (`ops`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OpsPicture {
    pub at: chrono::DateTime<chrono::Utc>,
    pub cells: Vec<CellOps>,
    pub unassigned: Vec<UnassignedOrder>,
}
