//! Payments: one per checkout, opened at a provider, moved by provider events.
//!
//! [`Payments`] owns the `payments` and `payment_events` tables. A payment is created with an
//! intent at a [`PaymentProvider`] (Stripe, or the embedded [`SimulatedProvider`]); card data
//! goes from the browser to the provider and never through hexmarket. What happens to the
//! payment afterwards arrives as a [`PaymentEvent`] — from Stripe's webhook, or from the
//! payer's `simulate` call — and every event goes through [`Payments::apply`], which
//!
//! 1. claims the event id in `payment_events` with insert-if-absent, so an event delivered
//!    twice (or ten times at once) is applied once;
//! 2. moves the payment row by compare-and-set, recording the event id on the row;
//! 3. marks the claim applied;
//! 4. tells the registered [`PaymentListener`] what changed (the orders react: paid,
//!    payment failed and reservations released, refunded).
//!
//! A node that stops between 1 and 3 leaves a claim not marked applied; a redelivery more
//! than a minute later takes it over, and the event ids on the payment row keep the change
//! from landing twice. The listener may then hear an outcome twice: listeners are idempotent.
//!
//! Refunds are recorded on the payment before the provider is asked ([`Payments::refund`]):
//! the request (its idempotency key and amount) is durable first, so a retry after a crash
//! asks the provider again with the same key and the money moves once.
//!
//! A succeeded payment must end attached to paid orders or given back. Before a success is
//! applied the payment is marked unsettled; [`settlement`] pays its orders (or gives their
//! share back) and clears the mark, and its sweep retries whatever a crash cut short.
//!
//! Rows of `payments` (all built in [`keys`]):
//! - `{payment id}` → [`Payment`];
//! - `ref:{provider ref}` → payment id, to find the payment an event names;
//! - `checkout:{checkout id}` → payment id, claimed first so that a checkout has one payment;
//! - partition `settle:pending`, clustering payment id → [`Unsettled`]: payments whose orders
//!   are not yet settled.

pub mod provider;
pub mod simulated;
pub mod stripe;
pub mod webhook;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

pub use provider::{Intent, PaymentProvider, ProviderError, RefundRef, TransferRef};
pub use simulated::SimulatedProvider;
pub use stripe::StripeProvider;

use crate::clock::Clock;
use crate::domain::ids::{CheckoutId, PaymentId, UserId};
use crate::domain::money::Money;
use crate::store::typed::{Change, ModifyError, Rows};
use crate::store::{SharedStore, StoreError, Table};

/// Which provider a payment runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProviderName {
    /// No money moves: the payer decides the outcome (development, demos, tests).
    Simulated,
    Stripe,
}

impl ProviderName {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderName::Simulated => "simulated",
            ProviderName::Stripe => "stripe",
        }
    }
}

impl std::fmt::Display for ProviderName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a payment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Waiting for the payer.
    Pending,
    Succeeded,
    /// The last attempt failed; a later attempt on the same intent may still succeed.
    Failed,
    Refunded,
    PartiallyRefunded,
}

/// A payment of one checkout.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub id: PaymentId,
    pub checkout_id: CheckoutId,
    pub payer: UserId,
    pub amount: Money,
    pub provider: ProviderName,
    pub status: PaymentStatus,
    /// The provider's intent id (Stripe PaymentIntent `pi_…`, `sim_pi_…`).
    pub provider_ref: String,
    /// Stripe only: what the payer's browser confirms the intent with. Shown to the payer,
    /// never logged.
    pub client_secret: Option<String>,
    /// How much has been refunded so far, in minor units.
    pub refunded_minor: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Ids of the last events that moved this payment (see [`Payments::apply`]).
    #[serde(default)]
    pub applied_events: Vec<String>,
    /// Every refund asked for, oldest first.
    #[serde(default)]
    pub refunds: Vec<RefundEntry>,
}

/// One refund of a payment: recorded when asked for, completed when the provider took it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundEntry {
    /// The idempotency key the provider was (or will be) asked with.
    pub key: String,
    pub amount_minor: i64,
    pub requested_at: DateTime<Utc>,
    /// The provider's id of the refund, once it took it.
    #[serde(default)]
    pub provider_ref: Option<String>,
}

impl Payment {
    /// Minor units given back or being given back: what the provider reported, or the
    /// refunds asked for when more (the provider's report may lag behind).
    pub fn refund_commitments(&self) -> i64 {
        let asked: i64 = self.refunds.iter().map(|r| r.amount_minor).sum();
        self.refunded_minor.max(asked)
    }
}

/// A payment whose orders are not settled yet (see [`settlement`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unsettled {
    pub payment_id: PaymentId,
    /// When it was last marked.
    pub since: DateTime<Utc>,
}

impl std::fmt::Debug for Payment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Payment")
            .field("id", &self.id)
            .field("checkout_id", &self.checkout_id)
            .field("payer", &self.payer)
            .field("amount", &self.amount)
            .field("provider", &self.provider)
            .field("status", &self.status)
            .field("provider_ref", &self.provider_ref)
            .field("refunded_minor", &self.refunded_minor)
            .finish_non_exhaustive()
    }
}

/// How much a refund event says was refunded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundAmount {
    /// Everything refunded so far (Stripe's `charge.amount_refunded`): applying it twice, or
    /// out of order, cannot over-count.
    Total(i64),
    /// This refund alone (simulated refunds, whose event id is derived from the refund's
    /// idempotency key so that it too is applied once).
    Delta(i64),
}

/// What a provider event says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentEventKind {
    Succeeded,
    Failed,
    Refunded(RefundAmount),
}

/// One provider event about one intent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentEvent {
    /// The provider's event id (Stripe `evt_…`, `sim_evt_…`): the deduplication key.
    pub event_id: String,
    pub kind: PaymentEventKind,
    pub provider_ref: String,
}

/// What an applied event changed, for the orders of the checkout to react to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentOutcome {
    pub payment_id: PaymentId,
    pub checkout_id: CheckoutId,
    pub kind: OutcomeKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeKind {
    /// The orders are paid.
    Paid,
    /// The attempt failed: the orders become `payment_failed` and their reservations are
    /// released.
    PaymentFailed,
    /// Money went back: `refunded_minor` in total so far, `full` when it is all of it.
    Refunded { refunded_minor: i64, full: bool },
}

/// Told about every change an event makes; registered by whoever owns the orders.
pub type PaymentListener = Arc<dyn Fn(PaymentOutcome) -> BoxFuture<'static, ()> + Send + Sync>;

/// The result of [`Payments::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The event was new and moved the payment.
    Changed(Payment),
    /// The event was new but changed nothing (a late failure after success, a refund total
    /// already known); the payment as it stands.
    Unchanged(Payment),
    /// This event id was applied before.
    Duplicate,
    /// No payment has this provider reference (an intent hexmarket did not create).
    UnknownPayment,
}

/// Why a payments operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    #[error("no such payment")]
    NotFound,
    #[error("the {0} provider is not configured")]
    ProviderNotConfigured(ProviderName),
    #[error("{0}")]
    InvalidState(String),
    #[error("the amount must be positive")]
    InvalidAmount,
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ModifyError<PaymentError>> for PaymentError {
    fn from(e: ModifyError<PaymentError>) -> Self {
        match e {
            ModifyError::Rejected(e) => e,
            ModifyError::Store(e) => PaymentError::Store(e),
        }
    }
}

/// Every key of the payments tables.
pub mod keys {
    use crate::domain::ids::{CheckoutId, PaymentId};
    use crate::store::Key;

    pub fn payment(id: PaymentId) -> Key {
        Key::single(id.to_string())
    }

    /// Index row: provider reference → payment id.
    pub fn provider_ref(provider_ref: &str) -> Key {
        Key::single(format!("ref:{provider_ref}"))
    }

    /// Claim row: checkout → its one payment id.
    pub fn checkout(id: CheckoutId) -> Key {
        Key::single(format!("checkout:{id}"))
    }

    /// Mark of a payment whose orders are not settled yet.
    pub fn unsettled(id: PaymentId) -> Key {
        Key::new(UNSETTLED, id.to_string())
    }

    /// The partition of the unsettled marks.
    pub const UNSETTLED: &str = "settle:pending";

    /// Claim row of an applied event, in `payment_events`.
    pub fn event(event_id: &str) -> Key {
        Key::single(event_id.to_owned())
    }
}

/// A claimed event: who claimed it when, and whether its change was written.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct EventClaim {
    payment_id: PaymentId,
    kind: PaymentEventKind,
    received_at: DateTime<Utc>,
    applied: bool,
}

/// A claim not marked applied after this long belongs to a node that stopped half-way; a
/// redelivery of the event (Stripe retries for days) takes it over.
const CLAIM_TAKEOVER: chrono::Duration = chrono::Duration::seconds(60);

/// How many applied event ids a payment remembers, so that a taken-over event whose change
/// already landed is not applied twice. A payment sees a handful of events in its life.
const RECENT_EVENTS: usize = 32;

/// Most refunds one payment may have.
const MAX_REFUNDS: usize = 100;

/// What the compare-and-set step of [`Payments::apply`] decided.
enum Step {
    Moved(Payment, OutcomeKind),
    Unchanged(Payment),
    AlreadyApplied(Payment),
}

/// The outcome a payment's current status stands for (to repeat a notice).
fn outcome_of(payment: &Payment) -> Option<OutcomeKind> {
    match payment.status {
        PaymentStatus::Pending => None,
        PaymentStatus::Succeeded => Some(OutcomeKind::Paid),
        PaymentStatus::Failed => Some(OutcomeKind::PaymentFailed),
        PaymentStatus::Refunded | PaymentStatus::PartiallyRefunded => Some(OutcomeKind::Refunded {
            refunded_minor: payment.refunded_minor,
            full: payment.status == PaymentStatus::Refunded,
        }),
    }
}

/// What [`Payments`] is built from.
pub struct PaymentsParts {
    pub store: SharedStore,
    pub clock: Clock,
    pub simulated: Arc<dyn PaymentProvider>,
    /// Absent when Stripe is not configured.
    pub stripe: Option<Arc<dyn PaymentProvider>>,
    /// The webhook signing secret (`whsec_…`), with Stripe.
    pub webhook_secret: Option<String>,
}

/// The payments service. Cheap to clone; clones share the listener.
#[derive(Clone)]
pub struct Payments {
    inner: Arc<Inner>,
}

/// A [`Payments`] that does not keep it alive.
#[derive(Clone)]
pub struct WeakPayments(std::sync::Weak<Inner>);

impl WeakPayments {
    /// The service, while it exists.
    pub fn upgrade(&self) -> Option<Payments> {
        self.0.upgrade().map(|inner| Payments { inner })
    }
}

struct Inner {
    payments: Rows<Payment>,
    index: Rows<PaymentId>,
    unsettled: Rows<Unsettled>,
    events: Rows<EventClaim>,
    clock: Clock,
    simulated: Arc<dyn PaymentProvider>,
    stripe: Option<Arc<dyn PaymentProvider>>,
    webhook_secret: Option<String>,
    listener: RwLock<Option<PaymentListener>>,
}

impl Payments {
    pub fn new(parts: PaymentsParts) -> Self {
        Payments {
            inner: Arc::new(Inner {
                payments: Rows::new(Arc::clone(&parts.store), Table::Payments),
                index: Rows::new(Arc::clone(&parts.store), Table::Payments),
                unsettled: Rows::new(Arc::clone(&parts.store), Table::Payments),
                events: Rows::new(parts.store, Table::PaymentEvents),
                clock: parts.clock,
                simulated: parts.simulated,
                stripe: parts.stripe,
                webhook_secret: parts.webhook_secret,
                listener: RwLock::new(None),
            }),
        }
    }

    /// A handle that does not keep the service alive (for listeners, which the service holds).
    pub fn downgrade(&self) -> WeakPayments {
        WeakPayments(Arc::downgrade(&self.inner))
    }

    /// Registers the one listener told about every change (replacing any earlier one).
    pub fn set_listener(&self, listener: PaymentListener) {
        *self.inner.listener.write() = Some(listener);
    }

    /// The provider new checkouts use: Stripe when configured, else the simulated one.
    pub fn default_provider(&self) -> ProviderName {
        if self.inner.stripe.is_some() {
            ProviderName::Stripe
        } else {
            ProviderName::Simulated
        }
    }

    /// Stripe's webhook signing secret, when Stripe is configured.
    pub fn webhook_secret(&self) -> Option<&str> {
        self.inner.webhook_secret.as_deref()
    }

    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    fn provider(&self, name: ProviderName) -> Result<&Arc<dyn PaymentProvider>, PaymentError> {
        match name {
            ProviderName::Simulated => Ok(&self.inner.simulated),
            ProviderName::Stripe => self
                .inner
                .stripe
                .as_ref()
                .ok_or(PaymentError::ProviderNotConfigured(name)),
        }
    }

    /// Whether payouts through the default provider need each party's connected account.
    pub fn payouts_need_destination(&self) -> bool {
        self.provider(self.default_provider())
            .is_ok_and(|p| p.transfers_need_destination())
    }

    /// Transfers a payout through the default provider (idempotent per `key`).
    pub async fn transfer(
        &self,
        destination: Option<&str>,
        amount: Money,
        key: &str,
    ) -> Result<provider::TransferRef, PaymentError> {
        let provider = self.provider(self.default_provider())?;
        Ok(provider.transfer(destination, amount, key).await?)
    }

    /// Every payment, a page at a time (for reconciliation).
    pub async fn page(
        &self,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<(Vec<Payment>, Option<String>), PaymentError> {
        // The table holds index rows too (`ref:…`, `checkout:…`, marks): a payment's row is
        // the one whose partition is its bare id.
        let page = self
            .inner
            .payments
            .store()
            .scan_table(Table::Payments, cursor, limit)
            .await?;
        let mut payments = Vec::new();
        for row in &page.rows {
            if row.key.clustering.is_empty() && row.key.partition.parse::<PaymentId>().is_ok() {
                payments.push(crate::store::decode(Table::Payments, &row.data)?);
            }
        }
        Ok((payments, page.next))
    }

    pub async fn get(&self, id: PaymentId) -> Result<Option<Payment>, PaymentError> {
        Ok(self
            .inner
            .payments
            .get(&keys::payment(id))
            .await?
            .map(|v| v.value))
    }

    /// The payment an intent belongs to.
    pub async fn find_by_ref(&self, provider_ref: &str) -> Result<Option<Payment>, PaymentError> {
        match self
            .inner
            .index
            .get(&keys::provider_ref(provider_ref))
            .await?
        {
            Some(id) => self.get(id.value).await,
            None => Ok(None),
        }
    }

    /// The payment of a checkout, if one was created.
    pub async fn find_by_checkout(
        &self,
        checkout: CheckoutId,
    ) -> Result<Option<Payment>, PaymentError> {
        match self.inner.index.get(&keys::checkout(checkout)).await? {
            Some(id) => self.get(id.value).await,
            None => Ok(None),
        }
    }

    /// The id of `checkout`'s payment, claimed now if nobody has yet, so orders can name their
    /// payment before it is opened at the provider; [`create`](Self::create) uses the same id.
    pub async fn claim(&self, checkout: CheckoutId) -> Result<PaymentId, PaymentError> {
        Ok(self.claim_id(checkout).await?.0)
    }

    /// The claimed id, and whether this call claimed it.
    async fn claim_id(&self, checkout: CheckoutId) -> Result<(PaymentId, bool), PaymentError> {
        // Whoever claims the checkout first names the payment id everyone uses. A claim that
        // exists is read (a read costs no commit); only a missing one is written.
        if let Some(claimed) = self.inner.index.get(&keys::checkout(checkout)).await? {
            return Ok((claimed.value, false));
        }
        let fresh = PaymentId::new();
        match self
            .inner
            .index
            .insert(&keys::checkout(checkout), &fresh)
            .await?
        {
            Ok(_) => Ok((fresh, true)),
            Err(Some(claimed)) => Ok((claimed.value, false)),
            Err(None) => Err(StoreError::Unavailable(
                "checkout claim conflicted without a row".to_owned(),
            )
            .into()),
        }
    }

    /// Marks the payment unsettled (or marks it again): its orders are to be settled by
    /// [`settlement`]. Every mark changes the row's version, so a settlement that started
    /// before it does not clear it.
    pub async fn mark_unsettled(&self, id: PaymentId) -> Result<(), PaymentError> {
        let now = self.inner.clock.now();
        self.inner
            .unsettled
            .modify(&keys::unsettled(id), |_| {
                Ok::<_, PaymentError>(Change::Put(
                    Unsettled {
                        payment_id: id,
                        since: now,
                    },
                    (),
                ))
            })
            .await?;
        Ok(())
    }

    /// The version of the payment's unsettled mark (`None`: not marked).
    pub async fn unsettled_version(&self, id: PaymentId) -> Result<Option<u64>, PaymentError> {
        Ok(self
            .inner
            .unsettled
            .get(&keys::unsettled(id))
            .await?
            .map(|v| v.version))
    }

    /// Up to `limit` unsettled marks after the payment id `after`, with their versions.
    pub async fn unsettled_page(
        &self,
        after: Option<PaymentId>,
        limit: usize,
    ) -> Result<(Vec<(u64, Unsettled)>, Option<String>), PaymentError> {
        let range = match after {
            Some(after) => crate::store::ScanRange::after(after.to_string(), limit),
            None => crate::store::ScanRange::first(limit),
        };
        let (rows, next) = self.inner.unsettled.scan(keys::UNSETTLED, range).await?;
        Ok((
            rows.into_iter()
                .map(|(_, v)| (v.version, v.value))
                .collect(),
            next,
        ))
    }

    /// Clears the mark if it is still the one read at `version`.
    pub async fn clear_unsettled(&self, id: PaymentId, version: u64) -> Result<(), PaymentError> {
        self.inner
            .unsettled
            .delete(&keys::unsettled(id), version)
            .await?
            .ok();
        Ok(())
    }

    /// Creates the payment of `checkout` with an intent at `provider`. Idempotent per
    /// checkout: a retry, a concurrent call or a call after a crash half-way returns the one
    /// payment (the provider's intent is idempotent per checkout too).
    #[tracing::instrument(skip(self, amount), fields(checkout = %checkout, payer = %payer, provider = %provider))]
    pub async fn create(
        &self,
        checkout: CheckoutId,
        payer: UserId,
        amount: Money,
        provider: ProviderName,
    ) -> Result<Payment, PaymentError> {
        if amount.amount_minor <= 0 {
            return Err(PaymentError::InvalidAmount);
        }
        let backend = Arc::clone(self.provider(provider)?);
        let (id, fresh) = self.claim_id(checkout).await?;
        if !fresh && let Some(existing) = self.get(id).await? {
            return same_checkout(existing, payer, amount, provider);
        }
        // A claim without a payment: an earlier (or concurrent) attempt, or the checkout that
        // named its orders' payment, has not written it yet. Finish it under the claimed id:
        // everyone asks the provider for the intent, which is idempotent per checkout, and one
        // payment insert wins.
        let intent = backend.create_intent(checkout, amount, payer).await?;
        let now = self.inner.clock.now();
        let payment = Payment {
            id,
            checkout_id: checkout,
            payer,
            amount,
            provider,
            status: PaymentStatus::Pending,
            provider_ref: intent.provider_ref,
            client_secret: intent.client_secret,
            refunded_minor: 0,
            created_at: now,
            updated_at: now,
            applied_events: Vec::new(),
            refunds: Vec::new(),
        };
        // The index goes first: once the payment is visible its events can be matched.
        match self
            .inner
            .index
            .insert(&keys::provider_ref(&payment.provider_ref), &id)
            .await?
        {
            Ok(_) => {}
            Err(Some(other)) if other.value == id => {}
            Err(_) => {
                return Err(PaymentError::InvalidState(
                    "the provider returned an intent that belongs to another payment".to_owned(),
                ));
            }
        }
        let payment = match self
            .inner
            .payments
            .insert(&keys::payment(id), &payment)
            .await?
        {
            Ok(_) => payment,
            Err(Some(existing)) => existing.value,
            Err(None) => {
                return Err(StoreError::Unavailable(
                    "payment insert conflicted without a row".to_owned(),
                )
                .into());
            }
        };
        tracing::info!(payment = %payment.id, provider_ref = %payment.provider_ref, "payment created");
        Ok(payment)
    }

    /// Applies one provider event: at most once per event id, by compare-and-set on the
    /// payment, then tells the listener what changed.
    #[tracing::instrument(skip(self, event), fields(event = %event.event_id, provider_ref = %event.provider_ref))]
    pub async fn apply(&self, event: PaymentEvent) -> Result<Applied, PaymentError> {
        let Some(payment_id) = self
            .inner
            .index
            .get(&keys::provider_ref(&event.provider_ref))
            .await?
            .map(|v| v.value)
        else {
            tracing::info!("event for an intent hexmarket did not create; ignored");
            return Ok(Applied::UnknownPayment);
        };
        let key = keys::event(&event.event_id);
        let claim = EventClaim {
            payment_id,
            kind: event.kind,
            received_at: self.inner.clock.now(),
            applied: false,
        };
        let (claim_version, takeover) = match self.inner.events.insert(&key, &claim).await? {
            Ok(version) => (version, false),
            Err(Some(existing)) => {
                let stalled = self.inner.clock.now() - existing.value.received_at > CLAIM_TAKEOVER;
                if existing.value.applied || !stalled {
                    // Applied, or being applied right now by whoever claimed it.
                    tracing::debug!("event already claimed");
                    return Ok(Applied::Duplicate);
                }
                // Claimed long ago and never marked applied: whoever claimed it stopped
                // half-way. Finish the job; the payment row says whether its change landed.
                tracing::warn!("taking over an event claim left unfinished");
                (existing.version, true)
            }
            Err(None) => {
                return Err(StoreError::Unavailable(
                    "event claim conflicted without a row".to_owned(),
                )
                .into());
            }
        };
        if event.kind == PaymentEventKind::Succeeded {
            // Durable before the money counts as taken: the settlement sweep finds it even if
            // this node stops before the orders hear of it.
            self.mark_unsettled(payment_id).await?;
        }
        let now = self.inner.clock.now();
        let (step, _) = self
            .inner
            .payments
            .modify(&keys::payment(payment_id), |current| {
                let Some(current) = current else {
                    return Err(PaymentError::NotFound);
                };
                if current.applied_events.contains(&event.event_id) {
                    return Ok(Change::Keep(Step::AlreadyApplied(current.clone())));
                }
                Ok(match transition(current, event.kind, now) {
                    Some((mut next, outcome)) => {
                        next.applied_events.push(event.event_id.clone());
                        let excess = next.applied_events.len().saturating_sub(RECENT_EVENTS);
                        next.applied_events.drain(..excess);
                        Change::Put(next.clone(), Step::Moved(next, outcome))
                    }
                    None => Change::Keep(Step::Unchanged(current.clone())),
                })
            })
            .await?;
        let done = EventClaim {
            applied: true,
            ..claim
        };
        // Losing this race only means another taker marked it first.
        let _ = self.inner.events.update(&key, claim_version, &done).await?;
        let (payment, kind) = match step {
            Step::Unchanged(payment) => {
                // Nothing moved now, but the notice of an earlier move may have been lost (a
                // crash between the write and the notice): tell the listener the payment's
                // outcome again, so a retried request heals its orders. Listeners are
                // idempotent.
                if let Some(kind) = outcome_of(&payment) {
                    self.notify(&payment, kind).await;
                }
                return Ok(Applied::Unchanged(payment));
            }
            Step::AlreadyApplied(payment) if !takeover => {
                return Ok(Applied::Unchanged(payment));
            }
            // The change landed before the claimer stopped, but perhaps not its notice:
            // listeners are idempotent, so tell them again.
            Step::AlreadyApplied(payment) => match outcome_of(&payment) {
                Some(kind) => (payment, kind),
                None => return Ok(Applied::Unchanged(payment)),
            },
            Step::Moved(payment, kind) => (payment, kind),
        };
        tracing::info!(payment = %payment.id, status = ?payment.status, "payment moved");
        self.notify(&payment, kind).await;
        Ok(Applied::Changed(payment))
    }

    /// Tells the listener (if any) a payment's outcome.
    async fn notify(&self, payment: &Payment, kind: OutcomeKind) {
        let listener = self.inner.listener.read().clone();
        if let Some(listener) = listener {
            listener(PaymentOutcome {
                payment_id: payment.id,
                checkout_id: payment.checkout_id,
                kind,
            })
            .await;
        }
    }

    /// Refunds `amount_minor` of a paid payment. `idempotency_key` names this refund: the
    /// request is recorded on the payment first (so the decision survives a crash), then the
    /// provider is asked with the key; a retry with the same key asks again (the provider
    /// refunds once) or, once the provider took it, answers at once. Stripe reports the money
    /// on the webhook (`charge.refunded`); a simulated refund moves it when taken.
    #[tracing::instrument(skip(self, idempotency_key), fields(payment = %id))]
    pub async fn refund(
        &self,
        id: PaymentId,
        amount_minor: i64,
        idempotency_key: &str,
    ) -> Result<RefundRef, PaymentError> {
        if amount_minor <= 0 {
            return Err(PaymentError::InvalidAmount);
        }
        let now = self.inner.clock.now();
        let (asked, _) = self
            .inner
            .payments
            .modify(&keys::payment(id), |current| {
                let current = current.ok_or(PaymentError::NotFound)?;
                if let Some(entry) = current.refunds.iter().find(|r| r.key == idempotency_key) {
                    if entry.amount_minor != amount_minor {
                        return Err(PaymentError::InvalidState(
                            "this refund key was used for another amount".to_owned(),
                        ));
                    }
                    return Ok(Change::Keep((current.clone(), entry.provider_ref.clone())));
                }
                match current.status {
                    PaymentStatus::Succeeded | PaymentStatus::PartiallyRefunded => {}
                    other => {
                        return Err(PaymentError::InvalidState(format!(
                            "a {other:?} payment cannot be refunded"
                        )));
                    }
                }
                if amount_minor > current.amount.amount_minor - current.refund_commitments() {
                    return Err(PaymentError::InvalidState(
                        "the refund exceeds what is left of the payment".to_owned(),
                    ));
                }
                if current.refunds.len() >= MAX_REFUNDS {
                    return Err(PaymentError::InvalidState(
                        "this payment has too many refunds".to_owned(),
                    ));
                }
                let mut next = current.clone();
                next.refunds.push(RefundEntry {
                    key: idempotency_key.to_owned(),
                    amount_minor,
                    requested_at: now,
                    provider_ref: None,
                });
                next.updated_at = now;
                Ok(Change::Put(next.clone(), (next, None)))
            })
            .await?;
        let (payment, taken) = asked;
        if let Some(provider_ref) = taken {
            return Ok(RefundRef { provider_ref });
        }
        let provider = self.provider(payment.provider)?;
        let refund = provider
            .refund(&payment.provider_ref, amount_minor, idempotency_key)
            .await?;
        let simulated = payment.provider == ProviderName::Simulated;
        let now = self.inner.clock.now();
        let (moved, _) = self
            .inner
            .payments
            .modify(&keys::payment(id), |current| {
                let current = current.ok_or(PaymentError::NotFound)?;
                let mut next = current.clone();
                let Some(entry) = next.refunds.iter_mut().find(|r| r.key == idempotency_key) else {
                    return Ok(Change::Keep(None));
                };
                if entry.provider_ref.is_some() {
                    return Ok(Change::Keep(None));
                }
                entry.provider_ref = Some(refund.provider_ref.clone());
                next.updated_at = now;
                if !simulated {
                    return Ok(Change::Put(next, None));
                }
                // No webhook will tell: the simulated money moves now.
                let moved = transition(
                    &next,
                    PaymentEventKind::Refunded(RefundAmount::Delta(amount_minor)),
                    now,
                );
                Ok(match moved {
                    Some((moved, kind)) => Change::Put(moved.clone(), Some((moved, kind))),
                    None => Change::Put(next, None),
                })
            })
            .await?;
        if let Some((payment, kind)) = moved {
            tracing::info!(payment = %payment.id, status = ?payment.status, "payment refunded");
            self.notify(&payment, kind).await;
        }
        Ok(refund)
    }
}

/// A second `create` for a checkout must describe the same payment.
fn same_checkout(
    existing: Payment,
    payer: UserId,
    amount: Money,
    provider: ProviderName,
) -> Result<Payment, PaymentError> {
    if existing.payer == payer && existing.amount == amount && existing.provider == provider {
        Ok(existing)
    } else {
        Err(PaymentError::InvalidState(
            "this checkout already has a different payment".to_owned(),
        ))
    }
}

/// The payment after `kind`, and what changed; `None` when the event changes nothing.
fn transition(
    current: &Payment,
    kind: PaymentEventKind,
    now: DateTime<Utc>,
) -> Option<(Payment, OutcomeKind)> {
    use PaymentStatus as S;
    let mut next = current.clone();
    next.updated_at = now;
    let outcome = match (current.status, kind) {
        // Stripe lets a payer retry on the same intent after a decline.
        (S::Pending | S::Failed, PaymentEventKind::Succeeded) => {
            next.status = S::Succeeded;
            OutcomeKind::Paid
        }
        (S::Pending, PaymentEventKind::Failed) => {
            next.status = S::Failed;
            OutcomeKind::PaymentFailed
        }
        (S::Succeeded | S::PartiallyRefunded, PaymentEventKind::Refunded(amount)) => {
            let total = match amount {
                RefundAmount::Total(total) => total.max(current.refunded_minor),
                RefundAmount::Delta(delta) => current.refunded_minor.saturating_add(delta),
            }
            .min(current.amount.amount_minor);
            if total <= current.refunded_minor {
                return None;
            }
            let full = total >= current.amount.amount_minor;
            next.refunded_minor = total;
            next.status = if full {
                S::Refunded
            } else {
                S::PartiallyRefunded
            };
            OutcomeKind::Refunded {
                refunded_minor: total,
                full,
            }
        }
        // Late or out-of-order events: a failure after success, success after a refund, …
        _ => return None,
    };
    Some((next, outcome))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::money::Currency;

    fn payment(status: PaymentStatus, refunded_minor: i64) -> Payment {
        let now = Utc::now();
        Payment {
            id: PaymentId::new(),
            checkout_id: CheckoutId::new(),
            payer: UserId::new(),
            amount: Money::new(
                1000,
                "EUR".parse::<Currency>().unwrap_or_else(|_| unreachable!()),
            ),
            provider: ProviderName::Simulated,
            status,
            provider_ref: "sim_pi_1".to_owned(),
            client_secret: None,
            refunded_minor,
            created_at: now,
            updated_at: now,
            applied_events: Vec::new(),
            refunds: Vec::new(),
        }
    }

    #[test]
    fn success_after_a_failure_pays_but_a_failure_after_success_changes_nothing() {
        let failed = payment(PaymentStatus::Failed, 0);
        let (next, outcome) = transition(&failed, PaymentEventKind::Succeeded, Utc::now())
            .unwrap_or_else(|| unreachable!());
        assert_eq!(next.status, PaymentStatus::Succeeded);
        assert_eq!(outcome, OutcomeKind::Paid);
        assert!(transition(&next, PaymentEventKind::Failed, Utc::now()).is_none());
    }

    #[test]
    fn refund_totals_never_count_twice_and_cap_at_the_amount() {
        let paid = payment(PaymentStatus::Succeeded, 0);
        let (partial, outcome) = transition(
            &paid,
            PaymentEventKind::Refunded(RefundAmount::Total(300)),
            Utc::now(),
        )
        .unwrap_or_else(|| unreachable!());
        assert_eq!(partial.status, PaymentStatus::PartiallyRefunded);
        assert_eq!(
            outcome,
            OutcomeKind::Refunded {
                refunded_minor: 300,
                full: false
            }
        );
        assert!(
            transition(
                &partial,
                PaymentEventKind::Refunded(RefundAmount::Total(300)),
                Utc::now()
            )
            .is_none()
        );
        let (full, _) = transition(
            &partial,
            PaymentEventKind::Refunded(RefundAmount::Delta(5000)),
            Utc::now(),
        )
        .unwrap_or_else(|| unreachable!());
        assert_eq!(full.status, PaymentStatus::Refunded);
        assert_eq!(full.refunded_minor, 1000);
    }

    fn payments_on(dir: &std::path::Path, clock: Clock) -> Payments {
        let store: SharedStore = Arc::new(
            crate::store::embedded::EmbeddedStore::open(dir).unwrap_or_else(|_| unreachable!()),
        );
        Payments::new(PaymentsParts {
            store,
            clock,
            simulated: Arc::new(SimulatedProvider::new()),
            stripe: None,
            webhook_secret: None,
        })
    }

    #[tokio::test]
    async fn a_claim_left_unfinished_is_taken_over_by_a_late_redelivery_only() {
        let dir = tempfile::tempdir().unwrap_or_else(|_| unreachable!());
        let clock = Clock::default();
        let payments = payments_on(dir.path(), clock.clone());
        let payment = payments
            .create(
                CheckoutId::new(),
                UserId::new(),
                payment(PaymentStatus::Pending, 0).amount,
                ProviderName::Simulated,
            )
            .await
            .unwrap_or_else(|_| unreachable!());
        // A node claimed the event and stopped before moving the payment.
        let stalled = EventClaim {
            payment_id: payment.id,
            kind: PaymentEventKind::Succeeded,
            received_at: clock.now(),
            applied: false,
        };
        let inserted = payments
            .inner
            .events
            .insert(&keys::event("sim_evt_stalled"), &stalled)
            .await;
        assert!(matches!(inserted, Ok(Ok(_))));
        let event = PaymentEvent {
            event_id: "sim_evt_stalled".to_owned(),
            kind: PaymentEventKind::Succeeded,
            provider_ref: payment.provider_ref.clone(),
        };

        // Right away it may still be in flight: a duplicate.
        let early = payments.apply(event.clone()).await;
        assert!(matches!(early, Ok(Applied::Duplicate)));

        clock.advance(std::time::Duration::from_secs(61));
        let late = payments.apply(event.clone()).await;
        assert!(
            matches!(late, Ok(Applied::Changed(ref p)) if p.status == PaymentStatus::Succeeded)
        );
        let again = payments.apply(event).await;
        assert!(matches!(again, Ok(Applied::Duplicate)));
    }

    #[test]
    fn a_pending_payment_cannot_be_refunded() {
        let pending = payment(PaymentStatus::Pending, 0);
        assert!(
            transition(
                &pending,
                PaymentEventKind::Refunded(RefundAmount::Total(10)),
                Utc::now()
            )
            .is_none()
        );
    }
}
