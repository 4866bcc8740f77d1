//! The commission and courier-fee rates a checkout freezes on each order: a store's own when
//! an admin set them, else the platform's default (set by an admin, or from the environment
//! until one is). Read through a short cache, so checkout does not pay a store read per order;
//! a change is in force on every node within [`FRESH_FOR`].

use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::domain::ids::VendorId;
use crate::domain::ledger::Rates;
use crate::store::StoreResult;
use crate::store::ledger::LedgerRepo;

/// How long a rate read stays in the cache.
pub const FRESH_FOR: Duration = Duration::from_secs(2);

/// Largest number of cached entries before the cache is emptied (stores are few; this only
/// bounds memory against a flood of distinct ids).
const MAX_CACHED: usize = 100_000;

/// The rates, with their cache.
pub struct RatesBook {
    repo: LedgerRepo,
    configured: Rates,
    cache: DashMap<Option<VendorId>, (Option<Rates>, Instant)>,
}

impl RatesBook {
    pub fn new(repo: LedgerRepo, configured: Rates) -> Self {
        RatesBook {
            repo,
            configured,
            cache: DashMap::new(),
        }
    }

    async fn read(&self, scope: Option<VendorId>) -> StoreResult<Option<Rates>> {
        if let Some(hit) = self.cache.get(&scope)
            && hit.1.elapsed() < FRESH_FOR
        {
            return Ok(hit.0);
        }
        let found = self.repo.rates(scope).await?;
        if self.cache.len() >= MAX_CACHED {
            self.cache.clear();
        }
        self.cache.insert(scope, (found, Instant::now()));
        Ok(found)
    }

    /// The platform's default rates now.
    pub async fn default_rates(&self) -> StoreResult<Rates> {
        Ok(self.read(None).await?.unwrap_or(self.configured))
    }

    /// The rates an order of `store` is placed at now.
    pub async fn for_store(&self, store: VendorId) -> StoreResult<Rates> {
        match self.read(Some(store)).await? {
            Some(rates) => Ok(rates),
            None => self.default_rates().await,
        }
    }

    /// A store's own rates (none: it has the default).
    pub async fn store_rates(&self, store: VendorId) -> StoreResult<Option<Rates>> {
        self.repo.rates(Some(store)).await
    }

    /// Sets the default (`store` none) or a store's rates; `None` removes a store's own.
    pub async fn set(&self, store: Option<VendorId>, rates: Option<Rates>) -> StoreResult<()> {
        self.repo.set_rates(store, rates).await?;
        self.cache.remove(&store);
        Ok(())
    }
}
