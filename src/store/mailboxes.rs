//! One account per mailbox across the change to canonical emails: the backfill that gives every
//! existing account its canonical index row, and the report of mailboxes several accounts
//! share (registered before canonical keys, as case variants of one address).
//!
//! Nothing here merges or disables accounts: which of two accounts a person keeps is for an
//! operator to decide with them. Until then one account holds the canonical row (and so blocks
//! every new registration of the mailbox and answers to every other spelling), and the others
//! still log in with the exact address they registered with, through their legacy rows. The
//! holder is an account whose legacy row *was* the canonical key, since it has no other row to
//! be found by; otherwise the oldest.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::users::{EmailIndex, UserRepo, email_key, legacy_email_key};
use super::{Cas, Key, MAX_PAGE, Page, StoreError, StoreResult, Table, decode, encode};
use crate::domain::account::User;
use crate::domain::ids::UserId;

/// Row in `user_emails` recording that the backfill ran. Its key has no `@`, so no address
/// ever maps to it.
const BACKFILL_DONE: &str = "~backfill:canonical-emails:v1";

/// Compare-and-set rounds one account's claim may take before giving up.
const CLAIM_ATTEMPTS: usize = 8;

#[derive(Debug, Serialize, Deserialize)]
struct BackfillDone {
    at: DateTime<Utc>,
}

/// What a backfill did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Backfill {
    /// Live (not erased) accounts seen.
    pub accounts: usize,
    /// Canonical rows written or taken over.
    pub claimed: usize,
    /// Accounts whose mailbox an older account holds: duplicates to report.
    pub shared: usize,
}

/// One account in a [`SharedMailbox`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxAccount {
    pub user_id: UserId,
    /// The address as the account registered it.
    pub email: String,
    pub created_at: DateTime<Utc>,
}

/// A mailbox that more than one account names, oldest account first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedMailbox {
    pub canonical: String,
    pub accounts: Vec<MailboxAccount>,
}

/// How one account's canonical claim ended.
enum Claim {
    Held,
    Claimed,
    Shared,
}

impl UserRepo {
    /// Gives every live account a row under its canonical email, unless a backfill already
    /// completed on this store (`force` runs it anyway: after a rolling upgrade, where nodes of
    /// the old version may have registered accounts since). `None` when skipped.
    ///
    /// Safe to run on several nodes at once and to interrupt: every write is a
    /// compare-and-set, and the completion row is written last.
    pub async fn backfill_email_index(&self, force: bool) -> StoreResult<Option<Backfill>> {
        let done = Key::single(BACKFILL_DONE);
        if !force && self.store.get(Table::UserEmails, &done).await?.is_some() {
            return Ok(None);
        }
        let mut report = Backfill::default();
        let mut cursor = None;
        loop {
            let (users, next) = self.readable_page(cursor).await?;
            for user in users.iter().filter(|u| !u.erased) {
                report.accounts += 1;
                match self.claim_for_oldest(user).await? {
                    Claim::Held => {}
                    Claim::Claimed => report.claimed += 1,
                    Claim::Shared => report.shared += 1,
                }
            }
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let mark = encode(
            Table::UserEmails,
            &BackfillDone {
                at: chrono::Utc::now(),
            },
        )?;
        // Another node finishing first wrote the same fact.
        let _ = self
            .store
            .insert(Table::UserEmails, &done, mark, None)
            .await?;
        Ok(Some(report))
    }

    /// Claims `user`'s canonical row, or leaves it to a live account of the same mailbox that
    /// takes precedence, so the outcome does not depend on scan order or on which node ran
    /// first.
    async fn claim_for_oldest(&self, user: &User) -> StoreResult<Claim> {
        let key = email_key(&user.email);
        let index = encode(Table::UserEmails, &EmailIndex { user_id: user.id })?;
        for _ in 0..CLAIM_ATTEMPTS {
            let row = match self
                .store
                .insert(Table::UserEmails, &key, index.clone(), None)
                .await?
            {
                Cas::Applied(_) => return Ok(Claim::Claimed),
                Cas::Conflict(Some(row)) => row,
                // Deleted under us: try again.
                Cas::Conflict(None) => continue,
            };
            let holder = decode::<EmailIndex>(Table::UserEmails, &row.data)?.user_id;
            if holder == user.id {
                return Ok(Claim::Held);
            }
            let rival = self
                .get(holder)
                .await?
                .map(|v| v.value)
                .filter(|u| !u.erased && u.email == user.email);
            if rival
                .as_ref()
                .is_some_and(|r| precedence(r) <= precedence(user))
            {
                return Ok(Claim::Shared);
            }
            if self
                .store
                .update(Table::UserEmails, &key, row.version, index.clone(), None)
                .await?
                .is_applied()
            {
                return Ok(if rival.is_some() {
                    Claim::Shared
                } else {
                    Claim::Claimed
                });
            }
        }
        Err(StoreError::Unavailable(format!(
            "the email index row of account {} kept changing",
            user.id
        )))
    }

    /// A page of accounts, skipping (and logging) rows that cannot be read, so one bad row
    /// cannot stop a scan of every account.
    async fn readable_page(
        &self,
        cursor: Option<String>,
    ) -> StoreResult<(Vec<User>, Option<String>)> {
        let Page { rows, next } = self
            .store
            .scan_table(Table::Users, cursor, MAX_PAGE)
            .await?;
        let users = rows
            .iter()
            .filter_map(|row| match decode::<User>(Table::Users, &row.data) {
                Ok(user) => Some(user),
                Err(e) => {
                    tracing::warn!(key = %row.key.partition, error = %e, "unreadable account skipped");
                    None
                }
            })
            .collect();
        Ok((users, next))
    }

    /// Every mailbox that more than one live account names, by canonical form.
    pub async fn shared_mailboxes(&self) -> StoreResult<Vec<SharedMailbox>> {
        let mut by_mailbox: BTreeMap<String, Vec<MailboxAccount>> = BTreeMap::new();
        let mut cursor = None;
        loop {
            let (users, next) = self.readable_page(cursor).await?;
            for user in users.into_iter().filter(|u| !u.erased) {
                by_mailbox
                    .entry(user.email.canonical().to_owned())
                    .or_default()
                    .push(MailboxAccount {
                        user_id: user.id,
                        email: user.email.as_str().to_owned(),
                        created_at: user.created_at,
                    });
            }
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        Ok(by_mailbox
            .into_iter()
            .filter(|(_, accounts)| accounts.len() > 1)
            .map(|(canonical, mut accounts)| {
                accounts.sort_by_key(|a| (a.created_at, a.user_id));
                SharedMailbox {
                    canonical,
                    accounts,
                }
            })
            .collect())
    }
}

/// Which of two accounts of one mailbox holds its canonical row: the lower. First those without
/// a legacy row of their own (it was the canonical key), then the oldest.
fn precedence(user: &User) -> (bool, DateTime<Utc>, UserId) {
    (
        legacy_email_key(&user.email).is_some(),
        user.created_at,
        user.id,
    )
}
