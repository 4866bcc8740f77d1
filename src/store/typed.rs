//! Typed access to one table: rows decoded into domain values with their versions, and the
//! read–modify–compare-and-set loop every aggregate uses.

use std::marker::PhantomData;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Cas, Key, Row, ScanRange, SharedStore, StoreError, StoreResult, Table, Version};
use super::{decode, encode};

/// How many times [`Rows::modify`] re-reads and retries after losing a race.
pub const MODIFY_ATTEMPTS: usize = 64;

/// A value together with the version of the row it was read from (0: no row yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    pub version: Version,
    pub value: T,
}

/// What a [`Rows::modify`] step decided.
pub enum Change<T, R> {
    /// Write this value (insert or update) and return `R`.
    Put(T, R),
    /// Delete the row (if it exists) and return `R`.
    Delete(R),
    /// Leave the row as it is and return `R`.
    Keep(R),
}

/// Why a [`Rows::modify`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ModifyError<E> {
    /// The step refused the change.
    #[error("{0}")]
    Rejected(E),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Typed rows of one table.
pub struct Rows<T> {
    store: SharedStore,
    table: Table,
    ttl: Option<Duration>,
    _value: PhantomData<fn() -> T>,
}

impl<T> Clone for Rows<T> {
    fn clone(&self) -> Self {
        Rows {
            store: self.store.clone(),
            table: self.table,
            ttl: self.ttl,
            _value: PhantomData,
        }
    }
}

impl<T: Serialize + DeserializeOwned> Rows<T> {
    pub fn new(store: SharedStore, table: Table) -> Self {
        Rows {
            store,
            table,
            ttl: None,
            _value: PhantomData,
        }
    }

    /// Every write of these rows sets this time to live.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    fn decode_row(&self, row: &Row) -> StoreResult<Versioned<T>> {
        Ok(Versioned {
            version: row.version,
            value: decode(self.table, &row.data)?,
        })
    }

    fn conflict(&self, cas: Cas) -> StoreResult<Result<Version, Option<Versioned<T>>>> {
        match cas {
            Cas::Applied(v) => Ok(Ok(v)),
            Cas::Conflict(None) => Ok(Err(None)),
            Cas::Conflict(Some(row)) => Ok(Err(Some(self.decode_row(&row)?))),
        }
    }

    pub async fn get(&self, key: &Key) -> StoreResult<Option<Versioned<T>>> {
        match self.store.get(self.table, key).await? {
            Some(row) => self.decode_row(&row).map(Some),
            None => Ok(None),
        }
    }

    /// Creates the row if absent; on conflict, the row that is there.
    pub async fn insert(
        &self,
        key: &Key,
        value: &T,
    ) -> StoreResult<Result<Version, Option<Versioned<T>>>> {
        let data = encode(self.table, value)?;
        let cas = self.store.insert(self.table, key, data, self.ttl).await?;
        self.conflict(cas)
    }

    /// Replaces the row if still at `expected`; on conflict, the row as it is now.
    pub async fn update(
        &self,
        key: &Key,
        expected: Version,
        value: &T,
    ) -> StoreResult<Result<Version, Option<Versioned<T>>>> {
        let data = encode(self.table, value)?;
        let cas = self
            .store
            .update(self.table, key, expected, data, self.ttl)
            .await?;
        self.conflict(cas)
    }

    pub async fn delete(
        &self,
        key: &Key,
        expected: Version,
    ) -> StoreResult<Result<Version, Option<Versioned<T>>>> {
        let cas = self.store.delete(self.table, key, expected).await?;
        self.conflict(cas)
    }

    /// One page of a partition, in clustering order.
    pub async fn scan(
        &self,
        partition: &str,
        range: ScanRange,
    ) -> StoreResult<(Vec<(Key, Versioned<T>)>, Option<String>)> {
        let page = self.store.scan(self.table, partition, range).await?;
        let rows = page
            .rows
            .iter()
            .map(|row| Ok((row.key.clone(), self.decode_row(row)?)))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok((rows, page.next))
    }

    /// One page of the whole table.
    pub async fn scan_table(
        &self,
        cursor: Option<String>,
        limit: usize,
    ) -> StoreResult<(Vec<(Key, Versioned<T>)>, Option<String>)> {
        let page = self.store.scan_table(self.table, cursor, limit).await?;
        let rows = page
            .rows
            .iter()
            .map(|row| Ok((row.key.clone(), self.decode_row(row)?)))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok((rows, page.next))
    }

    /// Hands every row of the table to `each`, a page at a time.
    pub async fn for_each(&self, mut each: impl FnMut(Key, Versioned<T>)) -> StoreResult<()> {
        let mut cursor = None;
        loop {
            let (rows, next) = self.scan_table(cursor, super::MAX_PAGE).await?;
            let last = rows.is_empty() || next.is_none();
            for (key, row) in rows {
                each(key, row);
            }
            if last {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// Reads the row, lets `step` decide, and writes by compare-and-set; on losing a race it
    /// re-reads and asks `step` again (with a short jittered pause), so concurrent writers on
    /// any node never lose each other's changes.
    pub async fn modify<R, E>(
        &self,
        key: &Key,
        mut step: impl FnMut(Option<&T>) -> Result<Change<T, R>, E>,
    ) -> Result<(R, Version), ModifyError<E>> {
        let mut current = self.get(key).await?;
        for attempt in 0..MODIFY_ATTEMPTS {
            let change = step(current.as_ref().map(|v| &v.value)).map_err(ModifyError::Rejected)?;
            let outcome = match (change, &current) {
                (Change::Keep(r), Some(cur)) => return Ok((r, cur.version)),
                (Change::Keep(r), None) | (Change::Delete(r), None) => return Ok((r, 0)),
                (Change::Put(value, r), None) => self.insert(key, &value).await?.map(|v| (r, v)),
                (Change::Put(value, r), Some(cur)) => {
                    self.update(key, cur.version, &value).await?.map(|v| (r, v))
                }
                (Change::Delete(r), Some(cur)) => {
                    self.delete(key, cur.version).await?.map(|_| (r, 0))
                }
            };
            match outcome {
                Ok(done) => return Ok(done),
                Err(now) => {
                    current = now;
                    if attempt > 2 {
                        let pause = rand::random_range(0..=(1u64 << attempt.min(6)));
                        tokio::time::sleep(Duration::from_millis(pause)).await;
                    }
                }
            }
        }
        Err(ModifyError::Store(StoreError::Unavailable(format!(
            "{}: gave up after {MODIFY_ATTEMPTS} conflicting writes",
            self.table
        ))))
    }
}
