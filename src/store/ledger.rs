//! The ledger's tables: transactions by key, each account's statement and balance, the head
//! that orders the ledger, and what the ledger keeps besides (rates, payout destinations,
//! releases waiting for their hold, deliveries held for review, payouts and their runs).
//!
//! Booking is write-ahead through the head row. One writer at a time (the node holding the
//! ledger's lease; the head's compare-and-set refuses any other) books a batch thus:
//! 1. the head goes from `{last: N}` to `{last: N + k, applying: the batch}`, numbered N+1…N+k;
//! 2. each transaction row is inserted if absent: one that is there under another number was
//!    booked before and is dropped from the batch;
//! 3. the entries are written to the statements (plain writes: the same row again is a no-op);
//! 4. each balance touched adds the entries numbered after its own `through`, and moves
//!    `through` to the batch's last number;
//! 5. the head clears `applying`.
//!
//! A writer that dies anywhere in between leaves the batch in the head, and the next booking
//! (on any node) finishes it first: every step is idempotent, so nothing is booked twice or
//! lost.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};

use super::typed::{Change, ModifyError, Rows, Versioned};
use super::{Key, ScanRange, SharedStore, StoreError, StoreResult, Table, Version};
use crate::domain::ids::{OrderId, PayoutId, PayoutRunId, VendorId};
use crate::domain::ledger::{
    Balance, LedgerAccount, LedgerTx, Payout, PayoutStatus, Rates, StatementLine, check_balanced,
};
use crate::domain::money::Money;

/// Most transactions one batch books.
pub const MAX_BATCH: usize = 256;

/// The head of the ledger: the last position booked, and the batch being applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub last: u64,
    #[serde(default)]
    pub applying: Vec<LedgerTx>,
}

/// A verified delivery waiting for its hold period (or an unverified one held for an
/// admin's review).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PendingRelease {
    #[schema(value_type = String, format = Uuid)]
    pub order_id: OrderId,
    /// When the delivery was made.
    pub delivered_at: DateTime<Utc>,
    /// When its money becomes payable (for a delivery held for review: none until an admin
    /// releases it).
    pub due_at: Option<DateTime<Utc>>,
}

/// A payout run: asked for, running, done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PayoutRun {
    #[schema(value_type = String, format = Uuid)]
    pub id: PayoutRunId,
    pub status: RunStatus,
    /// Who asked (none: the schedule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub requested_by: Option<crate::domain::ids::UserId>,
    pub requested_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Payouts this run made.
    #[serde(default)]
    pub payouts: u64,
    /// What they add up to, per currency.
    #[serde(default)]
    pub total: Vec<Money>,
    /// Payable balances left for the next run because their party has no payout
    /// destination with the provider.
    #[serde(default)]
    pub without_destination: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Requested,
    Done,
}

/// The next scheduled payout run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub next_at: DateTime<Utc>,
}

/// A party's payout destination at the provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destination {
    pub destination: String,
    pub updated_at: DateTime<Utc>,
}

/// An index row naming a payout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct PayoutRef {
    id: PayoutId,
}

/// Another node wrote the head first: this one is not the ledger's writer now.
#[derive(Debug, thiserror::Error)]
pub enum BookError {
    #[error("another node is booking")]
    Lost,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Typed access to the ledger's tables.
#[derive(Clone)]
pub struct LedgerRepo {
    store: SharedStore,
    /// One batch at a time from this node: the head admits one writer, and this node's own
    /// concurrent bookings (payouts settling together) would otherwise refuse each other.
    booking: std::sync::Arc<tokio::sync::Mutex<()>>,
    txs: Rows<LedgerTx>,
    balances: Rows<Balance>,
    head: Rows<Head>,
    releases: Rows<PendingRelease>,
    rates: Rows<Rates>,
    destinations: Rows<Destination>,
    runs: Rows<PayoutRun>,
    run_marks: Rows<PayoutRunId>,
    schedule: Rows<Schedule>,
    payouts: Rows<Payout>,
    payout_refs: Rows<PayoutRef>,
}

const HEAD: &str = "head";
/// The partition of `ledger_entries` holding every transaction in ledger order.
const JOURNAL: &str = "transactions";
const DUE: &str = "releases";
const REVIEW: &str = "review";
const RATES: &str = "rates";
const DESTINATIONS: &str = "destinations";
const RUNS: &str = "runs";
const RUNS_TO_MAKE: &str = "runs-to-make";
const SCHEDULE: &str = "schedule";
const OPEN: &str = "open";
const ALL: &str = "all";

fn entry_key(seq: u64, index: usize) -> String {
    format!("{seq:020}.{index:03}")
}

fn time_key(at: DateTime<Utc>) -> String {
    format!("{:020}", at.timestamp_millis().max(0))
}

/// Sorts newest first.
fn newest_first_key(at: DateTime<Utc>) -> String {
    format!("{:020}", i64::MAX - at.timestamp_millis().max(0))
}

impl LedgerRepo {
    pub fn new(store: SharedStore) -> Self {
        LedgerRepo {
            txs: Rows::new(store.clone(), Table::LedgerTransactions),
            balances: Rows::new(store.clone(), Table::LedgerBalances),
            head: Rows::new(store.clone(), Table::LedgerState),
            releases: Rows::new(store.clone(), Table::LedgerState),
            rates: Rows::new(store.clone(), Table::LedgerState),
            destinations: Rows::new(store.clone(), Table::LedgerState),
            runs: Rows::new(store.clone(), Table::LedgerState),
            run_marks: Rows::new(store.clone(), Table::LedgerState),
            schedule: Rows::new(store.clone(), Table::LedgerState),
            payouts: Rows::new(store.clone(), Table::Payouts),
            payout_refs: Rows::new(store.clone(), Table::Payouts),
            booking: Default::default(),
            store,
        }
    }

    // --- booking ---------------------------------------------------------------------

    /// Books `batch` (their `seq` is assigned here), after finishing any batch a writer left
    /// half applied. Transactions whose key is booked already, and repeats of a key within
    /// the batch, are left out; unbalanced ones are refused (logged, never booked). Returns
    /// the transactions booked now, numbered.
    pub async fn book(&self, batch: Vec<LedgerTx>) -> Result<Vec<LedgerTx>, BookError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let _one_at_a_time = self.booking.lock().await;
        let (mut head, mut version) = self.finish().await?;
        let mut seen = BTreeSet::new();
        let fresh: Vec<LedgerTx> = batch
            .into_iter()
            .filter(|tx| seen.insert(tx.key.clone()))
            .filter(|tx| match check_balanced(&tx.entries) {
                Ok(()) => true,
                Err(why) => {
                    tracing::error!(tx_key = %tx.key, error = %why, "unbalanced transaction refused");
                    false
                }
            })
            .collect();
        let keys: Vec<Key> = fresh.iter().map(|tx| Key::single(&tx.key)).collect();
        let known = join_all(keys.iter().map(|key| self.txs.get(key))).await;
        let mut todo = Vec::with_capacity(fresh.len());
        for (tx, known) in fresh.into_iter().zip(known) {
            if known?.is_none() {
                todo.push(tx);
            }
        }
        if todo.is_empty() {
            return Ok(Vec::new());
        }
        for tx in &mut todo {
            head.last += 1;
            tx.seq = head.last;
        }
        head.applying = todo;
        version = match self.head.update(&Key::single(HEAD), version, &head).await? {
            Ok(v) => v,
            Err(_) => return Err(BookError::Lost),
        };
        self.apply(head, version).await
    }

    /// Finishes a batch a writer left half applied (the balances are right only then).
    pub async fn recover(&self) -> Result<(), BookError> {
        let _one_at_a_time = self.booking.lock().await;
        self.finish().await.map(|_| ())
    }

    /// Finishes a batch left in the head; returns the head (cleared) and its version.
    async fn finish(&self) -> Result<(Head, Version), BookError> {
        let key = Key::single(HEAD);
        let (head, version) = match self.head.get(&key).await? {
            Some(found) => (found.value, found.version),
            None => match self.head.insert(&key, &Head::default()).await? {
                Ok(v) => (Head::default(), v),
                Err(_) => return Err(BookError::Lost),
            },
        };
        if head.applying.is_empty() {
            return Ok((head, version));
        }
        tracing::info!(
            transactions = head.applying.len(),
            "finishing a ledger batch a writer left half applied"
        );
        let last = head.last;
        self.apply(head, version).await?;
        let found = self.head.get(&key).await?.ok_or(BookError::Lost)?;
        if found.value.last != last || !found.value.applying.is_empty() {
            return Err(BookError::Lost);
        }
        Ok((found.value, found.version))
    }

    /// Steps 2–5 of booking.
    async fn apply(&self, mut head: Head, version: Version) -> Result<Vec<LedgerTx>, BookError> {
        let batch = std::mem::take(&mut head.applying);
        let keys: Vec<Key> = batch.iter().map(|tx| Key::single(&tx.key)).collect();
        let inserted = join_all(
            batch
                .iter()
                .zip(&keys)
                .map(|(tx, key)| self.txs.insert(key, tx)),
        )
        .await;
        let mut booked = Vec::with_capacity(batch.len());
        for (tx, outcome) in batch.into_iter().zip(inserted) {
            match outcome? {
                Ok(_) => booked.push(tx),
                // This writer's own insert, from before a crash.
                Err(Some(there)) if there.value.seq == tx.seq => booked.push(tx),
                // Booked earlier under another number (or vanished: impossible, rows stay).
                Err(_) => {}
            }
        }
        let mut rows = Vec::new();
        let mut accounts: BTreeMap<LedgerAccount, Vec<usize>> = BTreeMap::new();
        for (i, tx) in booked.iter().enumerate() {
            rows.push((
                Key::new(JOURNAL, format!("{:020}", tx.seq)),
                super::encode(Table::LedgerEntries, tx)?,
            ));
            for (index, entry) in tx.entries.iter().enumerate() {
                let line = StatementLine {
                    seq: tx.seq,
                    tx_key: tx.key.clone(),
                    at: tx.at,
                    kind: tx.kind,
                    amount: entry.amount,
                    order_id: tx.order_id,
                    checkout_id: tx.checkout_id,
                    payout_id: tx.payout_id,
                };
                rows.push((
                    Key::new(entry.account.to_string(), entry_key(tx.seq, index)),
                    super::encode(Table::LedgerEntries, &line)?,
                ));
                let touching = accounts.entry(entry.account).or_default();
                if touching.last() != Some(&i) {
                    touching.push(i);
                }
            }
        }
        for chunk in rows.chunks(super::MAX_PAGE) {
            self.store
                .put(Table::LedgerEntries, chunk.to_vec(), None)
                .await?;
        }
        let updates = accounts.iter().map(|(account, txs)| {
            let booked = &booked;
            async move {
                self.balances
                    .modify(&Key::single(account.to_string()), |current| {
                        let mut balance = current.cloned().unwrap_or_default();
                        let mut changed = false;
                        for &i in txs {
                            changed |= balance.apply(&booked[i], *account);
                        }
                        Ok::<_, std::convert::Infallible>(if changed {
                            Change::Put(balance, ())
                        } else {
                            Change::Keep(())
                        })
                    })
                    .await
            }
        });
        for outcome in join_all(updates).await {
            match outcome {
                Ok(_) => {}
                Err(ModifyError::Store(e)) => return Err(e.into()),
                Err(ModifyError::Rejected(never)) => match never {},
            }
        }
        match self.head.update(&Key::single(HEAD), version, &head).await? {
            Ok(_) => Ok(booked),
            Err(_) => Err(BookError::Lost),
        }
    }

    // --- reading ---------------------------------------------------------------------

    pub async fn tx(&self, key: &str) -> StoreResult<Option<LedgerTx>> {
        Ok(self.txs.get(&Key::single(key)).await?.map(|v| v.value))
    }

    /// The last position booked.
    pub async fn last(&self) -> StoreResult<u64> {
        Ok(self
            .head
            .get(&Key::single(HEAD))
            .await?
            .map_or(0, |h| h.value.last))
    }

    pub async fn balance(&self, account: LedgerAccount) -> StoreResult<Balance> {
        Ok(self
            .balances
            .get(&Key::single(account.to_string()))
            .await?
            .map(|v| v.value)
            .unwrap_or_default())
    }

    /// A page of every account's balance, in the store's own order.
    pub async fn balances(
        &self,
        cursor: Option<String>,
        limit: usize,
    ) -> StoreResult<(Vec<(LedgerAccount, Balance)>, Option<String>)> {
        let (rows, next) = self.balances.scan_table(cursor, limit).await?;
        let items = rows
            .into_iter()
            .filter_map(|(key, row)| Some((key.partition.parse().ok()?, row.value)))
            .collect();
        Ok((items, next))
    }

    /// Lines of `account`'s statement after ledger position `after`, oldest first, and
    /// whether there are more.
    pub async fn statement(
        &self,
        account: LedgerAccount,
        after: u64,
        limit: usize,
    ) -> StoreResult<(Vec<StatementLine>, bool)> {
        let range = ScanRange::after(format!("{after:020}.999"), limit);
        let page = self
            .store
            .scan(Table::LedgerEntries, &account.to_string(), range)
            .await?;
        let lines = page
            .rows
            .iter()
            .map(|row| super::decode(Table::LedgerEntries, &row.data))
            .collect::<StoreResult<Vec<StatementLine>>>()?;
        Ok((lines, page.next.is_some()))
    }

    /// Transactions after ledger position `after`, in ledger order, and whether there are
    /// more.
    pub async fn transactions(
        &self,
        after: u64,
        limit: usize,
    ) -> StoreResult<(Vec<LedgerTx>, bool)> {
        let range = ScanRange::after(format!("{after:020}"), limit);
        let page = self
            .store
            .scan(Table::LedgerEntries, JOURNAL, range)
            .await?;
        let txs = page
            .rows
            .iter()
            .map(|row| super::decode(Table::LedgerEntries, &row.data))
            .collect::<StoreResult<Vec<LedgerTx>>>()?;
        Ok((txs, page.next.is_some()))
    }

    // --- releases --------------------------------------------------------------------

    /// Schedules the release of a verified delivery (a second time: no change).
    pub async fn schedule_release(&self, release: &PendingRelease) -> StoreResult<()> {
        let key = match release.due_at {
            Some(due) => Key::new(DUE, format!("{}.{}", time_key(due), release.order_id)),
            None => Key::new(REVIEW, release.order_id.to_string()),
        };
        let _ = self.releases.insert(&key, release).await?;
        Ok(())
    }

    /// Releases due at `now`, oldest first.
    pub async fn due_releases(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<(Key, Versioned<PendingRelease>)>> {
        let range = ScanRange {
            after: None,
            before: Some(format!("{}.~", time_key(now))),
            limit,
        };
        Ok(self.releases.scan(DUE, range).await?.0)
    }

    pub async fn remove_release(&self, key: &Key, version: Version) -> StoreResult<()> {
        let _ = self.releases.delete(key, version).await?;
        Ok(())
    }

    /// Deliveries held for review (not verified at the drop-off), a page at a time.
    pub async fn held_for_review(
        &self,
        after: Option<OrderId>,
        limit: usize,
    ) -> StoreResult<(Vec<PendingRelease>, Option<String>)> {
        let range = ScanRange {
            after: after.map(|o| o.to_string()),
            before: None,
            limit,
        };
        let (rows, next) = self.releases.scan(REVIEW, range).await?;
        Ok((rows.into_iter().map(|(_, r)| r.value).collect(), next))
    }

    /// Moves a delivery held for review to the releases due at `now`. `false`: none held.
    pub async fn release_reviewed(&self, order: OrderId, now: DateTime<Utc>) -> StoreResult<bool> {
        let key = Key::new(REVIEW, order.to_string());
        let Some(held) = self.releases.get(&key).await? else {
            return Ok(false);
        };
        let mut due = held.value.clone();
        due.due_at = Some(now);
        self.schedule_release(&due).await?;
        let _ = self.releases.delete(&key, held.version).await?;
        Ok(true)
    }

    // --- rates and destinations ------------------------------------------------------

    fn rates_key(store: Option<VendorId>) -> Key {
        Key::new(
            RATES,
            store.map_or_else(|| "default".to_owned(), |v| format!("store:{v}")),
        )
    }

    /// The rates set for a store (or the platform's default, `None`).
    pub async fn rates(&self, store: Option<VendorId>) -> StoreResult<Option<Rates>> {
        Ok(self
            .rates
            .get(&Self::rates_key(store))
            .await?
            .map(|v| v.value))
    }

    /// Sets (or with `None`, removes) the rates of a store or the default.
    pub async fn set_rates(
        &self,
        store: Option<VendorId>,
        rates: Option<Rates>,
    ) -> StoreResult<()> {
        let outcome = self
            .rates
            .modify(&Self::rates_key(store), |_| {
                Ok::<_, std::convert::Infallible>(match rates {
                    Some(r) => Change::Put(r, ()),
                    None => Change::Delete(()),
                })
            })
            .await;
        match outcome {
            Ok(_) => Ok(()),
            Err(ModifyError::Store(e)) => Err(e),
            Err(ModifyError::Rejected(never)) => match never {},
        }
    }

    pub async fn destination(&self, account: LedgerAccount) -> StoreResult<Option<Destination>> {
        Ok(self
            .destinations
            .get(&Key::new(DESTINATIONS, account.to_string()))
            .await?
            .map(|v| v.value))
    }

    pub async fn set_destination(
        &self,
        account: LedgerAccount,
        destination: &Destination,
    ) -> StoreResult<()> {
        let outcome = self
            .destinations
            .modify(&Key::new(DESTINATIONS, account.to_string()), |_| {
                Ok::<_, std::convert::Infallible>(Change::Put(destination.clone(), ()))
            })
            .await;
        match outcome {
            Ok(_) => Ok(()),
            Err(ModifyError::Store(e)) => Err(e),
            Err(ModifyError::Rejected(never)) => match never {},
        }
    }

    // --- payout runs -----------------------------------------------------------------

    /// Records a run asked for, and marks it to be made (the marks are what each round
    /// reads: the runs themselves pile up over the years).
    pub async fn request_run(&self, run: &PayoutRun) -> StoreResult<()> {
        let _ = self
            .runs
            .insert(&Key::new(RUNS, run.id.to_string()), run)
            .await?;
        let _ = self
            .run_marks
            .insert(&Key::new(RUNS_TO_MAKE, run.id.to_string()), &run.id)
            .await?;
        Ok(())
    }

    pub async fn run(&self, id: PayoutRunId) -> StoreResult<Option<Versioned<PayoutRun>>> {
        self.runs.get(&Key::new(RUNS, id.to_string())).await
    }

    /// Runs not made yet, oldest first.
    pub async fn requested_runs(&self) -> StoreResult<Vec<PayoutRun>> {
        let (marks, _) = self
            .run_marks
            .scan(RUNS_TO_MAKE, ScanRange::first(super::MAX_PAGE))
            .await?;
        let mut out = Vec::with_capacity(marks.len());
        for (key, mark) in marks {
            match self.run(mark.value).await? {
                Some(run) if run.value.status == RunStatus::Requested => out.push(run.value),
                // Made already (its mark outlived a crash): drop the mark.
                _ => {
                    let _ = self.run_marks.delete(&key, mark.version).await?;
                }
            }
        }
        Ok(out)
    }

    /// Saves a run; one that is done loses its mark.
    pub async fn save_run(&self, run: &PayoutRun, version: Version) -> StoreResult<bool> {
        let saved = self
            .runs
            .update(&Key::new(RUNS, run.id.to_string()), version, run)
            .await?
            .is_ok();
        if saved && run.status == RunStatus::Done {
            let key = Key::new(RUNS_TO_MAKE, run.id.to_string());
            if let Some(mark) = self.run_marks.get(&key).await? {
                let _ = self.run_marks.delete(&key, mark.version).await?;
            }
        }
        Ok(saved)
    }

    pub async fn schedule(&self) -> StoreResult<Option<Versioned<Schedule>>> {
        self.schedule.get(&Key::single(SCHEDULE)).await
    }

    pub async fn save_schedule(&self, schedule: &Schedule, version: Version) -> StoreResult<bool> {
        let key = Key::single(SCHEDULE);
        let outcome = if version == 0 {
            self.schedule.insert(&key, schedule).await?
        } else {
            self.schedule.update(&key, version, schedule).await?
        };
        Ok(outcome.is_ok())
    }

    // --- payouts ---------------------------------------------------------------------

    fn payout_key(id: PayoutId) -> Key {
        Key::single(format!("id:{id}"))
    }

    /// Records a new payout with its indexes and marks it in flight; a payout already there
    /// under this id (a run made again after a crash) is returned as it is, and its indexes
    /// are written as of its own creation (so they name it once).
    pub async fn create_payout(&self, payout: &Payout) -> StoreResult<Versioned<Payout>> {
        let row = match self
            .payouts
            .insert(&Self::payout_key(payout.id), payout)
            .await?
        {
            Ok(version) => Versioned {
                version,
                value: payout.clone(),
            },
            Err(Some(there)) => there,
            Err(None) => {
                return Err(StoreError::Unavailable(
                    "a payout row vanished while being created".into(),
                ));
            }
        };
        let payout = &row.value;
        let reference = PayoutRef { id: payout.id };
        let when = format!("{}.{}", newest_first_key(payout.created_at), payout.id);
        let mut index = vec![
            Key::new(format!("account:{}", payout.account), &when),
            Key::new(ALL, &when),
            Key::new(format!("run:{}", payout.run_id), payout.id.to_string()),
        ];
        if payout.status == PayoutStatus::Pending {
            index.push(Key::new(OPEN, payout.id.to_string()));
        }
        for key in &index {
            let _ = self.payout_refs.insert(key, &reference).await?;
        }
        Ok(row)
    }

    /// Every payout of a run.
    pub async fn payouts_of_run(&self, run: PayoutRunId) -> StoreResult<Vec<Payout>> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let range = ScanRange {
                after: after.clone(),
                before: None,
                limit: super::MAX_PAGE,
            };
            let (refs, next) = self.payout_refs.scan(&format!("run:{run}"), range).await?;
            after = refs.last().map(|(k, _)| k.clustering.clone());
            let found = join_all(refs.iter().map(|(_, r)| self.payout(r.value.id))).await;
            for payout in found {
                if let Some(p) = payout? {
                    out.push(p.value);
                }
            }
            if next.is_none() || after.is_none() {
                return Ok(out);
            }
        }
    }

    pub async fn payout(&self, id: PayoutId) -> StoreResult<Option<Versioned<Payout>>> {
        self.payouts.get(&Self::payout_key(id)).await
    }

    /// Saves a payout that reached its end and takes it off the list in flight.
    pub async fn finish_payout(&self, payout: &Payout, version: Version) -> StoreResult<bool> {
        if self
            .payouts
            .update(&Self::payout_key(payout.id), version, payout)
            .await?
            .is_err()
        {
            return Ok(false);
        }
        if payout.status != PayoutStatus::Pending {
            let key = Key::new(OPEN, payout.id.to_string());
            if let Some(open) = self.payout_refs.get(&key).await? {
                let _ = self.payout_refs.delete(&key, open.version).await?;
            }
        }
        Ok(true)
    }

    /// Payouts in flight.
    pub async fn open_payouts(&self, limit: usize) -> StoreResult<Vec<Versioned<Payout>>> {
        let (refs, _) = self.payout_refs.scan(OPEN, ScanRange::first(limit)).await?;
        let found = join_all(refs.iter().map(|(_, r)| self.payout(r.value.id))).await;
        let mut out = Vec::new();
        for payout in found {
            if let Some(p) = payout? {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// A page of payouts, newest first: of one account, or of all; `after` is the `next` of
    /// the page before.
    pub async fn payouts(
        &self,
        account: Option<LedgerAccount>,
        after: Option<String>,
        limit: usize,
    ) -> StoreResult<(Vec<Payout>, Option<String>)> {
        let partition = account.map_or_else(|| ALL.to_owned(), |a| format!("account:{a}"));
        let range = ScanRange {
            after,
            before: None,
            limit: limit + 1,
        };
        let (mut refs, _) = self.payout_refs.scan(&partition, range).await?;
        let more = refs.len() > limit;
        refs.truncate(limit);
        let next = if more {
            refs.last().map(|(k, _)| k.clustering.clone())
        } else {
            None
        };
        let found = join_all(refs.iter().map(|(_, r)| self.payout(r.value.id))).await;
        let mut out = Vec::with_capacity(found.len());
        for payout in found {
            if let Some(p) = payout? {
                out.push(p.value);
            }
        }
        Ok((out, next))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::domain::ledger::{Entry, TxKind};
    use crate::domain::money::Currency;
    use crate::store::embedded::EmbeddedStore;

    fn tx(key: &str, amount: i64) -> LedgerTx {
        let money = |a| Money::new(a, Currency::EUR);
        LedgerTx {
            key: key.to_owned(),
            seq: 0,
            at: Utc::now(),
            kind: TxKind::Payment,
            order_id: None,
            checkout_id: None,
            payout_id: None,
            through: None,
            entries: vec![
                Entry {
                    account: LedgerAccount::ProviderClearing,
                    amount: money(amount),
                },
                Entry {
                    account: LedgerAccount::PlatformCommission,
                    amount: money(-amount),
                },
            ],
        }
    }

    async fn clearing(repo: &LedgerRepo) -> i64 {
        repo.balance(LedgerAccount::ProviderClearing)
            .await
            .unwrap()
            .of(Currency::EUR)
    }

    #[tokio::test]
    async fn a_key_is_booked_once_and_a_half_applied_batch_is_finished_by_the_next_booking() {
        let dir = tempfile::tempdir().unwrap();
        let store: SharedStore = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let repo = LedgerRepo::new(store);
        assert_eq!(repo.book(vec![tx("a", 100)]).await.unwrap().len(), 1);
        // The same key again, alone or twice in a batch: booked once.
        let again = repo
            .book(vec![tx("a", 100), tx("b", 10), tx("b", 10)])
            .await
            .unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(clearing(&repo).await, 110);
        // Unbalanced: refused.
        let mut bad = tx("bad", 5);
        bad.entries.pop();
        assert!(repo.book(vec![bad]).await.unwrap().is_empty());

        // A writer died after writing the head and one transaction row of its batch.
        let key = Key::single(HEAD);
        let head = repo.head.get(&key).await.unwrap().unwrap();
        let mut c = tx("c", 1_000);
        c.seq = head.value.last + 1;
        let half = Head {
            last: c.seq,
            applying: vec![c.clone()],
        };
        repo.head
            .update(&key, head.version, &half)
            .await
            .unwrap()
            .unwrap();
        repo.txs
            .insert(&Key::single("c"), &c)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(clearing(&repo).await, 110, "not applied yet");
        repo.book(vec![tx("d", 1)]).await.unwrap();
        assert_eq!(clearing(&repo).await, 1_111);

        // Died after applying everything but clearing the head: applying it again adds
        // nothing.
        let head = repo.head.get(&key).await.unwrap().unwrap();
        let replay = Head {
            last: head.value.last,
            applying: vec![c.clone()],
        };
        repo.head
            .update(&key, head.version, &replay)
            .await
            .unwrap()
            .unwrap();
        repo.book(vec![tx("e", 1)]).await.unwrap();
        assert_eq!(clearing(&repo).await, 1_112);
        let (lines, more) = repo
            .statement(LedgerAccount::ProviderClearing, 0, 100)
            .await
            .unwrap();
        let keys: Vec<&str> = lines.iter().map(|l| l.tx_key.as_str()).collect();
        assert_eq!(keys, ["a", "b", "c", "d", "e"]);
        assert!(!more);
        let (page, more) = repo
            .statement(LedgerAccount::ProviderClearing, lines[1].seq, 2)
            .await
            .unwrap();
        assert_eq!(page.len(), 2);
        assert_eq!(page[0].tx_key, "c");
        assert!(more);
    }
}
