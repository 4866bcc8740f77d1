//! Keeps the search index in step with the store: builds [`ProductDoc`]s from the product,
//! its vendor, the category tree, its inventory and its rating; rebuilds the whole index
//! (`hexmarket reindex`); and at start catches up with whatever changed while the node was
//! down.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use futures_util::{StreamExt as _, TryStreamExt as _};

use crate::clock::Clock;
use crate::domain::catalog::{CategoryTree, Product};
use crate::domain::ids::{CategoryId, ProductId, VendorId};
use crate::domain::inventory::Inventory;
use crate::domain::review::{RatingSummary, RatingTotals, ReviewTarget};
use crate::search::{ProductDoc, SearchIndex, fingerprint};
use crate::store::catalog::{CatalogRepo, id_key};
use crate::store::typed::{Rows, Versioned};
use crate::store::{Key, MAX_PAGE, SharedStore, Table};

/// Days of sales that make a product "popular".
const POPULAR_DAYS: i64 = 7;
/// Products read from the store at once when refreshing.
const READ_CONCURRENCY: usize = 16;
/// Products per refresh (and commit) when catching up.
const CATCH_UP_CHUNK: usize = 500;

/// Whether a refresh waits for the change to be searchable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Return once searchable (product edits: the vendor sees their change at once).
    Visible,
    /// Queue and return (stock and rating changes, which are frequent).
    No,
}

/// What a rebuild did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReindexReport {
    pub products: u64,
    pub took: Duration,
}

/// What catching up did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatchUpReport {
    /// The index was rebuilt from scratch (it was new, of another schema version, or mostly
    /// stale).
    pub rebuilt: bool,
    /// Documents written (all of them after a rebuild).
    pub refreshed: u64,
    /// Documents of products no longer in the store.
    pub removed: u64,
    pub took: Duration,
}

/// Stock figures a document carries.
#[derive(Debug, Clone, Copy, Default)]
struct Stock {
    available: u32,
    sold_recent: u32,
    /// When the first live hold expires (and `available` grows without any write).
    next_expiry: Option<DateTime<Utc>>,
}

impl Stock {
    fn of(inventory: &Inventory, now: DateTime<Utc>) -> Self {
        Stock {
            available: inventory.available(now),
            sold_recent: inventory.sold_recently(now, POPULAR_DAYS),
            next_expiry: inventory
                .holds
                .values()
                .filter(|h| !h.committed && h.expires_at > now)
                .map(|h| h.expires_at)
                .min(),
        }
    }
}

/// Asks for a product to be re-indexed at a moment (when a hold on it expires).
pub type Recheck = tokio::sync::mpsc::UnboundedSender<(DateTime<Utc>, ProductId)>;

/// Builds index documents from the store and feeds them to the index.
#[derive(Clone)]
pub struct Indexer {
    pub search: SearchIndex,
    repo: CatalogRepo,
    inventory: Rows<Inventory>,
    ratings: Rows<RatingTotals>,
    clock: Clock,
    recheck: Option<Recheck>,
}

impl Indexer {
    /// An indexer on the system clock (see [`with_clock`](Self::with_clock)).
    pub fn new(store: SharedStore, search: SearchIndex) -> Self {
        Indexer {
            search,
            repo: CatalogRepo::new(store.clone()),
            inventory: Rows::new(store.clone(), Table::Inventory),
            ratings: Rows::new(store, Table::Ratings),
            clock: Clock::default(),
            recheck: None,
        }
    }

    /// Re-indexes a product again when a hold on it expires, so "in stock" comes back without
    /// waiting for the next write to its stock.
    pub fn with_rechecks(mut self, recheck: Recheck) -> Self {
        self.recheck = Some(recheck);
        self
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Uses `clock` for "available now" and "sold in the last days".
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Re-reads these products (and what their documents depend on) and updates or removes
    /// their documents.
    #[tracing::instrument(skip(self, ids), fields(products = ids.len()))]
    pub async fn refresh(&self, ids: &[ProductId], wait: Wait) -> anyhow::Result<()> {
        let mut unique = HashSet::new();
        let ids: Vec<ProductId> = ids
            .iter()
            .copied()
            .filter(|id| unique.insert(*id))
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        let now = self.clock.now();
        let reads: Vec<_> = futures_util::stream::iter(ids)
            .map(|id| self.read(id, now))
            .buffered(READ_CONCURRENCY)
            .try_collect()
            .await?;
        let mut builder = DocBuilder::new(&self.repo).await?;
        let mut docs = Vec::new();
        let mut gone = Vec::new();
        for (id, read) in reads {
            match read {
                Some((product, stock, rating)) => {
                    docs.push(builder.build(product, stock, rating).await?);
                }
                None => gone.push(id),
            }
        }
        match wait {
            Wait::Visible => {
                futures_util::future::try_join(self.search.upsert(docs), self.search.remove(gone))
                    .await?;
            }
            Wait::No => {
                self.search.upsert_soon(docs);
                self.search.remove_soon(gone);
            }
        }
        Ok(())
    }

    /// Re-indexes every indexed product of a vendor (after its name or status changed);
    /// returns how many.
    pub async fn refresh_vendor(&self, vendor: VendorId) -> anyhow::Result<usize> {
        let ids = self.search.products_of_vendor(vendor).await?;
        for chunk in ids.chunks(CATCH_UP_CHUNK) {
            self.refresh(chunk, Wait::Visible).await?;
        }
        Ok(ids.len())
    }

    /// Re-indexes every indexed product in a category or below it (after the category moved
    /// in the tree); returns how many.
    pub async fn refresh_category(&self, category: CategoryId) -> anyhow::Result<usize> {
        let ids = self.search.products_in_category(category).await?;
        for chunk in ids.chunks(CATCH_UP_CHUNK) {
            self.refresh(chunk, Wait::Visible).await?;
        }
        Ok(ids.len())
    }

    /// Rebuilds the whole index from the store. Searches see the old index until it is done.
    #[tracing::instrument(skip(self))]
    pub async fn reindex_all(&self) -> anyhow::Result<ReindexReport> {
        let started = Instant::now();
        // Started before reading anything: a change refreshed meanwhile then wins over the
        // (possibly older) copy this rebuild read.
        let mut rebuild = self.search.rebuild().await?;
        let now = self.clock.now();
        let stock = self.stock_by_product(now).await?;
        let ratings = self.ratings_by_product().await?;
        let mut builder = DocBuilder::new(&self.repo).await?;
        let mut products = 0u64;
        let mut cursor = None;
        loop {
            let (rows, next) = self
                .repo
                .products
                .scan_table(cursor, MAX_PAGE)
                .await
                .context("scanning products")?;
            let mut docs = Vec::with_capacity(rows.len());
            for (_, product) in rows {
                let id = product.value.id;
                let stock = stock.get(&id).copied().unwrap_or_default();
                let rating = ratings.get(&id).copied().unwrap_or_default();
                docs.push(builder.build(product, stock, rating).await?);
            }
            products += docs.len() as u64;
            let last_page = docs.is_empty() || next.is_none();
            rebuild.add(docs).await?;
            if last_page {
                break;
            }
            cursor = next;
        }
        rebuild.finish().await?;
        let report = ReindexReport {
            products,
            took: started.elapsed(),
        };
        tracing::info!(
            products,
            took_ms = report.took.as_millis() as u64,
            "search index rebuilt"
        );
        Ok(report)
    }

    /// Brings the index up to date with the store at start: rebuilds it when it is new, of
    /// another schema version or mostly stale; otherwise refreshes only the products whose
    /// document differs from what the store now yields (product version or any input: vendor,
    /// category, stock, rating) and removes the products that are gone.
    #[tracing::instrument(skip(self))]
    pub async fn catch_up(&self) -> anyhow::Result<CatchUpReport> {
        let started = Instant::now();
        if self.search.needs_rebuild() {
            let report = self.reindex_all().await?;
            return Ok(CatchUpReport {
                rebuilt: true,
                refreshed: report.products,
                removed: 0,
                took: started.elapsed(),
            });
        }
        let indexed = self.search.indexed().await?;
        let now = self.clock.now();
        let stock = self.stock_by_product(now).await?;
        let ratings = self.ratings_by_product().await?;
        let mut builder = DocBuilder::new(&self.repo).await?;
        let mut seen = HashSet::new();
        let mut stale = Vec::new();
        let mut cursor = None;
        loop {
            let (rows, next) = self
                .repo
                .products
                .scan_table(cursor, MAX_PAGE)
                .await
                .context("scanning products")?;
            let last_page = rows.is_empty() || next.is_none();
            for (_, product) in rows {
                let id = product.value.id;
                seen.insert(id);
                let stock = stock.get(&id).copied().unwrap_or_default();
                let rating = ratings.get(&id).copied().unwrap_or_default();
                let doc = builder.build(product, stock, rating).await?;
                let current = indexed.get(&id).is_some_and(|i| {
                    i.version == doc.version && i.fingerprint == fingerprint(&doc)
                });
                if !current {
                    stale.push(id);
                }
            }
            if last_page {
                break;
            }
            cursor = next;
        }
        if stale.len() > CATCH_UP_CHUNK && stale.len() * 2 > seen.len() {
            let report = self.reindex_all().await?;
            return Ok(CatchUpReport {
                rebuilt: true,
                refreshed: report.products,
                removed: 0,
                took: started.elapsed(),
            });
        }
        for chunk in stale.chunks(CATCH_UP_CHUNK) {
            self.refresh(chunk, Wait::Visible).await?;
        }
        let gone: Vec<ProductId> = indexed
            .into_keys()
            .filter(|id| !seen.contains(id))
            .collect();
        let removed = gone.len() as u64;
        self.search.remove(gone).await?;
        let report = CatchUpReport {
            rebuilt: false,
            refreshed: stale.len() as u64,
            removed,
            took: started.elapsed(),
        };
        tracing::info!(
            refreshed = report.refreshed,
            removed,
            took_ms = report.took.as_millis() as u64,
            "search index caught up"
        );
        Ok(report)
    }

    /// A product with its stock and rating, `None` when it does not exist.
    async fn read(
        &self,
        id: ProductId,
        now: DateTime<Utc>,
    ) -> anyhow::Result<(
        ProductId,
        Option<(Versioned<Product>, Stock, RatingSummary)>,
    )> {
        let Some(product) = self.repo.product(id).await.context("reading a product")? else {
            return Ok((id, None));
        };
        let stock = self
            .inventory
            .get(&id_key(id))
            .await
            .context("reading inventory")?
            .map(|row| Stock::of(&row.value, now))
            .unwrap_or_default();
        if let (Some(at), Some(recheck)) = (stock.next_expiry, &self.recheck) {
            // A closed channel only means the node is stopping.
            let _ = recheck.send((at, id));
        }
        let rating = self
            .ratings
            .get(&Key::single(ReviewTarget::Product(id).key()))
            .await
            .context("reading a rating")?
            .map(|row| RatingSummary::from(row.value))
            .unwrap_or_default();
        Ok((id, Some((product, stock, rating))))
    }

    /// Stock figures of every product with an inventory row.
    async fn stock_by_product(
        &self,
        now: DateTime<Utc>,
    ) -> anyhow::Result<HashMap<ProductId, Stock>> {
        let mut stock = HashMap::new();
        self.inventory
            .for_each(|key, row| {
                if let Ok(id) = key.partition.parse::<ProductId>() {
                    stock.insert(id, Stock::of(&row.value, now));
                }
            })
            .await
            .context("scanning inventory")?;
        Ok(stock)
    }

    /// Ratings of every rated product.
    async fn ratings_by_product(&self) -> anyhow::Result<HashMap<ProductId, RatingSummary>> {
        let mut ratings = HashMap::new();
        self.ratings
            .for_each(|key, row| {
                // Partitions are `ReviewTarget::key()`s; vendors' ratings are skipped.
                if let Some(id) = key
                    .partition
                    .strip_prefix("product:")
                    .and_then(|raw| raw.parse::<ProductId>().ok())
                {
                    ratings.insert(id, RatingSummary::from(row.value));
                }
            })
            .await
            .context("scanning ratings")?;
        Ok(ratings)
    }
}

/// Builds documents, reading each vendor once and the category tree once.
struct DocBuilder<'a> {
    repo: &'a CatalogRepo,
    tree: CategoryTree,
    /// Vendor → its name and whether it is active (`None`: no such vendor).
    vendors: HashMap<VendorId, Option<(String, bool)>>,
}

impl<'a> DocBuilder<'a> {
    async fn new(repo: &'a CatalogRepo) -> anyhow::Result<Self> {
        let tree = repo
            .category_tree()
            .await
            .context("reading the category tree")?
            .value;
        Ok(DocBuilder {
            repo,
            tree,
            vendors: HashMap::new(),
        })
    }

    async fn vendor(&mut self, id: VendorId) -> anyhow::Result<Option<(String, bool)>> {
        if let Some(known) = self.vendors.get(&id) {
            return Ok(known.clone());
        }
        let vendor = self
            .repo
            .vendor(id)
            .await
            .context("reading a vendor")?
            .map(|v| (v.value.name.clone(), v.value.is_active()));
        self.vendors.insert(id, vendor.clone());
        Ok(vendor)
    }

    async fn build(
        &mut self,
        product: Versioned<Product>,
        stock: Stock,
        rating: RatingSummary,
    ) -> anyhow::Result<ProductDoc> {
        // A product whose vendor row is missing is listed to nobody but admins.
        let (vendor_name, vendor_active) = self
            .vendor(product.value.vendor_id)
            .await?
            .unwrap_or_default();
        Ok(ProductDoc {
            category_path: self.tree.path(product.value.category_id),
            product: product.value,
            version: product.version,
            vendor_name,
            vendor_active,
            available: stock.available,
            rating,
            sold_recent: stock.sold_recent,
        })
    }
}
