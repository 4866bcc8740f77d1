//! The platform's settings in the store: the version in force in one row changed by
//! compare-and-set (`current`), and each version kept in partition `history`.
//!
//! A change writes `current` first (the truth), then its history row. A node that dies in
//! between leaves that version out of the history until the next change (or the next start),
//! which writes the history row of the version it replaces before replacing it.

use super::typed::{Change, ModifyError, Rows};
use super::{Key, ScanRange, SharedStore, StoreResult, Table, seq_key};
use crate::domain::settings::SettingsVersion;

const CURRENT: &str = "current";
const HISTORY: &str = "history";

/// Why a change was not kept.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError<E> {
    /// The step refused.
    #[error("{0}")]
    Refused(E),
    #[error(transparent)]
    Store(#[from] super::StoreError),
}

/// Typed access to `platform_settings`.
#[derive(Clone)]
pub struct SettingsRepo {
    rows: Rows<SettingsVersion>,
}

impl SettingsRepo {
    pub fn new(store: SharedStore) -> Self {
        SettingsRepo {
            rows: Rows::new(store, Table::PlatformSettings),
        }
    }

    /// The version in force; `None` before the platform's first start.
    pub async fn current(&self) -> StoreResult<Option<SettingsVersion>> {
        Ok(self.rows.get(&Key::single(CURRENT)).await?.map(|v| v.value))
    }

    /// Keeps `first` as version 1 unless some version is in force already; returns the one in
    /// force either way.
    pub async fn initialise(&self, first: SettingsVersion) -> StoreResult<SettingsVersion> {
        let current = match self.rows.insert(&Key::single(CURRENT), &first).await? {
            Ok(_) => first,
            Err(Some(there)) => there.value,
            Err(None) => first,
        };
        self.keep_history(&current).await?;
        Ok(current)
    }

    /// Replaces the version in force by what `step` makes of it (re-read and asked again on a
    /// lost race); returns the version replaced and the new one.
    pub async fn change<E>(
        &self,
        mut step: impl FnMut(&SettingsVersion) -> Result<SettingsVersion, E>,
    ) -> Result<(SettingsVersion, SettingsVersion), ChangeError<E>> {
        let mut replaced = None;
        let outcome = self
            .rows
            .modify(&Key::single(CURRENT), |current| {
                let Some(current) = current else {
                    return Ok(Change::Keep(None));
                };
                replaced = Some(current.clone());
                let next = step(current)?;
                Ok(Change::Put(next.clone(), Some(next)))
            })
            .await;
        let next = match outcome {
            Ok((Some(next), _)) => next,
            Ok((None, _)) => {
                return Err(ChangeError::Store(super::StoreError::Misuse(
                    "settings changed before they were initialised".into(),
                )));
            }
            Err(ModifyError::Rejected(e)) => return Err(ChangeError::Refused(e)),
            Err(ModifyError::Store(e)) => return Err(e.into()),
        };
        let Some(replaced) = replaced else {
            return Err(ChangeError::Store(super::StoreError::Misuse(
                "settings changed without a version in force".into(),
            )));
        };
        // The replaced version first: a change after a crash fills the gap it left.
        self.keep_history(&replaced).await?;
        self.keep_history(&next).await?;
        Ok((replaced, next))
    }

    async fn keep_history(&self, version: &SettingsVersion) -> StoreResult<()> {
        let key = Key::new(HISTORY, seq_key(version.version));
        // Present already: the same version, written by an earlier attempt.
        let _ = self.rows.insert(&key, version).await?;
        Ok(())
    }

    /// Versions kept, newest first, `before` the given version number.
    pub async fn history(
        &self,
        before: Option<u64>,
        limit: usize,
    ) -> StoreResult<(Vec<SettingsVersion>, Option<u64>)> {
        // Clustering order is ascending: read the page that ends just before `before`.
        let end = match before {
            Some(v) => v,
            None => match self.current().await? {
                Some(c) => c.version + 1,
                None => return Ok((Vec::new(), None)),
            },
        };
        let start = end.saturating_sub(limit as u64).max(1);
        let range = ScanRange {
            after: Some(seq_key(start.saturating_sub(1))),
            before: Some(seq_key(end)),
            limit,
        };
        let (rows, _) = self.rows.scan(HISTORY, range).await?;
        let mut versions: Vec<SettingsVersion> = rows.into_iter().map(|(_, v)| v.value).collect();
        versions.reverse();
        let next = (start > 1).then_some(start);
        Ok((versions, next))
    }
}
