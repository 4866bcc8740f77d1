//! Refresh-token families in the store: partition = user, clustering = family id. Only hashes
//! of refresh tokens are kept. A family row expires at its absolute lifetime.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::carts::Versioned;
use super::{Cas, Key, ScanRange, SharedStore, StoreResult, Table, Version, decode, encode};
use crate::domain::ids::{SessionId, UserId};

/// How many superseded token hashes a family remembers to recognise reuse.
pub const REMEMBERED_HASHES: usize = 32;

/// One login's chain of refresh tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshFamily {
    pub id: SessionId,
    pub user_id: UserId,
    /// SHA-256 (hex) of the one refresh token that is valid now.
    pub current: String,
    /// Hashes of tokens this family already rotated away from, newest last.
    pub previous: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked: bool,
    /// How the user authenticated at login (`pwd`, `otp`).
    pub amr: Vec<String>,
    pub auth_time: DateTime<Utc>,
}

/// Typed access to `sessions`.
#[derive(Clone)]
pub struct SessionRepo {
    store: SharedStore,
}

impl SessionRepo {
    pub fn new(store: SharedStore) -> Self {
        SessionRepo { store }
    }

    pub async fn create(&self, family: &RefreshFamily) -> StoreResult<Version> {
        let ttl = (family.expires_at - family.created_at).to_std().ok();
        let data = encode(Table::Sessions, family)?;
        match self
            .store
            .insert(Table::Sessions, &key(family.user_id, family.id), data, ttl)
            .await?
        {
            Cas::Applied(v) => Ok(v),
            Cas::Conflict(_) => Err(super::StoreError::Misuse(format!(
                "session {} exists",
                family.id
            ))),
        }
    }

    pub async fn get(
        &self,
        user_id: UserId,
        id: SessionId,
    ) -> StoreResult<Option<Versioned<RefreshFamily>>> {
        match self.store.get(Table::Sessions, &key(user_id, id)).await? {
            Some(row) => Ok(Some(Versioned {
                version: row.version,
                value: decode(Table::Sessions, &row.data)?,
            })),
            None => Ok(None),
        }
    }

    /// Saves the family if unchanged since `expected`; `false` when another write won.
    pub async fn update(&self, family: &RefreshFamily, expected: Version) -> StoreResult<bool> {
        let ttl = (family.expires_at - Utc::now()).to_std().ok();
        let data = encode(Table::Sessions, family)?;
        Ok(self
            .store
            .update(
                Table::Sessions,
                &key(family.user_id, family.id),
                expected,
                data,
                ttl,
            )
            .await?
            .is_applied())
    }

    /// Every family of a user.
    pub async fn list(&self, user_id: UserId) -> StoreResult<Vec<Versioned<RefreshFamily>>> {
        let partition = user_id.to_string();
        let mut out = Vec::new();
        let mut range = ScanRange::first(500);
        loop {
            let page = self.store.scan(Table::Sessions, &partition, range).await?;
            for row in &page.rows {
                out.push(Versioned {
                    version: row.version,
                    value: decode(Table::Sessions, &row.data)?,
                });
            }
            match page.next {
                Some(next) => range = ScanRange::after(next, 500),
                None => return Ok(out),
            }
        }
    }
}

fn key(user_id: UserId, id: SessionId) -> Key {
    Key::new(user_id.to_string(), id.to_string())
}
