//! Stripe through async-stripe: PaymentIntents opened with the checkout id as idempotency key,
//! refunds with the caller's key. The payment's outcome arrives later on the webhook.
//!
//! Requests go through async-stripe's client (authentication, `Stripe-Version`, the
//! `Idempotency-Key` header, retries on `Stripe-Should-Retry`). Answers are decoded as plain
//! JSON and only the few fields hexmarket uses are read: async-stripe's generated types insist
//! on every field of the newest API version, which neither older API versions nor localstripe
//! (the test double) send.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use stripe::{Client, ClientBuilder, IdempotencyKey, RequestStrategy, StripeError};
use stripe_client_core::{RequestBuilder, StripeMethod};

use super::ProviderName;
use super::provider::{Intent, PaymentProvider, ProviderError, RefundRef, TransferRef};
use crate::config::StripeSettings;
use crate::domain::ids::{CheckoutId, UserId};
use crate::domain::money::Money;

/// Attempts per request; every attempt carries the same idempotency key, so a retry after a
/// lost answer never charges or refunds twice.
const ATTEMPTS: u32 = 3;
/// Per-attempt timeout.
const ATTEMPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// The Stripe provider.
#[derive(Clone)]
pub struct StripeProvider {
    client: Client,
}

impl std::fmt::Debug for StripeProvider {
    // The client holds the secret key (marked sensitive, but say nothing at all).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeProvider").finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct IntentMetadata {
    checkout_id: String,
    payer: String,
}

#[derive(Serialize)]
struct CreateIntentForm {
    amount: i64,
    currency: String,
    metadata: IntentMetadata,
}

#[derive(Serialize)]
struct CreateRefundForm<'a> {
    payment_intent: &'a str,
    amount: i64,
}

#[derive(Serialize)]
struct CreateTransferForm<'a> {
    amount: i64,
    currency: String,
    destination: &'a str,
    /// Groups a payout's transfer under its id in Stripe's dashboard.
    transfer_group: &'a str,
}

#[derive(Deserialize)]
struct TransferAnswer {
    id: String,
}

#[derive(Deserialize)]
struct IntentAnswer {
    id: String,
    client_secret: Option<String>,
}

#[derive(Deserialize)]
struct RefundAnswer {
    id: String,
}

impl StripeProvider {
    pub fn new(settings: &StripeSettings) -> Result<Self, ProviderError> {
        // The HTTPS connector takes the process-wide rustls provider; install ring's (the one
        // every other client of this process uses) if nobody has yet. A refusal means one is
        // installed already, which is fine.
        if rustls::crypto::ring::default_provider()
            .install_default()
            .is_err()
        {
            tracing::debug!("a TLS crypto provider was already installed");
        }
        // async-stripe appends `v1/...` to the base as given.
        let mut base = settings.api_base.clone();
        if !base.ends_with('/') {
            base.push('/');
        }
        let client = ClientBuilder::new(settings.secret_key.clone())
            .url(base)
            .timeout(ATTEMPT_TIMEOUT)
            .app_info(
                "hexmarket",
                Some(env!("CARGO_PKG_VERSION").to_owned()),
                None,
            )
            .build()
            .map_err(|e| ProviderError::Unavailable(format!("building the Stripe client: {e}")))?;
        Ok(StripeProvider { client })
    }

    /// Sends `request` with `key` on every attempt and decodes the answer.
    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        request: RequestBuilder,
        key: &str,
    ) -> Result<T, ProviderError> {
        let key = IdempotencyKey::new(key)
            .map_err(|e| ProviderError::Rejected(format!("idempotency key: {e}")))?;
        // `Idempotent` sends the key once; retries with the same key are done here so that
        // every attempt carries it.
        let mut last = ProviderError::Unavailable("no attempt made".to_owned());
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(200 << attempt)).await;
            }
            let customized = RequestBuilder {
                query: request.query.clone(),
                body: request.body.clone(),
                path: request.path.clone(),
                method: request.method,
            }
            .customize::<miniserde::json::Value>()
            .request_strategy(RequestStrategy::Idempotent(key.clone()));
            match customized.send(&self.client).await {
                Ok(value) => {
                    let text = miniserde::json::to_string(&value);
                    return serde_json::from_str(&text).map_err(|e| {
                        ProviderError::Unavailable(format!("unexpected answer from Stripe: {e}"))
                    });
                }
                Err(StripeError::Stripe(errors, status)) if (400..500).contains(&status) => {
                    let message = errors
                        .message
                        .clone()
                        .unwrap_or_else(|| format!("status {status}"));
                    // 409: a concurrent request with this key is still running; 429: slow down.
                    if status == 409 || status == 429 {
                        last = ProviderError::Unavailable(message);
                        continue;
                    }
                    return Err(ProviderError::Rejected(message));
                }
                Err(e) => {
                    tracing::warn!(attempt, error = %e, "Stripe request failed");
                    last = ProviderError::Unavailable(e.to_string());
                }
            }
        }
        Err(last)
    }
}

#[async_trait]
impl PaymentProvider for StripeProvider {
    fn name(&self) -> ProviderName {
        ProviderName::Stripe
    }

    #[tracing::instrument(skip(self, amount, payer), fields(checkout = %checkout))]
    async fn create_intent(
        &self,
        checkout: CheckoutId,
        amount: Money,
        payer: UserId,
    ) -> Result<Intent, ProviderError> {
        let form = CreateIntentForm {
            amount: amount.amount_minor,
            currency: amount.currency.code().to_ascii_lowercase(),
            metadata: IntentMetadata {
                checkout_id: checkout.to_string(),
                payer: payer.to_string(),
            },
        };
        let request = RequestBuilder::new(StripeMethod::Post, "/payment_intents").form(&form);
        let answer: IntentAnswer = self.send(request, &checkout.to_string()).await?;
        Ok(Intent {
            provider_ref: answer.id,
            client_secret: answer.client_secret,
        })
    }

    #[tracing::instrument(skip(self, idempotency_key))]
    async fn refund(
        &self,
        provider_ref: &str,
        amount_minor: i64,
        idempotency_key: &str,
    ) -> Result<RefundRef, ProviderError> {
        let form = CreateRefundForm {
            payment_intent: provider_ref,
            amount: amount_minor,
        };
        let request = RequestBuilder::new(StripeMethod::Post, "/refunds").form(&form);
        let answer: RefundAnswer = self.send(request, idempotency_key).await?;
        Ok(RefundRef {
            provider_ref: answer.id,
        })
    }

    #[tracing::instrument(skip(self, destination, amount))]
    async fn transfer(
        &self,
        destination: Option<&str>,
        amount: Money,
        idempotency_key: &str,
    ) -> Result<TransferRef, ProviderError> {
        let destination = destination.ok_or_else(|| {
            ProviderError::Rejected("a Stripe transfer needs a connected account".to_owned())
        })?;
        let form = CreateTransferForm {
            amount: amount.amount_minor,
            currency: amount.currency.code().to_ascii_lowercase(),
            destination,
            transfer_group: idempotency_key,
        };
        let request = RequestBuilder::new(StripeMethod::Post, "/transfers").form(&form);
        let answer: TransferAnswer = self.send(request, idempotency_key).await?;
        Ok(TransferRef {
            provider_ref: answer.id,
        })
    }
}
