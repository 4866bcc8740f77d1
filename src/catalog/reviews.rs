//! Reviews of products and vendors by customers whose order was delivered, and the rating
//! aggregates they feed.

use crate::clock::Clock;
use crate::store::SharedStore;

use super::indexing::Indexer;

/// Writing, listing, reporting and moderating reviews.
#[derive(Clone)]
pub struct ReviewService {
    _store: SharedStore,
    _clock: Clock,
    _indexer: Indexer,
}

impl ReviewService {
    pub fn new(store: SharedStore, clock: Clock, indexer: Indexer) -> Self {
        ReviewService {
            _store: store,
            _clock: clock,
            _indexer: indexer,
        }
    }
}
