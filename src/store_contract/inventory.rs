fn inventory_service(store: SharedStore, clock: &Clock) -> InventoryService {
    InventoryService::new(store, clock.clone(), Arc::new(|_| {}))
}

/// A fresh product with `stock` units.
async fn stocked(service: &InventoryService, stock: u32) -> ProductId {
    let product = ProductId::new();
    stocked_as(service, product, stock).await;
    product
}

async fn stocked_as(service: &InventoryService, product: ProductId, stock: u32) {
    service
        .adjust(
            product,
            StockChange::Set(stock),
            "initial count".to_owned(),
            UserId::new(),
        )
        .await
        .unwrap();
}

const HOLD: Duration = Duration::from_secs(600);

async fn concurrent_reservations_never_oversell(store: SharedStore) {
    let clock = Clock::default();
    // Two services over one store stand for two nodes: their in-process locks are separate, so
    // only the compare-and-set keeps them from overselling.
    let nodes = [
        inventory_service(store.clone(), &clock),
        inventory_service(store, &clock),
    ];
    let product = stocked(&nodes[0], 50).await;

    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let node = nodes[i % 2].clone();
            tokio::spawn(async move {
                node.reserve(&format!("checkout-{i}"), &[(product, 1)], HOLD)
                    .await
            })
        })
        .collect();
    let mut succeeded = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => succeeded += 1,
            Err(ReserveFailure::Short(items)) => {
                assert_eq!(items.len(), 1);
                assert_eq!((items[0].product_id, items[0].requested), (product, 1));
            }
            Err(other) => panic!("a reservation failed for another reason: {other}"),
        }
    }

    assert_eq!(succeeded, 50);
    let view = nodes[1].get(product).await.unwrap();
    assert_eq!((view.stock, view.held, view.available), (50, 50, 0));
    assert_eq!(
        nodes[0].available_many(&[product]).await.unwrap()[&product],
        0
    );
}

async fn expired_reservations_return_their_stock(store: SharedStore) {
    let clock = Clock::default();
    let service = inventory_service(store, &clock);
    let product = stocked(&service, 5).await;

    service
        .reserve("first", &[(product, 3)], Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(service.get(product).await.unwrap().available, 2);
    match service.reserve("second", &[(product, 3)], HOLD).await {
        Err(ReserveFailure::Short(items)) => assert_eq!(
            items,
            [ShortItem {
                product_id: product,
                requested: 3,
                available: 2
            }]
        ),
        other => panic!("expected a short item, got {other:?}"),
    }

    clock.advance(Duration::from_secs(61));
    let view = service.get(product).await.unwrap();
    assert_eq!((view.stock, view.held, view.available), (5, 0, 5));
    service
        .reserve("second", &[(product, 5)], HOLD)
        .await
        .unwrap();
    // The expired hold is gone: there is nothing left to commit under it.
    let outcomes = service.commit("first", &[product]).await.unwrap();
    assert_eq!(outcomes, [(product, Err(InventoryError::NoHold))]);
    assert_eq!(service.get(product).await.unwrap().stock, 5);
}

async fn commits_are_idempotent_and_reduce_stock(store: SharedStore) {
    let clock = Clock::default();
    let service = inventory_service(store, &clock);
    let product = stocked(&service, 10).await;
    service
        .reserve("order-1", &[(product, 4)], HOLD)
        .await
        .unwrap();

    let first = service.commit("order-1", &[product]).await.unwrap();
    let again = service
        .commit("order-1", &[product, product])
        .await
        .unwrap();

    assert_eq!(first, [(product, Ok(Committed::Now))]);
    assert_eq!(again, [(product, Ok(Committed::Already))]);
    let view = service.get(product).await.unwrap();
    assert_eq!(
        (view.stock, view.held, view.available, view.sold_total),
        (6, 0, 6, 4)
    );
    // Long after the hold would have expired, a repeated commit still sells nothing.
    clock.advance(Duration::from_secs(3600));
    let late = service.commit("order-1", &[product]).await.unwrap();
    assert_eq!(late, [(product, Ok(Committed::Already))]);
    assert_eq!(service.get(product).await.unwrap().stock, 6);
}

async fn releasing_after_a_commit_does_not_unsell(store: SharedStore) {
    let clock = Clock::default();
    let service = inventory_service(store, &clock);
    let product = stocked(&service, 3).await;
    service
        .reserve("paid", &[(product, 2)], HOLD)
        .await
        .unwrap();
    service
        .reserve("abandoned", &[(product, 1)], HOLD)
        .await
        .unwrap();
    service.commit("paid", &[product]).await.unwrap();

    let released = service.release("paid", &[product]).await.unwrap();
    let abandoned = service.release("abandoned", &[product]).await.unwrap();
    let again = service.release("abandoned", &[product]).await.unwrap();

    assert_eq!(released, [(product, Released::AlreadyCommitted)]);
    assert_eq!(abandoned, [(product, Released::Now)]);
    assert_eq!(again, [(product, Released::NothingHeld)]);
    let view = service.get(product).await.unwrap();
    assert_eq!(
        (view.stock, view.held, view.available, view.sold_total),
        (1, 0, 1, 2)
    );
}

async fn multi_product_reservations_are_all_or_nothing(store: SharedStore) {
    let clock = Clock::default();
    let service = inventory_service(store, &clock);
    let plenty = stocked(&service, 5).await;
    let scarce = stocked(&service, 1).await;
    let never_stocked = ProductId::new();

    let refused = service
        .reserve(
            "basket",
            &[(plenty, 2), (scarce, 2), (never_stocked, 1)],
            HOLD,
        )
        .await;

    let Err(ReserveFailure::Short(mut items)) = refused else {
        panic!("expected short items, got {refused:?}");
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
    assert_eq!(items, expected);
    let available = service
        .available_many(&[plenty, scarce, never_stocked])
        .await
        .unwrap();
    assert_eq!(
        (
            available[&plenty],
            available[&scarce],
            available[&never_stocked]
        ),
        (5, 1, 0)
    );

    service
        .reserve("basket", &[(plenty, 1), (scarce, 1), (plenty, 1)], HOLD)
        .await
        .unwrap();
    let available = service.available_many(&[plenty, scarce]).await.unwrap();
    assert_eq!((available[&plenty], available[&scarce]), (3, 0));
}

async fn concurrent_multi_product_reservations_leave_no_stray_holds(store: SharedStore) {
    let clock = Clock::default();
    let service = inventory_service(store, &clock);
    // Holds are placed in product-id order; the scarce product comes second so that losing
    // it means taking back the hold already placed on the first.
    let (a, b) = (ProductId::new(), ProductId::new());
    let (plenty, scarce) = if a < b { (a, b) } else { (b, a) };
    stocked_as(&service, plenty, 100).await;
    stocked_as(&service, scarce, 10).await;

    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let service = service.clone();
            tokio::spawn(async move {
                service
                    .reserve(&format!("basket-{i}"), &[(plenty, 1), (scarce, 1)], HOLD)
                    .await
            })
        })
        .collect();
    let mut succeeded = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => succeeded += 1,
            Err(ReserveFailure::Short(items)) => {
                assert!(items.iter().all(|i| i.product_id == scarce), "{items:?}")
            }
            Err(other) => panic!("a reservation failed for another reason: {other}"),
        }
    }

    assert_eq!(succeeded, 10);
    let available = service.available_many(&[plenty, scarce]).await.unwrap();
    assert_eq!((available[&plenty], available[&scarce]), (90, 0));
}

async fn history_includes_adjustments_the_log_missed(store: SharedStore) {
    let clock = Clock::default();
    let service = inventory_service(store, &clock);
    let product = stocked(&service, 1).await;
    for _ in 0..4 {
        service
            .adjust(
                product,
                StockChange::Delta(1),
                "delivery".to_owned(),
                UserId::new(),
            )
            .await
            .unwrap();
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
        .unwrap();

    let mut seen = Vec::new();
    let mut cursor = None;
    for _ in 0..10 {
        let (page, next) = service.history(product, cursor.take(), 2).await.unwrap();
        assert!(page.len() <= 2);
        seen.extend(page);
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }

    assert_eq!(seen.len(), 6);
    let stocks: Vec<u32> = seen.iter().map(|a| a.stock_after).collect();
    assert_eq!(stocks, [1, 2, 3, 4, 5, 4]);
    assert_eq!(seen.last(), Some(&missed));

    // The next adjustment writes the missed one into the log for good.
    service
        .adjust(
            product,
            StockChange::Set(9),
            "count".to_owned(),
            UserId::new(),
        )
        .await
        .unwrap();
    let (logged, _) = service.repo().history(product, None, 100).await.unwrap();
    assert_eq!(logged.len(), 7);
    assert!(logged.contains(&missed));
}
