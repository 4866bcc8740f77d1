//! Administration of users: list, ban, change role.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::auth::AccountView;
use super::client_addr::ClientAddr;
use crate::domain::identity::Role;
use crate::domain::ids::UserId;
use crate::error_code::ErrorCode;
use crate::identity::AccountFilter;
use crate::web::extract::AuthUser;
use crate::web::{ApiError, AppState};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin/users", web::get().to(list_users))
        .route("/admin/users/{id}", web::patch().to(patch_user));
}

#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    Active,
    Banned,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UserFilter {
    pub role: Option<Role>,
    pub status: Option<UserStatus>,
    /// Substring of the email, case-insensitive.
    pub email: Option<String>,
    /// 1 to 100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<usize>,
    #[param(min_length = 1)]
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserPage {
    pub users: Vec<AccountView>,
    pub next_cursor: Option<String>,
}

/// Lists accounts, filtered, a page at a time.
#[utoipa::path(get, path = "/api/v1/admin/users", tag = "admin", params(UserFilter), security(("bearer" = [])),
    responses((status = 200, body = UserPage), (status = 403, body = crate::web::problem::Problem)))]
pub async fn list_users(
    state: web::Data<AppState>,
    admin: AuthUser,
    filter: web::Query<UserFilter>,
) -> Result<HttpResponse, ApiError> {
    admin.require_admin()?;
    let limit = filter.limit.unwrap_or(50);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid_field(
            "limit",
            "must be between 1 and 100",
        ));
    }
    let filter = filter.into_inner();
    let accounts = AccountFilter {
        role: filter.role,
        banned: filter.status.map(|s| matches!(s, UserStatus::Banned)),
        email: filter.email,
    };
    let (users, next_cursor) = state
        .identity
        .accounts(&accounts, limit, filter.cursor)
        .await?;
    Ok(HttpResponse::Ok().json(UserPage {
        users: users.iter().map(AccountView::from).collect(),
        next_cursor,
    }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"banned": true}))]
pub struct PatchUser {
    pub role: Option<Role>,
    pub banned: Option<bool>,
}

/// Changes a user's role or bans them (needs a recent step-up). A ban ends every session.
#[utoipa::path(patch, path = "/api/v1/admin/users/{id}", tag = "admin", request_body = PatchUser,
    params(("id" = String, Path, format = Uuid)), security(("bearer" = [])),
    responses((status = 200, body = AccountView), (status = 403, body = crate::web::problem::Problem),
        (status = 404, body = crate::web::problem::Problem)))]
pub async fn patch_user(
    state: web::Data<AppState>,
    admin: AuthUser,
    from: ClientAddr,
    path: web::Path<UserId>,
    body: web::Json<PatchUser>,
) -> Result<HttpResponse, ApiError> {
    admin.require_admin()?;
    admin.require_step_up(state.identity.clock.now())?;
    let id = path.into_inner();
    let PatchUser { role, banned } = body.into_inner();
    if id == admin.id && (banned == Some(true) || role.is_some_and(|r| r != Role::Admin)) {
        return Err(ApiError::conflict(
            ErrorCode::CannotDemoteSelf,
            "admins cannot ban or demote themselves",
        ));
    }
    let mut before = None;
    let updated = state
        .identity
        .modify_user(id, |u| {
            before = Some((u.role, u.banned));
            if let Some(role) = role {
                u.role = role;
            }
            if let Some(banned) = banned {
                u.banned = banned;
            }
            Ok(())
        })
        .await?;
    if banned == Some(true) || role.is_some() {
        state.identity.revoke_all(id).await?;
    }
    let action = match (banned, role) {
        (Some(true), _) => "user.ban",
        (Some(false), None) => "user.unban",
        _ => "user.role",
    };
    let summary =
        |(role, banned): (Role, bool)| serde_json::json!({"role": role, "banned": banned});
    state
        .audit
        .record(
            super::audit::entry(&admin, from, action, format!("user:{id}"))
                .before(before.map(summary))
                .after(summary((updated.role, updated.banned))),
        )
        .await?;
    Ok(HttpResponse::Ok().json(AccountView::from(&updated)))
}
