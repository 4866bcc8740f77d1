//! Reports of products and stores, the admins' moderation queue, their decisions and the
//! history of decisions.
//!
//! Any signed-in user reports a product or store the public can see, once per round (until an
//! admin decides on it). Admins hide and restore products, suspend and reinstate stores, or
//! dismiss the reports, always with a reason the store's owner is told.

use std::collections::BTreeMap;

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::notifications::page_size;
use crate::domain::catalog::VendorStatus;
use crate::domain::ids::{DecisionId, ProductId, VendorId};
use crate::domain::moderation::{
    Decision, ItemKind, Report, ReportReason, ReportRule, ReportStatus, Reported,
};
use crate::error_code::ErrorCode;
use crate::http::client_addr::ClientAddr;
use crate::moderation::{ModerationError, QueueItem};
use crate::web::extract::AuthUser;
use crate::web::{ApiError, AppState};

/// Reports shown per item in the queue.
const LATEST_REPORTS: usize = 5;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/products/{id}/reports", web::post().to(report_product))
        .route("/vendors/{id}/reports", web::post().to(report_vendor))
        .route("/admin/moderation/queue", web::get().to(moderation_queue))
        .route("/admin/moderation/decisions", web::get().to(decisions))
        .route(
            "/admin/moderation/products/{id}/hide",
            web::post().to(hide_product),
        )
        .route(
            "/admin/moderation/products/{id}/restore",
            web::post().to(restore_product),
        )
        .route(
            "/admin/moderation/products/{id}/dismiss",
            web::post().to(dismiss_product),
        )
        .route(
            "/admin/moderation/vendors/{id}/suspend",
            web::post().to(suspend_vendor),
        )
        .route(
            "/admin/moderation/vendors/{id}/reinstate",
            web::post().to(reinstate_vendor),
        )
        .route(
            "/admin/moderation/vendors/{id}/dismiss",
            web::post().to(dismiss_vendor),
        );
}

impl From<ModerationError> for ApiError {
    fn from(e: ModerationError) -> Self {
        match e {
            ModerationError::NotFound(_) => ApiError::not_found(e.to_string()),
            ModerationError::Report(ReportRule::AlreadyReported) => {
                ApiError::conflict(ErrorCode::AlreadyReported, e.to_string())
            }
            ModerationError::Report(ReportRule::InvalidText(message)) => {
                ApiError::invalid_field("text", message)
            }
            ModerationError::InvalidReason(message) => ApiError::invalid_field("reason", message),
            ModerationError::AlreadyDone(detail) => ApiError::conflict(ErrorCode::Conflict, detail),
            ModerationError::Limited { retry_after } => {
                ApiError::too_many(ErrorCode::TooManyRequests, e.to_string(), retry_after)
            }
            ModerationError::Limiter(limiter) => {
                ApiError::unavailable(ErrorCode::RateLimiterUnavailable, limiter)
            }
            ModerationError::Catalog(catalog) => catalog.into(),
            ModerationError::Store(store) => store.into(),
        }
    }
}

/// A user's report.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"reason": "counterfeit", "text": "The logo is wrong."}))]
pub struct NewReport {
    pub reason: ReportReason,
    /// Up to 1,000 characters.
    #[serde(default)]
    #[schema(max_length = 1000)]
    pub text: String,
}

/// An admin's decision and why; the store's owner is told the reason.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"reason": "Counterfeit goods (reported 4 times)."}))]
pub struct DecisionBody {
    /// 1 to 1,000 characters.
    #[schema(min_length = 1, max_length = 1000)]
    pub reason: String,
}

/// One reported item of the queue.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueEntry {
    /// `product:{id}` or `vendor:{id}`.
    pub item: String,
    pub kind: ItemKind,
    pub id: Uuid,
    /// The product's title or the store's name (absent if it was deleted since).
    pub title: Option<String>,
    /// The store: the item itself, or the product's.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub vendor_id: Option<VendorId>,
    pub vendor_status: Option<VendorStatus>,
    /// For products: hidden by a moderator.
    pub hidden: Option<bool>,
    pub status: ReportStatus,
    /// Reports of the current round.
    pub reports: u32,
    /// Reports ever made.
    pub total_reports: u32,
    /// Reports of the current round per reason (of those kept).
    pub reasons: BTreeMap<String, u32>,
    /// The newest reports of the round, newest first.
    pub latest: Vec<Report>,
    pub opened_at: DateTime<Utc>,
    pub latest_at: DateTime<Utc>,
    #[schema(value_type = Option<String>, format = Uuid)]
    pub last_decision: Option<DecisionId>,
}

impl From<QueueItem> for QueueEntry {
    fn from(q: QueueItem) -> Self {
        let r = q.reports;
        let mut reasons = BTreeMap::new();
        for report in &r.reports {
            let name = serde_json::to_value(report.reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            *reasons.entry(name).or_insert(0) += 1;
        }
        let id = match r.item {
            Reported::Product(id) => id.as_uuid(),
            Reported::Vendor(id) => id.as_uuid(),
        };
        let title = match r.item {
            Reported::Product(_) => q.product.as_ref().map(|p| p.title.clone()),
            Reported::Vendor(_) => q.vendor.as_ref().map(|v| v.name.clone()),
        };
        QueueEntry {
            item: r.item.key(),
            kind: r.item.kind(),
            id,
            title,
            vendor_id: q.vendor.as_ref().map(|v| v.id),
            vendor_status: q.vendor.as_ref().map(|v| v.status),
            hidden: q.product.as_ref().map(|p| p.hidden),
            status: r.status,
            reports: r.count,
            total_reports: r.total,
            reasons,
            latest: r
                .reports
                .iter()
                .rev()
                .take(LATEST_REPORTS)
                .cloned()
                .collect(),
            opened_at: r.opened_at,
            latest_at: r.latest_at,
            last_decision: r.last_decision,
        }
    }
}

/// A page of the queue.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueuePage {
    /// Oldest round of reports first.
    pub items: Vec<QueueEntry>,
    pub next_cursor: Option<String>,
}

/// A page of the history of decisions.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DecisionPage {
    /// Newest first.
    pub decisions: Vec<Decision>,
    pub next_cursor: Option<String>,
}

/// A decision and the item as it is now.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DecisionOutcome {
    pub decision: Decision,
    /// For products: hidden by a moderator now.
    pub hidden: Option<bool>,
    /// For stores: the store's status now.
    pub vendor_status: Option<VendorStatus>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct QueueQuery {
    /// `product` or `vendor`; both when absent.
    pub kind: Option<ItemKind>,
    /// Default `open`.
    pub status: Option<ReportStatus>,
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<usize>,
    #[param(min_length = 1)]
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DecisionQuery {
    /// Only decisions on this item: `product:{id}` or `vendor:{id}`.
    #[param(
        pattern = r"^(product|vendor):[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    pub item: Option<String>,
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<usize>,
    #[param(min_length = 1)]
    pub cursor: Option<String>,
}

/// A cursor: a 20-digit time, a dot, and what `rest` accepts.
fn cursor(raw: Option<String>, rest: fn(&str) -> bool) -> Result<Option<String>, ApiError> {
    let valid = |c: &str| {
        c.split_once('.').is_some_and(|(time, tail)| {
            time.len() == 20 && time.bytes().all(|b| b.is_ascii_digit()) && rest(tail)
        })
    };
    match raw {
        Some(c) if !valid(&c) => Err(ApiError::bad_request(
            ErrorCode::InvalidCursor,
            "the cursor is not one this list handed out",
        )),
        other => Ok(other),
    }
}

async fn report(
    state: &AppState,
    user: &AuthUser,
    item: Reported,
    body: NewReport,
) -> Result<HttpResponse, ApiError> {
    state
        .moderation
        .report(user.id, item, body.reason, &body.text)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Reports a product to the moderators (any signed-in user; once until they decide; 20
/// reports per hour).
#[utoipa::path(post, path = "/api/v1/products/{id}/reports", tag = "moderation", request_body = NewReport,
    params(("id" = String, Path, format = Uuid, description = "product id")), security(("bearer" = [])),
    responses((status = 204), (status = 400, body = crate::web::problem::Problem),
        (status = 401, body = crate::web::problem::Problem), (status = 404, body = crate::web::problem::Problem),
        (status = 409, body = crate::web::problem::Problem, description = "`already_reported`"),
        (status = 422, body = crate::web::problem::Problem), (status = 429, body = crate::web::problem::Problem)))]
pub async fn report_product(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<ProductId>,
    body: web::Json<NewReport>,
) -> Result<HttpResponse, ApiError> {
    let item = Reported::Product(path.into_inner());
    report(&state, &user, item, body.into_inner()).await
}

/// Reports a store to the moderators (any signed-in user; once until they decide; 20
/// reports per hour).
#[utoipa::path(post, path = "/api/v1/vendors/{id}/reports", tag = "moderation", request_body = NewReport,
    params(("id" = String, Path, format = Uuid, description = "vendor id")), security(("bearer" = [])),
    responses((status = 204), (status = 400, body = crate::web::problem::Problem),
        (status = 401, body = crate::web::problem::Problem), (status = 404, body = crate::web::problem::Problem),
        (status = 409, body = crate::web::problem::Problem, description = "`already_reported`"),
        (status = 422, body = crate::web::problem::Problem), (status = 429, body = crate::web::problem::Problem)))]
pub async fn report_vendor(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<VendorId>,
    body: web::Json<NewReport>,
) -> Result<HttpResponse, ApiError> {
    let item = Reported::Vendor(path.into_inner());
    report(&state, &user, item, body.into_inner()).await
}

/// The moderation queue (admins): reported products and stores, oldest round of reports
/// first, with counts and the latest reasons.
#[utoipa::path(get, path = "/api/v1/admin/moderation/queue", tag = "admin", params(QueueQuery),
    security(("bearer" = [])),
    responses((status = 200, body = QueuePage), (status = 400, body = crate::web::problem::Problem),
        (status = 401, body = crate::web::problem::Problem), (status = 403, body = crate::web::problem::Problem)))]
pub async fn moderation_queue(
    state: web::Data<AppState>,
    admin: AuthUser,
    query: web::Query<QueueQuery>,
) -> Result<HttpResponse, ApiError> {
    admin.require_admin()?;
    let query = query.into_inner();
    let after = cursor(query.cursor, |tail| Reported::parse(tail).is_some())?;
    let (items, next) = state
        .moderation
        .queue(
            query.status.unwrap_or(ReportStatus::Open),
            query.kind,
            after,
            page_size(query.limit, 20)?,
        )
        .await?;
    Ok(HttpResponse::Ok().json(QueuePage {
        items: items.into_iter().map(QueueEntry::from).collect(),
        next_cursor: next,
    }))
}

/// The history of moderation decisions (admins), newest first, of one item or of all.
#[utoipa::path(get, path = "/api/v1/admin/moderation/decisions", tag = "admin", params(DecisionQuery),
    security(("bearer" = [])),
    responses((status = 200, body = DecisionPage), (status = 400, body = crate::web::problem::Problem),
        (status = 401, body = crate::web::problem::Problem), (status = 403, body = crate::web::problem::Problem)))]
pub async fn decisions(
    state: web::Data<AppState>,
    admin: AuthUser,
    query: web::Query<DecisionQuery>,
) -> Result<HttpResponse, ApiError> {
    admin.require_admin()?;
    let query = query.into_inner();
    let item = query
        .item
        .as_deref()
        .map(|raw| {
            Reported::parse(raw).ok_or_else(|| {
                ApiError::bad_request(
                    ErrorCode::InvalidQuery,
                    "item: must be product:{id} or vendor:{id}",
                )
            })
        })
        .transpose()?;
    let after = cursor(query.cursor, |tail| tail.parse::<DecisionId>().is_ok())?;
    let (decisions, next) = state
        .moderation
        .history(item, after, page_size(query.limit, 20)?)
        .await?;
    Ok(HttpResponse::Ok().json(DecisionPage {
        decisions,
        next_cursor: next,
    }))
}

async fn product_decision(
    state: &AppState,
    admin: &AuthUser,
    from: ClientAddr,
    id: ProductId,
    hidden: bool,
    body: &DecisionBody,
) -> Result<HttpResponse, ApiError> {
    admin.require_admin()?;
    let (before, after, decision) = state
        .moderation
        .set_product_hidden(admin.id, id, hidden, &body.reason)
        .await?;
    let product = |p: &crate::domain::catalog::Product| serde_json::json!({"hidden": p.hidden});
    let action = format!("product.{}", decision.action.as_str());
    state
        .audit
        .record(
            super::audit::entry(admin, from, &action, decision.item.clone())
                .before(product(&before))
                .after(product(&after))
                .reason(Some(decision.reason.clone())),
        )
        .await?;
    tracing::info!(admin = %admin.id, %from, product_id = %id, hidden, decision_id = %decision.id, "product moderated");
    Ok(HttpResponse::Ok().json(DecisionOutcome {
        decision,
        hidden: Some(after.hidden),
        vendor_status: None,
    }))
}

async fn vendor_decision(
    state: &AppState,
    admin: &AuthUser,
    from: ClientAddr,
    id: VendorId,
    suspended: bool,
    body: &DecisionBody,
) -> Result<HttpResponse, ApiError> {
    admin.require_admin()?;
    let (before, after, decision) = state
        .moderation
        .set_vendor_suspended(admin.id, id, suspended, &body.reason)
        .await?;
    let store = |v: &crate::domain::catalog::Vendor| serde_json::json!({"status": v.status});
    let action = format!("vendor.{}", decision.action.as_str());
    state
        .audit
        .record(
            super::audit::entry(admin, from, &action, decision.item.clone())
                .before(store(&before))
                .after(store(&after))
                .reason(Some(decision.reason.clone())),
        )
        .await?;
    tracing::info!(admin = %admin.id, %from, vendor_id = %id, suspended, decision_id = %decision.id, "store moderated");
    Ok(HttpResponse::Ok().json(DecisionOutcome {
        decision,
        hidden: None,
        vendor_status: Some(after.status),
    }))
}

async fn dismiss(
    state: &AppState,
    admin: &AuthUser,
    from: ClientAddr,
    item: Reported,
    body: &DecisionBody,
) -> Result<HttpResponse, ApiError> {
    admin.require_admin()?;
    let decision = state
        .moderation
        .dismiss(admin.id, item, &body.reason)
        .await?;
    state
        .audit
        .record(
            super::audit::entry(admin, from, "moderation.dismiss", decision.item.clone())
                .after(serde_json::json!({"reports_closed": decision.reports_closed}))
                .reason(Some(decision.reason.clone())),
        )
        .await?;
    tracing::info!(admin = %admin.id, %from, item = %decision.item, decision_id = %decision.id, "reports dismissed");
    Ok(HttpResponse::Ok().json(DecisionOutcome {
        decision,
        hidden: None,
        vendor_status: None,
    }))
}

/// Hides a product from everyone but its store and admins (admins); its store's owner is
/// told the reason. 409 `conflict` if it is hidden already.
#[utoipa::path(post, path = "/api/v1/admin/moderation/products/{id}/hide", tag = "admin",
    request_body = DecisionBody, params(("id" = String, Path, format = Uuid)), security(("bearer" = [])),
    responses((status = 200, body = DecisionOutcome), (status = 400, body = crate::web::problem::Problem),
        (status = 401, body = crate::web::problem::Problem), (status = 403, body = crate::web::problem::Problem),
        (status = 404, body = crate::web::problem::Problem), (status = 409, body = crate::web::problem::Problem),
        (status = 422, body = crate::web::problem::Problem)))]
pub async fn hide_product(
    state: web::Data<AppState>,
    admin: AuthUser,
    from: ClientAddr,
    path: web::Path<ProductId>,
    body: web::Json<DecisionBody>,
) -> Result<HttpResponse, ApiError> {
    product_decision(&state, &admin, from, path.into_inner(), true, &body).await
}

/// Puts a hidden product back (admins); its store's owner is told the reason.
#[utoipa::path(post, path = "/api/v1/admin/moderation/products/{id}/restore", tag = "admin",
    request_body = DecisionBody, params(("id" = String, Path, format = Uuid)), security(("bearer" = [])),
    responses((status = 200, body = DecisionOutcome), (status = 400, body = crate::web::problem::Problem),
        (status = 401, body = crate::web::problem::Problem), (status = 403, body = crate::web::problem::Problem),
        (status = 404, body = crate::web::problem::Problem), (status = 409, body = crate::web::problem::Problem),
        (status = 422, body = crate::web::problem::Problem)))]
pub async fn restore_product(
    state: web::Data<AppState>,
    admin: AuthUser,
    from: ClientAddr,
    path: web::Path<ProductId>,
    body: web::Json<DecisionBody>,
) -> Result<HttpResponse, ApiError> {
    product_decision(&state, &admin, from, path.into_inner(), false, &body).await
}

/// Suspends a store (admins): it and its products leave public listings and search, and
/// nothing of it can be bought. Its owner is told the reason.
#[utoipa::path(post, path = "/api/v1/admin/moderation/vendors/{id}/suspend", tag = "admin",
    request_body = DecisionBody, params(("id" = String, Path, format = Uuid)), security(("bearer" = [])),
    responses((status = 200, body = DecisionOutcome), (status = 400, body = crate::web::problem::Problem),
        (status = 401, body = crate::web::problem::Problem), (status = 403, body = crate::web::problem::Problem),
        (status = 404, body = crate::web::problem::Problem), (status = 409, body = crate::web::problem::Problem),
        (status = 422, body = crate::web::problem::Problem)))]
pub async fn suspend_vendor(
    state: web::Data<AppState>,
    admin: AuthUser,
    from: ClientAddr,
    path: web::Path<VendorId>,
    body: web::Json<DecisionBody>,
) -> Result<HttpResponse, ApiError> {
    vendor_decision(&state, &admin, from, path.into_inner(), true, &body).await
}

/// Lifts a store's suspension (admins): it is active again. Its owner is told the reason.
#[utoipa::path(post, path = "/api/v1/admin/moderation/vendors/{id}/reinstate", tag = "admin",
    request_body = DecisionBody, params(("id" = String, Path, format = Uuid)), security(("bearer" = [])),
    responses((status = 200, body = DecisionOutcome), (status = 400, body = crate::web::problem::Problem),
        (status = 401, body = crate::web::problem::Problem), (status = 403, body = crate::web::problem::Problem),
        (status = 404, body = crate::web::problem::Problem), (status = 409, body = crate::web::problem::Problem),
        (status = 422, body = crate::web::problem::Problem)))]
pub async fn reinstate_vendor(
    state: web::Data<AppState>,
    admin: AuthUser,
    from: ClientAddr,
    path: web::Path<VendorId>,
    body: web::Json<DecisionBody>,
) -> Result<HttpResponse, ApiError> {
    vendor_decision(&state, &admin, from, path.into_inner(), false, &body).await
}

/// Closes a product's open reports without acting on it (admins).
#[utoipa::path(post, path = "/api/v1/admin/moderation/products/{id}/dismiss", tag = "admin",
    request_body = DecisionBody, params(("id" = String, Path, format = Uuid)), security(("bearer" = [])),
    responses((status = 200, body = DecisionOutcome), (status = 400, body = crate::web::problem::Problem),
        (status = 401, body = crate::web::problem::Problem), (status = 403, body = crate::web::problem::Problem),
        (status = 409, body = crate::web::problem::Problem), (status = 422, body = crate::web::problem::Problem)))]
pub async fn dismiss_product(
    state: web::Data<AppState>,
    admin: AuthUser,
    from: ClientAddr,
    path: web::Path<ProductId>,
    body: web::Json<DecisionBody>,
) -> Result<HttpResponse, ApiError> {
    dismiss(
        &state,
        &admin,
        from,
        Reported::Product(path.into_inner()),
        &body,
    )
    .await
}

/// Closes a store's open reports without acting on it (admins).
#[utoipa::path(post, path = "/api/v1/admin/moderation/vendors/{id}/dismiss", tag = "admin",
    request_body = DecisionBody, params(("id" = String, Path, format = Uuid)), security(("bearer" = [])),
    responses((status = 200, body = DecisionOutcome), (status = 400, body = crate::web::problem::Problem),
        (status = 401, body = crate::web::problem::Problem), (status = 403, body = crate::web::problem::Problem),
        (status = 409, body = crate::web::problem::Problem), (status = 422, body = crate::web::problem::Problem)))]
pub async fn dismiss_vendor(
    state: web::Data<AppState>,
    admin: AuthUser,
    from: ClientAddr,
    path: web::Path<VendorId>,
    body: web::Json<DecisionBody>,
) -> Result<HttpResponse, ApiError> {
    dismiss(
        &state,
        &admin,
        from,
        Reported::Vendor(path.into_inner()),
        &body,
    )
    .await
}
