//! The ledger service: books order events into the double-entry ledger, releases verified
//! deliveries once their hold is over, runs payouts through the payment provider, and
//! answers balances, statements, payouts and reconciliation.
//!
//! It is a consumer of the order journal like notifications, with its own cursor and lease:
//! one node at a time books (the ledger's head refuses any other writer), and every
//! transaction's key derives from the business event (`order:{order}:{event}`,
//! `release:{order}`, `payout:{payout}`), so a round that dies half-way and runs again books
//! nothing twice.

pub mod booker;
pub mod coupons;
pub mod payouts;
pub mod rates;
pub mod reconcile;

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::settings::SettingsView;

use crate::clock::Clock;
use crate::config::LedgerSettings;
use crate::domain::ids::{OrderId, PayoutId, PayoutRunId, UserId};
use crate::domain::ledger::{Balance, LedgerAccount, Payout, StatementLine};
use crate::payments::Payments;
use crate::store::journal::Journal;
use crate::store::ledger::{
    BookError, Destination, LedgerRepo, PayoutRun, PendingRelease, RunStatus,
};
use crate::store::orders::OrderRepo;
use crate::store::{SharedStore, StoreError};

pub use rates::RatesBook;

/// How often a node looks for work.
pub const ROUND: Duration = Duration::from_millis(500);

/// What [`Ledger`] is built from.
pub struct LedgerParts {
    pub store: SharedStore,
    pub payments: Payments,
    pub settings: LedgerSettings,
    pub clock: Clock,
    /// This node, as the holder of the ledger's lease.
    pub node: Uuid,
    /// The platform's live settings: default rates, the payout hold, and the payment window
    /// (how long a checkout holds a coupon's redemption).
    pub live: SettingsView,
}

/// Why a ledger call failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("another node is booking")]
    Lost,
    #[error(transparent)]
    Payment(#[from] crate::payments::PaymentError),
}

impl From<BookError> for LedgerError {
    fn from(e: BookError) -> Self {
        match e {
            BookError::Lost => LedgerError::Lost,
            BookError::Store(e) => LedgerError::Store(e),
        }
    }
}

/// The ledger service; cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

struct Inner {
    repo: LedgerRepo,
    journal: Journal,
    orders: OrderRepo,
    payments: Payments,
    rates: RatesBook,
    coupons: crate::store::coupons::CouponRepo,
    live: SettingsView,
    /// When payouts in flight were last asked about again.
    retried_at: parking_lot::Mutex<Option<std::time::Instant>>,
    settings: LedgerSettings,
    clock: Clock,
    node: Uuid,
    /// Woken when an admin asks for a payout run, so it starts within moments.
    kick: tokio::sync::Notify,
}

/// Sums of every balance: per currency, what must be zero.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct LedgerSummary {
    /// The last ledger position booked.
    pub transactions: u64,
    /// Accounts with a balance row.
    pub accounts: u64,
    /// Σ of every account's balance per currency: zero in a ledger that balances.
    pub sums: Vec<crate::domain::money::Money>,
    pub balanced: bool,
    /// The platform's own accounts and their balances.
    pub platform: Vec<AccountBalance>,
}

/// One account and its balance per currency.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct AccountBalance {
    pub account: LedgerAccount,
    /// Debits minus credits: what the platform owes a party is negative here, and shown as
    /// `owed` too.
    pub balance: Vec<crate::domain::money::Money>,
    /// For a store's or a courier's account: what the platform owes them (the balance's
    /// negation).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub owed: Vec<crate::domain::money::Money>,
}

impl AccountBalance {
    pub fn of(account: LedgerAccount, balance: &Balance) -> Self {
        let money = |code: &String, amount: i64| {
            code.parse()
                .ok()
                .map(|c| crate::domain::money::Money::new(amount, c))
        };
        let party = account.store().is_some() || account.courier().is_some();
        AccountBalance {
            account,
            balance: balance
                .amounts
                .iter()
                .filter_map(|(c, a)| money(c, *a))
                .collect(),
            owed: if party {
                balance
                    .amounts
                    .iter()
                    .filter_map(|(c, a)| money(c, -*a))
                    .collect()
            } else {
                Vec::new()
            },
        }
    }
}

impl Ledger {
    pub fn new(parts: LedgerParts) -> Self {
        let repo = LedgerRepo::new(parts.store.clone());
        Ledger {
            inner: Arc::new(Inner {
                rates: RatesBook::new(repo.clone(), parts.live.clone()),
                repo,
                journal: Journal::new(parts.store.clone()),
                coupons: crate::store::coupons::CouponRepo::new(parts.store.clone()),
                live: parts.live,
                retried_at: parking_lot::Mutex::new(None),
                orders: OrderRepo::new(parts.store),
                payments: parts.payments,
                settings: parts.settings,
                clock: parts.clock,
                node: parts.node,
                kick: tokio::sync::Notify::new(),
            }),
        }
    }

    /// A coupon hold older than this, never paid, no longer counts: twice the payment window,
    /// so a hold is stale only once its order surely expired.
    fn coupon_hold(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.inner.live.get().payment_timeout() * 2)
            .unwrap_or(chrono::Duration::hours(1))
    }

    /// The rates checkouts freeze on their orders.
    pub fn rates(&self) -> &RatesBook {
        &self.inner.rates
    }

    /// Runs rounds until the service is gone. `get` hands out the service for one round at a
    /// time, so the loop never keeps the node alive.
    pub fn start<F>(get: F) -> tokio::task::JoinHandle<()>
    where
        F: Fn() -> Option<Ledger> + Send + 'static,
    {
        tokio::spawn(async move {
            loop {
                let Some(ledger) = get() else { return };
                match ledger.round().await {
                    Ok(_) | Err(LedgerError::Lost) => {}
                    Err(e) => tracing::warn!(error = %e, "ledger round failed; trying again"),
                }
                let kick = ledger.clone();
                drop(ledger);
                let _ = tokio::time::timeout(ROUND, kick.inner.kick.notified()).await;
            }
        })
    }

    /// One round: book what the journal has, release what is due, run the payouts asked for.
    /// Returns how many transactions were booked.
    pub async fn round(&self) -> Result<usize, LedgerError> {
        let Some(lease) = self.lease().await? else {
            return Ok(0);
        };
        // A batch a writer left half applied is finished before anything reads balances.
        self.inner.repo.recover().await?;
        let mut booked = self.consume(lease).await?;
        booked += self.release_due().await?;
        booked += self.pay_out().await?;
        Ok(booked)
    }

    // --- reading ---------------------------------------------------------------------

    pub async fn balance(&self, account: LedgerAccount) -> Result<AccountBalance, LedgerError> {
        let balance = self.inner.repo.balance(account).await?;
        Ok(AccountBalance::of(account, &balance))
    }

    /// A page of every account's balance (admins).
    pub async fn balances(
        &self,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<(Vec<AccountBalance>, Option<String>), LedgerError> {
        let (rows, next) = self.inner.repo.balances(cursor, limit).await?;
        let items = rows
            .iter()
            .map(|(account, balance)| AccountBalance::of(*account, balance))
            .collect();
        Ok((items, next))
    }

    pub async fn statement(
        &self,
        account: LedgerAccount,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<StatementLine>, bool), LedgerError> {
        Ok(self.inner.repo.statement(account, after, limit).await?)
    }

    /// Transactions in ledger order, after position `after`.
    pub async fn transactions(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<crate::domain::ledger::LedgerTx>, bool), LedgerError> {
        Ok(self.inner.repo.transactions(after, limit).await?)
    }

    /// Every balance summed: the check that the ledger balances.
    pub async fn summary(&self) -> Result<LedgerSummary, LedgerError> {
        let mut sums: std::collections::BTreeMap<String, i64> = Default::default();
        let mut accounts = 0u64;
        let mut platform = Vec::new();
        let mut cursor = None;
        loop {
            let (rows, next) = self
                .inner
                .repo
                .balances(cursor, crate::store::MAX_PAGE)
                .await?;
            for (account, balance) in &rows {
                accounts += 1;
                for (currency, amount) in &balance.amounts {
                    *sums.entry(currency.clone()).or_default() += amount;
                }
                if LedgerAccount::PLATFORM.contains(account) {
                    platform.push(AccountBalance::of(*account, balance));
                }
            }
            if next.is_none() || rows.is_empty() {
                break;
            }
            cursor = next;
        }
        let sums: Vec<_> = sums
            .into_iter()
            .filter_map(|(c, a)| Some(crate::domain::money::Money::new(a, c.parse().ok()?)))
            .collect();
        Ok(LedgerSummary {
            transactions: self.inner.repo.last().await?,
            accounts,
            balanced: sums.iter().all(|m| m.amount_minor == 0),
            sums,
            platform,
        })
    }

    // --- payouts ---------------------------------------------------------------------

    /// Asks for a payout run; the ledger's writer makes it within moments.
    pub async fn request_run(&self, by: Option<UserId>) -> Result<PayoutRun, LedgerError> {
        let run = PayoutRun {
            id: PayoutRunId::new(),
            status: RunStatus::Requested,
            requested_by: by,
            requested_at: self.inner.clock.now(),
            finished_at: None,
            payouts: 0,
            total: Vec::new(),
            without_destination: 0,
        };
        self.inner.repo.request_run(&run).await?;
        self.inner.kick.notify_waiters();
        Ok(run)
    }

    pub async fn run(&self, id: PayoutRunId) -> Result<Option<PayoutRun>, LedgerError> {
        Ok(self.inner.repo.run(id).await?.map(|v| v.value))
    }

    pub async fn payout(&self, id: PayoutId) -> Result<Option<Payout>, LedgerError> {
        Ok(self.inner.repo.payout(id).await?.map(|v| v.value))
    }

    pub async fn payouts(
        &self,
        account: Option<LedgerAccount>,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<(Vec<Payout>, Option<String>), LedgerError> {
        Ok(self.inner.repo.payouts(account, cursor, limit).await?)
    }

    pub async fn destination(
        &self,
        account: LedgerAccount,
    ) -> Result<Option<Destination>, LedgerError> {
        Ok(self.inner.repo.destination(account).await?)
    }

    pub async fn set_destination(
        &self,
        account: LedgerAccount,
        destination: String,
    ) -> Result<Destination, LedgerError> {
        let destination = Destination {
            destination,
            updated_at: self.inner.clock.now(),
        };
        self.inner
            .repo
            .set_destination(account, &destination)
            .await?;
        Ok(destination)
    }

    // --- releases held for review ----------------------------------------------------

    pub async fn held_for_review(
        &self,
        after: Option<OrderId>,
        limit: usize,
    ) -> Result<(Vec<PendingRelease>, Option<String>), LedgerError> {
        Ok(self.inner.repo.held_for_review(after, limit).await?)
    }

    /// Releases a delivery held for review now. `false`: none is held for that order.
    pub async fn release_reviewed(&self, order: OrderId) -> Result<bool, LedgerError> {
        let released = self
            .inner
            .repo
            .release_reviewed(order, self.inner.clock.now())
            .await?;
        self.inner.kick.notify_waiters();
        Ok(released)
    }
}
