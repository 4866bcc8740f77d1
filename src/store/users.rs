//! Accounts in the store: one versioned row per user, and a unique index from canonical
//! email (see [`Email::canonical`]) to user id (`user_emails`), claimed with insert-if-absent
//! before the account row is written so two registrations of one mailbox cannot both succeed.
//!
//! Versions before canonical emails keyed the index by the address as typed with only its
//! domain lowercased. Such *legacy* rows stay readable: [`UserRepo::find_by_email`] falls back
//! to them, and the backfill in `mailboxes` gives every account its canonical row.

use serde::{Deserialize, Serialize};

use super::carts::Versioned;
use super::{Cas, Key, Page, SharedStore, StoreError, StoreResult, Table, Version, decode, encode};
use crate::domain::account::User;
use crate::domain::identity::Email;
use crate::domain::ids::UserId;

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct EmailIndex {
    pub(super) user_id: UserId,
}

/// Why an account could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("an account with this email exists")]
    EmailTaken,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Typed access to `users` and `user_emails`.
#[derive(Clone)]
pub struct UserRepo {
    pub(super) store: SharedStore,
}

impl UserRepo {
    pub fn new(store: SharedStore) -> Self {
        UserRepo { store }
    }

    /// Claims `email` for `user_id`: `false` when another live account holds it. A claim
    /// whose account row never got written (a crash between the two writes of `create`) is
    /// taken over.
    pub async fn claim_email(&self, email: &Email, user_id: UserId) -> StoreResult<bool> {
        let key = email_key(email);
        let index = encode(Table::UserEmails, &EmailIndex { user_id })?;
        match self
            .store
            .insert(Table::UserEmails, &key, index.clone(), None)
            .await?
        {
            Cas::Applied(_) => Ok(true),
            Cas::Conflict(Some(row)) => {
                let claimed: EmailIndex = decode(Table::UserEmails, &row.data)?;
                if claimed.user_id == user_id {
                    return Ok(true);
                }
                if self
                    .get(claimed.user_id)
                    .await?
                    .is_some_and(|u| u.value.email == *email)
                {
                    return Ok(false);
                }
                Ok(self
                    .store
                    .update(Table::UserEmails, &key, row.version, index, None)
                    .await?
                    .is_applied())
            }
            Cas::Conflict(None) => Ok(false),
        }
    }

    /// Creates the account, claiming its email first.
    #[tracing::instrument(skip_all, fields(user_id = %user.id))]
    pub async fn create(&self, user: &User) -> Result<Version, CreateError> {
        if !self.claim_email(&user.email, user.id).await? {
            return Err(CreateError::EmailTaken);
        }
        let data = encode(Table::Users, user)?;
        match self
            .store
            .insert(Table::Users, &user_key(user.id), data, None)
            .await?
        {
            Cas::Applied(version) => {
                // Someone may have taken over the claim between our two writes; then the
                // account must not exist, so remove it again.
                if self.owner_of(&user.email).await? != Some(user.id) {
                    let _ = self
                        .store
                        .delete(Table::Users, &user_key(user.id), version)
                        .await;
                    return Err(CreateError::EmailTaken);
                }
                Ok(version)
            }
            Cas::Conflict(_) => Err(CreateError::Store(StoreError::Misuse(format!(
                "user id {} already exists",
                user.id
            )))),
        }
    }

    pub async fn get(&self, id: UserId) -> StoreResult<Option<Versioned<User>>> {
        match self.store.get(Table::Users, &user_key(id)).await? {
            Some(row) => Ok(Some(Versioned {
                version: row.version,
                value: decode(Table::Users, &row.data)?,
            })),
            None => Ok(None),
        }
    }

    /// The id of the account that owns `email`, if any.
    pub async fn owner_of(&self, email: &Email) -> StoreResult<Option<UserId>> {
        match self.store.get(Table::UserEmails, &email_key(email)).await? {
            Some(row) => Ok(Some(
                decode::<EmailIndex>(Table::UserEmails, &row.data)?.user_id,
            )),
            None => Ok(None),
        }
    }

    /// The account whose mailbox `email` names.
    ///
    /// An account registered before canonical keys, whose mailbox an older account also holds
    /// (see `report-duplicate-emails`), is found by the exact address it registered with, through
    /// its legacy index row.
    pub async fn find_by_email(&self, email: &Email) -> StoreResult<Option<Versioned<User>>> {
        let owner = match self.owner_of(email).await? {
            Some(id) => self.get(id).await?.filter(|u| u.value.email == *email),
            None => None,
        };
        if owner
            .as_ref()
            .is_some_and(|u| u.value.email.as_str() == email.as_str())
        {
            return Ok(owner);
        }
        let Some(legacy) = legacy_email_key(email) else {
            return Ok(owner);
        };
        let Some(row) = self.store.get(Table::UserEmails, &legacy).await? else {
            return Ok(owner);
        };
        let holder = decode::<EmailIndex>(Table::UserEmails, &row.data)?.user_id;
        if owner.as_ref().is_some_and(|u| u.value.id == holder) {
            return Ok(owner);
        }
        let exact = self
            .get(holder)
            .await?
            .filter(|u| !u.value.erased && u.value.email.as_str() == legacy.partition);
        Ok(exact.or(owner))
    }

    /// Saves `user` if its row is still at `expected`; `None` on a conflict.
    pub async fn update(&self, user: &User, expected: Version) -> StoreResult<Option<Version>> {
        let data = encode(Table::Users, user)?;
        match self
            .store
            .update(Table::Users, &user_key(user.id), expected, data, None)
            .await?
        {
            Cas::Applied(version) => Ok(Some(version)),
            Cas::Conflict(_) => Ok(None),
        }
    }

    /// Releases the email claims held by `user_id` (after an account was erased or moved to
    /// another address): the canonical row and a legacy one.
    pub async fn release_email(&self, email: &Email, user_id: UserId) -> StoreResult<()> {
        for key in std::iter::once(email_key(email)).chain(legacy_email_key(email)) {
            if let Some(row) = self.store.get(Table::UserEmails, &key).await? {
                let claimed: EmailIndex = decode(Table::UserEmails, &row.data)?;
                if claimed.user_id == user_id {
                    self.store
                        .delete(Table::UserEmails, &key, row.version)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// A page of all accounts, in storage order.
    pub async fn list(
        &self,
        cursor: Option<String>,
        limit: usize,
    ) -> StoreResult<(Vec<User>, Option<String>)> {
        let Page { rows, next } = self.store.scan_table(Table::Users, cursor, limit).await?;
        let users = rows
            .iter()
            .map(|row| decode(Table::Users, &row.data))
            .collect::<StoreResult<Vec<User>>>()?;
        Ok((users, next))
    }
}

fn user_key(id: UserId) -> Key {
    Key::single(id.to_string())
}

pub(super) fn email_key(email: &Email) -> Key {
    Key::single(email.canonical().to_owned())
}

/// The key versions before canonical emails wrote for `email`: the address as typed with its
/// domain lowercased. `None` when that is the canonical key anyway, or when the domain is not
/// ASCII (those versions refused such addresses).
pub(super) fn legacy_email_key(email: &Email) -> Option<Key> {
    let (local, domain) = email.as_str().rsplit_once('@')?;
    if !domain.is_ascii() {
        return None;
    }
    let legacy = format!("{local}@{}", domain.to_ascii_lowercase());
    (legacy != email.canonical()).then(|| Key::single(legacy))
}
