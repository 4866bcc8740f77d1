//! The latest courier position of each tracked order on this node, for the snapshot a watcher
//! gets on connect and for REST tracking. Filled by the courier actors of this node and by
//! the watchers of this node from the bus (couriers connected elsewhere); an order leaves the
//! board when it is delivered or closed.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::domain::ids::OrderId;

/// Most orders the board remembers; beyond it the oldest positions are forgotten (they come
/// back with the courier's next ping).
const CAPACITY: usize = 200_000;

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

/// Latest position per order; cheap to clone.
#[derive(Clone, Default)]
pub struct Board {
    frames: Arc<Mutex<HashMap<OrderId, LocationFrame>>>,
}

impl Board {
    pub fn new() -> Self {
        Board::default()
    }

    /// Keeps `frame` unless the board already holds a newer one.
    pub fn set(&self, order: OrderId, frame: LocationFrame) {
        let mut frames = self.frames.lock();
        if frames.len() >= CAPACITY && !frames.contains_key(&order) {
            let oldest = frames
                .iter()
                .min_by_key(|(_, f)| f.recorded_at)
                .map(|(id, _)| *id);
            if let Some(oldest) = oldest {
                frames.remove(&oldest);
            }
        }
        match frames.get_mut(&order) {
            Some(known) if known.recorded_at > frame.recorded_at => {}
            Some(known) => *known = frame,
            None => {
                frames.insert(order, frame);
            }
        }
    }

    pub fn get(&self, order: OrderId) -> Option<LocationFrame> {
        self.frames.lock().get(&order).cloned()
    }

    pub fn remove(&self, order: OrderId) {
        self.frames.lock().remove(&order);
    }
}
