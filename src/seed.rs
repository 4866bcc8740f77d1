//! `hexmarket seed-demo`: a small city to try the product on and to benchmark against.
//!
//! Vendors are spread over a disc around a city centre, each selling products of its trade
//! with stock; couriers and customers get accounts with one known password. Every id is
//! derived from the seed's own numbering, so running it again finds what exists and adds only
//! what is missing: the command is idempotent, and growing `--products` adds products.
//!
//! With [`SeedOptions::bulk`] the same rows are written faster, for benchmark cities of a
//! million products and tens of thousands of accounts: the demo password is hashed once and
//! every new account stores that one hash (same password, same salt: nothing a demo account
//! with a published password could lose), products go to the store 2,048 at a time, and when
//! most of the catalog is new the search index is rebuilt in one pass instead of refreshed a
//! thousand products at a time.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::catalog::Catalog;
use crate::catalog::indexing::Wait;
use crate::domain::account::User;
use crate::domain::catalog::{
    Attributes, CategoryTree, OpeningHours, OpeningSlot, Product, Vendor, VendorStatus, Visibility,
    Weekday,
};
use crate::domain::geo::{GeoPoint, disc_point};
use crate::domain::identity::{Email, Role};
use crate::domain::ids::{CategoryId, ProductId, UserId, VendorId};
use crate::domain::inventory::{Inventory, StockChange};
use crate::domain::money::{Currency, Money};
use crate::identity::password::PasswordHasher;
use crate::identity::{Identity, NewAccount};
use crate::store::Table;
use crate::store::catalog::id_key;
use crate::store::typed::Rows;
use crate::store::users::CreateError;

/// Password of every demo account.
pub const DEMO_PASSWORD: &str = "hexmarket-demo-2026";
/// Domain of every demo account's email.
pub const DEMO_DOMAIN: &str = "demo.hexmarket.dev";

/// Centre of the demo city: Berlin, Alexanderplatz. The load generator, the benchmarks and the
/// tests look for the seeded city around it.
pub const DEMO_CENTER: GeoPoint = GeoPoint {
    lat: 52.5219,
    lng: 13.4132,
};
/// Radius of the demo city's disc: vendors are placed within it, and the load generator and
/// the benchmarks spread their couriers over it.
pub const DEMO_RADIUS_KM: f64 = 8.0;

/// How big a city to build.
#[derive(Debug, Clone)]
pub struct SeedOptions {
    pub vendors: usize,
    pub products: usize,
    pub couriers: usize,
    pub customers: usize,
    pub center: GeoPoint,
    /// Vendors are placed within this distance of the centre.
    pub radius_km: f64,
    /// Write in large batches: one password hash shared by every new account, products
    /// committed [`BULK_CHUNK`] at a time, the search index rebuilt in one pass when most of
    /// the catalog is new. The rows and the index are of the same kind as without it.
    pub bulk: bool,
}

impl Default for SeedOptions {
    fn default() -> Self {
        SeedOptions {
            vendors: 50,
            products: 5_000,
            couriers: 200,
            customers: 100,
            center: DEMO_CENTER,
            radius_km: DEMO_RADIUS_KM,
            bulk: false,
        }
    }
}

/// Accounts registered at once: each is a password hash, the slow part.
const ACCOUNT_CHUNK: usize = 16;
/// Accounts written at once when they share one hash (two store writes each).
const BULK_ACCOUNT_CHUNK: usize = 512;
/// Products written at once (two store writes each, committed in groups by the store).
const PRODUCT_CHUNK: usize = 256;
/// Products written at once in bulk: the embedded store's largest group commit.
pub const BULK_CHUNK: usize = 2_048;

/// What a run created and what it found already there.
#[derive(Debug, Default)]
pub struct SeedReport {
    pub vendors_created: usize,
    pub products_created: usize,
    pub users_created: usize,
    pub users_existing: usize,
    pub products_existing: usize,
    pub took: Duration,
}

/// A trade: its category path and what it sells.
struct Trade {
    path: [&'static str; 2],
    shop: &'static str,
    items: &'static [&'static str],
    styles: &'static [&'static str],
    /// Price range in cents.
    price: (i64, i64),
}

const TRADES: &[Trade] = &[
    Trade {
        path: ["Food", "Pizza"],
        shop: "Pizzeria",
        items: &[
            "Pizza Margherita",
            "Pizza Marinara",
            "Pizza Diavola",
            "Calzone",
            "Pizza Funghi",
            "Pizza Quattro Formaggi",
            "Focaccia",
            "Pizza Prosciutto",
        ],
        styles: &[
            "Classic",
            "Wood-fired",
            "Vegan",
            "Large",
            "Family size",
            "Gluten-free",
            "Spicy",
            "Thin crust",
        ],
        price: (650, 1800),
    },
    Trade {
        path: ["Food", "Burgers"],
        shop: "Burger Joint",
        items: &[
            "Cheeseburger",
            "Chicken Burger",
            "Veggie Burger",
            "Bacon Burger",
            "Sweet Potato Fries",
            "Onion Rings",
            "Milkshake",
            "Chicken Wings",
        ],
        styles: &[
            "Double", "Smoky", "Vegan", "Crispy", "Classic", "BBQ", "Spicy", "Mini",
        ],
        price: (350, 1600),
    },
    Trade {
        path: ["Food", "Sushi"],
        shop: "Sushi House",
        items: &[
            "Salmon Nigiri",
            "Tuna Maki",
            "California Roll",
            "Miso Soup",
            "Edamame",
            "Sashimi Platter",
            "Dragon Roll",
            "Gyoza",
        ],
        styles: &[
            "Fresh", "Spicy", "Vegan", "Deluxe", "Crispy", "Classic", "Teriyaki", "Tempura",
        ],
        price: (300, 3200),
    },
    Trade {
        path: ["Food", "Curry"],
        shop: "Curry Kitchen",
        items: &[
            "Chicken Curry",
            "Lentil Dal",
            "Paneer Tikka",
            "Vegetable Korma",
            "Garlic Naan",
            "Samosa",
            "Mango Lassi",
            "Biryani",
        ],
        styles: &[
            "Mild",
            "Hot",
            "Vegan",
            "Creamy",
            "Homestyle",
            "Tandoori",
            "Coconut",
            "Royal",
        ],
        price: (250, 1700),
    },
    Trade {
        path: ["Groceries", "Fruit & Vegetables"],
        shop: "Green Grocer",
        items: &[
            "Apples",
            "Bananas",
            "Tomatoes",
            "Avocados",
            "Carrots",
            "Strawberries",
            "Potatoes",
            "Spinach",
        ],
        styles: &[
            "Organic", "Local", "Fresh", "Seasonal", "Bio", "Farm", "Premium", "Regional",
        ],
        price: (99, 699),
    },
    Trade {
        path: ["Groceries", "Bakery"],
        shop: "Bakery",
        items: &[
            "Sourdough Bread",
            "Croissant",
            "Pretzel",
            "Rye Bread",
            "Cinnamon Roll",
            "Baguette",
            "Apple Strudel",
            "Poppy Seed Cake",
        ],
        styles: &[
            "Fresh",
            "Wholegrain",
            "Butter",
            "Organic",
            "Rustic",
            "Sweet",
            "Spelt",
            "Traditional",
        ],
        price: (80, 1200),
    },
    Trade {
        path: ["Groceries", "Dairy"],
        shop: "Dairy Corner",
        items: &[
            "Whole Milk",
            "Greek Yogurt",
            "Gouda Cheese",
            "Butter",
            "Oat Milk",
            "Mozzarella",
            "Cream Cheese",
            "Kefir",
        ],
        styles: &[
            "Organic",
            "Lactose-free",
            "Alpine",
            "Low-fat",
            "Farm",
            "Aged",
            "Fresh",
            "Creamy",
        ],
        price: (99, 899),
    },
    Trade {
        path: ["Drinks", "Coffee & Tea"],
        shop: "Coffee Roasters",
        items: &[
            "Espresso Beans",
            "Flat White",
            "Cold Brew",
            "Green Tea",
            "Chai Latte",
            "Cappuccino",
            "Filter Coffee",
            "Matcha",
        ],
        styles: &[
            "Single origin",
            "Decaf",
            "Iced",
            "Oat",
            "House",
            "Dark roast",
            "Light roast",
            "Organic",
        ],
        price: (250, 2400),
    },
    Trade {
        path: ["Drinks", "Juice"],
        shop: "Juice Bar",
        items: &[
            "Orange Juice",
            "Green Smoothie",
            "Apple Juice",
            "Ginger Shot",
            "Berry Smoothie",
            "Carrot Juice",
            "Lemonade",
            "Coconut Water",
        ],
        styles: &[
            "Cold-pressed",
            "Fresh",
            "Organic",
            "Vitamin",
            "Detox",
            "Sparkling",
            "Large",
            "Small",
        ],
        price: (199, 799),
    },
    Trade {
        path: ["Flowers", "Bouquets"],
        shop: "Florist",
        items: &[
            "Roses",
            "Tulips",
            "Sunflowers",
            "Orchid",
            "Peonies",
            "Lilies",
            "Wildflower Bouquet",
            "Succulent",
        ],
        styles: &[
            "Red", "White", "Mixed", "Seasonal", "Large", "Dried", "Potted", "Pastel",
        ],
        price: (999, 6900),
    },
];

const NAMES: &[&str] = &[
    "Luna",
    "Sole",
    "Kiez",
    "Spree",
    "Linden",
    "Mitte",
    "Tiergarten",
    "Prenzl",
    "Oranien",
    "Kastanie",
    "Bergmann",
    "Boxhagen",
    "Wedding",
    "Moabit",
    "Panke",
    "Rixdorf",
];

/// A deterministic UUIDv7-shaped id for the `n`th thing of a kind.
fn demo_uuid(kind: &str, n: usize) -> Uuid {
    let mut bytes =
        *crate::domain::ids::derived_uuid(&format!("hexmarket-demo:{kind}:{n}")).as_bytes();
    // 48-bit timestamp: a fixed instant (2026-01-01) plus n milliseconds, so ids sort by n.
    let ms: u64 = 1_767_225_600_000 + n as u64;
    bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    Uuid::from_bytes(bytes)
}

/// A cheap deterministic pseudo-random number for the `n`th draw of a purpose.
fn draw(purpose: &str, n: usize) -> u64 {
    let digest = Sha256::digest(format!("hexmarket-demo-draw:{purpose}:{n}").as_bytes());
    let mut word = [0u8; 8];
    word.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(word)
}

fn unit(purpose: &str, n: usize) -> f64 {
    (draw(purpose, n) >> 11) as f64 / (1u64 << 53) as f64
}

/// Finds a category by name under `parent`, creating it if missing.
async fn ensure_category(
    catalog: &Catalog,
    name: &str,
    parent: Option<CategoryId>,
) -> anyhow::Result<CategoryId> {
    let tree: CategoryTree = catalog.repo.category_tree().await?.value;
    if let Some(existing) = tree
        .categories
        .iter()
        .find(|c| c.parent == parent && c.name == name)
    {
        return Ok(existing.id);
    }
    Ok(catalog.create_category(name, parent).await?.id)
}

/// The account of a demo user, registered if missing. Returns its id and whether it is new.
/// With `shared_hash` (the PHC string of [`DEMO_PASSWORD`]) the account is written with that
/// hash instead of a fresh one: the same rows `register` writes, without its Argon2 run.
async fn ensure_user(
    identity: &Identity,
    local: &str,
    name: String,
    role: Role,
    shared_hash: Option<&str>,
) -> anyhow::Result<(UserId, bool)> {
    let email = Email::parse(&format!("{local}@{DEMO_DOMAIN}")).map_err(anyhow::Error::msg)?;
    if let Some(id) = identity.users.owner_of(&email).await? {
        return Ok((id, false));
    }
    let Some(phc) = shared_hash else {
        let user = identity
            .register(NewAccount {
                email,
                password: DEMO_PASSWORD.to_owned(),
                name,
                role,
                phone: None,
            })
            .await?;
        return Ok((user.id, true));
    };
    let user = User::new(email, phc.to_owned(), name, role, identity.clock.now());
    match identity.users.create(&user).await {
        Ok(_) => Ok((user.id, true)),
        // Written meanwhile by someone else: theirs stands.
        Err(CreateError::EmailTaken) => match identity.users.owner_of(&user.email).await? {
            Some(id) => Ok((id, false)),
            None => anyhow::bail!("{}: email claimed, but by nobody", user.email),
        },
        Err(CreateError::Store(e)) => Err(e.into()),
    }
}

fn opening_hours() -> OpeningHours {
    let days = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ];
    OpeningHours {
        utc_offset_minutes: 60,
        slots: days
            .into_iter()
            .map(|day| OpeningSlot {
                day,
                opens: "08:00".into(),
                closes: "23:00".into(),
            })
            .collect(),
    }
}

/// Builds (or completes) the demo city.
pub async fn seed_demo(
    catalog: &Catalog,
    identity: &Identity,
    options: &SeedOptions,
) -> anyhow::Result<SeedReport> {
    let started = Instant::now();
    let mut report = SeedReport::default();
    let now = catalog.clock.now();

    // Categories: one leaf per trade.
    let mut leaves = Vec::with_capacity(TRADES.len());
    for trade in TRADES {
        let top = ensure_category(catalog, trade.path[0], None).await?;
        leaves.push(ensure_category(catalog, trade.path[1], Some(top)).await?);
    }

    // Accounts: registered a few at a time (password hashing is the slow part).
    let mut owners = Vec::with_capacity(options.vendors);
    let accounts: Vec<(String, String, Role)> = (0..options.vendors)
        .map(|i| (format!("vendor{i}"), format!("Vendor {i}"), Role::Vendor))
        .chain(
            (0..options.couriers)
                .map(|i| (format!("courier{i}"), format!("Courier {i}"), Role::Courier)),
        )
        .chain((0..options.customers).map(|i| {
            (
                format!("customer{i}"),
                format!("Customer {i}"),
                Role::Customer,
            )
        }))
        .collect();
    let shared_hash = if options.bulk {
        Some(
            PasswordHasher::new()?
                .hash(DEMO_PASSWORD.to_owned())
                .await?,
        )
    } else {
        None
    };
    let account_chunk = if options.bulk {
        BULK_ACCOUNT_CHUNK
    } else {
        ACCOUNT_CHUNK
    };
    for chunk in accounts.chunks(account_chunk) {
        let results = join_all(chunk.iter().map(|(local, name, role)| {
            ensure_user(identity, local, name.clone(), *role, shared_hash.as_deref())
        }))
        .await;
        for (result, (_, _, role)) in results.into_iter().zip(chunk) {
            let (id, created) = result?;
            if created {
                report.users_created += 1;
            } else {
                report.users_existing += 1;
            }
            if *role == Role::Vendor {
                owners.push(id);
            }
        }
    }

    // Vendors, spread uniformly over the disc.
    let mut vendors = Vec::with_capacity(options.vendors);
    for (i, owner) in owners.iter().enumerate() {
        let trade = &TRADES[i % TRADES.len()];
        let (lat, lng) = disc_point(
            options.center,
            options.radius_km * 1_000.0,
            unit("vendor-r", i),
            unit("vendor-b", i),
        );
        let location = GeoPoint::new(lat, lng).map_err(anyhow::Error::msg)?;
        let vendor = Vendor {
            id: VendorId::from(demo_uuid("vendor", i)),
            owner: *owner,
            name: format!("{} {}", NAMES[i % NAMES.len()], trade.shop),
            description: format!(
                "{} in the neighbourhood since {}.",
                trade.shop,
                1990 + i % 30
            ),
            pickup_address: format!(
                "{} Straße {}, Berlin",
                NAMES[(i / 3) % NAMES.len()],
                1 + i % 120
            ),
            location,
            cell: location.cell().to_string(),
            opening_hours: opening_hours(),
            delivery_radius_km: 5.0 + (i % 4) as f64,
            status: VendorStatus::Active,
            created_at: now,
            updated_at: now,
        };
        if catalog
            .repo
            .vendors
            .insert(&id_key(vendor.id), &vendor)
            .await?
            .is_ok()
        {
            report.vendors_created += 1;
        }
        // The owner claim may exist from an earlier run; either way it names this store.
        let _ = catalog
            .repo
            .owners
            .insert(&id_key(*owner), &vendor.id)
            .await?;
        catalog.directory.upsert(vendor.clone());
        vendors.push((vendor, i % TRADES.len()));
    }

    // Products with stock, written many at a time so the store commits them in groups.
    let inventory: Rows<Inventory> =
        Rows::new(catalog.repo.products.store().clone(), Table::Inventory);
    let mut created_ids = Vec::new();
    let indices: Vec<usize> = (0..options.products).collect();
    let product_chunk = if options.bulk {
        BULK_CHUNK
    } else {
        PRODUCT_CHUNK
    };
    for chunk in indices.chunks(product_chunk) {
        let writes = chunk.iter().map(|&n| {
            let (vendor, trade_index) = &vendors[n % vendors.len().max(1)];
            let trade = &TRADES[*trade_index];
            let item = trade.items[(n / vendors.len().max(1)) % trade.items.len()];
            let style =
                trade.styles[(n / (vendors.len().max(1) * trade.items.len())) % trade.styles.len()];
            let variant = n / (vendors.len().max(1) * trade.items.len() * trade.styles.len());
            let title = if variant == 0 {
                format!("{style} {item}")
            } else {
                format!("{style} {item} No. {}", variant + 1)
            };
            let (low, high) = trade.price;
            let cents = low + (draw("price", n) % (high - low + 1) as u64) as i64;
            // Prices end in 9 like real ones.
            let cents = (cents / 10) * 10 + 9;
            let mut attributes = Attributes::new();
            attributes.insert("style".into(), style.to_lowercase());
            if style.eq_ignore_ascii_case("vegan") || style.eq_ignore_ascii_case("organic") {
                attributes.insert("diet".into(), style.to_lowercase());
            }
            let product = Product {
                id: ProductId::from(demo_uuid("product", n)),
                vendor_id: vendor.id,
                title,
                description: format!(
                    "{style} {} from {}. Made to order and delivered by hexmarket couriers.",
                    item.to_lowercase(),
                    vendor.name
                ),
                category_id: leaves[*trade_index],
                price: Money::new(cents, Currency::EUR),
                attributes,
                visibility: Visibility::Published,
                images: Vec::new(),
                created_at: now,
                updated_at: now,
                hidden: false,
            };
            let stock = if draw("sold-out", n).is_multiple_of(20) {
                0
            } else {
                (draw("stock", n) % 200) as u32 + 1
            };
            let inventory = inventory.clone();
            async move {
                let created = catalog
                    .repo
                    .products
                    .insert(&id_key(product.id), &product)
                    .await?
                    .is_ok();
                if created {
                    let mut stocked = Inventory::default();
                    stocked
                        .adjust(
                            Uuid::now_v7().to_string(),
                            StockChange::Set(stock),
                            "demo stock".into(),
                            "seed-demo".into(),
                            now,
                        )
                        .map_err(|e| anyhow::anyhow!("demo stock: {e}"))?;
                    let _ = inventory.insert(&id_key(product.id), &stocked).await?;
                }
                anyhow::Ok((product.id, created))
            }
        });
        for result in join_all(writes).await {
            let (id, created) = result?;
            if created {
                report.products_created += 1;
                created_ids.push(id);
            } else {
                report.products_existing += 1;
            }
        }
    }

    if options.bulk && created_ids.len() > 1_000 && created_ids.len() * 2 > options.products {
        // Most of the catalog is new: one pass over the store writes every document once.
        catalog.indexer.reindex_all().await?;
    } else {
        for ids in created_ids.chunks(1_000) {
            catalog.indexer.refresh(ids, Wait::Visible).await?;
        }
    }
    catalog.invalidate_lists().await;
    report.took = started.elapsed();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_ids_are_stable_version_7_uuids() {
        let a = demo_uuid("product", 42);
        assert_eq!(a, demo_uuid("product", 42));
        assert_ne!(a, demo_uuid("product", 43));
        assert_eq!(a.get_version_num(), 7);
        assert!(demo_uuid("product", 1) < demo_uuid("product", 2));
    }
}
