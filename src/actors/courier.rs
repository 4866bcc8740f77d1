//! The courier actor: one per courier, holding their profile, whether they are online, where
//! they are, and the deliveries in their hands.
//!
//! GPS points arrive in batches (one point or a phone's offline buffer of up to 50). Each
//! batch is cleaned against the last accepted point ([`clean_batch`]; drops are counted by
//! reason in `/metrics`), and what survives moves the courier: the in-process
//! [`CourierIndex`] of this node is updated at once, other nodes hear about it on the
//! `couriers.presence` topic (when the courier changes cell, availability or load, and at
//! least every few seconds), and every delivery in hand gets a location frame with its ETA
//! on `order.{id}.live` and a check of its geofences. The batch is then appended to the trail
//! through the [`TrailDrainer`]; the acknowledgement waits for that write, the watchers do not.
//!
//! The row (profile, online, last position, deliveries) is written by compare-and-set on
//! every change of state, and the position with it on passivation; a second activation of
//! the same courier on another node is told to [`Reload`] by the courier's session when the
//! dispatcher of that node hands the courier an order.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::order::{ApplyCommand, CommandError, GetOrder, OrderActor};
use super::registry::{Entity, Passivate, Registry};
use super::trail::TrailDrainer;
use crate::bus::SharedBus;
use crate::clock::Clock;
use crate::dispatch::board::Board;
use crate::dispatch::index::CourierIndex;
use crate::domain::analytics::{CourierEvent, CourierEventKind};
use crate::domain::courier::{
    ARRIVED_AT_PICKUP_M, ARRIVING_M, CourierProfile, GpsPoint, RecentTrack, at_drop_off,
    clean_batch, eta_seconds, handoff_codes_match,
};
use crate::domain::courier::{ActiveDelivery, CourierRecord};
use crate::domain::geo::GeoPoint;
use crate::domain::ids::{OrderId, UserId};
use crate::domain::order::{IllegalTransition, OrderCommand};
use crate::metrics::Metrics;
use crate::store::courier_journal::CourierJournal;
use crate::store::couriers::CourierRepo;
use crate::store::typed::Versioned;
use crate::store::{StoreError, StoreResult};
use crate::streams::frames::{LocationFrame, LocationMessage};
use crate::streams::{PRESENCE_TOPIC, order_live_topic};

/// A courier's presence is re-announced at least this often while they move.
const PRESENCE_EVERY: Duration = Duration::from_secs(5);
/// Writes of the courier's row retried after losing to another activation.
const PERSIST_ATTEMPTS: usize = 3;
/// Wrong handoff codes allowed per delivery before only an admin can help.
pub const MAX_WRONG_CODES: u8 = 5;

/// What a courier actor needs.
#[derive(Clone)]
pub struct CourierDeps {
    pub repo: CourierRepo,
    /// Where accepted points go to be appended to the trail.
    pub trail: TrailDrainer,
    pub index: CourierIndex,
    pub board: Board,
    pub bus: SharedBus,
    pub orders: Registry<OrderActor>,
    pub clock: Clock,
    pub metrics: Metrics,
    /// The platform's live settings (GPS points less accurate than their limit are dropped).
    pub settings: crate::settings::SettingsView,
    /// This node, so its own presence announcements are not applied twice.
    pub node: uuid::Uuid,
    /// Where the cells a courier is seen online in, and the ETA at pickup, are recorded for
    /// analytics.
    pub journal: CourierJournal,
}

/// A courier's whereabouts as announced to every node's index.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Presence {
    pub node: uuid::Uuid,
    pub courier: UserId,
    /// Whether the courier can be offered orders at all (online and connected).
    pub online: bool,
    #[serde(default)]
    pub at: Option<GeoPoint>,
    pub load: u8,
    pub max_load: u8,
}

/// One courier.
pub struct CourierActor {
    id: UserId,
    deps: CourierDeps,
    record: Versioned<CourierRecord>,
    track: RecentTrack,
    /// Whether a session of this courier is connected to this node.
    connected: bool,
    last_presence: Option<(Instant, h3o::CellIndex)>,
    /// The position changed since the row was last written.
    position_dirty: bool,
    /// The hour (since the epoch) and the resolution-8 cells the courier was noted online in
    /// during it: each is noted in the courier journal once an hour.
    seen: (i64, Vec<h3o::CellIndex>),
}

impl Actor for CourierActor {
    type Context = Context<Self>;
}

impl Entity for CourierActor {
    type Id = UserId;
    type Deps = CourierDeps;
    const KIND: &'static str = "courier";

    fn activate(
        id: UserId,
        deps: CourierDeps,
    ) -> Pin<Box<dyn Future<Output = Result<Self, StoreError>> + Send>> {
        Box::pin(async move {
            let record = match deps.repo.load(id).await? {
                Some(record) => record,
                None => Versioned {
                    version: 0,
                    value: CourierRecord::new(id, deps.clock.now()),
                },
            };
            let mut record = record;
            forget_finished(&deps, &mut record).await;
            let mut track = RecentTrack::default();
            if let Some(p) = &record.value.position {
                track.push(p);
            }
            Ok(CourierActor {
                id,
                deps,
                record,
                track,
                connected: false,
                last_presence: None,
                position_dirty: false,
                seen: (0, Vec::new()),
            })
        })
    }
}

/// Why a courier's request was refused.
#[derive(Debug, thiserror::Error)]
pub enum CourierError {
    #[error("go online first")]
    NotOnline,
    #[error("this order is not one of yours")]
    NotYourOrder,
    #[error("you already carry as many orders as you take")]
    AtCapacity,
    #[error("the handoff code is wrong")]
    WrongCode,
    #[error("too many wrong handoff codes for this order; call support")]
    TooManyAttempts,
    #[error(transparent)]
    Illegal(#[from] IllegalTransition),
    #[error("the courier's state changed elsewhere; try again")]
    Conflict,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Unavailable(String),
}

impl From<CommandError> for CourierError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Illegal(illegal) => CourierError::Illegal(illegal),
            CommandError::NotFound => CourierError::NotYourOrder,
            CommandError::Store(e) => CourierError::Store(e),
            CommandError::Contended | CommandError::OutOfStock | CommandError::CouponExhausted => {
                CourierError::Unavailable(e.to_string())
            }
        }
    }
}

impl From<super::ActorError> for CourierError {
    fn from(e: super::ActorError) -> Self {
        CourierError::Unavailable(e.to_string())
    }
}

/// How a batch of points went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LocationAck {
    pub accepted: usize,
    pub dropped: usize,
}

/// The courier as they and admins see them.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CourierView {
    #[schema(value_type = String, format = Uuid)]
    pub courier_id: UserId,
    pub profile: CourierProfile,
    pub online: bool,
    pub position: Option<GpsPoint>,
    #[schema(value_type = Vec<String>)]
    pub active_orders: Vec<OrderId>,
}

impl From<&CourierRecord> for CourierView {
    fn from(record: &CourierRecord) -> Self {
        CourierView {
            courier_id: record.courier_id,
            profile: record.profile.clone(),
            online: record.online,
            position: record.position.clone(),
            active_orders: record.active.iter().map(|d| d.order_id).collect(),
        }
    }
}

macro_rules! message {
    ($(#[$doc:meta])* $name:ident $(($($field:ty),*))?, $result:literal) => {
        $(#[$doc])*
        #[derive(Debug, Message)]
        #[rtype(result = $result)]
        pub struct $name $(($(pub $field),*))?;
    };
}

message!(/// The courier as stored.
    GetCourier, "Result<CourierView, CourierError>");
message!(/// Changes vehicle and capacity.
    SetProfile(CourierProfile), "Result<CourierView, CourierError>");
message!(/// Ready for offers.
    GoOnline, "Result<CourierView, CourierError>");
message!(/// No more offers.
    GoOffline, "Result<CourierView, CourierError>");
message!(/// The courier's session on this node opened (`true`) or closed (`false`).
    Connected(bool), "()");
message!(/// GPS points, oldest first or not: they are sorted.
    ReportLocations(Vec<GpsPoint>), "Result<LocationAck, CourierError>");
message!(/// The dispatcher hands the courier a delivery (idempotent).
    Assign(ActiveDelivery), "Result<(), CourierError>");
message!(/// The dispatcher takes a delivery back (the order no longer needs it).
    Unassign(OrderId), "Result<(), CourierError>");
message!(/// The courier has the order.
    PickedUp(OrderId), "Result<(), CourierError>");
message!(/// The courier handed the order over, with the customer's code.
    Delivered(OrderId, String), "Result<(), CourierError>");
message!(/// Re-reads the row (another node changed it).
    Reload, "()");

type Work<T> = AtomicResponse<CourierActor, Result<T, CourierError>>;

impl CourierActor {
    fn view(&self) -> CourierView {
        CourierView::from(&self.record.value)
    }

    /// Whether the dispatcher may offer this courier orders from this node.
    fn offerable(&self) -> bool {
        self.record.value.online && self.connected
    }

    /// Brings the index of this node and every other node up to date; `force` announces even
    /// when nothing an index cares about changed.
    fn announce(&mut self, force: bool) {
        let record = &self.record.value;
        let at = record.position.as_ref().map(GpsPoint::geo);
        let online = self.offerable();
        let load = record.load();
        let max_load = record.profile.max_concurrent_orders;
        let cell = at.map(GeoPoint::cell);
        match (online, at, cell) {
            (true, Some(point), Some(cell)) => {
                self.deps
                    .index
                    .upsert_in(self.id, point, cell, load, max_load);
            }
            _ => self.deps.index.remove(self.id),
        }
        let due = match (self.last_presence, cell) {
            (Some((when, last_cell)), Some(cell)) => {
                last_cell != cell || when.elapsed() >= PRESENCE_EVERY
            }
            _ => true,
        };
        if !(force || due) {
            return;
        }
        if let Some(cell) = cell {
            self.last_presence = Some((Instant::now(), cell));
        }
        let presence = Presence {
            node: self.deps.node,
            courier: self.id,
            online,
            at,
            load,
            max_load,
        };
        let bus = self.deps.bus.clone();
        if let Ok(payload) = serde_json::to_vec(&presence) {
            actix::spawn(async move {
                if let Err(e) = bus.publish(PRESENCE_TOPIC, Bytes::from(payload)).await {
                    tracing::debug!(error = %e, "courier presence not published");
                }
            });
        }
    }

    /// Runs `change` on a copy of the row and writes it; if another activation wrote first,
    /// runs it again on the row it wrote. The actor adopts the result.
    fn persist<T, F>(&mut self, change: F) -> Work<T>
    where
        T: Send + 'static,
        F: Fn(&mut CourierRecord) -> Result<T, CourierError> + Send + 'static,
    {
        let repo = self.deps.repo.clone();
        let now = self.deps.clock.now();
        let current = self.record.clone();
        let work = async move {
            let mut current = current;
            for _ in 0..PERSIST_ATTEMPTS {
                let mut next = current.value.clone();
                let answer = match change(&mut next) {
                    Ok(answer) => answer,
                    Err(e) => return (current, Err(e)),
                };
                next.updated_at = now;
                match repo.save(current.version, &next).await {
                    Ok(Ok(version)) => {
                        return (
                            Versioned {
                                version,
                                value: next,
                            },
                            Ok(answer),
                        );
                    }
                    Ok(Err(())) => match repo.load(current.value.courier_id).await {
                        // Another activation wrote first: decide again on its row.
                        Ok(Some(fresh)) => current = fresh,
                        Ok(None) => return (current, Err(CourierError::Conflict)),
                        Err(e) => return (current, Err(e.into())),
                    },
                    Err(e) => return (current, Err(e.into())),
                }
            }
            (current, Err(CourierError::Conflict))
        };
        self.adopt(work)
    }

    /// Notes the courier online in the cell of `point` the first time this hour (a courier
    /// moving across a city passes a handful of cells an hour: the journal gets a few rows
    /// per courier and hour, written off the location path).
    fn note_presence(&mut self, point: &GpsPoint) {
        if !self.record.value.online {
            return;
        }
        let hour = point.recorded_at.timestamp().div_euclid(3600);
        let cell = point.geo().cell_at(h3o::Resolution::Eight);
        if self.seen.0 != hour {
            self.seen = (hour, Vec::new());
        }
        if self.seen.1.contains(&cell) {
            return;
        }
        self.seen.1.push(cell);
        let event = CourierEvent {
            id: CourierJournal::new_id(),
            courier: self.id,
            at: point.recorded_at,
            at_ms: chrono::Utc::now().timestamp_millis(),
            kind: CourierEventKind::Seen {
                cell: cell.to_string(),
            },
        };
        let journal = self.deps.journal.clone();
        actix::spawn(async move {
            if let Err(e) = journal.append(&[event]).await {
                tracing::debug!(error = %e, "courier presence not recorded for analytics");
            }
        });
    }

    fn delivery(&self, order: OrderId) -> Option<&ActiveDelivery> {
        self.record
            .value
            .active
            .iter()
            .find(|d| d.order_id == order)
    }
}

impl Handler<GetCourier> for CourierActor {
    type Result = Result<CourierView, CourierError>;

    fn handle(&mut self, _: GetCourier, _: &mut Context<Self>) -> Self::Result {
        Ok(self.view())
    }
}

impl Handler<SetProfile> for CourierActor {
    type Result = Work<CourierView>;

    fn handle(&mut self, SetProfile(profile): SetProfile, _: &mut Context<Self>) -> Self::Result {
        self.persist(move |record| {
            record.profile = profile.clone();
            Ok(CourierView::from(&*record))
        })
    }
}

impl Handler<GoOnline> for CourierActor {
    type Result = Work<CourierView>;

    fn handle(&mut self, _: GoOnline, _: &mut Context<Self>) -> Self::Result {
        self.connected = true;
        self.persist(|record| {
            record.online = true;
            Ok(CourierView::from(&*record))
        })
    }
}

impl Handler<GoOffline> for CourierActor {
    type Result = Work<CourierView>;

    fn handle(&mut self, _: GoOffline, _: &mut Context<Self>) -> Self::Result {
        self.persist(|record| {
            record.online = false;
            Ok(CourierView::from(&*record))
        })
    }
}

impl Handler<Connected> for CourierActor {
    type Result = ();

    fn handle(&mut self, Connected(connected): Connected, _: &mut Context<Self>) {
        self.connected = connected;
        self.announce(true);
    }
}

impl Handler<Reload> for CourierActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, _: Reload, _: &mut Context<Self>) -> Self::Result {
        let repo = self.deps.repo.clone();
        let id = self.id;
        AtomicResponse::new(Box::pin(
            async move { repo.load(id).await }.into_actor(self).map(
                |loaded, actor: &mut CourierActor, _| match loaded {
                    Ok(Some(fresh)) => {
                        let position = actor.record.value.position.clone();
                        actor.record = fresh;
                        if actor.position_dirty {
                            actor.record.value.position = position;
                        }
                        actor.announce(true);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(courier_id = %actor.id, error = %e, "courier not reloaded")
                    }
                },
            ),
        ))
    }
}

impl Handler<ReportLocations> for CourierActor {
    type Result = ResponseFuture<Result<LocationAck, CourierError>>;

    fn handle(
        &mut self,
        ReportLocations(points): ReportLocations,
        _: &mut Context<Self>,
    ) -> Self::Result {
        let now = self.deps.clock.now();
        let last = self
            .track
            .last()
            .cloned()
            .or_else(|| self.record.value.position.clone());
        let cleaned = clean_batch(
            last.as_ref(),
            points,
            now,
            self.deps.settings.get().gps_max_accuracy_m,
        );
        for reason in &cleaned.dropped {
            self.deps.metrics.gps_dropped(reason.as_str()).inc();
        }
        let ack = LocationAck {
            accepted: cleaned.accepted.len(),
            dropped: cleaned.dropped.len(),
        };
        let Some(latest) = cleaned.accepted.last().cloned() else {
            return Box::pin(async move { Ok(ack) });
        };
        self.deps.metrics.gps_accepted.inc_by(ack.accepted as u64);
        for point in &cleaned.accepted {
            self.track.push(point);
        }
        self.record.value.position = Some(latest.clone());
        self.position_dirty = true;
        self.announce(false);
        self.note_presence(&latest);

        // Every delivery in hand: a location frame for its watchers, and its geofences.
        let here = latest.geo();
        let speed = self.track.speed_mps();
        let mut frames = Vec::new();
        let mut fences = Vec::new();
        for delivery in &mut self.record.value.active {
            let remaining = if delivery.picked_up {
                here.distance_m(delivery.dropoff)
            } else {
                here.distance_m(delivery.pickup) + delivery.pickup.distance_m(delivery.dropoff)
            };
            let frame = LocationFrame {
                lat: latest.lat,
                lng: latest.lng,
                heading_deg: latest.heading_deg,
                speed_mps: latest.speed_mps,
                recorded_at: latest.recorded_at,
                eta_s: eta_seconds(remaining, speed),
            };
            self.deps.board.set(delivery.order_id, frame.clone());
            frames.push((delivery.order_id, frame));
            if !delivery.picked_up
                && !delivery.arrived_at_pickup
                && here.distance_m(delivery.pickup) <= ARRIVED_AT_PICKUP_M
            {
                delivery.arrived_at_pickup = true;
                fences.push((delivery.order_id, OrderCommand::RecordArrivedAtPickup));
            }
            if delivery.picked_up
                && !delivery.arriving
                && here.distance_m(delivery.dropoff) <= ARRIVING_M
            {
                delivery.arriving = true;
                fences.push((delivery.order_id, OrderCommand::RecordArriving));
            }
        }
        if !fences.is_empty() {
            let orders = self.deps.orders.clone();
            let courier = self.id;
            actix::spawn(async move {
                for (order, command) in fences {
                    match orders.send(order, ApplyCommand(command)).await {
                        Ok(Ok(_)) | Ok(Err(CommandError::Illegal(_))) => {}
                        Ok(Err(e)) => {
                            tracing::warn!(order_id = %order, courier_id = %courier, error = %e, "geofence event not recorded")
                        }
                        Err(e) => {
                            tracing::warn!(order_id = %order, courier_id = %courier, error = %e, "geofence event not recorded")
                        }
                    }
                }
            });
        }
        let bus = self.deps.bus.clone();
        let trail = self.deps.trail.clone();
        let id = self.id;
        let points = cleaned.accepted;
        Box::pin(async move {
            // Watchers first: the fan-out does not wait for the disk.
            for (order, frame) in frames {
                if let Ok(payload) = serde_json::to_vec(&LocationMessage::from(&frame)) {
                    let topic = order_live_topic(order);
                    if let Err(e) = bus.publish(&topic, Bytes::from(payload)).await {
                        tracing::debug!(topic, error = %e, "location not published");
                    }
                }
            }
            trail.append(id, points).await?;
            Ok(ack)
        })
    }
}

impl Handler<Assign> for CourierActor {
    type Result = Work<()>;

    fn handle(&mut self, Assign(delivery): Assign, _: &mut Context<Self>) -> Self::Result {
        self.persist(move |record| {
            if record
                .active
                .iter()
                .any(|d| d.order_id == delivery.order_id)
            {
                return Ok(());
            }
            if !record.has_room() {
                return Err(CourierError::AtCapacity);
            }
            record.active.push(delivery.clone());
            Ok(())
        })
    }
}

impl Handler<Unassign> for CourierActor {
    type Result = Work<()>;

    fn handle(&mut self, Unassign(order): Unassign, _: &mut Context<Self>) -> Self::Result {
        self.deps.board.remove(order);
        self.persist(move |record| {
            record.active.retain(|d| d.order_id != order);
            Ok(())
        })
    }
}

impl Handler<PickedUp> for CourierActor {
    type Result = Work<()>;

    fn handle(&mut self, PickedUp(order): PickedUp, _: &mut Context<Self>) -> Self::Result {
        if self.delivery(order).is_none() {
            return AtomicResponse::new(Box::pin(actix::fut::ready(Err(
                CourierError::NotYourOrder,
            ))));
        }
        let orders = self.deps.orders.clone();
        let repo = self.deps.repo.clone();
        let now = self.deps.clock.now();
        let current = self.record.clone();
        // The ETA the customer is shown from here: the rest of the way at the recent speed.
        let eta = self.delivery(order).map(|d| {
            let here = self
                .record
                .value
                .position
                .as_ref()
                .map_or(d.pickup, |p| p.geo());
            eta_seconds(here.distance_m(d.dropoff), self.track.speed_mps())
        });
        let journal = self.deps.journal.clone();
        let courier = self.id;
        let work = async move {
            if let Err(e) = command(&orders, order, OrderCommand::PickUp).await {
                return (current, Err(e));
            }
            if let Some(eta_s) = eta {
                let event = CourierEvent {
                    id: CourierJournal::new_id(),
                    courier,
                    at: now,
                    at_ms: chrono::Utc::now().timestamp_millis(),
                    kind: CourierEventKind::PickedUp { order, eta_s },
                };
                if let Err(e) = journal.append(&[event]).await {
                    tracing::warn!(order_id = %order, error = %e, "ETA at pickup not recorded for analytics");
                }
            }
            let mut next = current.value.clone();
            if let Some(d) = next.active.iter_mut().find(|d| d.order_id == order) {
                d.picked_up = true;
            }
            next.updated_at = now;
            save_or_reload(&repo, current, next).await
        };
        self.adopt(work)
    }
}

impl Handler<Delivered> for CourierActor {
    type Result = Work<()>;

    fn handle(&mut self, Delivered(order, code): Delivered, _: &mut Context<Self>) -> Self::Result {
        let Some(delivery) = self.delivery(order) else {
            return AtomicResponse::new(Box::pin(actix::fut::ready(Err(
                CourierError::NotYourOrder,
            ))));
        };
        if delivery.wrong_codes >= MAX_WRONG_CODES {
            return AtomicResponse::new(Box::pin(actix::fut::ready(Err(
                CourierError::TooManyAttempts,
            ))));
        }
        let at_drop_off = at_drop_off(self.record.value.position.as_ref(), delivery.dropoff);
        let orders = self.deps.orders.clone();
        let repo = self.deps.repo.clone();
        let board = self.deps.board.clone();
        let now = self.deps.clock.now();
        let current = self.record.clone();
        let work = async move {
            let expected = match orders.send(order, GetOrder).await {
                Ok(Ok(Some(record))) => record.handoff_code.unwrap_or_default(),
                Ok(Ok(None)) => return (current, Err(CourierError::NotYourOrder)),
                Ok(Err(e)) => return (current, Err(e.into())),
                Err(e) => return (current, Err(e.into())),
            };
            let mut next = current.value.clone();
            next.updated_at = now;
            if expected.is_empty() || !handoff_codes_match(&expected, &code) {
                if let Some(d) = next.active.iter_mut().find(|d| d.order_id == order) {
                    d.wrong_codes = d.wrong_codes.saturating_add(1);
                }
                let (saved, _) = save_or_reload(&repo, current, next).await;
                return (saved, Err(CourierError::WrongCode));
            }
            if let Err(e) = command(&orders, order, OrderCommand::Deliver { at_drop_off }).await {
                return (current, Err(e));
            }
            board.remove(order);
            next.active.retain(|d| d.order_id != order);
            save_or_reload(&repo, current, next).await
        };
        self.adopt(work)
    }
}

impl Handler<Passivate> for CourierActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Passivate, _: &mut Context<Self>) -> Self::Result {
        self.deps.index.remove(self.id);
        let repo = self.deps.repo.clone();
        let current = self.record.clone();
        let dirty = self.position_dirty;
        Box::pin(
            async move {
                if dirty
                    && let Ok(Err(())) = repo.save(current.version, &current.value).await
                {
                    tracing::debug!(courier_id = %current.value.courier_id, "courier row moved on elsewhere; last position kept in the trail");
                }
            }
            .into_actor(self)
            .map(|(), _, ctx: &mut Context<Self>| ctx.stop()),
        )
    }
}

impl CourierActor {
    /// Adopts the row a piece of work ends with.
    fn adopt<T, F>(&mut self, work: F) -> Work<T>
    where
        T: Send + 'static,
        F: Future<Output = (Versioned<CourierRecord>, Result<T, CourierError>)> + 'static,
    {
        AtomicResponse::new(Box::pin(work.into_actor(self).map(
            |(record, answer), actor: &mut CourierActor, _| {
                let position = actor.record.value.position.clone();
                actor.record = record;
                // Points that arrived meanwhile are newer than what was read.
                if actor.position_dirty {
                    actor.record.value.position = position;
                }
                actor.announce(true);
                answer
            },
        )))
    }
}

/// Applies a command to one of the courier's orders.
async fn command(
    orders: &Registry<OrderActor>,
    order: OrderId,
    command: OrderCommand,
) -> Result<(), CourierError> {
    orders.send(order, ApplyCommand(command)).await??;
    Ok(())
}

/// Writes `next` over `current`; on a conflict takes the stored row instead.
async fn save_or_reload(
    repo: &CourierRepo,
    current: Versioned<CourierRecord>,
    next: CourierRecord,
) -> (Versioned<CourierRecord>, Result<(), CourierError>) {
    match repo.save(current.version, &next).await {
        Ok(Ok(version)) => (
            Versioned {
                version,
                value: next,
            },
            Ok(()),
        ),
        Ok(Err(())) => match repo.load(next.courier_id).await {
            Ok(Some(fresh)) => (fresh, Err(CourierError::Conflict)),
            Ok(None) => (current, Err(CourierError::Conflict)),
            Err(e) => (current, Err(e.into())),
        },
        Err(e) => (current, Err(e.into())),
    }
}

/// Drops deliveries whose order ended while the courier was away (cancelled, refunded), so
/// they do not count against the courier's load.
async fn forget_finished(deps: &CourierDeps, record: &mut Versioned<CourierRecord>) {
    if record.value.active.is_empty() {
        return;
    }
    let mut kept = Vec::new();
    for delivery in &record.value.active {
        match deps.orders.send(delivery.order_id, GetOrder).await {
            Ok(Ok(Some(order))) if !order.is_tracked() => {
                tracing::info!(courier_id = %record.value.courier_id, order_id = %delivery.order_id, "delivery dropped: the order ended");
            }
            _ => kept.push(delivery.clone()),
        }
    }
    if kept.len() == record.value.active.len() {
        return;
    }
    let mut next = record.value.clone();
    next.active = kept;
    if let Ok(Ok(version)) = deps.repo.save(record.version, &next).await {
        *record = Versioned {
            version,
            value: next,
        };
    }
}

/// Applies another node's presence announcements to this node's index until the bus closes.
pub async fn follow_presence(bus: SharedBus, index: CourierIndex, node: uuid::Uuid) {
    let mut subscription = match bus.subscribe(PRESENCE_TOPIC).await {
        Ok(subscription) => subscription,
        Err(e) => {
            tracing::error!(error = %e, "courier presence not followed; other nodes' couriers are invisible here");
            return;
        }
    };
    while let Some(delivery) = subscription.recv().await {
        let crate::bus::Delivery::Message(payload) = delivery else {
            continue;
        };
        let Ok(presence) = serde_json::from_slice::<Presence>(&payload) else {
            continue;
        };
        if presence.node == node {
            continue;
        }
        match (presence.online, presence.at) {
            (true, Some(at)) => {
                index.upsert(presence.courier, at, presence.load, presence.max_load)
            }
            _ => index.remove(presence.courier),
        }
    }
}

/// Reads the courier's stored row without activating them (tracking snapshots on a node
/// where the courier is not connected).
pub async fn stored_position(repo: &CourierRepo, courier: UserId) -> StoreResult<Option<GpsPoint>> {
    Ok(repo.load(courier).await?.and_then(|r| r.value.position))
}
