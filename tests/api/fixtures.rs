//! Catalog fixtures written straight through the store, for tests that need vendors and
//! products without going through their endpoints.

use chrono::Utc;
use hexmarket::domain::catalog::{
    Attributes, OpeningHours, Product, Vendor, VendorStatus, Visibility,
};
use hexmarket::domain::geo::GeoPoint;
use hexmarket::domain::identity::Role;
use hexmarket::domain::ids::{CategoryId, ProductId, UserId, VendorId};
use hexmarket::domain::money::{Currency, Money};
use hexmarket::store::catalog::id_key;

use crate::helpers::TestApp;

/// A user id and an access token for it in `role` (no account row: tokens are enough for
/// every catalog endpoint).
pub fn user_token(app: &TestApp, role: Role) -> (UserId, String) {
    let id = UserId::new();
    let token = app.stepped_up_token(&id.to_string(), role);
    (id, token)
}

/// An active vendor store at `location`, run by a fresh vendor user; returns the store and a
/// token of its owner.
pub async fn seed_vendor(app: &TestApp, name: &str, location: GeoPoint) -> (Vendor, String) {
    let (owner, token) = user_token(app, Role::Vendor);
    (seed_vendor_of(app, owner, name, location).await, token)
}

/// An active vendor store at `location`, run by `owner`.
pub async fn seed_vendor_of(
    app: &TestApp,
    owner: UserId,
    name: &str,
    location: GeoPoint,
) -> Vendor {
    let now = Utc::now();
    let vendor = Vendor {
        id: VendorId::new(),
        owner,
        name: name.to_owned(),
        description: String::new(),
        pickup_address: format!("{name}, 1 Market Street"),
        location,
        cell: location.cell().to_string(),
        opening_hours: OpeningHours::default(),
        delivery_radius_km: 10.0,
        status: VendorStatus::Active,
        created_at: now,
        updated_at: now,
    };
    let repo = &app.catalog.repo;
    repo.vendors
        .insert(&id_key(vendor.id), &vendor)
        .await
        .unwrap()
        .unwrap();
    repo.owners
        .insert(&id_key(owner), &vendor.id)
        .await
        .unwrap()
        .unwrap();
    vendor
}

/// A published product of `vendor` priced `price_minor` EUR cents.
pub async fn seed_product(
    app: &TestApp,
    vendor: &Vendor,
    category: CategoryId,
    title: &str,
    price_minor: i64,
) -> Product {
    let now = Utc::now();
    let product = Product {
        id: ProductId::new(),
        vendor_id: vendor.id,
        title: title.to_owned(),
        description: format!("{title}, fresh from {}", vendor.name),
        category_id: category,
        price: Money::new(price_minor, Currency::EUR),
        attributes: Attributes::new(),
        visibility: Visibility::Published,
        images: Vec::new(),
        created_at: now,
        updated_at: now,
        hidden: false,
    };
    app.catalog
        .repo
        .products
        .insert(&id_key(product.id), &product)
        .await
        .unwrap()
        .unwrap();
    product
}

/// A point in central Berlin, moved by the given offsets in degrees.
pub fn berlin(dlat: f64, dlng: f64) -> GeoPoint {
    GeoPoint::new(52.52 + dlat, 13.405 + dlng).unwrap()
}

/// Puts `units` of `product` in stock.
pub async fn stock_product(app: &TestApp, product: &Product, units: u32) {
    app.catalog
        .inventory
        .adjust(
            product.id,
            hexmarket::domain::inventory::StockChange::Set(units),
            "delivery".into(),
            UserId::new(),
        )
        .await
        .unwrap();
}

/// Puts one `product` in the customer's cart and checks out with the simulated provider,
/// delivering to `dropoff`; returns the checkout (its `orders` and `payment`), unpaid.
pub async fn checkout_one(
    app: &TestApp,
    customer: &str,
    product: &Product,
    dropoff: GeoPoint,
) -> serde_json::Value {
    let added = app
        .client
        .post(app.url("/api/v1/cart/items"))
        .bearer_auth(customer)
        .json(&serde_json::json!({"product_id": product.id, "quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 200);
    let created = app
        .client
        .post(app.url("/api/v1/checkout"))
        .bearer_auth(customer)
        .header("Idempotency-Key", uuid::Uuid::now_v7().to_string())
        .json(&serde_json::json!({
            "delivery_address": {"text": "Drop-off 7, Berlin", "lat": dropoff.lat, "lng": dropoff.lng},
            "payment_method": "simulated",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    created.json().await.unwrap()
}

/// Pays a checkout with the simulated provider.
pub async fn pay(app: &TestApp, customer: &str, checkout: &serde_json::Value) {
    let payment = checkout["payment"]["id"].as_str().unwrap();
    let paid = app
        .client
        .post(app.url(&format!("/api/v1/payments/{payment}/simulate")))
        .bearer_auth(customer)
        .json(&serde_json::json!({"outcome": "succeed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 200);
}
