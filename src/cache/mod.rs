//! Cache-aside for read-mostly lists (featured and popular products): Redis when configured,
//! so every node shares one copy and one invalidation; an in-process map otherwise.
//!
//! The cache is never the truth. A miss, an expired entry or an unreachable Redis all mean
//! "compute from the source", so a cache failure costs latency, never correctness.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::time::timeout;

use crate::redis_link::{COMMAND_TIMEOUT, RedisLink};

/// Most entries the in-process cache keeps; beyond that, the stalest are dropped.
pub const LOCAL_CAPACITY: usize = 1_024;

/// A key–value cache with expiry.
#[async_trait]
pub trait Cache: Send + Sync + 'static {
    /// Which backend this is, for logs.
    fn backend(&self) -> &'static str;

    /// The cached value, if present and fresh. Failures read as a miss.
    async fn get(&self, key: &str) -> Option<Bytes>;

    /// Stores `value` for `ttl`. Failures are logged and otherwise ignored.
    async fn set(&self, key: &str, value: Bytes, ttl: Duration);

    /// Forgets keys. Failures are logged; the entries then expire by their TTL.
    async fn delete(&self, keys: &[&str]);
}

pub type SharedCache = Arc<dyn Cache>;

/// The in-process cache of a single node.
#[derive(Default)]
pub struct LocalCache {
    entries: Mutex<HashMap<String, (Bytes, Instant)>>,
}

impl LocalCache {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Cache for LocalCache {
    fn backend(&self) -> &'static str {
        "local"
    }

    async fn get(&self, key: &str) -> Option<Bytes> {
        let entries = self.entries.lock();
        entries
            .get(key)
            .filter(|(_, expires)| *expires > Instant::now())
            .map(|(value, _)| value.clone())
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Duration) {
        let now = Instant::now();
        let mut entries = self.entries.lock();
        if entries.len() >= LOCAL_CAPACITY && !entries.contains_key(key) {
            entries.retain(|_, (_, expires)| *expires > now);
            if entries.len() >= LOCAL_CAPACITY
                && let Some(stalest) = entries
                    .iter()
                    .min_by_key(|(_, (_, expires))| *expires)
                    .map(|(k, _)| k.clone())
            {
                entries.remove(&stalest);
            }
        }
        entries.insert(key.to_owned(), (value, now + ttl));
    }

    async fn delete(&self, keys: &[&str]) {
        let mut entries = self.entries.lock();
        for key in keys {
            entries.remove(*key);
        }
    }
}

/// A cache in Redis, shared by every node with the same prefix.
pub struct RedisCache {
    link: RedisLink,
    prefix: String,
}

impl RedisCache {
    /// Parses the URL; nothing contacts Redis until the first command.
    pub fn new(url: &str, prefix: &str) -> Result<Self, String> {
        Ok(RedisCache {
            link: RedisLink::new(url)?,
            prefix: format!("{prefix}cache:"),
        })
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

#[async_trait]
impl Cache for RedisCache {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn get(&self, key: &str) -> Option<Bytes> {
        let full = self.key(key);
        let read = async {
            let mut conn = self.link.connection().await?;
            redis::cmd("GET")
                .arg(&full)
                .query_async::<Option<Vec<u8>>>(&mut conn)
                .await
                .map_err(|e| e.to_string())
        };
        match timeout(COMMAND_TIMEOUT, read).await {
            Ok(Ok(value)) => value.map(Bytes::from),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cache read failed; computing from the source");
                None
            }
            Err(_) => {
                tracing::warn!("cache read timed out; computing from the source");
                None
            }
        }
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Duration) {
        let full = self.key(key);
        let write = async {
            let mut conn = self.link.connection().await?;
            redis::cmd("SET")
                .arg(&full)
                .arg(value.as_ref())
                .arg("PX")
                .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
                .query_async::<()>(&mut conn)
                .await
                .map_err(|e| e.to_string())
        };
        match timeout(COMMAND_TIMEOUT, write).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cache write failed"),
            Err(_) => tracing::warn!("cache write timed out"),
        }
    }

    async fn delete(&self, keys: &[&str]) {
        if keys.is_empty() {
            return;
        }
        let full: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        let delete = async {
            let mut conn = self.link.connection().await?;
            redis::cmd("DEL")
                .arg(&full)
                .query_async::<()>(&mut conn)
                .await
                .map_err(|e| e.to_string())
        };
        match timeout(COMMAND_TIMEOUT, delete).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cache invalidation failed; entries expire by TTL")
            }
            Err(_) => tracing::warn!("cache invalidation timed out; entries expire by TTL"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_entries_expire_and_can_be_deleted() {
        let cache = LocalCache::new();
        cache
            .set("a", Bytes::from_static(b"1"), Duration::from_millis(30))
            .await;
        cache
            .set("b", Bytes::from_static(b"2"), Duration::from_secs(60))
            .await;
        assert_eq!(cache.get("a").await, Some(Bytes::from_static(b"1")));
        cache.delete(&["b"]).await;
        assert_eq!(cache.get("b").await, None);
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(cache.get("a").await, None);
    }

    #[tokio::test]
    async fn local_cache_stays_bounded() {
        let cache = LocalCache::new();
        for i in 0..(LOCAL_CAPACITY + 10) {
            cache
                .set(&i.to_string(), Bytes::new(), Duration::from_secs(60))
                .await;
        }
        assert!(cache.entries.lock().len() <= LOCAL_CAPACITY);
    }
}
