//! The platform's live settings: read, changed (checked field by field, versioned, audited)
//! and their history. Administrators only.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::client_addr::ClientAddr;
use super::notifications::page_size;
use crate::domain::audit::AuditEntry;
use crate::domain::settings::{SettingsPatch, SettingsVersion};
use crate::error_code::ErrorCode;
use crate::settings::SettingsError;
use crate::web::extract::AuthUser;
use crate::web::problem::Problem;
use crate::web::{ApiError, AppState};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin/settings", web::get().to(get_settings))
        .route("/admin/settings", web::patch().to(patch_settings))
        .route("/admin/settings/history", web::get().to(settings_history));
}

impl From<SettingsError> for ApiError {
    fn from(e: SettingsError) -> Self {
        match e {
            SettingsError::Invalid(refused) => {
                ApiError::invalid_field(refused.field, refused.reason)
            }
            SettingsError::Stale { .. } => {
                ApiError::conflict(ErrorCode::SettingsVersionConflict, e.to_string())
            }
            SettingsError::Store(e) => e.into(),
        }
    }
}

/// The settings in force on the node that answers (every node takes a change within a
/// second), with their version.
#[utoipa::path(get, path = "/api/v1/admin/settings", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = SettingsVersion), (status = 401, body = Problem),
        (status = 403, body = Problem)))]
pub async fn get_settings(
    state: web::Data<AppState>,
    admin: AuthUser,
) -> Result<HttpResponse, ApiError> {
    admin.require_admin()?;
    Ok(HttpResponse::Ok().json(state.settings.view().version()))
}

/// Changes some settings (needs a recent step-up): absent fields keep their value, a field out
/// of its range is refused (422 naming it) and changes nothing. The change is a new version,
/// kept before the answer, in force on every node within a second, and in the audit trail
/// with the settings before and after. Give `version` to refuse (409) a change made on top
/// of one you have not seen.
#[utoipa::path(patch, path = "/api/v1/admin/settings", tag = "admin", request_body = SettingsPatch,
    security(("bearer" = [])),
    responses((status = 200, body = SettingsVersion), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn patch_settings(
    state: web::Data<AppState>,
    admin: AuthUser,
    from: ClientAddr,
    body: web::Json<SettingsPatch>,
) -> Result<HttpResponse, ApiError> {
    admin.require_admin()?;
    admin.require_step_up(state.identity.clock.now())?;
    let (before, after) = state.settings.change(&body, admin.id).await?;
    state
        .audit
        .record(
            AuditEntry::new(admin.id, from.0, "settings.change", "settings")
                .before(&before)
                .after(&after),
        )
        .await?;
    Ok(HttpResponse::Ok().json(after))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[param(minimum = 1)]
    pub cursor: Option<u64>,
}

/// A page of versions, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SettingsHistory {
    pub versions: Vec<SettingsVersion>,
    pub next_cursor: Option<u64>,
}

/// Every version the settings had, newest first.
#[utoipa::path(get, path = "/api/v1/admin/settings/history", tag = "admin", params(HistoryQuery),
    security(("bearer" = [])),
    responses((status = 200, body = SettingsHistory), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem)))]
pub async fn settings_history(
    state: web::Data<AppState>,
    admin: AuthUser,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    admin.require_admin()?;
    let limit = page_size(query.limit, 20)?;
    if query.cursor == Some(0) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidCursor,
            "a cursor is a version number from 1",
        ));
    }
    let (versions, next_cursor) = state.settings.history(query.cursor, limit).await?;
    Ok(HttpResponse::Ok().json(SettingsHistory {
        versions,
        next_cursor,
    }))
}
