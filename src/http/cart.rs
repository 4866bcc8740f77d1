//! Guest carts over HTTP.
//!
//! A guest's cart is identified by a signed cart token (`X-Cart-Token`), issued with the first
//! item added. Without a valid token nobody can read or change a cart, and a token names
//! exactly one cart. Every change is persisted before the response.

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState};
use crate::actors::cart::{ChangeCart, ChangeError, GetCart};
use crate::domain::cart::{Cart, CartCommand, CartError, CartLine, Quantity};
use crate::domain::ids::{CartId, ProductId};

pub const CART_TOKEN: HeaderName = HeaderName::from_static("x-cart-token");

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/cart")
            .route(web::get().to(get_cart))
            .route(web::delete().to(clear_cart)),
    )
    .route("/cart/items", web::post().to(add_item))
    .service(
        web::resource("/cart/items/{product_id}")
            .route(web::patch().to(set_quantity))
            .route(web::delete().to(remove_item)),
    );
}

/// A cart as the client sees it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CartView {
    /// The token to send as `X-Cart-Token` (absent until the cart exists).
    pub cart_token: Option<String>,
    pub lines: Vec<CartLine>,
    /// Units over all lines.
    pub item_count: u32,
}

/// Adds units of a product.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddItem {
    #[schema(value_type = String, format = Uuid)]
    pub product_id: ProductId,
    pub quantity: Quantity,
}

/// Sets a product's quantity.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetQuantity {
    pub quantity: Quantity,
}

/// The cart named by the request's token, or `None` when it sent none.
fn cart_from_token(
    state: &AppState,
    req: &HttpRequest,
) -> Result<Option<(CartId, String)>, ApiError> {
    let Some(value) = req.headers().get(&CART_TOKEN) else {
        return Ok(None);
    };
    let invalid = || ApiError::unauthorized("invalid_cart_token", "the cart token is not valid");
    let token = value.to_str().map_err(|_| invalid())?;
    let id = state
        .cart_tokens
        .verify(token)
        .and_then(|payload| payload.parse::<CartId>().ok())
        .ok_or_else(invalid)?;
    Ok(Some((id, token.to_owned())))
}

fn view(cart: Cart, token: Option<String>) -> HttpResponse {
    let item_count = cart.lines.iter().map(|l| l.quantity.get()).sum();
    let mut response = HttpResponse::Ok();
    if let Some(value) = token.as_deref().and_then(|t| HeaderValue::from_str(t).ok()) {
        response.insert_header((CART_TOKEN, value));
    }
    response.json(CartView {
        cart_token: token,
        lines: cart.lines,
        item_count,
    })
}

async fn change(state: &AppState, id: CartId, command: CartCommand) -> Result<Cart, ApiError> {
    state
        .carts
        .send(id, ChangeCart(command))
        .await?
        .map_err(|e| match e {
            ChangeError::Invalid(CartError::NotInCart(_)) => ApiError::not_found(e.to_string()),
            ChangeError::Invalid(CartError::TooManyLines) => {
                ApiError::conflict("cart_full", e.to_string())
            }
            ChangeError::Invalid(CartError::QuantityOutOfRange(_)) => {
                ApiError::invalid_field("quantity", e.to_string())
            }
            ChangeError::Store(store) => store.into(),
            ChangeError::Contended => ApiError::conflict("cart_contended", e.to_string()),
        })
}

/// The cart named by `X-Cart-Token`, empty when no token is sent.
#[utoipa::path(get, path = "/api/v1/cart", tag = "cart",
    params(("X-Cart-Token" = Option<String>, Header, description = "token of a guest cart")),
    responses((status = 200, body = CartView), (status = 401, body = super::problem::Problem)))]
pub async fn get_cart(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    match cart_from_token(&state, &req)? {
        Some((id, token)) => Ok(view(state.carts.send(id, GetCart).await?, Some(token))),
        None => Ok(view(Cart::default(), None)),
    }
}

/// Adds a product; creates the cart (and its token) when the request has none.
#[utoipa::path(post, path = "/api/v1/cart/items", tag = "cart", request_body = AddItem,
    params(("X-Cart-Token" = Option<String>, Header, description = "token of a guest cart")),
    responses((status = 200, body = CartView), (status = 400, body = super::problem::Problem),
        (status = 401, body = super::problem::Problem), (status = 409, body = super::problem::Problem),
        (status = 422, body = super::problem::Problem)))]
pub async fn add_item(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<AddItem>,
) -> Result<HttpResponse, ApiError> {
    let (id, token) = match cart_from_token(&state, &req)? {
        Some(existing) => existing,
        None => {
            let id = CartId::new();
            (
                id,
                state.cart_tokens.sign(&id.as_uuid().simple().to_string()),
            )
        }
    };
    let AddItem {
        product_id,
        quantity,
    } = body.into_inner();
    let cart = change(
        &state,
        id,
        CartCommand::Add {
            product_id,
            quantity,
        },
    )
    .await?;
    Ok(view(cart, Some(token)))
}

/// Sets the quantity of a product in the cart.
#[utoipa::path(patch, path = "/api/v1/cart/items/{product_id}", tag = "cart", request_body = SetQuantity,
    params(("product_id" = String, Path), ("X-Cart-Token" = String, Header)),
    responses((status = 200, body = CartView), (status = 401, body = super::problem::Problem),
        (status = 404, body = super::problem::Problem)))]
pub async fn set_quantity(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<ProductId>,
    body: web::Json<SetQuantity>,
) -> Result<HttpResponse, ApiError> {
    let (id, token) = require_cart(&state, &req)?;
    let command = CartCommand::Set {
        product_id: path.into_inner(),
        quantity: body.quantity,
    };
    Ok(view(change(&state, id, command).await?, Some(token)))
}

/// Removes a product from the cart.
#[utoipa::path(delete, path = "/api/v1/cart/items/{product_id}", tag = "cart",
    params(("product_id" = String, Path), ("X-Cart-Token" = String, Header)),
    responses((status = 200, body = CartView), (status = 401, body = super::problem::Problem),
        (status = 404, body = super::problem::Problem)))]
pub async fn remove_item(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<ProductId>,
) -> Result<HttpResponse, ApiError> {
    let (id, token) = require_cart(&state, &req)?;
    let command = CartCommand::Remove {
        product_id: path.into_inner(),
    };
    Ok(view(change(&state, id, command).await?, Some(token)))
}

/// Empties the cart.
#[utoipa::path(delete, path = "/api/v1/cart", tag = "cart",
    params(("X-Cart-Token" = String, Header)),
    responses((status = 200, body = CartView), (status = 401, body = super::problem::Problem)))]
pub async fn clear_cart(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let (id, token) = require_cart(&state, &req)?;
    Ok(view(
        change(&state, id, CartCommand::Clear).await?,
        Some(token),
    ))
}

fn require_cart(state: &AppState, req: &HttpRequest) -> Result<(CartId, String), ApiError> {
    cart_from_token(state, req)?.ok_or_else(|| {
        ApiError::unauthorized("cart_token_required", "send the cart's X-Cart-Token")
    })
}
