//! Rows listed in an index whose entry moves when the row changes (a ticket under its status,
//! a reported item under open or decided), kept truthful without writing two rows atomically.
//!
//! The row is the truth; an index entry is a pointer (`{pk, ck}` of the row) stored under the
//! partition and clustering key the row's current state calls for ([`IndexedRows::entry`]).
//! A change goes in four steps, each idempotent:
//!
//! 1. insert the entry the new state calls for (if absent);
//! 2. write the row by compare-and-set (a lost race starts over from 1);
//! 3. delete the entry of the old state, if it differs;
//! 4. read the row again and insert the entry its state calls for.
//!
//! So an entry is written before the row needs it and a process killed between any two steps
//! leaves at most an extra entry, never a missing one. Step 4 covers the one way an entry can
//! still go missing: two changes racing, where the slower one's step 3 deletes the entry the
//! faster one has just made needed again. Extra entries are harmless: a reader checks each
//! entry against its row ([`IndexedRows::page`]), skips the ones that no longer match, deletes
//! them and makes sure the right entry exists.

use futures_util::future::join_all;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::typed::{Change, MODIFY_ATTEMPTS, ModifyError, Rows, Versioned};
use super::{Key, ScanRange, SharedStore, StoreError, StoreResult, Table, Version};

/// Where a row is listed: partition and clustering key of its entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub partition: String,
    pub clustering: String,
}

/// An index entry: the key of the row it lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pointer {
    pub pk: String,
    pub ck: String,
}

impl Pointer {
    fn key(&self) -> Key {
        Key::new(self.pk.clone(), self.ck.clone())
    }
}

/// Rows of one table with their entries in an index table.
pub struct IndexedRows<T> {
    pub rows: Rows<T>,
    index: Rows<Pointer>,
    entry: fn(&T) -> Entry,
}

impl<T> Clone for IndexedRows<T> {
    fn clone(&self) -> Self {
        IndexedRows {
            rows: self.rows.clone(),
            index: self.index.clone(),
            entry: self.entry,
        }
    }
}

/// One listed row and the clustering key of its entry (the cursor to continue after).
pub type Listed<T> = (String, Versioned<T>);

impl<T: Serialize + DeserializeOwned + Clone> IndexedRows<T> {
    /// Rows of `table` listed in `index` where `entry` says.
    pub fn new(store: SharedStore, table: Table, index: Table, entry: fn(&T) -> Entry) -> Self {
        IndexedRows {
            rows: Rows::new(store.clone(), table),
            index: Rows::new(store, index),
            entry,
        }
    }

    async fn ensure(&self, entry: &Entry, row: &Key) -> StoreResult<()> {
        let pointer = Pointer {
            pk: row.partition.clone(),
            ck: row.clustering.clone(),
        };
        // Already there (the same pointer: an entry's key names its row) is as good.
        let _already = self
            .index
            .insert(&Key::new(&entry.partition, &entry.clustering), &pointer)
            .await?;
        Ok(())
    }

    async fn remove(&self, entry: &Entry) -> StoreResult<()> {
        let key = Key::new(&entry.partition, &entry.clustering);
        if let Some(found) = self.index.get(&key).await? {
            // A conflict means someone re-made the entry meanwhile; they know why.
            let _remade = self.index.delete(&key, found.version).await?;
        }
        Ok(())
    }

    /// Step 4: the entry the row's state calls for exists.
    async fn settle(&self, key: &Key) -> StoreResult<()> {
        if let Some(now) = self.rows.get(key).await? {
            self.ensure(&(self.entry)(&now.value), key).await?;
        }
        Ok(())
    }

    pub async fn get(&self, key: &Key) -> StoreResult<Option<Versioned<T>>> {
        self.rows.get(key).await
    }

    /// Reads the row, lets `step` decide, and writes it by compare-and-set with its entries
    /// moved as the module docs say (deleting is not offered: listed rows stay).
    pub async fn modify<R, E>(
        &self,
        key: &Key,
        mut step: impl FnMut(Option<&T>) -> Result<Change<T, R>, E>,
    ) -> Result<(R, Version), ModifyError<E>> {
        for _ in 0..MODIFY_ATTEMPTS {
            let current = self.rows.get(key).await?;
            let change = step(current.as_ref().map(|c| &c.value)).map_err(ModifyError::Rejected)?;
            let (value, r) = match change {
                Change::Put(value, r) => (value, r),
                Change::Keep(r) => {
                    if current.is_some() {
                        // Nothing to write, but a reader may be waiting on a lost entry.
                        self.settle(key).await?;
                    }
                    return Ok((r, current.map_or(0, |c| c.version)));
                }
                Change::Delete(_) => {
                    return Err(ModifyError::Store(StoreError::Misuse(
                        "indexed rows are not deleted".to_owned(),
                    )));
                }
            };
            let new_entry = (self.entry)(&value);
            self.ensure(&new_entry, key).await?;
            let written = match &current {
                None => self.rows.insert(key, &value).await?,
                Some(cur) => self.rows.update(key, cur.version, &value).await?,
            };
            let Ok(version) = written else {
                continue;
            };
            if let Some(old) = current.map(|c| (self.entry)(&c.value))
                && old != new_entry
            {
                self.remove(&old).await?;
            }
            self.settle(key).await?;
            return Ok((r, version));
        }
        Err(ModifyError::Store(StoreError::Unavailable(format!(
            "gave up after {MODIFY_ATTEMPTS} conflicting writes"
        ))))
    }

    /// Rows listed in `partition` within `range`, in entry order, each checked against its
    /// row: stale entries are skipped and repaired, `keep` filters the rest. Reads at most
    /// `budget` entries; the cursor continues after the last entry read (absent at the end).
    pub async fn page(
        &self,
        partition: &str,
        mut range: ScanRange,
        limit: usize,
        budget: usize,
        mut keep: impl FnMut(&T) -> bool,
    ) -> StoreResult<(Vec<Listed<T>>, Option<String>)> {
        let mut found = Vec::new();
        let mut read = 0;
        loop {
            range.limit = (limit - found.len()).clamp(1, super::MAX_PAGE);
            let (entries, next) = self.index.scan(partition, range.clone()).await?;
            let keys: Vec<Key> = entries.iter().map(|(_, e)| e.value.key()).collect();
            let rows = join_all(keys.iter().map(|key| self.rows.get(key))).await;
            let mut last = None;
            for ((entry_key, pointer), row) in entries.into_iter().zip(rows) {
                read += 1;
                last = Some(entry_key.clustering.clone());
                let Some(row) = row? else {
                    // Written ahead of a row that is not there (yet, or ever): not listed.
                    continue;
                };
                let wanted = (self.entry)(&row.value);
                if wanted.partition != partition || wanted.clustering != entry_key.clustering {
                    self.remove(&Entry {
                        partition: partition.to_owned(),
                        clustering: entry_key.clustering.clone(),
                    })
                    .await?;
                    self.settle(&pointer.value.key()).await?;
                    continue;
                }
                if keep(&row.value) {
                    found.push((entry_key.clustering, row));
                    if found.len() == limit {
                        break;
                    }
                }
            }
            let more = next.is_some() || found.len() == limit;
            if found.len() == limit || !more || read >= budget {
                let cursor = if more || found.len() == limit {
                    last
                } else {
                    None
                };
                return Ok((found, cursor));
            }
            range.after = last;
        }
    }
}
