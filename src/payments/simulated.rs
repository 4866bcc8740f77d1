//! The embedded provider: no network, no money. Intents succeed or fail only when the payer
//! says so through `POST /api/v1/payments/{id}/simulate`, which drives the same event path as
//! Stripe's webhook. Payouts are transfers that always go through, except to the destination
//! [`REFUSED_DESTINATION`], which the provider refuses (to exercise a payout that fails).

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use super::ProviderName;
use super::provider::{Intent, PaymentProvider, ProviderError, RefundRef, TransferRef};
use crate::domain::ids::{CheckoutId, UserId};
use crate::domain::money::Money;

/// The one destination the simulated provider refuses transfers to.
pub const REFUSED_DESTINATION: &str = "sim_refuse";

/// The simulated provider. Its references derive from their inputs, so asking twice for the
/// same checkout (or refunding twice with one key) gives the same answer, as Stripe's
/// idempotency keys do.
#[derive(Debug, Clone, Default)]
pub struct SimulatedProvider;

impl SimulatedProvider {
    pub fn new() -> Self {
        SimulatedProvider
    }
}

/// First 24 hex digits of SHA-256 over the parts: a stable, opaque reference.
fn digest(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hasher
        .finalize()
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[async_trait]
impl PaymentProvider for SimulatedProvider {
    fn name(&self) -> ProviderName {
        ProviderName::Simulated
    }

    async fn create_intent(
        &self,
        checkout: CheckoutId,
        amount: Money,
        _payer: UserId,
    ) -> Result<Intent, ProviderError> {
        if amount.amount_minor <= 0 {
            return Err(ProviderError::Rejected(
                "the amount must be positive".to_owned(),
            ));
        }
        Ok(Intent {
            provider_ref: format!("sim_pi_{}", digest(&[&checkout.to_string()])),
            client_secret: None,
        })
    }

    async fn refund(
        &self,
        provider_ref: &str,
        amount_minor: i64,
        idempotency_key: &str,
    ) -> Result<RefundRef, ProviderError> {
        if amount_minor <= 0 {
            return Err(ProviderError::Rejected(
                "the refund amount must be positive".to_owned(),
            ));
        }
        Ok(RefundRef {
            provider_ref: format!("sim_re_{}", digest(&[provider_ref, idempotency_key])),
        })
    }

    fn transfers_need_destination(&self) -> bool {
        false
    }

    async fn transfer(
        &self,
        destination: Option<&str>,
        amount: Money,
        idempotency_key: &str,
    ) -> Result<TransferRef, ProviderError> {
        if amount.amount_minor <= 0 {
            return Err(ProviderError::Rejected(
                "the transfer amount must be positive".to_owned(),
            ));
        }
        if destination == Some(REFUSED_DESTINATION) {
            return Err(ProviderError::Rejected(
                "the destination account cannot receive transfers".to_owned(),
            ));
        }
        Ok(TransferRef {
            provider_ref: format!("sim_tr_{}", digest(&[idempotency_key])),
        })
    }
}
