//! Stock in the store: one versioned inventory row per product, and the append-only history of
//! its adjustments (partition = product id, clustering = adjustment id, a UUIDv7 string, so a
//! partition lists in the order the adjustments were made).

use super::typed::{Rows, Versioned};
use super::{Key, ScanRange, SharedStore, StoreResult, Table, decode, encode};
use crate::domain::ids::ProductId;
use crate::domain::inventory::{Adjustment, Inventory};

/// Key of a product's inventory row.
pub fn inventory_key(product: ProductId) -> Key {
    super::catalog::id_key(product)
}

/// Key of one adjustment in the history table.
pub fn log_key(product: ProductId, adjustment_id: &str) -> Key {
    Key::new(product.to_string(), adjustment_id)
}

/// Typed access to the inventory tables.
#[derive(Clone)]
pub struct InventoryRepo {
    pub rows: Rows<Inventory>,
}

impl InventoryRepo {
    pub fn new(store: SharedStore) -> Self {
        InventoryRepo {
            rows: Rows::new(store, Table::Inventory),
        }
    }

    fn store(&self) -> &SharedStore {
        self.rows.store()
    }

    /// The product's inventory row, if it was ever stocked.
    pub async fn get(&self, product: ProductId) -> StoreResult<Option<Versioned<Inventory>>> {
        self.rows.get(&inventory_key(product)).await
    }

    /// Writes adjustments into the history. Rows are keyed by adjustment id, so writing one
    /// again replaces it with itself.
    pub async fn record(&self, product: ProductId, adjustments: &[Adjustment]) -> StoreResult<()> {
        if adjustments.is_empty() {
            return Ok(());
        }
        let rows = adjustments
            .iter()
            .map(|a| Ok((log_key(product, &a.id), encode(Table::InventoryLog, a)?)))
            .collect::<StoreResult<Vec<_>>>()?;
        self.store().put(Table::InventoryLog, rows, None).await
    }

    /// Up to `limit` recorded adjustments with ids after `after`, oldest first, and the cursor
    /// of the following page.
    pub async fn history(
        &self,
        product: ProductId,
        after: Option<String>,
        limit: usize,
    ) -> StoreResult<(Vec<Adjustment>, Option<String>)> {
        let range = ScanRange {
            after,
            limit,
            ..ScanRange::default()
        };
        let page = self
            .store()
            .scan(Table::InventoryLog, &product.to_string(), range)
            .await?;
        let adjustments = page
            .rows
            .iter()
            .map(|row| decode(Table::InventoryLog, &row.data))
            .collect::<StoreResult<Vec<Adjustment>>>()?;
        Ok((adjustments, page.next))
    }
}
