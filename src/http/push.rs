//! Web Push: the server's public key, and the caller's browser subscriptions.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::account::PushSubscription;
use crate::error_code::ErrorCode;
use crate::notifications::push::{MAX_SUBSCRIPTIONS, SubscriptionError};
use crate::notifications::webhooks::WebhookError;
use crate::web::extract::AuthUser;
use crate::web::{ApiError, AppState};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/push/vapid-public-key", web::get().to(vapid_public_key))
        .service(
            web::resource("/me/push-subscriptions")
                .route(web::get().to(list_subscriptions))
                .route(web::post().to(subscribe)),
        )
        .route("/me/push-subscriptions/{id}", web::delete().to(unsubscribe));
}

/// The server's VAPID public key.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VapidKey {
    /// Uncompressed P-256 point, base64url: `applicationServerKey` for `PushManager.subscribe`.
    pub public_key: String,
}

/// The key browsers subscribe with.
#[utoipa::path(get, path = "/api/v1/push/vapid-public-key", tag = "notifications",
    responses((status = 200, body = VapidKey)))]
pub async fn vapid_public_key(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(VapidKey {
        public_key: state.notifications.vapid_public_key().to_owned(),
    })
}

/// The keys of a subscription, as the browser's `PushSubscription.toJSON()` has them.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionKeys {
    /// The browser's P-256 public key: an uncompressed point (65 bytes), base64url; a value
    /// that is not a point on the curve is refused with `invalid_push_keys`.
    #[schema(pattern = r"^B[A-Za-z0-9_-]{86}=?$")]
    pub p256dh: String,
    /// The browser's auth secret, 16 bytes, base64url.
    #[schema(pattern = r"^[A-Za-z0-9_-]{21}[AQgw](==)?$")]
    pub auth: String,
}

/// A browser subscription (`PushSubscription.toJSON()`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"endpoint": "https://push.example.net/send/abc", "keys": {"p256dh": "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM", "auth": "tBHItJI5svbpez7KI4CCXg"}}))]
pub struct NewSubscription {
    /// The push service's URL for this browser (`https`), at most 2048 characters; must
    /// resolve to public addresses.
    #[schema(
        max_length = 2048,
        pattern = r"^https?://[a-z0-9]+(\.[a-z0-9]+)*(:[1-9][0-9]{0,3})?(/[!-~]*)?$"
    )]
    pub endpoint: String,
    pub keys: SubscriptionKeys,
    /// Sent by some browsers; ignored.
    #[serde(default, rename = "expirationTime")]
    pub expiration_time: Option<serde_json::Value>,
}

/// A stored subscription (without its keys).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SubscriptionView {
    #[schema(value_type = String, format = Uuid)]
    pub id: Uuid,
    pub endpoint: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl From<&PushSubscription> for SubscriptionView {
    fn from(s: &PushSubscription) -> Self {
        SubscriptionView {
            id: s.id,
            endpoint: s.endpoint.clone(),
            created_at: s.created_at,
        }
    }
}

impl From<SubscriptionError> for ApiError {
    fn from(e: SubscriptionError) -> Self {
        match e {
            SubscriptionError::Invalid(why) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::InvalidPushKeys,
                why,
            ),
            SubscriptionError::TooMany => {
                ApiError::conflict(ErrorCode::TooManySubscriptions, e.to_string())
            }
            SubscriptionError::Target(WebhookError::InvalidUrl(why)) => {
                ApiError::invalid_field("endpoint", why)
            }
            SubscriptionError::Target(WebhookError::TargetRefused(why)) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::WebhookTargetRefused,
                why,
            ),
            SubscriptionError::Target(other) => other.into(),
        }
    }
}

/// Subscribes a browser to the caller's push notifications (the same endpoint again replaces
/// its keys). At most 10 per account.
#[utoipa::path(post, path = "/api/v1/me/push-subscriptions", tag = "notifications",
    request_body = NewSubscription, security(("bearer" = [])),
    responses((status = 201, body = SubscriptionView), (status = 401, body = crate::web::problem::Problem),
        (status = 409, body = crate::web::problem::Problem), (status = 422, body = crate::web::problem::Problem)))]
pub async fn subscribe(
    state: web::Data<AppState>,
    user: AuthUser,
    body: web::Json<NewSubscription>,
) -> Result<HttpResponse, ApiError> {
    let new = body.into_inner();
    state
        .notifications
        .check_subscription(&new.endpoint, &new.keys.p256dh, &new.keys.auth)
        .await?;
    let now = state.identity.clock.now();
    let mut full = false;
    let updated = state
        .identity
        .modify_user(user.id, |u| {
            u.push_subscriptions.retain(|s| s.endpoint != new.endpoint);
            full = u.push_subscriptions.len() >= MAX_SUBSCRIPTIONS;
            if full {
                return Ok(());
            }
            u.push_subscriptions.push(PushSubscription {
                id: Uuid::now_v7(),
                endpoint: new.endpoint.clone(),
                p256dh: new.keys.p256dh.clone(),
                auth: new.keys.auth.clone(),
                created_at: now,
            });
            Ok(())
        })
        .await?;
    if full {
        return Err(SubscriptionError::TooMany.into());
    }
    let stored = updated
        .push_subscriptions
        .iter()
        .find(|s| s.endpoint == new.endpoint)
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("subscription not stored")))?;
    Ok(HttpResponse::Created().json(SubscriptionView::from(stored)))
}

/// The caller's browser subscriptions.
#[utoipa::path(get, path = "/api/v1/me/push-subscriptions", tag = "notifications",
    security(("bearer" = [])),
    responses((status = 200, body = Vec<SubscriptionView>), (status = 401, body = crate::web::problem::Problem)))]
pub async fn list_subscriptions(
    state: web::Data<AppState>,
    user: AuthUser,
) -> Result<HttpResponse, ApiError> {
    let me = state
        .identity
        .users
        .get(user.id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such account"))?;
    let views: Vec<SubscriptionView> = me
        .value
        .push_subscriptions
        .iter()
        .map(SubscriptionView::from)
        .collect();
    Ok(HttpResponse::Ok().json(views))
}

/// Unsubscribes one browser.
#[utoipa::path(delete, path = "/api/v1/me/push-subscriptions/{id}", tag = "notifications",
    params(("id" = String, Path, format = Uuid)), security(("bearer" = [])),
    responses((status = 204), (status = 401, body = crate::web::problem::Problem),
        (status = 404, body = crate::web::problem::Problem)))]
pub async fn unsubscribe(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let mut found = false;
    state
        .identity
        .modify_user(user.id, |u| {
            let before = u.push_subscriptions.len();
            u.push_subscriptions.retain(|s| s.id != id);
            found = u.push_subscriptions.len() < before;
            Ok(())
        })
        .await?;
    if found {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::not_found("no such subscription"))
    }
}
