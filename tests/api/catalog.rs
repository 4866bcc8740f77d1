//! Vendors, categories and products over HTTP; featured and popular caches.

use hexmarket::domain::identity::Role;
use serde_json::{Value, json};

use crate::fixtures::user_token;
use crate::helpers::{TestApp, assert_problem, spawn_app, spawn_app_with};

impl TestApp {
    pub async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Value,
    ) -> reqwest::Response {
        self.client
            .request(method, self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// Opens a store for a fresh vendor at (lat, lng); returns the owner's token and the
    /// store's id.
    pub async fn open_store(&self, name: &str, lat: f64, lng: f64) -> (String, String) {
        let (_, token) = user_token(self, Role::Vendor);
        let response = self
            .send_json(
                reqwest::Method::POST,
                "/api/v1/vendors",
                &token,
                store_body(name, lat, lng),
            )
            .await;
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        (token, body["id"].as_str().unwrap().to_owned())
    }

    /// Creates a category as an admin.
    pub async fn create_category(&self, admin: &str, name: &str, parent: Option<&str>) -> String {
        let response = self
            .send_json(
                reqwest::Method::POST,
                "/api/v1/admin/categories",
                admin,
                json!({ "name": name, "parent_id": parent }),
            )
            .await;
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().to_owned()
    }

    /// Lists a published product in the token's store.
    pub async fn list_product(
        &self,
        token: &str,
        category: &str,
        title: &str,
        cents: i64,
    ) -> String {
        let response = self
            .send_json(
                reqwest::Method::POST,
                "/api/v1/products",
                token,
                json!({
                    "title": title,
                    "category_id": category,
                    "price": { "amount_minor": cents, "currency": "EUR" },
                    "visibility": "published",
                }),
            )
            .await;
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().to_owned()
    }
}

fn store_body(name: &str, lat: f64, lng: f64) -> Value {
    json!({
        "name": name,
        "pickup_address": "1 Market Street",
        "location": { "lat": lat, "lng": lng },
        "delivery_radius_km": 8.0,
    })
}

/// A real administrator, logged in with a code from their authenticator.
async fn admin(app: &TestApp) -> String {
    app.admin_token().await
}

#[actix_web::test]
async fn a_vendor_opens_one_store_with_a_cell_and_bad_stores_change_nothing() {
    let app = spawn_app().await;
    let (_, token) = user_token(&app, Role::Vendor);
    let post = |body: Value| app.send_json(reqwest::Method::POST, "/api/v1/vendors", &token, body);

    for (body, code) in [
        (store_body("Bad", 91.0, 13.0), "validation_failed"),
        (store_body("Bad", 52.0, 181.0), "validation_failed"),
        (store_body("  ", 52.0, 13.0), "validation_failed"),
        (
            json!({ "name": "Far", "pickup_address": "x", "location": { "lat": 52.0, "lng": 13.0 }, "delivery_radius_km": 51.0 }),
            "validation_failed",
        ),
        (
            json!({ "name": "X", "pickup_address": "x", "location": { "lat": 52.0, "lng": 13.0 }, "delivery_radius_km": 5.0, "owner": "someone" }),
            "unknown_field",
        ),
    ] {
        let status = if code == "unknown_field" { 400 } else { 422 };
        assert_problem(post(body).await, status, code).await;
    }
    assert_eq!(
        app.get_authed("/api/v1/vendors/mine", &token)
            .await
            .status(),
        404
    );

    let created = post(store_body("Pizzeria Uno", 52.52, 13.405)).await;
    assert_eq!(created.status(), 201);
    let store: Value = created.json().await.unwrap();
    assert_eq!(
        store["cell"].as_str().unwrap().len(),
        15,
        "an H3 cell in hex"
    );
    assert_eq!(store["status"], "active");
    assert_problem(
        post(store_body("Second", 52.5, 13.4)).await,
        409,
        "vendor_exists",
    )
    .await;

    // Customers cannot open stores.
    let (_, customer) = user_token(&app, Role::Customer);
    let response = app
        .send_json(
            reqwest::Method::POST,
            "/api/v1/vendors",
            &customer,
            store_body("C", 52.5, 13.4),
        )
        .await;
    assert_problem(response, 403, "forbidden").await;
}

#[actix_web::test]
async fn only_owners_and_admins_change_stores_and_only_admins_suspend() {
    let app = spawn_app().await;
    let (owner, id) = app.open_store("Sushi Bar", 52.5, 13.4).await;
    let path = format!("/api/v1/vendors/{id}");
    let (_, other) = user_token(&app, Role::Vendor);

    let response = app
        .send_json(
            reqwest::Method::PATCH,
            &path,
            &other,
            json!({ "name": "Mine now" }),
        )
        .await;
    assert_problem(response, 404, "not_found").await;
    let response = app
        .send_json(
            reqwest::Method::PATCH,
            &path,
            &owner,
            json!({ "status": "suspended" }),
        )
        .await;
    assert_problem(response, 403, "forbidden").await;
    let response = app
        .send_json(
            reqwest::Method::PATCH,
            &path,
            &owner,
            json!({ "name": "Sushi Bar 2", "status": "paused" }),
        )
        .await;
    assert_eq!(response.status(), 200);

    let admin = admin(&app).await;
    let category = app.create_category(&admin, "Sushi", None).await;
    app.send_json(
        reqwest::Method::PATCH,
        &path,
        &owner,
        json!({ "status": "active" }),
    )
    .await;
    let product = app
        .list_product(&owner, &category, "Salmon Nigiri", 450)
        .await;
    let listed = |app: &TestApp| {
        let url = format!("/api/v1/products?vendor={id}");
        let request = app.client.get(app.url(&url));
        async move { request.send().await.unwrap().json::<Value>().await.unwrap()["total"].clone() }
    };
    assert_eq!(listed(&app).await, 1);

    let response = app
        .send_json(
            reqwest::Method::PATCH,
            &path,
            &admin,
            json!({ "status": "suspended" }),
        )
        .await;
    assert_eq!(response.status(), 200);
    // Suspended stores and their products are hidden from the public, not from their owner.
    assert_problem(app.get(&path).await, 404, "not_found").await;
    assert_eq!(listed(&app).await, 0);
    let product_path = format!("/api/v1/products/{product}");
    assert_problem(app.get(&product_path).await, 404, "not_found").await;
    assert_eq!(app.get_authed(&product_path, &owner).await.status(), 200);
    let seen: Value = app.get_authed(&path, &owner).await.json().await.unwrap();
    assert_eq!(seen["name"], "Sushi Bar 2");
    assert_eq!(seen["status"], "suspended");
    let response = app
        .send_json(
            reqwest::Method::PATCH,
            &path,
            &owner,
            json!({ "status": "active" }),
        )
        .await;
    assert_problem(response, 403, "forbidden").await;
}

#[actix_web::test]
async fn stores_near_a_place_come_nearest_first_within_the_radius() {
    let app = spawn_app().await;
    // Distances from (52.52, 13.405): ≈ 1.1 km, ≈ 3.3 km, ≈ 2.2 km, ≈ 22 km.
    let (_, one) = app.open_store("One", 52.53, 13.405).await;
    let (_, three) = app.open_store("Three", 52.55, 13.405).await;
    let (_, two) = app.open_store("Two", 52.52, 13.437).await;
    let (_, _far) = app.open_store("Far", 52.72, 13.405).await;

    let page: Value = app
        .get("/api/v1/vendors?near=52.52,13.405&radius_km=10")
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![one.as_str(), two.as_str(), three.as_str()]);
    let distances: Vec<f64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["distance_km"].as_f64().unwrap())
        .collect();
    assert!(distances.windows(2).all(|w| w[0] <= w[1]), "{distances:?}");
    assert!((1.0..1.3).contains(&distances[0]), "{distances:?}");

    // Paging walks the same order.
    let first: Value = app
        .get("/api/v1/vendors?near=52.52,13.405&radius_km=10&limit=2")
        .await
        .json()
        .await
        .unwrap();
    let cursor = first["next_cursor"].as_str().unwrap();
    let second: Value = app
        .get(&format!(
            "/api/v1/vendors?near=52.52,13.405&radius_km=10&limit=2&cursor={cursor}"
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(second["items"][0]["id"], three.as_str());
    assert_eq!(second["next_cursor"], Value::Null);

    for (query, status, code) in [
        ("near=52.52,13.405&radius_km=51", 422, "validation_failed"),
        ("near=52.52,13.405&radius_km=0", 422, "validation_failed"),
        ("near=NaN,13.405", 422, "validation_failed"),
        ("near=95,13.405", 422, "validation_failed"),
        ("near=52.52", 422, "validation_failed"),
        ("near=52.52,13.405&limit=101", 422, "validation_failed"),
        ("near=52.52,13.405&cursor=garbage", 400, "invalid_cursor"),
        ("radius_km=3", 422, "validation_failed"),
    ] {
        assert_problem(
            app.get(&format!("/api/v1/vendors?{query}")).await,
            status,
            code,
        )
        .await;
    }
}

#[actix_web::test]
async fn admins_shape_the_category_tree_and_cycles_are_refused() {
    let app = spawn_app().await;
    let admin = admin(&app).await;
    let food = app.create_category(&admin, "Food", None).await;
    let pizza = app.create_category(&admin, "Pizza", Some(&food)).await;
    let vegan = app
        .create_category(&admin, "Vegan pizza", Some(&pizza))
        .await;

    let patch = |id: &str, body: Value| {
        let path = format!("/api/v1/admin/categories/{id}");
        let admin = admin.clone();
        let app = &app;
        async move {
            app.send_json(reqwest::Method::PATCH, &path, &admin, body)
                .await
        }
    };
    assert_problem(
        patch(&food, json!({ "parent_id": vegan })).await,
        409,
        "category_cycle",
    )
    .await;
    assert_problem(
        patch(&food, json!({ "parent_id": food })).await,
        409,
        "category_cycle",
    )
    .await;
    assert_problem(
        patch(&pizza, json!({ "parent_id": uuid::Uuid::now_v7() })).await,
        422,
        "validation_failed",
    )
    .await;
    let response = app
        .send_json(
            reqwest::Method::POST,
            "/api/v1/admin/categories",
            &admin,
            json!({ "name": "pizza", "parent_id": food }),
        )
        .await;
    assert_problem(response, 409, "category_name_taken").await;

    // Rename and move to the top level.
    let moved: Value = patch(&vegan, json!({ "name": "Vegan", "parent_id": null }))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (moved["name"].as_str(), moved["parent"].as_str()),
        (Some("Vegan"), None)
    );

    // Products are counted in their category and every category above it.
    let (vendor, _) = app.open_store("Uno", 52.5, 13.4).await;
    app.list_product(&vendor, &pizza, "Margherita", 900).await;
    app.list_product(&vendor, &pizza, "Marinara", 800).await;
    app.list_product(&vendor, &food, "Bread", 300).await;
    let tree: Value = app.get("/api/v1/categories").await.json().await.unwrap();
    let food_node = tree
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == food.as_str())
        .unwrap();
    assert_eq!(food_node["product_count"], 3);
    assert_eq!(food_node["children"][0]["product_count"], 2);

    let delete = |id: &str| {
        let path = format!("/api/v1/admin/categories/{id}");
        let admin = admin.clone();
        let app = &app;
        async move {
            app.client
                .delete(app.url(&path))
                .bearer_auth(&admin)
                .send()
                .await
                .unwrap()
        }
    };
    assert_problem(delete(&food).await, 409, "category_not_empty").await;
    assert_problem(delete(&pizza).await, 409, "category_not_empty").await;
    assert_eq!(delete(&vegan).await.status(), 204);
    assert_problem(delete(&vegan).await, 404, "not_found").await;

    let (_, customer) = user_token(&app, Role::Customer);
    let response = app
        .send_json(
            reqwest::Method::POST,
            "/api/v1/admin/categories",
            &customer,
            json!({ "name": "X" }),
        )
        .await;
    assert_problem(response, 403, "forbidden").await;
}

#[actix_web::test]
async fn vendors_list_products_and_bad_products_change_nothing() {
    let app = spawn_app().await;
    let admin = admin(&app).await;
    let category = app.create_category(&admin, "Groceries", None).await;
    let (vendor, _) = app.open_store("Corner Shop", 52.5, 13.4).await;
    let post =
        |body: Value| app.send_json(reqwest::Method::POST, "/api/v1/products", &vendor, body);
    let product = |cents: Value, currency: &str| json!({ "title": "Apples", "category_id": category, "price": { "amount_minor": cents, "currency": currency } });
    for body in [
        product(json!(0), "EUR"),
        product(json!(-100), "EUR"),
        product(json!(100_000_001), "EUR"),
        product(json!(250), "XYZ"),
        product(json!(250), "eur"),
        product(json!(2.5), "EUR"),
        json!({ "title": "", "category_id": category, "price": { "amount_minor": 250, "currency": "EUR" } }),
        json!({ "title": "Apples", "category_id": uuid::Uuid::now_v7(), "price": { "amount_minor": 250, "currency": "EUR" } }),
        json!({ "title": "Apples", "category_id": category, "price": { "amount_minor": 250, "currency": "EUR" }, "attributes": { "Bad Key": "x" } }),
    ] {
        assert_problem(post(body).await, 422, "validation_failed").await;
    }
    let mine: Value = app
        .get_authed("/api/v1/vendor/products", &vendor)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(mine["total"], 0, "refused products were not stored");

    // A vendor without a store cannot list.
    let (_, storeless) = user_token(&app, Role::Vendor);
    let response = app
        .send_json(
            reqwest::Method::POST,
            "/api/v1/products",
            &storeless,
            product(json!(250), "EUR"),
        )
        .await;
    assert_problem(response, 403, "forbidden").await;

    // Drafts are the vendor's alone until published.
    let created = post(product(json!(250), "EUR")).await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    assert_eq!(created["visibility"], "draft");
    let path = format!("/api/v1/products/{}", created["id"].as_str().unwrap());
    assert_problem(app.get(&path).await, 404, "not_found").await;
    assert_eq!(app.get_authed(&path, &vendor).await.status(), 200);

    let (rival, _) = app.open_store("Rival", 52.5, 13.4).await;
    for method in [reqwest::Method::PATCH, reqwest::Method::DELETE] {
        let response = app
            .send_json(method, &path, &rival, json!({ "title": "Stolen" }))
            .await;
        assert_problem(response, 404, "not_found").await;
    }
    let response = app
        .send_json(
            reqwest::Method::PATCH,
            &path,
            &vendor,
            json!({ "price": { "amount_minor": 0, "currency": "EUR" } }),
        )
        .await;
    assert_problem(response, 422, "validation_failed").await;

    let published = app
        .send_json(
            reqwest::Method::PATCH,
            &path,
            &vendor,
            json!({ "visibility": "published", "attributes": { "origin": "Brandenburg" } }),
        )
        .await;
    assert_eq!(published.status(), 200);
    let seen: Value = app.get(&path).await.json().await.unwrap();
    assert_eq!(seen["title"], "Apples");
    assert_eq!(seen["price"]["amount_minor"], 250);
    assert_eq!(seen["vendor"]["name"], "Corner Shop");
    assert_eq!(seen["available"], 0);

    // Hidden products leave the shelf; deleted ones are gone.
    app.send_json(
        reqwest::Method::PATCH,
        &path,
        &vendor,
        json!({ "visibility": "hidden" }),
    )
    .await;
    assert_problem(app.get(&path).await, 404, "not_found").await;
    let deleted = app
        .send_json(reqwest::Method::DELETE, &path, &vendor, json!({}))
        .await;
    assert_eq!(deleted.status(), 204);
    assert_problem(app.get_authed(&path, &vendor).await, 404, "not_found").await;
}

async fn featured_titles(app: &TestApp) -> Vec<String> {
    let body: Value = app
        .get("/api/v1/products/featured")
        .await
        .json()
        .await
        .unwrap();
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["title"].as_str().unwrap().to_owned())
        .collect()
}

async fn featured_list_follows_product_changes(app: TestApp) {
    let admin = admin(&app).await;
    let category = app.create_category(&admin, "Flowers", None).await;
    let (vendor, _) = app.open_store("Florist", 52.5, 13.4).await;
    let roses = app.list_product(&vendor, &category, "Roses", 1500).await;
    let tulips = app.list_product(&vendor, &category, "Tulips", 900).await;
    assert!(featured_titles(&app).await.is_empty());

    let response = app
        .send_json(
            reqwest::Method::PUT,
            "/api/v1/admin/featured",
            &admin,
            json!({ "product_ids": [tulips, roses] }),
        )
        .await;
    assert_eq!(response.status(), 204);
    assert_eq!(featured_titles(&app).await, vec!["Tulips", "Roses"]);

    // A product change reaches the cached list at once.
    app.send_json(
        reqwest::Method::PATCH,
        &format!("/api/v1/products/{roses}"),
        &vendor,
        json!({ "title": "Red roses" }),
    )
    .await;
    assert_eq!(featured_titles(&app).await, vec!["Tulips", "Red roses"]);
    app.send_json(
        reqwest::Method::PATCH,
        &format!("/api/v1/products/{tulips}"),
        &vendor,
        json!({ "visibility": "hidden" }),
    )
    .await;
    assert_eq!(featured_titles(&app).await, vec!["Red roses"]);

    let response = app
        .send_json(
            reqwest::Method::PUT,
            "/api/v1/admin/featured",
            &admin,
            json!({ "product_ids": [roses, roses] }),
        )
        .await;
    assert_problem(response, 422, "validation_failed").await;
    let popular = app.get("/api/v1/products/popular").await;
    assert_eq!(popular.status(), 200);
}

#[actix_web::test]
async fn the_featured_cache_is_invalidated_on_change_in_process() {
    featured_list_follows_product_changes(spawn_app().await).await;
}

#[actix_web::test]
async fn the_featured_cache_is_invalidated_on_change_in_redis() {
    let prefix = format!("test_{}:", uuid::Uuid::new_v4().simple());
    let app = spawn_app_with(|s| {
        s.redis_url = Some("redis://127.0.0.1:6379".into());
        s.redis_prefix = prefix.clone();
    })
    .await;
    featured_list_follows_product_changes(app).await;
    // The list really was cached in Redis.
    let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}cache:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!keys.is_empty(), "nothing cached under {prefix}");
}

#[actix_web::test]
async fn seed_demo_builds_a_city_once_and_running_it_again_adds_nothing() {
    use hexmarket::seed::{SeedOptions, seed_demo};
    let app = spawn_app().await;
    let options = SeedOptions {
        vendors: 4,
        products: 40,
        couriers: 2,
        customers: 2,
        ..SeedOptions::default()
    };
    let first = seed_demo(&app.catalog, &app.identity, &options)
        .await
        .unwrap();
    assert_eq!(
        (
            first.vendors_created,
            first.products_created,
            first.users_created
        ),
        (4, 40, 8)
    );
    let again = seed_demo(&app.catalog, &app.identity, &options)
        .await
        .unwrap();
    assert_eq!(
        (
            again.vendors_created,
            again.products_created,
            again.users_created
        ),
        (0, 0, 0)
    );
    assert_eq!((again.products_existing, again.users_existing), (40, 8));

    let center = hexmarket::seed::DEMO_CENTER;
    let near: Value = app
        .get(&format!(
            "/api/v1/vendors?near={},{}&radius_km=10",
            center.lat, center.lng
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(near["items"].as_array().unwrap().len(), 4);
    let found: Value = app
        .get("/api/v1/products?limit=100")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(found["total"], 40);
    assert_eq!(products_in_categories(&app).await, 40);
    // Demo accounts can sign in.
    let login = app
        .post_json(
            "/api/v1/auth/login",
            json!({ "email": "customer0@demo.hexmarket.dev", "password": hexmarket::seed::DEMO_PASSWORD }),
        )
        .await;
    assert_eq!(login.status(), 200);
}

/// Products counted over the top categories of the tree.
async fn products_in_categories(app: &TestApp) -> u64 {
    let tree: Value = app.get("/api/v1/categories").await.json().await.unwrap();
    tree.as_array()
        .unwrap()
        .iter()
        .map(|n| n["product_count"].as_u64().unwrap())
        .sum()
}

#[actix_web::test]
async fn seed_demo_in_bulk_builds_the_same_city_searchable_and_signable_in() {
    use hexmarket::seed::{SeedOptions, seed_demo};
    let app = spawn_app().await;
    // Over a thousand new products, most of the catalog: indexed by one rebuild.
    let options = SeedOptions {
        vendors: 3,
        products: 1_100,
        couriers: 2,
        customers: 3,
        bulk: true,
        ..SeedOptions::default()
    };
    let first = seed_demo(&app.catalog, &app.identity, &options)
        .await
        .unwrap();
    assert_eq!(
        (
            first.vendors_created,
            first.products_created,
            first.users_created
        ),
        (3, 1_100, 8)
    );
    // Growing it in bulk adds only what is missing, and refreshes the few new products.
    let grown = seed_demo(
        &app.catalog,
        &app.identity,
        &SeedOptions {
            products: 1_150,
            customers: 4,
            ..options.clone()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        (grown.products_created, grown.products_existing),
        (50, 1_100)
    );
    assert_eq!((grown.users_created, grown.users_existing), (1, 8));

    let found: Value = app
        .get("/api/v1/products?limit=1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(found["total"], 1_150);
    assert_eq!(products_in_categories(&app).await, 1_150);
    let pizza: Value = app
        .get("/api/v1/products?q=margherita&limit=1")
        .await
        .json()
        .await
        .unwrap();
    assert!(pizza["total"].as_u64().unwrap() > 0, "{pizza}");
    // Accounts sharing the one hash all sign in with the demo password, and only with it.
    for email in ["customer0", "customer3", "courier1", "vendor2"] {
        let login = app
            .post_json(
                "/api/v1/auth/login",
                json!({ "email": format!("{email}@demo.hexmarket.dev"), "password": hexmarket::seed::DEMO_PASSWORD }),
            )
            .await;
        assert_eq!(login.status(), 200, "{email}");
    }
    let wrong = app
        .post_json(
            "/api/v1/auth/login",
            json!({ "email": "customer1@demo.hexmarket.dev", "password": "not-the-demo-password" }),
        )
        .await;
    assert_eq!(wrong.status(), 401);
}

#[actix_web::test]
async fn product_search_over_http_filters_by_place_and_stock_and_refuses_bad_parameters() {
    let app = spawn_app().await;
    let admin = admin(&app).await;
    let bakery = app.create_category(&admin, "Bakery", None).await;
    let (near, _) = app.open_store("Near Bakery", 52.521, 13.405).await;
    let (far, _) = app.open_store("Far Bakery", 52.60, 13.405).await;
    let near_bread = app
        .list_product(&near, &bakery, "Sourdough Bread", 450)
        .await;
    let far_bread = app
        .list_product(&far, &bakery, "Sourdough Bread", 420)
        .await;

    let ids = |body: &Value| -> Vec<String> {
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let everywhere: Value = app
        .get("/api/v1/products?q=sourdo")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(everywhere["total"], 2);
    let close: Value = app
        .get("/api/v1/products?q=bread&near=52.52,13.405&radius_km=2")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&close), vec![near_bread.clone()]);

    // Stock set by the vendor shows in the `in_stock` filter.
    let none: Value = app
        .get("/api/v1/products?in_stock=true")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(none["total"], 0);
    let put = app
        .send_json(
            reqwest::Method::PUT,
            &format!("/api/v1/products/{far_bread}/inventory"),
            &far,
            json!({ "stock": 12, "reason": "morning bake" }),
        )
        .await;
    assert_eq!(put.status(), 200);
    // The product page (served from a short-lived cache) shows the new stock at once.
    let page: Value = app
        .get(&format!("/api/v1/products/{far_bread}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["available"], 12);
    let mut stocked = Value::Null;
    for _ in 0..50 {
        stocked = app
            .get("/api/v1/products?in_stock=true")
            .await
            .json()
            .await
            .unwrap();
        if stocked["total"] == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(ids(&stocked), vec![far_bread.clone()]);
    assert_eq!(stocked["items"][0]["available"], 12);

    let first: Value = app
        .get("/api/v1/products?limit=1")
        .await
        .json()
        .await
        .unwrap();
    let mut cursor = first["next_cursor"].as_str().unwrap().to_owned();
    cursor.replace_range(cursor.len() - 2.., "xx");
    for (query, status, code) in [
        ("limit=101".to_owned(), 422, "validation_failed"),
        ("limit=0".to_owned(), 422, "validation_failed"),
        ("min_price=-1".to_owned(), 422, "validation_failed"),
        (
            "min_price=500&max_price=100".to_owned(),
            422,
            "validation_failed",
        ),
        ("min_rating=6".to_owned(), 422, "validation_failed"),
        (
            "near=52.5,13.4&radius_km=500".to_owned(),
            422,
            "validation_failed",
        ),
        ("category=pizza".to_owned(), 422, "validation_failed"),
        ("sort=cheapest".to_owned(), 400, "invalid_query"),
        (format!("limit=1&cursor={cursor}"), 400, "invalid_cursor"),
        ("q=".to_owned() + &"x".repeat(201), 422, "validation_failed"),
    ] {
        assert_problem(
            app.get(&format!("/api/v1/products?{query}")).await,
            status,
            code,
        )
        .await;
    }
}

#[actix_web::test]
async fn products_come_back_in_stock_in_search_when_a_hold_expires() {
    let app = spawn_app().await;
    let admin = admin(&app).await;
    let category = app.create_category(&admin, "Juice", None).await;
    let (vendor, _) = app.open_store("Juice Bar", 52.5, 13.4).await;
    let juice = app
        .list_product(&vendor, &category, "Orange Juice", 350)
        .await;
    let put = app
        .send_json(
            reqwest::Method::PUT,
            &format!("/api/v1/products/{juice}/inventory"),
            &vendor,
            json!({ "stock": 1, "reason": "fresh" }),
        )
        .await;
    assert_eq!(put.status(), 200);
    let in_stock = || async {
        let body: Value = app
            .get("/api/v1/products?in_stock=true")
            .await
            .json()
            .await
            .unwrap();
        body["total"].as_u64().unwrap()
    };
    let eventually = |want: u64| async move {
        for _ in 0..60 {
            if in_stock().await == want {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        false
    };
    assert!(eventually(1).await, "stocked product is listed in stock");

    let id = juice.parse().unwrap();
    app.catalog
        .inventory
        .reserve("checkout-1", &[(id, 1)], std::time::Duration::from_secs(60))
        .await
        .unwrap();
    assert!(
        eventually(0).await,
        "fully held product leaves in-stock results"
    );

    // Nobody releases the hold; it expires, and the index notices by itself.
    app.clock.advance(std::time::Duration::from_secs(61));
    assert!(
        eventually(1).await,
        "the product is back in stock once the hold expired"
    );
}
