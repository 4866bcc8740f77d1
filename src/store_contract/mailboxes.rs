//! The canonical email index on the store: rows written by versions before addresses were
//! compared in canonical form are backfilled by a whole-table scan and conditional inserts,
//! and mailboxes several accounts share are reported, never merged.

use std::sync::Arc;

use anyhow::{Context as _, ensure};
use chrono::{Duration, Utc};

use crate::domain::account::User;
use crate::domain::identity::{Email, Role};
use crate::domain::ids::UserId;
use crate::identity::password::PasswordHasher;
use crate::store::users::UserRepo;
use crate::store::{Key, SharedStore, Table, encode};

/// Writes an account the way versions before canonical emails did: the index row keyed by the
/// address as typed with its domain lowercased. The account is `age_days` old and its password
/// is `password`.
pub async fn seed_legacy_account(
    store: &SharedStore,
    email: &str,
    age_days: i64,
    password: &str,
) -> anyhow::Result<UserId> {
    let now = Utc::now() - Duration::days(age_days);
    let hash = PasswordHasher::new()?.hash(password.to_owned()).await?;
    // Those versions stored the address with its domain lowercased, and keyed the index so.
    let (local, domain) = email
        .rsplit_once('@')
        .with_context(|| format!("{email:?} has no @"))?;
    let stored = format!("{local}@{}", domain.to_ascii_lowercase());
    let user = User::new(
        Email::parse(&stored).map_err(|e| anyhow::anyhow!("{stored:?}: {e}"))?,
        hash,
        "Legacy".to_owned(),
        Role::Customer,
        now,
    );
    let row = encode(Table::Users, &user)?;
    ensure!(
        store
            .insert(Table::Users, &Key::single(user.id.to_string()), row, None)
            .await?
            .is_applied()
    );
    let legacy_key = Key::single(stored);
    let index = encode(
        Table::UserEmails,
        &serde_json::json!({ "user_id": user.id }),
    )?;
    ensure!(
        store
            .insert(Table::UserEmails, &legacy_key, index, None)
            .await?
            .is_applied()
    );
    Ok(user.id)
}

fn email(address: &str) -> anyhow::Result<Email> {
    Email::parse(address).map_err(|e| anyhow::anyhow!("{address:?}: {e}"))
}

/// Legacy rows are backfilled under the canonical key, every account of a shared mailbox is
/// still found by the address it registered with, and the report lists the share.
pub async fn legacy_email_rows_are_backfilled_and_shared_mailboxes_reported(
    store: SharedStore,
) -> anyhow::Result<String> {
    const PASSWORD: &str = "correct horse battery staple";
    let t = uuid::Uuid::now_v7().simple().to_string();
    let older =
        seed_legacy_account(&store, &format!("Shared-{t}@Example.com"), 2, PASSWORD).await?;
    let younger =
        seed_legacy_account(&store, &format!("shared-{t}@example.com"), 1, PASSWORD).await?;
    let solo = seed_legacy_account(&store, &format!("Solo-{t}@example.com"), 1, PASSWORD).await?;
    let users = UserRepo::new(Arc::clone(&store));
    let find = |address: String| {
        let users = users.clone();
        async move {
            Ok::<_, anyhow::Error>(
                users
                    .find_by_email(&email(&address)?)
                    .await?
                    .map(|u| u.value.id),
            )
        }
    };
    // Before the backfill a legacy row answers its exact address only.
    ensure!(find(format!("Solo-{t}@EXAMPLE.com")).await? == Some(solo));
    ensure!(find(format!("solo-{t}@example.com")).await? == None);

    let report = users
        .backfill_email_index(true)
        .await?
        .context("a forced backfill must run")?;
    ensure!(report.shared >= 1, "{report:?}");
    ensure!(find(format!("SOLO-{t}@example.com")).await? == Some(solo));
    // The younger account's old row was the canonical key, so it keeps it and answers to
    // other spellings; the older one is still found by its own address, through its old row.
    ensure!(find(format!("SHARED-{t}@EXAMPLE.COM")).await? == Some(younger));
    ensure!(find(format!("shared-{t}@example.com")).await? == Some(younger));
    ensure!(find(format!("Shared-{t}@example.com")).await? == Some(older));
    // A new registration of either mailbox finds it taken.
    for address in [
        format!("solo-{t}@example.com"),
        format!("sHaReD-{t}@example.com"),
    ] {
        ensure!(
            !users.claim_email(&email(&address)?, UserId::new()).await?,
            "{address} was claimed again"
        );
    }
    // Once done, a backfill without force is skipped.
    ensure!(users.backfill_email_index(false).await?.is_none());

    let shared = users.shared_mailboxes().await?;
    let ours: Vec<_> = shared
        .iter()
        .filter(|m| m.canonical == format!("shared-{t}@example.com"))
        .collect();
    ensure!(ours.len() == 1, "{shared:?}");
    let ids: Vec<UserId> = ours[0].accounts.iter().map(|a| a.user_id).collect();
    ensure!(ids == vec![older, younger], "oldest first");
    ensure!(!shared.iter().any(|m| m.canonical.starts_with("solo-")));
    Ok("3 legacy accounts backfilled; 1 shared mailbox reported, oldest account first".to_owned())
}
