//! Product search: relevance, typos, filters, facets, cursors, reindexing.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{TimeZone as _, Utc};
use hexmarket::catalog::indexing::Wait;
use hexmarket::config::Settings;
use hexmarket::domain::catalog::{
    Attributes, Category, CategoryTree, ImageRef, Product, Visibility,
};
use hexmarket::domain::ids::{CategoryId, ProductId, VendorId};
use hexmarket::domain::inventory::Inventory;
use hexmarket::domain::money::{Currency, Money};
use hexmarket::domain::review::RatingSummary;
use hexmarket::search::{ProductDoc, SearchError, SearchIndex, SearchQuery, SearchResults, Sort};
use hexmarket::secrets::{Secrets, Signer};
use hexmarket::store::catalog::{CATEGORY_TREE, id_key};
use hexmarket::store::typed::Rows;
use hexmarket::store::{Key, Table};
use tempfile::TempDir;

use crate::fixtures::{berlin, seed_product, seed_vendor};
use crate::helpers::spawn_app;

fn signer() -> Signer {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::for_data_dir(dir.path());
    settings.secret_key = Some("search-tests-secret-key-0123456789abcdef".to_owned());
    Secrets::load(&settings).unwrap().signer("search-cursor")
}

fn open(dir: &TempDir) -> SearchIndex {
    SearchIndex::open(&dir.path().join("search"), signer()).unwrap()
}

/// A published, in-stock, unrated product of an active vendor.
fn doc(
    title: &str,
    vendor: (VendorId, &str),
    category_path: &[CategoryId],
    price_minor: i64,
) -> ProductDoc {
    let created = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
    ProductDoc {
        product: Product {
            id: ProductId::new(),
            vendor_id: vendor.0,
            title: title.to_owned(),
            description: format!("{title}, made fresh every day"),
            category_id: *category_path.last().unwrap(),
            price: Money::new(price_minor, Currency::EUR),
            attributes: Attributes::new(),
            visibility: Visibility::Published,
            images: Vec::new(),
            created_at: created,
            updated_at: created,
            hidden: false,
        },
        version: 1,
        vendor_name: vendor.1.to_owned(),
        vendor_active: true,
        category_path: category_path.to_vec(),
        available: 5,
        rating: RatingSummary::default(),
        sold_recent: 0,
    }
}

fn query(text: &str) -> SearchQuery {
    SearchQuery {
        text: (!text.is_empty()).then(|| text.to_owned()),
        limit: 100,
        ..SearchQuery::default()
    }
}

fn titles(results: &SearchResults) -> Vec<&str> {
    results.items.iter().map(|h| h.title.as_str()).collect()
}

/// A small food catalog: Food → {Pizza, Curry}, Drinks; three vendors, one inactive.
struct Shop {
    _dir: TempDir,
    index: SearchIndex,
    food: CategoryId,
    pizza: CategoryId,
    curry: CategoryId,
    drinks: CategoryId,
    luigi: VendorId,
    spice: VendorId,
    closed: VendorId,
}

async fn shop() -> Shop {
    let dir = tempfile::tempdir().unwrap();
    let index = open(&dir);
    let (food, pizza, curry, drinks) = (
        CategoryId::new(),
        CategoryId::new(),
        CategoryId::new(),
        CategoryId::new(),
    );
    let (luigi, spice, closed) = (VendorId::new(), VendorId::new(), VendorId::new());
    let l = (luigi, "Luigi's Trattoria");
    let s = (spice, "Spice House");

    let mut margherita = doc("Pizza Margherita", l, &[food, pizza], 900);
    margherita.rating = RatingSummary {
        average: Some(4.5),
        count: 20,
    };
    margherita.sold_recent = 30;
    let mut diavola = doc("Pizza Diavola", l, &[food, pizza], 1100);
    diavola.available = 0;
    diavola.rating = RatingSummary {
        average: Some(4.0),
        count: 5,
    };
    diavola.product.created_at += chrono::Duration::minutes(5);
    let mut chicken = doc("Chicken Curry", s, &[food, curry], 1250);
    chicken.rating = RatingSummary {
        average: Some(4.8),
        count: 40,
    };
    chicken.sold_recent = 12;
    chicken.product.created_at += chrono::Duration::minutes(10);
    let mut chickpea = doc("Chickpea Curry", s, &[food, curry], 1050);
    chickpea.product.created_at += chrono::Duration::minutes(15);
    let mut lassi = doc("Mango Lassi", s, &[drinks], 450);
    lassi
        .product
        .attributes
        .insert("size".to_owned(), "large".to_owned());
    lassi.product.images.push(ImageRef {
        key: "img/lassi.webp".to_owned(),
        thumbnail_key: "img/lassi-thumb.webp".to_owned(),
        content_type: "image/webp".to_owned(),
        width: 800,
        height: 600,
    });
    lassi.product.created_at += chrono::Duration::minutes(20);
    let mut draft = doc("Secret Pizza Bianca", l, &[food, pizza], 1000);
    draft.product.visibility = Visibility::Draft;
    let mut elsewhere = doc(
        "Pizza Marinara",
        (closed, "Closed Corner"),
        &[food, pizza],
        800,
    );
    elsewhere.vendor_active = false;

    index
        .upsert(vec![
            margherita, diavola, chicken, chickpea, lassi, draft, elsewhere,
        ])
        .await
        .unwrap();
    Shop {
        _dir: dir,
        index,
        food,
        pizza,
        curry,
        drinks,
        luigi,
        spice,
        closed,
    }
}

#[tokio::test]
async fn a_query_with_a_typo_finds_the_product_and_the_exact_title_ranks_first() {
    let shop = shop().await;

    let pizza = shop.index.search(query("piza")).await.unwrap();
    assert!(
        titles(&pizza).contains(&"Pizza Margherita"),
        "{:?}",
        titles(&pizza)
    );

    let chicken = shop.index.search(query("chiken")).await.unwrap();
    assert_eq!(titles(&chicken).first(), Some(&"Chicken Curry"));

    let exact = shop.index.search(query("pizza margherita")).await.unwrap();
    assert_eq!(titles(&exact).first(), Some(&"Pizza Margherita"));

    let curry = shop.index.search(query("chicken curry")).await.unwrap();
    assert_eq!(titles(&curry), ["Chicken Curry"]);

    let typed_so_far = shop.index.search(query("margh")).await.unwrap();
    assert_eq!(titles(&typed_so_far), ["Pizza Margherita"]);

    let by_attribute = shop.index.search(query("large")).await.unwrap();
    assert_eq!(titles(&by_attribute), ["Mango Lassi"]);
    let lassi = &by_attribute.items[0];
    assert_eq!(lassi.thumbnail_key.as_deref(), Some("img/lassi-thumb.webp"));
    assert_eq!(lassi.category_id, shop.drinks);
    assert_eq!(lassi.price, Money::new(450, Currency::EUR));
    assert!(lassi.score > 0.0);

    let nothing = shop.index.search(query("sushi")).await.unwrap();
    assert_eq!(nothing.total, 0);
    assert!(nothing.items.is_empty());
}

#[tokio::test]
async fn filters_narrow_the_matches() {
    let shop = shop().await;
    let search = |q: SearchQuery| {
        let index = shop.index.clone();
        async move {
            let mut found: Vec<String> = titles(&index.search(q).await.unwrap())
                .into_iter()
                .map(str::to_owned)
                .collect();
            found.sort();
            found
        }
    };

    let in_food = search(SearchQuery {
        category: Some(shop.food),
        ..query("")
    })
    .await;
    assert_eq!(
        in_food,
        [
            "Chicken Curry",
            "Chickpea Curry",
            "Pizza Diavola",
            "Pizza Margherita"
        ]
    );
    let in_pizza = search(SearchQuery {
        category: Some(shop.pizza),
        ..query("")
    })
    .await;
    assert_eq!(in_pizza, ["Pizza Diavola", "Pizza Margherita"]);
    let in_curry = search(SearchQuery {
        category: Some(shop.curry),
        ..query("curry")
    })
    .await;
    assert_eq!(in_curry, ["Chicken Curry", "Chickpea Curry"]);

    let of_spice = search(SearchQuery {
        vendor: Some(shop.spice),
        ..query("")
    })
    .await;
    assert_eq!(of_spice, ["Chicken Curry", "Chickpea Curry", "Mango Lassi"]);

    let priced = search(SearchQuery {
        min_price: Some(900),
        max_price: Some(1100),
        ..query("")
    })
    .await;
    assert_eq!(
        priced,
        ["Chickpea Curry", "Pizza Diavola", "Pizza Margherita"]
    );
    let cheap = search(SearchQuery {
        max_price: Some(500),
        ..query("")
    })
    .await;
    assert_eq!(cheap, ["Mango Lassi"]);

    let in_stock = search(SearchQuery {
        in_stock: true,
        category: Some(shop.pizza),
        ..query("")
    })
    .await;
    assert_eq!(in_stock, ["Pizza Margherita"]);

    let well_rated = search(SearchQuery {
        min_rating: Some(4.5),
        ..query("")
    })
    .await;
    assert_eq!(well_rated, ["Chicken Curry", "Pizza Margherita"]);

    let near = search(SearchQuery {
        vendors_in: Some(vec![shop.luigi, shop.closed]),
        ..query("")
    })
    .await;
    assert_eq!(near, ["Pizza Diavola", "Pizza Margherita"]);
    let nowhere = search(SearchQuery {
        vendors_in: Some(Vec::new()),
        ..query("")
    })
    .await;
    assert!(nowhere.is_empty());

    let public_pizzas = search(query("pizza")).await;
    assert_eq!(public_pizzas, ["Pizza Diavola", "Pizza Margherita"]);
    let all_pizzas = search(SearchQuery {
        include_unlisted: true,
        ..query("pizza")
    })
    .await;
    assert_eq!(
        all_pizzas,
        [
            "Pizza Diavola",
            "Pizza Margherita",
            "Pizza Marinara",
            "Secret Pizza Bianca"
        ]
    );
}

#[tokio::test]
async fn facets_add_up_to_the_total() {
    let shop = shop().await;

    for q in [
        query(""),
        query("pizza"),
        SearchQuery {
            include_unlisted: true,
            ..query("")
        },
        SearchQuery {
            category: Some(shop.food),
            limit: 1,
            ..query("")
        },
    ] {
        let results = shop.index.search(q).await.unwrap();
        let sum: u64 = results.facets.iter().map(|f| f.count).sum();
        assert_eq!(sum, results.total);
    }

    let everything = shop.index.search(query("")).await.unwrap();
    assert_eq!(everything.total, 5);
    let count = |category| {
        everything
            .facets
            .iter()
            .find(|f| f.category_id == category)
            .map_or(0, |f| f.count)
    };
    assert_eq!(
        (count(shop.pizza), count(shop.curry), count(shop.drinks)),
        (2, 2, 1)
    );

    let public = shop.index.count_by_category(true).await.unwrap();
    assert_eq!(public.get(&shop.pizza), Some(&2));
    let all = shop.index.count_by_category(false).await.unwrap();
    assert_eq!(all.get(&shop.pizza), Some(&4));
    assert_eq!(all.values().sum::<u64>(), 7);
}

#[tokio::test]
async fn sorts_are_ordered() {
    let shop = shop().await;
    let sorted = |sort| {
        let index = shop.index.clone();
        async move {
            index
                .search(SearchQuery { sort, ..query("") })
                .await
                .unwrap()
                .items
        }
    };

    let ascending: Vec<i64> = sorted(Sort::PriceAsc)
        .await
        .iter()
        .map(|h| h.price.amount_minor)
        .collect();
    assert_eq!(ascending, [450, 900, 1050, 1100, 1250]);
    let descending: Vec<i64> = sorted(Sort::PriceDesc)
        .await
        .iter()
        .map(|h| h.price.amount_minor)
        .collect();
    assert_eq!(descending, [1250, 1100, 1050, 900, 450]);

    let newest = sorted(Sort::Newest).await;
    assert!(
        newest
            .windows(2)
            .all(|w| w[0].created_at >= w[1].created_at)
    );
    assert_eq!(newest[0].title, "Mango Lassi");
    let default_without_text = sorted(Sort::Relevance).await;
    assert_eq!(
        default_without_text
            .iter()
            .map(|h| h.id)
            .collect::<Vec<_>>(),
        newest.iter().map(|h| h.id).collect::<Vec<_>>()
    );

    let rated: Vec<String> = sorted(Sort::Rating)
        .await
        .into_iter()
        .map(|h| h.title)
        .collect();
    assert_eq!(
        rated[..3],
        ["Chicken Curry", "Pizza Margherita", "Pizza Diavola"]
    );

    let popular = sorted(Sort::Popular).await;
    assert_eq!(popular[0].title, "Pizza Margherita");
    assert_eq!(popular[1].title, "Chicken Curry");
}

/// `count` products titled "Widget …" in a few price bands (many ties, broken by id).
fn widgets(count: usize, name: &str) -> Vec<ProductDoc> {
    let vendor = (VendorId::new(), "Widget World");
    let category = CategoryId::new();
    (0..count)
        .map(|i| {
            let mut d = doc(
                &format!("Widget {name} {i}"),
                vendor,
                &[category],
                100 * (i as i64 % 7 + 1),
            );
            if i % 3 == 0 {
                d.product.description = "widget widget widget".to_owned();
            }
            d
        })
        .collect()
}

/// Walks every page of `q`, calling `between` after each page; returns the ids in order.
async fn walk(
    index: &SearchIndex,
    q: SearchQuery,
    mut between: impl AsyncFnMut(usize),
) -> Vec<ProductId> {
    let mut seen = Vec::new();
    let mut cursor = q.cursor.clone();
    for page in 0.. {
        let results = index
            .search(SearchQuery {
                cursor: cursor.clone(),
                ..q.clone()
            })
            .await
            .unwrap();
        assert!(results.items.len() <= q.limit);
        seen.extend(results.items.iter().map(|h| h.id));
        match results.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
        between(page).await;
        assert!(page < 1_000, "the walk does not end");
    }
    seen
}

#[tokio::test]
async fn a_cursor_walk_sees_every_product_once_while_products_are_added() {
    let dir = tempfile::tempdir().unwrap();
    let index = open(&dir);
    index.upsert(widgets(57, "original")).await.unwrap();

    for sort in [
        Sort::Relevance,
        Sort::PriceAsc,
        Sort::PriceDesc,
        Sort::Newest,
    ] {
        // Everything indexed when the walk starts (earlier walks added more).
        let expected: HashSet<ProductId> = index
            .indexed_versions()
            .await
            .unwrap()
            .into_keys()
            .collect();
        let q = SearchQuery {
            sort,
            limit: 7,
            ..query("widget")
        };
        let adder = index.clone();
        let seen = walk(&index, q, async |page| {
            // New widgets sort everywhere: cheaper, dearer, more relevant than what was seen.
            adder
                .upsert(widgets(5, &format!("new {page}")))
                .await
                .unwrap();
        })
        .await;
        let unique: HashSet<ProductId> = seen.iter().copied().collect();
        assert_eq!(unique.len(), seen.len(), "{sort:?}: duplicates");
        assert_eq!(unique, expected, "{sort:?}: gaps or strangers");
    }
}

#[tokio::test]
async fn a_cursor_continues_after_its_snapshot_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let index = open(&dir);
    let originals = widgets(30, "original");
    let expected: HashSet<ProductId> = originals.iter().map(|d| d.product.id).collect();
    index.upsert(originals).await.unwrap();
    let q = SearchQuery {
        sort: Sort::PriceAsc,
        limit: 8,
        ..query("")
    };
    let first = index.search(q.clone()).await.unwrap();
    assert_eq!(first.total, 30);

    // A restart forgets every snapshot; the walk goes on from the last sort key.
    drop(index);
    let index = open(&dir);
    let mut seen: Vec<ProductId> = first.items.iter().map(|h| h.id).collect();
    let rest = walk(
        &index,
        SearchQuery {
            cursor: first.next_cursor,
            ..q
        },
        async |_| {},
    )
    .await;
    seen.extend(rest);
    let unique: HashSet<ProductId> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len());
    assert_eq!(unique, expected);
}

#[tokio::test]
async fn a_tampered_or_foreign_cursor_is_refused() {
    let shop = shop().await;
    let q = SearchQuery {
        limit: 2,
        ..query("")
    };
    let first = shop.index.search(q.clone()).await.unwrap();
    let cursor = first.next_cursor.unwrap();

    let mut tampered = cursor.clone().into_bytes();
    let at = tampered.len() / 3;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    for bad in [tampered, "garbage".to_owned(), format!("{cursor}x")] {
        let refused = shop
            .index
            .search(SearchQuery {
                cursor: Some(bad),
                ..q.clone()
            })
            .await;
        assert!(matches!(refused, Err(SearchError::BadCursor)));
    }

    let other_query = shop
        .index
        .search(SearchQuery {
            cursor: Some(cursor.clone()),
            sort: Sort::PriceAsc,
            ..q.clone()
        })
        .await;
    assert!(matches!(other_query, Err(SearchError::BadCursor)));

    let accepted = shop
        .index
        .search(SearchQuery {
            cursor: Some(cursor),
            ..q
        })
        .await;
    assert!(accepted.is_ok());
}

#[tokio::test]
async fn upsert_soon_is_searchable_shortly_and_removal_takes_effect() {
    let dir = tempfile::tempdir().unwrap();
    let index = open(&dir);
    let doc = doc(
        "Espresso Beans",
        (VendorId::new(), "Roastery"),
        &[CategoryId::new()],
        1500,
    );
    let id = doc.product.id;
    index.upsert_soon(vec![doc.clone()]);

    let mut found = false;
    for _ in 0..40 {
        if index.search(query("espresso")).await.unwrap().total == 1 {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(found, "not searchable within 2 s");
    assert_eq!(index.indexed_versions().await.unwrap().get(&id), Some(&1));

    let mut changed = doc;
    changed.version = 2;
    changed.product.title = "Decaf Espresso Beans".to_owned();
    index.upsert(vec![changed]).await.unwrap();
    let results = index.search(query("decaf")).await.unwrap();
    assert_eq!(results.total, 1);
    assert_eq!(index.stats().documents, 1);
    assert!(index.stats().bytes_on_disk > 0);

    index.remove(vec![id]).await.unwrap();
    assert_eq!(index.search(query("espresso")).await.unwrap().total, 0);
    assert!(index.indexed_versions().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_index_of_another_schema_version_is_wiped_for_a_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let index = open(&dir);
    assert!(
        index.needs_rebuild(),
        "a new index is not a copy of the store yet"
    );
    let docs = widgets(3, "kept");
    index.replace_all(docs).await.unwrap();
    assert!(!index.needs_rebuild());
    drop(index);

    let reopened = open(&dir);
    assert!(!reopened.needs_rebuild());
    assert_eq!(reopened.stats().documents, 3);
    drop(reopened);

    // Pretend the last commit was made by another schema version.
    let meta_path = dir.path().join("search").join("meta.json");
    let mut meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta_path).unwrap()).unwrap();
    meta["payload"] = serde_json::json!(r#"{"schema":0,"complete":true}"#);
    std::fs::write(&meta_path, meta.to_string()).unwrap();

    let wiped = open(&dir);
    assert!(wiped.needs_rebuild());
    assert_eq!(wiped.search(query("")).await.unwrap().total, 0);
}

#[tokio::test]
async fn a_rebuild_is_invisible_until_it_finishes_and_keeps_changes_made_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let index = open(&dir);
    index.upsert(widgets(3, "previous")).await.unwrap();

    // Abandoned half-way: rolled back.
    {
        let mut abandoned = index.rebuild().await.unwrap();
        abandoned.add(widgets(2, "abandoned")).await.unwrap();
    }

    let mut rebuild = index.rebuild().await.unwrap();
    let fresh = widgets(4, "fresh");
    rebuild.add(fresh[..2].to_vec()).await.unwrap();
    assert_eq!(index.search(query("")).await.unwrap().total, 3);
    assert_eq!(index.search(query("abandoned")).await.unwrap().total, 0);

    // Edited while the rebuild runs; the rebuild then brings the older copy.
    let mut edited = fresh[2].clone();
    edited.version = 2;
    edited.product.title = "Widget renamed".to_owned();
    let waiter = tokio::spawn({
        let index = index.clone();
        async move { index.upsert(vec![edited]).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiter.is_finished(), "answered with the rebuild's commit");
    rebuild.add(fresh[2..].to_vec()).await.unwrap();
    rebuild.finish().await.unwrap();
    waiter.await.unwrap().unwrap();

    assert_eq!(index.search(query("")).await.unwrap().total, 4);
    assert_eq!(index.search(query("previous")).await.unwrap().total, 0);
    assert_eq!(index.search(query("abandoned")).await.unwrap().total, 0);
    let renamed = index.search(query("renamed")).await.unwrap();
    assert_eq!(
        renamed.items.first().map(|h| h.id),
        Some(fresh[2].product.id)
    );
    assert!(!index.needs_rebuild());
}

/// Stores a category tree Food → Pizza.
async fn seed_categories(app: &crate::helpers::TestApp) -> (CategoryId, CategoryId) {
    let (food, pizza) = (CategoryId::new(), CategoryId::new());
    let tree = CategoryTree {
        categories: vec![
            Category {
                id: food,
                name: "Food".to_owned(),
                parent: None,
            },
            Category {
                id: pizza,
                name: "Pizza".to_owned(),
                parent: Some(food),
            },
        ],
    };
    app.catalog
        .repo
        .categories
        .insert(&Key::single(CATEGORY_TREE), &tree)
        .await
        .unwrap()
        .unwrap();
    (food, pizza)
}

#[actix_web::test]
async fn reindex_all_rebuilds_from_the_store_and_catch_up_picks_up_what_the_index_missed() {
    let app = spawn_app().await;
    let (food, pizza) = seed_categories(&app).await;
    let (vendor, _) = seed_vendor(&app, "Luigi's", berlin(0.0, 0.0)).await;
    let mut seeded = Vec::new();
    for i in 0..25 {
        seeded
            .push(seed_product(&app, &vendor, pizza, &format!("Pizza number {i}"), 800 + i).await);
    }
    let indexer = &app.catalog.indexer;
    let search = &indexer.search;

    let report = indexer.reindex_all().await.unwrap();
    assert_eq!(report.products, 25);
    let in_food = search
        .search(SearchQuery {
            category: Some(food),
            ..query("pizza")
        })
        .await
        .unwrap();
    assert_eq!(in_food.total, 25);
    assert!(in_food.items.iter().all(|h| h.vendor_name == "Luigi's"));

    // Written to the store behind the index's back; one product deleted the same way.
    let missed = seed_product(&app, &vendor, pizza, "Calzone Napoli", 1300).await;
    let deleted = &seeded[0];
    app.catalog
        .repo
        .products
        .delete(&id_key(deleted.id), 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(search.search(query("calzone")).await.unwrap().total, 0);

    let caught_up = indexer.catch_up().await.unwrap();
    assert!(!caught_up.rebuilt);
    assert_eq!((caught_up.refreshed, caught_up.removed), (1, 1));
    let found = search.search(query("calzone")).await.unwrap();
    assert_eq!(found.items.first().map(|h| h.id), Some(missed.id));
    let versions = search.indexed_versions().await.unwrap();
    assert_eq!(versions.len(), 25);
    assert!(!versions.contains_key(&deleted.id));

    let again = indexer.catch_up().await.unwrap();
    assert_eq!((again.refreshed, again.removed), (0, 0));
}

#[actix_web::test]
async fn refresh_reads_stock_and_removes_products_gone_from_the_store() {
    let app = spawn_app().await;
    let (food, pizza) = seed_categories(&app).await;
    let (vendor, _) = seed_vendor(&app, "Luigi's", berlin(0.0, 0.0)).await;
    let product = seed_product(&app, &vendor, pizza, "Pizza Quattro Formaggi", 1200).await;
    let inventory: Rows<Inventory> =
        Rows::new(app.catalog.repo.products.store().clone(), Table::Inventory);
    inventory
        .insert(
            &id_key(product.id),
            &Inventory {
                stock: 7,
                ..Inventory::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    let indexer = &app.catalog.indexer;

    indexer.refresh(&[product.id], Wait::Visible).await.unwrap();
    let in_stock = indexer
        .search
        .search(SearchQuery {
            in_stock: true,
            ..query("formaggi")
        })
        .await
        .unwrap();
    assert_eq!(in_stock.items.len(), 1);
    assert_eq!(in_stock.items[0].available, 7);

    let refreshed = indexer.refresh_vendor(vendor.id).await.unwrap();
    assert_eq!(refreshed, 1);

    // The category moves to the top level: it is no longer below Food.
    let categories = &app.catalog.repo.categories;
    let mut tree = categories
        .get(&Key::single(CATEGORY_TREE))
        .await
        .unwrap()
        .unwrap();
    tree.value.move_to(pizza, None).unwrap();
    categories
        .update(&Key::single(CATEGORY_TREE), tree.version, &tree.value)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(indexer.refresh_category(pizza).await.unwrap(), 1);
    let below_food = indexer
        .search
        .search(SearchQuery {
            category: Some(food),
            ..query("")
        })
        .await
        .unwrap();
    assert_eq!(below_food.total, 0);

    app.catalog
        .repo
        .products
        .delete(&id_key(product.id), 1)
        .await
        .unwrap()
        .unwrap();
    indexer.refresh(&[product.id], Wait::Visible).await.unwrap();
    assert_eq!(
        indexer
            .search
            .search(query("formaggi"))
            .await
            .unwrap()
            .total,
        0
    );
}
