//! Couriers over REST: their own profile and state, and the dispatch queue for admins. The
//! live part (going online, GPS, offers) is the `/ws/courier` session.

use actix_web::{HttpResponse, web};

use super::extract::AuthUser;
use super::{ApiError, AppState};
use crate::actors::courier::{CourierError, CourierView, GetCourier, SetProfile};
use crate::dispatch::UnassignedOrder;
use crate::domain::courier::CourierProfile;
use crate::domain::identity::Role;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/couriers/me", web::get().to(get_my_courier))
        .route("/couriers/me/profile", web::put().to(put_my_profile))
        .route(
            "/admin/dispatch/unassigned",
            web::get().to(list_unassigned_orders),
        );
}

impl From<CourierError> for ApiError {
    fn from(e: CourierError) -> Self {
        match e {
            CourierError::Store(e) => e.into(),
            CourierError::Conflict => ApiError::new(
                actix_web::http::StatusCode::CONFLICT,
                "conflict",
                "the courier changed meanwhile; try again",
            ),
            other => ApiError::internal(anyhow::anyhow!(other.to_string())),
        }
    }
}

/// The calling courier: profile, online state, position and deliveries in hand.
#[utoipa::path(get, path = "/api/v1/couriers/me", tag = "live", security(("bearer" = [])),
    responses((status = 200, body = CourierView), (status = 403, body = super::problem::Problem)))]
pub async fn get_my_courier(
    state: web::Data<AppState>,
    user: AuthUser,
) -> Result<HttpResponse, ApiError> {
    user.require_role(&[Role::Courier])?;
    let view = state.live.couriers.send(user.id, GetCourier).await??;
    Ok(HttpResponse::Ok().json(view))
}

/// Sets the calling courier's vehicle and how many orders they carry at once (1–5).
#[utoipa::path(put, path = "/api/v1/couriers/me/profile", tag = "live", security(("bearer" = [])),
    request_body = CourierProfile,
    responses((status = 200, body = CourierView), (status = 403, body = super::problem::Problem),
        (status = 422, body = super::problem::Problem)))]
pub async fn put_my_profile(
    state: web::Data<AppState>,
    user: AuthUser,
    body: web::Json<CourierProfile>,
) -> Result<HttpResponse, ApiError> {
    user.require_role(&[Role::Courier])?;
    let profile = body.into_inner();
    profile
        .validate()
        .map_err(|e| ApiError::field_rule("invalid_profile", "max_concurrent_orders", e))?;
    let view = state
        .live
        .couriers
        .send(user.id, SetProfile(profile))
        .await??;
    Ok(HttpResponse::Ok().json(view))
}

/// The orders list of [`list_unassigned_orders`].
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct UnassignedList {
    pub orders: Vec<UnassignedOrder>,
}

/// Accepted orders no courier has taken yet (nobody near, or everyone declined).
#[utoipa::path(get, path = "/api/v1/admin/dispatch/unassigned", tag = "live", security(("bearer" = [])),
    responses((status = 200, body = UnassignedList), (status = 403, body = super::problem::Problem)))]
pub async fn list_unassigned_orders(
    state: web::Data<AppState>,
    user: AuthUser,
) -> Result<HttpResponse, ApiError> {
    user.require_role(&[Role::Admin])?;
    let orders = state.live.dispatcher.unassigned().await?;
    Ok(HttpResponse::Ok().json(UnassignedList { orders }))
}
