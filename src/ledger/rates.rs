//! The commission and courier-fee rates a checkout freezes on each order: a store's own when
//! an admin set them, else the platform's default (a live platform setting, see
//! [`crate::settings`]). A store's own are read through a short cache, so checkout does not
//! pay a store read per order; a change is in force on every node within [`FRESH_FOR`].

use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::domain::ids::VendorId;
use crate::domain::ledger::Rates;
use crate::settings::SettingsView;
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
    live: SettingsView,
    cache: DashMap<VendorId, (Option<Rates>, Instant)>,
}

impl RatesBook {
    pub fn new(repo: LedgerRepo, live: SettingsView) -> Self {
        RatesBook {
            repo,
            live,
            cache: DashMap::new(),
        }
    }

    async fn read(&self, scope: VendorId) -> StoreResult<Option<Rates>> {
        if let Some(hit) = self.cache.get(&scope)
            && hit.1.elapsed() < FRESH_FOR
        {
            return Ok(hit.0);
        }
        let found = self.repo.rates(Some(scope)).await?;
        if self.cache.len() >= MAX_CACHED {
            self.cache.clear();
        }
        self.cache.insert(scope, (found, Instant::now()));
        Ok(found)
    }

    /// The platform's default rates now.
    pub fn default_rates(&self) -> Rates {
        self.live.get().rates()
    }

    /// The rates an order of `store` is placed at now.
    pub async fn for_store(&self, store: VendorId) -> StoreResult<Rates> {
        Ok(self
            .read(store)
            .await?
            .unwrap_or_else(|| self.default_rates()))
    }

    /// A store's own rates (none: it has the default).
    pub async fn store_rates(&self, store: VendorId) -> StoreResult<Option<Rates>> {
        self.repo.rates(Some(store)).await
    }

    /// Sets a store's own rates; `None` removes them (the store follows the default again).
    pub async fn set(&self, store: VendorId, rates: Option<Rates>) -> StoreResult<()> {
        self.repo.set_rates(Some(store), rates).await?;
        self.cache.remove(&store);
        Ok(())
    }
}
