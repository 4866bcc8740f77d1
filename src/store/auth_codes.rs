//! One-time codes and single-use tokens in the store: one row per user and purpose, holding
//! a keyed hash of the code (never the code), its expiry, and how often it was tried. Issuing
//! a new code replaces the previous one of the same purpose.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::carts::Versioned;
use super::{Cas, Key, SharedStore, StoreResult, Table, Version, decode, encode};
use crate::domain::ids::UserId;

/// A stored code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthCode {
    /// Keyed hash (hex) of the code.
    pub digest: String,
    /// What the code was sent to (phone or email), so a changed address voids it.
    pub sent_to: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Wrong guesses so far.
    pub attempts: u32,
    pub used: bool,
}

/// Typed access to `auth_codes`.
#[derive(Clone)]
pub struct AuthCodeRepo {
    store: SharedStore,
}

impl AuthCodeRepo {
    pub fn new(store: SharedStore) -> Self {
        AuthCodeRepo { store }
    }

    pub async fn get(
        &self,
        user: UserId,
        purpose: &str,
    ) -> StoreResult<Option<Versioned<AuthCode>>> {
        match self
            .store
            .get(Table::AuthCodes, &key(user, purpose))
            .await?
        {
            Some(row) => Ok(Some(Versioned {
                version: row.version,
                value: decode(Table::AuthCodes, &row.data)?,
            })),
            None => Ok(None),
        }
    }

    /// Stores `code`, replacing whatever code of this purpose the user had.
    pub async fn replace(&self, user: UserId, purpose: &str, code: &AuthCode) -> StoreResult<()> {
        let ttl = (code.expires_at - code.created_at).to_std().ok();
        let data = encode(Table::AuthCodes, code)?;
        let key = key(user, purpose);
        for _ in 0..8 {
            let outcome = match self.store.get(Table::AuthCodes, &key).await? {
                None => {
                    self.store
                        .insert(Table::AuthCodes, &key, data.clone(), ttl)
                        .await?
                }
                Some(row) => {
                    self.store
                        .update(Table::AuthCodes, &key, row.version, data.clone(), ttl)
                        .await?
                }
            };
            if outcome.is_applied() {
                return Ok(());
            }
        }
        Err(super::StoreError::Unavailable(
            "auth code kept changing under this write".into(),
        ))
    }

    /// Saves a changed code if nobody changed it since `expected`; `false` when another write
    /// won (the caller re-reads: two guesses must not both count as the fifth).
    pub async fn update(
        &self,
        user: UserId,
        purpose: &str,
        code: &AuthCode,
        expected: Version,
    ) -> StoreResult<bool> {
        // Keep the row until the code's own expiry (at least a second, never forever).
        let ttl = (code.expires_at - Utc::now())
            .to_std()
            .unwrap_or_default()
            .max(std::time::Duration::from_secs(1));
        let data = encode(Table::AuthCodes, code)?;
        Ok(matches!(
            self.store
                .update(
                    Table::AuthCodes,
                    &key(user, purpose),
                    expected,
                    data,
                    Some(ttl)
                )
                .await?,
            Cas::Applied(_)
        ))
    }
}

fn key(user: UserId, purpose: &str) -> Key {
    Key::new(user.to_string(), purpose)
}
