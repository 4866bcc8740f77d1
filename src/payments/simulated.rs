//! The embedded provider: no network, no money. Intents succeed or fail only when the payer
//! says so through `POST /api/v1/payments/{id}/simulate`, which drives the same event path as
//! Stripe's webhook.

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use super::ProviderName;
use super::provider::{Intent, PaymentProvider, ProviderError, RefundRef};
use crate::domain::ids::{CheckoutId, UserId};
use crate::domain::money::Money;

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
}
