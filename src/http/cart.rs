//! Carts over HTTP: one per customer, and guest carts behind a signed token.
//!
//! A signed-in customer (`Authorization: Bearer …`) always works on their own cart. A guest's
//! cart is identified by a signed cart token (`X-Cart-Token`), issued with the first item
//! added: without a valid token nobody can read or change a guest cart, and a token names
//! exactly one cart. `POST /cart/merge` moves a guest cart into the customer's after login.
//! Every change is persisted before the response. Prices, titles and availability are not
//! stored in the cart: they are read from the catalog every time the cart is shown.

use std::collections::BTreeMap;

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};

use crate::actors::cart::{ChangeCart, ChangeError, GetCart};
use crate::catalog::CatalogError;
use crate::catalog::products::ProductView;
use crate::domain::cart::{Cart, CartCommand, CartError, Quantity};
use crate::domain::identity::Role;
use crate::domain::ids::{CartId, ProductId, UserId, VendorId};
use crate::domain::money::{Currency, Money};
use crate::error_code::ErrorCode;
use crate::web::extract::{AuthUser, MaybeUser};
use crate::web::{ApiError, AppState};

pub const CART_TOKEN: HeaderName = HeaderName::from_static("x-cart-token");

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/cart")
            .route(web::get().to(get_cart))
            .route(web::delete().to(clear_cart)),
    )
    .route("/cart/items", web::post().to(add_item))
    .route("/cart/merge", web::post().to(merge_cart))
    .service(
        web::resource("/cart/items/{product_id}")
            .route(web::patch().to(set_quantity))
            .route(web::delete().to(remove_item)),
    );
}

/// One line of a cart, with what the catalog says about it now.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LineView {
    #[schema(value_type = String, format = Uuid)]
    pub product_id: ProductId,
    pub quantity: u32,
    /// Absent when the product is no longer listed.
    pub title: Option<String>,
    #[schema(value_type = Option<String>, format = Uuid)]
    pub vendor_id: Option<VendorId>,
    pub unit_price: Option<Money>,
    pub line_total: Option<Money>,
    /// Units that can be bought now.
    pub available: u32,
    /// Listed, and enough units available for this quantity.
    pub purchasable: bool,
}

/// What one store's share of the cart costs.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VendorSubtotal {
    #[schema(value_type = String, format = Uuid)]
    pub vendor_id: VendorId,
    pub vendor_name: String,
    pub subtotal: Money,
    pub item_count: u32,
}

/// A cart as the client sees it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CartView {
    /// The token to send as `X-Cart-Token` (guest carts only; absent until the cart exists).
    pub cart_token: Option<String>,
    pub lines: Vec<LineView>,
    /// Subtotals per store, in the order the stores first appear in the cart.
    pub vendors: Vec<VendorSubtotal>,
    /// Total per currency of the purchasable lines.
    pub totals: Vec<Money>,
    /// Units over all lines.
    pub item_count: u32,
    /// What the coupon asked for with `?coupon_code=` takes off (one store's goods), as the
    /// checkout would apply it; the delivery fee comes at checkout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coupon: Option<crate::ledger::coupons::Quote>,
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

/// Which cart a request works on.
struct Target {
    id: CartId,
    /// The guest token to hand back (none for a customer's own cart).
    token: Option<String>,
}

/// A customer's own cart has the customer's id.
fn customer_cart(user: &AuthUser) -> Result<CartId, ApiError> {
    user.require_role(&[Role::Customer])?;
    Ok(CartId::from(user.id.as_uuid()))
}

/// The guest cart named by the request's token, or `None` when it sent none.
fn cart_from_token(
    state: &AppState,
    req: &HttpRequest,
) -> Result<Option<(CartId, String)>, ApiError> {
    let Some(value) = req.headers().get(&CART_TOKEN) else {
        return Ok(None);
    };
    let invalid =
        || ApiError::unauthorized(ErrorCode::InvalidCartToken, "the cart token is not valid");
    let token = value.to_str().map_err(|_| invalid())?;
    let id = state
        .cart_tokens
        .verify(token)
        .and_then(|payload| payload.parse::<CartId>().ok())
        .ok_or_else(invalid)?;
    Ok(Some((id, token.to_owned())))
}

/// The caller's cart: their own when signed in, else the guest cart of the token (if any).
fn target(
    state: &AppState,
    req: &HttpRequest,
    user: Option<&AuthUser>,
) -> Result<Option<Target>, ApiError> {
    if let Some(user) = user {
        return Ok(Some(Target {
            id: customer_cart(user)?,
            token: None,
        }));
    }
    Ok(cart_from_token(state, req)?.map(|(id, token)| Target {
        id,
        token: Some(token),
    }))
}

fn require_target(
    state: &AppState,
    req: &HttpRequest,
    user: Option<&AuthUser>,
) -> Result<Target, ApiError> {
    target(state, req, user)?.ok_or_else(|| {
        ApiError::unauthorized(
            ErrorCode::CartTokenRequired,
            "sign in, or send the cart's X-Cart-Token",
        )
    })
}

/// Reads every line's product and renders the cart.
async fn render(state: &AppState, cart: Cart, token: Option<String>) -> HttpResponse {
    match render_quoted(state, cart, token, None).await {
        Ok(response) => response,
        Err(e) => actix_web::ResponseError::error_response(&e),
    }
}

/// Renders the cart, with what `coupon` (a code, for a customer) takes off it.
async fn render_quoted(
    state: &AppState,
    cart: Cart,
    token: Option<String>,
    coupon: Option<(String, UserId)>,
) -> Result<HttpResponse, ApiError> {
    let views: Vec<Option<ProductView>> =
        join_all(cart.lines.iter().map(|line| async move {
            state.catalog.product_view(line.product_id, None).await.ok()
        }))
        .await;
    let mut lines = Vec::with_capacity(cart.lines.len());
    let mut vendors: Vec<VendorSubtotal> = Vec::new();
    let mut totals: BTreeMap<Currency, i64> = BTreeMap::new();
    for (line, view) in cart.lines.iter().zip(views) {
        let quantity = line.quantity.get();
        let Some(view) = view else {
            lines.push(LineView {
                product_id: line.product_id,
                quantity,
                title: None,
                vendor_id: None,
                unit_price: None,
                line_total: None,
                available: 0,
                purchasable: false,
            });
            continue;
        };
        let line_total = view.product.price.times(quantity);
        let purchasable = view.available >= quantity && line_total.is_some();
        if let (true, Some(total)) = (purchasable, line_total) {
            *totals.entry(total.currency).or_default() += total.amount_minor;
            match vendors
                .iter_mut()
                .find(|v| v.vendor_id == view.vendor.id && v.subtotal.currency == total.currency)
            {
                Some(v) => {
                    v.subtotal.amount_minor += total.amount_minor;
                    v.item_count += quantity;
                }
                None => vendors.push(VendorSubtotal {
                    vendor_id: view.vendor.id,
                    vendor_name: view.vendor.name.clone(),
                    subtotal: total,
                    item_count: quantity,
                }),
            }
        }
        lines.push(LineView {
            product_id: line.product_id,
            quantity,
            title: Some(view.product.title),
            vendor_id: Some(view.vendor.id),
            unit_price: Some(view.product.price),
            line_total,
            available: view.available,
            purchasable,
        });
    }
    let item_count = cart.lines.iter().map(|l| l.quantity.get()).sum();
    let coupon = match coupon {
        Some((code, customer)) => {
            let subtotals: Vec<_> = vendors.iter().map(|v| (v.vendor_id, v.subtotal)).collect();
            let now = state.identity.clock.now();
            Some(
                state
                    .ledger
                    .quote(&code, customer, &subtotals, now, true)
                    .await?,
            )
        }
        None => None,
    };
    let mut response = HttpResponse::Ok();
    if let Some(value) = token.as_deref().and_then(|t| HeaderValue::from_str(t).ok()) {
        response.insert_header((CART_TOKEN, value));
    }
    Ok(response.json(CartView {
        cart_token: token,
        lines,
        vendors,
        totals: totals
            .into_iter()
            .map(|(currency, amount)| Money::new(amount, currency))
            .collect(),
        item_count,
        coupon,
    }))
}

async fn change(state: &AppState, id: CartId, command: CartCommand) -> Result<Cart, ApiError> {
    state
        .carts
        .send(id, ChangeCart(command))
        .await?
        .map_err(|e| match e {
            ChangeError::Invalid(CartError::NotInCart(_)) => ApiError::not_found(e.to_string()),
            ChangeError::Invalid(CartError::TooManyLines) => {
                ApiError::conflict(ErrorCode::CartFull, e.to_string())
            }
            ChangeError::Invalid(CartError::QuantityOutOfRange(_)) => {
                ApiError::invalid_field("quantity", e.to_string())
            }
            ChangeError::Store(store) => store.into(),
            ChangeError::Contended => ApiError::conflict(ErrorCode::CartContended, e.to_string()),
        })
}

/// A coupon to price the cart with.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CartQuery {
    /// Shows what this coupon takes off (`coupon` in the answer), or why it does not apply
    /// (`coupon_unknown`, `coupon_expired`, `coupon_exhausted`, `coupon_min_spend`,
    /// `coupon_not_applicable`).
    #[param(pattern = "^[A-Za-z0-9_-]{3,32}$")]
    pub coupon_code: Option<String>,
}

/// The caller's cart (empty for a guest without a token), priced with a coupon when asked.
#[utoipa::path(get, path = "/api/v1/cart", tag = "cart",
    params(("X-Cart-Token" = Option<String>, Header, description = "token of a guest cart"), CartQuery),
    responses((status = 200, body = CartView), (status = 401, body = crate::web::problem::Problem),
        (status = 409, body = crate::web::problem::Problem), (status = 422, body = crate::web::problem::Problem)))]
pub async fn get_cart(
    state: web::Data<AppState>,
    req: HttpRequest,
    MaybeUser(user): MaybeUser,
    query: web::Query<CartQuery>,
) -> Result<HttpResponse, ApiError> {
    let coupon = match query.into_inner().coupon_code {
        Some(raw) => {
            let code = crate::domain::coupon::normalise_code(&raw).ok_or_else(|| {
                ApiError::invalid_field("coupon_code", "3 to 32 letters, digits, - or _")
            })?;
            // A guest is nobody's customer yet: only the coupon's own limits count.
            let customer = user
                .as_ref()
                .map_or_else(|| UserId::from(uuid::Uuid::nil()), |u| u.id);
            Some((code, customer))
        }
        None => None,
    };
    match target(&state, &req, user.as_ref())? {
        Some(t) => {
            let cart = state.carts.send(t.id, GetCart).await?;
            render_quoted(&state, cart, t.token, coupon).await
        }
        None => render_quoted(&state, Cart::default(), None, coupon).await,
    }
}

/// Adds a listed product; for a guest without a token, creates the cart and its token.
#[utoipa::path(post, path = "/api/v1/cart/items", tag = "cart", request_body = AddItem,
    params(("X-Cart-Token" = Option<String>, Header, description = "token of a guest cart")),
    responses((status = 200, body = CartView), (status = 400, body = crate::web::problem::Problem),
        (status = 401, body = crate::web::problem::Problem), (status = 409, body = crate::web::problem::Problem),
        (status = 422, body = crate::web::problem::Problem)))]
pub async fn add_item(
    state: web::Data<AppState>,
    req: HttpRequest,
    MaybeUser(user): MaybeUser,
    body: web::Json<AddItem>,
) -> Result<HttpResponse, ApiError> {
    let AddItem {
        product_id,
        quantity,
    } = body.into_inner();
    match state.catalog.product_view(product_id, None).await {
        Ok(_) => {}
        Err(CatalogError::NotFound) => {
            return Err(ApiError::field_rule(
                ErrorCode::ProductUnavailable,
                "product_id",
                "no such product is listed",
            ));
        }
        Err(e) => return Err(e.into()),
    }
    let t = match target(&state, &req, user.as_ref())? {
        Some(t) => t,
        None => {
            let id = CartId::new();
            Target {
                id,
                token: Some(state.cart_tokens.sign(&id.as_uuid().simple().to_string())),
            }
        }
    };
    let cart = change(
        &state,
        t.id,
        CartCommand::Add {
            product_id,
            quantity,
        },
    )
    .await?;
    Ok(render(&state, cart, t.token).await)
}

/// Sets the quantity of a product in the cart.
#[utoipa::path(patch, path = "/api/v1/cart/items/{product_id}", tag = "cart", request_body = SetQuantity,
    params(("product_id" = String, Path, format = Uuid), ("X-Cart-Token" = Option<String>, Header)),
    responses((status = 200, body = CartView), (status = 401, body = crate::web::problem::Problem),
        (status = 404, body = crate::web::problem::Problem)))]
pub async fn set_quantity(
    state: web::Data<AppState>,
    req: HttpRequest,
    MaybeUser(user): MaybeUser,
    path: web::Path<ProductId>,
    body: web::Json<SetQuantity>,
) -> Result<HttpResponse, ApiError> {
    let t = require_target(&state, &req, user.as_ref())?;
    let command = CartCommand::Set {
        product_id: path.into_inner(),
        quantity: body.quantity,
    };
    let cart = change(&state, t.id, command).await?;
    Ok(render(&state, cart, t.token).await)
}

/// Removes a product from the cart.
#[utoipa::path(delete, path = "/api/v1/cart/items/{product_id}", tag = "cart",
    params(("product_id" = String, Path, format = Uuid), ("X-Cart-Token" = Option<String>, Header)),
    responses((status = 200, body = CartView), (status = 401, body = crate::web::problem::Problem),
        (status = 404, body = crate::web::problem::Problem)))]
pub async fn remove_item(
    state: web::Data<AppState>,
    req: HttpRequest,
    MaybeUser(user): MaybeUser,
    path: web::Path<ProductId>,
) -> Result<HttpResponse, ApiError> {
    let t = require_target(&state, &req, user.as_ref())?;
    let command = CartCommand::Remove {
        product_id: path.into_inner(),
    };
    let cart = change(&state, t.id, command).await?;
    Ok(render(&state, cart, t.token).await)
}

/// Empties the cart.
#[utoipa::path(delete, path = "/api/v1/cart", tag = "cart",
    params(("X-Cart-Token" = Option<String>, Header)),
    responses((status = 200, body = CartView), (status = 401, body = crate::web::problem::Problem)))]
pub async fn clear_cart(
    state: web::Data<AppState>,
    req: HttpRequest,
    MaybeUser(user): MaybeUser,
) -> Result<HttpResponse, ApiError> {
    let t = require_target(&state, &req, user.as_ref())?;
    let cart = change(&state, t.id, CartCommand::Clear).await?;
    Ok(render(&state, cart, t.token).await)
}

/// Moves the guest cart of `X-Cart-Token` into the signed-in customer's cart (quantities add
/// up, to at most 99 each) and empties the guest cart.
#[utoipa::path(post, path = "/api/v1/cart/merge", tag = "cart",
    params(("X-Cart-Token" = String, Header, description = "token of the guest cart to merge")),
    security(("bearer" = [])),
    responses((status = 200, body = CartView), (status = 401, body = crate::web::problem::Problem),
        (status = 403, body = crate::web::problem::Problem)))]
pub async fn merge_cart(
    state: web::Data<AppState>,
    req: HttpRequest,
    user: AuthUser,
) -> Result<HttpResponse, ApiError> {
    let mine = customer_cart(&user)?;
    let (guest, _) = cart_from_token(&state, &req)?.ok_or_else(|| {
        ApiError::unauthorized(
            ErrorCode::CartTokenRequired,
            "send the guest cart's X-Cart-Token",
        )
    })?;
    if guest == mine {
        let cart = state.carts.send(mine, GetCart).await?;
        return Ok(render(&state, cart, None).await);
    }
    let lines = state.carts.send(guest, GetCart).await?.lines;
    let cart = change(&state, mine, CartCommand::Merge { lines }).await?;
    // The guest cart is emptied only after the merge is durable: a crash in between leaves
    // the lines in both carts, never in neither.
    change(&state, guest, CartCommand::Clear).await?;
    Ok(render(&state, cart, None).await)
}
