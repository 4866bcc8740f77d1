//! Support tickets: any signed-in user opens and follows their own; admins work the queue.
//!
//! A ticket is shown to its author and to admins only; anyone else gets 404, as for a ticket
//! that does not exist. Internal notes, an admin's images shown only in notes, who the ticket
//! is assigned to and whether it is overdue are shown to admins only. Attachments are served
//! through the ticket (`…/attachments/{n}`), never under a public address.

use actix_web::http::header::{self, CacheControl, CacheDirective};
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::notifications::page_size;
use crate::domain::ids::{OrderId, TicketId, UserId};
use crate::domain::support::{
    Attachment, Ticket, TicketCategory, TicketMessage, TicketRule, TicketStatus,
};
use crate::error_code::ErrorCode;
use crate::http::client_addr::ClientAddr;
use crate::support::{Caller, NewTicket, QueueFilter, SupportError, TicketChange};
use crate::web::extract::AuthUser;
use crate::web::{ApiError, AppState};

/// The oldest a queue filter reaches back: a hundred years of 365.25 days.
const OLDER_THAN_MAX_SECS: u32 = 3_155_760_000;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/support/tickets")
            .route(web::post().to(open_ticket))
            .route(web::get().to(my_tickets)),
    )
    .route("/support/tickets/{id}", web::get().to(get_ticket))
    .route(
        "/support/tickets/{id}/messages",
        web::post().to(write_message),
    )
    .route("/support/tickets/{id}/close", web::post().to(close_ticket))
    .route(
        "/support/tickets/{id}/attachments",
        web::post().to(upload_attachment),
    )
    .route(
        "/support/tickets/{id}/attachments/{attachment}",
        web::get().to(get_attachment),
    )
    .route("/admin/support/tickets", web::get().to(queue))
    .route(
        "/admin/support/tickets/{id}",
        web::patch().to(update_ticket),
    )
    .route(
        "/admin/support/tickets/{id}/messages",
        web::post().to(admin_message),
    );
}

impl From<SupportError> for ApiError {
    fn from(e: SupportError) -> Self {
        match e {
            SupportError::NotFound | SupportError::AttachmentNotFound => {
                ApiError::not_found(e.to_string())
            }
            SupportError::Rule(rule) => match rule {
                TicketRule::Invalid { field, message } => ApiError::invalid_field(field, message),
                TicketRule::Closed => ApiError::conflict(ErrorCode::TicketClosed, rule.to_string()),
                TicketRule::Full => ApiError::conflict(ErrorCode::TicketFull, rule.to_string()),
                TicketRule::TooManyAttachments => ApiError::field_rule(
                    ErrorCode::TooManyAttachments,
                    "attachments",
                    rule.to_string(),
                ),
                TicketRule::UnknownAttachment(_) => ApiError::field_rule(
                    ErrorCode::UnknownAttachment,
                    "attachments",
                    rule.to_string(),
                ),
            },
            SupportError::NotYourOrder => ApiError::field_rule(
                ErrorCode::NotYourOrder,
                "order_id",
                "no such order of yours",
            ),
            SupportError::InvalidQuery { field, message } => {
                ApiError::bad_request(ErrorCode::InvalidQuery, format!("{field}: {message}"))
            }
            SupportError::Limited { retry_after } => {
                ApiError::too_many(ErrorCode::TooManyRequests, e.to_string(), retry_after)
            }
            SupportError::Limiter(limiter) => {
                ApiError::unavailable(ErrorCode::RateLimiterUnavailable, limiter)
            }
            SupportError::Media(media) => super::media::media_error(media),
            SupportError::Store(store) => store.into(),
        }
    }
}

/// An image of a ticket, with where to fetch it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AttachmentView {
    pub id: u32,
    /// The image, for the ticket's author and admins only.
    pub url: String,
    /// Its thumbnail (fits in 320 × 320).
    pub thumbnail_url: String,
    pub content_type: String,
    pub width: u32,
    pub height: u32,
    #[schema(value_type = String, format = Uuid)]
    pub uploaded_by: UserId,
    pub at: DateTime<Utc>,
}

impl AttachmentView {
    fn new(ticket: TicketId, a: &Attachment) -> Self {
        let url = format!("/api/v1/support/tickets/{ticket}/attachments/{}", a.id);
        AttachmentView {
            id: a.id,
            thumbnail_url: format!("{url}?size=thumbnail"),
            url,
            content_type: a.image.content_type.clone(),
            width: a.image.width,
            height: a.image.height,
            uploaded_by: a.uploaded_by,
            at: a.at,
        }
    }
}

/// One message of a ticket.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MessageView {
    /// Position in the ticket, from 1 (notes count too, so an author may see gaps).
    pub seq: u32,
    #[schema(value_type = String, format = Uuid)]
    pub author: UserId,
    /// Written by the support team.
    pub from_admin: bool,
    /// An internal note (admins only ever see these).
    pub internal: bool,
    pub body: String,
    /// Ids of the ticket's attachments shown with it.
    pub attachments: Vec<u32>,
    pub at: DateTime<Utc>,
}

impl From<&TicketMessage> for MessageView {
    fn from(m: &TicketMessage) -> Self {
        MessageView {
            seq: m.seq,
            author: m.author,
            from_admin: m.from_admin,
            internal: m.internal,
            body: m.body.clone(),
            attachments: m.attachments.clone(),
            at: m.at,
        }
    }
}

/// A ticket without its conversation, as lists show it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TicketSummary {
    #[schema(value_type = String, format = Uuid)]
    pub id: TicketId,
    #[schema(value_type = String, format = Uuid)]
    pub author: UserId,
    pub subject: String,
    pub category: TicketCategory,
    #[schema(value_type = Option<String>, format = Uuid)]
    pub order_id: Option<OrderId>,
    pub status: TicketStatus,
    /// The admin working on it (admins only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub assigned_to: Option<UserId>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub first_response_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
    /// Seconds from opening to the first reply of the support team.
    pub first_response_secs: Option<i64>,
    /// Seconds from opening to the (last) resolution.
    pub resolution_secs: Option<i64>,
    /// Open, with the last word from the author.
    pub waiting_on_admin: bool,
    /// Waiting on an admin longer than the platform allows (admins only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overdue: Option<bool>,
    /// Messages the caller can see.
    pub message_count: usize,
}

impl TicketSummary {
    fn new(ticket: &Ticket, admin: bool, overdue: bool) -> Self {
        TicketSummary {
            id: ticket.id,
            author: ticket.author,
            subject: ticket.subject.clone(),
            category: ticket.category,
            order_id: ticket.order_id,
            status: ticket.status,
            assigned_to: if admin { ticket.assigned_to } else { None },
            created_at: ticket.created_at,
            updated_at: ticket.updated_at,
            first_response_at: ticket.first_response_at,
            resolved_at: ticket.resolved_at,
            closed_at: ticket.closed_at,
            first_response_secs: ticket.first_response_secs(),
            resolution_secs: ticket.resolution_secs(),
            waiting_on_admin: ticket.waits_on_admin(),
            overdue: admin.then_some(overdue),
            message_count: ticket
                .messages
                .iter()
                .filter(|m| admin || !m.internal)
                .count(),
        }
    }
}

/// A ticket with the part of its conversation the caller may see.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TicketView {
    #[serde(flatten)]
    pub summary: TicketSummary,
    /// Oldest first.
    pub messages: Vec<MessageView>,
    pub attachments: Vec<AttachmentView>,
}

fn ticket_view(state: &AppState, ticket: &Ticket, admin: bool) -> TicketView {
    TicketView {
        summary: TicketSummary::new(ticket, admin, state.support.is_overdue(ticket)),
        messages: ticket
            .messages
            .iter()
            .filter(|m| admin || !m.internal)
            .map(MessageView::from)
            .collect(),
        attachments: ticket
            .attachments
            .iter()
            .filter(|a| admin || ticket.author_sees(a))
            .map(|a| AttachmentView::new(ticket.id, a))
            .collect(),
    }
}

/// A page of tickets.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TicketList {
    pub tickets: Vec<TicketSummary>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A new ticket and its first message.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"subject": "Pizza arrived cold", "category": "order_problem",
    "order_id": "0197a5d2-8c1e-7b3a-9f10-3c2d4e5f6a7b", "body": "The courier took an hour."}))]
pub struct NewTicketBody {
    /// 1 to 200 characters, one line.
    #[schema(max_length = 200)]
    pub subject: String,
    pub category: TicketCategory,
    /// One of the caller's orders this is about.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub order_id: Option<OrderId>,
    /// 1 to 4,000 characters.
    #[schema(max_length = 4000)]
    pub body: String,
}

/// A message on a ticket.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"body": "Here is a photo.", "attachments": [1]}))]
pub struct NewMessage {
    /// 1 to 4,000 characters.
    #[schema(max_length = 4000)]
    pub body: String,
    /// Ids of the ticket's attachments to show with it (at most 5).
    #[serde(default)]
    pub attachments: Vec<u32>,
}

/// An admin's message: a reply, or an internal note the author never sees.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"body": "A refund is on its way.", "internal": false}))]
pub struct AdminMessage {
    #[schema(max_length = 4000)]
    pub body: String,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub attachments: Vec<u32>,
}

/// An admin's change of a ticket; absent fields stay.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"status": "resolved", "assigned_to": "0197a5d2-8c1e-7b3a-9f10-3c2d4e5f6a7b"}))]
pub struct TicketPatch {
    pub status: Option<TicketStatus>,
    /// An admin's user id; `null` unassigns.
    #[serde(default, deserialize_with = "super::categories::present")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub assigned_to: Option<Option<UserId>>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[param(min_length = 1)]
    pub cursor: Option<String>,
}

/// Which tickets of the queue to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct QueueQuery {
    /// Default `open`.
    pub status: Option<TicketStatus>,
    pub category: Option<TicketCategory>,
    /// Only tickets assigned to this admin.
    #[param(value_type = Option<String>, format = Uuid)]
    pub assigned_to: Option<UserId>,
    /// Only tickets opened at least this many seconds ago (at most a hundred years).
    #[param(maximum = 3_155_760_000u64)]
    // OLDER_THAN_MAX_SECS (the attribute takes literals only)
    pub older_than: Option<u64>,
    /// Only tickets opened before this moment.
    pub opened_before: Option<DateTime<Utc>>,
    /// Only tickets waiting on an admin longer than the platform allows (open ones).
    #[serde(default)]
    pub overdue: bool,
    /// 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<usize>,
    #[param(min_length = 1)]
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AttachmentQuery {
    /// `thumbnail` for the small rendition.
    pub size: Option<AttachmentSize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttachmentSize {
    Full,
    Thumbnail,
}

/// A cursor of a ticket list: a 20-digit time, a dot and a ticket id.
fn cursor(raw: Option<String>) -> Result<Option<String>, ApiError> {
    match raw {
        Some(c) if !valid_cursor(&c) => Err(ApiError::bad_request(
            ErrorCode::InvalidCursor,
            "the cursor is not one this list handed out",
        )),
        other => Ok(other),
    }
}

fn valid_cursor(c: &str) -> bool {
    let Some((time, id)) = c.split_once('.') else {
        return false;
    };
    time.len() == 20 && time.bytes().all(|b| b.is_ascii_digit()) && id.parse::<TicketId>().is_ok()
}

/// What the audit trail keeps of a ticket around an admin's action (never the messages).
fn audit_summary(ticket: &Ticket) -> serde_json::Value {
    serde_json::json!({
        "status": ticket.status,
        "assigned_to": ticket.assigned_to,
        "messages": ticket.messages.len(),
    })
}

fn caller(user: &AuthUser) -> Caller {
    Caller {
        id: user.id,
        admin: user.is_admin(),
    }
}

/// Opens a support ticket (any signed-in user; 5 per hour).
#[utoipa::path(post, path = "/api/v1/support/tickets", tag = "support", request_body = NewTicketBody,
    security(("bearer" = [])),
    responses((status = 201, body = TicketView), (status = 400, body = crate::web::problem::Problem),
        (status = 401, body = crate::web::problem::Problem),
        (status = 422, body = crate::web::problem::Problem, description = "`validation_failed`; `not_your_order`"),
        (status = 429, body = crate::web::problem::Problem)))]
#[tracing::instrument(name = "support.open", skip_all, fields(user = %user.id))]
pub async fn open_ticket(
    state: web::Data<AppState>,
    user: AuthUser,
    body: web::Json<NewTicketBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let ticket = state
        .support
        .open(
            user.id,
            NewTicket {
                subject: body.subject,
                category: body.category,
                order_id: body.order_id,
                body: body.body,
            },
        )
        .await?;
    Ok(HttpResponse::Created()
        .insert_header((
            header::LOCATION,
            format!("/api/v1/support/tickets/{}", ticket.id),
        ))
        .json(ticket_view(&state, &ticket, false)))
}

/// The caller's tickets, newest first.
#[utoipa::path(get, path = "/api/v1/support/tickets", tag = "support", params(PageQuery),
    security(("bearer" = [])),
    responses((status = 200, body = TicketList), (status = 400, body = crate::web::problem::Problem),
        (status = 401, body = crate::web::problem::Problem)))]
pub async fn my_tickets(
    state: web::Data<AppState>,
    user: AuthUser,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let page = state
        .support
        .mine(user.id, cursor(query.cursor)?, page_size(query.limit, 20)?)
        .await?;
    Ok(HttpResponse::Ok().json(TicketList {
        tickets: page
            .tickets
            .iter()
            .map(|t| TicketSummary::new(t, false, false))
            .collect(),
        next_cursor: page.next,
    }))
}

/// One ticket with its conversation (its author, or an admin; notes for admins only).
#[utoipa::path(get, path = "/api/v1/support/tickets/{id}", tag = "support",
    params(("id" = String, Path, format = Uuid)), security(("bearer" = [])),
    responses((status = 200, body = TicketView), (status = 401, body = crate::web::problem::Problem),
        (status = 404, body = crate::web::problem::Problem)))]
pub async fn get_ticket(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<TicketId>,
) -> Result<HttpResponse, ApiError> {
    let caller = caller(&user);
    let ticket = state.support.get(caller, path.into_inner()).await?;
    Ok(HttpResponse::Ok().json(ticket_view(&state, &ticket, caller.admin)))
}

/// The author writes on their ticket; a ticket waiting on them or resolved opens again.
#[utoipa::path(post, path = "/api/v1/support/tickets/{id}/messages", tag = "support",
    request_body = NewMessage, params(("id" = String, Path, format = Uuid)), security(("bearer" = [])),
    responses((status = 201, body = TicketView), (status = 400, body = crate::web::problem::Problem),
        (status = 401, body = crate::web::problem::Problem), (status = 404, body = crate::web::problem::Problem),
        (status = 409, body = crate::web::problem::Problem, description = "`ticket_closed`, `ticket_full`"),
        (status = 422, body = crate::web::problem::Problem), (status = 429, body = crate::web::problem::Problem)))]
#[tracing::instrument(name = "support.message", skip_all, fields(user = %user.id, ticket_id = %*path))]
pub async fn write_message(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<TicketId>,
    body: web::Json<NewMessage>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let ticket = state
        .support
        .user_message(user.id, path.into_inner(), &body.body, body.attachments)
        .await?;
    Ok(HttpResponse::Created().json(ticket_view(&state, &ticket, false)))
}

/// The author closes their ticket (no more messages).
#[utoipa::path(post, path = "/api/v1/support/tickets/{id}/close", tag = "support",
    params(("id" = String, Path, format = Uuid)), security(("bearer" = [])),
    responses((status = 200, body = TicketView), (status = 401, body = crate::web::problem::Problem),
        (status = 404, body = crate::web::problem::Problem)))]
pub async fn close_ticket(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<TicketId>,
) -> Result<HttpResponse, ApiError> {
    let ticket = state.support.close(user.id, path.into_inner()).await?;
    Ok(HttpResponse::Ok().json(ticket_view(&state, &ticket, false)))
}

/// Adds an image to a ticket (its author or an admin), to show in a message by its id.
#[utoipa::path(post, path = "/api/v1/support/tickets/{id}/attachments", tag = "support",
    params(("id" = String, Path, format = Uuid)),
    request_body(content = inline(super::media::ImageUpload), content_type = "multipart/form-data"),
    responses((status = 201, body = AttachmentView),
        (status = 400, body = crate::web::problem::Problem), (status = 401, body = crate::web::problem::Problem),
        (status = 404, body = crate::web::problem::Problem), (status = 408, body = crate::web::problem::Problem),
        (status = 409, body = crate::web::problem::Problem, description = "`ticket_closed`"),
        (status = 413, body = crate::web::problem::Problem, description = "over 5 MiB"),
        (status = 415, body = crate::web::problem::Problem, description = "not a JPEG, PNG or WebP"),
        (status = 422, body = crate::web::problem::Problem, description = "`too_many_attachments` or `invalid_image`"),
        (status = 429, body = crate::web::problem::Problem)),
    security(("bearer" = [])))]
#[tracing::instrument(name = "support.attach", skip_all, fields(user = %user.id, ticket_id = %*path))]
pub async fn upload_attachment(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<TicketId>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let caller = caller(&user);
    // Refused before a byte of the body is read.
    state.support.get(caller, id).await?;
    let bytes = super::media::read_upload(&req, payload).await?;
    let (ticket, added) = state.support.attach(caller, id, bytes).await?;
    let attachment = ticket
        .attachments
        .iter()
        .find(|a| a.id == added)
        .map(|a| AttachmentView::new(id, a))
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("attachment {added} vanished")))?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, attachment.url.clone()))
        .json(attachment))
}

/// An image of a ticket (its author, for their own images and those shown in replies; an
/// admin, for all).
#[utoipa::path(get, path = "/api/v1/support/tickets/{id}/attachments/{attachment}", tag = "support",
    params(("id" = String, Path, format = Uuid), ("attachment" = u32, Path), AttachmentQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the image", content(("image/jpeg"), ("image/png"), ("image/webp"))),
        (status = 401, body = crate::web::problem::Problem), (status = 404, body = crate::web::problem::Problem)))]
pub async fn get_attachment(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<(TicketId, u32)>,
    query: web::Query<AttachmentQuery>,
) -> Result<HttpResponse, ApiError> {
    let (id, attachment) = path.into_inner();
    let thumbnail = query.size == Some(AttachmentSize::Thumbnail);
    let (bytes, content_type) = state
        .support
        .attachment(caller(&user), id, attachment, thumbnail)
        .await?;
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(CacheControl(vec![
            CacheDirective::Private,
            CacheDirective::MaxAge(3_600),
        ]))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::CONTENT_SECURITY_POLICY, "default-src 'none'"))
        .body(bytes))
}

/// The support queue (admins): tickets in one status (default `open`), oldest first, by
/// category, assignee, age, or only the overdue ones.
#[utoipa::path(get, path = "/api/v1/admin/support/tickets", tag = "admin", params(QueueQuery),
    security(("bearer" = [])),
    responses((status = 200, body = TicketList), (status = 400, body = crate::web::problem::Problem),
        (status = 401, body = crate::web::problem::Problem), (status = 403, body = crate::web::problem::Problem)))]
pub async fn queue(
    state: web::Data<AppState>,
    admin: AuthUser,
    query: web::Query<QueueQuery>,
) -> Result<HttpResponse, ApiError> {
    admin.require_admin()?;
    let query = query.into_inner();
    let now = state.support.now();
    let older_than = query
        .older_than
        .map(|secs| {
            u32::try_from(secs)
                .ok()
                .filter(|secs| *secs <= OLDER_THAN_MAX_SECS)
                .and_then(|secs| now.checked_sub_signed(chrono::Duration::seconds(secs.into())))
                .ok_or_else(|| {
                    ApiError::invalid_field(
                        "older_than",
                        format!("at most {OLDER_THAN_MAX_SECS} (a hundred years)"),
                    )
                })
        })
        .transpose()?;
    let opened_before = match (older_than, query.opened_before) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let page = state
        .support
        .queue(QueueFilter {
            status: query.status,
            category: query.category,
            assigned_to: query.assigned_to,
            opened_before,
            overdue: query.overdue,
            after: cursor(query.cursor)?,
            limit: page_size(query.limit, 20)?,
        })
        .await?;
    Ok(HttpResponse::Ok().json(TicketList {
        tickets: page
            .tickets
            .iter()
            .map(|t| TicketSummary::new(t, true, state.support.is_overdue(t)))
            .collect(),
        next_cursor: page.next,
    }))
}

/// Assigns a ticket or sets its status (admins). The author hears of a new status.
#[utoipa::path(patch, path = "/api/v1/admin/support/tickets/{id}", tag = "admin",
    request_body = TicketPatch, params(("id" = String, Path, format = Uuid)), security(("bearer" = [])),
    responses((status = 200, body = TicketView), (status = 400, body = crate::web::problem::Problem),
        (status = 401, body = crate::web::problem::Problem), (status = 403, body = crate::web::problem::Problem),
        (status = 404, body = crate::web::problem::Problem)))]
#[tracing::instrument(name = "support.update", skip_all, fields(admin = %admin.id, from = %from, ticket_id = %*path))]
pub async fn update_ticket(
    state: web::Data<AppState>,
    admin: AuthUser,
    from: ClientAddr,
    path: web::Path<TicketId>,
    body: web::Json<TicketPatch>,
) -> Result<HttpResponse, ApiError> {
    admin.require_admin()?;
    let body = body.into_inner();
    if let Some(Some(assignee)) = body.assigned_to {
        let is_admin = state.identity.users.get(assignee).await?.is_some_and(|u| {
            u.value.role == crate::domain::identity::Role::Admin && !u.value.banned
        });
        if !is_admin {
            return Err(ApiError::invalid_field(
                "assigned_to",
                "no such administrator: tickets are assigned to administrators",
            ));
        }
    }
    let (before, after) = state
        .support
        .update(
            admin.id,
            path.into_inner(),
            TicketChange {
                status: body.status,
                assigned_to: body.assigned_to,
            },
        )
        .await?;
    let action = match (
        before.status != after.status,
        before.assigned_to != after.assigned_to,
    ) {
        (true, false) => "support.status",
        (false, true) => "support.assign",
        _ => "support.update",
    };
    state
        .audit
        .record(
            super::audit::entry(&admin, from, action, format!("ticket:{}", after.id))
                .before(audit_summary(&before))
                .after(audit_summary(&after)),
        )
        .await?;
    tracing::info!(
        before = before.status.as_str(),
        after = after.status.as_str(),
        assigned_to = ?after.assigned_to,
        "support ticket updated by an admin"
    );
    Ok(HttpResponse::Ok().json(ticket_view(&state, &after, true)))
}

/// Replies on a ticket, or takes an internal note (`internal: true`) its author never sees
/// (admins). The author hears of replies.
#[utoipa::path(post, path = "/api/v1/admin/support/tickets/{id}/messages", tag = "admin",
    request_body = AdminMessage, params(("id" = String, Path, format = Uuid)), security(("bearer" = [])),
    responses((status = 201, body = TicketView), (status = 400, body = crate::web::problem::Problem),
        (status = 401, body = crate::web::problem::Problem), (status = 403, body = crate::web::problem::Problem),
        (status = 404, body = crate::web::problem::Problem), (status = 409, body = crate::web::problem::Problem),
        (status = 422, body = crate::web::problem::Problem)))]
#[tracing::instrument(name = "support.admin_message", skip_all, fields(admin = %admin.id, from = %from, ticket_id = %*path))]
pub async fn admin_message(
    state: web::Data<AppState>,
    admin: AuthUser,
    from: ClientAddr,
    path: web::Path<TicketId>,
    body: web::Json<AdminMessage>,
) -> Result<HttpResponse, ApiError> {
    admin.require_admin()?;
    let body = body.into_inner();
    let (before, after) = state
        .support
        .admin_message(
            admin.id,
            path.into_inner(),
            &body.body,
            body.internal,
            body.attachments,
        )
        .await?;
    let action = if body.internal {
        "support.note"
    } else {
        "support.reply"
    };
    let seq = after.messages.last().map(|m| m.seq);
    state
        .audit
        .record(
            super::audit::entry(&admin, from, action, format!("ticket:{}", after.id))
                .before(audit_summary(&before))
                .after(serde_json::json!({"status": after.status, "message": seq})),
        )
        .await?;
    tracing::info!(
        internal = body.internal,
        "support ticket answered by an admin"
    );
    Ok(HttpResponse::Created().json(ticket_view(&state, &after, true)))
}
