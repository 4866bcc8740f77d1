//! A simulated courier on `/ws/courier`: online all the time, a GPS fix every second. Idle, it
//! hangs around the store it is based at; offered an order while it has room, it takes it,
//! rides to the store along the streets at scooter speed, picks the order up once the store
//! has it ready, rides to the drop-off and hands it over with the customer's code.

use std::sync::Arc;
use std::time::Duration;

use chrono::SecondsFormat;
use futures_util::StreamExt as _;
use reqwest013::Method;
use serde::Deserialize;
use serde_json::json;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;

use super::api::{self, Api, CallError, LatLng, Order, Session, Socket, Store};
use super::city::{Pos, Shared, Step, Stop, between, ride, seconds_between};
use super::reconnect_pause;

/// Orders a simulated courier carries at once (its profile's `max_concurrent_orders`).
const CAPACITY: usize = 2;
/// One GPS fix a second, as a phone app would send.
const TICK: Duration = Duration::from_secs(1);
/// An idle courier hovers within this distance of its store...
const HOVER_M: f64 = 80.0;
/// ...and rides back to it once further away than this (after a delivery).
const RETURN_BEYOND_M: f64 = 150.0;
/// A pickup or handover without an answer this long is sent again.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// A pickup refused because the order is not ready yet is tried again after this.
const PICKUP_RETRY: Duration = Duration::from_secs(2);
/// How often a courier waiting at the door of an order it has no code for looks whether the
/// order left its hands.
const DOOR_CHECK: Duration = Duration::from_secs(15);

/// What the node sends a courier (the fields read here).
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Incoming {
    Ack {
        of: String,
        #[serde(default)]
        order_id: Option<String>,
    },
    Offer {
        offer_id: String,
        order_id: String,
    },
    OfferWithdrawn {
        offer_id: String,
    },
    Assignment {
        order_id: String,
        pickup: LatLng,
        dropoff: LatLng,
    },
    OrderCancelled {
        order_id: String,
    },
    Error {
        code: String,
        #[serde(default)]
        message: String,
    },
    #[serde(other)]
    Other,
}

/// A delivery in hand.
struct Job {
    order_id: String,
    pickup: Pos,
    dropoff: Pos,
    picked_up: bool,
    /// Not before this is the pickup or handover tried (again).
    next_try: Instant,
    /// The handover was refused (wrong code, too many tries): it waits like an order whose
    /// code the simulation does not know.
    refused: bool,
    /// Said once that it waits at the door.
    waiting_said: bool,
    next_door_check: Instant,
}

/// A pickup or handover sent and not answered yet. Error frames do not name the request
/// they answer, so a courier has at most one of these out at a time.
enum Asked {
    PickUp(String, Instant),
    Deliver(String, Instant),
}

impl Asked {
    fn order(&self) -> &str {
        match self {
            Asked::PickUp(order, _) | Asked::Deliver(order, _) => order,
        }
    }

    fn since(&self) -> Instant {
        match self {
            Asked::PickUp(_, at) | Asked::Deliver(_, at) => *at,
        }
    }
}

/// Where an idle courier strolls to next, and how.
struct Stroll {
    to: Pos,
    speed_mps: f64,
    /// Standing still until then, once there.
    pause_until: Option<Instant>,
}

/// One simulated courier.
pub struct Courier {
    email: String,
    shared: Arc<Shared>,
    /// The store it hangs around when it has nothing to do.
    base: Pos,
    at: Pos,
    /// Its scooter's speed on the streets.
    cruise_mps: f64,
    jobs: Vec<Job>,
    stroll: Option<Stroll>,
    asked: Option<Asked>,
    /// An offer accepted and not answered yet.
    offer: Option<(String, Instant)>,
    online: bool,
    last_tick: Instant,
}

impl Courier {
    /// Courier `email`, based at the store at `base`.
    pub fn new(email: String, shared: Arc<Shared>, base: Pos) -> Courier {
        let start = base.random_within(10.0, HOVER_M);
        Courier {
            email,
            shared,
            base,
            at: start,
            cruise_mps: between(7.5, 8.5),
            jobs: Vec::new(),
            stroll: None,
            asked: None,
            offer: None,
            online: false,
            last_tick: Instant::now(),
        }
    }

    /// Signs in, then stays connected (reconnecting whenever the socket ends) until `stop`.
    pub async fn run(mut self, api: Api, mut stop: Stop) {
        let Some(mut session) = super::sign_in(&api, &self.email, &mut stop).await else {
            return;
        };
        self.shared.add_courier(&session.user_id);
        // A scooter, so the ETA the customer is shown starts from a scooter's pace.
        let profile = json!({"vehicle": "scooter", "max_concurrent_orders": CAPACITY});
        if let Err(e) = session
            .call::<serde_json::Value>(
                Method::PUT,
                "/api/v1/couriers/me/profile",
                Some(&profile),
                None,
            )
            .await
        {
            tracing::warn!(courier = %self.email, error = %e, "courier profile not set; riding with the default one");
        }
        while !stop.is_stopped() {
            let ended = self.connected(&mut session, &mut stop).await;
            if self.online {
                self.online = false;
                Shared::drop_one(&self.shared.couriers_online);
            }
            let pause = match ended {
                Ok(()) => break,
                Err(e) => {
                    reconnect_pause(&self.email, "courier's socket ended; connecting again", &e)
                }
            };
            if stop.sleep(pause).await {
                break;
            }
        }
    }

    /// One connection: online, a fix every second, offers and deliveries, until the socket
    /// ends (an error) or the simulation does (`Ok`).
    async fn connected(&mut self, session: &mut Session, stop: &mut Stop) -> Result<(), CallError> {
        let mut socket = session.socket("/ws/courier").await?;
        api::send(&mut socket, &json!({"type": "go_online"})).await?;
        self.asked = None;
        self.offer = None;
        self.catch_up(session).await;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.stopped() => {
                    let _ = socket.close(None).await;
                    return Ok(());
                }
                frame = socket.next() => match frame {
                    Some(Ok(Message::Text(text))) => self.on_frame(text.as_str(), &mut socket).await?,
                    Some(Ok(Message::Close(close))) => {
                        return Err(CallError::closed(close.as_ref()));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e.into()),
                    None => return Err(CallError::closed(None)),
                },
                _ = tick.tick() => self.on_tick(session, &mut socket).await?,
            }
        }
    }

    /// After (re)connecting: the deliveries the node says this courier holds are the ones in
    /// hand (a drop of the socket may have cost an assignment or an answer).
    async fn catch_up(&mut self, session: &mut Session) {
        #[derive(Deserialize)]
        struct Me {
            active_orders: Vec<String>,
        }
        let me: Me = match session.get("/api/v1/couriers/me").await {
            Ok(me) => me,
            Err(e) => {
                tracing::warn!(courier = %self.email, error = %e, "courier's deliveries not read; carrying on with what it knows");
                return;
            }
        };
        self.jobs.retain(|j| me.active_orders.contains(&j.order_id));
        for order in me.active_orders {
            if self.jobs.iter().any(|j| j.order_id == order) {
                continue;
            }
            match recover(session, &order).await {
                Ok((pickup, dropoff, picked_up)) => {
                    self.take(order, pickup, dropoff);
                    if let Some(job) = self.jobs.last_mut() {
                        job.picked_up = picked_up;
                    }
                }
                Err(e) => {
                    tracing::warn!(courier = %self.email, order_id = %order, error = %e, "delivery in hand not read")
                }
            }
        }
    }

    fn take(&mut self, order_id: String, pickup: Pos, dropoff: Pos) {
        if self.jobs.iter().any(|j| j.order_id == order_id) {
            return;
        }
        let now = Instant::now();
        self.jobs.push(Job {
            order_id,
            pickup,
            dropoff,
            picked_up: false,
            next_try: now,
            refused: false,
            waiting_said: false,
            next_door_check: now + DOOR_CHECK,
        });
        self.stroll = None;
    }

    fn drop_job(&mut self, order_id: &str) {
        self.jobs.retain(|j| j.order_id != order_id);
    }

    async fn on_frame(&mut self, text: &str, socket: &mut Socket) -> Result<(), CallError> {
        let incoming = match serde_json::from_str::<Incoming>(text) {
            Ok(incoming) => incoming,
            Err(e) => {
                tracing::warn!(courier = %self.email, error = %e, frame = text, "courier frame not understood");
                return Ok(());
            }
        };
        match incoming {
            Incoming::Offer { offer_id, order_id } => {
                let room = self.jobs.len() < CAPACITY && self.offer.is_none();
                api::send(
                    socket,
                    &json!({"type": "offer_response", "offer_id": offer_id, "accept": room}),
                )
                .await?;
                if room {
                    tracing::debug!(courier = %self.email, order_id, "offer taken");
                    self.offer = Some((offer_id, Instant::now()));
                }
            }
            Incoming::Assignment {
                order_id,
                pickup,
                dropoff,
            } => {
                self.offer = None;
                self.take(order_id, pickup.into(), dropoff.into());
            }
            Incoming::OfferWithdrawn { offer_id } => {
                if self.offer.as_ref().is_some_and(|(id, _)| *id == offer_id) {
                    self.offer = None;
                }
            }
            Incoming::OrderCancelled { order_id } => {
                tracing::debug!(courier = %self.email, order_id, "delivery cancelled");
                self.drop_job(&order_id);
            }
            Incoming::Ack { of, order_id } => self.on_ack(&of, order_id),
            Incoming::Error { code, message } => self.on_error(&code, &message, socket).await?,
            Incoming::Other => {}
        }
        Ok(())
    }

    fn on_ack(&mut self, of: &str, order_id: Option<String>) {
        match of {
            "go_online" if !self.online => {
                self.online = true;
                Shared::bump(&self.shared.couriers_online);
            }
            "offer_response" => self.offer = None,
            "picked_up" => {
                self.asked = None;
                if let Some(job) = self
                    .jobs
                    .iter_mut()
                    .find(|j| Some(&j.order_id) == order_id.as_ref())
                {
                    job.picked_up = true;
                }
            }
            "delivered" => {
                self.asked = None;
                if let Some(order) = order_id {
                    self.drop_job(&order);
                    self.shared.forget_code(&order);
                    Shared::bump(&self.shared.orders_delivered);
                }
            }
            _ => {}
        }
    }

    async fn on_error(
        &mut self,
        code: &str,
        message: &str,
        socket: &mut Socket,
    ) -> Result<(), CallError> {
        let asked = self.asked.take();
        match (code, asked) {
            ("offer_expired" | "at_capacity", asked) => {
                self.asked = asked;
                self.offer = None;
            }
            ("not_online", asked) => {
                self.asked = asked;
                api::send(socket, &json!({"type": "go_online"})).await?;
            }
            // Not ready yet (the store is still at it): the courier waits and asks again.
            ("illegal_transition", Some(Asked::PickUp(order, _))) => {
                if let Some(job) = self.jobs.iter_mut().find(|j| j.order_id == order) {
                    job.next_try = Instant::now() + PICKUP_RETRY;
                }
            }
            // Handed over already, or closed: the node's word on the order decides.
            ("illegal_transition", Some(Asked::Deliver(order, _))) => {
                if let Some(job) = self.jobs.iter_mut().find(|j| j.order_id == order) {
                    job.refused = true;
                    job.next_door_check = Instant::now();
                }
            }
            ("not_your_order", Some(asked)) => {
                tracing::debug!(courier = %self.email, order_id = asked.order(), "the order left the courier's hands");
                self.drop_job(asked.order());
            }
            ("wrong_code" | "too_many_attempts", Some(asked)) => {
                tracing::warn!(courier = %self.email, order_id = asked.order(), code, message, "handover refused; waiting at the door");
                if let Some(job) = self.jobs.iter_mut().find(|j| j.order_id == asked.order()) {
                    job.refused = true;
                }
            }
            // The courier's row kept changing, or the node is busy: ask again.
            ("conflict" | "unavailable", _) => {
                self.offer = None;
            }
            (code, asked) => {
                self.asked = asked;
                tracing::warn!(courier = %self.email, code, message, "courier request refused");
            }
        }
        Ok(())
    }

    /// Every second: move on, act where it has arrived, send the fix.
    async fn on_tick(
        &mut self,
        session: &mut Session,
        socket: &mut Socket,
    ) -> Result<(), CallError> {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last_tick).as_secs_f64().min(3.0);
        self.last_tick = now;
        if self
            .asked
            .as_ref()
            .is_some_and(|a| now.duration_since(a.since()) > ANSWER_TIMEOUT)
        {
            self.asked = None;
        }
        if self
            .offer
            .as_ref()
            .is_some_and(|(_, at)| now.duration_since(*at) > ANSWER_TIMEOUT)
        {
            self.offer = None;
        }
        let step = match self.next_stop() {
            Some(index) => {
                let target = self.jobs[index].stop();
                let step = ride(self.at, target, self.cruise_mps * elapsed);
                self.at = step.to;
                if step.arrived {
                    self.arrived(index, session, socket).await?;
                }
                step
            }
            None => self.idle(elapsed, now),
        };
        if self.online {
            api::send(socket, &self.fix(&step, elapsed)).await?;
        }
        Ok(())
    }

    /// The stop to head for: the nearest pickup or handover it can make, else the door of an
    /// order whose code it does not have (to wait there).
    fn next_stop(&self) -> Option<usize> {
        let nearest = |can_act: bool| {
            self.jobs
                .iter()
                .enumerate()
                .filter(|(_, j)| self.can_act(j) == can_act)
                .min_by(|(_, a), (_, b)| {
                    let da = self.at.street_distance_m(a.stop());
                    let db = self.at.street_distance_m(b.stop());
                    da.total_cmp(&db)
                })
                .map(|(i, _)| i)
        };
        nearest(true).or_else(|| nearest(false))
    }

    /// Whether the courier can finish its next step of `job` by itself.
    fn can_act(&self, job: &Job) -> bool {
        !job.picked_up || (!job.refused && self.shared.code_of(&job.order_id).is_some())
    }

    /// At the store or the door of `jobs[index]`.
    async fn arrived(
        &mut self,
        index: usize,
        session: &mut Session,
        socket: &mut Socket,
    ) -> Result<(), CallError> {
        let now = Instant::now();
        let can_act = self.can_act(&self.jobs[index]);
        let job = &mut self.jobs[index];
        if can_act {
            if self.asked.is_some() || now < job.next_try {
                return Ok(());
            }
            job.next_try = now + PICKUP_RETRY;
            if !job.picked_up {
                api::send(
                    socket,
                    &json!({"type": "picked_up", "order_id": job.order_id}),
                )
                .await?;
                self.asked = Some(Asked::PickUp(job.order_id.clone(), now));
            } else if let Some(code) = self.shared.code_of(&job.order_id) {
                api::send(
                    socket,
                    &json!({"type": "delivered", "order_id": job.order_id, "code": code}),
                )
                .await?;
                self.asked = Some(Asked::Deliver(job.order_id.clone(), now));
            }
            return Ok(());
        }
        // The handoff code is shown to the order's customer alone. The simulation knows the
        // codes of the orders its own customers placed; an order someone else placed (a
        // person in the browser as customer0) can only be handed over with a code that
        // person has, so the courier waits at the door, like a real one, until the order
        // leaves its hands (an admin cancels it, say). It keeps sending its position, and
        // can still take and deliver other orders meanwhile, coming back afterwards.
        if !job.waiting_said {
            job.waiting_said = true;
            tracing::info!(courier = %self.email, order_id = %job.order_id, "waiting at the door: the order's customer is not simulated, so only they know its handoff code");
        }
        if now < job.next_door_check {
            return Ok(());
        }
        job.next_door_check = now + DOOR_CHECK;
        let order_id = job.order_id.clone();
        match session
            .get::<Order>(&format!("/api/v1/orders/{order_id}"))
            .await
        {
            Ok(order) if order.is_closed() => {
                if order.status == "delivered" && self.shared.code_of(&order_id).is_some() {
                    Shared::bump(&self.shared.orders_delivered);
                }
                self.shared.forget_code(&order_id);
                self.drop_job(&order_id);
            }
            Ok(_) => {}
            Err(e) if e.code() == Some("not_found") => self.drop_job(&order_id),
            Err(e) => {
                tracing::warn!(courier = %self.email, order_id, error = %e, "order at the door not read")
            }
        }
        Ok(())
    }

    /// Nothing in hand: back to the store it is based at, then strolling around it.
    fn idle(&mut self, elapsed: f64, now: Instant) -> Step {
        if self.at.distance_m(self.base) > RETURN_BEYOND_M {
            self.stroll = None;
            let step = ride(self.at, self.base, self.cruise_mps * elapsed);
            self.at = step.to;
            return step;
        }
        let base = self.base;
        let stroll = self.stroll.get_or_insert_with(|| Stroll {
            to: base.random_within(10.0, HOVER_M),
            speed_mps: between(1.5, 3.5),
            pause_until: None,
        });
        if let Some(until) = stroll.pause_until {
            if now < until {
                return ride(self.at, self.at, 0.0);
            }
            self.stroll = None;
            return ride(self.at, self.at, 0.0);
        }
        let step = ride(self.at, stroll.to, stroll.speed_mps * elapsed);
        self.at = step.to;
        if step.arrived {
            stroll.pause_until = Some(now + seconds_between(3.0, 10.0));
        }
        step
    }

    /// The location frame for where the courier is now.
    fn fix(&self, step: &Step, elapsed: f64) -> serde_json::Value {
        let moving = step.moved_m > 0.05 && elapsed > 0.0;
        let mut point = json!({
            "lat": self.at.lat,
            "lng": self.at.lng,
            "accuracy_m": (between(4.0, 9.0) * 10.0).round() / 10.0,
            "speed_mps": if moving { ((step.moved_m / elapsed) * 100.0).round() / 100.0 } else { 0.0 },
            "recorded_at": chrono::Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        });
        if let (true, Some(heading)) = (moving, step.heading_deg) {
            point["heading_deg"] = json!(heading);
        }
        json!({"type": "location", "point": point})
    }
}

impl Job {
    /// Where the next step of this delivery happens.
    fn stop(&self) -> Pos {
        if self.picked_up {
            self.dropoff
        } else {
            self.pickup
        }
    }
}

/// A delivery the node says this courier holds, read back: the store's place, the drop-off
/// and whether it is picked up.
async fn recover(session: &mut Session, order_id: &str) -> Result<(Pos, Pos, bool), CallError> {
    let order: Order = session.get(&format!("/api/v1/orders/{order_id}")).await?;
    let store: Store = session
        .get(&format!("/api/v1/vendors/{}", order.vendor_id))
        .await?;
    let dropoff = order
        .delivery_address
        .map_or(store.location, |a| a.location);
    Ok((
        store.location.into(),
        dropoff.into(),
        order.status == "picked_up",
    ))
}
