//! The catalog in the store: vendors (with a unique owner index), the category tree,
//! products and the admin-curated featured list.

use serde::{Deserialize, Serialize};

use super::typed::{Rows, Versioned};
use super::{Key, SharedStore, StoreResult, Table};
use crate::domain::catalog::{CategoryTree, Product, Vendor};
use crate::domain::ids::{ProductId, UserId, VendorId};

/// The key of a row alone in its partition, named by an id.
pub fn id_key(id: impl std::fmt::Display) -> Key {
    Key::single(id.to_string())
}

/// Key of the category tree's single row.
pub const CATEGORY_TREE: &str = "tree";
/// Key of the featured list's row in `catalog_settings`.
pub const FEATURED: &str = "featured";

/// Products an admin put on the front page, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeaturedList {
    pub products: Vec<ProductId>,
}

/// Typed access to the catalog tables.
#[derive(Clone)]
pub struct CatalogRepo {
    pub vendors: Rows<Vendor>,
    /// Vendor user id → the store they run (claimed with insert-if-absent: one store each).
    pub owners: Rows<VendorId>,
    pub categories: Rows<CategoryTree>,
    pub products: Rows<Product>,
    pub featured: Rows<FeaturedList>,
}

impl CatalogRepo {
    pub fn new(store: SharedStore) -> Self {
        CatalogRepo {
            vendors: Rows::new(store.clone(), Table::Vendors),
            owners: Rows::new(store.clone(), Table::VendorOwners),
            categories: Rows::new(store.clone(), Table::Categories),
            products: Rows::new(store.clone(), Table::Products),
            featured: Rows::new(store, Table::CatalogSettings),
        }
    }

    pub async fn vendor(&self, id: VendorId) -> StoreResult<Option<Versioned<Vendor>>> {
        self.vendors.get(&id_key(id)).await
    }

    pub async fn product(&self, id: ProductId) -> StoreResult<Option<Versioned<Product>>> {
        self.products.get(&id_key(id)).await
    }

    /// The store a vendor user runs, if any.
    pub async fn vendor_of(&self, owner: UserId) -> StoreResult<Option<VendorId>> {
        Ok(self.owners.get(&id_key(owner)).await?.map(|v| v.value))
    }

    /// The category tree (empty at version 0 before the first category).
    pub async fn category_tree(&self) -> StoreResult<Versioned<CategoryTree>> {
        Ok(self
            .categories
            .get(&Key::single(CATEGORY_TREE))
            .await?
            .unwrap_or(Versioned {
                version: 0,
                value: CategoryTree::default(),
            }))
    }

    pub async fn featured_list(&self) -> StoreResult<FeaturedList> {
        Ok(self
            .featured
            .get(&Key::single(FEATURED))
            .await?
            .map(|v| v.value)
            .unwrap_or_default())
    }
}
