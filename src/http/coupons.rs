//! Coupons: created by admins and store owners, read by whoever may manage them, switched on
//! and off. Customers meet them on the cart (`GET /cart?coupon_code=`) and at checkout.

use super::audit;
use super::client_addr::ClientAddr;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::coupon::{
    Coupon, CouponRefusal, CouponValue, FundedBy, MAX_TOTAL_LIMIT, normalise_code,
};
use crate::domain::identity::Role;
use crate::domain::ids::VendorId;
use crate::domain::ledger::WHOLE_BPS;
use crate::domain::money::Money;
use crate::error_code::ErrorCode;
use crate::ledger::coupons::CouponError;
use crate::web::extract::AuthUser;
use crate::web::problem::Problem;
use crate::web::{ApiError, AppState};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/coupons", web::post().to(create_coupon))
        .route("/coupons", web::get().to(list_coupons))
        .route("/coupons/{code}", web::get().to(get_coupon))
        .route("/coupons/{code}", web::patch().to(patch_coupon));
}

impl From<CouponError> for ApiError {
    fn from(e: CouponError) -> Self {
        match e {
            CouponError::Refused(refusal) => refusal.into(),
            CouponError::CodeTaken => ApiError::conflict(ErrorCode::CouponCodeTaken, e.to_string()),
            CouponError::Ledger(e) => e.into(),
        }
    }
}

impl From<CouponRefusal> for ApiError {
    fn from(refusal: CouponRefusal) -> Self {
        let code = match refusal {
            CouponRefusal::Unknown => ErrorCode::CouponUnknown,
            CouponRefusal::Expired => ErrorCode::CouponExpired,
            CouponRefusal::Exhausted => {
                return ApiError::conflict(ErrorCode::CouponExhausted, refusal.to_string());
            }
            CouponRefusal::MinSpend(_) => ErrorCode::CouponMinSpend,
            CouponRefusal::NotApplicable => ErrorCode::CouponNotApplicable,
        };
        ApiError::field_rule(code, "coupon_code", refusal.to_string())
    }
}

/// A new coupon: exactly one of `percent_bps` and `amount`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"code": "SUMMER25", "percent_bps": 2500, "min_spend": {"amount_minor": 2000, "currency": "EUR"},
    "ends_at": "2027-09-01T00:00:00Z", "per_customer": 1, "total_limit": 500}))]
pub struct NewCoupon {
    /// 3–32 letters, digits, `-` or `_` (stored upper-case).
    #[schema(min_length = 3, max_length = 32, pattern = "^[A-Za-z0-9_-]{3,32}$")]
    pub code: String,
    /// A share of the goods off, in basis points (1–10,000).
    #[schema(minimum = 1, maximum = 10000)]
    pub percent_bps: Option<u32>,
    /// A fixed amount off the goods (at most what they cost).
    pub amount: Option<Money>,
    /// Admins only: the one store it applies to (store owners: always their own store).
    #[schema(value_type = Option<String>, format = Uuid)]
    pub store_id: Option<VendorId>,
    /// Admins only: who gives the discount up (default: the platform for platform-wide
    /// coupons, the store for a store's). A store owner's coupon is always the store's.
    pub funded_by: Option<FundedBy>,
    /// The least the goods must cost.
    pub min_spend: Option<Money>,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    /// Redemptions one customer may have (default 1).
    #[schema(minimum = 1, maximum = 1000)]
    pub per_customer: Option<u32>,
    /// Redemptions in all.
    #[schema(minimum = 1, maximum = 100000)]
    pub total_limit: u32,
}

/// A coupon as its managers see it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CouponView {
    pub code: String,
    pub value: CouponValue,
    #[schema(value_type = Option<String>, format = Uuid)]
    pub store_id: Option<VendorId>,
    pub funded_by: FundedBy,
    pub min_spend: Option<Money>,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub per_customer: u32,
    pub total_limit: u32,
    pub active: bool,
    /// Redemptions held by checkouts waiting for their payment, and used by paid orders.
    pub held: u32,
    pub used: u32,
    pub created_at: DateTime<Utc>,
}

impl From<&Coupon> for CouponView {
    fn from(c: &Coupon) -> Self {
        CouponView {
            code: c.code.clone(),
            value: c.value,
            store_id: c.store_id,
            funded_by: c.funded_by,
            min_spend: c.min_spend,
            starts_at: c.starts_at,
            ends_at: c.ends_at,
            per_customer: c.per_customer,
            total_limit: c.total_limit,
            active: c.active,
            held: c.redeemed() - c.used(),
            used: c.used(),
            created_at: c.created_at,
        }
    }
}

/// The store a store owner manages, or 403.
async fn own_store(state: &AppState, user: &AuthUser) -> Result<VendorId, ApiError> {
    match state.catalog.vendor_of(user.id).await? {
        Some(store) => Ok(store.id),
        None => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "only admins and store owners manage coupons",
        )),
    }
}

/// Creates a coupon. Admins: platform-wide or for one store, funded by either. Store
/// owners: for their own store, funded by it.
#[utoipa::path(post, path = "/api/v1/coupons", tag = "coupons", request_body = NewCoupon,
    security(("bearer" = [])),
    responses((status = 201, body = CouponView), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create_coupon(
    state: web::Data<AppState>,
    user: AuthUser,
    from: ClientAddr,
    body: web::Json<NewCoupon>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let code = normalise_code(&body.code)
        .ok_or_else(|| ApiError::invalid_field("code", "3 to 32 letters, digits, - or _"))?;
    let value = match (body.percent_bps, body.amount) {
        (Some(bps), None) if (1..=WHOLE_BPS).contains(&bps) => CouponValue::PercentBps(bps),
        (None, Some(amount)) if amount.amount_minor > 0 && amount.amount_minor <= 100_000_000 => {
            CouponValue::Fixed(amount)
        }
        (Some(_), None) => {
            return Err(ApiError::invalid_field(
                "percent_bps",
                "between 1 and 10000",
            ));
        }
        (None, Some(_)) => {
            return Err(ApiError::invalid_field(
                "amount",
                "a positive amount, at most 1,000,000.00",
            ));
        }
        _ => {
            return Err(ApiError::invalid_field(
                "percent_bps",
                "give exactly one of percent_bps and amount",
            ));
        }
    };
    if let Some(min) = body.min_spend
        && !(0..=100_000_000).contains(&min.amount_minor)
    {
        return Err(ApiError::invalid_field(
            "min_spend",
            "between 0 and 1,000,000.00",
        ));
    }
    if let (Some(start), Some(end)) = (body.starts_at, body.ends_at)
        && end <= start
    {
        return Err(ApiError::invalid_field(
            "ends_at",
            "must be after starts_at",
        ));
    }
    let per_customer = body.per_customer.unwrap_or(1);
    if !(1..=1000).contains(&per_customer) {
        return Err(ApiError::invalid_field(
            "per_customer",
            "between 1 and 1000",
        ));
    }
    if !(1..=MAX_TOTAL_LIMIT).contains(&body.total_limit) {
        return Err(ApiError::invalid_field(
            "total_limit",
            "between 1 and 100000",
        ));
    }
    let (store_id, funded_by) = if user.is_admin() {
        if let Some(store) = body.store_id
            && state.catalog.repo.vendor(store).await?.is_none()
        {
            return Err(ApiError::not_found("no such store"));
        }
        let default = if body.store_id.is_some() {
            FundedBy::Store
        } else {
            FundedBy::Platform
        };
        let funded_by = body.funded_by.unwrap_or(default);
        if body.store_id.is_none() && funded_by == FundedBy::Store {
            return Err(ApiError::invalid_field(
                "funded_by",
                "a platform-wide coupon is funded by the platform",
            ));
        }
        (body.store_id, funded_by)
    } else {
        user.require_role(&[Role::Vendor])?;
        let store = own_store(&state, &user).await?;
        if body.store_id.is_some_and(|s| s != store) || body.funded_by == Some(FundedBy::Platform) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                "a store owner's coupons are their own store's, funded by it",
            ));
        }
        (Some(store), FundedBy::Store)
    };
    let coupon = Coupon {
        code,
        value,
        store_id,
        funded_by,
        min_spend: body.min_spend,
        starts_at: body.starts_at,
        ends_at: body.ends_at,
        per_customer,
        total_limit: body.total_limit,
        active: true,
        created_by: user.id,
        created_at: state.identity.clock.now(),
        redemptions: Default::default(),
    };
    let created = state.ledger.create_coupon(coupon).await?;
    let view = CouponView::from(&created);
    if user.is_admin() {
        state
            .audit
            .record(
                audit::entry(
                    &user,
                    from,
                    "coupon.create",
                    format!("coupon:{}", view.code),
                )
                .after(&view),
            )
            .await?;
    }
    Ok(HttpResponse::Created().json(view))
}

/// 404 unless the caller manages `coupon` (admins: all; a store owner: their store's).
async fn managed(state: &AppState, user: &AuthUser, code: &str) -> Result<Coupon, ApiError> {
    let missing = || ApiError::not_found("no such coupon");
    let code = normalise_code(code).ok_or_else(missing)?;
    let coupon = state.ledger.coupon(&code).await?.ok_or_else(missing)?;
    if user.is_admin() {
        return Ok(coupon);
    }
    match state.catalog.vendor_of(user.id).await? {
        Some(store) if coupon.store_id == Some(store.id) => Ok(coupon),
        _ => Err(missing()),
    }
}

/// One coupon with its held and used redemptions (its managers only; 404 for anyone else).
#[utoipa::path(get, path = "/api/v1/coupons/{code}", tag = "coupons",
    params(("code" = String, Path, pattern = "^[A-Za-z0-9_-]{3,32}$")), security(("bearer" = [])),
    responses((status = 200, body = CouponView), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub async fn get_coupon(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let coupon = managed(&state, &user, &path.into_inner()).await?;
    Ok(HttpResponse::Ok().json(CouponView::from(&coupon)))
}

/// Switches a coupon on or off.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"active": false}))]
pub struct PatchCoupon {
    pub active: bool,
}

/// Switches a coupon on or off (its managers only). An order already placed with it keeps
/// its discount.
#[utoipa::path(patch, path = "/api/v1/coupons/{code}", tag = "coupons", request_body = PatchCoupon,
    params(("code" = String, Path, pattern = "^[A-Za-z0-9_-]{3,32}$")), security(("bearer" = [])),
    responses((status = 200, body = CouponView), (status = 401, body = Problem), (status = 404, body = Problem),
        (status = 422, body = Problem)))]
pub async fn patch_coupon(
    state: web::Data<AppState>,
    user: AuthUser,
    from: ClientAddr,
    path: web::Path<String>,
    body: web::Json<PatchCoupon>,
) -> Result<HttpResponse, ApiError> {
    let coupon = managed(&state, &user, &path.into_inner()).await?;
    let changed = state
        .ledger
        .set_coupon_active(&coupon.code, body.active)
        .await?
        .ok_or_else(|| ApiError::not_found("no such coupon"))?;
    if user.is_admin() {
        let action = if body.active {
            "coupon.activate"
        } else {
            "coupon.deactivate"
        };
        state
            .audit
            .record(
                audit::entry(&user, from, action, format!("coupon:{}", changed.code))
                    .before(serde_json::json!({"active": coupon.active}))
                    .after(serde_json::json!({"active": changed.active})),
            )
            .await?;
    }
    Ok(HttpResponse::Ok().json(CouponView::from(&changed)))
}

/// Paging of coupons.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CouponsQuery {
    /// Page size, 1–100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[param(pattern = r"^[A-Za-z0-9_.:-]{1,512}$")]
    pub cursor: Option<String>,
}

/// A page of coupons.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CouponsPage {
    pub items: Vec<CouponView>,
    pub next_cursor: Option<String>,
}

/// The coupons the caller manages: every one for admins, their store's for a store owner.
#[utoipa::path(get, path = "/api/v1/coupons", tag = "coupons", params(CouponsQuery), security(("bearer" = [])),
    responses((status = 200, body = CouponsPage), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 422, body = Problem)))]
pub async fn list_coupons(
    state: web::Data<AppState>,
    user: AuthUser,
    query: web::Query<CouponsQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let limit = super::notifications::page_size(query.limit, 50)?;
    let cursor = super::ledger::opaque_cursor(query.cursor)?;
    let store = if user.is_admin() {
        None
    } else {
        Some(own_store(&state, &user).await?)
    };
    let (items, next_cursor) = match state.ledger.coupons_page(store, cursor, limit).await {
        Err(CouponError::Ledger(crate::ledger::LedgerError::Store(
            crate::store::StoreError::Misuse(_),
        ))) => return Err(super::ledger::bad_cursor()),
        other => other?,
    };
    Ok(HttpResponse::Ok().json(CouponsPage {
        items: items.iter().map(CouponView::from).collect(),
        next_cursor,
    }))
}
