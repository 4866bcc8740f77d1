//! What sign-in with identity providers and passkeys keeps: ceremonies waiting for their
//! second half, and the owner of every external credential.
//!
//! A ceremony's id is a bearer secret (the OpenID Connect `state`, a passkey challenge's
//! handle, a link token), so rows are keyed by its SHA-256 rather than the id itself. Taking a
//! ceremony is a conditional delete: of two requests racing with one id, one gets it.
//!
//! A credential row is claimed with `IF NOT EXISTS`, so one provider identity or passkey
//! belongs to one account whatever races with it.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::typed::Rows;
use super::{Key, SharedStore, StoreError, StoreResult, Table};
use crate::domain::ids::UserId;

/// The stored form of a ceremony: its kind and what it carries, as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ceremony {
    kind: String,
    body: serde_json::Value,
}

/// Ceremonies between their two halves.
#[derive(Clone)]
pub struct Ceremonies {
    rows: Rows<Ceremony>,
}

impl Ceremonies {
    pub fn new(store: SharedStore) -> Self {
        Ceremonies {
            rows: Rows::new(store, Table::SignInCeremonies),
        }
    }

    /// Keeps `body` under `id` for `ttl`. Ids are random, so a clash is a fault.
    pub async fn put<T: Serialize>(
        &self,
        kind: &str,
        id: &str,
        body: &T,
        ttl: Duration,
    ) -> StoreResult<()> {
        let body = serde_json::to_value(body).map_err(|e| StoreError::Corrupt {
            table: Table::SignInCeremonies,
            reason: e.to_string(),
        })?;
        let ceremony = Ceremony {
            kind: kind.to_owned(),
            body,
        };
        let rows = self.rows.clone().with_ttl(ttl);
        match rows.insert(&key(kind, id), &ceremony).await? {
            Ok(_) => Ok(()),
            Err(_) => Err(StoreError::Misuse("a ceremony id was issued twice".into())),
        }
    }

    /// Reads the ceremony `id` of `kind` without taking it.
    pub async fn peek<T: DeserializeOwned>(&self, kind: &str, id: &str) -> StoreResult<Option<T>> {
        match self.rows.get(&key(kind, id)).await? {
            Some(row) if row.value.kind == kind => serde_json::from_value(row.value.body)
                .map(Some)
                .map_err(|e| StoreError::Corrupt {
                    table: Table::SignInCeremonies,
                    reason: e.to_string(),
                }),
            _ => Ok(None),
        }
    }

    /// Takes the ceremony `id` of `kind`: `None` when there is none (never issued, expired,
    /// already taken, or of another kind).
    pub async fn take<T: DeserializeOwned>(&self, kind: &str, id: &str) -> StoreResult<Option<T>> {
        let key = key(kind, id);
        let Some(row) = self.rows.get(&key).await? else {
            return Ok(None);
        };
        if self.rows.delete(&key, row.version).await?.is_err() || row.value.kind != kind {
            return Ok(None);
        }
        serde_json::from_value(row.value.body)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                table: Table::SignInCeremonies,
                reason: e.to_string(),
            })
    }
}

fn key(kind: &str, id: &str) -> Key {
    let digest = Sha256::digest(id.as_bytes());
    Key::single(format!(
        "{kind}:{}",
        data_encoding::HEXLOWER.encode(&digest)
    ))
}

/// Who a credential belongs to.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Owner {
    user_id: UserId,
}

/// The owners of provider identities and passkeys.
#[derive(Clone)]
pub struct Credentials {
    rows: Rows<Owner>,
}

/// The key of a provider identity.
pub fn provider_identity(provider: &str, subject: &str) -> String {
    format!("oidc:{provider}:{subject}")
}

/// The key of a passkey, by its credential id (base64url).
pub fn passkey(credential_id: &str) -> String {
    format!("passkey:{credential_id}")
}

impl Credentials {
    pub fn new(store: SharedStore) -> Self {
        Credentials {
            rows: Rows::new(store, Table::SignInCredentials),
        }
    }

    /// The account `credential` belongs to.
    pub async fn owner(&self, credential: &str) -> StoreResult<Option<UserId>> {
        Ok(self
            .rows
            .get(&Key::single(credential))
            .await?
            .map(|row| row.value.user_id))
    }

    /// Gives `credential` to `user` unless it has an owner: `Ok` when it is now `user`'s
    /// (also when it already was), `Err` with the other owner otherwise.
    pub async fn claim(&self, credential: &str, user: UserId) -> StoreResult<Result<(), UserId>> {
        let key = Key::single(credential);
        match self.rows.insert(&key, &Owner { user_id: user }).await? {
            Ok(_) => Ok(Ok(())),
            Err(Some(row)) if row.value.user_id == user => Ok(Ok(())),
            Err(Some(row)) => Ok(Err(row.value.user_id)),
            Err(None) => Err(StoreError::Unavailable(
                "a credential's owner vanished during its claim".into(),
            )),
        }
    }

    /// Frees `credential` if `user` owns it.
    pub async fn release(&self, credential: &str, user: UserId) -> StoreResult<()> {
        let key = Key::single(credential);
        if let Some(row) = self.rows.get(&key).await?
            && row.value.user_id == user
        {
            // Losing this race means someone else changed it; it is not ours to delete then.
            let _ = self.rows.delete(&key, row.version).await?;
        }
        Ok(())
    }
}
