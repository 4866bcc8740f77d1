//! The analytics service: keeps the rollups current from the order journal and the courier
//! journal, rebuilds them from the event logs, and answers the reports (a store's sales and
//! top products, the platform's, couriers' performance, supply and demand per H3 cell).
//!
//! It is a consumer of the order journal like the ledger, with its own cursor and lease (the
//! consumer `analytics`): one node at a time folds events, and the head of the analytics
//! tables refuses any other writer. Reports read only rollup rows: a year of a store's
//! sales is 365 rows of one partition, its top products 12.

pub mod consumer;
pub mod rebuild;
pub mod reports;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::domain::ids::VendorId;
use crate::domain::ledger::Rates;
use crate::store::analytics::{AnalyticsRepo, ApplyError};
use crate::store::catalog::CatalogRepo;
use crate::store::courier_journal::CourierJournal;
use crate::store::journal::Journal;
use crate::store::orders::OrderRepo;
use crate::store::{SharedStore, StoreError};

/// How often a node looks for new events.
pub const ROUND: Duration = Duration::from_millis(500);
/// How old the generation reports read may be: after a rebuild switches generations, no
/// node reads the previous one later than this.
pub const GENERATION_FRESH: Duration = Duration::from_secs(1);

/// Why an analytics call failed.
#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("another node is applying analytics")]
    Lost,
}

impl From<ApplyError> for AnalyticsError {
    fn from(e: ApplyError) -> Self {
        match e {
            ApplyError::Lost => AnalyticsError::Lost,
            ApplyError::Store(e) => AnalyticsError::Store(e),
        }
    }
}

/// The analytics service; cheap to clone.
#[derive(Clone)]
pub struct Analytics {
    inner: Arc<Inner>,
}

struct Inner {
    repo: AnalyticsRepo,
    journal: Journal,
    couriers: CourierJournal,
    orders: OrderRepo,
    catalog: CatalogRepo,
    /// Rates for orders placed before rates were frozen on orders (as the ledger shares
    /// them).
    default_rates: Rates,
    node: Uuid,
    /// The generation of rollup rows reports read, and when it was read from the head (every
    /// round on a node that folds; on a node that only answers, by reports at most
    /// [`GENERATION_FRESH`] apart).
    generation: parking_lot::Mutex<Option<(u64, Instant)>>,
    /// Each store's pickup cell at resolution 8: a store's location changes rarely, and an
    /// order's demand is counted where its store was when analytics first read the order.
    cells: parking_lot::Mutex<HashMap<VendorId, Option<String>>>,
}

impl Analytics {
    pub fn new(store: SharedStore, default_rates: Rates, node: Uuid) -> Self {
        Analytics {
            inner: Arc::new(Inner {
                repo: AnalyticsRepo::new(store.clone()),
                journal: Journal::new(store.clone()),
                couriers: CourierJournal::new(store.clone()),
                orders: OrderRepo::new(store.clone()),
                catalog: CatalogRepo::new(store),
                default_rates,
                node,
                generation: parking_lot::Mutex::new(None),
                cells: parking_lot::Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The courier journal, for the places couriers act to write to.
    pub fn courier_journal(&self) -> CourierJournal {
        self.inner.couriers.clone()
    }

    /// Runs rounds until the service is gone. `get` hands out the service for one round at a
    /// time, so the loop never keeps the node alive.
    pub fn start<F>(get: F) -> tokio::task::JoinHandle<()>
    where
        F: Fn() -> Option<Analytics> + Send + 'static,
    {
        tokio::spawn(async move {
            loop {
                let Some(analytics) = get() else { return };
                match analytics.round().await {
                    Ok(_) | Err(AnalyticsError::Lost) => {}
                    Err(e) => tracing::warn!(error = %e, "analytics round failed; trying again"),
                }
                drop(analytics);
                tokio::time::sleep(ROUND).await;
            }
        })
    }

    /// The generation reports read: the head's, read again when older than
    /// [`GENERATION_FRESH`].
    async fn generation(&self) -> Result<u64, AnalyticsError> {
        if let Some((generation, at)) = *self.inner.generation.lock()
            && at.elapsed() < GENERATION_FRESH
        {
            return Ok(generation);
        }
        let generation = self
            .inner
            .repo
            .current_head()
            .await?
            .map_or(1, |h| h.value.generation);
        self.know_generation(generation);
        Ok(generation)
    }

    /// Notes the generation the head names now.
    fn know_generation(&self, generation: u64) {
        *self.inner.generation.lock() = Some((generation, Instant::now()));
    }

    /// The pickup cell (resolution 8) of `store`.
    async fn store_cell(&self, store: VendorId) -> Result<Option<String>, AnalyticsError> {
        if let Some(cell) = self.inner.cells.lock().get(&store) {
            return Ok(cell.clone());
        }
        let cell = self
            .inner
            .catalog
            .vendor(store)
            .await?
            .map(|v| v.value.location.cell_at(h3o::Resolution::Eight).to_string());
        self.inner.cells.lock().insert(store, cell.clone());
        Ok(cell)
    }
}
