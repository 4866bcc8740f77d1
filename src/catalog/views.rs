//! Rendered product pages, kept for a moment.
//!
//! `GET /products/{id}` is the hottest read of a marketplace. Each render reads the product,
//! its stock and its rating from the store; the result is kept here, already serialised, for
//! [`VIEW_TTL`]. The node that changes a product, its stock or its store drops the entry at
//! once; other nodes see the change within the TTL. Only what everyone may see is kept: the
//! store's owner and admins always get a fresh render.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;

use crate::domain::ids::{ProductId, UserId};

/// How long a rendered page is served without re-reading the store.
pub const VIEW_TTL: Duration = Duration::from_secs(2);
/// Most pages kept; a full shard is emptied rather than grown.
pub const MAX_VIEWS: usize = 65_536;

const SHARDS: usize = 32;

/// A rendered page: who owns the product, and the public JSON (`None`: not listed, 404).
#[derive(Debug, Clone)]
pub struct View {
    pub owner: UserId,
    pub public: Option<Bytes>,
}

/// Rendered product pages by id.
pub struct ProductViews {
    shards: Vec<Mutex<HashMap<ProductId, (View, Instant)>>>,
}

impl Default for ProductViews {
    fn default() -> Self {
        ProductViews {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

impl ProductViews {
    fn shard(&self, id: ProductId) -> &Mutex<HashMap<ProductId, (View, Instant)>> {
        // UUIDv7: the low bytes are random.
        let low = id.as_uuid().as_u128() as usize;
        &self.shards[low % SHARDS]
    }

    /// The page, if rendered less than [`VIEW_TTL`] ago.
    pub fn get(&self, id: ProductId) -> Option<View> {
        let shard = self.shard(id).lock();
        shard
            .get(&id)
            .filter(|(_, at)| at.elapsed() < VIEW_TTL)
            .map(|(view, _)| view.clone())
    }

    pub fn put(&self, id: ProductId, view: View) {
        let mut shard = self.shard(id).lock();
        if shard.len() >= MAX_VIEWS / SHARDS && !shard.contains_key(&id) {
            shard.clear();
        }
        shard.insert(id, (view, Instant::now()));
    }

    pub fn forget(&self, ids: &[ProductId]) {
        for id in ids {
            self.shard(*id).lock().remove(id);
        }
    }

    pub fn forget_all(&self) {
        for shard in &self.shards {
            shard.lock().clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_are_kept_briefly_and_forgotten_on_demand() {
        let views = ProductViews::default();
        let id = ProductId::new();
        let view = View {
            owner: UserId::new(),
            public: Some(Bytes::from_static(b"{}")),
        };
        views.put(id, view);
        assert!(views.get(id).is_some());
        views.forget(&[id]);
        assert!(views.get(id).is_none());
        views.put(
            id,
            View {
                owner: UserId::new(),
                public: None,
            },
        );
        views.forget_all();
        assert!(views.get(id).is_none());
    }
}
