//! Rebuilding the rollups from the event logs (every order's log and the courier journal)
//! into a new generation, comparing generations, and seeding synthetic history for
//! benchmarks through the same fold.
//!
//! A rebuild folds with the same functions the consumer uses, so the rows it writes are the
//! rows the consumer would have written for the same events. It then switches the head to
//! the new generation, keeping the order journal's position (events folded already are
//! passed over by their orders' facts) and moving the courier journal's past the events it
//! read.

use std::collections::{BTreeMap, HashMap};

use chrono::{Duration, TimeZone as _, Utc};
use futures_util::StreamExt as _;
use futures_util::stream;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde::Serialize;

use super::{Analytics, AnalyticsError};
use crate::domain::analytics::{
    CourierEvent, CourierEventKind, Deltas, Line, OrderFacts, OrderMoney, fold_courier_event,
    fold_order_event,
};
use crate::domain::ids::{OrderId, UserId, VendorId};
use crate::domain::ledger::Shares;
use crate::domain::money::{Currency, Money};
use crate::domain::order::{OrderEvent, OrderEventKind, OrderStatus};
use crate::store::journal::{Position, SETTLE};

/// Orders folded at once.
const CONCURRENCY: usize = 32;

/// What a rebuild did.
#[derive(Debug, Clone, Serialize)]
pub struct RebuildReport {
    pub previous_generation: u64,
    pub generation: u64,
    /// Whether reports now read the new generation.
    pub switched: bool,
    pub orders: u64,
    pub order_events: u64,
    pub courier_events: u64,
    pub rows: usize,
    /// Rows that differ between the generations (key without the generation prefix).
    pub differences: Vec<String>,
    /// Rows deleted of the generation nothing reads any more: the previous one after a
    /// switch, this one after a comparison only.
    pub removed_rows: u64,
}

/// What a seed wrote.
#[derive(Debug, Clone, Serialize)]
pub struct SeedReport {
    pub stores: u32,
    pub orders: u64,
    pub days: u32,
    pub rows: usize,
    pub seconds: f64,
    /// A store whose analytics were seeded, and its owner's products are synthetic.
    #[serde(serialize_with = "crate::analytics::rebuild::uuid_of")]
    pub first_store: VendorId,
}

fn uuid_of<S: serde::Serializer>(id: &VendorId, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&id.as_uuid().to_string())
}

/// The `n`-th synthetic store's id: the same on every run.
pub fn seeded_store(n: u32) -> VendorId {
    let id = uuid::Uuid::from_u128(0x5eed_0000_0000_7000_8000_0000_0000_0000 | u128::from(n));
    VendorId::from(id)
}

fn seeded_courier(n: u32) -> UserId {
    let id = uuid::Uuid::from_u128(0x5eed_c000_0000_7000_8000_0000_0000_0000 | u128::from(n));
    UserId::from(id)
}

impl Analytics {
    /// Rebuilds every rollup from the logs into a new generation; with `switch`, reports
    /// read it from then on.
    pub async fn rebuild(&self, switch: bool) -> Result<RebuildReport, AnalyticsError> {
        let inner = &self.inner;
        let start = Position::at((Utc::now() - Duration::hours(1)).timestamp_millis());
        let head = inner.repo.head(&start).await?;
        let head = inner.repo.finish(head).await?;
        let previous = head.value.generation;
        let generation = previous + 1;
        // Rows a rebuild that stopped halfway left in this generation would be kept as they
        // are (a rebuild's rows are batch 0): start from none.
        inner.repo.drop_generation(generation).await?;
        let orders_position = head.value.orders.clone();

        // The courier journal: offers, answers and presence fold at once; ETAs wait for
        // their orders.
        let until = Utc::now().timestamp_millis() - SETTLE.as_millis() as i64;
        let mut deltas = Deltas::default();
        let mut etas: HashMap<OrderId, CourierEvent> = HashMap::new();
        let mut courier_events = 0u64;
        let couriers_position = inner
            .couriers
            .all_until(until, |event| {
                courier_events += 1;
                match event.order() {
                    Some(order) => {
                        // The first pickup of an order counts, as when folding in order.
                        let keep = etas.get(&order).is_none_or(|e| e.at_ms > event.at_ms);
                        if keep {
                            etas.insert(order, event);
                        }
                    }
                    None => fold_courier_event(&event, None, &mut deltas),
                }
            })
            .await?;

        // Every order's log.
        let mut orders = 0u64;
        let mut order_events = 0u64;
        let mut cursor = None;
        loop {
            let (records, next) = inner
                .orders
                .all_orders(cursor, crate::store::MAX_PAGE)
                .await?;
            let last = records.is_empty() || next.is_none();
            let folded: Vec<Result<(OrderId, OrderFacts, Deltas, u64), AnalyticsError>> =
                stream::iter(records)
                    .map(|record| {
                        let eta = etas.get(&record.id()).cloned();
                        async move {
                            let cell = self.store_cell(record.order.vendor_id).await?;
                            let mut facts = OrderFacts {
                                order: OrderMoney::of(&record, cell, inner.default_rates),
                                ..OrderFacts::default()
                            };
                            let mut deltas = Deltas::default();
                            if let Some(eta) = &eta {
                                fold_courier_event(eta, Some(&mut facts), &mut deltas);
                            }
                            let mut after = 0;
                            let mut count = 0;
                            loop {
                                let (page, next) = inner
                                    .orders
                                    .events_after(record.id(), after, crate::store::MAX_PAGE)
                                    .await?;
                                for event in &page {
                                    fold_order_event(&mut facts, event, &mut deltas);
                                    count += 1;
                                }
                                after = page.last().map_or(after, |e| e.seq);
                                if next.is_none() {
                                    break;
                                }
                            }
                            Ok((record.id(), facts, deltas, count))
                        }
                    })
                    .buffer_unordered(CONCURRENCY)
                    .collect()
                    .await;
            let mut facts = Vec::with_capacity(folded.len());
            for outcome in folded {
                let (order, f, d, count) = outcome?;
                orders += 1;
                order_events += count;
                deltas.merge(d);
                facts.push((order, f));
            }
            inner.repo.write_facts(generation, facts).await?;
            if last {
                break;
            }
            cursor = next;
        }
        let rows = inner.repo.write_cells(generation, 0, deltas.0).await?;
        let differences = self.compare(previous, generation).await?;
        let mut switched = false;
        if switch {
            // Another node may move the head meanwhile: keep trying with what it says.
            for _ in 0..16 {
                let Some(current) = inner.repo.current_head().await? else {
                    break;
                };
                let current = inner.repo.finish(current).await?;
                let mut next = current.value.clone();
                next.generation = generation;
                // The earlier of the two: events folded twice are passed over by facts.
                next.orders = std::cmp::min_by_key(orders_position.clone(), next.orders, |p| {
                    (p.minute, p.after.clone())
                });
                next.couriers = couriers_position.clone();
                if inner.repo.save_head(current.version, &next).await.is_ok() {
                    self.know_generation(generation);
                    switched = true;
                    break;
                }
            }
        }
        // The generation nothing reads any more goes: the replaced one once every node has
        // moved on (each reads the head's generation at most `GENERATION_FRESH` apart), or
        // this one when it was only written to compare.
        let removed_rows = if switched {
            tokio::time::sleep(super::GENERATION_FRESH * 2).await;
            inner.repo.drop_generation(previous).await?
        } else {
            inner.repo.drop_generation(generation).await?
        };
        Ok(RebuildReport {
            previous_generation: previous,
            generation,
            switched,
            orders,
            order_events,
            courier_events,
            rows,
            differences,
            removed_rows,
        })
    }

    /// The rows that differ between two generations, by key without the generation.
    pub async fn compare(&self, a: u64, b: u64) -> Result<Vec<String>, AnalyticsError> {
        let strip = |rows: Vec<(crate::store::Key, crate::domain::analytics::Cell)>| {
            rows.into_iter()
                .map(|(k, c)| {
                    let partition = k.partition.split_once('/').map_or("", |(_, p)| p);
                    (format!("{partition}:{}", k.clustering), c)
                })
                .collect::<BTreeMap<_, _>>()
        };
        let left = strip(self.inner.repo.all_cells(a).await?);
        let right = strip(self.inner.repo.all_cells(b).await?);
        let mut differences = Vec::new();
        for (key, cell) in &left {
            if right.get(key) != Some(cell) {
                differences.push(key.clone());
            }
        }
        for key in right.keys() {
            if !left.contains_key(key) {
                differences.push(key.clone());
            }
        }
        Ok(differences)
    }

    /// Writes `orders` synthetic orders of `stores` stores over the `days` days before now
    /// into the rollups, through the same fold as real events: for benchmarks. Stores,
    /// products and couriers get fixed ids, so seeding twice adds the same history twice.
    pub async fn seed(
        &self,
        stores: u32,
        orders: u64,
        days: u32,
    ) -> Result<SeedReport, AnalyticsError> {
        let began = std::time::Instant::now();
        let inner = &self.inner;
        let start = Position::at((Utc::now() - Duration::hours(1)).timestamp_millis());
        let mut head = inner.repo.finish(inner.repo.head(&start).await?).await?;
        let generation = head.value.generation;
        let stores = stores.max(1);
        let days = days.max(1);
        let couriers = (stores / 2).max(1);
        let cells: Vec<String> = (0..stores)
            .map(|n| {
                // Stores spread over a grid around Berlin, 40 to a row.
                h3o::LatLng::new(
                    52.40 + f64::from(n % 40) * 0.006,
                    13.20 + f64::from(n / 40) * 0.01,
                )
                .map(|p| p.to_cell(h3o::Resolution::Eight).to_string())
                .unwrap_or_default()
            })
            .collect();
        let today = Utc::now().date_naive();
        let first = today - chrono::Days::new(u64::from(days));
        let per_day = orders / u64::from(days);
        let mut rng = StdRng::seed_from_u64(7);
        let mut rows = 0;
        let mut written = 0u64;
        for d in 0..days {
            let day = first + chrono::Days::new(u64::from(d));
            let count = if d + 1 == days {
                orders - written
            } else {
                per_day
            };
            written += count;
            let midnight = Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0).unwrap_or_default());
            let mut deltas = Deltas::default();
            for _ in 0..count {
                let store = rng.random_range(0..stores);
                let courier = seeded_courier(rng.random_range(0..couriers));
                let product = rng.random_range(0..5u32);
                let units = rng.random_range(1..4u64);
                let price = 500 + i64::from(product) * 250;
                let goods = price * units as i64;
                let money = OrderMoney {
                    store: seeded_store(store),
                    currency: "EUR".into(),
                    cell8: Some(cells[store as usize].clone()),
                    goods,
                    discount: 0,
                    delivery_fee: 299,
                    paid: goods + 299,
                    shares: Shares::of(goods, 299, inner.default_rates),
                    lines: vec![Line {
                        product: format!("{:08x}-0000-7000-8000-{:012x}", store, product),
                        title: format!("Product {product} of store {store}"),
                        units,
                        amount: goods,
                    }],
                };
                let paid = midnight + Duration::seconds(rng.random_range(0..86_000));
                let mut facts = OrderFacts {
                    order: Some(money),
                    ..OrderFacts::default()
                };
                let mut at = paid;
                let mut seq = 1;
                let mut event = |kind: OrderEventKind, after_s: i64, rng: &mut StdRng| {
                    at += Duration::seconds(rng.random_range(0..after_s.max(1)));
                    seq += 1;
                    OrderEvent {
                        seq,
                        at,
                        kind,
                        status_after: OrderStatus::Paid,
                    }
                };
                let mut events = vec![event(OrderEventKind::Paid, 1, &mut rng)];
                let fate = rng.random_range(0..100);
                if fate < 3 {
                    events.push(event(
                        OrderEventKind::Rejected {
                            reason: "closed".into(),
                        },
                        300,
                        &mut rng,
                    ));
                } else if fate < 5 {
                    events.push(event(
                        OrderEventKind::Cancelled {
                            by: crate::domain::order::CancelledBy::Customer,
                        },
                        120,
                        &mut rng,
                    ));
                } else {
                    events.push(event(OrderEventKind::Accepted, 120, &mut rng));
                    events.push(event(OrderEventKind::Ready, 1200, &mut rng));
                    events.push(event(
                        OrderEventKind::CourierAssigned { courier },
                        300,
                        &mut rng,
                    ));
                    events.push(event(OrderEventKind::PickedUp, 600, &mut rng));
                    events.push(event(
                        OrderEventKind::Delivered { at_drop_off: true },
                        1800,
                        &mut rng,
                    ));
                    if fate > 97 {
                        events.push(event(
                            OrderEventKind::Refunded {
                                amount: Money::new(price, Currency::EUR),
                                lines: vec![],
                                reference: None,
                            },
                            3600,
                            &mut rng,
                        ));
                    }
                }
                for e in &events {
                    fold_order_event(&mut facts, e, &mut deltas);
                }
                if let Some(picked) = facts.picked_up_at {
                    let eta = CourierEvent {
                        id: uuid::Uuid::now_v7(),
                        courier,
                        at: picked,
                        at_ms: picked.timestamp_millis(),
                        kind: CourierEventKind::PickedUp {
                            order: OrderId::new(),
                            eta_s: 900,
                        },
                    };
                    fold_courier_event(&eta, Some(&mut facts), &mut deltas);
                    for kind in [
                        CourierEventKind::Offered {
                            order: OrderId::new(),
                        },
                        CourierEventKind::Accepted {
                            order: OrderId::new(),
                        },
                        CourierEventKind::Seen {
                            cell: cells[store as usize].clone(),
                        },
                    ] {
                        let e = CourierEvent {
                            kind,
                            ..eta.clone()
                        };
                        fold_courier_event(&e, None, &mut deltas);
                    }
                }
            }
            head = inner.repo.reserve(head).await?;
            rows += inner
                .repo
                .write_cells(generation, head.value.batch, deltas.0)
                .await?;
        }
        Ok(SeedReport {
            stores,
            orders,
            days,
            rows,
            seconds: began.elapsed().as_secs_f64(),
            first_store: seeded_store(0),
        })
    }
}
