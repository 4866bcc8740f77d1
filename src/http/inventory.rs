//! Stock of a product: read, set or adjust, and the adjustment history. Only the product's
//! vendor and admins see or change it; to anyone else the product's stock does not exist.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::catalog::inventory::{InventoryFailure, InventoryView, ReserveFailure, ShortItem};
use crate::domain::ids::ProductId;
use crate::domain::inventory::{Adjustment, InventoryError, MAX_STOCK, StockChange, check_reason};
use crate::error_code::ErrorCode;
use crate::web::extract::AuthUser;
use crate::web::problem::FieldError;
use crate::web::{ApiError, AppState};

/// Adjustments on a page of the history unless the client asks for another number.
pub const DEFAULT_HISTORY_PAGE: usize = 20;
/// Most adjustments on one page of the history.
pub const MAX_HISTORY_PAGE: usize = 100;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/products/{id}/inventory")
            .route(web::get().to(get_inventory))
            .route(web::put().to(put_inventory)),
    )
    .route(
        "/products/{id}/inventory/history",
        web::get().to(inventory_history),
    );
}

/// Sets (`stock`) or changes (`delta`) the stock: exactly one of the two, and a reason.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"delta": -2, "reason": "two broken in transport"}))]
pub struct StockUpdate {
    /// The new stock, 0 to 1,000,000.
    pub stock: Option<i64>,
    /// Units to add (negative: remove).
    pub delta: Option<i64>,
    /// Why, 1 to 200 characters; kept in the history.
    #[schema(
        max_length = 200,
        pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
    )]
    pub reason: String,
}

impl StockUpdate {
    /// The change and its reason, or every field that is wrong.
    fn parse(self) -> Result<(StockChange, String), ApiError> {
        let mut errors = Vec::new();
        let mut field = |field: &str, message: &str| {
            errors.push(FieldError {
                field: field.to_owned(),
                message: message.to_owned(),
            });
        };
        let change = match (self.stock, self.delta) {
            (Some(stock), None) => match u32::try_from(stock) {
                Ok(n) if n <= MAX_STOCK => Some(StockChange::Set(n)),
                _ => {
                    field("stock", "must be between 0 and 1000000");
                    None
                }
            },
            (None, Some(delta)) => Some(StockChange::Delta(delta)),
            (Some(_), Some(_)) => {
                field("stock", "give either stock or delta, not both");
                None
            }
            (None, None) => {
                field("stock", "give either stock or delta");
                None
            }
        };
        let reason = check_reason(&self.reason)
            .map_err(|message| field("reason", &message))
            .ok();
        match (change, reason) {
            (Some(change), Some(reason)) => Ok((change, reason)),
            _ => Err(ApiError::validation(errors)),
        }
    }
}

/// The stock after a change, and the change as recorded.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StockUpdated {
    pub inventory: InventoryView,
    pub adjustment: Adjustment,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[param(min_length = 1)]
    pub cursor: Option<String>,
}

/// A page of adjustments, oldest first.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HistoryPage {
    pub adjustments: Vec<Adjustment>,
    /// Pass as `cursor` for the next page; absent on the last one.
    pub next_cursor: Option<String>,
}

impl From<InventoryFailure> for ApiError {
    fn from(e: InventoryFailure) -> Self {
        match e {
            InventoryFailure::Rejected(e) => e.into(),
            InventoryFailure::Store(e) => e.into(),
        }
    }
}

impl From<InventoryError> for ApiError {
    fn from(e: InventoryError) -> Self {
        let detail = e.to_string();
        match e {
            InventoryError::Short { .. } => {
                ApiError::conflict(ErrorCode::InsufficientStock, detail)
            }
            InventoryError::BelowHeld { .. } => {
                ApiError::conflict(ErrorCode::StockBelowReserved, detail)
            }
            InventoryError::OutOfRange => {
                ApiError::field_rule(ErrorCode::StockOutOfRange, "stock", detail)
            }
            InventoryError::NoHold => ApiError::conflict(ErrorCode::NoReservation, detail),
            InventoryError::TooManyHolds => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::TooManyCheckouts,
                detail,
            )
            .with_retry_after(5),
        }
    }
}

impl From<ReserveFailure> for ApiError {
    fn from(e: ReserveFailure) -> Self {
        match e {
            ReserveFailure::Short(items) => {
                let fields = items
                    .iter()
                    .map(|i| crate::web::problem::FieldError {
                        field: format!("items.{}", i.product_id),
                        message: format!("requested {}, available {}", i.requested, i.available),
                    })
                    .collect();
                ApiError::conflict(ErrorCode::InsufficientStock, short_detail(&items))
                    .with_fields(fields)
            }
            ReserveFailure::Busy(product) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::TooManyCheckouts,
                format!("too many checkouts in progress for product {product}; try again shortly"),
            )
            .with_retry_after(5),
            ReserveFailure::Store(e) => e.into(),
        }
    }
}

/// Names every short item, e.g. `not enough stock: 0192… (requested 3, available 1)`.
fn short_detail(items: &[ShortItem]) -> String {
    let listed: Vec<String> = items
        .iter()
        .map(|i| {
            format!(
                "{} (requested {}, available {})",
                i.product_id, i.requested, i.available
            )
        })
        .collect();
    format!("not enough stock: {}", listed.join("; "))
}

/// Passes for the product's vendor and admins; anyone else gets 404, as does a product that
/// does not exist.
async fn authorize(state: &AppState, caller: &AuthUser, id: ProductId) -> Result<(), ApiError> {
    state
        .catalog
        .product_for_owner(id, caller.id, caller.is_admin())
        .await?;
    Ok(())
}

/// Stock of a product: on hand, held by checkouts, available, sold, latest adjustments.
#[utoipa::path(get, path = "/api/v1/products/{id}/inventory", tag = "inventory",
    params(("id" = String, Path, format = Uuid, description = "product id")), security(("bearer" = [])),
    responses((status = 200, body = InventoryView), (status = 401, body = crate::web::problem::Problem),
        (status = 404, body = crate::web::problem::Problem)))]
#[tracing::instrument(skip_all, fields(product_id = %path, user_id = %caller.id))]
pub async fn get_inventory(
    state: web::Data<AppState>,
    caller: AuthUser,
    path: web::Path<ProductId>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    authorize(&state, &caller, id).await?;
    Ok(HttpResponse::Ok().json(state.catalog.inventory.get(id).await?))
}

/// Sets or changes the stock. Stock can never go below the units checkouts hold.
#[utoipa::path(put, path = "/api/v1/products/{id}/inventory", tag = "inventory",
    request_body = StockUpdate, params(("id" = String, Path, format = Uuid, description = "product id")),
    security(("bearer" = [])),
    responses((status = 200, body = StockUpdated), (status = 400, body = crate::web::problem::Problem),
        (status = 401, body = crate::web::problem::Problem), (status = 404, body = crate::web::problem::Problem),
        (status = 409, body = crate::web::problem::Problem, description = "`stock_below_reserved`"),
        (status = 422, body = crate::web::problem::Problem)))]
#[tracing::instrument(skip_all, fields(product_id = %path, user_id = %caller.id))]
pub async fn put_inventory(
    state: web::Data<AppState>,
    caller: AuthUser,
    path: web::Path<ProductId>,
    body: web::Json<StockUpdate>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    authorize(&state, &caller, id).await?;
    let (change, reason) = body.into_inner().parse()?;
    let field = match change {
        StockChange::Set(_) => "stock",
        StockChange::Delta(_) => "delta",
    };
    let (adjustment, inventory) = state
        .catalog
        .inventory
        .adjust(id, change, reason, caller.id)
        .await
        .map_err(|e| match e {
            InventoryFailure::Rejected(InventoryError::OutOfRange) => ApiError::field_rule(
                ErrorCode::StockOutOfRange,
                field,
                format!("the stock would leave 0 to {MAX_STOCK}"),
            ),
            other => other.into(),
        })?;
    tracing::info!(adjustment_id = %adjustment.id, stock = inventory.stock, "stock adjusted");
    Ok(HttpResponse::Ok().json(StockUpdated {
        inventory,
        adjustment,
    }))
}

/// Every adjustment of the stock, oldest first, a page at a time.
#[utoipa::path(get, path = "/api/v1/products/{id}/inventory/history", tag = "inventory",
    params(("id" = String, Path, format = Uuid, description = "product id"), HistoryQuery),
    security(("bearer" = [])),
    responses((status = 200, body = HistoryPage), (status = 400, body = crate::web::problem::Problem),
        (status = 401, body = crate::web::problem::Problem), (status = 404, body = crate::web::problem::Problem),
        (status = 422, body = crate::web::problem::Problem)))]
#[tracing::instrument(skip_all, fields(product_id = %path, user_id = %caller.id))]
pub async fn inventory_history(
    state: web::Data<AppState>,
    caller: AuthUser,
    path: web::Path<ProductId>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    authorize(&state, &caller, id).await?;
    let HistoryQuery { limit, cursor } = query.into_inner();
    let limit = limit.unwrap_or(DEFAULT_HISTORY_PAGE);
    if !(1..=MAX_HISTORY_PAGE).contains(&limit) {
        return Err(ApiError::invalid_field(
            "limit",
            format!("must be between 1 and {MAX_HISTORY_PAGE}"),
        ));
    }
    // Cursors are adjustment ids; anything else cannot come from a previous page.
    if let Some(cursor) = &cursor
        && Uuid::parse_str(cursor).is_err()
    {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidCursor,
            "the cursor is not valid",
        ));
    }
    let (adjustments, next_cursor) = state.catalog.inventory.history(id, cursor, limit).await?;
    Ok(HttpResponse::Ok().json(HistoryPage {
        adjustments,
        next_cursor,
    }))
}

#[cfg(test)]
mod tests {
    use utoipa::OpenApi;

    use super::*;

    #[derive(OpenApi)]
    #[openapi(paths(get_inventory, put_inventory, inventory_history))]
    struct InventoryDoc;

    #[test]
    fn the_inventory_paths_document_their_bodies() {
        let json = InventoryDoc::openapi().to_json().unwrap_or_default();
        for needle in [
            "/api/v1/products/{id}/inventory/history",
            "StockUpdate",
            "StockUpdated",
            "InventoryView",
            "HistoryPage",
            "Adjustment",
        ] {
            assert!(json.contains(needle), "{needle} missing from the document");
        }
    }
}
