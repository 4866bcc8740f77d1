//! Payouts: each run sends every positive payable balance to its store or courier through
//! the payment provider.
//!
//! A payout's id derives from its run, its account and its currency, so a run that dies and
//! runs again finds the payouts it made. Its money leaves the payable balance for
//! `payouts_in_transit` (booked under `payout:{id}`) before the provider is asked; the
//! provider's transfer is idempotent per payout id (one transfer, however often it is asked);
//! its answer books `payout:{id}:paid` (out of the provider's clearing account) or
//! `payout:{id}:failed` (back on the balance). A payout whose answer never came stays in
//! flight and is asked again every round.

use chrono::Duration;
use futures_util::StreamExt as _;
use futures_util::stream;

use super::{Ledger, LedgerError};
use crate::domain::ids::{PayoutId, PayoutRunId, derived_uuid};
use crate::domain::ledger::{
    LedgerTx, Payout, PayoutStatus, TxKind, payout_end_entries, payout_entries,
};
use crate::domain::money::Money;
use crate::payments::{PaymentError, ProviderError};
use crate::store::ledger::{PayoutRun, RunStatus, Schedule};
use crate::store::typed::Versioned;

/// Transfers asked for at once.
const CONCURRENCY: usize = 16;
/// Payouts in flight retried per round.
const RETRIED_PER_ROUND: usize = 256;
/// How often payouts whose transfer was not confirmed are asked about again.
const RETRY_EVERY: std::time::Duration = std::time::Duration::from_secs(15);

/// The transaction taking a payout's money off its balance.
fn out_tx(payout: &Payout) -> LedgerTx {
    LedgerTx {
        key: LedgerTx::payout_key(payout.id),
        seq: 0,
        at: payout.created_at,
        kind: TxKind::Payout,
        order_id: None,
        checkout_id: None,
        payout_id: Some(payout.id),
        through: None,
        entries: payout_entries(payout.account, payout.amount),
    }
}

impl Ledger {
    /// Starts the scheduled run when it is due, makes every run asked for, and asks the
    /// provider again about payouts in flight.
    pub(super) async fn pay_out(&self) -> Result<usize, LedgerError> {
        self.schedule_run().await?;
        let mut booked = 0;
        for run in self.inner.repo.requested_runs().await? {
            booked += self.execute(run).await?;
        }
        let due = {
            let mut last = self.inner.retried_at.lock();
            let due = last.is_none_or(|at| at.elapsed() >= RETRY_EVERY);
            if due {
                *last = Some(std::time::Instant::now());
            }
            due
        };
        if due {
            let open = self.inner.repo.open_payouts(RETRIED_PER_ROUND).await?;
            booked += self.settle_all(open).await?;
        }
        Ok(booked)
    }

    async fn schedule_run(&self) -> Result<(), LedgerError> {
        let inner = &self.inner;
        let every = inner.settings.payout_every;
        if every.is_zero() {
            return Ok(());
        }
        let every = Duration::from_std(every).unwrap_or(Duration::days(1));
        let now = inner.clock.now();
        let (schedule, version) = match inner.repo.schedule().await? {
            Some(found) => (found.value, found.version),
            None => {
                let first = Schedule {
                    next_at: now + every,
                };
                inner.repo.save_schedule(&first, 0).await?;
                return Ok(());
            }
        };
        if schedule.next_at > now {
            return Ok(());
        }
        // Runs missed while no node was up collapse into this one.
        let mut next_at = schedule.next_at + every;
        while next_at <= now {
            next_at += every;
        }
        if !inner
            .repo
            .save_schedule(&Schedule { next_at }, version)
            .await?
        {
            return Ok(());
        }
        let id = PayoutRunId::from(derived_uuid(&format!(
            "payout-run:{}",
            schedule.next_at.timestamp_millis()
        )));
        inner
            .repo
            .request_run(&PayoutRun {
                id,
                status: RunStatus::Requested,
                requested_by: None,
                requested_at: now,
                finished_at: None,
                payouts: 0,
                total: Vec::new(),
                without_destination: 0,
            })
            .await?;
        Ok(())
    }

    /// Makes one run: a payout per positive payable balance and currency.
    async fn execute(&self, run: PayoutRun) -> Result<usize, LedgerError> {
        let inner = &self.inner;
        let needs_destination = inner.payments.payouts_need_destination();
        let provider = inner.payments.default_provider().as_str().to_owned();
        let mut made: Vec<Versioned<Payout>> = Vec::new();
        let mut without_destination = 0u64;
        let mut cursor = None;
        loop {
            let (rows, next) = inner.repo.balances(cursor, crate::store::MAX_PAGE).await?;
            for (account, balance) in &rows {
                if !account.is_payable() {
                    continue;
                }
                for (code, &amount) in &balance.amounts {
                    // A payable balance is a credit: what is owed is its negation.
                    let owed = -amount;
                    let Ok(currency) = code.parse() else { continue };
                    if owed <= 0 {
                        continue;
                    }
                    let destination = inner
                        .repo
                        .destination(*account)
                        .await?
                        .map(|d| d.destination);
                    if needs_destination && destination.is_none() {
                        without_destination += 1;
                        continue;
                    }
                    let id = PayoutId::from(derived_uuid(&format!(
                        "payout:{}:{account}:{code}",
                        run.id
                    )));
                    let now = inner.clock.now();
                    let payout = Payout {
                        id,
                        run_id: run.id,
                        account: *account,
                        amount: Money::new(owed, currency),
                        status: PayoutStatus::Pending,
                        provider: provider.clone(),
                        destination,
                        provider_ref: None,
                        failure: None,
                        created_at: now,
                        updated_at: now,
                    };
                    made.push(inner.repo.create_payout(&payout).await?);
                }
            }
            if next.is_none() || rows.is_empty() {
                break;
            }
            cursor = next;
        }
        let mut booked = inner
            .repo
            .book(made.iter().map(|p| out_tx(&p.value)).collect())
            .await?
            .len();
        booked += self.settle_all(made).await?;
        // Counted from the run's own index: a run made again after a crash finds the payouts
        // its first attempt made, whose balances are no longer positive.
        let mine = inner.repo.payouts_of_run(run.id).await?;
        let mut totals: std::collections::BTreeMap<String, i64> = Default::default();
        for payout in &mine {
            *totals
                .entry(payout.amount.currency.code().to_owned())
                .or_default() += payout.amount.amount_minor;
        }
        let count = mine.len() as u64;
        if let Some(current) = inner.repo.run(run.id).await? {
            let mut done = current.value;
            done.status = RunStatus::Done;
            done.finished_at = Some(inner.clock.now());
            done.payouts = count;
            done.without_destination = without_destination;
            done.total = totals
                .into_iter()
                .filter_map(|(c, a)| Some(Money::new(a, c.parse().ok()?)))
                .collect();
            inner.repo.save_run(&done, current.version).await?;
        }
        tracing::info!(run_id = %run.id, payouts = count, without_destination, "payout run done");
        Ok(booked)
    }

    async fn settle_all(&self, payouts: Vec<Versioned<Payout>>) -> Result<usize, LedgerError> {
        let outcomes: Vec<Result<usize, LedgerError>> = stream::iter(payouts)
            .filter(|p| std::future::ready(p.value.status == PayoutStatus::Pending))
            .map(|payout| {
                let this = self.clone();
                async move { this.settle(payout).await }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut booked = 0;
        for outcome in outcomes {
            booked += outcome?;
        }
        Ok(booked)
    }

    /// Asks the provider for one payout's transfer and books its end.
    async fn settle(&self, payout: Versioned<Payout>) -> Result<usize, LedgerError> {
        let inner = &self.inner;
        // A payout found in flight after a crash may not have left its balance yet.
        let mut booked = inner.repo.book(vec![out_tx(&payout.value)]).await?.len();
        let mut done = payout.value.clone();
        let key = done.id.to_string();
        match inner
            .payments
            .transfer(done.destination.as_deref(), done.amount, &key)
            .await
        {
            Ok(transfer) => {
                done.status = PayoutStatus::Paid;
                done.provider_ref = Some(transfer.provider_ref);
            }
            Err(PaymentError::Provider(ProviderError::Rejected(why))) => {
                done.status = PayoutStatus::Failed;
                done.failure = Some(why);
            }
            Err(e) => {
                tracing::warn!(payout_id = %done.id, error = %e, "payout transfer not confirmed; asked again next round");
                return Ok(booked);
            }
        }
        let paid = done.status == PayoutStatus::Paid;
        done.updated_at = inner.clock.now();
        let end = LedgerTx {
            key: LedgerTx::payout_end_key(done.id, paid),
            seq: 0,
            at: done.updated_at,
            kind: if paid {
                TxKind::PayoutPaid
            } else {
                TxKind::PayoutFailed
            },
            order_id: None,
            checkout_id: None,
            payout_id: Some(done.id),
            through: None,
            entries: payout_end_entries(done.account, done.amount, paid),
        };
        booked += inner.repo.book(vec![end]).await?.len();
        inner.repo.finish_payout(&done, payout.version).await?;
        tracing::info!(payout_id = %done.id, account = %done.account, status = ?done.status, "payout settled");
        Ok(booked)
    }
}
