//! Stock and reservations over the store: every change is a compare-and-set of the product's
//! inventory row, so concurrent checkouts on any number of nodes never oversell.
//!
//! Inside one process, writers to one product queue on a striped lock before the
//! compare-and-set loop: a flash sale with a thousand buyers on one node then costs a thousand
//! sequential writes instead of a thousand writers retrying each other's conflicts. The lock is
//! only an optimisation; correctness across nodes comes from the compare-and-set alone.
//!
//! Adjustment history is written after the row (the row keeps the latest
//! [`RECENT_ADJUSTMENTS`](crate::domain::inventory::RECENT_ADJUSTMENTS)), and every adjustment
//! rewrites all the row's recent ones, so a process that dies between the two writes leaves a
//! gap the next adjustment fills. Reads of the history merge in the row's recent adjustments,
//! so nothing is missing even before that.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::stream::{self, StreamExt as _};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::clock::Clock;
use crate::domain::ids::{ProductId, UserId};
use crate::domain::inventory::{
    Adjustment, Committed, Inventory, InventoryError, Released, Restocked, StockChange,
};
use crate::store::inventory::{InventoryRepo, inventory_key};
use crate::store::typed::{Change, ModifyError};
use crate::store::{MAX_PAGE, SharedStore, StoreError, StoreResult};

/// Called with the products whose availability changed (to refresh the search index).
pub type StockListener = Arc<dyn Fn(Vec<ProductId>) + Send + Sync>;

/// Stripes of the in-process writer lock; products hash onto them.
const LOCK_STRIPES: usize = 64;
/// Inventory rows read at once by bulk reads.
const READ_CONCURRENCY: usize = 16;
/// Longest a hold may last; longer requests are cut to this.
pub const MAX_HOLD_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// How long the fresh hold [`InventoryService::take`] places may live: it is committed at once,
/// so this only bounds a hold left behind by a crash between the two writes.
const TAKE_HOLD_TTL: Duration = Duration::from_secs(60);

/// Stock of a product as its vendor sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InventoryView {
    /// Units on hand and not yet sold.
    pub stock: u32,
    /// Units held by checkouts in progress.
    pub held: u32,
    /// Units a new checkout could buy now (`stock - held`).
    pub available: u32,
    /// Units sold over the product's life.
    pub sold_total: u64,
    /// The latest adjustments, oldest first; the history endpoint has all of them.
    pub recent_adjustments: Vec<Adjustment>,
}

impl InventoryView {
    pub fn of(inventory: &Inventory, now: DateTime<Utc>) -> Self {
        let held = inventory.held(now);
        InventoryView {
            stock: inventory.stock,
            held,
            available: inventory.stock.saturating_sub(held),
            sold_total: inventory.sold_total,
            recent_adjustments: inventory.recent_adjustments.clone(),
        }
    }
}

/// Why a stock adjustment failed.
#[derive(Debug, thiserror::Error)]
pub enum InventoryFailure {
    /// The change breaks a rule of the stock (range, units held by checkouts).
    #[error(transparent)]
    Rejected(InventoryError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ModifyError<InventoryError>> for InventoryFailure {
    fn from(e: ModifyError<InventoryError>) -> Self {
        match e {
            ModifyError::Rejected(e) => InventoryFailure::Rejected(e),
            ModifyError::Store(e) => InventoryFailure::Store(e),
        }
    }
}

/// A product a reservation asked more of than there is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ShortItem {
    #[schema(value_type = String, format = Uuid)]
    pub product_id: ProductId,
    pub requested: u32,
    pub available: u32,
}

/// Why a reservation placed no holds.
#[derive(Debug, thiserror::Error)]
pub enum ReserveFailure {
    /// Some products do not have the units; nothing is held.
    #[error("not enough stock for {} product(s)", .0.len())]
    Short(Vec<ShortItem>),
    /// A product has too many checkouts in progress; nothing is held.
    #[error("too many checkouts in progress for product {0}")]
    Busy(ProductId),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What committing a reservation did to one product.
pub type CommitOutcome = Result<Committed, InventoryError>;

/// Stock, adjustments and checkout holds.
#[derive(Clone)]
pub struct InventoryService {
    repo: InventoryRepo,
    clock: Clock,
    listener: StockListener,
    stripes: Arc<[Mutex<()>; LOCK_STRIPES]>,
}

impl InventoryService {
    pub fn new(store: SharedStore, clock: Clock, listener: StockListener) -> Self {
        InventoryService {
            repo: InventoryRepo::new(store),
            clock,
            listener,
            stripes: Arc::new(std::array::from_fn(|_| Mutex::new(()))),
        }
    }

    /// The typed tables, for readers that need the whole row (sales per day, holds).
    pub fn repo(&self) -> &InventoryRepo {
        &self.repo
    }

    /// Stock of a product; a product never stocked has none.
    #[tracing::instrument(skip_all, fields(product_id = %product))]
    pub async fn get(&self, product: ProductId) -> StoreResult<InventoryView> {
        let inventory = self.row(product).await?;
        Ok(InventoryView::of(&inventory, self.clock.now()))
    }

    /// Units a new checkout could hold now, for each product (0 for products never stocked).
    #[tracing::instrument(skip_all, fields(products = ids.len()))]
    pub async fn available_many(&self, ids: &[ProductId]) -> StoreResult<HashMap<ProductId, u32>> {
        let unique: HashSet<ProductId> = ids.iter().copied().collect();
        let rows = self.rows(unique).await?;
        let now = self.clock.now();
        Ok(rows
            .into_iter()
            .map(|(id, inventory)| (id, inventory.available(now)))
            .collect())
    }

    /// Sets or changes the stock, recording who did it and why.
    #[tracing::instrument(skip_all, fields(product_id = %product, user_id = %by))]
    pub async fn adjust(
        &self,
        product: ProductId,
        change: StockChange,
        reason: String,
        by: UserId,
    ) -> Result<(Adjustment, InventoryView), InventoryFailure> {
        let id = Uuid::now_v7().to_string();
        let by = by.to_string();
        let (adjustment, inventory) = self
            .write(product, |inventory, now| {
                inventory.adjust(id.clone(), change, reason.clone(), by.clone(), now)
            })
            .await?;
        self.changed(vec![product]);
        if let Err(e) = self
            .repo
            .record(product, &inventory.recent_adjustments)
            .await
        {
            // The adjustment stands (it is in the row); the next one writes the history again.
            tracing::warn!(error = %e, adjustment_id = %adjustment.id, "adjustment history not written");
        }
        Ok((adjustment, InventoryView::of(&inventory, self.clock.now())))
    }

    /// A page of a product's adjustments, **oldest first**: up to `limit` (1 to
    /// [`MAX_PAGE`]) with ids after `after`, and the cursor of the next page (`None` on the
    /// last one).
    #[tracing::instrument(skip_all, fields(product_id = %product))]
    pub async fn history(
        &self,
        product: ProductId,
        after: Option<String>,
        limit: usize,
    ) -> StoreResult<(Vec<Adjustment>, Option<String>)> {
        let limit = limit.clamp(1, MAX_PAGE);
        let (row, (logged, more_logged)) = tokio::try_join!(
            self.row(product),
            self.repo.history(product, after.clone(), limit)
        )?;
        // Past a full page of the log there may be logged ids we have not read, so recent
        // adjustments beyond it wait for the page that reads them.
        let upto = match more_logged {
            Some(_) => logged.last().map(|a| a.id.clone()),
            None => None,
        };
        let mut merged: BTreeMap<String, Adjustment> =
            logged.into_iter().map(|a| (a.id.clone(), a)).collect();
        for adjustment in row.recent_adjustments {
            let after_cursor = after.as_deref().is_none_or(|c| adjustment.id.as_str() > c);
            let within = upto.as_deref().is_none_or(|u| adjustment.id.as_str() <= u);
            if after_cursor && within {
                merged.entry(adjustment.id.clone()).or_insert(adjustment);
            }
        }
        let more = more_logged.is_some() || merged.len() > limit;
        let page: Vec<Adjustment> = merged.into_values().take(limit).collect();
        let next = if more {
            page.last().map(|a| a.id.clone())
        } else {
            None
        };
        Ok((page, next))
    }

    /// Holds `items` for `reservation` until `ttl` from now, all or nothing.
    ///
    /// Holds are placed one product at a time in product-id order; if one is short, the holds
    /// already placed are released and nothing is held, and the refusal lists every short
    /// item (that one and those after it).
    /// A reservation that fails this way holds nothing afterwards, including holds an earlier
    /// call placed for it. Should the process die half-way, the holds placed expire by
    /// themselves after `ttl`.
    ///
    /// Quantities of a product named twice add up; zero quantities are ignored. Reserving the
    /// same items again only refreshes the holds.
    #[tracing::instrument(skip_all, fields(reservation = %reservation, products = items.len()))]
    pub async fn reserve(
        &self,
        reservation: &str,
        items: &[(ProductId, u32)],
        ttl: Duration,
    ) -> Result<(), ReserveFailure> {
        let mut wanted: BTreeMap<ProductId, u32> = BTreeMap::new();
        for &(product, quantity) in items.iter().filter(|(_, q)| *q > 0) {
            let total = wanted.entry(product).or_default();
            *total = total.saturating_add(quantity);
        }
        // No reading ahead: each hold is tried as it is written, and the first product short
        // of units undoes the holds before it (the answer then names every short product).
        let ttl = chrono::Duration::from_std(ttl.min(MAX_HOLD_TTL)).unwrap_or_default();
        let mut placed = Vec::with_capacity(wanted.len());
        for (&product, &quantity) in &wanted {
            let held = self
                .write(product, |inventory, now| {
                    let until = now.checked_add_signed(ttl).unwrap_or(now);
                    inventory.reserve(reservation, quantity, until, now)
                })
                .await;
            let failure = match held {
                Ok(_) => {
                    placed.push(product);
                    continue;
                }
                Err(e) => e,
            };
            self.roll_back(reservation, &placed).await;
            return Err(match failure {
                ModifyError::Rejected(InventoryError::Short { available }) => {
                    let mut short = vec![ShortItem {
                        product_id: product,
                        requested: quantity,
                        available,
                    }];
                    let rest: BTreeMap<ProductId, u32> = wanted
                        .range((Bound::Excluded(product), Bound::Unbounded))
                        .map(|(p, q)| (*p, *q))
                        .collect();
                    // Best effort: the first short item is reason enough to refuse.
                    short.extend(self.shortages(reservation, &rest).await.unwrap_or_default());
                    ReserveFailure::Short(short)
                }
                ModifyError::Rejected(InventoryError::TooManyHolds) => {
                    ReserveFailure::Busy(product)
                }
                ModifyError::Rejected(other) => ReserveFailure::Store(StoreError::Misuse(format!(
                    "placing a hold on {product} failed unexpectedly: {other}"
                ))),
                ModifyError::Store(e) => ReserveFailure::Store(e),
            });
        }
        self.changed(placed);
        Ok(())
    }

    /// Sells the units `reservation` holds on each product. Idempotent: a repeated commit
    /// answers [`Committed::Already`] and sells nothing. Outcomes come in the order the
    /// products were given (each once); on a store error the products before it are
    /// committed and a retry finishes the rest.
    #[tracing::instrument(skip_all, fields(reservation = %reservation, products = products.len()))]
    pub async fn commit(
        &self,
        reservation: &str,
        products: &[ProductId],
    ) -> StoreResult<Vec<(ProductId, CommitOutcome)>> {
        let mut outcomes = Vec::with_capacity(products.len());
        let mut changed = Vec::new();
        for product in unique(products) {
            let outcome = match self
                .write(product, |inventory, now| inventory.commit(reservation, now))
                .await
            {
                Ok((committed, _)) => Ok(committed),
                Err(ModifyError::Rejected(e)) => Err(e),
                Err(ModifyError::Store(e)) => {
                    self.changed(changed);
                    return Err(e);
                }
            };
            if outcome == Ok(Committed::Now) {
                changed.push(product);
            }
            outcomes.push((product, outcome));
        }
        self.changed(changed);
        Ok(outcomes)
    }

    /// Gives back the units `reservation` holds on each product. Idempotent, and never
    /// unsells: a committed hold answers [`Released::AlreadyCommitted`].
    #[tracing::instrument(skip_all, fields(reservation = %reservation, products = products.len()))]
    pub async fn release(
        &self,
        reservation: &str,
        products: &[ProductId],
    ) -> StoreResult<Vec<(ProductId, Released)>> {
        self.each_product(products, Released::Now, |inventory, now| {
            inventory.release(reservation, now)
        })
        .await
    }

    /// Puts the units sold under `reservation` back on sale (a paid order was cancelled or
    /// rejected). Idempotent: the hold remembers it was restocked, so a replay after a crash
    /// adds nothing ([`Restocked::Already`]).
    #[tracing::instrument(skip_all, fields(reservation = %reservation, products = products.len()))]
    pub async fn restock(
        &self,
        reservation: &str,
        products: &[ProductId],
    ) -> StoreResult<Vec<(ProductId, Restocked)>> {
        self.each_product(products, Restocked::Now, |inventory, now| {
            inventory.restock(reservation, now)
        })
        .await
    }

    /// Sells `items` to `reservation`, all or nothing: its holds are committed, and products
    /// whose hold is gone (expired and dropped, or released) are held afresh and committed
    /// under the same reservation. Idempotent: units already sold to it count as taken. If
    /// some product cannot be had, the units this call sold are put back on sale and the
    /// shortage is returned; on a store error the caller retries (every step is idempotent).
    #[tracing::instrument(skip_all, fields(reservation = %reservation, products = items.len()))]
    pub async fn take(
        &self,
        reservation: &str,
        items: &[(ProductId, u32)],
    ) -> Result<(), ReserveFailure> {
        let products: Vec<ProductId> = items.iter().map(|(p, _)| *p).collect();
        let outcomes = self.commit(reservation, &products).await?;
        let missing: Vec<(ProductId, u32)> = items
            .iter()
            .filter(|(p, _)| outcomes.iter().any(|(o, r)| o == p && r.is_err()))
            .copied()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let failure = match self.reserve(reservation, &missing, TAKE_HOLD_TTL).await {
            Ok(()) => {
                let again: Vec<ProductId> = missing.iter().map(|(p, _)| *p).collect();
                let outcomes = self.commit(reservation, &again).await?;
                match outcomes
                    .into_iter()
                    .find_map(|(p, r)| r.err().map(|e| (p, e)))
                {
                    None => return Ok(()),
                    Some((product, e)) => ReserveFailure::Store(StoreError::Misuse(format!(
                        "a fresh hold on {product} could not be sold: {e}"
                    ))),
                }
            }
            Err(failure) => failure,
        };
        // Not everything could be had: nothing is sold to this reservation.
        if let Err(e) = self.restock(reservation, &products).await {
            tracing::warn!(error = %e, reservation, "partly taken units not put back yet; retried with the order");
            return Err(ReserveFailure::Store(e));
        }
        Err(failure)
    }

    /// Releases the holds a failed reservation placed. Failures are only logged: the holds
    /// expire by themselves.
    async fn roll_back(&self, reservation: &str, placed: &[ProductId]) {
        if placed.is_empty() {
            return;
        }
        if let Err(e) = self.release(reservation, placed).await {
            tracing::warn!(error = %e, reservation, "holds of a refused reservation left to expire");
        }
    }

    /// The products in `wanted` that cannot be held for `reservation` now, judged on a
    /// fresh read of each (counting what `reservation` already holds as its own).
    async fn shortages(
        &self,
        reservation: &str,
        wanted: &BTreeMap<ProductId, u32>,
    ) -> StoreResult<Vec<ShortItem>> {
        let rows = self.rows(wanted.keys().copied()).await?;
        let now = self.clock.now();
        let mut short = Vec::new();
        for (&product, &quantity) in wanted {
            let Some(inventory) = rows.get(&product) else {
                continue;
            };
            // Trying the hold on a copy applies exactly the rules the real one will.
            let mut trial = inventory.clone();
            if let Err(InventoryError::Short { available }) =
                trial.reserve(reservation, quantity, now, now)
            {
                short.push(ShortItem {
                    product_id: product,
                    requested: quantity,
                    available,
                });
            }
        }
        Ok(short)
    }

    async fn row(&self, product: ProductId) -> StoreResult<Inventory> {
        Ok(self
            .repo
            .get(product)
            .await?
            .map(|v| v.value)
            .unwrap_or_default())
    }

    /// The rows of several products, a few reads at a time.
    async fn rows(
        &self,
        ids: impl IntoIterator<Item = ProductId>,
    ) -> StoreResult<HashMap<ProductId, Inventory>> {
        let reads: Vec<(ProductId, StoreResult<Inventory>)> = stream::iter(ids)
            .map(|id| async move { (id, self.row(id).await) })
            .buffer_unordered(READ_CONCURRENCY)
            .collect()
            .await;
        reads
            .into_iter()
            .map(|(id, row)| row.map(|inventory| (id, inventory)))
            .collect()
    }

    /// Applies `step` to each product's row once, in the order first given; products whose
    /// outcome is `changed` are reported to the stock listener. On a store error the products
    /// before it are done and a retry finishes the rest.
    async fn each_product<R: Copy + PartialEq>(
        &self,
        products: &[ProductId],
        changed: R,
        step: impl Fn(&mut Inventory, DateTime<Utc>) -> R,
    ) -> StoreResult<Vec<(ProductId, R)>> {
        let mut outcomes = Vec::with_capacity(products.len());
        let mut touched = Vec::new();
        for product in unique(products) {
            let outcome = match self
                .write(product, |inventory, now| Ok(step(inventory, now)))
                .await
            {
                Ok((outcome, _)) => outcome,
                Err(e) => {
                    self.changed(touched);
                    return Err(match e {
                        ModifyError::Store(e) => e,
                        ModifyError::Rejected(e) => StoreError::Misuse(e.to_string()),
                    });
                }
            };
            if outcome == changed {
                touched.push(product);
            }
            outcomes.push((product, outcome));
        }
        self.changed(touched);
        Ok(outcomes)
    }

    /// Applies `step` to the product's row by compare-and-set, queued behind other writers to
    /// the same product in this process. Returns what `step` returned and the row as written.
    /// A step that leaves the row as it was writes nothing.
    async fn write<R>(
        &self,
        product: ProductId,
        mut step: impl FnMut(&mut Inventory, DateTime<Utc>) -> Result<R, InventoryError>,
    ) -> Result<(R, Inventory), ModifyError<InventoryError>> {
        let _turn = self.stripe(product).lock().await;
        let clock = &self.clock;
        let (done, _version) = self
            .repo
            .rows
            .modify(&inventory_key(product), |current| {
                let mut next = current.cloned().unwrap_or_default();
                let outcome = step(&mut next, clock.now())?;
                let unchanged = match current {
                    Some(current) => *current == next,
                    None => next == Inventory::default(),
                };
                Ok(if unchanged {
                    Change::Keep((outcome, next))
                } else {
                    Change::Put(next.clone(), (outcome, next))
                })
            })
            .await?;
        Ok(done)
    }

    fn stripe(&self, product: ProductId) -> &Mutex<()> {
        // The low half of a UUIDv7 is random, so products spread evenly over the stripes; the
        // remainder is below LOCK_STRIPES, so the index is always in range.
        let (_, low) = product.as_uuid().as_u64_pair();
        &self.stripes[(low % LOCK_STRIPES as u64) as usize]
    }

    fn changed(&self, products: Vec<ProductId>) {
        if !products.is_empty() {
            (self.listener)(products);
        }
    }
}

/// Each product once, in the order first given.
fn unique(products: &[ProductId]) -> Vec<ProductId> {
    let mut seen = HashSet::with_capacity(products.len());
    products
        .iter()
        .copied()
        .filter(|p| seen.insert(*p))
        .collect()
}
