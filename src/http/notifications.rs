//! The caller's in-app notifications, and the dead letters of the outbox for admins.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::notification::{FeedItem, OutboxMessage};
use crate::error_code::ErrorCode;
use crate::web::extract::AuthUser;
use crate::web::{ApiError, AppState};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/notifications", web::get().to(list_notifications))
        .route("/notifications/read-all", web::post().to(read_all))
        .route("/notifications/{id}/read", web::post().to(read_one))
        .route(
            "/admin/notifications/dead-letters",
            web::get().to(list_dead_letters),
        )
        .route(
            "/admin/notifications/dead-letters/{id}/retry",
            web::post().to(retry_dead_letter),
        );
}

/// Paging of the feed.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FeedQuery {
    /// Page size, 1–100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[param(pattern = r"^[0-9]{20}\.[0-9a-f]{32}$")]
    pub cursor: Option<String>,
}

/// A page of the caller's notifications, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FeedResponse {
    pub items: Vec<FeedItem>,
    /// Unread entries among the newest 1,000.
    pub unread: usize,
    pub next_cursor: Option<String>,
}

/// How many entries a mark-all made read.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MarkedRead {
    pub marked: usize,
    pub unread: usize,
}

pub(super) fn page_size(limit: Option<usize>, default: usize) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(default);
    if (1..=100).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::invalid_field(
            "limit",
            "must be between 1 and 100",
        ))
    }
}

pub(super) fn feed_cursor(cursor: Option<String>) -> Result<Option<String>, ApiError> {
    let valid = |c: &str| {
        c.len() == 53
            && c.as_bytes()[20] == b'.'
            && c[..20].bytes().all(|b| b.is_ascii_digit())
            && c[21..]
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    match cursor {
        Some(c) if !valid(&c) => Err(ApiError::new(
            actix_web::http::StatusCode::BAD_REQUEST,
            ErrorCode::InvalidCursor,
            "the cursor is not one this list handed out",
        )),
        other => Ok(other),
    }
}

/// The caller's notifications, newest first, with the unread count. Every order event the
/// caller is concerned by is here, whatever their channel preferences.
#[utoipa::path(get, path = "/api/v1/notifications", tag = "notifications", params(FeedQuery),
    security(("bearer" = [])),
    responses((status = 200, body = FeedResponse), (status = 400, body = crate::web::problem::Problem),
        (status = 401, body = crate::web::problem::Problem)))]
pub async fn list_notifications(
    state: web::Data<AppState>,
    user: AuthUser,
    query: web::Query<FeedQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let limit = page_size(query.limit, 20)?;
    let cursor = feed_cursor(query.cursor)?;
    let view = state.notifications.feed(user.id, cursor, limit).await?;
    Ok(HttpResponse::Ok().json(FeedResponse {
        items: view.page.items,
        unread: view.unread,
        next_cursor: view.page.next,
    }))
}

/// Marks one notification read (again: no change). 404 for an id that is not the caller's.
#[utoipa::path(post, path = "/api/v1/notifications/{id}/read", tag = "notifications",
    params(("id" = String, Path, format = Uuid)), security(("bearer" = [])),
    responses((status = 200, body = FeedItem), (status = 401, body = crate::web::problem::Problem),
        (status = 404, body = crate::web::problem::Problem)))]
pub async fn read_one(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let item = state
        .notifications
        .mark_read(user.id, path.into_inner())
        .await?
        .ok_or_else(|| ApiError::not_found("no such notification"))?;
    Ok(HttpResponse::Ok().json(item))
}

/// Marks every notification of the caller read.
#[utoipa::path(post, path = "/api/v1/notifications/read-all", tag = "notifications",
    security(("bearer" = [])),
    responses((status = 200, body = MarkedRead), (status = 401, body = crate::web::problem::Problem)))]
pub async fn read_all(
    state: web::Data<AppState>,
    user: AuthUser,
) -> Result<HttpResponse, ApiError> {
    let marked = state.notifications.mark_all_read(user.id).await?;
    let unread = state.notifications.unread(user.id).await?;
    Ok(HttpResponse::Ok().json(MarkedRead { marked, unread }))
}

/// Paging of the dead letters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterQuery {
    /// Page size, 1–100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[param(format = Uuid)]
    pub cursor: Option<Uuid>,
}

/// A page of dead letters.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeadLetters {
    pub items: Vec<OutboxMessage>,
    #[schema(value_type = Option<String>, format = Uuid)]
    pub next_cursor: Option<Uuid>,
}

/// Messages the outbox gave up on (refused by the provider, or out of attempts), with the
/// last error. Admins only.
#[utoipa::path(get, path = "/api/v1/admin/notifications/dead-letters", tag = "admin",
    params(DeadLetterQuery), security(("bearer" = [])),
    responses((status = 200, body = DeadLetters), (status = 400, body = crate::web::problem::Problem),
        (status = 401, body = crate::web::problem::Problem), (status = 403, body = crate::web::problem::Problem)))]
pub async fn list_dead_letters(
    state: web::Data<AppState>,
    admin: AuthUser,
    query: web::Query<DeadLetterQuery>,
) -> Result<HttpResponse, ApiError> {
    admin.require_admin()?;
    let query = query.into_inner();
    let limit = page_size(query.limit, 50)?;
    let (items, next_cursor) = state
        .notifications
        .dead_letters(query.cursor, limit)
        .await?;
    Ok(HttpResponse::Ok().json(DeadLetters { items, next_cursor }))
}

/// Sends a dead letter again (a new round of attempts, now). Admins only.
#[utoipa::path(post, path = "/api/v1/admin/notifications/dead-letters/{id}/retry", tag = "admin",
    params(("id" = String, Path, format = Uuid)), security(("bearer" = [])),
    responses((status = 200, body = OutboxMessage), (status = 401, body = crate::web::problem::Problem),
        (status = 403, body = crate::web::problem::Problem), (status = 404, body = crate::web::problem::Problem)))]
pub async fn retry_dead_letter(
    state: web::Data<AppState>,
    admin: AuthUser,
    from: super::client_addr::ClientAddr,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    admin.require_admin()?;
    let id = path.into_inner();
    let message = state
        .notifications
        .retry_dead_letter(id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such dead letter"))?;
    state
        .audit
        .record(super::audit::entry(
            &admin,
            from,
            "notification.retry",
            format!("notification:{id}"),
        ))
        .await?;
    Ok(HttpResponse::Ok().json(message))
}
