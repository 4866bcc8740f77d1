//! The catalog service: vendors, categories, products, stock, search, images and reviews,
//! wired together so that every change reaches the search index and the caches.

pub mod categories;
pub mod directory;
pub mod indexing;
pub mod inventory;
pub mod lists;
pub mod products;
pub mod reviews;
pub mod vendors;
pub mod views;

use crate::error_code::ErrorCode;
use std::sync::Arc;

use crate::bus::{Delivery, SharedBus};
use crate::cache::SharedCache;
use crate::clock::Clock;
use crate::media::Media;
use crate::search::SearchIndex;
use crate::store::catalog::CatalogRepo;
use crate::store::typed::ModifyError;
use crate::store::{SharedStore, StoreError};

use directory::{VENDOR_TOPIC, VendorDirectory};
use indexing::{Indexer, Wait};

/// A product and the moment to re-index it.
type Recheck = (chrono::DateTime<chrono::Utc>, crate::domain::ids::ProductId);

/// Shortest time between two rounds of re-indexing: the stock changes of many checkouts on one
/// product (each reported here) then cost one refresh, not one each. The index commits changes
/// nobody waits for within [`crate::search::COMMIT_DELAY`] anyway.
const RECHECK_GAP: std::time::Duration = std::time::Duration::from_millis(200);

/// Re-indexes products when their stock changed or holds on them expire: keeps the earliest
/// moment per product (ordered, so finding what is due does not look at the rest) and sleeps
/// until the next one (waking at least every second, so a clock moved forward in tests is
/// noticed), with at least [`RECHECK_GAP`] between rounds.
async fn recheck_expired_holds(
    indexer: Indexer,
    views: Arc<views::ProductViews>,
    mut rechecks: tokio::sync::mpsc::UnboundedReceiver<Recheck>,
) {
    use std::collections::{BTreeSet, HashMap};
    use tokio::time::Instant;
    let mut due: HashMap<crate::domain::ids::ProductId, chrono::DateTime<chrono::Utc>> =
        HashMap::new();
    let mut queue: BTreeSet<Recheck> = BTreeSet::new();
    let mut next_round = Instant::now();
    loop {
        if Instant::now() >= next_round {
            let now = indexer.clock().now();
            let mut ready = Vec::new();
            while let Some(&(at, id)) = queue.first()
                && at <= now
            {
                queue.pop_first();
                due.remove(&id);
                ready.push(id);
            }
            if !ready.is_empty() {
                views.forget(&ready);
                if let Err(e) = indexer.refresh(&ready, Wait::No).await {
                    tracing::warn!(error = ?e, "products not re-indexed after their stock changed");
                }
                next_round = Instant::now() + RECHECK_GAP;
            }
        }
        let wait = queue
            .first()
            .and_then(|(at, _)| (*at - indexer.clock().now()).to_std().ok())
            .unwrap_or(std::time::Duration::from_secs(1))
            .min(std::time::Duration::from_secs(1))
            .max(next_round.saturating_duration_since(Instant::now()));
        tokio::select! {
            message = rechecks.recv() => match message {
                Some((at, id)) => {
                    // Just after the expiry, so the hold no longer counts.
                    let at = at + chrono::Duration::milliseconds(10);
                    match due.get(&id) {
                        Some(earlier) if *earlier <= at => {}
                        earlier => {
                            if let Some(earlier) = earlier {
                                queue.remove(&(*earlier, id));
                            }
                            due.insert(id, at);
                            queue.insert((at, id));
                        }
                    }
                }
                None => return,
            },
            () = tokio::time::sleep(wait) => {}
        }
    }
}
use inventory::InventoryService;
use reviews::ReviewService;

/// Why a catalog operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// No such object, or the caller may not know it exists.
    #[error("no such resource")]
    NotFound,
    /// The caller's role or standing does not allow this.
    #[error("{0}")]
    Forbidden(&'static str),
    /// A field broke a rule.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// A cursor this API never issued.
    #[error("the cursor is not one this API issued")]
    InvalidCursor,
    /// The request conflicts with the current state.
    #[error("{detail}")]
    Conflict { code: ErrorCode, detail: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl CatalogError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        CatalogError::Invalid {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

impl From<ModifyError<CatalogError>> for CatalogError {
    fn from(e: ModifyError<CatalogError>) -> Self {
        match e {
            ModifyError::Rejected(e) => e,
            ModifyError::Store(e) => CatalogError::Store(e),
        }
    }
}

/// Everything catalog handlers need, cheap to clone.
#[derive(Clone)]
pub struct Catalog {
    pub repo: CatalogRepo,
    pub indexer: Indexer,
    pub inventory: InventoryService,
    pub reviews: ReviewService,
    pub media: Media,
    pub cache: SharedCache,
    pub directory: VendorDirectory,
    pub clock: Clock,
    pub bus: SharedBus,
    /// Rendered public product pages, kept for a moment.
    pub views: Arc<views::ProductViews>,
    /// Products to re-index when a hold on them expires, consumed by [`Catalog::start`].
    rechecks: Arc<parking_lot::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Recheck>>>>,
    /// Background tasks started by [`Catalog::start`], stopped by [`Catalog::stop`].
    tasks: Arc<parking_lot::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

/// What a catalog is built from.
pub struct CatalogParts {
    pub store: SharedStore,
    pub search: SearchIndex,
    pub media: Media,
    pub cache: SharedCache,
    pub clock: Clock,
    pub bus: SharedBus,
}

impl Catalog {
    pub fn new(parts: CatalogParts) -> Self {
        let (recheck, rechecks) = tokio::sync::mpsc::unbounded_channel();
        let indexer = Indexer::new(parts.store.clone(), parts.search)
            .with_clock(parts.clock.clone())
            .with_rechecks(recheck.clone());
        let views = Arc::new(views::ProductViews::default());
        let stock_views = Arc::clone(&views);
        let stock_clock = parts.clock.clone();
        let inventory = InventoryService::new(
            parts.store.clone(),
            parts.clock.clone(),
            // Stock changes are re-indexed by the same background task as expiring holds (so
            // they are batched, and stop with the node): due now.
            Arc::new(move |ids| {
                stock_views.forget(&ids);
                let now = stock_clock.now();
                for id in ids {
                    // A closed channel only means the node is stopping.
                    let _ = recheck.send((now, id));
                }
            }),
        );
        let reviews = ReviewService::new(parts.store.clone(), parts.clock.clone(), indexer.clone());
        Catalog {
            repo: CatalogRepo::new(parts.store),
            indexer,
            inventory,
            reviews,
            media: parts.media,
            cache: parts.cache,
            directory: VendorDirectory::new(),
            clock: parts.clock,
            bus: parts.bus,
            views,
            rechecks: Arc::new(parking_lot::Mutex::new(Some(rechecks))),
            tasks: Arc::default(),
        }
    }

    /// Stops the background tasks, so that nothing holds the store once the node stops.
    pub fn stop(&self) {
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
    }

    /// Loads the vendor directory, follows vendor changes made on other nodes, and in the
    /// background brings the search index up to date and warms the cached lists.
    pub async fn start(&self) -> anyhow::Result<()> {
        let vendors = self.load_directory().await?;
        tracing::info!(vendors, "vendor directory loaded");
        let caught_up = self.indexer.catch_up().await?;
        tracing::info!(report = ?caught_up, "search index is current");
        match self.bus.subscribe(VENDOR_TOPIC).await {
            Ok(mut subscription) => {
                let catalog = self.clone();
                let follower = tokio::spawn(async move {
                    while let Some(delivery) = subscription.recv().await {
                        match delivery {
                            Delivery::Message(payload) => {
                                let id = std::str::from_utf8(&payload)
                                    .ok()
                                    .and_then(|s| s.parse().ok());
                                if let Some(id) = id
                                    && let Err(e) = catalog.reload_vendor(id).await
                                {
                                    tracing::warn!(error = %e, "vendor change not loaded");
                                }
                            }
                            Delivery::Lagged(_) => {
                                if let Err(e) = catalog.load_directory().await {
                                    tracing::warn!(error = %e, "vendor directory not reloaded");
                                }
                            }
                        }
                    }
                });
                self.tasks.lock().push(follower);
            }
            Err(e) => tracing::warn!(error = %e, "not following vendor changes of other nodes"),
        }
        if let Some(rechecks) = self.rechecks.lock().take() {
            let indexer = self.indexer.clone();
            let views = Arc::clone(&self.views);
            let task = tokio::spawn(recheck_expired_holds(indexer, views, rechecks));
            self.tasks.lock().push(task);
        }
        let catalog = self.clone();
        let warming = tokio::spawn(async move {
            catalog.warm_lists().await;
        });
        self.tasks.lock().push(warming);
        Ok(())
    }
}
