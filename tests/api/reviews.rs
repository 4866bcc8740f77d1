//! Reviews, eligibility, ratings and moderation.

use chrono::Utc;
use hexmarket::domain::catalog::{Product, Vendor};
use hexmarket::domain::identity::Role;
use hexmarket::domain::ids::{CategoryId, CheckoutId, OrderId, ProductId, ReviewId, UserId};
use hexmarket::domain::money::{Currency, Money};
use hexmarket::domain::order::{Order, OrderLine, OrderStatus};
use hexmarket::domain::review::{RatingTotals, Review, ReviewTarget};
use hexmarket::store::Table;
use hexmarket::store::orders::OrderRepo;
use hexmarket::store::reviews::{RatingRow, ReviewClaim, claim_key, rating_key, review_key};
use hexmarket::store::typed::Rows;
use serde_json::{Value, json};

use crate::fixtures::{berlin, seed_product, seed_vendor, user_token};
use crate::helpers::{TestApp, assert_problem, post_json, spawn_app};

/// A vendor with two products, and a customer whose delivered order holds the first.
struct Shop {
    app: TestApp,
    vendor: Vendor,
    vendor_token: String,
    pizza: Product,
    salad: Product,
    customer: UserId,
    token: String,
    order: Order,
}

async fn shop() -> Shop {
    let app = spawn_app().await;
    let (vendor, vendor_token) = seed_vendor(&app, "Pizzeria Uno", berlin(0.0, 0.0)).await;
    let category = CategoryId::new();
    let pizza = seed_product(&app, &vendor, category, "Margherita", 950).await;
    let salad = seed_product(&app, &vendor, category, "Caprese", 700).await;
    let (customer, token) = user_token(&app, Role::Customer);
    let order = seed_order(&app, customer, &vendor, &[&pizza], OrderStatus::Delivered).await;
    Shop {
        app,
        vendor,
        vendor_token,
        pizza,
        salad,
        customer,
        token,
        order,
    }
}

async fn seed_order(
    app: &TestApp,
    customer: UserId,
    vendor: &Vendor,
    products: &[&Product],
    status: OrderStatus,
) -> Order {
    let now = Utc::now();
    let order = Order {
        id: OrderId::new(),
        checkout_id: CheckoutId::new(),
        customer_id: customer,
        vendor_id: vendor.id,
        status,
        lines: products
            .iter()
            .map(|p| OrderLine {
                product_id: p.id,
                title: p.title.clone(),
                quantity: 1,
                unit_price: Money::new(p.price.amount_minor, Currency::EUR),
            })
            .collect(),
        created_at: now,
        updated_at: now,
    };
    orders(app).insert(&order).await.unwrap().unwrap();
    order
}

fn orders(app: &TestApp) -> OrderRepo {
    OrderRepo::new(app.catalog.repo.products.store().clone())
}

/// A fresh customer with a delivered order of `products`.
async fn customer_with_order(
    app: &TestApp,
    vendor: &Vendor,
    products: &[&Product],
) -> (String, Order) {
    let (customer, token) = user_token(app, Role::Customer);
    let order = seed_order(app, customer, vendor, products, OrderStatus::Delivered).await;
    (token, order)
}

async fn review_product(
    app: &TestApp,
    token: &str,
    product: ProductId,
    order: OrderId,
    rating: u32,
    text: &str,
) -> reqwest::Response {
    post_json(
        app,
        token,
        &format!("/api/v1/products/{product}/reviews"),
        json!({"order_id": order, "rating": rating, "text": text}),
    )
    .await
}

async fn list(app: &TestApp, path: &str, token: Option<&str>) -> Value {
    let mut request = app.client.get(app.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn moderate(app: &TestApp, token: &str, path: &str, hidden: bool) -> reqwest::Response {
    app.client
        .patch(app.url(path))
        .bearer_auth(token)
        .json(&json!({"hidden": hidden}))
        .send()
        .await
        .unwrap()
}

/// A real administrator, logged in with a code from their authenticator.
async fn admin(app: &TestApp) -> String {
    app.admin_token().await
}

#[actix_web::test]
async fn customers_review_delivered_products_and_the_rating_follows() {
    // Arrange
    let s = shop().await;
    let (other, other_order) = customer_with_order(&s.app, &s.vendor, &[&s.pizza]).await;

    // Act
    let first = review_product(
        &s.app,
        &s.token,
        s.pizza.id,
        s.order.id,
        5,
        "  Perfect crust.\n",
    )
    .await;
    let second = review_product(&s.app, &other, s.pizza.id, other_order.id, 3, "Cold.").await;

    // Assert
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["rating"], 5);
    assert_eq!(first["text"], "Perfect crust.");
    assert_eq!(first["author"], s.customer.to_string());
    assert_eq!(first["target"], format!("product:{}", s.pizza.id));
    assert_eq!(first["hidden"], false);
    assert!(
        first.get("reports").is_none(),
        "report counts are for admins"
    );
    assert_eq!(second.status(), 201);

    let page = list(
        &s.app,
        &format!("/api/v1/products/{}/reviews", s.pizza.id),
        None,
    )
    .await;
    assert_eq!(page["rating"], json!({"average": 4.0, "count": 2}));
    let ratings: Vec<_> = page["reviews"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rating"].clone())
        .collect();
    assert_eq!(ratings, vec![json!(5), json!(3)], "oldest first");
    assert_eq!(page["next_cursor"], Value::Null);

    let summary = s
        .app
        .catalog
        .reviews
        .rating(ReviewTarget::Product(s.pizza.id))
        .await
        .unwrap();
    assert_eq!(summary.count, 2);
    assert_eq!(summary.average, Some(4.0));
    // Readers that only need the totals decode the aggregate row as plain totals.
    let plain: Rows<RatingTotals> =
        Rows::new(s.app.catalog.repo.products.store().clone(), Table::Ratings);
    let totals = plain
        .get(&rating_key(&ReviewTarget::Product(s.pizza.id)))
        .await
        .unwrap()
        .unwrap()
        .value;
    assert_eq!((totals.count, totals.sum), (2, 8));
    // The vendor's rating is its own, untouched by product reviews.
    let vendor = list(
        &s.app,
        &format!("/api/v1/vendors/{}/reviews", s.vendor.id),
        None,
    )
    .await;
    assert_eq!(vendor["rating"], json!({"average": null, "count": 0}));
}

#[actix_web::test]
async fn only_the_customer_of_a_delivered_order_with_the_product_may_review_it() {
    let s = shop().await;
    let app = &s.app;
    let preparing = seed_order(
        app,
        s.customer,
        &s.vendor,
        &[&s.pizza],
        OrderStatus::Preparing,
    )
    .await;
    let (stranger, _) = user_token(app, Role::Customer);
    let strangers_order = seed_order(
        app,
        stranger,
        &s.vendor,
        &[&s.pizza],
        OrderStatus::Delivered,
    )
    .await;

    let not_delivered = review_product(app, &s.token, s.pizza.id, preparing.id, 4, "").await;
    assert_problem(not_delivered, 403, "not_eligible").await;
    let someone_elses = review_product(app, &s.token, s.pizza.id, strangers_order.id, 4, "").await;
    assert_problem(someone_elses, 403, "not_eligible").await;
    let not_in_order = review_product(app, &s.token, s.salad.id, s.order.id, 4, "").await;
    assert_problem(not_in_order, 403, "not_eligible").await;
    let no_such_order = review_product(app, &s.token, s.pizza.id, OrderId::new(), 4, "").await;
    assert_problem(no_such_order, 403, "not_eligible").await;
    let no_such_product = review_product(app, &s.token, ProductId::new(), s.order.id, 4, "").await;
    assert_problem(no_such_product, 404, "not_found").await;
    let as_vendor = review_product(app, &s.vendor_token, s.pizza.id, s.order.id, 4, "").await;
    assert_problem(as_vendor, 403, "forbidden").await;
    let anonymous = app
        .client
        .post(app.url(&format!("/api/v1/products/{}/reviews", s.pizza.id)))
        .json(&json!({"order_id": s.order.id, "rating": 4}))
        .send()
        .await
        .unwrap();
    assert_problem(anonymous, 401, "unauthenticated").await;

    let page = list(
        app,
        &format!("/api/v1/products/{}/reviews", s.pizza.id),
        None,
    )
    .await;
    assert_eq!(page["rating"]["count"], 0);
    assert_eq!(page["reviews"], json!([]));
}

#[actix_web::test]
async fn an_order_line_gives_one_review() {
    let s = shop().await;
    let first = review_product(&s.app, &s.token, s.pizza.id, s.order.id, 5, "Great").await;
    assert_eq!(first.status(), 201);

    let again = review_product(
        &s.app,
        &s.token,
        s.pizza.id,
        s.order.id,
        1,
        "Changed my mind",
    )
    .await;
    assert_problem(again, 409, "already_reviewed").await;

    // Another delivered order of the same product entitles another review.
    let next_order = seed_order(
        &s.app,
        s.customer,
        &s.vendor,
        &[&s.pizza],
        OrderStatus::Delivered,
    )
    .await;
    let second = review_product(&s.app, &s.token, s.pizza.id, next_order.id, 4, "").await;
    assert_eq!(second.status(), 201);
    let page = list(
        &s.app,
        &format!("/api/v1/products/{}/reviews", s.pizza.id),
        None,
    )
    .await;
    assert_eq!(page["rating"], json!({"average": 4.5, "count": 2}));
}

#[actix_web::test]
async fn invalid_ratings_and_texts_are_refused_and_change_nothing() {
    let s = shop().await;
    let app = &s.app;
    let path = format!("/api/v1/products/{}/reviews", s.pizza.id);

    for rating in [0, 6, 300] {
        let response = review_product(app, &s.token, s.pizza.id, s.order.id, rating, "").await;
        assert_problem(response, 422, "validation_failed").await;
    }
    let too_long =
        review_product(app, &s.token, s.pizza.id, s.order.id, 4, &"a".repeat(2_001)).await;
    let problem = assert_problem(too_long, 422, "validation_failed").await;
    assert_eq!(problem["errors"][0]["field"], "text");
    let control = review_product(app, &s.token, s.pizza.id, s.order.id, 4, "bad\u{7}bell").await;
    assert_problem(control, 422, "validation_failed").await;
    let unknown = post_json(
        app,
        &s.token,
        &path,
        json!({"order_id": s.order.id, "rating": 4, "stars": 4}),
    )
    .await;
    assert_problem(unknown, 400, "unknown_field").await;
    let missing = post_json(app, &s.token, &path, json!({"rating": 4})).await;
    assert_problem(missing, 422, "validation_failed").await;

    let page = list(app, &path, None).await;
    assert_eq!(page["rating"]["count"], 0);
    assert_eq!(page["reviews"], json!([]));
    // Nothing was claimed: the line can still be reviewed, with surrounding blanks trimmed.
    let padded = format!("\n {} \n", "é".repeat(2_000));
    let accepted = review_product(app, &s.token, s.pizza.id, s.order.id, 4, &padded).await;
    assert_eq!(accepted.status(), 201);
    let accepted: Value = accepted.json().await.unwrap();
    assert_eq!(accepted["text"].as_str().unwrap().chars().count(), 2_000);
}

#[actix_web::test]
async fn a_customer_reviews_a_vendor_once_per_order() {
    let s = shop().await;
    let app = &s.app;
    let path = format!("/api/v1/vendors/{}/reviews", s.vendor.id);
    let body = json!({"order_id": s.order.id, "rating": 4, "text": "Friendly and fast"});

    let created = post_json(app, &s.token, &path, body.clone()).await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    assert_eq!(created["target"], format!("vendor:{}", s.vendor.id));
    assert_problem(
        post_json(app, &s.token, &path, body).await,
        409,
        "already_reviewed",
    )
    .await;

    // The product of that order is still reviewable on its own.
    let product = review_product(app, &s.token, s.pizza.id, s.order.id, 2, "").await;
    assert_eq!(product.status(), 201);

    let (other_vendor, _) = seed_vendor(app, "Sushi Zwei", berlin(0.01, 0.01)).await;
    let wrong_vendor = post_json(
        app,
        &s.token,
        &format!("/api/v1/vendors/{}/reviews", other_vendor.id),
        json!({"order_id": s.order.id, "rating": 5}),
    )
    .await;
    assert_problem(wrong_vendor, 403, "not_eligible").await;
    let no_vendor = post_json(
        app,
        &s.token,
        &format!(
            "/api/v1/vendors/{}/reviews",
            hexmarket::domain::ids::VendorId::new()
        ),
        json!({"order_id": s.order.id, "rating": 5}),
    )
    .await;
    assert_problem(no_vendor, 404, "not_found").await;

    let page = list(app, &path, None).await;
    assert_eq!(page["rating"], json!({"average": 4.0, "count": 1}));
    assert_eq!(page["reviews"][0]["text"], "Friendly and fast");
}

#[actix_web::test]
async fn each_user_reports_a_review_once() {
    let s = shop().await;
    let app = &s.app;
    let review: Value = review_product(app, &s.token, s.pizza.id, s.order.id, 1, "Spam spam")
        .await
        .json()
        .await
        .unwrap();
    let report = format!(
        "/api/v1/products/{}/reviews/{}/report",
        s.pizza.id,
        review["id"].as_str().unwrap()
    );
    let (_, reporter) = user_token(app, Role::Customer);

    let once = post_json(app, &reporter, &report, json!({})).await;
    assert_eq!(once.status(), 204);
    assert_problem(
        post_json(app, &reporter, &report, json!({})).await,
        409,
        "already_reported",
    )
    .await;
    assert_eq!(
        post_json(app, &s.vendor_token, &report, json!({}))
            .await
            .status(),
        204
    );
    let anonymous = app.client.post(app.url(&report)).send().await.unwrap();
    assert_problem(anonymous, 401, "unauthenticated").await;
    let missing = format!(
        "/api/v1/products/{}/reviews/{}/report",
        s.pizza.id,
        ReviewId::new()
    );
    assert_problem(
        post_json(app, &reporter, &missing, json!({})).await,
        404,
        "not_found",
    )
    .await;

    let admin = admin(app).await;
    let page = list(
        app,
        &format!("/api/v1/products/{}/reviews", s.pizza.id),
        Some(&admin),
    )
    .await;
    assert_eq!(page["reviews"][0]["reports"], 2);
}

#[actix_web::test]
async fn an_admin_hides_a_review_and_it_leaves_the_rating_and_the_public_list() {
    let s = shop().await;
    let app = &s.app;
    let (other, other_order) = customer_with_order(app, &s.vendor, &[&s.pizza]).await;
    review_product(app, &s.token, s.pizza.id, s.order.id, 5, "Lovely").await;
    let rude: Value = review_product(app, &other, s.pizza.id, other_order.id, 1, "Rude words")
        .await
        .json()
        .await
        .unwrap();
    let rude_id = rude["id"].as_str().unwrap();
    let moderation = format!("/api/v1/admin/reviews/products/{}/{rude_id}", s.pizza.id);
    let public = format!("/api/v1/products/{}/reviews", s.pizza.id);
    let admin = admin(app).await;

    // Non-admins cannot moderate.
    assert_problem(
        moderate(app, &s.token, &moderation, true).await,
        403,
        "forbidden",
    )
    .await;
    assert_problem(
        moderate(app, &s.vendor_token, &moderation, true).await,
        403,
        "forbidden",
    )
    .await;

    let hidden = moderate(app, &admin, &moderation, true).await;
    assert_eq!(hidden.status(), 200);
    let hidden: Value = hidden.json().await.unwrap();
    assert_eq!(hidden["hidden"], true);

    let page = list(app, &public, None).await;
    assert_eq!(page["rating"], json!({"average": 5.0, "count": 1}));
    assert_eq!(page["reviews"].as_array().unwrap().len(), 1);
    assert_eq!(page["reviews"][0]["text"], "Lovely");
    let as_author = list(app, &public, Some(&other)).await;
    assert_eq!(as_author["reviews"].as_array().unwrap().len(), 1);
    let as_admin = list(app, &public, Some(&admin)).await;
    assert_eq!(as_admin["reviews"].as_array().unwrap().len(), 2);
    assert_eq!(as_admin["reviews"][1]["hidden"], true);
    // A hidden review cannot be reported.
    let report = format!("/api/v1/products/{}/reviews/{rude_id}/report", s.pizza.id);
    assert_problem(
        post_json(app, &s.token, &report, json!({})).await,
        404,
        "not_found",
    )
    .await;

    // Hiding again changes nothing; showing it brings the rating back.
    assert_eq!(moderate(app, &admin, &moderation, true).await.status(), 200);
    assert_eq!(list(app, &public, None).await["rating"]["count"], 1);
    assert_eq!(
        moderate(app, &admin, &moderation, false).await.status(),
        200
    );
    let page = list(app, &public, None).await;
    assert_eq!(page["rating"], json!({"average": 3.0, "count": 2}));

    let unknown = format!(
        "/api/v1/admin/reviews/products/{}/{}",
        s.pizza.id,
        ReviewId::new()
    );
    assert_problem(
        moderate(app, &admin, &unknown, true).await,
        404,
        "not_found",
    )
    .await;
    let bad_kind = format!("/api/v1/admin/reviews/carts/{}/{rude_id}", s.pizza.id);
    assert_problem(
        moderate(app, &admin, &bad_kind, true).await,
        400,
        "invalid_path",
    )
    .await;
}

#[actix_web::test]
async fn review_listings_page_with_a_cursor_and_refuse_bad_limits_and_cursors() {
    let s = shop().await;
    let app = &s.app;
    let (a, order_a) = customer_with_order(app, &s.vendor, &[&s.pizza]).await;
    let (b, order_b) = customer_with_order(app, &s.vendor, &[&s.pizza]).await;
    review_product(app, &s.token, s.pizza.id, s.order.id, 5, "one").await;
    let hidden: Value = review_product(app, &a, s.pizza.id, order_a.id, 4, "two")
        .await
        .json()
        .await
        .unwrap();
    review_product(app, &b, s.pizza.id, order_b.id, 3, "three").await;
    let admin = admin(app).await;
    let moderation = format!(
        "/api/v1/admin/reviews/products/{}/{}",
        s.pizza.id,
        hidden["id"].as_str().unwrap()
    );
    assert_eq!(moderate(app, &admin, &moderation, true).await.status(), 200);
    let path = format!("/api/v1/products/{}/reviews", s.pizza.id);

    let first = list(app, &format!("{path}?limit=1"), None).await;
    assert_eq!(first["reviews"][0]["text"], "one");
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = list(app, &format!("{path}?limit=1&cursor={cursor}"), None).await;
    assert_eq!(
        second["reviews"][0]["text"], "three",
        "the hidden one is skipped"
    );
    assert_eq!(second["next_cursor"], Value::Null);
    let texts = |page: &Value| -> Vec<String> {
        page["reviews"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["text"].as_str().unwrap().to_owned())
            .collect()
    };
    let everything = list(app, &format!("{path}?limit=2"), Some(&admin)).await;
    assert_eq!(texts(&everything), vec!["one", "two"]);
    let rest = list(
        app,
        &format!(
            "{path}?limit=2&cursor={}",
            everything["next_cursor"].as_str().unwrap()
        ),
        Some(&admin),
    )
    .await;
    assert_eq!(texts(&rest), vec!["three"]);
    assert_eq!(
        list(app, &path, None).await["reviews"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    for limit in ["0", "101"] {
        let response = app.get(&format!("{path}?limit={limit}")).await;
        let problem = assert_problem(response, 422, "validation_failed").await;
        assert_eq!(problem["errors"][0]["field"], "limit");
    }
    assert_problem(
        app.get(&format!("{path}?limit=ten")).await,
        400,
        "invalid_query",
    )
    .await;
    assert_problem(
        app.get(&format!("{path}?cursor=not-a-review")).await,
        400,
        "invalid_cursor",
    )
    .await;
    assert_problem(
        app.get(&format!("/api/v1/products/{}/reviews", ProductId::new()))
            .await,
        404,
        "not_found",
    )
    .await;
}

#[actix_web::test]
async fn an_interrupted_review_is_finished_by_its_authors_retry_and_counted_once() {
    let s = shop().await;
    let app = &s.app;
    let repo = app.catalog.reviews.repo();
    let target = ReviewTarget::Product(s.pizza.id);

    // The process died right after claiming the line: the retry writes the claimed review.
    let claimed = ReviewId::new();
    let claim = ReviewClaim {
        review_id: claimed,
        author: s.customer,
    };
    repo.claims
        .insert(&claim_key(s.order.id, &target), &claim)
        .await
        .unwrap()
        .unwrap();
    let someone_else = user_token(app, Role::Customer).1;
    let hijack = review_product(app, &someone_else, s.pizza.id, s.order.id, 1, "").await;
    assert_problem(hijack, 403, "not_eligible").await;
    let retried = review_product(app, &s.token, s.pizza.id, s.order.id, 4, "Good").await;
    assert_eq!(retried.status(), 201);
    let retried: Value = retried.json().await.unwrap();
    assert_eq!(retried["id"], claimed.to_string());
    assert_eq!(repo.totals(&target).await.unwrap().count, 1);

    // It died after writing the review but before the aggregate: the retry counts it (and
    // answers 409, as any second attempt does).
    let (author, token) = user_token(app, Role::Customer);
    let order = seed_order(app, author, &s.vendor, &[&s.pizza], OrderStatus::Delivered).await;
    let unsettled = stored_review(&target, author, order.id, 2);
    repo.claims
        .insert(
            &claim_key(order.id, &target),
            &ReviewClaim {
                review_id: unsettled.id,
                author,
            },
        )
        .await
        .unwrap()
        .unwrap();
    repo.reviews
        .insert(&review_key(&target, unsettled.id), &unsettled)
        .await
        .unwrap()
        .unwrap();
    let retried = review_product(app, &token, s.pizza.id, order.id, 2, "").await;
    assert_problem(retried, 409, "already_reviewed").await;
    let totals = repo.totals(&target).await.unwrap();
    assert_eq!((totals.count, totals.sum), (2, 6));

    // It died after the aggregate but before marking the review: settling again changes
    // nothing but the bookkeeping.
    let (author, _) = user_token(app, Role::Customer);
    let order = seed_order(app, author, &s.vendor, &[&s.pizza], OrderStatus::Delivered).await;
    let half = stored_review(&target, author, order.id, 5);
    repo.reviews
        .insert(&review_key(&target, half.id), &half)
        .await
        .unwrap()
        .unwrap();
    let row = repo
        .ratings
        .get(&rating_key(&target))
        .await
        .unwrap()
        .unwrap();
    let mut counted = row.value.clone();
    counted.totals.count += 1;
    counted.totals.sum += 5;
    counted.pending.insert(half.id, true);
    repo.ratings
        .update(&rating_key(&target), row.version, &counted)
        .await
        .unwrap()
        .unwrap();
    for _ in 0..2 {
        let settled = repo.settle(&target, half.id).await.unwrap().unwrap();
        assert!(settled.counted);
    }
    let row: RatingRow = repo
        .ratings
        .get(&rating_key(&target))
        .await
        .unwrap()
        .unwrap()
        .value;
    assert_eq!((row.totals.count, row.totals.sum), (3, 11));
    assert!(row.pending.is_empty());
}

fn stored_review(target: &ReviewTarget, author: UserId, order: OrderId, stars: u8) -> Review {
    Review {
        id: ReviewId::new(),
        target: target.key(),
        author,
        order_id: order,
        rating: stars.try_into().unwrap(),
        text: String::new(),
        created_at: Utc::now(),
        hidden: false,
        reports: 0,
        reporters: Vec::new(),
        counted: false,
    }
}

#[actix_web::test]
async fn concurrent_reviews_and_moderation_keep_the_rating_exact() {
    let s = shop().await;
    let app = &s.app;
    let mut customers = Vec::new();
    for _ in 0..12 {
        customers.push(customer_with_order(app, &s.vendor, &[&s.pizza]).await);
    }
    let writes = customers.iter().enumerate().map(|(i, (token, order))| {
        let stars = (i % 5 + 1) as u32;
        async move {
            review_product(app, token, s.pizza.id, order.id, stars, "")
                .await
                .json::<Value>()
                .await
                .unwrap()
        }
    });
    let created = futures_util::future::join_all(writes).await;
    let expected_sum: u64 = (0..12u64).map(|i| i % 5 + 1).sum();
    let totals = app
        .catalog
        .reviews
        .repo()
        .totals(&ReviewTarget::Product(s.pizza.id))
        .await
        .unwrap();
    assert_eq!((totals.count, totals.sum), (12, expected_sum));

    // Hide and show the same reviews from several requests at once; they end hidden.
    let admin = admin(app).await;
    let toggles = created.iter().take(4).flat_map(|review| {
        let path = format!(
            "/api/v1/admin/reviews/products/{}/{}",
            s.pizza.id,
            review["id"].as_str().unwrap()
        );
        [false, true, false, true].map(|hidden| {
            let (path, admin) = (path.clone(), admin.clone());
            async move { moderate(app, &admin, &path, hidden).await.status() }
        })
    });
    futures_util::future::join_all(toggles).await;
    for review in created.iter().take(4) {
        let path = format!(
            "/api/v1/admin/reviews/products/{}/{}",
            s.pizza.id,
            review["id"].as_str().unwrap()
        );
        assert_eq!(moderate(app, &admin, &path, true).await.status(), 200);
    }
    let hidden_sum: u64 = (0..4u64).map(|i| i % 5 + 1).sum();
    let row = app
        .catalog
        .reviews
        .repo()
        .ratings
        .get(&rating_key(&ReviewTarget::Product(s.pizza.id)))
        .await
        .unwrap()
        .unwrap()
        .value;
    assert_eq!(
        (row.totals.count, row.totals.sum),
        (8, expected_sum - hidden_sum)
    );
    assert!(row.pending.is_empty());
}
