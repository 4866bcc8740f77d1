//! Webhook endpoints of stores (their own orders) and admins (every order): register, list,
//! delete, read the delivery log, redeliver.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::account::NotificationEvent;
use crate::domain::identity::Role;
use crate::domain::notification::OutboxMessage;
use crate::domain::webhook::{WebhookEndpoint, WebhookScope};
use crate::error_code::ErrorCode;
use crate::notifications::webhooks::WebhookError;
use crate::web::extract::AuthUser;
use crate::web::{ApiError, AppState};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/webhooks")
            .route(web::get().to(list_webhooks))
            .route(web::post().to(create_webhook)),
    )
    .route("/webhooks/{id}", web::delete().to(delete_webhook))
    .route("/webhooks/{id}/deliveries", web::get().to(list_deliveries))
    .route(
        "/webhooks/{id}/deliveries/{delivery}/redeliver",
        web::post().to(redeliver),
    );
}

/// A new endpoint.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"url": "https://pos.example.com/hexmarket", "events": ["order_paid", "order_cancelled"]}))]
pub struct NewWebhook {
    /// `http` or `https`, at most 2048 characters; must resolve to public addresses.
    #[schema(
        max_length = 2048,
        pattern = r"^https?://[a-z0-9]+(\.[a-z0-9]+)*(:[1-9][0-9]{0,3})?(/[!-~]*)?$"
    )]
    pub url: String,
    /// The events to hear of (at least one).
    #[schema(min_items = 1)]
    pub events: Vec<NotificationEvent>,
}

/// An endpoint, with its signing secret.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookView {
    #[schema(value_type = String, format = Uuid)]
    pub id: Uuid,
    pub scope: WebhookScope,
    pub url: String,
    pub events: Vec<NotificationEvent>,
    /// Signs every delivery: `Hexmarket-Signature: t={unix seconds},v1={hex HMAC-SHA256 of
    /// "{t}.{raw body}" under this secret}`.
    pub secret: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl From<WebhookEndpoint> for WebhookView {
    fn from(e: WebhookEndpoint) -> Self {
        WebhookView {
            id: e.id,
            scope: e.scope,
            url: e.url,
            events: e.events,
            secret: e.secret,
            created_at: e.created_at,
        }
    }
}

/// Paging of a delivery log.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeliveryQuery {
    /// Page size, 1–100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[param(pattern = r"^[0-9]{20}\.[0-9a-f]{32}$")]
    pub cursor: Option<String>,
}

/// A page of an endpoint's deliveries, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Deliveries {
    pub items: Vec<OutboxMessage>,
    pub next_cursor: Option<String>,
}

impl From<WebhookError> for ApiError {
    fn from(e: WebhookError) -> Self {
        match e {
            WebhookError::InvalidUrl(why) => ApiError::invalid_field("url", why),
            WebhookError::NoEvents => {
                ApiError::invalid_field("events", "choose at least one event")
            }
            WebhookError::TargetRefused(why) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::WebhookTargetRefused,
                why,
            ),
            WebhookError::TooMany => ApiError::conflict(ErrorCode::TooManyWebhooks, e.to_string()),
            WebhookError::Store(e) => e.into(),
        }
    }
}

/// Registers an endpoint: a store's owner hears of their store's paid orders, an admin of
/// every order. The answer carries the signing secret.
#[utoipa::path(post, path = "/api/v1/webhooks", tag = "notifications", request_body = NewWebhook,
    security(("bearer" = [])),
    responses((status = 201, body = WebhookView), (status = 401, body = crate::web::problem::Problem),
        (status = 403, body = crate::web::problem::Problem), (status = 409, body = crate::web::problem::Problem),
        (status = 422, body = crate::web::problem::Problem)))]
pub async fn create_webhook(
    state: web::Data<AppState>,
    user: AuthUser,
    from: super::client_addr::ClientAddr,
    body: web::Json<NewWebhook>,
) -> Result<HttpResponse, ApiError> {
    let scope = scope_of(&state, &user).await?;
    let NewWebhook { url, events } = body.into_inner();
    let audited = serde_json::json!({"url": url, "events": events});
    let endpoint = state
        .notifications
        .register_webhook(user.id, scope, &url, events)
        .await?;
    if matches!(scope, WebhookScope::Platform) {
        // The signing secret stays out of the trail.
        state
            .audit
            .record(
                super::audit::entry(
                    &user,
                    from,
                    "webhook.create",
                    format!("webhook:{}", endpoint.id),
                )
                .after(audited),
            )
            .await?;
    }
    Ok(HttpResponse::Created().json(WebhookView::from(endpoint)))
}

/// Whose events the caller's endpoints hear: their store's (vendors), the platform's (admins).
async fn scope_of(state: &AppState, user: &AuthUser) -> Result<WebhookScope, ApiError> {
    user.require_role(&[Role::Vendor, Role::Admin])?;
    if user.role == Role::Admin {
        user.require_admin()?;
        return Ok(WebhookScope::Platform);
    }
    let vendor = state.catalog.vendor_of(user.id).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::NoStore,
            "open your store first",
        )
    })?;
    Ok(WebhookScope::Store {
        vendor_id: vendor.id,
    })
}

/// The caller's endpoints.
#[utoipa::path(get, path = "/api/v1/webhooks", tag = "notifications", security(("bearer" = [])),
    responses((status = 200, body = Vec<WebhookView>), (status = 401, body = crate::web::problem::Problem),
        (status = 403, body = crate::web::problem::Problem)))]
pub async fn list_webhooks(
    state: web::Data<AppState>,
    user: AuthUser,
) -> Result<HttpResponse, ApiError> {
    user.require_role(&[Role::Vendor, Role::Admin])?;
    let endpoints = state.notifications.webhooks_of(user.id).await?;
    Ok(HttpResponse::Ok().json(
        endpoints
            .into_iter()
            .map(WebhookView::from)
            .collect::<Vec<_>>(),
    ))
}

/// Deletes one of the caller's endpoints (its pending deliveries are dropped).
#[utoipa::path(delete, path = "/api/v1/webhooks/{id}", tag = "notifications",
    params(("id" = String, Path, format = Uuid)), security(("bearer" = [])),
    responses((status = 204), (status = 401, body = crate::web::problem::Problem),
        (status = 404, body = crate::web::problem::Problem)))]
pub async fn delete_webhook(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    if state
        .notifications
        .delete_webhook(user.id, path.into_inner())
        .await?
    {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::not_found("no such webhook"))
    }
}

/// The deliveries to one of the caller's endpoints, newest first: state, attempts, last error.
#[utoipa::path(get, path = "/api/v1/webhooks/{id}/deliveries", tag = "notifications",
    params(("id" = String, Path, format = Uuid), DeliveryQuery), security(("bearer" = [])),
    responses((status = 200, body = Deliveries), (status = 400, body = crate::web::problem::Problem),
        (status = 401, body = crate::web::problem::Problem), (status = 404, body = crate::web::problem::Problem)))]
pub async fn list_deliveries(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<Uuid>,
    query: web::Query<DeliveryQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let limit = super::notifications::page_size(query.limit, 20)?;
    let cursor = super::notifications::feed_cursor(query.cursor)?;
    let (items, next_cursor) = state
        .notifications
        .webhook_deliveries(user.id, path.into_inner(), cursor, limit)
        .await?
        .ok_or_else(|| ApiError::not_found("no such webhook"))?;
    Ok(HttpResponse::Ok().json(Deliveries { items, next_cursor }))
}

/// Sends one delivery again, now (whatever came of it before).
#[utoipa::path(post, path = "/api/v1/webhooks/{id}/deliveries/{delivery}/redeliver", tag = "notifications",
    params(("id" = String, Path, format = Uuid), ("delivery" = String, Path, format = Uuid)),
    security(("bearer" = [])),
    responses((status = 200, body = OutboxMessage), (status = 401, body = crate::web::problem::Problem),
        (status = 404, body = crate::web::problem::Problem)))]
pub async fn redeliver(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    let (id, delivery) = path.into_inner();
    let message = state
        .notifications
        .redeliver(user.id, id, delivery)
        .await?
        .ok_or_else(|| ApiError::not_found("no such delivery"))?;
    Ok(HttpResponse::Ok().json(message))
}
