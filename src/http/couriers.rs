//! Couriers over REST: their own profile and state, and the dispatch queue for admins. The
//! live part (going online, GPS, offers) is the `/ws/courier` session.

use actix_web::{HttpResponse, web};

use crate::actors::courier::{CourierError, CourierView, GetCourier, SetProfile};
use crate::domain::courier::CourierProfile;
use crate::domain::dispatch::UnassignedOrder;
use crate::domain::identity::Role;
use crate::error_code::ErrorCode;
use crate::web::extract::AuthUser;
use crate::web::{ApiError, AppState};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/couriers/me", web::get().to(get_my_courier))
        .route("/couriers/me/profile", web::put().to(put_my_profile))
        .route(
            "/admin/dispatch/unassigned",
            web::get().to(list_unassigned_orders),
        )
        .route(
            "/admin/couriers/{id}/trail",
            web::get().to(get_courier_trail),
        );
}

impl From<CourierError> for ApiError {
    fn from(e: CourierError) -> Self {
        match e {
            CourierError::Store(e) => e.into(),
            CourierError::Conflict => ApiError::new(
                actix_web::http::StatusCode::CONFLICT,
                ErrorCode::Conflict,
                "the courier changed meanwhile; try again",
            ),
            other => ApiError::internal(anyhow::anyhow!(other.to_string())),
        }
    }
}

/// The calling courier: profile, online state, position and deliveries in hand.
#[utoipa::path(get, path = "/api/v1/couriers/me", tag = "live", security(("bearer" = [])),
    responses((status = 200, body = CourierView), (status = 403, body = crate::web::problem::Problem)))]
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
    responses((status = 200, body = CourierView), (status = 403, body = crate::web::problem::Problem),
        (status = 422, body = crate::web::problem::Problem)))]
pub async fn put_my_profile(
    state: web::Data<AppState>,
    user: AuthUser,
    body: web::Json<CourierProfile>,
) -> Result<HttpResponse, ApiError> {
    user.require_role(&[Role::Courier])?;
    let profile = body.into_inner();
    profile
        .validate()
        .map_err(|e| ApiError::field_rule(ErrorCode::InvalidProfile, "max_concurrent_orders", e))?;
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
    responses((status = 200, body = UnassignedList), (status = 403, body = crate::web::problem::Problem)))]
pub async fn list_unassigned_orders(
    state: web::Data<AppState>,
    user: AuthUser,
) -> Result<HttpResponse, ApiError> {
    user.require_admin()?;
    let orders = state.live.dispatcher.unassigned().await?;
    Ok(HttpResponse::Ok().json(UnassignedList { orders }))
}

/// Which part of a trail to read.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TrailQuery {
    /// The UTC day, `YYYY-MM-DD`.
    #[param(format = Date)]
    pub day: String,
    /// Only points recorded after this time (the `next_after` of the previous page).
    pub after: Option<chrono::DateTime<chrono::Utc>>,
    /// At most this many points (1–1000, default 500).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// A page of a courier's trail.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct TrailPage {
    pub points: Vec<crate::domain::courier::GpsPoint>,
    pub next_after: Option<chrono::DateTime<chrono::Utc>>,
}

/// A courier's location trail on one UTC day, oldest first (admins; kept for
/// `HEXMARKET_TRAIL_RETENTION_DAYS`).
#[utoipa::path(get, path = "/api/v1/admin/couriers/{id}/trail", tag = "live", security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid), TrailQuery),
    responses((status = 200, body = TrailPage), (status = 400, body = crate::web::problem::Problem),
        (status = 403, body = crate::web::problem::Problem)))]
pub async fn get_courier_trail(
    state: web::Data<AppState>,
    user: AuthUser,
    id: web::Path<String>,
    query: web::Query<TrailQuery>,
) -> Result<HttpResponse, ApiError> {
    user.require_admin()?;
    let courier: crate::domain::ids::UserId = id
        .parse()
        .map_err(|_| ApiError::not_found("no such courier"))?;
    let day = chrono::NaiveDate::parse_from_str(&query.day, "%Y-%m-%d")
        .map_err(|_| ApiError::field_rule(ErrorCode::InvalidDay, "day", "expected YYYY-MM-DD"))?;
    let limit = match query.limit {
        None => 500,
        Some(n) if (1..=1000).contains(&n) => n,
        Some(_) => {
            return Err(ApiError::field_rule(
                ErrorCode::InvalidLimit,
                "limit",
                "limit must be 1 to 1000",
            ));
        }
    };
    let points = state
        .live
        .courier_repo
        .trail(courier, day, query.after, limit)
        .await?;
    let next_after = (points.len() == limit)
        .then(|| points.last().map(|p| p.recorded_at))
        .flatten();
    Ok(HttpResponse::Ok().json(TrailPage { points, next_after }))
}
