//! `POST /api/v1/checkout`: turns the customer's cart into one order per store and one
//! payment (see [`crate::fulfilment::checkout`]), exactly once per `Idempotency-Key`: the
//! idempotency record makes concurrent requests with one key run once and retries replay the
//! first answer.

use actix_web::http::StatusCode;
use actix_web::http::header::{ContentType, HeaderName};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::payments::PaymentView;
use crate::domain::checkout::DeliveryAddress;
use crate::domain::coupon::normalise_code;
use crate::domain::identity::Role;
use crate::domain::ids::{CheckoutId, UserId};
use crate::domain::order::OrderRecord;
use crate::error_code::ErrorCode;
use crate::fulfilment::checkout::{CheckoutError, Placed};
use crate::idempotency::{IdempotencyError, Outcome, Recorded, fingerprint};
use crate::payments::ProviderName;
use crate::web::extract::AuthUser;
use crate::web::problem::{FieldError, PROBLEM_JSON};
use crate::web::{ApiError, AppState};

pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/checkout", web::post().to(checkout));
}

/// What to check out: the caller's cart, delivered here, paid this way.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutRequest {
    pub delivery_address: DeliveryAddress,
    /// `simulated` (the embedded default) or `stripe` (when configured).
    pub payment_method: ProviderName,
    /// A coupon to apply (case does not matter); see its discount first with
    /// `GET /api/v1/cart?coupon_code=`.
    #[serde(default)]
    #[schema(
        min_length = 3,
        max_length = 32,
        pattern = "^[A-Za-z0-9_-]{3,32}$",
        example = "SUMMER25"
    )]
    pub coupon_code: Option<String>,
}

/// A checkout's orders and payment.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CheckoutView {
    #[schema(value_type = String, format = Uuid)]
    pub checkout_id: CheckoutId,
    pub orders: Vec<OrderRecord>,
    pub payment: PaymentView,
}

impl CheckoutView {
    fn new(placed: Placed, customer: UserId) -> Self {
        CheckoutView {
            checkout_id: placed.checkout_id,
            orders: placed.orders,
            payment: PaymentView::new(placed.payment, customer),
        }
    }
}

impl From<CheckoutError> for ApiError {
    fn from(e: CheckoutError) -> Self {
        match e {
            CheckoutError::PaymentMethodUnavailable(_) => ApiError::field_rule(
                ErrorCode::PaymentMethodUnavailable,
                "payment_method",
                e.to_string(),
            ),
            CheckoutError::CartEmpty => {
                ApiError::field_rule(ErrorCode::CartEmpty, "cart", e.to_string())
            }
            CheckoutError::ProductsUnavailable(ref products) => {
                let fields = products
                    .iter()
                    .map(|product| FieldError {
                        field: format!("items.{product}"),
                        message: "no longer listed".to_owned(),
                    })
                    .collect();
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    ErrorCode::ProductUnavailable,
                    e.to_string(),
                )
                .with_fields(fields)
            }
            CheckoutError::OutsideDeliveryArea { .. } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::OutsideDeliveryArea,
                e.to_string(),
            ),
            CheckoutError::MixedCurrencies(detail) => {
                ApiError::field_rule(ErrorCode::MixedCurrencies, "cart", detail)
            }
            CheckoutError::TotalTooLarge => ApiError::invalid_field("cart", e.to_string()),
            CheckoutError::Reserve(failure) => failure.into(),
            CheckoutError::InProgress => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::RequestInProgress,
                e.to_string(),
            )
            .with_retry_after(1),
            CheckoutError::Payment(e) => e.into(),
            CheckoutError::Store(e) => e.into(),
            CheckoutError::Actor(e) => e.into(),
            CheckoutError::Coupon(e) => e.into(),
        }
    }
}

impl From<IdempotencyError> for ApiError {
    fn from(e: IdempotencyError) -> Self {
        match e {
            IdempotencyError::InvalidKey => {
                ApiError::bad_request(ErrorCode::InvalidIdempotencyKey, e.to_string())
            }
            IdempotencyError::Mismatch => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::IdempotencyKeyReused,
                e.to_string(),
            ),
            IdempotencyError::InProgress => {
                ApiError::conflict(ErrorCode::RequestInProgress, e.to_string()).with_retry_after(1)
            }
            IdempotencyError::Store(e) => e.into(),
        }
    }
}

fn parse_request(body: &[u8]) -> Result<CheckoutRequest, ApiError> {
    serde_json::from_slice(body).map_err(|e| crate::web::problem::deserialize_problem(&e))
}

/// Checks out the caller's cart (customers; `Idempotency-Key` required).
#[utoipa::path(post, path = "/api/v1/checkout", tag = "orders", request_body = CheckoutRequest,
    params(("Idempotency-Key" = String, Header, min_length = 1, max_length = 200, pattern = "^[!-~]+$",
        description = "one key per purchase (1–200 printable ASCII characters); a retry with the same key and body gets the same answer")),
    security(("bearer" = [])),
    responses((status = 201, body = CheckoutView), (status = 400, body = crate::web::problem::Problem),
        (status = 409, body = crate::web::problem::Problem), (status = 422, body = crate::web::problem::Problem)))]
pub async fn checkout(
    state: web::Data<AppState>,
    req: HttpRequest,
    user: AuthUser,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    user.require_role(&[Role::Customer])?;
    let key = idempotency_key(&req)?;
    let request = parse_request(&body)?;
    let (address, point) = request
        .delivery_address
        .validate()
        .map_err(|(field, message)| ApiError::invalid_field(field, message))?;
    let coupon = match request.coupon_code.as_deref() {
        Some(raw) => Some(normalise_code(raw).ok_or_else(|| {
            ApiError::invalid_field("coupon_code", "3 to 32 letters, digits, - or _")
        })?),
        None => None,
    };
    let fingerprint = fingerprint("POST", "/api/v1/checkout", &body);
    let customer = user.id;
    let work = || async {
        let placed = state
            .fulfilment
            .checkout
            .place(
                customer,
                &key,
                address,
                point,
                request.payment_method,
                coupon.as_deref(),
            )
            .await;
        record(placed.map(|placed| CheckoutView::new(placed, customer)))
    };
    let outcome = state
        .idempotency
        .run(customer, &key, &fingerprint, work)
        .await?;
    Ok(replay(&outcome))
}

/// The client's `Idempotency-Key`; 400 `idempotency_key_required` without one.
fn idempotency_key(req: &HttpRequest) -> Result<String, ApiError> {
    req.headers()
        .get(&IDEMPOTENCY_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| {
            ApiError::bad_request(
                ErrorCode::IdempotencyKeyRequired,
                "send an Idempotency-Key header (one per purchase)",
            )
        })
}

/// The answer to record for a checkout: 201 with the checkout, or its problem.
fn record(placed: Result<CheckoutView, CheckoutError>) -> Recorded {
    match placed {
        Ok(view) => Recorded {
            status: 201,
            body: serde_json::to_string(&view).unwrap_or_default(),
        },
        Err(e) => {
            let e = ApiError::from(e);
            Recorded {
                status: e.status().as_u16(),
                body: e.to_json(),
            }
        }
    }
}

/// The recorded answer of a keyed request, marked `Idempotent-Replayed` when an earlier
/// request with the key made it.
fn replay(outcome: &Outcome) -> HttpResponse {
    let recorded = outcome.response();
    let status = StatusCode::from_u16(recorded.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = HttpResponse::build(status);
    if status.is_success() {
        response.content_type(ContentType::json());
    } else {
        response.content_type(PROBLEM_JSON);
    }
    if matches!(outcome, Outcome::Replayed(_)) {
        response.insert_header(("Idempotent-Replayed", "true"));
    }
    response.body(recorded.body.clone())
}
