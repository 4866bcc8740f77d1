//! The contract every payment provider honours: open an intent for a checkout (at most one per
//! checkout, however often it is asked) and refund part or all of a paid intent.

use async_trait::async_trait;

use crate::domain::ids::{CheckoutId, UserId};
use crate::domain::money::Money;

/// An intent opened at the provider: what the client needs to pay it.
#[derive(Clone, PartialEq, Eq)]
pub struct Intent {
    /// The provider's id of the intent (a Stripe PaymentIntent id, `sim_pi_…`).
    pub provider_ref: String,
    /// What the browser hands to Stripe.js to confirm the payment; card data goes from the
    /// browser to Stripe, never through hexmarket. Absent for the simulated provider.
    pub client_secret: Option<String>,
}

impl std::fmt::Debug for Intent {
    // The client secret lets its holder confirm the payment: it never reaches logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intent")
            .field("provider_ref", &self.provider_ref)
            .finish_non_exhaustive()
    }
}

/// A refund accepted by the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRef {
    /// The provider's id of the refund (`re_…`, `sim_re_…`).
    pub provider_ref: String,
}

/// A transfer to a connected account accepted by the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferRef {
    /// The provider's id of the transfer (`tr_…`, `sim_tr_…`).
    pub provider_ref: String,
}

/// Why a provider call failed.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The provider refused the request (bad amount, intent not refundable, …).
    #[error("the payment provider refused the request: {0}")]
    Rejected(String),
    /// The provider could not be reached or answered something unusable; retrying with the
    /// same idempotency key is safe.
    #[error("the payment provider is unavailable: {0}")]
    Unavailable(String),
}

/// A payment provider.
#[async_trait]
pub trait PaymentProvider: Send + Sync + 'static {
    /// The name stored on payments and shown in responses (`simulated`, `stripe`).
    fn name(&self) -> super::ProviderName;

    /// Opens the intent for `checkout`. Idempotent per checkout id: asking again (after a
    /// timeout, a crash, a concurrent request) yields the same intent.
    async fn create_intent(
        &self,
        checkout: CheckoutId,
        amount: Money,
        payer: UserId,
    ) -> Result<Intent, ProviderError>;

    /// Refunds `amount_minor` of the intent. Idempotent per `idempotency_key`.
    async fn refund(
        &self,
        provider_ref: &str,
        amount_minor: i64,
        idempotency_key: &str,
    ) -> Result<RefundRef, ProviderError>;

    /// Whether a payout needs the party's connected account at the provider.
    fn transfers_need_destination(&self) -> bool {
        true
    }

    /// Transfers `amount` of the platform's balance to `destination` (a payout). Idempotent
    /// per `idempotency_key`: one transfer per payout, however often it is asked.
    async fn transfer(
        &self,
        destination: Option<&str>,
        amount: Money,
        idempotency_key: &str,
    ) -> Result<TransferRef, ProviderError>;
}
