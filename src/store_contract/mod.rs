//! The store contract: what every [`Store`](crate::store::Store) backend guarantees, as named
//! properties that each run against a [`SharedStore`] and say whether they held, with a detail.
//!
//! `hexmarket verify-store` runs every property against the configured backend in a scratch
//! directory or keyspace ([`scratch`]), so operators check a ScyllaDB cluster before it goes
//! live; the integration tests run the same properties against the embedded store, and against
//! ScyllaDB when `HEXMARKET_SCYLLA_NODES` is set.
//!
//! Most properties ([`rows`]) hold the `Store` trait itself to its word: compare-and-set,
//! paging, time to live, batches, the schema. The others hold what is built on those guarantees
//! and breaks first when a backend bends them: stock holds shared by two nodes, idempotency
//! keys, the canonical email index. That is why this module sits above `store`, `catalog`,
//! `identity` and `idempotency` instead of inside `store`: the store does not depend on its
//! users.
//!
//! A property fails by returning an error (`anyhow::ensure!` stands where a test would assert);
//! a panic or a property running past [`PROPERTY_TIMEOUT`] fails it too, without stopping the
//! others.

mod idempotency;
mod inventory;
mod mailboxes;
mod rows;
pub mod scratch;

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;

use self::scratch::Scratch;
use crate::config::Settings;
use crate::store::SharedStore;

pub use mailboxes::seed_legacy_account;

/// Longest a property may run before it counts as failed. The slowest ones wait a couple of
/// seconds for rows to expire, or take a few hundred contended lightweight transactions.
pub const PROPERTY_TIMEOUT: Duration = Duration::from_secs(60);

/// A property's check: what it saw when the property held, or why it did not.
type Check = fn(SharedStore) -> BoxFuture<'static, anyhow::Result<String>>;

/// One named property of the contract.
pub struct Property {
    pub name: &'static str,
    check: Check,
}

macro_rules! properties {
    ($($module:ident :: $name:ident),* $(,)?) => {
        /// Every property, in the order `verify-store` reports them.
        pub const PROPERTIES: &[Property] = &[
            $(Property {
                name: stringify!($name),
                check: |store| Box::pin($module::$name(store)),
            },)*
        ];
    };
}

properties!(
    rows::schema_is_agreed_and_has_every_table,
    rows::rows_round_trip_with_versions,
    rows::conditional_writes_conflict_with_the_current_row,
    rows::partitions_scan_in_clustering_order_and_page,
    rows::whole_tables_page_without_gaps_or_repeats,
    rows::concurrent_writers_lose_no_update,
    rows::append_tables_take_plain_writes_only,
    rows::batches_are_written_whole_or_not_at_all,
    rows::rows_expire_after_their_ttl,
    inventory::concurrent_reservations_never_oversell,
    inventory::expired_reservations_return_their_stock,
    inventory::commits_are_idempotent_and_reduce_stock,
    inventory::releasing_after_a_commit_does_not_unsell,
    inventory::multi_product_reservations_are_all_or_nothing,
    inventory::concurrent_multi_product_reservations_leave_no_stray_holds,
    inventory::history_includes_adjustments_the_log_missed,
    idempotency::idempotency_keys_replay_the_first_answer_and_refuse_other_requests,
    idempotency::concurrent_requests_with_one_key_run_once,
    idempotency::an_abandoned_claim_is_taken_over_after_its_lease,
    mailboxes::legacy_email_rows_are_backfilled_and_shared_mailboxes_reported,
);

/// The property of that name.
pub fn property(name: &str) -> Option<&'static Property> {
    PROPERTIES.iter().find(|p| p.name == name)
}

/// What checking one property found.
#[derive(Debug)]
pub struct Verdict {
    pub name: &'static str,
    pub took: Duration,
    /// What the property saw when it held (`Ok`), or why it did not (`Err`).
    pub outcome: Result<String, String>,
}

impl Verdict {
    pub fn held(&self) -> bool {
        self.outcome.is_ok()
    }
}

impl fmt::Display for Verdict {
    /// One line: name, `ok` or `FAILED`, time, detail.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (status, detail) = match &self.outcome {
            Ok(detail) => ("ok", detail),
            Err(reason) => ("FAILED", reason),
        };
        write!(
            f,
            "{:<68} {status:<6} {:>7.3} s  {detail}",
            self.name,
            self.took.as_secs_f64()
        )
    }
}

impl Property {
    /// Runs the property against `store`. Never panics: a panic, an error or running past
    /// [`PROPERTY_TIMEOUT`] is a failed verdict.
    pub async fn check(&self, store: SharedStore) -> Verdict {
        let started = Instant::now();
        let run = AssertUnwindSafe((self.check)(store)).catch_unwind();
        let outcome = match tokio::time::timeout(PROPERTY_TIMEOUT, run).await {
            Ok(Ok(Ok(detail))) => Ok(detail),
            Ok(Ok(Err(error))) => Err(format!("{error:#}")),
            Ok(Err(panic)) => Err(format!("panicked: {}", panic_message(panic.as_ref()))),
            Err(_) => Err(format!(
                "did not finish within {} s",
                PROPERTY_TIMEOUT.as_secs()
            )),
        };
        Verdict {
            name: self.name,
            took: started.elapsed(),
            outcome,
        }
    }
}

/// Checks every property against `store`, one after the other, handing each verdict to
/// `report` as soon as it is known.
pub async fn check_all(store: &SharedStore, mut report: impl FnMut(&Verdict)) -> Vec<Verdict> {
    let mut verdicts = Vec::with_capacity(PROPERTIES.len());
    for property in PROPERTIES {
        let verdict = property.check(store.clone()).await;
        report(&verdict);
        verdicts.push(verdict);
    }
    verdicts
}

/// `hexmarket verify-store`: checks every property against the configured backend in a
/// scratch place, one line each on standard output, then removes the place. Fails when a
/// property failed (or the scratch place could not be made or removed).
pub async fn verify_store(settings: &Settings) -> anyhow::Result<()> {
    let started = Instant::now();
    let scratch = Scratch::open(settings).await?;
    println!("verify-store: {}", scratch.describe());
    let verdicts = check_all(scratch.store(), |verdict| println!("{verdict}")).await;
    let removed = scratch.remove().await;
    let failed = verdicts.iter().filter(|v| !v.held()).count();
    println!(
        "{} properties: {} ok, {failed} FAILED, in {:.1} s; scratch {}",
        verdicts.len(),
        verdicts.len() - failed,
        started.elapsed().as_secs_f64(),
        if removed.is_ok() {
            "removed"
        } else {
            "NOT removed"
        },
    );
    if failed > 0 {
        anyhow::bail!("{failed} of {} store properties failed", verdicts.len());
    }
    removed.context("removing the scratch store")
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// A name no earlier run used, so properties never meet each other's rows.
fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7())
}

/// The contract's `Result<T, JoinError>` → `anyhow::Result<T>` for spawned concurrent work.
async fn joined<T>(task: tokio::task::JoinHandle<anyhow::Result<T>>) -> anyhow::Result<T> {
    task.await
        .map_err(|e| anyhow::anyhow!("a concurrent task failed: {e}"))?
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use async_trait::async_trait;
    use bytes::Bytes;

    use super::*;
    use crate::store::{Cas, Key, Page, Row, ScanRange, Store, StoreError, StoreResult, Table};

    /// A store that answers nothing.
    struct Down;

    fn down<T>() -> StoreResult<T> {
        Err(StoreError::Unavailable("down for the test".into()))
    }

    #[async_trait]
    impl Store for Down {
        fn backend(&self) -> &'static str {
            "down"
        }
        async fn get(&self, _: Table, _: &Key) -> StoreResult<Option<Row>> {
            down()
        }
        async fn insert(
            &self,
            _: Table,
            _: &Key,
            _: Bytes,
            _: Option<Duration>,
        ) -> StoreResult<Cas> {
            down()
        }
        async fn update(
            &self,
            _: Table,
            _: &Key,
            _: u64,
            _: Bytes,
            _: Option<Duration>,
        ) -> StoreResult<Cas> {
            down()
        }
        async fn delete(&self, _: Table, _: &Key, _: u64) -> StoreResult<Cas> {
            down()
        }
        async fn put(
            &self,
            _: Table,
            _: Vec<(Key, Bytes)>,
            _: Option<Duration>,
        ) -> StoreResult<()> {
            down()
        }
        async fn scan(&self, _: Table, _: &str, _: ScanRange) -> StoreResult<Page> {
            down()
        }
        async fn scan_table(&self, _: Table, _: Option<String>, _: usize) -> StoreResult<Page> {
            down()
        }
        async fn ping(&self) -> StoreResult<()> {
            down()
        }
    }

    #[tokio::test]
    async fn every_property_fails_on_a_store_that_is_down_and_says_why() {
        let store: SharedStore = Arc::new(Down);
        let verdicts = check_all(&store, |_| {}).await;
        assert_eq!(verdicts.len(), PROPERTIES.len());
        for verdict in &verdicts {
            assert!(!verdict.held(), "{verdict}");
            let line = verdict.to_string();
            assert!(line.contains(" FAILED "), "{line}");
            assert!(line.starts_with(verdict.name), "{line}");
        }
        assert!(
            verdicts
                .iter()
                .any(|v| v.to_string().contains("down for the test")),
            "the store's error is the detail"
        );
    }

    #[tokio::test]
    async fn a_panicking_property_is_a_failed_verdict() {
        let property = Property {
            name: "panics",
            check: |_| Box::pin(async { panic!("on purpose") }),
        };
        let verdict = property.check(Arc::new(Down)).await;
        assert_eq!(verdict.outcome, Err("panicked: on purpose".to_owned()));
    }
}
