fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7())
}

fn data(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn rows_round_trip_with_versions(store: SharedStore) {
    let key = Key::single(unique("cart"));
    assert_eq!(store.get(Table::Carts, &key).await.unwrap(), None);

    assert_eq!(
        store
            .insert(Table::Carts, &key, data("one"), None)
            .await
            .unwrap(),
        Cas::Applied(1)
    );
    let row = store
        .get(Table::Carts, &key)
        .await
        .unwrap()
        .expect("row exists");
    assert_eq!((row.version, row.data.as_ref()), (1, b"one".as_ref()));
    assert_eq!(row.key, key);

    assert_eq!(
        store
            .update(Table::Carts, &key, 1, data("two"), None)
            .await
            .unwrap(),
        Cas::Applied(2)
    );
    let row = store
        .get(Table::Carts, &key)
        .await
        .unwrap()
        .expect("row exists");
    assert_eq!((row.version, row.data.as_ref()), (2, b"two".as_ref()));

    assert_eq!(
        store.delete(Table::Carts, &key, 2).await.unwrap(),
        Cas::Applied(2)
    );
    assert_eq!(store.get(Table::Carts, &key).await.unwrap(), None);
}

async fn conditional_writes_conflict_with_the_current_row(store: SharedStore) {
    let key = Key::single(unique("order"));
    let missing = Key::single(unique("order"));

    assert!(
        store
            .insert(Table::Orders, &key, data("first"), None)
            .await
            .unwrap()
            .is_applied()
    );
    match store
        .insert(Table::Orders, &key, data("second"), None)
        .await
        .unwrap()
    {
        Cas::Conflict(Some(row)) => {
            assert_eq!((row.version, row.data.as_ref()), (1, b"first".as_ref()))
        }
        other => panic!("a second insert must conflict with the first row, got {other:?}"),
    }
    assert!(
        store
            .update(Table::Orders, &key, 1, data("v2"), None)
            .await
            .unwrap()
            .is_applied()
    );
    match store
        .update(Table::Orders, &key, 1, data("stale"), None)
        .await
        .unwrap()
    {
        Cas::Conflict(Some(row)) => {
            assert_eq!((row.version, row.data.as_ref()), (2, b"v2".as_ref()))
        }
        other => panic!("a stale update must conflict, got {other:?}"),
    }
    assert_eq!(
        store
            .update(Table::Orders, &missing, 1, data("x"), None)
            .await
            .unwrap(),
        Cas::Conflict(None)
    );
    assert!(
        !store
            .delete(Table::Orders, &key, 1)
            .await
            .unwrap()
            .is_applied()
    );
    assert_eq!(
        store.delete(Table::Orders, &missing, 1).await.unwrap(),
        Cas::Conflict(None)
    );

    // Nothing a refused write carried is visible.
    let row = store
        .get(Table::Orders, &key)
        .await
        .unwrap()
        .expect("row exists");
    assert_eq!((row.version, row.data.as_ref()), (2, b"v2".as_ref()));
    assert_eq!(store.get(Table::Orders, &missing).await.unwrap(), None);
}

async fn partitions_scan_in_clustering_order_and_page(store: SharedStore) {
    let partition = unique("order");
    // A partition whose name extends the first must never leak into its scans.
    let longer = format!("{partition}0");
    let mut order: Vec<u64> = (0..25).collect();
    order.reverse();
    order.swap(3, 17);
    for seq in order {
        let key = Key::new(partition.clone(), seq_key(seq));
        assert!(
            store
                .insert(Table::OrderEvents, &key, data(&seq.to_string()), None)
                .await
                .unwrap()
                .is_applied()
        );
    }
    for seq in 0..3 {
        let key = Key::new(longer.clone(), seq_key(seq));
        assert!(
            store
                .insert(Table::OrderEvents, &key, data("other"), None)
                .await
                .unwrap()
                .is_applied()
        );
    }

    let mut seen = Vec::new();
    let mut range = ScanRange::first(10);
    let mut pages = 0;
    loop {
        let page = store
            .scan(Table::OrderEvents, &partition, range.clone())
            .await
            .unwrap();
        pages += 1;
        assert!(page.rows.len() <= 10);
        for row in &page.rows {
            assert_eq!(row.key.partition, partition);
            seen.push(
                String::from_utf8(row.data.to_vec())
                    .unwrap()
                    .parse::<u64>()
                    .unwrap(),
            );
        }
        match page.next {
            Some(next) => range = ScanRange::after(next, 10),
            None => break,
        }
        assert!(pages < 10, "pagination does not terminate");
    }
    assert_eq!(seen, (0..25).collect::<Vec<_>>());
    assert_eq!(pages, 3);

    let after_seven = store
        .scan(
            Table::OrderEvents,
            &partition,
            ScanRange::after(seq_key(7), 3),
        )
        .await
        .unwrap();
    let seqs: Vec<&str> = after_seven
        .rows
        .iter()
        .map(|r| r.key.clustering.as_str())
        .collect();
    assert_eq!(seqs, [seq_key(8), seq_key(9), seq_key(10)]);

    let window = ScanRange {
        after: Some(seq_key(20)),
        before: Some(seq_key(23)),
        limit: 100,
    };
    let page = store
        .scan(Table::OrderEvents, &partition, window)
        .await
        .unwrap();
    assert_eq!(page.rows.len(), 2);
    assert_eq!(page.next, None);

    let empty = store
        .scan(Table::OrderEvents, &unique("none"), ScanRange::first(10))
        .await
        .unwrap();
    assert!(empty.rows.is_empty() && empty.next.is_none());
}

async fn whole_tables_page_without_gaps_or_repeats(store: SharedStore) {
    // The table is shared with other tests running at the same time, so look only at ours.
    let tag = unique("scan");
    let mut written = BTreeSet::new();
    for i in 0..23 {
        let key = Key::single(format!("{tag}-{i:02}"));
        assert!(
            store
                .insert(Table::UserEmails, &key, data("x"), None)
                .await
                .unwrap()
                .is_applied()
        );
        written.insert(key.partition);
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    for _ in 0..10_000 {
        let page = store
            .scan_table(Table::UserEmails, cursor.take(), 7)
            .await
            .unwrap();
        assert!(page.rows.len() <= 7);
        seen.extend(
            page.rows
                .into_iter()
                .map(|r| r.key.partition)
                .filter(|p| p.starts_with(&tag)),
        );
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert!(cursor.is_none(), "table scan did not finish");
    let unique_seen: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique_seen.len(), seen.len(), "a row was returned twice");
    assert_eq!(unique_seen, written);
}

async fn concurrent_writers_lose_no_update(store: SharedStore) {
    const WRITERS: u64 = 16;
    const INCREMENTS: u64 = 25;
    let key = Key::single(unique("counter"));
    assert!(
        store
            .insert(Table::Carts, &key, data("0"), None)
            .await
            .unwrap()
            .is_applied()
    );

    let tasks: Vec<_> = (0..WRITERS)
        .map(|_| {
            let store = Arc::clone(&store);
            let key = key.clone();
            tokio::spawn(async move {
                let mut conflicts = 0u64;
                for _ in 0..INCREMENTS {
                    loop {
                        let row = store
                            .get(Table::Carts, &key)
                            .await
                            .unwrap()
                            .expect("counter exists");
                        let n: u64 = std::str::from_utf8(&row.data).unwrap().parse().unwrap();
                        let next = data(&(n + 1).to_string());
                        match store
                            .update(Table::Carts, &key, row.version, next, None)
                            .await
                            .unwrap()
                        {
                            Cas::Applied(v) => {
                                assert_eq!(v, row.version + 1);
                                break;
                            }
                            Cas::Conflict(_) => conflicts += 1,
                        }
                    }
                }
                conflicts
            })
        })
        .collect();
    let mut conflicts = 0;
    for task in tasks {
        conflicts += task.await.unwrap();
    }
    let row = store
        .get(Table::Carts, &key)
        .await
        .unwrap()
        .expect("counter exists");
    assert_eq!(
        std::str::from_utf8(&row.data).unwrap(),
        (WRITERS * INCREMENTS).to_string()
    );
    assert_eq!(row.version, WRITERS * INCREMENTS + 1);
    println!("{conflicts} conflicts resolved by retrying");
}

async fn append_tables_take_plain_writes_only(store: SharedStore) {
    let partition = unique("courier");
    let rows: Vec<(Key, Bytes)> = (0..5u64)
        .map(|i| {
            (
                Key::new(partition.clone(), seq_key(i)),
                data(&format!("p{i}")),
            )
        })
        .collect();
    store
        .put(Table::CourierTrail, rows, Some(Duration::from_secs(3600)))
        .await
        .unwrap();
    // A rewrite of the same point replaces it.
    store
        .put(
            Table::CourierTrail,
            vec![(Key::new(partition.clone(), seq_key(2)), data("p2'"))],
            None,
        )
        .await
        .unwrap();
    let page = store
        .scan(Table::CourierTrail, &partition, ScanRange::first(100))
        .await
        .unwrap();
    let points: Vec<&[u8]> = page.rows.iter().map(|r| r.data.as_ref()).collect();
    assert_eq!(points, [b"p0".as_ref(), b"p1", b"p2'", b"p3", b"p4"]);

    let key = Key::new(partition, seq_key(9));
    assert!(matches!(
        store
            .insert(Table::CourierTrail, &key, data("x"), None)
            .await,
        Err(StoreError::Misuse(_))
    ));
    assert!(matches!(
        store
            .put(
                Table::Carts,
                vec![(Key::single(unique("cart")), data("x"))],
                None
            )
            .await,
        Err(StoreError::Misuse(_))
    ));
}

async fn rows_expire_after_their_ttl(store: SharedStore) {
    let key = Key::single(unique("idem"));
    let keep = Key::single(unique("idem"));
    assert!(
        store
            .insert(
                Table::Idempotency,
                &key,
                data("a"),
                Some(Duration::from_secs(1))
            )
            .await
            .unwrap()
            .is_applied()
    );
    assert!(
        store
            .insert(Table::Idempotency, &keep, data("b"), None)
            .await
            .unwrap()
            .is_applied()
    );
    assert!(store.get(Table::Idempotency, &key).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(store.get(Table::Idempotency, &key).await.unwrap(), None);
    assert!(
        store
            .get(Table::Idempotency, &keep)
            .await
            .unwrap()
            .is_some()
    );
    // An expired row is absent for conditional writes too.
    assert!(
        store
            .insert(Table::Idempotency, &key, data("c"), None)
            .await
            .unwrap()
            .is_applied()
    );
}
