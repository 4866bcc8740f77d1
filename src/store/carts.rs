//! Carts in the store: one versioned row per cart id.

use std::time::Duration;

use super::{Cas, Key, SharedStore, StoreResult, Table, Version, decode, encode};
use crate::domain::cart::Cart;
use crate::domain::ids::CartId;

/// A cart nobody touched for this long is forgotten (its row expires).
pub const CART_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

pub use super::typed::Versioned;

/// Typed access to the `carts` table.
#[derive(Clone)]
pub struct CartRepo {
    store: SharedStore,
}

impl CartRepo {
    pub fn new(store: SharedStore) -> Self {
        CartRepo { store }
    }

    /// The stored cart, or an empty one at version 0.
    #[tracing::instrument(skip(self), fields(cart_id = %id))]
    pub async fn load(&self, id: CartId) -> StoreResult<Versioned<Cart>> {
        match self.store.get(Table::Carts, &key(id)).await? {
            Some(row) => Ok(Versioned {
                version: row.version,
                value: decode(Table::Carts, &row.data)?,
            }),
            None => Ok(Versioned {
                version: 0,
                value: Cart::default(),
            }),
        }
    }

    /// Saves `cart` if the stored version is still `expected`. On a conflict, returns the cart
    /// as it is now so the caller can re-apply its change.
    #[tracing::instrument(skip(self, cart), fields(cart_id = %id))]
    pub async fn save(
        &self,
        id: CartId,
        expected: Version,
        cart: &Cart,
    ) -> StoreResult<Result<Version, Versioned<Cart>>> {
        let data = encode(Table::Carts, cart)?;
        let outcome = if expected == 0 {
            self.store
                .insert(Table::Carts, &key(id), data, Some(CART_TTL))
                .await?
        } else {
            self.store
                .update(Table::Carts, &key(id), expected, data, Some(CART_TTL))
                .await?
        };
        match outcome {
            Cas::Applied(version) => Ok(Ok(version)),
            Cas::Conflict(Some(row)) => Ok(Err(Versioned {
                version: row.version,
                value: decode(Table::Carts, &row.data)?,
            })),
            Cas::Conflict(None) => Ok(Err(Versioned {
                version: 0,
                value: Cart::default(),
            })),
        }
    }
}

fn key(id: CartId) -> Key {
    Key::single(id.to_string())
}
