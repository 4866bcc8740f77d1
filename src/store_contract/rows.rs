//! Properties of the `Store` trait itself: the schema, versioned rows and compare-and-set
//! (ScyllaDB's lightweight transactions), partition and table paging, append tables and their
//! batches, and time to live.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use bytes::Bytes;

use super::{joined, unique};
use crate::store::{Cas, Key, Row, ScanRange, SharedStore, StoreError, Table, seq_key};

fn data(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn text(row: &Row) -> anyhow::Result<&str> {
    std::str::from_utf8(&row.data).context("row data is not UTF-8")
}

/// Every table the code knows is in the schema, and every node serves that one schema.
pub async fn schema_is_agreed_and_has_every_table(store: SharedStore) -> anyhow::Result<String> {
    let version = store.schema_version().await.context("schema agreement")?;
    let nowhere = unique("schema");
    for table in Table::ALL {
        let page = store
            .scan(table, &nowhere, ScanRange::first(1))
            .await
            .with_context(|| format!("table {table}"))?;
        ensure!(
            page.rows.is_empty(),
            "table {table}: a fresh partition has rows"
        );
    }
    Ok(match version {
        Some(version) => format!(
            "{} tables; every reachable node on schema version {version}",
            Table::ALL.len()
        ),
        None => format!("{} tables; one process, one schema", Table::ALL.len()),
    })
}

pub async fn rows_round_trip_with_versions(store: SharedStore) -> anyhow::Result<String> {
    let key = Key::single(unique("cart"));
    ensure!(store.get(Table::Carts, &key).await? == None);

    ensure!(store.insert(Table::Carts, &key, data("one"), None).await? == Cas::Applied(1));
    let row = store
        .get(Table::Carts, &key)
        .await?
        .context("the inserted row is missing")?;
    ensure!((row.version, row.data.as_ref()) == (1, b"one".as_ref()));
    ensure!(row.key == key);

    ensure!(
        store
            .update(Table::Carts, &key, 1, data("two"), None)
            .await?
            == Cas::Applied(2)
    );
    let row = store
        .get(Table::Carts, &key)
        .await?
        .context("the updated row is missing")?;
    ensure!((row.version, row.data.as_ref()) == (2, b"two".as_ref()));

    ensure!(store.delete(Table::Carts, &key, 2).await? == Cas::Applied(2));
    ensure!(store.get(Table::Carts, &key).await? == None);
    Ok("insert, update, delete: versions 1, 2, gone".to_owned())
}

pub async fn conditional_writes_conflict_with_the_current_row(
    store: SharedStore,
) -> anyhow::Result<String> {
    let key = Key::single(unique("order"));
    let missing = Key::single(unique("order"));

    ensure!(
        store
            .insert(Table::Orders, &key, data("first"), None)
            .await?
            .is_applied()
    );
    match store
        .insert(Table::Orders, &key, data("second"), None)
        .await?
    {
        Cas::Conflict(Some(row)) => {
            ensure!((row.version, row.data.as_ref()) == (1, b"first".as_ref()))
        }
        other => bail!("a second insert must conflict with the first row, got {other:?}"),
    }
    ensure!(
        store
            .update(Table::Orders, &key, 1, data("v2"), None)
            .await?
            .is_applied()
    );
    match store
        .update(Table::Orders, &key, 1, data("stale"), None)
        .await?
    {
        Cas::Conflict(Some(row)) => {
            ensure!((row.version, row.data.as_ref()) == (2, b"v2".as_ref()))
        }
        other => bail!("a stale update must conflict, got {other:?}"),
    }
    ensure!(
        store
            .update(Table::Orders, &missing, 1, data("x"), None)
            .await?
            == Cas::Conflict(None)
    );
    ensure!(!store.delete(Table::Orders, &key, 1).await?.is_applied());
    ensure!(store.delete(Table::Orders, &missing, 1).await? == Cas::Conflict(None));

    // Nothing a refused write carried is visible.
    let row = store
        .get(Table::Orders, &key)
        .await?
        .context("the row is missing")?;
    ensure!((row.version, row.data.as_ref()) == (2, b"v2".as_ref()));
    ensure!(store.get(Table::Orders, &missing).await? == None);
    Ok("duplicate insert, stale update and stale delete refused with the current row".to_owned())
}

pub async fn partitions_scan_in_clustering_order_and_page(
    store: SharedStore,
) -> anyhow::Result<String> {
    let partition = unique("order");
    // A partition whose name extends the first must never leak into its scans.
    let longer = format!("{partition}0");
    let mut order: Vec<u64> = (0..25).collect();
    order.reverse();
    order.swap(3, 17);
    for seq in order {
        let key = Key::new(partition.clone(), seq_key(seq));
        ensure!(
            store
                .insert(Table::OrderEvents, &key, data(&seq.to_string()), None)
                .await?
                .is_applied()
        );
    }
    for seq in 0..3 {
        let key = Key::new(longer.clone(), seq_key(seq));
        ensure!(
            store
                .insert(Table::OrderEvents, &key, data("other"), None)
                .await?
                .is_applied()
        );
    }

    let mut seen = Vec::new();
    let mut range = ScanRange::first(10);
    let mut pages = 0;
    loop {
        let page = store
            .scan(Table::OrderEvents, &partition, range.clone())
            .await?;
        pages += 1;
        ensure!(page.rows.len() <= 10);
        for row in &page.rows {
            ensure!(row.key.partition == partition);
            seen.push(text(row)?.parse::<u64>()?);
        }
        match page.next {
            Some(next) => range = ScanRange::after(next, 10),
            None => break,
        }
        ensure!(pages < 10, "pagination does not terminate");
    }
    ensure!(seen == (0..25).collect::<Vec<_>>());
    ensure!(pages == 3);

    let after_seven = store
        .scan(
            Table::OrderEvents,
            &partition,
            ScanRange::after(seq_key(7), 3),
        )
        .await?;
    let seqs: Vec<&str> = after_seven
        .rows
        .iter()
        .map(|r| r.key.clustering.as_str())
        .collect();
    ensure!(seqs == [seq_key(8), seq_key(9), seq_key(10)]);

    let window = ScanRange {
        after: Some(seq_key(20)),
        before: Some(seq_key(23)),
        limit: 100,
    };
    let page = store.scan(Table::OrderEvents, &partition, window).await?;
    ensure!(page.rows.len() == 2);
    ensure!(page.next == None);

    let empty = store
        .scan(Table::OrderEvents, &unique("none"), ScanRange::first(10))
        .await?;
    ensure!(empty.rows.is_empty() && empty.next.is_none());
    Ok(format!(
        "25 rows in {pages} pages of 10, in order; after, before and empty scans"
    ))
}

pub async fn whole_tables_page_without_gaps_or_repeats(
    store: SharedStore,
) -> anyhow::Result<String> {
    // The table is shared with other properties running at the same time, so look only at ours.
    let tag = unique("scan");
    let mut written = BTreeSet::new();
    for i in 0..23 {
        let key = Key::single(format!("{tag}-{i:02}"));
        ensure!(
            store
                .insert(Table::UserEmails, &key, data("x"), None)
                .await?
                .is_applied()
        );
        written.insert(key.partition);
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    for _ in 0..10_000 {
        let page = store
            .scan_table(Table::UserEmails, cursor.take(), 7)
            .await?;
        pages += 1;
        ensure!(page.rows.len() <= 7);
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
    ensure!(cursor.is_none(), "table scan did not finish");
    let unique_seen: BTreeSet<String> = seen.iter().cloned().collect();
    ensure!(unique_seen.len() == seen.len(), "a row was returned twice");
    ensure!(unique_seen == written);
    Ok(format!("23 rows found once each in {pages} pages of 7"))
}

pub async fn concurrent_writers_lose_no_update(store: SharedStore) -> anyhow::Result<String> {
    const WRITERS: u64 = 16;
    const INCREMENTS: u64 = 25;
    let key = Key::single(unique("counter"));
    ensure!(
        store
            .insert(Table::Carts, &key, data("0"), None)
            .await?
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
                            .await?
                            .context("the counter is missing")?;
                        let n: u64 = text(&row)?.parse()?;
                        let next = data(&(n + 1).to_string());
                        match store
                            .update(Table::Carts, &key, row.version, next, None)
                            .await?
                        {
                            Cas::Applied(v) => {
                                ensure!(v == row.version + 1);
                                break;
                            }
                            Cas::Conflict(_) => conflicts += 1,
                        }
                    }
                }
                Ok(conflicts)
            })
        })
        .collect();
    let mut conflicts = 0;
    for task in tasks {
        conflicts += joined(task).await?;
    }
    let row = store
        .get(Table::Carts, &key)
        .await?
        .context("the counter is missing")?;
    ensure!(text(&row)? == (WRITERS * INCREMENTS).to_string());
    ensure!(row.version == WRITERS * INCREMENTS + 1);
    Ok(format!(
        "{WRITERS} writers × {INCREMENTS} increments all counted; \
         {conflicts} conflicts resolved by retrying"
    ))
}

pub async fn append_tables_take_plain_writes_only(store: SharedStore) -> anyhow::Result<String> {
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
        .await?;
    // A rewrite of the same point replaces it.
    store
        .put(
            Table::CourierTrail,
            vec![(Key::new(partition.clone(), seq_key(2)), data("p2'"))],
            None,
        )
        .await?;
    let page = store
        .scan(Table::CourierTrail, &partition, ScanRange::first(100))
        .await?;
    let points: Vec<&[u8]> = page.rows.iter().map(|r| r.data.as_ref()).collect();
    ensure!(points == [b"p0".as_ref(), b"p1", b"p2'", b"p3", b"p4"]);

    let key = Key::new(partition, seq_key(9));
    let insert = store
        .insert(Table::CourierTrail, &key, data("x"), None)
        .await;
    ensure!(
        matches!(insert, Err(StoreError::Misuse(_))),
        "a conditional insert into an append table must be refused, got {insert:?}"
    );
    let put = store
        .put(
            Table::Carts,
            vec![(Key::single(unique("cart")), data("x"))],
            None,
        )
        .await;
    ensure!(
        matches!(put, Err(StoreError::Misuse(_))),
        "a plain write to a versioned table must be refused, got {put:?}"
    );
    Ok(
        "puts and rewrites read back; conditional writes refused, and puts to versioned tables"
            .to_owned(),
    )
}

/// One `put` is visible whole once it returns, also when it spans partitions and more rows
/// than one ScyllaDB batch takes; a `put` with a row the store refuses writes none of them.
pub async fn batches_are_written_whole_or_not_at_all(store: SharedStore) -> anyhow::Result<String> {
    let sizes = [250u64, 3, 1];
    let partitions: Vec<String> = sizes.iter().map(|_| unique("batch")).collect();
    let mut rows = Vec::new();
    for (partition, &size) in partitions.iter().zip(&sizes) {
        for i in 0..size {
            rows.push((
                Key::new(partition.clone(), seq_key(i)),
                data(&format!("{partition}/{i}")),
            ));
        }
    }
    // A key twice in one call: the later row wins.
    rows.push((Key::new(partitions[1].clone(), seq_key(0)), data("again")));
    let written = rows.len();
    store
        .put(Table::CourierTrail, rows, Some(Duration::from_secs(3600)))
        .await?;

    for (partition, &size) in partitions.iter().zip(&sizes) {
        let mut found = Vec::new();
        let mut range = ScanRange::first(100);
        loop {
            let page = store
                .scan(Table::CourierTrail, partition, range.clone())
                .await?;
            found.extend(page.rows);
            match page.next {
                Some(next) => range = ScanRange::after(next, 100),
                None => break,
            }
            ensure!(found.len() <= 1000, "pagination does not terminate");
        }
        ensure!(
            found.len() as u64 == size,
            "partition of {size} rows read back {} rows",
            found.len()
        );
        for (i, row) in (0..size).zip(&found) {
            let expected = if *partition == partitions[1] && i == 0 {
                "again".to_owned()
            } else {
                format!("{partition}/{i}")
            };
            ensure!(row.key.clustering == seq_key(i) && text(row)? == expected);
        }
    }

    let refused_partition = unique("batch");
    let refused = store
        .put(
            Table::CourierTrail,
            vec![
                (Key::new(refused_partition.clone(), seq_key(0)), data("a")),
                (Key::new(refused_partition.clone(), seq_key(1)), data("b")),
                (
                    Key::new(refused_partition.clone(), "k".repeat(70_000)),
                    data("too long a key"),
                ),
            ],
            None,
        )
        .await;
    ensure!(
        matches!(refused, Err(StoreError::Misuse(_))),
        "a put with a 70,000-byte key must be refused, got {refused:?}"
    );
    let leftover = store
        .scan(
            Table::CourierTrail,
            &refused_partition,
            ScanRange::first(10),
        )
        .await?;
    ensure!(
        leftover.rows.is_empty(),
        "a refused put wrote {} of its rows",
        leftover.rows.len()
    );
    Ok(format!(
        "{written} rows over 3 partitions in one put read back whole; a refused put wrote nothing"
    ))
}

pub async fn rows_expire_after_their_ttl(store: SharedStore) -> anyhow::Result<String> {
    let key = Key::single(unique("idem"));
    let keep = Key::single(unique("idem"));
    ensure!(
        store
            .insert(
                Table::Idempotency,
                &key,
                data("a"),
                Some(Duration::from_secs(1))
            )
            .await?
            .is_applied()
    );
    ensure!(
        store
            .insert(Table::Idempotency, &keep, data("b"), None)
            .await?
            .is_applied()
    );
    ensure!(store.get(Table::Idempotency, &key).await?.is_some());
    tokio::time::sleep(Duration::from_millis(2200)).await;
    ensure!(
        store.get(Table::Idempotency, &key).await?.is_none(),
        "a row with a 1 s time to live is still there after 2.2 s"
    );
    ensure!(store.get(Table::Idempotency, &keep).await?.is_some());
    // An expired row is absent for conditional writes too.
    ensure!(
        store
            .insert(Table::Idempotency, &key, data("c"), None)
            .await?
            .is_applied()
    );
    Ok(
        "a 1 s row gone after 2.2 s, also for a conditional insert; a row without TTL kept"
            .to_owned(),
    )
}
