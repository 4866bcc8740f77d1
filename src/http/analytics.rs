//! Analytics reports: a store's sales and top products (its owner's and admins'), the
//! platform's sales, revenue, top stores and products (admins), couriers' performance (each
//! courier their own, admins everyone's), and supply and demand per H3 cell and hour
//! (admins). Every report answers JSON, or CSV with `Accept: text/csv` or `format=csv`.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Datelike as _, Days, NaiveDate, Timelike as _, Utc};
use serde::{Deserialize, Serialize};

use super::notifications::page_size;
use crate::analytics::AnalyticsError;
use crate::analytics::reports::{
    CourierList, CourierReport, Csv, DayRange, SalesReport, SalesScope, SupplyDemand, TopProducts,
    TopStores,
};
use crate::domain::analytics::Granularity;
use crate::domain::identity::Role;
use crate::domain::ids::{UserId, VendorId};
use crate::error_code::ErrorCode;
use crate::web::extract::AuthUser;
use crate::web::problem::Problem;
use crate::web::{ApiError, AppState};

/// The longest range a day-based report covers.
pub const MAX_DAYS: u64 = 366;
/// The longest range of supply and demand, in hours.
pub const MAX_HOURS: i64 = 7 * 24;
/// What a range defaults to without `from`.
const DEFAULT_DAYS: u64 = 30;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/analytics/stores/{store}/sales",
        web::get().to(store_sales),
    )
    .route(
        "/analytics/stores/{store}/products/top-selling",
        web::get().to(store_top_products),
    )
    .route("/analytics/platform/sales", web::get().to(platform_sales))
    .route(
        "/analytics/platform/stores/top-selling",
        web::get().to(platform_top_stores),
    )
    .route(
        "/analytics/platform/products/top-selling",
        web::get().to(platform_top_products),
    )
    .route("/analytics/couriers", web::get().to(list_couriers))
    .route("/analytics/couriers/{courier}", web::get().to(courier))
    .route("/analytics/supply-demand", web::get().to(supply_demand))
    .route("/analytics/sales", web::get().to(my_sales))
    .route("/analytics/revenue", web::get().to(my_revenue))
    .route(
        "/analytics/products/top-selling",
        web::get().to(my_top_products),
    );
}

impl From<AnalyticsError> for ApiError {
    fn from(e: AnalyticsError) -> Self {
        match e {
            AnalyticsError::Store(e) => e.into(),
            AnalyticsError::Lost => ApiError::unavailable(ErrorCode::Contended, e),
        }
    }
}

/// How a report is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Json,
    Csv,
}

/// A range of days and how to group them.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RangeQuery {
    /// First day, UTC (`YYYY-MM-DD`; default: 30 days before `to`).
    #[param(value_type = Option<String>, format = Date, example = "2026-01-01")]
    pub from: Option<NaiveDate>,
    /// The day after the last one, UTC (excluded; default: tomorrow). At most 366 days after
    /// `from`.
    #[param(value_type = Option<String>, format = Date, example = "2026-02-01")]
    pub to: Option<NaiveDate>,
    /// `day` (default), `week` (ISO weeks, from Monday) or `month`.
    #[param(inline)]
    pub granularity: Option<Granularity>,
    /// `json` (default) or `csv` (the same as `Accept: text/csv`).
    #[param(inline)]
    pub format: Option<Format>,
}

/// A range of months' top list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TopQuery {
    /// First day, UTC (`YYYY-MM-DD`; default: 30 days before `to`). Top lists are kept per
    /// month: the range is widened to the whole months it overlaps.
    #[param(value_type = Option<String>, format = Date, example = "2026-01-01")]
    pub from: Option<NaiveDate>,
    /// The day after the last one (excluded; default: tomorrow). At most 366 days after
    /// `from`.
    #[param(value_type = Option<String>, format = Date, example = "2026-02-01")]
    pub to: Option<NaiveDate>,
    /// How many, 1–100 (default 10).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<usize>,
    #[param(inline)]
    pub format: Option<Format>,
}

/// A range of hours and a resolution.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SupplyQuery {
    /// H3 resolution: 7 (≈5 km² cells) or 8 (default, ≈0.7 km²).
    #[param(minimum = 7, maximum = 8)]
    pub resolution: Option<u8>,
    /// Start (RFC 3339; rounded down to the hour; default: 24 hours before `to`).
    pub from: Option<DateTime<Utc>>,
    /// End (excluded; rounded up to the hour; default: the end of this hour). At most 7 days
    /// after `from`.
    pub to: Option<DateTime<Utc>>,
    #[param(inline)]
    pub format: Option<Format>,
}

fn day_range(from: Option<NaiveDate>, to: Option<NaiveDate>) -> Result<DayRange, ApiError> {
    let to = match to {
        Some(to) => to,
        None => Utc::now()
            .date_naive()
            .checked_add_days(Days::new(1))
            .ok_or_else(|| ApiError::invalid_field("to", "out of range"))?,
    };
    let from = match from {
        Some(from) => from,
        None => to
            .checked_sub_days(Days::new(DEFAULT_DAYS))
            .ok_or_else(|| ApiError::invalid_field("from", "out of range"))?,
    };
    if from >= to {
        return Err(ApiError::field_rule(
            ErrorCode::InvalidRange,
            "from",
            "must be before `to`",
        ));
    }
    if (to - from).num_days() > MAX_DAYS as i64 {
        return Err(ApiError::field_rule(
            ErrorCode::RangeTooLong,
            "to",
            format!("at most {MAX_DAYS} days after `from`"),
        ));
    }
    Ok(DayRange { from, to })
}

fn floor_hour(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_minute(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(t)
}

fn wants_csv(req: &HttpRequest, format: Option<Format>) -> bool {
    match format {
        Some(f) => f == Format::Csv,
        None => req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|accept| accept.contains("text/csv")),
    }
}

fn answer<T: Serialize + Csv>(
    req: &HttpRequest,
    format: Option<Format>,
    report: &T,
) -> HttpResponse {
    if wants_csv(req, format) {
        HttpResponse::Ok()
            .content_type("text/csv; charset=utf-8")
            .body(report.csv())
    } else {
        HttpResponse::Ok().json(report)
    }
}

/// 404 unless the caller runs `store` or is an admin.
async fn store_of_caller(
    state: &AppState,
    user: &AuthUser,
    store: VendorId,
) -> Result<VendorId, ApiError> {
    if user.is_admin() {
        return Ok(store);
    }
    match state.catalog.vendor_of(user.id).await?.map(|v| v.id) {
        Some(own) if own == store => Ok(store),
        _ => Err(ApiError::not_found("no such store")),
    }
}

/// The caller's scope for the aliases: their store, or the platform for an admin.
async fn scope_of_caller(state: &AppState, user: &AuthUser) -> Result<SalesScope, ApiError> {
    if user.is_admin() {
        user.require_admin()?;
        return Ok(SalesScope::Platform);
    }
    user.require_role(&[Role::Vendor])?;
    match state.catalog.vendor_of(user.id).await?.map(|v| v.id) {
        Some(store) => Ok(SalesScope::Store(store)),
        None => Err(ApiError::not_found("no store of yours")),
    }
}

/// A store's sales per day, week or month: orders, gross sales, discounts, delivery fees,
/// GMV (goods + delivery fees), refunds, net sales (GMV − discounts − refunds), average
/// order value ((GMV − discounts) / orders), the store's share, the platform's commission
/// and revenue, rejection and cancellation rates (of the orders paid in the period) and
/// preparation times (accepted → ready). Money in minor units, one row per period and
/// currency. The store's owner and admins only (404 for anyone else).
#[utoipa::path(get, path = "/api/v1/analytics/stores/{store}/sales", tag = "analytics",
    params(("store" = String, Path, format = Uuid), RangeQuery), security(("bearer" = [])),
    responses((status = 200, content((SalesReport = "application/json"), (String = "text/csv"))),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem),
        (status = 422, body = Problem)))]
pub async fn store_sales(
    req: HttpRequest,
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<VendorId>,
    query: web::Query<RangeQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let range = day_range(query.from, query.to)?;
    let store = store_of_caller(&state, &user, path.into_inner()).await?;
    let report = state
        .analytics
        .sales(
            SalesScope::Store(store),
            range,
            query.granularity.unwrap_or_default(),
        )
        .await?;
    Ok(answer(&req, query.format, &report))
}

/// A store's best-selling products (units, then goods sold) in the months the range
/// overlaps. The store's owner and admins only (404 for anyone else).
#[utoipa::path(get, path = "/api/v1/analytics/stores/{store}/products/top-selling", tag = "analytics",
    params(("store" = String, Path, format = Uuid), TopQuery), security(("bearer" = [])),
    responses((status = 200, content((TopProducts = "application/json"), (String = "text/csv"))),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem),
        (status = 422, body = Problem)))]
pub async fn store_top_products(
    req: HttpRequest,
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<VendorId>,
    query: web::Query<TopQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let range = day_range(query.from, query.to)?;
    let limit = page_size(query.limit, 10)?;
    let store = store_of_caller(&state, &user, path.into_inner()).await?;
    let report = state
        .analytics
        .top_products(SalesScope::Store(store), range, limit)
        .await?;
    Ok(answer(&req, query.format, &report))
}

/// The platform's sales per period: GMV (goods + delivery fees of the orders paid), revenue
/// (the commission on the goods plus the part of the delivery fees the platform keeps, less
/// what refunds gave back of them), refunds, discounts, orders, rates and preparation times,
/// as for a store. Admins only.
#[utoipa::path(get, path = "/api/v1/analytics/platform/sales", tag = "analytics",
    params(RangeQuery), security(("bearer" = [])),
    responses((status = 200, content((SalesReport = "application/json"), (String = "text/csv"))),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 422, body = Problem)))]
pub async fn platform_sales(
    req: HttpRequest,
    state: web::Data<AppState>,
    user: AuthUser,
    query: web::Query<RangeQuery>,
) -> Result<HttpResponse, ApiError> {
    user.require_admin()?;
    let query = query.into_inner();
    let range = day_range(query.from, query.to)?;
    let report = state
        .analytics
        .sales(
            SalesScope::Platform,
            range,
            query.granularity.unwrap_or_default(),
        )
        .await?;
    Ok(answer(&req, query.format, &report))
}

/// The stores with the most GMV in the months the range overlaps. Admins only.
#[utoipa::path(get, path = "/api/v1/analytics/platform/stores/top-selling", tag = "analytics",
    params(TopQuery), security(("bearer" = [])),
    responses((status = 200, content((TopStores = "application/json"), (String = "text/csv"))),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 422, body = Problem)))]
pub async fn platform_top_stores(
    req: HttpRequest,
    state: web::Data<AppState>,
    user: AuthUser,
    query: web::Query<TopQuery>,
) -> Result<HttpResponse, ApiError> {
    user.require_admin()?;
    let query = query.into_inner();
    let range = day_range(query.from, query.to)?;
    let limit = page_size(query.limit, 10)?;
    let report = state.analytics.top_stores(range, limit).await?;
    Ok(answer(&req, query.format, &report))
}

/// The platform's best-selling products in the months the range overlaps. Admins only.
#[utoipa::path(get, path = "/api/v1/analytics/platform/products/top-selling", tag = "analytics",
    params(TopQuery), security(("bearer" = [])),
    responses((status = 200, content((TopProducts = "application/json"), (String = "text/csv"))),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 422, body = Problem)))]
pub async fn platform_top_products(
    req: HttpRequest,
    state: web::Data<AppState>,
    user: AuthUser,
    query: web::Query<TopQuery>,
) -> Result<HttpResponse, ApiError> {
    user.require_admin()?;
    let query = query.into_inner();
    let range = day_range(query.from, query.to)?;
    let limit = page_size(query.limit, 10)?;
    let report = state
        .analytics
        .top_products(SalesScope::Platform, range, limit)
        .await?;
    Ok(answer(&req, query.format, &report))
}

/// Every courier's offers, answers, deliveries and punctuality in the months the range
/// overlaps, most deliveries first. Admins only.
#[utoipa::path(get, path = "/api/v1/analytics/couriers", tag = "analytics",
    params(TopQuery), security(("bearer" = [])),
    responses((status = 200, content((CourierList = "application/json"), (String = "text/csv"))),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 422, body = Problem)))]
pub async fn list_couriers(
    req: HttpRequest,
    state: web::Data<AppState>,
    user: AuthUser,
    query: web::Query<TopQuery>,
) -> Result<HttpResponse, ApiError> {
    user.require_admin()?;
    let query = query.into_inner();
    let range = day_range(query.from, query.to)?;
    let limit = page_size(query.limit, 10)?;
    let report = state.analytics.couriers(range, limit).await?;
    Ok(answer(&req, query.format, &report))
}

/// A courier's performance per period: offers and how they were answered (acceptance rate
/// = accepted / offers), deliveries, deliveries on time against the ETA given at pickup,
/// and median times from acceptance to pickup and from pickup to handover. The courier
/// themself and admins only (404 for anyone else).
#[utoipa::path(get, path = "/api/v1/analytics/couriers/{courier}", tag = "analytics",
    params(("courier" = String, Path, format = Uuid), RangeQuery), security(("bearer" = [])),
    responses((status = 200, content((CourierReport = "application/json"), (String = "text/csv"))),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem),
        (status = 422, body = Problem)))]
pub async fn courier(
    req: HttpRequest,
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<UserId>,
    query: web::Query<RangeQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let range = day_range(query.from, query.to)?;
    let courier = path.into_inner();
    user.require_owner_or_admin(courier)?;
    let report = state
        .analytics
        .courier(courier, range, query.granularity.unwrap_or_default())
        .await?;
    Ok(answer(&req, query.format, &report))
}

/// Supply and demand per H3 cell and hour: distinct couriers seen online in the cell
/// (supply), orders paid whose store is in the cell, and orders that waited for a courier
/// there (from the store's acceptance to a courier's, counted in each hour they waited,
/// with the seconds they waited in it) — for staffing. Resolution-7 cells are the parents
/// of resolution-8 ones. Cells and hours without activity are left out. Admins only.
#[utoipa::path(get, path = "/api/v1/analytics/supply-demand", tag = "analytics",
    params(SupplyQuery), security(("bearer" = [])),
    responses((status = 200, content((SupplyDemand = "application/json"), (String = "text/csv"))),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 422, body = Problem)))]
pub async fn supply_demand(
    req: HttpRequest,
    state: web::Data<AppState>,
    user: AuthUser,
    query: web::Query<SupplyQuery>,
) -> Result<HttpResponse, ApiError> {
    user.require_admin()?;
    let query = query.into_inner();
    let resolution = query.resolution.unwrap_or(8);
    if !(7..=8).contains(&resolution) {
        return Err(ApiError::field_rule(
            ErrorCode::InvalidResolution,
            "resolution",
            "must be 7 or 8",
        ));
    }
    let to = match query.to {
        Some(to) if floor_hour(to) == to => to,
        Some(to) => floor_hour(to) + chrono::Duration::hours(1),
        None => floor_hour(Utc::now()) + chrono::Duration::hours(1),
    };
    let from = floor_hour(query.from.unwrap_or(to - chrono::Duration::hours(24)));
    if from >= to {
        return Err(ApiError::field_rule(
            ErrorCode::InvalidRange,
            "from",
            "must be before `to`",
        ));
    }
    if (to - from).num_hours() > MAX_HOURS || to.year() > 9000 {
        return Err(ApiError::field_rule(
            ErrorCode::RangeTooLong,
            "to",
            format!("at most {MAX_HOURS} hours after `from`"),
        ));
    }
    let report = state.analytics.supply_demand(resolution, from, to).await?;
    Ok(answer(&req, query.format, &report))
}

/// The caller's sales: a store owner's own store's, the platform's for an admin (the same
/// report as `/analytics/stores/{store}/sales` and `/analytics/platform/sales`).
#[utoipa::path(get, path = "/api/v1/analytics/sales", tag = "analytics",
    params(RangeQuery), security(("bearer" = [])),
    responses((status = 200, content((SalesReport = "application/json"), (String = "text/csv"))),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn my_sales(
    req: HttpRequest,
    state: web::Data<AppState>,
    user: AuthUser,
    query: web::Query<RangeQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let range = day_range(query.from, query.to)?;
    let scope = scope_of_caller(&state, &user).await?;
    let report = state
        .analytics
        .sales(scope, range, query.granularity.unwrap_or_default())
        .await?;
    Ok(answer(&req, query.format, &report))
}

/// The caller's revenue: the same report as `/analytics/sales` (for a store, `store_share`
/// is what it earns; for the platform, `revenue` is commission plus delivery fees kept,
/// refunds deducted).
#[utoipa::path(get, path = "/api/v1/analytics/revenue", tag = "analytics",
    params(RangeQuery), security(("bearer" = [])),
    responses((status = 200, content((SalesReport = "application/json"), (String = "text/csv"))),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn my_revenue(
    req: HttpRequest,
    state: web::Data<AppState>,
    user: AuthUser,
    query: web::Query<RangeQuery>,
) -> Result<HttpResponse, ApiError> {
    my_sales(req, state, user, query).await
}

/// The caller's best-selling products: their own store's, or the platform's for an admin.
#[utoipa::path(get, path = "/api/v1/analytics/products/top-selling", tag = "analytics",
    params(TopQuery), security(("bearer" = [])),
    responses((status = 200, content((TopProducts = "application/json"), (String = "text/csv"))),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn my_top_products(
    req: HttpRequest,
    state: web::Data<AppState>,
    user: AuthUser,
    query: web::Query<TopQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let range = day_range(query.from, query.to)?;
    let limit = page_size(query.limit, 10)?;
    let scope = scope_of_caller(&state, &user).await?;
    let report = state.analytics.top_products(scope, range, limit).await?;
    Ok(answer(&req, query.format, &report))
}
