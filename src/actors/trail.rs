//! The trail drainer: every courier's GPS points go to the store through here, many couriers'
//! messages in one write.
//!
//! A courier pinging once a second is thousands of tiny writes a second across a city. Each
//! one written on its own would cost a sync and the wake-ups of the threads around it, for a
//! few dozen bytes. The drainer takes what arrives on its bounded queue, waits a short window
//! for other couriers' points to join, appends them all in one `put` (one sync on the
//! embedded store, one batch per partition on ScyllaDB) and only then answers each sender, so
//! a courier's acknowledgement still means its points are durable. A full queue makes senders
//! wait: points are never dropped, and memory stays bounded.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::domain::courier::GpsPoint;
use crate::domain::ids::UserId;
use crate::store::couriers::CourierRepo;
use crate::store::{SharedStore, Store, StoreError, StoreResult};

/// Messages waiting for the drainer before senders wait for room.
const QUEUE_DEPTH: usize = 16 * 1024;
/// Most points appended by one write; a busier window is written in several.
const MAX_POINTS: usize = 4096;
/// Writes under way at once (see [`drain`]).
const WRITES_IN_FLIGHT: usize = 4;

struct Pending {
    courier: UserId,
    points: Vec<GpsPoint>,
    done: oneshot::Sender<StoreResult<()>>,
}

/// Where courier actors hand their accepted points.
#[derive(Clone)]
pub struct TrailDrainer {
    queue: mpsc::Sender<Pending>,
}

impl TrailDrainer {
    /// Starts the drainer on the current runtime, writing trails kept for `retention`.
    /// `window` is how long the first message of a write waits for others (zero: only those
    /// already queued join it). The drainer holds the store weakly: it never keeps a stopped
    /// node's store open.
    pub fn start(store: &SharedStore, retention: Duration, window: Duration) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(drain(Arc::downgrade(store), retention, rx, window));
        TrailDrainer { queue }
    }

    /// Appends a courier's points to their trail; durable when this returns.
    pub async fn append(&self, courier: UserId, points: Vec<GpsPoint>) -> StoreResult<()> {
        if points.is_empty() {
            return Ok(());
        }
        let (done, answer) = oneshot::channel();
        self.queue
            .send(Pending {
                courier,
                points,
                done,
            })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the trail drainer stopped".to_owned())
}

/// Writes what arrives until every sender is gone, the queue is empty and every write has
/// been answered.
///
/// Up to [`WRITES_IN_FLIGHT`] writes are under way at once: while one waits for its sync, the
/// next window's messages are gathered and encoded, and the store's writer commits writes that
/// meet in its queue together. With one write at a time the couriers waited for each other's
/// syncs in turn and the node's core sat partly idle under a full queue. Order between writes
/// does not matter: every point is its own row, keyed by its time.
async fn drain(
    store: Weak<dyn Store>,
    retention: Duration,
    mut rx: mpsc::Receiver<Pending>,
    window: Duration,
) {
    let writes = Arc::new(Semaphore::new(WRITES_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let mut points = first.points.len();
        let mut batch = vec![first];
        // Nothing polls the queue while this sleeps, so the messages that arrive meanwhile
        // wake nobody: one wake-up per write, however many couriers it carries.
        if !window.is_zero() {
            tokio::time::sleep(window).await;
        }
        // Waiting for room lets more messages gather for this write.
        let Ok(room) = Arc::clone(&writes).acquire_owned().await else {
            break;
        };
        while points < MAX_POINTS {
            match rx.try_recv() {
                Ok(next) => {
                    points += next.points.len();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let store = store.upgrade();
        tokio::spawn(async move {
            write(store, retention, batch, points).await;
            drop(room);
        });
    }
    let _ = writes.acquire_many(WRITES_IN_FLIGHT as u32).await;
    tracing::debug!("trail drainer stopped");
}

/// Appends one batch and answers each of its senders.
async fn write(
    store: Option<Arc<dyn Store>>,
    retention: Duration,
    batch: Vec<Pending>,
    points: usize,
) {
    let outcome = match store {
        Some(store) => {
            CourierRepo::new(store, retention)
                .append_trails(batch.iter().map(|p| (p.courier, p.points.as_slice())))
                .await
        }
        None => Err(stopped()),
    };
    if let Err(e) = &outcome {
        tracing::warn!(error = %e, messages = batch.len(), points, "trail write failed");
    }
    for pending in batch {
        let answer = match &outcome {
            Ok(()) => Ok(()),
            Err(e) => Err(StoreError::Unavailable(format!("trail write failed: {e}"))),
        };
        // A sender that went away (its session closed) needs no answer; its points are
        // written all the same.
        let _ = pending.done.send(answer);
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone as _, Utc};

    use super::*;
    use crate::store::SharedStore;
    use crate::store::embedded::EmbeddedStore;

    fn point(courier_second: u32) -> GpsPoint {
        GpsPoint {
            lat: 52.52,
            lng: 13.405,
            accuracy_m: 5.0,
            heading_deg: None,
            speed_mps: None,
            recorded_at: Utc
                .with_ymd_and_hms(2026, 12, 3, 12, 0, courier_second)
                .single()
                .unwrap_or_default(),
        }
    }

    /// What [`append_at_once`] leaves to look at: the drainer and the couriers, and the
    /// store (with its directory) the drainer holds only weakly.
    struct Appended {
        drainer: TrailDrainer,
        couriers: Vec<UserId>,
        _store: (SharedStore, tempfile::TempDir),
    }

    /// Sends `per_courier` points for each of `couriers` couriers at once, then checks that
    /// every courier's points are on its trail once every append is answered.
    async fn append_at_once(couriers: usize, per_courier: u32) -> Appended {
        let dir = tempfile::tempdir().unwrap();
        let store: SharedStore = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let retention = Duration::from_secs(86_400);
        let repo = CourierRepo::new(Arc::clone(&store), retention);
        let drainer = TrailDrainer::start(&store, retention, Duration::from_millis(20));
        let couriers: Vec<UserId> = (0..couriers).map(|_| UserId::new()).collect();
        let appends = couriers
            .iter()
            .map(|&c| drainer.append(c, (0..per_courier).map(point).collect()));
        for outcome in futures_util::future::join_all(appends).await {
            outcome.unwrap();
        }
        let day = chrono::NaiveDate::from_ymd_opt(2026, 12, 3).unwrap();
        for &courier in &couriers {
            let trail = repo.trail(courier, day, None, 100).await.unwrap();
            assert_eq!(trail.len(), per_courier as usize, "courier {courier}");
        }
        Appended {
            drainer,
            couriers,
            _store: (store, dir),
        }
    }

    #[tokio::test]
    async fn points_of_many_couriers_sent_at_once_are_all_durable_when_answered() {
        let appended = append_at_once(50, 2).await;
        // Nothing to write is answered at once.
        appended
            .drainer
            .append(appended.couriers[0], Vec::new())
            .await
            .unwrap();
    }

    /// 200 couriers × 50 points is more than two writes' worth, so the drainer splits the
    /// window and has several writes under way; each courier's answer still means all of its
    /// points are on the trail. (That the writes overlap is not observed here.)
    #[tokio::test]
    async fn a_window_too_big_for_one_write_is_durable_across_its_writes() {
        const { assert!(200 * 50 > 2 * MAX_POINTS) };
        append_at_once(200, 50).await;
    }
}
