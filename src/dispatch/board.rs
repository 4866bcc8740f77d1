//! The latest courier position of each tracked order on this node, for the snapshot a watcher
//! gets on connect and for REST tracking. Filled by the courier actors of this node and by
//! the watchers of this node from the bus (couriers connected elsewhere); an order leaves the
//! board when it is delivered or closed.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::domain::ids::OrderId;
use crate::streams::frames::LocationFrame;

/// Most orders the board remembers; beyond it the oldest positions are forgotten (they come
/// back with the courier's next ping).
const CAPACITY: usize = 200_000;

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
