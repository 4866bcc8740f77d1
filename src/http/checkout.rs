//! `POST /api/v1/checkout`: turns the customer's cart into one order per store and one
//! payment, exactly once per `Idempotency-Key`.
//!
//! Everything a checkout creates has an id derived from the customer and the key (the
//! checkout id, and each order's id from the checkout and the store), so a retry after a crash
//! finds what the first attempt wrote: holds are placed again under the same reservation ids
//! (a no-op), orders and the payment are created if missing and returned if present. The
//! idempotency record makes concurrent requests with one key run once and retries replay the
//! first answer.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::http::header::{ContentType, HeaderName};
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};

use super::payments::PaymentView;
use crate::actors::cart::{ChangeCart, GetCart};
use crate::actors::order::CreateOrder;
use crate::catalog::inventory::ReserveFailure;
use crate::catalog::products::ProductView;
use crate::domain::cart::CartCommand;
use crate::domain::checkout::{DeliveryAddress, checkout_id_for, delivery_fee, order_id_for};
use crate::domain::geo::GeoPoint;
use crate::domain::identity::Role;
use crate::domain::ids::{CartId, CheckoutId, OrderId, ProductId, UserId, VendorId};
use crate::domain::money::Money;
use crate::domain::order::{self, Order, OrderLine, OrderRecord, OrderStatus, OrderTotals};
use crate::idempotency::{IdempotencyError, Outcome, Recorded, fingerprint};
use crate::payments::ProviderName;
use crate::store::Table;
use crate::store::catalog::id_key;
use crate::store::typed::Rows;
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
}

/// A checkout's orders and payment.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CheckoutView {
    #[schema(value_type = String, format = Uuid)]
    pub checkout_id: CheckoutId,
    pub orders: Vec<OrderRecord>,
    pub payment: PaymentView,
}

pub use crate::domain::checkout::CheckoutRecord;

/// The checkouts table.
pub fn checkouts(state: &AppState) -> Rows<CheckoutRecord> {
    Rows::new(state.store.clone(), Table::Checkouts)
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
    let key = req
        .headers()
        .get(&IDEMPOTENCY_KEY)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::bad_request(
                "idempotency_key_required",
                "send an Idempotency-Key header (one per purchase)",
            )
        })?
        .to_owned();
    let request = parse_request(&body)?;
    let (address, point) = request
        .delivery_address
        .validate()
        .map_err(|(field, message)| ApiError::invalid_field(field, message))?;
    let fingerprint = fingerprint("POST", "/api/v1/checkout", &body);
    let customer = user.id;
    let work = || async {
        match place(
            &state,
            customer,
            &key,
            address,
            point,
            request.payment_method,
        )
        .await
        {
            Ok(view) => Recorded {
                status: 201,
                body: serde_json::to_string(&view).unwrap_or_default(),
            },
            Err(e) => Recorded {
                status: e.status().as_u16(),
                body: e.to_json(),
            },
        }
    };
    let outcome = state
        .idempotency
        .run(customer, &key, &fingerprint, work)
        .await
        .map_err(|e| match e {
            IdempotencyError::InvalidKey => {
                ApiError::bad_request("invalid_idempotency_key", e.to_string())
            }
            IdempotencyError::Mismatch => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                e.to_string(),
            ),
            IdempotencyError::InProgress => {
                ApiError::conflict("request_in_progress", e.to_string()).with_retry_after(1)
            }
            IdempotencyError::Store(e) => e.into(),
        })?;
    let replayed = matches!(outcome, Outcome::Replayed(_));
    let recorded = outcome.response();
    let status = StatusCode::from_u16(recorded.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = HttpResponse::build(status);
    if status.is_success() {
        response.content_type(ContentType::json());
    } else {
        response.content_type(PROBLEM_JSON);
    }
    if replayed {
        response.insert_header(("Idempotent-Replayed", "true"));
    }
    Ok(response.body(recorded.body.clone()))
}

/// Places the orders and the payment of one checkout (safe to run again for the same key).
async fn place(
    state: &AppState,
    customer: UserId,
    key: &str,
    address: DeliveryAddress,
    point: GeoPoint,
    method: ProviderName,
) -> Result<CheckoutView, ApiError> {
    if method != state.payments.default_provider() {
        return Err(ApiError::field_rule(
            "payment_method_unavailable",
            "payment_method",
            format!(
                "this platform takes `{}` payments",
                state.payments.default_provider().as_str()
            ),
        ));
    }
    let checkout_id = checkout_id_for(customer, key);
    let cart_id = CartId::from(customer.as_uuid());
    let cart = state.carts.send(cart_id, GetCart).await?;
    // A retry of a checkout that got as far as its payment only needs the answer (its first
    // attempt may have emptied the cart). One that stopped earlier runs again from the cart:
    // every step below finds what the first attempt already did.
    if let Some(existing) = checkouts(state).get(&id_key(checkout_id)).await?
        && state
            .payments
            .find_by_checkout(checkout_id)
            .await?
            .is_some()
    {
        return finish(
            state,
            customer,
            checkout_id,
            existing.value.orders,
            None,
            method,
        )
        .await;
    }
    if cart.lines.is_empty() {
        return Err(ApiError::field_rule(
            "cart_empty",
            "cart",
            "the cart is empty",
        ));
    }

    // The catalog as it is now: every product listed, every store delivering here.
    let views: Vec<Option<ProductView>> = join_all(
        cart.lines
            .iter()
            .map(|l| async move { state.catalog.product_view(l.product_id, None).await.ok() }),
    )
    .await;
    let mut unavailable = Vec::new();
    let mut groups: BTreeMap<VendorId, Vec<(ProductView, u32)>> = BTreeMap::new();
    for (line, view) in cart.lines.iter().zip(views) {
        match view {
            Some(view) => groups
                .entry(view.vendor.id)
                .or_default()
                .push((view, line.quantity.get())),
            None => unavailable.push(FieldError {
                field: format!("items.{}", line.product_id),
                message: "no longer listed".to_owned(),
            }),
        }
    }
    if !unavailable.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "product_unavailable",
            "some products in the cart are no longer listed",
        )
        .with_fields(unavailable));
    }
    let now = state.catalog.clock.now();
    // The payment's id is claimed before the orders, so each order names the payment that
    // pays for it (the payment itself is opened at the provider once the orders exist).
    let payment_id = state.payments.claim(checkout_id).await?.to_string();
    let mut records = Vec::with_capacity(groups.len());
    for (vendor_id, items) in &groups {
        let Some((first, _)) = items.first() else {
            continue;
        };
        let store = &first.vendor;
        let distance = store.location.distance_m(point);
        if distance > store.delivery_radius_km * 1000.0 {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "outside_delivery_area",
                format!(
                    "{} delivers within {} km; the address is {:.1} km away",
                    store.name,
                    store.delivery_radius_km,
                    distance / 1000.0
                ),
            ));
        }
        let currency = first.product.price.currency;
        let mut subtotal = 0i64;
        let mut lines = Vec::with_capacity(items.len());
        for (view, quantity) in items {
            if view.product.price.currency != currency {
                return Err(ApiError::field_rule(
                    "mixed_currencies",
                    "cart",
                    "one store's products must share a currency",
                ));
            }
            let line_total = view
                .product
                .price
                .times(*quantity)
                .ok_or_else(|| ApiError::invalid_field("cart", "the total is too large"))?;
            subtotal = subtotal
                .checked_add(line_total.amount_minor)
                .ok_or_else(|| ApiError::invalid_field("cart", "the total is too large"))?;
            lines.push(OrderLine {
                product_id: view.product.id,
                title: view.product.title.clone(),
                quantity: *quantity,
                unit_price: view.product.price,
            });
        }
        let fee = delivery_fee(distance, currency);
        let order_id = order_id_for(checkout_id, *vendor_id);
        records.push(OrderRecord {
            order: Order {
                id: order_id,
                checkout_id,
                customer_id: customer,
                vendor_id: *vendor_id,
                status: OrderStatus::PendingPayment,
                lines,
                created_at: now,
                updated_at: now,
            },
            delivery_address: Some(order::DeliveryAddress {
                address: address.text.clone(),
                location: point,
                notes: None,
            }),
            totals: Some(OrderTotals {
                subtotal: Money::new(subtotal, currency),
                delivery_fee: fee,
                total: Money::new(subtotal + fee.amount_minor, currency),
            }),
            seq: 0,
            expires_at: None,
            courier_id: None,
            handoff_code: None,
            arrived_at_pickup_at: None,
            arriving_at: None,
            payment_id: Some(payment_id.clone()),
            paid_at: None,
            rejection_reason: None,
            cancelled_by: None,
            refunded: None,
            refunds: Vec::new(),
            payment_returned: None,
        });
    }
    let currency = records
        .first()
        .and_then(|r| r.totals.map(|t| t.total.currency))
        .ok_or_else(|| ApiError::field_rule("cart_empty", "cart", "the cart is empty"))?;
    if records
        .iter()
        .any(|r| r.totals.is_some_and(|t| t.total.currency != currency))
    {
        return Err(ApiError::field_rule(
            "mixed_currencies",
            "cart",
            "a checkout is paid in one currency",
        ));
    }

    // Hold the stock of every order, all or nothing: the reservation of an order is its id.
    let mut held: Vec<(OrderId, Vec<ProductId>)> = Vec::new();
    for record in &records {
        let items: Vec<(ProductId, u32)> = record
            .order
            .lines
            .iter()
            .map(|l| (l.product_id, l.quantity))
            .collect();
        let reservation = record.order.id.to_string();
        match state
            .catalog
            .inventory
            .reserve(&reservation, &items, state.order_payment_timeout)
            .await
        {
            Ok(()) => held.push((record.order.id, items.iter().map(|i| i.0).collect())),
            Err(failure) => {
                for (order, products) in &held {
                    if let Err(e) = state
                        .catalog
                        .inventory
                        .release(&order.to_string(), products)
                        .await
                    {
                        tracing::warn!(error = %e, order_id = %order, "hold not released; it expires by itself");
                    }
                }
                return Err(match failure {
                    ReserveFailure::Store(e) => e.into(),
                    other => other.into(),
                });
            }
        }
    }

    let order_ids: Vec<OrderId> = records.iter().map(|r| r.order.id).collect();
    let record = CheckoutRecord {
        id: checkout_id,
        customer,
        orders: order_ids.clone(),
        created_at: now,
    };
    // Another attempt may have written it first; either way it names the same orders.
    let _ = checkouts(state)
        .insert(&id_key(checkout_id), &record)
        .await?;
    let total: i64 = records
        .iter()
        .filter_map(|r| r.totals.map(|t| t.total.amount_minor))
        .sum();
    for record in records {
        state
            .orders
            .send(record.order.id, CreateOrder(record))
            .await??;
    }
    finish(
        state,
        customer,
        checkout_id,
        order_ids,
        Some((Money::new(total, currency), cart_id)),
        method,
    )
    .await
}

/// Creates (or finds) the payment, empties the cart, and answers with the checkout.
async fn finish(
    state: &AppState,
    customer: UserId,
    checkout_id: CheckoutId,
    order_ids: Vec<OrderId>,
    fresh: Option<(Money, CartId)>,
    method: ProviderName,
) -> Result<CheckoutView, ApiError> {
    let payment = match fresh {
        Some((total, _)) => {
            state
                .payments
                .create(checkout_id, customer, total, method)
                .await?
        }
        None => state
            .payments
            .find_by_checkout(checkout_id)
            .await?
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "request_in_progress",
                    "the checkout is still being placed; retry shortly",
                )
                .with_retry_after(1)
            })?,
    };
    if let Some((_, cart)) = fresh
        && let Err(e) = state.carts.send(cart, ChangeCart(CartCommand::Clear)).await
    {
        tracing::warn!(error = %e, "cart not emptied after checkout");
    }
    let mut orders = Vec::with_capacity(order_ids.len());
    for id in order_ids {
        if let Some(order) = state
            .orders
            .send(id, crate::actors::order::GetOrder)
            .await??
        {
            orders.push(order);
        }
    }
    Ok(CheckoutView {
        checkout_id,
        orders,
        payment: PaymentView::new(payment, customer),
    })
}
