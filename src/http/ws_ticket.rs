//! `POST /api/v1/ws/ticket`: short-lived single-use tickets for opening a WebSocket.
//!
//! Browsers cannot set `Authorization` on a WebSocket, so they buy a ticket with their bearer
//! token and pass it as `?ticket=` on the upgrade. Any authenticated user may; each stream
//! checks roles itself when the ticket is redeemed.

use actix_web::http::header::{CACHE_CONTROL, CacheControl, CacheDirective};
use actix_web::{HttpResponse, web};

use crate::web::extract::AuthUser;
use crate::web::gate::IssuedTicket;
use crate::web::{ApiError, AppState};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/ws/ticket", web::post().to(issue_ws_ticket));
}

/// A ticket that opens one WebSocket within 30 seconds.
#[utoipa::path(post, path = "/api/v1/ws/ticket", tag = "live", security(("bearer" = [])),
    responses((status = 200, body = IssuedTicket),
        (status = 401, body = crate::web::problem::Problem),
        (status = 503, body = crate::web::problem::Problem)))]
#[tracing::instrument(skip_all, fields(user_id = %user.id))]
pub async fn issue_ws_ticket(
    state: web::Data<AppState>,
    user: AuthUser,
) -> Result<HttpResponse, ApiError> {
    let ticket = state.ws.issue_ticket(&user).await?;
    // A ticket is a credential: no cache may keep it.
    Ok(HttpResponse::Ok()
        .insert_header((CACHE_CONTROL, CacheControl(vec![CacheDirective::NoStore])))
        .json(ticket))
}
