//! Featured (admin-curated) and popular (recent sales, then rating) products, served through
//! cache-aside: the rendered JSON is cached for an hour and dropped whenever a product, a
//! vendor or the featured list changes.

use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;

use super::{Catalog, CatalogError};
use crate::domain::ids::ProductId;
use crate::search::{SearchHit, SearchQuery, Sort};
use crate::store::Key;
use crate::store::catalog::{FEATURED, FeaturedList};
use crate::store::typed::Change;

/// How long a cached list lives without a change.
pub const LIST_TTL: Duration = Duration::from_secs(3600);
/// Most products on the featured list.
pub const MAX_FEATURED: usize = 50;
/// Products on the popular list.
pub const POPULAR_SIZE: usize = 20;

const FEATURED_KEY: &str = "catalog:featured:v1";
const POPULAR_KEY: &str = "catalog:popular:v1";

/// A list of products as served.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProductList {
    pub items: Vec<SearchHit>,
}

impl Catalog {
    /// The featured list as JSON, from the cache or freshly built.
    pub async fn featured_json(&self) -> Result<Bytes, CatalogError> {
        if let Some(hit) = self.cache.get(FEATURED_KEY).await {
            return Ok(hit);
        }
        let ids = self.repo.featured_list().await?.products;
        let mut items = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(product) = self.repo.product(id).await? else {
                continue;
            };
            let product = product.value;
            let Some(vendor) = self.directory.get(product.vendor_id) else {
                continue;
            };
            if !product.is_listed(vendor.is_active()) {
                continue;
            }
            let (available, rating) = self.stock_and_rating(id).await?;
            items.push(SearchHit {
                id,
                title: product.title,
                vendor_id: vendor.id,
                vendor_name: vendor.name,
                category_id: product.category_id,
                price: product.price,
                available,
                rating,
                visibility: product.visibility,
                thumbnail_key: product.images.first().map(|i| i.thumbnail_key.clone()),
                created_at: product.created_at,
                score: 0.0,
            });
        }
        self.render_and_cache(FEATURED_KEY, &ProductList { items })
            .await
    }

    /// The popular list as JSON, from the cache or freshly built.
    pub async fn popular_json(&self) -> Result<Bytes, CatalogError> {
        if let Some(hit) = self.cache.get(POPULAR_KEY).await {
            return Ok(hit);
        }
        let page = self
            .indexer
            .search
            .search(SearchQuery {
                sort: Sort::Popular,
                limit: POPULAR_SIZE,
                ..SearchQuery::default()
            })
            .await
            .map_err(|e| CatalogError::Internal(anyhow::anyhow!(e)))?;
        self.render_and_cache(POPULAR_KEY, &ProductList { items: page.items })
            .await
    }

    async fn render_and_cache(&self, key: &str, list: &ProductList) -> Result<Bytes, CatalogError> {
        let json =
            Bytes::from(serde_json::to_vec(list).map_err(|e| CatalogError::Internal(e.into()))?);
        self.cache.set(key, json.clone(), LIST_TTL).await;
        Ok(json)
    }

    /// Replaces the featured list (admins).
    pub async fn set_featured(&self, products: Vec<ProductId>) -> Result<(), CatalogError> {
        if products.len() > MAX_FEATURED {
            return Err(CatalogError::invalid(
                "product_ids",
                format!("at most {MAX_FEATURED} featured products"),
            ));
        }
        let mut unique = products.clone();
        unique.sort();
        unique.dedup();
        if unique.len() != products.len() {
            return Err(CatalogError::invalid(
                "product_ids",
                "a product is listed twice",
            ));
        }
        for id in &products {
            if self.repo.product(*id).await?.is_none() {
                return Err(CatalogError::invalid(
                    "product_ids",
                    format!("no such product {id}"),
                ));
            }
        }
        self.repo
            .featured
            .modify(&Key::single(FEATURED), |_| {
                Ok::<_, CatalogError>(Change::Put(
                    FeaturedList {
                        products: products.clone(),
                    },
                    (),
                ))
            })
            .await?;
        self.invalidate_lists().await;
        Ok(())
    }

    /// Drops the cached lists (every node, when the cache is Redis).
    pub async fn invalidate_lists(&self) {
        self.cache.delete(&[FEATURED_KEY, POPULAR_KEY]).await;
    }

    /// Builds both lists so the first visitors find them cached.
    pub async fn warm_lists(&self) {
        if let Err(e) = self.featured_json().await {
            tracing::warn!(error = %e, "featured list not warmed");
        }
        if let Err(e) = self.popular_json().await {
            tracing::warn!(error = %e, "popular list not warmed");
        }
    }
}
