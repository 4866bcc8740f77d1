//! The audit trail, read by administrators a page at a time, newest first, with filters.
//! Nothing in the API writes to it except the actions it records, and nothing edits it.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::client_addr::ClientAddr;
use super::notifications::page_size;
use crate::domain::audit::{AuditEntry, AuditFilter};
use crate::domain::ids::UserId;
use crate::domain::order::OrderRecord;
use crate::error_code::ErrorCode;
use crate::store::audit::AuditCursor;
use crate::web::extract::AuthUser;
use crate::web::problem::Problem;
use crate::web::{ApiError, AppState};

/// How far back a read goes when it names no start.
const DEFAULT_SPAN: chrono::Duration = chrono::Duration::days(90);
/// The longest range one read may name.
const MAX_SPAN: chrono::Duration = chrono::Duration::days(5 * 366);

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin/audit", web::get().to(list_audit));
}

/// An audit entry for an action `admin` is taking through this request.
pub(crate) fn entry(
    admin: &AuthUser,
    from: ClientAddr,
    action: &str,
    target: impl Into<String>,
) -> AuditEntry {
    AuditEntry::new(admin.id, from.0, action, target)
}

/// What the trail keeps of an order before and after an action on it.
pub(crate) fn order_summary(order: &OrderRecord) -> serde_json::Value {
    serde_json::json!({
        "status": order.order.status,
        "refunded": order.refunded,
        "refunds": order.refunds.len(),
    })
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only this administrator's actions.
    #[param(value_type = Option<String>, format = Uuid)]
    pub actor: Option<UserId>,
    /// One action (`user.ban`) or a whole area (`user`).
    #[param(pattern = r"^[a-z_]{1,40}(\.[a-z_]{1,40})?$")]
    pub action: Option<String>,
    /// The exact object, `kind:id` (`order:…`, `user:…`, `settings`).
    #[param(min_length = 1, max_length = 200)]
    pub target: Option<String>,
    /// Oldest time included (default: 90 days before `to`).
    pub from: Option<DateTime<Utc>>,
    /// Newest time included (default: now).
    pub to: Option<DateTime<Utc>>,
    /// 1 to 100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page (with the same filters).
    #[param(min_length = 1)]
    pub cursor: Option<String>,
}

/// A page of the trail, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// Present while the range may hold more: a filter that matches little can end a page
    /// short of `limit` (each page reads a bounded stretch of the trail).
    pub next_cursor: Option<String>,
}

/// Administrative actions: who did what to which object, when, from where, with the object
/// before and after. Filter by administrator, action or area, object and time range (at most
/// five years).
#[utoipa::path(get, path = "/api/v1/admin/audit", tag = "admin", params(AuditQuery),
    security(("bearer" = [])),
    responses((status = 200, body = AuditPage), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem)))]
pub async fn list_audit(
    state: web::Data<AppState>,
    admin: AuthUser,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    admin.require_admin()?;
    let query = query.into_inner();
    let limit = page_size(query.limit, 50)?;
    let to = query.to.unwrap_or_else(|| state.audit.now());
    let from = query.from.unwrap_or(to - DEFAULT_SPAN);
    if from > to {
        return Err(ApiError::invalid_field("from", "must not be after `to`"));
    }
    if to - from > MAX_SPAN {
        return Err(ApiError::invalid_field(
            "from",
            "the range is at most five years",
        ));
    }
    if let Some(action) = &query.action {
        let valid = !action.is_empty()
            && action.len() <= 81
            && action.split('.').count() <= 2
            && action.split('.').all(|part| {
                !part.is_empty() && part.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            });
        if !valid {
            return Err(ApiError::invalid_field(
                "action",
                "an action (`user.ban`) or an area (`user`)",
            ));
        }
    }
    if query
        .target
        .as_deref()
        .is_some_and(|t| t.is_empty() || t.len() > 200)
    {
        return Err(ApiError::invalid_field("target", "1 to 200 characters"));
    }
    let cursor = match query.cursor.as_deref() {
        Some(token) => Some(AuditCursor::parse(token).ok_or_else(|| {
            ApiError::bad_request(ErrorCode::InvalidCursor, "not a cursor this list gave")
        })?),
        None => None,
    };
    let filter = AuditFilter {
        actor: query.actor,
        action: query.action,
        target: query.target,
    };
    let (entries, next) = state.audit.page(from, to, &filter, limit, cursor).await?;
    Ok(HttpResponse::Ok().json(AuditPage {
        entries,
        next_cursor: next.map(|c| c.token()),
    }))
}
