//! Products: the owning vendor's changes, public reads, search, featured and popular.

use super::audit;
use super::client_addr::ClientAddr;
use actix_web::http::StatusCode;
use actix_web::http::header::ContentType;
use actix_web::{HttpResponse, web};
use serde::Deserialize;

use super::vendors::{DEFAULT_RADIUS_KM, page_limit};
use crate::catalog::CatalogError;
use crate::catalog::lists::ProductList;
use crate::catalog::products::{NewProduct, ProductPatch, ProductView};
use crate::domain::catalog::{Product, Vendor};
use crate::domain::geo::{GeoPoint, parse_radius_km};
use crate::domain::identity::Role;
use crate::domain::ids::{CategoryId, ProductId, VendorId};
use crate::error_code::ErrorCode;
use crate::search::{SearchError, SearchQuery, SearchResults, Sort};
use crate::web::extract::{AuthUser, MaybeUser};
use crate::web::{ApiError, AppState};

/// Longest search text.
pub const MAX_QUERY_TEXT: usize = 200;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/products")
            .route(web::get().to(search_products))
            .route(web::post().to(create_product)),
    )
    .route("/products/featured", web::get().to(featured))
    .route("/products/popular", web::get().to(popular))
    .route("/admin/featured", web::put().to(set_featured))
    .route("/vendor/products", web::get().to(my_products))
    .service(
        web::resource("/products/{id}")
            .route(web::get().to(get_product))
            .route(web::patch().to(patch_product))
            .route(web::delete().to(delete_product)),
    );
}

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::NotFound => ApiError::not_found("no such resource"),
            CatalogError::InvalidCursor => {
                ApiError::bad_request(ErrorCode::InvalidCursor, e.to_string())
            }
            CatalogError::Forbidden(detail) => {
                ApiError::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, detail)
            }
            CatalogError::Invalid { field, message } => ApiError::invalid_field(&field, message),
            CatalogError::Conflict { code, detail } => ApiError::conflict(code, detail),
            CatalogError::Store(e) => e.into(),
            CatalogError::Internal(e) => ApiError::internal(e),
        }
    }
}

impl From<SearchError> for ApiError {
    fn from(e: SearchError) -> Self {
        match e {
            SearchError::BadCursor => ApiError::bad_request(
                ErrorCode::InvalidCursor,
                "the cursor is not one this API issued for this search",
            ),
            SearchError::Internal(e) => ApiError::internal(e),
        }
    }
}

/// Search parameters.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProductSearch {
    /// Words to look for (typos forgiven), at most 200 characters.
    pub q: Option<String>,
    /// Only this category and the categories below it.
    #[param(format = Uuid)]
    pub category: Option<String>,
    /// Only this store.
    #[param(format = Uuid)]
    pub vendor: Option<String>,
    /// Lowest unit price in minor units.
    #[param(minimum = 0)]
    pub min_price: Option<i64>,
    /// Highest unit price in minor units.
    #[param(minimum = 0)]
    pub max_price: Option<i64>,
    /// Only products that can be bought now.
    pub in_stock: Option<bool>,
    /// Lowest average rating, 0–5.
    #[param(minimum = 0, maximum = 5)]
    pub min_rating: Option<f64>,
    /// `lat,lng`: only stores within `radius_km` of this place.
    #[param(
        pattern = r"^-?(90(\.0+)?|[1-8]?[0-9](\.[0-9]+)?),-?(180(\.0+)?|(1[0-7][0-9]|[1-9]?[0-9])(\.[0-9]+)?)$"
    )]
    pub near: Option<String>,
    /// Radius around `near` in km (default 5, at most 50).
    #[param(exclusive_minimum = 0, maximum = 50)]
    pub radius_km: Option<f64>,
    #[param(inline)]
    pub sort: Option<Sort>,
    /// Page size, 1–100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[param(min_length = 1)]
    pub cursor: Option<String>,
}

impl ProductSearch {
    /// Validates the parameters into a query (`vendors_in` filled from the directory).
    fn to_query(&self, state: &AppState) -> Result<SearchQuery, ApiError> {
        let text = match self.q.as_deref().map(str::trim) {
            Some(q) if q.chars().count() > MAX_QUERY_TEXT => {
                return Err(ApiError::invalid_field(
                    "q",
                    format!("at most {MAX_QUERY_TEXT} characters"),
                ));
            }
            Some(q) if !q.is_empty() => Some(q.to_owned()),
            _ => None,
        };
        let category = match &self.category {
            Some(raw) => Some(
                raw.parse::<CategoryId>()
                    .map_err(|_| ApiError::invalid_field("category", "not a category id"))?,
            ),
            None => None,
        };
        let vendor = match &self.vendor {
            Some(raw) => Some(
                raw.parse::<VendorId>()
                    .map_err(|_| ApiError::invalid_field("vendor", "not a vendor id"))?,
            ),
            None => None,
        };
        for (field, value) in [("min_price", self.min_price), ("max_price", self.max_price)] {
            if value.is_some_and(|p| p < 0) {
                return Err(ApiError::invalid_field(field, "must not be negative"));
            }
        }
        if let (Some(min), Some(max)) = (self.min_price, self.max_price)
            && min > max
        {
            return Err(ApiError::invalid_field(
                "max_price",
                "must not be below min_price",
            ));
        }
        if let Some(r) = self.min_rating
            && !(r.is_finite() && (0.0..=5.0).contains(&r))
        {
            return Err(ApiError::invalid_field("min_rating", "must be from 0 to 5"));
        }
        let vendors_in = match &self.near {
            Some(near) => {
                let center =
                    GeoPoint::parse_pair(near).map_err(|m| ApiError::invalid_field("near", m))?;
                let radius_km = parse_radius_km(self.radius_km.unwrap_or(DEFAULT_RADIUS_KM))
                    .map_err(|m| ApiError::invalid_field("radius_km", m))?;
                Some(state.catalog.directory.near_ids(
                    center,
                    radius_km * 1000.0,
                    Vendor::is_active,
                ))
            }
            None if self.radius_km.is_some() => {
                return Err(ApiError::invalid_field("radius_km", "needs `near`"));
            }
            None => None,
        };
        Ok(SearchQuery {
            text,
            category,
            vendor,
            vendors_in,
            min_price: self.min_price,
            max_price: self.max_price,
            in_stock: self.in_stock.unwrap_or(false),
            min_rating: self.min_rating,
            sort: self.sort.unwrap_or_default(),
            limit: page_limit(self.limit)?,
            cursor: self.cursor.clone(),
            include_unlisted: false,
        })
    }
}

/// Searches listed products: full text with typo tolerance, filters, sorting, facet counts
/// per category and cursor pagination.
#[utoipa::path(get, path = "/api/v1/products", tag = "catalog", params(ProductSearch),
    responses((status = 200, body = SearchResults), (status = 400, body = crate::web::problem::Problem),
        (status = 422, body = crate::web::problem::Problem)))]
pub async fn search_products(
    state: web::Data<AppState>,
    query: web::Query<ProductSearch>,
) -> Result<HttpResponse, ApiError> {
    let query = query.to_query(&state)?;
    let page = state.catalog.indexer.search.search_json(query).await?;
    Ok(HttpResponse::Ok()
        .content_type(ContentType::json())
        .body(page))
}

/// Every product of the caller's store, drafts and hidden ones included.
#[utoipa::path(get, path = "/api/v1/vendor/products", tag = "catalog", params(ProductSearch),
    security(("bearer" = [])),
    responses((status = 200, body = SearchResults), (status = 403, body = crate::web::problem::Problem),
        (status = 404, body = crate::web::problem::Problem)))]
pub async fn my_products(
    state: web::Data<AppState>,
    user: AuthUser,
    query: web::Query<ProductSearch>,
) -> Result<HttpResponse, ApiError> {
    user.require_role(&[Role::Vendor])?;
    let vendor = state
        .catalog
        .vendor_of(user.id)
        .await?
        .ok_or_else(|| ApiError::not_found("you do not run a store yet"))?;
    let mut query = query.to_query(&state)?;
    query.vendor = Some(vendor.id);
    query.vendors_in = None;
    query.include_unlisted = true;
    let page = state.catalog.indexer.search.search_json(query).await?;
    Ok(HttpResponse::Ok()
        .content_type(ContentType::json())
        .body(page))
}

/// Lists a product in the caller's store (a draft unless `visibility` says otherwise).
#[utoipa::path(post, path = "/api/v1/products", tag = "catalog", request_body = NewProduct,
    security(("bearer" = [])),
    responses((status = 201, body = Product), (status = 403, body = crate::web::problem::Problem),
        (status = 422, body = crate::web::problem::Problem)))]
pub async fn create_product(
    state: web::Data<AppState>,
    user: AuthUser,
    body: web::Json<NewProduct>,
) -> Result<HttpResponse, ApiError> {
    user.require_role(&[Role::Vendor])?;
    let product = state
        .catalog
        .create_product(user.id, body.into_inner())
        .await?;
    Ok(HttpResponse::Created().json(product))
}

/// A product with its store, availability and rating. Drafts, hidden products and products
/// of inactive stores are shown only to their vendor and admins.
#[utoipa::path(get, path = "/api/v1/products/{id}", tag = "catalog", params(("id" = String, Path, format = Uuid)),
    responses((status = 200, body = ProductView), (status = 404, body = crate::web::problem::Problem)))]
pub async fn get_product(
    state: web::Data<AppState>,
    MaybeUser(user): MaybeUser,
    path: web::Path<ProductId>,
) -> Result<HttpResponse, ApiError> {
    let viewer = user.map(|u| (u.id, u.is_admin()));
    let page = state
        .catalog
        .product_page(path.into_inner(), viewer)
        .await?;
    Ok(HttpResponse::Ok()
        .content_type(ContentType::json())
        .body(page))
}

/// Changes a product (its vendor or an admin); `visibility: hidden` takes it off the shelf.
#[utoipa::path(patch, path = "/api/v1/products/{id}", tag = "catalog", request_body = ProductPatch,
    params(("id" = String, Path, format = Uuid)), security(("bearer" = [])),
    responses((status = 200, body = Product), (status = 404, body = crate::web::problem::Problem),
        (status = 422, body = crate::web::problem::Problem)))]
pub async fn patch_product(
    state: web::Data<AppState>,
    user: AuthUser,
    from: ClientAddr,
    path: web::Path<ProductId>,
    body: web::Json<ProductPatch>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let product = state
        .catalog
        .update_product(id, user.id, user.is_admin(), body.into_inner())
        .await?;
    if user.is_admin() {
        state
            .audit
            .record(
                audit::entry(&user, from, "product.change", format!("product:{id}"))
                    .after(&product),
            )
            .await?;
    }
    Ok(HttpResponse::Ok().json(product))
}

/// Deletes a product (its vendor or an admin).
#[utoipa::path(delete, path = "/api/v1/products/{id}", tag = "catalog",
    params(("id" = String, Path, format = Uuid)), security(("bearer" = [])),
    responses((status = 204), (status = 404, body = crate::web::problem::Problem)))]
pub async fn delete_product(
    state: web::Data<AppState>,
    user: AuthUser,
    from: ClientAddr,
    path: web::Path<ProductId>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    state
        .catalog
        .delete_product(id, user.id, user.is_admin())
        .await?;
    if user.is_admin() {
        state
            .audit
            .record(audit::entry(
                &user,
                from,
                "product.delete",
                format!("product:{id}"),
            ))
            .await?;
    }
    Ok(HttpResponse::NoContent().finish())
}

/// Products an admin put on the front page (cached for an hour, dropped on any change).
#[utoipa::path(get, path = "/api/v1/products/featured", tag = "catalog",
    responses((status = 200, body = ProductList)))]
pub async fn featured(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let json = state.catalog.featured_json().await?;
    Ok(HttpResponse::Ok()
        .content_type(ContentType::json())
        .body(json))
}

/// The most sold products of the last 7 days, then the best rated (cached for an hour).
#[utoipa::path(get, path = "/api/v1/products/popular", tag = "catalog",
    responses((status = 200, body = ProductList)))]
pub async fn popular(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let json = state.catalog.popular_json().await?;
    Ok(HttpResponse::Ok()
        .content_type(ContentType::json())
        .body(json))
}

/// The featured list, in order.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeaturedBody {
    #[schema(value_type = Vec<uuid::Uuid>, max_items = 50)]
    pub product_ids: Vec<ProductId>,
}

/// Replaces the featured list (admins; at most 50 products).
#[utoipa::path(put, path = "/api/v1/admin/featured", tag = "admin", request_body = FeaturedBody,
    security(("bearer" = [])),
    responses((status = 204), (status = 403, body = crate::web::problem::Problem),
        (status = 422, body = crate::web::problem::Problem)))]
pub async fn set_featured(
    state: web::Data<AppState>,
    user: AuthUser,
    from: ClientAddr,
    body: web::Json<FeaturedBody>,
) -> Result<HttpResponse, ApiError> {
    user.require_admin()?;
    let ids = body.into_inner().product_ids;
    state.catalog.set_featured(ids.clone()).await?;
    state
        .audit
        .record(
            audit::entry(&user, from, "featured.set", "featured")
                .after(serde_json::json!({"products": ids})),
        )
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
