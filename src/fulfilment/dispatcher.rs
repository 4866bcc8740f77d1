//! Dispatch: which courier takes an order.
//!
//! An accepted order gets a row in `dispatches` (partition `pending`) from the order actor,
//! durably, before anyone looks for a courier. Every node runs a [`Dispatcher`] loop that scans
//! those rows and moves each one on by compare-and-set, so rows survive restarts and two nodes
//! never both offer the same order:
//!
//! - `waiting` — ask the [`CourierIndex`] for the nearest available couriers around the
//!   vendor (H3 rings outwards, ranked by distance and load), skip the ones that declined, and
//!   offer the order to the best one for `offer_timeout`; nobody near → wait with a backoff
//!   (and show up in [`Dispatcher::unassigned`] for admins).
//! - `offered` — the courier answers through [`Dispatcher::respond`]; silence past the
//!   deadline counts as declining and the order goes back to `waiting`.
//! - `assigning` — the courier accepted: the delivery is handed to the courier actor, then
//!   `courier_assigned` is recorded on the order, then the row is deleted. A crash in between
//!   is finished by the next round (both steps are idempotent).
//!
//! Offers and assignments reach the courier's session on topic `courier.{id}.inbox`, whichever
//! node it is connected to.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::actors::courier::{Assign, CourierActor, CourierError, Unassign};
use crate::actors::order::{ApplyCommand, CommandError, OrderActor};
use crate::actors::{ActorError, Registry};
use crate::bus::SharedBus;
use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::dispatch::index::CourierIndex;
use crate::dispatch::queue::{DispatchQueue, key};
use crate::domain::analytics::{CourierEvent, CourierEventKind};
use crate::domain::courier::ActiveDelivery;
use crate::domain::dispatch::UnassignedOrder;
use crate::domain::dispatch::{DispatchRecord, DispatchState};
use crate::domain::geo::GeoPoint;
use crate::domain::ids::{OrderId, UserId};
use crate::domain::order::{OrderCommand, OrderRecord, OrderStatus};
use crate::store::courier_journal::CourierJournal;
use crate::store::orders::OrderRepo;
use crate::store::typed::{Change, ModifyError, Versioned};
use crate::store::{SharedStore, StoreError, StoreResult};
use crate::streams::frames::{InboxFrame, OfferSummary, Stop};
use crate::streams::inbox_topic;

/// The shortest wait between rounds: rows that are due are looked at again after this long.
const ROUND_EVERY: Duration = Duration::from_millis(250);
/// The longest wait between rounds when nothing is due and nothing wakes the loop: rows queued
/// by another node (whose own dispatcher normally takes them at once) are found within this.
const IDLE_ROUND_EVERY: Duration = Duration::from_secs(2);
/// How long an accepted offer may stay unfinished before a dispatcher round finishes it.
const ASSIGNING_GRACE: chrono::Duration = chrono::Duration::seconds(10);
/// Couriers asked from the index per offer (the best one not already holding an offer wins).
const CANDIDATES: usize = 8;

/// Everything live handlers and sessions share: couriers, dispatch, positions and feeds.
#[derive(Clone)]
pub struct Live {
    pub couriers: Registry<CourierActor>,
    pub dispatcher: Dispatcher,
    pub index: CourierIndex,
    pub board: crate::dispatch::board::Board,
    pub courier_repo: crate::store::couriers::CourierRepo,
    pub feed: crate::store::live::VendorFeedRepo,
    pub open: crate::store::live::OpenOrdersRepo,
    pub settings: crate::config::LiveSettings,
}

/// Why a courier's answer to an offer did not go through.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("the offer expired or was withdrawn")]
    OfferGone,
    #[error("the courier already carries as many orders as they take")]
    AtCapacity,
    #[error("the order no longer needs a courier")]
    OrderGone,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Actor(#[from] ActorError),
}

impl From<ModifyError<DispatchError>> for DispatchError {
    fn from(e: ModifyError<DispatchError>) -> Self {
        match e {
            ModifyError::Rejected(e) => e,
            ModifyError::Store(e) => DispatchError::Store(e),
        }
    }
}

/// What the dispatcher works with.
pub struct DispatcherParts {
    pub queue: DispatchQueue,
    pub index: CourierIndex,
    pub bus: SharedBus,
    pub orders: Registry<OrderActor>,
    pub couriers: Registry<CourierActor>,
    pub catalog: Catalog,
    pub store: SharedStore,
    pub clock: Clock,
    /// The platform's live settings (the offer timeout and the dispatch radius).
    pub settings: crate::settings::SettingsView,
    /// Where offers and their answers are recorded for analytics.
    pub journal: CourierJournal,
}

/// Offers waiting orders to couriers; cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<DispatcherParts>,
}

/// An order's pickup and drop-off, as the courier needs them.
struct Route {
    record: OrderRecord,
    vendor_name: String,
    pickup: Stop,
    pickup_point: GeoPoint,
    dropoff: Stop,
    dropoff_point: GeoPoint,
}

impl Dispatcher {
    pub fn new(parts: DispatcherParts) -> Self {
        Dispatcher {
            inner: Arc::new(parts),
        }
    }

    pub fn queue(&self) -> &DispatchQueue {
        &self.inner.queue
    }

    /// Runs rounds until the returned task is aborted.
    pub fn start(&self) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut pause = ROUND_EVERY;
            loop {
                tokio::select! {
                    () = this.inner.queue.wake.notified() => {}
                    () = tokio::time::sleep(pause) => {}
                }
                pause = match this.round().await {
                    Ok(next_due) => this.pause_until(next_due),
                    Err(e) => {
                        tracing::warn!(error = %e, "dispatch round failed; retrying");
                        ROUND_EVERY
                    }
                };
            }
        })
    }

    /// How long the loop may sleep before the next round: until the earliest row falls due,
    /// at least [`ROUND_EVERY`] and at most [`IDLE_ROUND_EVERY`]. Scanning the queue is not
    /// free (the store walks past the rows of finished dispatches until they are compacted
    /// away), so an idle queue is not scanned four times a second.
    fn pause_until(&self, next_due: Option<DateTime<Utc>>) -> Duration {
        let Some(due) = next_due else {
            return IDLE_ROUND_EVERY;
        };
        (due - self.inner.clock.now())
            .to_std()
            .unwrap_or(Duration::ZERO)
            .clamp(ROUND_EVERY, IDLE_ROUND_EVERY)
    }

    /// Moves on every queued order that is due; answers when the earliest of the rows left
    /// falls due (`None` for an empty queue).
    pub async fn round(&self) -> StoreResult<Option<DateTime<Utc>>> {
        let now = self.inner.clock.now();
        let mut next_due: Option<DateTime<Utc>> = None;
        for row in self.inner.queue.pending(10_000).await? {
            let order = row.value.order_id;
            // A row moved on in this round is looked at again in the next one.
            let due = match &row.value.state {
                DispatchState::Waiting { next_at } if *next_at > now => *next_at,
                DispatchState::Offered { expires_at, .. } if *expires_at > now => *expires_at,
                DispatchState::Assigning {
                    since: Some(since), ..
                } if *since + ASSIGNING_GRACE > now => *since + ASSIGNING_GRACE,
                _ => now,
            };
            next_due = Some(next_due.map_or(due, |earliest| earliest.min(due)));
            let outcome = match &row.value.state {
                DispatchState::Waiting { next_at } if *next_at <= now => self.offer(row).await,
                DispatchState::Offered {
                    offer_id,
                    courier,
                    expires_at,
                } if *expires_at <= now => {
                    let (offer_id, courier) = (*offer_id, *courier);
                    self.lapse(row, offer_id, courier).await
                }
                DispatchState::Assigning { courier, since }
                    if since.is_none_or(|at| at + ASSIGNING_GRACE <= now) =>
                {
                    let courier = *courier;
                    match self.finish(order, courier).await {
                        Ok(route) => {
                            self.tell(courier, &assignment(&route)).await;
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                }
                _ => Ok(()),
            };
            match outcome {
                Ok(()) | Err(DispatchError::OrderGone | DispatchError::OfferGone) => {}
                Err(e) => tracing::warn!(order_id = %order, error = %e, "dispatch step failed"),
            }
        }
        Ok(next_due)
    }

    /// Orders waiting with nobody found yet.
    pub async fn unassigned(&self) -> StoreResult<Vec<UnassignedOrder>> {
        Ok(self
            .inner
            .queue
            .pending(10_000)
            .await?
            .into_iter()
            .filter(|row| {
                row.value.attempts > 0 && matches!(row.value.state, DispatchState::Waiting { .. })
            })
            .map(|row| UnassignedOrder {
                order_id: row.value.order_id,
                vendor_id: row.value.vendor_id,
                since: row.value.since,
                attempts: row.value.attempts,
            })
            .collect())
    }

    async fn route(&self, order: OrderId) -> Result<Route, DispatchError> {
        let record = OrderRepo::new(self.inner.store.clone())
            .load(order)
            .await?
            .ok_or(DispatchError::OrderGone)?
            .value;
        let vendor_id = record.order.vendor_id;
        let vendor = match self.inner.catalog.directory.get(vendor_id) {
            Some(vendor) => vendor,
            None => {
                self.inner
                    .catalog
                    .repo
                    .vendor(vendor_id)
                    .await?
                    .ok_or(DispatchError::OrderGone)?
                    .value
            }
        };
        let pickup_point = vendor.location;
        let (dropoff_point, dropoff_address) = match &record.delivery_address {
            Some(address) => (address.location, address.address.clone()),
            None => (pickup_point, vendor.pickup_address.clone()),
        };
        Ok(Route {
            vendor_name: vendor.name.clone(),
            pickup: Stop {
                lat: pickup_point.lat,
                lng: pickup_point.lng,
                address: vendor.pickup_address.clone(),
            },
            pickup_point,
            dropoff: Stop {
                lat: dropoff_point.lat,
                lng: dropoff_point.lng,
                address: dropoff_address,
            },
            dropoff_point,
            record,
        })
    }

    /// Offers a waiting order to the best available courier, or waits longer.
    async fn offer(&self, row: Versioned<DispatchRecord>) -> Result<(), DispatchError> {
        let order = row.value.order_id;
        let route = match self.route(order).await {
            Ok(route) if needs_courier(&route.record) => route,
            Ok(_) | Err(DispatchError::OrderGone) => return self.drop_row(order).await,
            Err(e) => return Err(e),
        };
        let now = self.inner.clock.now();
        let settings = self.inner.settings.get();
        let timeout = chrono::Duration::from_std(settings.offer_timeout())
            .unwrap_or(chrono::Duration::seconds(20));
        let declined = row.value.declined.clone();
        let candidates = self.inner.index.nearest(
            route.pickup_point,
            settings.dispatch_radius_km * 1000.0,
            CANDIDATES,
            &|courier| declined.contains(&courier),
        );
        let hold_until = std::time::Instant::now() + settings.offer_timeout();
        let chosen = candidates
            .into_iter()
            .find(|c| self.inner.index.hold(c.courier, hold_until));
        let attempts = row.value.attempts + 1;
        let Some(candidate) = chosen else {
            let next_at = now + backoff(attempts);
            // Nobody else: those who declined a while ago are asked again from the next round.
            let again = row.value.asks_everyone_again(now);
            let waiting = DispatchRecord {
                attempts,
                state: DispatchState::Waiting { next_at },
                declined: if again {
                    Vec::new()
                } else {
                    row.value.declined
                },
                last_declined_at: if again {
                    None
                } else {
                    row.value.last_declined_at
                },
                ..row.value
            };
            // A conflict means another node moved the order on: nothing to do.
            let _ = self
                .inner
                .queue
                .rows
                .update(&key(order), row.version, &waiting)
                .await?;
            if attempts == 1 {
                tracing::info!(order_id = %order, "no courier near; the order waits unassigned");
            }
            return Ok(());
        };
        let offer_id = Uuid::now_v7();
        let expires_at = now + timeout;
        let offered = DispatchRecord {
            attempts,
            state: DispatchState::Offered {
                offer_id,
                courier: candidate.courier,
                expires_at,
            },
            ..row.value
        };
        if self
            .inner
            .queue
            .rows
            .update(&key(order), row.version, &offered)
            .await?
            .is_err()
        {
            // Another node moved the order on meanwhile.
            self.inner.index.release(candidate.courier);
            return Ok(());
        }
        let items = route.record.order.lines.iter().map(|l| l.quantity).sum();
        let frame = InboxFrame::Offer {
            offer_id,
            order_id: order,
            summary: OfferSummary {
                vendor_name: route.vendor_name.clone(),
                items,
                total: route.record.totals.map(|t| t.total),
            },
            pickup: route.pickup.clone(),
            dropoff: route.dropoff.clone(),
            distance_m: candidate.distance_m.round().clamp(0.0, f64::from(u32::MAX)) as u32,
            expires_at,
        };
        tracing::info!(order_id = %order, courier_id = %candidate.courier, %offer_id, "order offered");
        self.note(candidate.courier, CourierEventKind::Offered { order })
            .await;
        self.tell(candidate.courier, &frame).await;
        Ok(())
    }

    /// Records what happened to an offer in the courier journal. Analytics only: a failure
    /// is logged, never in the way of dispatch.
    async fn note(&self, courier: UserId, kind: CourierEventKind) {
        let event = CourierEvent {
            id: CourierJournal::new_id(),
            courier,
            at: self.inner.clock.now(),
            at_ms: Utc::now().timestamp_millis(),
            kind,
        };
        if let Err(e) = self.inner.journal.append(&[event]).await {
            tracing::warn!(courier_id = %courier, error = %e, "offer not recorded for analytics");
        }
    }

    /// An offer ran out: the courier counts as having declined.
    async fn lapse(
        &self,
        row: Versioned<DispatchRecord>,
        offer_id: Uuid,
        courier: UserId,
    ) -> Result<(), DispatchError> {
        let order = row.value.order_id;
        let waiting = row.value.declined_by(courier, self.inner.clock.now());
        if self
            .inner
            .queue
            .rows
            .update(&key(order), row.version, &waiting)
            .await?
            .is_ok()
        {
            self.inner.index.release(courier);
            tracing::info!(order_id = %order, courier_id = %courier, "offer lapsed");
            self.note(courier, CourierEventKind::Expired { order })
                .await;
            self.tell(courier, &InboxFrame::OfferWithdrawn { offer_id })
                .await;
            self.inner.queue.wake.notify_one();
        }
        Ok(())
    }

    /// A courier's answer to an offer. On acceptance the delivery is theirs and its route is
    /// returned as the assignment frame to send.
    pub async fn respond(
        &self,
        courier: UserId,
        order: OrderId,
        offer_id: Uuid,
        accept: bool,
    ) -> Result<Option<serde_json::Value>, DispatchError> {
        let now = self.inner.clock.now();
        self.inner
            .queue
            .rows
            .modify(&key(order), |current| {
                let Some(record) = current else {
                    return Err(DispatchError::OfferGone);
                };
                match &record.state {
                    DispatchState::Offered {
                        offer_id: offered,
                        courier: to,
                        expires_at,
                    } if *offered == offer_id && *to == courier && *expires_at > now => {}
                    _ => return Err(DispatchError::OfferGone),
                }
                let next = if accept {
                    DispatchRecord {
                        state: DispatchState::Assigning {
                            courier,
                            since: Some(now),
                        },
                        ..record.clone()
                    }
                } else {
                    record.clone().declined_by(courier, now)
                };
                Ok(Change::Put(next, ()))
            })
            .await?;
        self.inner.index.release(courier);
        let answer = if accept {
            CourierEventKind::Accepted { order }
        } else {
            CourierEventKind::Declined { order }
        };
        self.note(courier, answer).await;
        if !accept {
            tracing::info!(order_id = %order, courier_id = %courier, "offer declined");
            self.inner.queue.wake.notify_one();
            return Ok(None);
        }
        let route = self.finish(order, courier).await?;
        Ok(serde_json::to_value(assignment(&route)).ok())
    }

    /// Hands an accepted order to its courier and records the assignment on the order.
    async fn finish(&self, order: OrderId, courier: UserId) -> Result<Route, DispatchError> {
        let route = match self.route(order).await {
            Ok(route) => route,
            Err(DispatchError::OrderGone) => {
                self.drop_row(order).await?;
                return Err(DispatchError::OrderGone);
            }
            Err(e) => return Err(e),
        };
        let already = route.record.courier_id == Some(courier);
        if !already && !needs_courier(&route.record) {
            self.drop_row(order).await?;
            return Err(DispatchError::OrderGone);
        }
        let delivery = ActiveDelivery {
            order_id: order,
            vendor_id: route.record.order.vendor_id,
            pickup: route.pickup_point,
            dropoff: route.dropoff_point,
            picked_up: false,
            arrived_at_pickup: false,
            arriving: false,
            wrong_codes: 0,
        };
        match self.inner.couriers.send(courier, Assign(delivery)).await? {
            Ok(()) => {}
            Err(CourierError::AtCapacity) => {
                self.back_to_waiting(order, courier).await?;
                return Err(DispatchError::AtCapacity);
            }
            Err(e) => {
                return Err(DispatchError::Store(StoreError::Unavailable(e.to_string())));
            }
        }
        if !already {
            match self
                .inner
                .orders
                .send(order, ApplyCommand(OrderCommand::AssignCourier { courier }))
                .await?
            {
                Ok(_) => {}
                Err(CommandError::Illegal(_) | CommandError::NotFound) => {
                    let _ = self.inner.couriers.send(courier, Unassign(order)).await;
                    self.drop_row(order).await?;
                    return Err(DispatchError::OrderGone);
                }
                Err(e) => {
                    return Err(DispatchError::Store(StoreError::Unavailable(e.to_string())));
                }
            }
        }
        self.drop_row(order).await?;
        tracing::info!(order_id = %order, courier_id = %courier, "courier assigned");
        Ok(route)
    }

    async fn back_to_waiting(&self, order: OrderId, courier: UserId) -> StoreResult<()> {
        let now = self.inner.clock.now();
        self.inner
            .queue
            .rows
            .modify(&key(order), |current| {
                Ok::<_, StoreError>(match current {
                    Some(record) => Change::Put(record.clone().declined_by(courier, now), ()),
                    None => Change::Keep(()),
                })
            })
            .await
            .map_err(|e| match e {
                ModifyError::Rejected(e) | ModifyError::Store(e) => e,
            })?;
        self.inner.queue.wake.notify_one();
        Ok(())
    }

    async fn drop_row(&self, order: OrderId) -> Result<(), DispatchError> {
        self.inner
            .queue
            .rows
            .modify(&key(order), |_| Ok::<_, DispatchError>(Change::Delete(())))
            .await?;
        Ok(())
    }

    async fn tell(&self, courier: UserId, frame: &InboxFrame) {
        let payload = match serde_json::to_vec(frame) {
            Ok(bytes) => Bytes::from(bytes),
            Err(e) => {
                tracing::error!(error = %e, "inbox frame not encodable");
                return;
            }
        };
        let topic = inbox_topic(courier);
        if let Err(e) = self.inner.bus.publish(&topic, payload).await {
            tracing::warn!(topic, error = %e, "courier inbox message not published");
        }
    }
}

fn assignment(route: &Route) -> InboxFrame {
    InboxFrame::Assignment {
        order_id: route.record.id(),
        pickup: route.pickup.clone(),
        dropoff: route.dropoff.clone(),
    }
}

/// Whether an order still waits for a courier.
fn needs_courier(record: &OrderRecord) -> bool {
    record.courier_id.is_none()
        && matches!(
            record.status(),
            OrderStatus::Accepted | OrderStatus::Preparing | OrderStatus::ReadyForPickup
        )
}

/// How long an order with nobody near waits before the next look: 2 s, doubling to 30 s.
fn backoff(attempts: u32) -> chrono::Duration {
    let secs = 2i64 << attempts.saturating_sub(1).min(4);
    chrono::Duration::seconds(secs.min(30))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_half_a_minute() {
        let secs: Vec<i64> = (1..=7).map(|a| backoff(a).num_seconds()).collect();
        assert_eq!(secs, vec![2, 4, 8, 16, 30, 30, 30]);
    }
}
