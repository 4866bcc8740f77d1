//! The analytics tables: rollup rows, each order's facts, and the head that orders the
//! batches applied to them.
//!
//! Applying is write-ahead through the head row, as the ledger books. One writer at a time
//! (the head's compare-and-set refuses any other) applies a batch thus:
//! 1. the head goes from `{batch: N, positions}` to `{batch: N + 1, positions after the
//!    batch, applying: the batch's deltas and facts}`;
//! 2. each rollup row touched adds its delta and each order's facts are replaced, both only
//!    when the row's `through` is below N + 1, and `through` becomes N + 1;
//! 3. the head clears `applying`.
//!
//! A writer that dies in between leaves the batch in the head and the next writer finishes
//! it first; a row already carrying the batch is not touched again, so no event is counted
//! twice and none is lost. Every key starts with the head's *generation*: a rebuild writes
//! a new generation beside the one being read and switches the head to it in one write.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::NaiveDate;
use futures_util::StreamExt as _;
use futures_util::stream;
use serde::{Deserialize, Serialize};

use super::journal::Position;
use super::typed::{Change, ModifyError, Rows, Versioned};
use super::{
    Cas, Key, MAX_PAGE, Row, ScanRange, SharedStore, StoreError, StoreResult, Table, Version,
    decode,
};
use crate::domain::analytics::{Cell, CellId, OrderFacts};
use crate::domain::ids::{OrderId, UserId, VendorId};

/// Rows written at once while applying a batch.
const CONCURRENCY: usize = 32;
const HEAD: &str = "head";

/// Where analytics is: which generation of rows is read, how far each journal was folded,
/// and the batch being applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub generation: u64,
    /// The number of the last batch begun.
    pub batch: u64,
    /// The order journal, folded up to here.
    pub orders: Position,
    /// The courier journal, folded up to here.
    pub couriers: Position,
    #[serde(default)]
    pub applying: Option<Batch>,
}

/// One batch: deltas to rollup rows and new facts of orders.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub cells: Vec<(CellId, Cell)>,
    pub facts: Vec<(OrderId, OrderFacts)>,
}

/// A row's value with the last batch applied to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied<T> {
    pub through: u64,
    pub value: T,
}

/// Another writer moved the head first.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("another node is applying analytics")]
    Lost,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A rollup partition: every row of one kind for one subject, clustered by day, month or
/// hour and cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Series {
    StoreDays(VendorId),
    PlatformDays,
    CourierDays(UserId),
    /// Resolution and day.
    Hours(u8, NaiveDate),
    StoreProducts(VendorId),
    PlatformProducts,
    PlatformStores,
    PlatformCouriers,
}

impl Series {
    fn partition(&self, generation: u64) -> String {
        match self {
            Series::StoreDays(s) => format!("{generation}/store-days/{}", s.as_uuid()),
            Series::PlatformDays => format!("{generation}/platform-days"),
            Series::CourierDays(c) => format!("{generation}/courier-days/{}", c.as_uuid()),
            Series::Hours(res, day) => format!("{generation}/cells/{res}/{day}"),
            Series::StoreProducts(s) => format!("{generation}/store-products/{}", s.as_uuid()),
            Series::PlatformProducts => format!("{generation}/platform-products"),
            Series::PlatformStores => format!("{generation}/platform-stores"),
            Series::PlatformCouriers => format!("{generation}/platform-couriers"),
        }
    }
}

/// A day's clustering key.
pub fn day_key(day: NaiveDate) -> String {
    day.format("%Y-%m-%d").to_string()
}

/// A month's clustering key.
pub fn month_key(month: NaiveDate) -> String {
    month.format("%Y-%m").to_string()
}

/// The row of `id` in `generation`.
pub fn cell_key(generation: u64, id: &CellId) -> Key {
    let (series, clustering) = match id {
        CellId::StoreDay(s, d) => (Series::StoreDays(*s), day_key(*d)),
        CellId::PlatformDay(d) => (Series::PlatformDays, day_key(*d)),
        CellId::CourierDay(c, d) => (Series::CourierDays(*c), day_key(*d)),
        CellId::Hour(res, cell, d, h) => (Series::Hours(*res, *d), format!("{h:02}/{cell}")),
        CellId::StoreProducts(s, m) => (Series::StoreProducts(*s), month_key(*m)),
        CellId::PlatformProducts(m) => (Series::PlatformProducts, month_key(*m)),
        CellId::PlatformStores(m) => (Series::PlatformStores, month_key(*m)),
        CellId::PlatformCouriers(m) => (Series::PlatformCouriers, month_key(*m)),
    };
    Key::new(series.partition(generation), clustering)
}

fn facts_key(generation: u64, order: OrderId) -> Key {
    Key::single(format!("{generation}/{}", order.as_uuid()))
}

/// Rows at least this large are kept decoded between reads (the months' lists of every
/// product, store or courier of the platform), keyed by their version.
const DECODED_MIN_BYTES: usize = 8 * 1024;
/// Most rows kept decoded.
const DECODED_MAX_ROWS: usize = 1024;

/// Large rollup rows as last decoded, by key and version: a year's top list of a platform of
/// a thousand stores is megabytes of rows that change only in their current month.
#[derive(Clone, Default)]
struct Decoded(Arc<parking_lot::Mutex<DecodedRows>>);

/// Decoded rows by key, with the version each was decoded from.
type DecodedRows = HashMap<Key, (Version, Arc<Cell>)>;

impl Decoded {
    fn get_or_decode(&self, row: &Row) -> StoreResult<Arc<Cell>> {
        if row.data.len() < DECODED_MIN_BYTES {
            let applied: Applied<Cell> = decode(Table::AnalyticsRollups, &row.data)?;
            return Ok(Arc::new(applied.value));
        }
        if let Some((version, cell)) = self.0.lock().get(&row.key)
            && *version == row.version
        {
            return Ok(cell.clone());
        }
        let applied: Applied<Cell> = decode(Table::AnalyticsRollups, &row.data)?;
        let cell = Arc::new(applied.value);
        let mut map = self.0.lock();
        if map.len() >= DECODED_MAX_ROWS {
            map.clear();
        }
        map.insert(row.key.clone(), (row.version, cell.clone()));
        Ok(cell)
    }
}

/// Typed access to the analytics tables.
#[derive(Clone)]
pub struct AnalyticsRepo {
    decoded: Decoded,
    rollups: Rows<Applied<Cell>>,
    facts: Rows<Applied<OrderFacts>>,
    head: Rows<Head>,
}

impl AnalyticsRepo {
    pub fn new(store: SharedStore) -> Self {
        AnalyticsRepo {
            decoded: Decoded::default(),
            rollups: Rows::new(store.clone(), Table::AnalyticsRollups),
            facts: Rows::new(store.clone(), Table::AnalyticsOrders),
            head: Rows::new(store, Table::AnalyticsState),
        }
    }

    /// The head, created (starting both journals at `start`) if there is none.
    pub async fn head(&self, start: &Position) -> Result<Versioned<Head>, ApplyError> {
        let key = Key::single(HEAD);
        if let Some(found) = self.head.get(&key).await? {
            return Ok(found);
        }
        let head = Head {
            generation: 1,
            batch: 0,
            orders: start.clone(),
            couriers: start.clone(),
            applying: None,
        };
        match self.head.insert(&key, &head).await? {
            Ok(version) => Ok(Versioned {
                version,
                value: head,
            }),
            Err(Some(there)) => Ok(there),
            Err(None) => Err(ApplyError::Lost),
        }
    }

    /// The head if there is one.
    pub async fn current_head(&self) -> StoreResult<Option<Versioned<Head>>> {
        self.head.get(&Key::single(HEAD)).await
    }

    /// Replaces the head if it is still at `version`.
    pub async fn save_head(&self, version: Version, head: &Head) -> Result<Version, ApplyError> {
        self.head
            .update(&Key::single(HEAD), version, head)
            .await?
            .map_err(|_| ApplyError::Lost)
    }

    /// Begins `batch` (moving the journals to `orders` and `couriers`) and applies it.
    pub async fn apply(
        &self,
        current: Versioned<Head>,
        batch: Batch,
        orders: Position,
        couriers: Position,
    ) -> Result<Versioned<Head>, ApplyError> {
        let mut head = current.value;
        head.batch += 1;
        head.orders = orders;
        head.couriers = couriers;
        head.applying = Some(batch);
        let version = self.save_head(current.version, &head).await?;
        self.finish(Versioned {
            version,
            value: head,
        })
        .await
    }

    /// Finishes the batch left in `current` (if any); returns the head cleared.
    pub async fn finish(&self, current: Versioned<Head>) -> Result<Versioned<Head>, ApplyError> {
        let mut head = current.value;
        let Some(batch) = head.applying.take() else {
            return Ok(Versioned {
                version: current.version,
                value: head,
            });
        };
        let (generation, number) = (head.generation, head.batch);
        let cells = stream::iter(batch.cells)
            .map(|(id, delta)| {
                let this = self.clone();
                async move { this.add(cell_key(generation, &id), number, &delta).await }
            })
            .buffer_unordered(CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        let facts = stream::iter(batch.facts)
            .map(|(order, facts)| {
                let this = self.clone();
                async move {
                    this.replace(facts_key(generation, order), number, &facts)
                        .await
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        for outcome in cells.into_iter().chain(facts) {
            outcome?;
        }
        let version = self.save_head(current.version, &head).await?;
        Ok(Versioned {
            version,
            value: head,
        })
    }

    async fn add(&self, key: Key, number: u64, delta: &Cell) -> StoreResult<()> {
        self.rollups
            .modify(&key, |row| {
                Ok::<_, std::convert::Infallible>(match row {
                    Some(row) if row.through >= number => Change::Keep(()),
                    Some(row) => {
                        let mut value = row.value.clone();
                        value.merge(delta);
                        Change::Put(
                            Applied {
                                through: number,
                                value,
                            },
                            (),
                        )
                    }
                    None => Change::Put(
                        Applied {
                            through: number,
                            value: delta.clone(),
                        },
                        (),
                    ),
                })
            })
            .await
            .map(|_| ())
            .map_err(infallible)
    }

    async fn replace(&self, key: Key, number: u64, facts: &OrderFacts) -> StoreResult<()> {
        self.facts
            .modify(&key, |row| {
                Ok::<_, std::convert::Infallible>(match row {
                    Some(row) if row.through >= number => Change::Keep(()),
                    _ => Change::Put(
                        Applied {
                            through: number,
                            value: facts.clone(),
                        },
                        (),
                    ),
                })
            })
            .await
            .map(|_| ())
            .map_err(infallible)
    }

    /// Takes the next batch number for writes outside the journals' batches (a seed), with
    /// nothing to apply.
    pub async fn reserve(&self, current: Versioned<Head>) -> Result<Versioned<Head>, ApplyError> {
        let mut head = current.value;
        head.batch += 1;
        let version = self.save_head(current.version, &head).await?;
        Ok(Versioned {
            version,
            value: head,
        })
    }

    /// Adds `cells` to the rows of `generation` as batch `number` (rows that carry it
    /// already are left alone).
    pub async fn write_cells(
        &self,
        generation: u64,
        number: u64,
        cells: impl IntoIterator<Item = (CellId, Cell)>,
    ) -> StoreResult<usize> {
        let outcomes = stream::iter(cells)
            .map(|(id, cell)| {
                let this = self.clone();
                async move { this.add(cell_key(generation, &id), number, &cell).await }
            })
            .buffer_unordered(CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        let written = outcomes.len();
        for outcome in outcomes {
            outcome?;
        }
        Ok(written)
    }

    /// Writes rebuilt facts of `generation`.
    pub async fn write_facts(
        &self,
        generation: u64,
        facts: impl IntoIterator<Item = (OrderId, OrderFacts)>,
    ) -> StoreResult<()> {
        let outcomes = stream::iter(facts)
            .map(|(order, facts)| {
                let this = self.clone();
                async move { this.replace(facts_key(generation, order), 0, &facts).await }
            })
            .buffer_unordered(CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        for outcome in outcomes {
            outcome?;
        }
        Ok(())
    }

    /// An order's facts in `generation`.
    pub async fn facts(&self, generation: u64, order: OrderId) -> StoreResult<Option<OrderFacts>> {
        Ok(self
            .facts
            .get(&facts_key(generation, order))
            .await?
            .map(|v| v.value.value))
    }

    /// The rows of `series` whose clustering key sorts after `after` and before `before`
    /// (both exclusive; none: unbounded), in order.
    pub async fn range(
        &self,
        generation: u64,
        series: &Series,
        mut after: Option<String>,
        before: Option<String>,
    ) -> StoreResult<Vec<(String, Arc<Cell>)>> {
        let partition = series.partition(generation);
        let mut out = Vec::new();
        loop {
            let range = ScanRange {
                after: after.clone(),
                before: before.clone(),
                limit: MAX_PAGE,
            };
            let page = self
                .rollups
                .store()
                .scan(Table::AnalyticsRollups, &partition, range)
                .await?;
            let last = page.rows.last().map(|r| r.key.clustering.clone());
            for row in page.rows {
                let cell = self.decoded.get_or_decode(&row)?;
                out.push((row.key.clustering, cell));
            }
            match (page.next, last) {
                (Some(_), Some(last)) => after = Some(last),
                _ => return Ok(out),
            }
        }
    }

    /// Deletes every rollup row and every order's facts of `generation`, which nothing may
    /// read any more (a generation a rebuild replaced, or one written only to compare).
    /// Returns how many rows went.
    pub async fn drop_generation(&self, generation: u64) -> StoreResult<u64> {
        let prefix = format!("{generation}/");
        let store = self.rollups.store();
        let mut deleted = 0;
        for table in [Table::AnalyticsRollups, Table::AnalyticsOrders] {
            let mut cursor = None;
            loop {
                let page = store.scan_table(table, cursor, MAX_PAGE).await?;
                let doomed = page
                    .rows
                    .into_iter()
                    .filter(|row| row.key.partition.starts_with(&prefix))
                    .map(|row| (row.key, row.version));
                let outcomes: Vec<StoreResult<Cas>> = stream::iter(doomed)
                    .map(|(key, version)| {
                        let store = store.clone();
                        async move { store.delete(table, &key, version).await }
                    })
                    .buffer_unordered(CONCURRENCY)
                    .collect()
                    .await;
                for outcome in outcomes {
                    if let Cas::Applied(_) = outcome? {
                        deleted += 1;
                    }
                }
                match page.next {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
        }
        Ok(deleted)
    }

    /// Every rollup row of `generation`, in key order (for comparisons).
    pub async fn all_cells(&self, generation: u64) -> StoreResult<Vec<(Key, Cell)>> {
        let prefix = format!("{generation}/");
        let mut out = Vec::new();
        self.rollups
            .for_each(|key, row| {
                if key.partition.starts_with(&prefix) {
                    out.push((key, row.value.value));
                }
            })
            .await?;
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

fn infallible(e: ModifyError<std::convert::Infallible>) -> StoreError {
    match e {
        ModifyError::Store(e) => e,
        ModifyError::Rejected(never) => match never {},
    }
}
