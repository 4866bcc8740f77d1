//! Orders in the store: one versioned row per order id, holding the whole [`Order`].

use super::catalog::id_key;
use super::typed::{Rows, Versioned};
use super::{SharedStore, StoreResult, Table, Version};
use crate::domain::ids::OrderId;
use crate::domain::order::Order;

/// Typed access to the `orders` table.
#[derive(Clone)]
pub struct OrderRepo {
    pub orders: Rows<Order>,
}

impl OrderRepo {
    pub fn new(store: SharedStore) -> Self {
        OrderRepo {
            orders: Rows::new(store, Table::Orders),
        }
    }

    pub async fn get(&self, id: OrderId) -> StoreResult<Option<Versioned<Order>>> {
        self.orders.get(&id_key(id)).await
    }

    /// Creates the order's row if it does not exist yet; on conflict, the row that is there.
    pub async fn insert(
        &self,
        order: &Order,
    ) -> StoreResult<Result<Version, Option<Versioned<Order>>>> {
        self.orders.insert(&id_key(order.id), order).await
    }
}
