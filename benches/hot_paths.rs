//! Cost of the per-request hot paths on one core, with criterion: H3 indexing of a point, GPS
//! cleaning of one upload, the courier index's nearest-courier query, one order event appended
//! (and synced) on the embedded store, and the JSON encoding of a live location frame.
//!
//! Run with `cargo bench --bench hot_paths` (add `-- --quick` for a fast pass).

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Duration, TimeZone as _, Utc};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use rand::{Rng as _, SeedableRng as _};

use hexmarket::dispatch::index::CourierIndex;
use hexmarket::domain::courier::{GpsPoint, clean_batch};
use hexmarket::domain::geo::{GeoPoint, disc_point};
use hexmarket::domain::ids::{OrderId, UserId};
use hexmarket::domain::order::{OrderEvent, OrderEventKind, OrderStatus};
use hexmarket::seed::{DEMO_CENTER, DEMO_RADIUS_KM};
use hexmarket::store::SharedStore;
use hexmarket::store::embedded::EmbeddedStore;
use hexmarket::store::orders::OrderRepo;
use hexmarket::streams::frames::LocationFrame;

const COURIERS: usize = 10_000;

/// Random points spread uniformly over the demo city's disc, drawn exactly as `hexmarket-loadgen
/// nearby` draws them (same seed, same order of draws), so both see the same city.
struct Disc {
    rng: rand::rngs::StdRng,
}

impl Disc {
    fn new(seed: u64) -> Self {
        Disc {
            rng: rand::rngs::StdRng::seed_from_u64(seed),
        }
    }

    fn point(&mut self) -> GeoPoint {
        let (lat, lng) = disc_point(
            DEMO_CENTER,
            DEMO_RADIUS_KM * 1_000.0,
            self.rng.random(),
            self.rng.random(),
        );
        GeoPoint { lat, lng }
    }
}

fn at(seconds: i64) -> DateTime<Utc> {
    // 2025-01-01T00:00:00Z: a fixed clock keeps every run identical.
    Utc.timestamp_opt(1_735_689_600 + seconds, 0)
        .single()
        .unwrap_or_default()
}

/// A courier riding north-east at ≈ 5 m/s, one fix every 2 s, all of them acceptable.
fn track(len: usize) -> Vec<GpsPoint> {
    (0..len)
        .map(|i| GpsPoint {
            lat: DEMO_CENTER.lat + i as f64 * 0.000_06,
            lng: DEMO_CENTER.lng + i as f64 * 0.000_09,
            accuracy_m: 8.0,
            heading_deg: Some(45.0),
            speed_mps: Some(5.0),
            recorded_at: at(2 * i as i64),
        })
        .collect()
}

fn h3_indexing(c: &mut Criterion) {
    let mut disc = Disc::new(7);
    let points: Vec<GeoPoint> = (0..1_024).map(|_| disc.point()).collect();
    let mut i = 0;
    c.bench_function("geo/cell (H3 res 9)", |b| {
        b.iter(|| {
            i = (i + 1) % points.len();
            black_box(black_box(points[i]).cell())
        })
    });
}

fn gps_cleaning(c: &mut Criterion) {
    let mut group = c.benchmark_group("courier/clean_batch");
    let last = GpsPoint {
        recorded_at: at(-2),
        ..track(1)[0].clone()
    };
    for len in [1, 50] {
        let points = track(len);
        let now = at(2 * len as i64);
        group.bench_function(format!("{len} points"), |b| {
            b.iter_batched(
                || points.clone(),
                |points| clean_batch(Some(&last), points, now, 50.0),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn courier_index(c: &mut Criterion) {
    // The city of `hexmarket-loadgen nearby` with its default seed: 10,000 couriers, then the
    // query origins drawn from the same stream.
    let mut disc = Disc::new(42);
    let index = CourierIndex::new();
    for _ in 0..COURIERS {
        index.upsert(UserId::new(), disc.point(), 0, 2);
    }
    let origins: Vec<GeoPoint> = (0..4_096).map(|_| disc.point()).collect();
    let no_one = |_: UserId| false;
    let mut i = 0;
    c.bench_function("dispatch/nearest (10k couriers, 3 km, 5)", |b| {
        b.iter(|| {
            i = (i + 1) % origins.len();
            index.nearest(black_box(origins[i]), 3_000.0, 5, &no_one)
        })
    });
}

fn order_event_append(c: &mut Criterion) {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => panic!("no tokio runtime: {e}"),
    };
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => panic!("no temporary directory: {e}"),
    };
    let store: SharedStore = match runtime.block_on(async { EmbeddedStore::open(dir.path()) }) {
        Ok(store) => std::sync::Arc::new(store),
        Err(e) => panic!("embedded store did not open: {e:#}"),
    };
    let repo = OrderRepo::new(store);
    let order = OrderId::new();
    let seq = AtomicU64::new(0);
    let started = Utc::now();
    // One writer, one event at a time: every append waits for its own sync to disk, so this is
    // the fsync-bound latency, not the group-commit throughput the server reaches under load.
    c.bench_function("store/append_event (embedded, synced)", |b| {
        b.iter(|| {
            let seq = seq.fetch_add(1, Ordering::Relaxed) + 1;
            let event = OrderEvent {
                seq,
                at: started + Duration::milliseconds(seq as i64),
                kind: OrderEventKind::Preparing,
                status_after: OrderStatus::Preparing,
            };
            match runtime.block_on(repo.append_event(order, &event)) {
                Ok(Ok(())) => {}
                Ok(Err(_)) => panic!("event {seq} was already there"),
                Err(e) => panic!("append failed: {e}"),
            }
        })
    });
    drop(repo);
    drop(runtime);
}

fn location_frame_encoding(c: &mut Criterion) {
    let frame = LocationFrame {
        lat: 52.523_41,
        lng: 13.411_87,
        heading_deg: Some(87.5),
        speed_mps: Some(4.2),
        recorded_at: at(0),
        eta_s: 312,
    };
    let mut group = c.benchmark_group("ws/location frame");
    group.bench_function("serde_json::to_vec", |b| {
        b.iter(|| serde_json::to_vec(black_box(&frame)).unwrap_or_default())
    });
    // What watchers get: the frame with `"type": "location"` added, encoded as `ws::tagged` and
    // the courier actor do it (through a `serde_json::Value`).
    group.bench_function("tagged {\"type\":\"location\"}", |b| {
        b.iter(|| tagged("location", black_box(&frame)))
    });
    group.finish();
}

/// `{"type": kind, ...fields of value}` as text: a copy of `hexmarket::ws::tagged`, which is
/// private to the crate.
fn tagged<T: serde::Serialize>(kind: &str, value: &T) -> Option<String> {
    let mut value = serde_json::to_value(value).ok()?;
    let object = value.as_object_mut()?;
    object.insert("type".to_owned(), kind.into());
    serde_json::to_string(&value).ok()
}

criterion_group!(
    benches,
    h3_indexing,
    gps_cleaning,
    courier_index,
    order_event_append,
    location_frame_encoding
);
criterion_main!(benches);
