//! The category tree: public listing with product counts, admin changes.

use super::audit;
use super::client_addr::ClientAddr;
use actix_web::{HttpResponse, web};
use serde::{Deserialize, Deserializer};

use crate::catalog::categories::CategoryNode;
use crate::domain::catalog::Category;
use crate::domain::ids::CategoryId;
use crate::web::extract::AuthUser;
use crate::web::{ApiError, AppState};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/categories", web::get().to(list_categories))
        .route("/admin/categories", web::post().to(create_category))
        .service(
            web::resource("/admin/categories/{id}")
                .route(web::patch().to(patch_category))
                .route(web::delete().to(delete_category)),
        );
}

/// A new category (at the top level without `parent_id`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCategory {
    #[schema(
        max_length = 120,
        pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
    )]
    pub name: String,
    #[schema(value_type = Option<String>, format = Uuid)]
    pub parent_id: Option<CategoryId>,
}

/// Renames and/or moves a category. `parent_id: null` moves it to the top level; leaving
/// `parent_id` out keeps it where it is.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchCategory {
    #[schema(
        max_length = 120,
        pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
    )]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub parent_id: Option<Option<CategoryId>>,
}

/// Tells a field set to `null` (`Some(None)`) from a field left out (`None`).
pub(super) fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// The whole tree, each category with the listed products in it and below it.
#[utoipa::path(get, path = "/api/v1/categories", tag = "catalog",
    responses((status = 200, body = Vec<CategoryNode>)))]
pub async fn list_categories(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.catalog.category_nodes().await?))
}

/// Creates a category (admins).
#[utoipa::path(post, path = "/api/v1/admin/categories", tag = "admin", request_body = NewCategory,
    security(("bearer" = [])),
    responses((status = 201, body = Category), (status = 403, body = crate::web::problem::Problem),
        (status = 409, body = crate::web::problem::Problem), (status = 422, body = crate::web::problem::Problem)))]
pub async fn create_category(
    state: web::Data<AppState>,
    user: AuthUser,
    from: ClientAddr,
    body: web::Json<NewCategory>,
) -> Result<HttpResponse, ApiError> {
    user.require_admin()?;
    let category = state
        .catalog
        .create_category(&body.name, body.parent_id)
        .await?;
    state
        .audit
        .record(
            audit::entry(
                &user,
                from,
                "category.create",
                format!("category:{}", category.id),
            )
            .after(&category),
        )
        .await?;
    Ok(HttpResponse::Created().json(category))
}

/// Renames or moves a category (admins). Moving under itself or a descendant is refused
/// (409 `category_cycle`).
#[utoipa::path(patch, path = "/api/v1/admin/categories/{id}", tag = "admin",
    request_body = PatchCategory, params(("id" = String, Path, format = Uuid)), security(("bearer" = [])),
    responses((status = 200, body = Category), (status = 403, body = crate::web::problem::Problem),
        (status = 404, body = crate::web::problem::Problem), (status = 409, body = crate::web::problem::Problem)))]
pub async fn patch_category(
    state: web::Data<AppState>,
    user: AuthUser,
    from: ClientAddr,
    path: web::Path<CategoryId>,
    body: web::Json<PatchCategory>,
) -> Result<HttpResponse, ApiError> {
    user.require_admin()?;
    let body = body.into_inner();
    let id = path.into_inner();
    let category = state
        .catalog
        .change_category(id, body.name.as_deref(), body.parent_id)
        .await?;
    state
        .audit
        .record(
            audit::entry(&user, from, "category.change", format!("category:{id}")).after(&category),
        )
        .await?;
    Ok(HttpResponse::Ok().json(category))
}

/// Deletes a category without subcategories or products (admins).
#[utoipa::path(delete, path = "/api/v1/admin/categories/{id}", tag = "admin",
    params(("id" = String, Path, format = Uuid)), security(("bearer" = [])),
    responses((status = 204), (status = 403, body = crate::web::problem::Problem),
        (status = 404, body = crate::web::problem::Problem), (status = 409, body = crate::web::problem::Problem)))]
pub async fn delete_category(
    state: web::Data<AppState>,
    user: AuthUser,
    from: ClientAddr,
    path: web::Path<CategoryId>,
) -> Result<HttpResponse, ApiError> {
    user.require_admin()?;
    let id = path.into_inner();
    state.catalog.delete_category(id).await?;
    state
        .audit
        .record(audit::entry(
            &user,
            from,
            "category.delete",
            format!("category:{id}"),
        ))
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
