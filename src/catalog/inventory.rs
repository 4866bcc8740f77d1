//! Stock and reservations over the store: every change is a compare-and-set of the product's
//! inventory row, so concurrent checkouts on any number of nodes never oversell.

use std::sync::Arc;

use crate::clock::Clock;
use crate::domain::ids::ProductId;
use crate::store::SharedStore;

/// Called with the products whose availability changed (to refresh the search index).
pub type StockListener = Arc<dyn Fn(Vec<ProductId>) + Send + Sync>;

/// Stock, adjustments and checkout holds.
#[derive(Clone)]
pub struct InventoryService {
    _store: SharedStore,
    _clock: Clock,
    _listener: StockListener,
}

impl InventoryService {
    pub fn new(store: SharedStore, clock: Clock, listener: StockListener) -> Self {
        InventoryService {
            _store: store,
            _clock: clock,
            _listener: listener,
        }
    }
}
