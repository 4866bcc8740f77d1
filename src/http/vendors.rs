//! Vendors and their stores: create, edit, show, list near a place.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};

use crate::catalog::vendors::{NewVendor, VendorPatch};
use crate::domain::catalog::{Vendor, VendorStatus};
use crate::domain::geo::{GeoPoint, parse_radius_km};
use crate::domain::identity::Role;
use crate::domain::ids::VendorId;
use crate::domain::review::{RatingSummary, ReviewTarget};
use crate::web::extract::{AuthUser, MaybeUser};
use crate::web::{ApiError, AppState};

/// Radius of "near me" when the query names none.
pub const DEFAULT_RADIUS_KM: f64 = 5.0;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/vendors")
            .route(web::get().to(list_vendors))
            .route(web::post().to(create_vendor)),
    )
    .route("/vendors/mine", web::get().to(my_vendor))
    .service(
        web::resource("/vendors/{id}")
            .route(web::get().to(get_vendor))
            .route(web::patch().to(patch_vendor)),
    );
}

/// A store as clients see it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VendorView {
    #[serde(flatten)]
    pub vendor: Vendor,
    /// Whether the store is open now by its opening hours.
    pub open_now: bool,
    pub rating: RatingSummary,
    /// Distance from the `near` point, when the list was asked for one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distance_km: Option<f64>,
}

/// One page of stores.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VendorPage {
    pub items: Vec<VendorView>,
    pub next_cursor: Option<String>,
}

/// Which stores to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VendorQuery {
    /// `lat,lng`: list stores near this place, nearest first.
    #[param(
        pattern = r"^-?(90(\.0+)?|[1-8]?[0-9](\.[0-9]+)?),-?(180(\.0+)?|(1[0-7][0-9]|[1-9]?[0-9])(\.[0-9]+)?)$"
    )]
    pub near: Option<String>,
    /// Radius around `near` in km (default 5, at most 50).
    #[param(exclusive_minimum = 0, maximum = 50)]
    pub radius_km: Option<f64>,
    /// Page size, 1–100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<usize>,
    #[param(min_length = 1)]
    pub cursor: Option<String>,
}

async fn view(
    state: &AppState,
    vendor: Vendor,
    distance_m: Option<f64>,
) -> Result<VendorView, ApiError> {
    let rating = state
        .catalog
        .reviews
        .rating(ReviewTarget::Vendor(vendor.id))
        .await?;
    Ok(VendorView {
        open_now: vendor.opening_hours.is_open_at(state.catalog.clock.now()),
        vendor,
        rating,
        distance_km: distance_m.map(|m| (m / 10.0).round() / 100.0),
    })
}

/// Whether everyone may see a store (active or paused; closed and suspended stores are
/// visible only to their owner and admins).
fn publicly_visible(vendor: &Vendor) -> bool {
    matches!(vendor.status, VendorStatus::Active | VendorStatus::Paused)
}

pub(super) fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(20);
    if (1..=100).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::invalid_field(
            "limit",
            "must be between 1 and 100",
        ))
    }
}

/// Opens the caller's store (vendors only; one store each).
#[utoipa::path(post, path = "/api/v1/vendors", tag = "catalog", request_body = NewVendor,
    security(("bearer" = [])),
    responses((status = 201, body = VendorView), (status = 403, body = crate::web::problem::Problem),
        (status = 409, body = crate::web::problem::Problem), (status = 422, body = crate::web::problem::Problem)))]
pub async fn create_vendor(
    state: web::Data<AppState>,
    user: AuthUser,
    body: web::Json<NewVendor>,
) -> Result<HttpResponse, ApiError> {
    user.require_role(&[Role::Vendor])?;
    let vendor = state
        .catalog
        .create_vendor(user.id, body.into_inner())
        .await?;
    Ok(HttpResponse::Created().json(view(&state, vendor, None).await?))
}

/// The caller's own store.
#[utoipa::path(get, path = "/api/v1/vendors/mine", tag = "catalog", security(("bearer" = [])),
    responses((status = 200, body = VendorView), (status = 404, body = crate::web::problem::Problem)))]
pub async fn my_vendor(
    state: web::Data<AppState>,
    user: AuthUser,
) -> Result<HttpResponse, ApiError> {
    let vendor = state
        .catalog
        .vendor_of(user.id)
        .await?
        .ok_or_else(|| ApiError::not_found("you do not run a store yet"))?;
    Ok(HttpResponse::Ok().json(view(&state, vendor, None).await?))
}

/// A store. Closed and suspended stores are shown only to their owner and admins.
#[utoipa::path(get, path = "/api/v1/vendors/{id}", tag = "catalog", params(("id" = String, Path, format = Uuid)),
    responses((status = 200, body = VendorView), (status = 404, body = crate::web::problem::Problem)))]
pub async fn get_vendor(
    state: web::Data<AppState>,
    MaybeUser(user): MaybeUser,
    path: web::Path<VendorId>,
) -> Result<HttpResponse, ApiError> {
    let vendor = state
        .catalog
        .repo
        .vendor(path.into_inner())
        .await?
        .ok_or_else(|| ApiError::not_found("no such store"))?
        .value;
    let privileged = user
        .as_ref()
        .is_some_and(|u| u.is_admin() || u.id == vendor.owner);
    if !privileged && !publicly_visible(&vendor) {
        return Err(ApiError::not_found("no such store"));
    }
    Ok(HttpResponse::Ok().json(view(&state, vendor, None).await?))
}

/// Changes a store (its owner or an admin). Only admins suspend or lift a suspension.
#[utoipa::path(patch, path = "/api/v1/vendors/{id}", tag = "catalog", request_body = VendorPatch,
    params(("id" = String, Path, format = Uuid)), security(("bearer" = [])),
    responses((status = 200, body = VendorView), (status = 403, body = crate::web::problem::Problem),
        (status = 404, body = crate::web::problem::Problem), (status = 422, body = crate::web::problem::Problem)))]
pub async fn patch_vendor(
    state: web::Data<AppState>,
    user: AuthUser,
    from: super::client_addr::ClientAddr,
    path: web::Path<VendorId>,
    body: web::Json<VendorPatch>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let vendor = state
        .catalog
        .update_vendor(id, user.id, user.is_admin(), body.into_inner())
        .await?;
    if user.is_admin() && vendor.owner != user.id {
        state
            .audit
            .record(
                super::audit::entry(&user, from, "store.change", format!("store:{id}"))
                    .after(&vendor),
            )
            .await?;
    }
    Ok(HttpResponse::Ok().json(view(&state, vendor, None).await?))
}

/// Active stores: near a place (nearest first, by H3 rings then great-circle distance) or
/// all of them (by id).
#[utoipa::path(get, path = "/api/v1/vendors", tag = "catalog", params(VendorQuery),
    responses((status = 200, body = VendorPage), (status = 400, body = crate::web::problem::Problem),
        (status = 422, body = crate::web::problem::Problem)))]
pub async fn list_vendors(
    state: web::Data<AppState>,
    query: web::Query<VendorQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let limit = page_limit(query.limit)?;
    let directory = &state.catalog.directory;
    let page = match &query.near {
        Some(near) => {
            let center =
                GeoPoint::parse_pair(near).map_err(|m| ApiError::invalid_field("near", m))?;
            let radius_km = parse_radius_km(query.radius_km.unwrap_or(DEFAULT_RADIUS_KM))
                .map_err(|m| ApiError::invalid_field("radius_km", m))?;
            directory.active_near_page(
                center,
                radius_km * 1000.0,
                limit,
                query.cursor.as_deref(),
            )?
        }
        None if query.radius_km.is_some() => {
            return Err(ApiError::invalid_field("radius_km", "needs `near`"));
        }
        None => directory.active_page(limit, query.cursor.as_deref())?,
    };
    let found = page.items;
    let next_cursor = page.next_cursor;
    let mut items = Vec::with_capacity(found.len());
    for (vendor, distance) in found {
        items.push(view(&state, vendor, distance).await?);
    }
    Ok(HttpResponse::Ok().json(VendorPage { items, next_cursor }))
}
