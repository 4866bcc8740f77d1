//! Access-token revocation marks in the store: partition = minute since the epoch, clustering
//! = the mark's time in milliseconds (zero-padded, so keys sort by time) and the user id.
//!
//! Nodes read this table by time window (the last seconds, every second; the last token
//! lifetime, at start), which the minute partitions keep to a handful of small scans. Rows
//! carry a time to live: once every token a mark could refuse has expired, the mark is moot.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Key, MAX_PAGE, ScanRange, SharedStore, StoreResult, Table, decode, encode};
use crate::domain::ids::UserId;

const BUCKET_MS: i64 = 60_000;

/// "Every access token of `user_id` issued at or before `at_ms` is dead."
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationMark {
    pub user_id: UserId,
    /// Milliseconds since the epoch.
    pub at_ms: i64,
}

/// Typed access to `token_revocations`.
#[derive(Clone)]
pub struct RevocationRepo {
    store: SharedStore,
    ttl: Duration,
}

impl RevocationRepo {
    /// Rows written through this repository expire after `ttl`.
    pub fn new(store: SharedStore, ttl: Duration) -> Self {
        RevocationRepo { store, ttl }
    }

    /// Stores a mark; durable when this returns.
    pub async fn put(&self, mark: RevocationMark) -> StoreResult<()> {
        let key = Key::new(bucket(mark.at_ms).to_string(), clustering(mark));
        let data = encode(Table::TokenRevocations, &mark)?;
        self.store
            .put(Table::TokenRevocations, vec![(key, data)], Some(self.ttl))
            .await
    }

    /// Every stored mark with `from_ms <= at_ms <= to_ms` (and possibly a few just past
    /// `to_ms` in its last minute), oldest first.
    pub async fn between(&self, from_ms: i64, to_ms: i64) -> StoreResult<Vec<RevocationMark>> {
        let mut marks = Vec::new();
        let first = bucket(from_ms);
        for minute in first..=bucket(to_ms).max(first) {
            // `{from_ms:020}` sorts before every key of a mark at `from_ms` or later.
            let mut after = (minute == first).then(|| time_key(from_ms));
            loop {
                let range = ScanRange {
                    after: after.take(),
                    before: None,
                    limit: MAX_PAGE,
                };
                let page = self
                    .store
                    .scan(Table::TokenRevocations, &minute.to_string(), range)
                    .await?;
                for row in &page.rows {
                    marks.push(decode(Table::TokenRevocations, &row.data)?);
                }
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
        }
        Ok(marks)
    }
}

fn bucket(at_ms: i64) -> i64 {
    at_ms.max(0).div_euclid(BUCKET_MS)
}

fn time_key(at_ms: i64) -> String {
    format!("{:020}", at_ms.max(0))
}

fn clustering(mark: RevocationMark) -> String {
    format!(
        "{}.{}",
        time_key(mark.at_ms),
        mark.user_id.as_uuid().simple()
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::embedded::EmbeddedStore;

    #[tokio::test]
    async fn marks_are_read_back_by_time_window_across_minutes() {
        let dir = tempfile::tempdir().unwrap();
        let store: SharedStore = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let repo = RevocationRepo::new(store, Duration::from_secs(600));
        let base = 1_764_000_000_000 - 1_764_000_000_000 % BUCKET_MS;
        let marks: Vec<RevocationMark> = [base - 1, base, base + 5_000, base + BUCKET_MS + 1]
            .into_iter()
            .map(|at_ms| RevocationMark {
                user_id: UserId::new(),
                at_ms,
            })
            .collect();
        for mark in &marks {
            repo.put(*mark).await.unwrap();
        }
        assert_eq!(
            repo.between(base, base + 2 * BUCKET_MS).await.unwrap(),
            marks[1..]
        );
        assert_eq!(
            repo.between(base + 1, base + 5_000).await.unwrap(),
            marks[2..3]
        );
        assert_eq!(repo.between(base - 10, base - 1).await.unwrap(), marks[..1]);
    }
}
