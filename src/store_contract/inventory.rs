//! Properties of stock and checkout holds on the store: they rest on compare-and-set, so two
//! nodes never oversell, and on the clock-driven expiry of holds.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};

use super::joined;
use crate::catalog::inventory::{InventoryService, ReserveFailure, ShortItem};
use crate::clock::Clock;
use crate::domain::ids::{ProductId, UserId};
use crate::domain::inventory::{Adjustment, Committed, InventoryError, Released, StockChange};
use crate::store::SharedStore;
use crate::store::inventory::inventory_key;
use crate::store::typed::Change;

fn inventory_service(store: SharedStore, clock: &Clock) -> InventoryService {
    InventoryService::new(store, clock.clone(), Arc::new(|_| {}))
}

/// A fresh product with `stock` units.
async fn stocked(service: &InventoryService, stock: u32) -> anyhow::Result<ProductId> {
    let product = ProductId::new();
    stocked_as(service, product, stock).await?;
    Ok(product)
}

async fn stocked_as(
    service: &InventoryService,
    product: ProductId,
    stock: u32,
) -> anyhow::Result<()> {
    service
        .adjust(
            product,
            StockChange::Set(stock),
            "initial count".to_owned(),
            UserId::new(),
        )
        .await?;
    Ok(())
}

/// The units available of each product, in the order given.
async fn available(service: &InventoryService, products: &[ProductId]) -> anyhow::Result<Vec<u32>> {
    let available = service.available_many(products).await?;
    products
        .iter()
        .map(|p| {
            available
                .get(p)
                .copied()
                .with_context(|| format!("{p}: not answered"))
        })
        .collect()
}

const HOLD: Duration = Duration::from_secs(600);

pub async fn concurrent_reservations_never_oversell(store: SharedStore) -> anyhow::Result<String> {
    let clock = Clock::default();
    // Two services over one store stand for two nodes: their in-process locks are separate, so
    // only the compare-and-set keeps them from overselling.
    let nodes = [
        inventory_service(store.clone(), &clock),
        inventory_service(store, &clock),
    ];
    let product = stocked(&nodes[0], 50).await?;

    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let node = nodes[i % 2].clone();
            tokio::spawn(async move {
                Ok(node
                    .reserve(&format!("checkout-{i}"), &[(product, 1)], HOLD)
                    .await)
            })
        })
        .collect();
    let mut succeeded = 0;
    for task in tasks {
        match joined(task).await? {
            Ok(()) => succeeded += 1,
            Err(ReserveFailure::Short(items)) => {
                ensure!(items.len() == 1);
                ensure!((items[0].product_id, items[0].requested) == (product, 1));
            }
            Err(other) => bail!("a reservation failed for another reason: {other}"),
        }
    }

    ensure!(succeeded == 50);
    let view = nodes[1].get(product).await?;
    ensure!((view.stock, view.held, view.available) == (50, 50, 0));
    ensure!(available(&nodes[0], &[product]).await? == [0]);
    Ok("200 buyers on two nodes, 50 units: 50 held, none oversold".to_owned())
}

pub async fn expired_reservations_return_their_stock(store: SharedStore) -> anyhow::Result<String> {
    let clock = Clock::default();
    let service = inventory_service(store, &clock);
    let product = stocked(&service, 5).await?;

    service
        .reserve("first", &[(product, 3)], Duration::from_secs(60))
        .await?;
    ensure!(service.get(product).await?.available == 2);
    match service.reserve("second", &[(product, 3)], HOLD).await {
        Err(ReserveFailure::Short(items)) => ensure!(
            items
                == [ShortItem {
                    product_id: product,
                    requested: 3,
                    available: 2
                }]
        ),
        other => bail!("expected a short item, got {other:?}"),
    }

    clock.advance(Duration::from_secs(61));
    let view = service.get(product).await?;
    ensure!((view.stock, view.held, view.available) == (5, 0, 5));
    service.reserve("second", &[(product, 5)], HOLD).await?;
    // The expired hold is gone: there is nothing left to commit under it.
    let outcomes = service.commit("first", &[product]).await?;
    ensure!(outcomes == [(product, Err(InventoryError::NoHold))]);
    ensure!(service.get(product).await?.stock == 5);
    Ok("an expired hold gave its 3 units back and commits nothing".to_owned())
}

pub async fn commits_are_idempotent_and_reduce_stock(store: SharedStore) -> anyhow::Result<String> {
    let clock = Clock::default();
    let service = inventory_service(store, &clock);
    let product = stocked(&service, 10).await?;
    service.reserve("order-1", &[(product, 4)], HOLD).await?;

    let first = service.commit("order-1", &[product]).await?;
    let again = service.commit("order-1", &[product, product]).await?;

    ensure!(first == [(product, Ok(Committed::Now))]);
    ensure!(again == [(product, Ok(Committed::Already))]);
    let view = service.get(product).await?;
    ensure!((view.stock, view.held, view.available, view.sold_total) == (6, 0, 6, 4));
    // Long after the hold would have expired, a repeated commit still sells nothing.
    clock.advance(Duration::from_secs(3600));
    let late = service.commit("order-1", &[product]).await?;
    ensure!(late == [(product, Ok(Committed::Already))]);
    ensure!(service.get(product).await?.stock == 6);
    Ok("4 of 10 units sold once across three commits".to_owned())
}

pub async fn releasing_after_a_commit_does_not_unsell(
    store: SharedStore,
) -> anyhow::Result<String> {
    let clock = Clock::default();
    let service = inventory_service(store, &clock);
    let product = stocked(&service, 3).await?;
    service.reserve("paid", &[(product, 2)], HOLD).await?;
    service.reserve("abandoned", &[(product, 1)], HOLD).await?;
    service.commit("paid", &[product]).await?;

    let released = service.release("paid", &[product]).await?;
    let abandoned = service.release("abandoned", &[product]).await?;
    let again = service.release("abandoned", &[product]).await?;

    ensure!(released == [(product, Released::AlreadyCommitted)]);
    ensure!(abandoned == [(product, Released::Now)]);
    ensure!(again == [(product, Released::NothingHeld)]);
    let view = service.get(product).await?;
    ensure!((view.stock, view.held, view.available, view.sold_total) == (1, 0, 1, 2));
    Ok("a committed hold stays sold; an open one is released once".to_owned())
}

pub async fn multi_product_reservations_are_all_or_nothing(
    store: SharedStore,
) -> anyhow::Result<String> {
    let clock = Clock::default();
    let service = inventory_service(store, &clock);
    let plenty = stocked(&service, 5).await?;
    let scarce = stocked(&service, 1).await?;
    let never_stocked = ProductId::new();

    let refused = service
        .reserve(
            "basket",
            &[(plenty, 2), (scarce, 2), (never_stocked, 1)],
            HOLD,
        )
        .await;

    let Err(ReserveFailure::Short(mut items)) = refused else {
        bail!("expected short items, got {refused:?}");
    };
    items.sort_by_key(|i| i.product_id);
    let mut expected = vec![
        ShortItem {
            product_id: scarce,
            requested: 2,
            available: 1,
        },
        ShortItem {
            product_id: never_stocked,
            requested: 1,
            available: 0,
        },
    ];
    expected.sort_by_key(|i| i.product_id);
    ensure!(items == expected);
    ensure!(available(&service, &[plenty, scarce, never_stocked]).await? == [5, 1, 0]);

    service
        .reserve("basket", &[(plenty, 1), (scarce, 1), (plenty, 1)], HOLD)
        .await?;
    ensure!(available(&service, &[plenty, scarce]).await? == [3, 0]);
    Ok("a short basket held nothing; a full one held every line".to_owned())
}

pub async fn concurrent_multi_product_reservations_leave_no_stray_holds(
    store: SharedStore,
) -> anyhow::Result<String> {
    let clock = Clock::default();
    let service = inventory_service(store, &clock);
    // Holds are placed in product-id order; the scarce product comes second so that losing
    // it means taking back the hold already placed on the first.
    let (a, b) = (ProductId::new(), ProductId::new());
    let (plenty, scarce) = if a < b { (a, b) } else { (b, a) };
    stocked_as(&service, plenty, 100).await?;
    stocked_as(&service, scarce, 10).await?;

    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let service = service.clone();
            tokio::spawn(async move {
                Ok(service
                    .reserve(&format!("basket-{i}"), &[(plenty, 1), (scarce, 1)], HOLD)
                    .await)
            })
        })
        .collect();
    let mut succeeded = 0;
    for task in tasks {
        match joined(task).await? {
            Ok(()) => succeeded += 1,
            Err(ReserveFailure::Short(items)) => {
                ensure!(items.iter().all(|i| i.product_id == scarce), "{items:?}")
            }
            Err(other) => bail!("a reservation failed for another reason: {other}"),
        }
    }

    ensure!(succeeded == 10);
    ensure!(available(&service, &[plenty, scarce]).await? == [90, 0]);
    Ok("40 baskets for 10 scarce units: 10 held, no stray hold on the other line".to_owned())
}

pub async fn history_includes_adjustments_the_log_missed(
    store: SharedStore,
) -> anyhow::Result<String> {
    let clock = Clock::default();
    let service = inventory_service(store, &clock);
    let product = stocked(&service, 1).await?;
    for _ in 0..4 {
        service
            .adjust(
                product,
                StockChange::Delta(1),
                "delivery".to_owned(),
                UserId::new(),
            )
            .await?;
    }
    // As if the process died after writing the row and before writing the history.
    let missed = Adjustment {
        id: uuid::Uuid::now_v7().to_string(),
        at: clock.now(),
        change: StockChange::Delta(-1),
        stock_before: 5,
        stock_after: 4,
        reason: "breakage".to_owned(),
        by: UserId::new().to_string(),
    };
    service
        .repo()
        .rows
        .modify(&inventory_key(product), |row| {
            let mut row = row.cloned().unwrap_or_default();
            row.stock = 4;
            row.recent_adjustments.push(missed.clone());
            Ok::<_, std::convert::Infallible>(Change::Put(row, ()))
        })
        .await
        .map_err(|e| anyhow::anyhow!("writing the row without its history: {e:?}"))?;

    let mut seen = Vec::new();
    let mut cursor = None;
    for _ in 0..10 {
        let (page, next) = service.history(product, cursor.take(), 2).await?;
        ensure!(page.len() <= 2);
        seen.extend(page);
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }

    ensure!(seen.len() == 6);
    let stocks: Vec<u32> = seen.iter().map(|a| a.stock_after).collect();
    ensure!(stocks == [1, 2, 3, 4, 5, 4]);
    ensure!(seen.last() == Some(&missed));

    // The next adjustment writes the missed one into the log for good.
    service
        .adjust(
            product,
            StockChange::Set(9),
            "count".to_owned(),
            UserId::new(),
        )
        .await?;
    let (logged, _) = service.repo().history(product, None, 100).await?;
    ensure!(logged.len() == 7);
    ensure!(logged.contains(&missed));
    Ok("6 adjustments paged by 2, the one the log missed included, then logged".to_owned())
}
