//! Payments over HTTP: Stripe's webhook, a payment as its payer (or an admin) sees it, and
//! the simulated provider's outcome switch.
//!
//! The webhook reads the raw body (the signature covers its exact bytes), refuses anything
//! unsigned, stale or tampered with as 400 `invalid_signature`, and answers 200 to events it
//! applied, already applied, or does not act on, so that Stripe stops resending them.
//! `simulate` builds the event Stripe would have sent and hands it to the same
//! [`Payments::apply`](crate::payments::Payments::apply).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::ids::{CheckoutId, PaymentId, UserId};
use crate::domain::money::Money;
use crate::error_code::ErrorCode;
use crate::payments::webhook::{self, Parsed};
use crate::payments::{
    Applied, Payment, PaymentError, PaymentEvent, PaymentEventKind, PaymentStatus, ProviderError,
    ProviderName,
};
use crate::web::extract::AuthUser;
use crate::web::{ApiError, AppState};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/payments/stripe/webhook", web::post().to(stripe_webhook))
        .route("/payments/{id}", web::get().to(get_payment))
        .route("/payments/{id}/simulate", web::post().to(simulate));
}

impl From<PaymentError> for ApiError {
    fn from(e: PaymentError) -> Self {
        match e {
            PaymentError::NotFound => ApiError::not_found("no such payment"),
            PaymentError::ProviderNotConfigured(_) => {
                ApiError::conflict(ErrorCode::ProviderNotConfigured, e.to_string())
            }
            PaymentError::InvalidState(detail) => {
                ApiError::conflict(ErrorCode::InvalidPaymentState, detail)
            }
            PaymentError::InvalidAmount => ApiError::invalid_field("amount", e.to_string()),
            PaymentError::Provider(ProviderError::Rejected(detail)) => {
                ApiError::new(StatusCode::BAD_GATEWAY, ErrorCode::ProviderRejected, detail)
            }
            PaymentError::Provider(ProviderError::Unavailable(_)) => {
                ApiError::unavailable(ErrorCode::ProviderUnavailable, e)
            }
            PaymentError::Store(e) => e.into(),
        }
    }
}

/// A payment as its payer or an admin sees it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PaymentView {
    #[schema(value_type = String, format = Uuid)]
    pub id: PaymentId,
    #[schema(value_type = String, format = Uuid)]
    pub checkout_id: CheckoutId,
    #[schema(value_type = String, format = Uuid)]
    pub payer: UserId,
    pub amount: Money,
    /// `simulated` or `stripe`.
    pub provider: ProviderName,
    pub status: PaymentStatus,
    /// The provider's intent id.
    pub provider_ref: String,
    /// Stripe only, and to the payer only: what Stripe.js confirms the payment with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    pub refunded_minor: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl PaymentView {
    pub fn new(payment: Payment, viewer: UserId) -> Self {
        let client_secret = if viewer == payment.payer {
            payment.client_secret
        } else {
            None
        };
        PaymentView {
            id: payment.id,
            checkout_id: payment.checkout_id,
            payer: payment.payer,
            amount: payment.amount,
            provider: payment.provider,
            status: payment.status,
            provider_ref: payment.provider_ref,
            client_secret,
            refunded_minor: payment.refunded_minor,
            created_at: payment.created_at,
            updated_at: payment.updated_at,
        }
    }
}

/// The webhook's answer.
#[derive(Debug, Serialize)]
struct WebhookAnswer {
    /// `applied`, `unchanged`, `duplicate`, `unknown_payment` or `ignored`.
    result: &'static str,
}

/// Stripe's webhook: verify, translate, apply.
#[utoipa::path(post, path = "/api/v1/payments/stripe/webhook", tag = "payments",
    request_body(content = String, description = "a Stripe event, signed in `Stripe-Signature`", content_type = "application/json"),
    responses((status = 200, description = "applied, already applied, or not acted on"),
        (status = 400, body = crate::web::problem::Problem), (status = 404, body = crate::web::problem::Problem)))]
#[tracing::instrument(name = "payments.stripe_webhook", skip_all)]
pub async fn stripe_webhook(
    state: web::Data<AppState>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let payments = &state.payments;
    let Some(secret) = payments.webhook_secret() else {
        return Err(ApiError::not_found("Stripe is not configured"));
    };
    let header = request
        .headers()
        .get("Stripe-Signature")
        .and_then(|v| v.to_str().ok());
    if let Err(e) = webhook::verify(secret, header, &body, payments.clock().now()) {
        tracing::warn!(reason = %e, "webhook refused");
        return Err(ApiError::bad_request(
            ErrorCode::InvalidSignature,
            "the Stripe-Signature header does not match this body",
        ));
    }
    let result = match webhook::parse_event(&body) {
        None => {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidEvent,
                "the body is not a Stripe event",
            ));
        }
        Some(Parsed::Ignored { event_id, kind }) => {
            tracing::debug!(event = %event_id, kind = %kind, "event type not acted on");
            "ignored"
        }
        Some(Parsed::Event(event)) => {
            // Stripe events for an intent of another provider cannot be genuine.
            match payments.find_by_ref(&event.provider_ref).await? {
                Some(payment) if payment.provider != ProviderName::Stripe => "unknown_payment",
                _ => answer(payments.apply(event).await?),
            }
        }
    };
    Ok(HttpResponse::Ok().json(WebhookAnswer { result }))
}

fn answer(applied: Applied) -> &'static str {
    match applied {
        Applied::Changed(_) => "applied",
        Applied::Unchanged(_) => "unchanged",
        Applied::Duplicate => "duplicate",
        Applied::UnknownPayment => "unknown_payment",
    }
}

/// A payment, to its payer or an admin; 404 to anyone else.
#[utoipa::path(get, path = "/api/v1/payments/{id}", tag = "payments",
    params(("id" = String, Path, format = Uuid, description = "payment id")),
    responses((status = 200, body = PaymentView), (status = 401, body = crate::web::problem::Problem),
        (status = 404, body = crate::web::problem::Problem)))]
#[tracing::instrument(name = "payments.get", skip_all, fields(payment_id = %path, user_id = %caller.id))]
pub async fn get_payment(
    state: web::Data<AppState>,
    caller: AuthUser,
    path: web::Path<PaymentId>,
) -> Result<HttpResponse, ApiError> {
    let payment = state
        .payments
        .get(path.into_inner())
        .await?
        .ok_or_else(|| ApiError::not_found("no such payment"))?;
    caller.require_owner_or_admin(payment.payer)?;
    Ok(HttpResponse::Ok().json(PaymentView::new(payment, caller.id)))
}

/// What the payer wants the simulated provider to report.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SimulatedOutcome {
    Succeed,
    Fail,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct SimulateRequest {
    pub outcome: SimulatedOutcome,
}

/// The answer to `simulate`: the payment afterwards, and whether the event moved it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SimulateAnswer {
    pub changed: bool,
    pub payment: PaymentView,
}

/// The simulated provider's outcome, chosen by the payer; 409 `not_simulated` for payments of
/// a real provider.
#[utoipa::path(post, path = "/api/v1/payments/{id}/simulate", tag = "payments",
    params(("id" = String, Path, format = Uuid, description = "payment id")), request_body = SimulateRequest,
    responses((status = 200, body = SimulateAnswer), (status = 401, body = crate::web::problem::Problem),
        (status = 404, body = crate::web::problem::Problem), (status = 409, body = crate::web::problem::Problem)))]
#[tracing::instrument(name = "payments.simulate", skip_all, fields(payment_id = %path, user_id = %caller.id))]
pub async fn simulate(
    state: web::Data<AppState>,
    caller: AuthUser,
    path: web::Path<PaymentId>,
    body: web::Json<SimulateRequest>,
) -> Result<HttpResponse, ApiError> {
    let payments = &state.payments;
    let payment = payments
        .get(path.into_inner())
        .await?
        .filter(|p| p.payer == caller.id)
        .ok_or_else(|| ApiError::not_found("no such payment"))?;
    if payment.provider != ProviderName::Simulated {
        return Err(ApiError::conflict(
            ErrorCode::NotSimulated,
            format!(
                "this payment runs on {}; its outcome comes from the provider",
                payment.provider
            ),
        ));
    }
    let kind = match body.outcome {
        SimulatedOutcome::Succeed => PaymentEventKind::Succeeded,
        SimulatedOutcome::Fail => PaymentEventKind::Failed,
    };
    let event = PaymentEvent {
        event_id: format!("sim_evt_{}", uuid::Uuid::now_v7().simple()),
        kind,
        provider_ref: payment.provider_ref.clone(),
    };
    let (changed, payment) = match payments.apply(event).await? {
        Applied::Changed(p) => (true, p),
        Applied::Unchanged(p) => (false, p),
        // A fresh event id cannot be a duplicate, and the payment was just read.
        Applied::Duplicate | Applied::UnknownPayment => (false, payment),
    };
    Ok(HttpResponse::Ok().json(SimulateAnswer {
        changed,
        payment: PaymentView::new(payment, caller.id),
    }))
}
