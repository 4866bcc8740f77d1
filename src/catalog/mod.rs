//! The catalog service: vendors, categories, products, stock, search, images and reviews,
//! wired together so that every change reaches the search index and the caches.

pub mod indexing;
pub mod inventory;
pub mod reviews;

use std::sync::Arc;

use crate::bus::SharedBus;
use crate::clock::Clock;
use crate::media::Media;
use crate::search::SearchIndex;
use crate::store::SharedStore;
use crate::store::catalog::CatalogRepo;

use indexing::{Indexer, Wait};
use inventory::InventoryService;
use reviews::ReviewService;

/// Everything catalog handlers need, cheap to clone.
#[derive(Clone)]
pub struct Catalog {
    pub repo: CatalogRepo,
    pub indexer: Indexer,
    pub inventory: InventoryService,
    pub reviews: ReviewService,
    pub media: Media,
    pub clock: Clock,
    pub bus: SharedBus,
}

/// What a catalog is built from.
pub struct CatalogParts {
    pub store: SharedStore,
    pub search: SearchIndex,
    pub media: Media,
    pub clock: Clock,
    pub bus: SharedBus,
}

impl Catalog {
    pub fn new(parts: CatalogParts) -> Self {
        let indexer = Indexer::new(parts.store.clone(), parts.search);
        let stock_indexer = indexer.clone();
        let inventory = InventoryService::new(
            parts.store.clone(),
            parts.clock.clone(),
            Arc::new(move |ids| {
                let indexer = stock_indexer.clone();
                tokio::spawn(async move {
                    if let Err(e) = indexer.refresh(&ids, Wait::No).await {
                        tracing::warn!(error = ?e, "search index not refreshed after a stock change");
                    }
                });
            }),
        );
        let reviews = ReviewService::new(parts.store.clone(), parts.clock.clone(), indexer.clone());
        Catalog {
            repo: CatalogRepo::new(parts.store),
            indexer,
            inventory,
            reviews,
            media: parts.media,
            clock: parts.clock,
            bus: parts.bus,
        }
    }
}
