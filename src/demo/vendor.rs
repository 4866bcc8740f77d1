//! A simulated store owner on `/ws/vendor`: every paid order of the store is accepted after
//! about two seconds, prepared, and ready for pickup a few seconds later, through
//! `POST /api/v1/orders/{id}/accept|preparing|ready`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use reqwest013::Method;
use serde::Deserialize;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use super::api::{CallError, Order, Session, Socket};
use super::city::{Shared, Stop, seconds_between};
use super::reconnect_pause;

/// An order's steps in the kitchen: the action, the status it reaches, and the pause (in
/// seconds) before it.
const STEPS: [(&str, &str, (f64, f64)); 3] = [
    ("accept", "accepted", (1.5, 2.5)),
    ("preparing", "preparing", (0.5, 1.5)),
    ("ready", "ready_for_pickup", (3.0, 6.0)),
];
/// Tries of one step before the store gives the order up (logged).
const TRIES: u32 = 8;

/// What the node sends a vendor (the fields read here).
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Incoming {
    Hello {
        seq: u64,
    },
    OrderEvent {
        seq: u64,
        order_id: String,
        status_after: String,
    },
    #[serde(other)]
    Other,
}

/// An order of the store's, as `GET /vendor/orders` lists them.
#[derive(Debug, Deserialize)]
struct QueuePage {
    items: Vec<Order>,
}

/// One simulated store owner.
pub struct Vendor {
    email: String,
    session: Arc<tokio::sync::Mutex<Session>>,
    /// Orders being worked on now.
    busy: Arc<parking_lot::Mutex<HashSet<String>>>,
    /// The last feed entry seen: a reconnect resumes after it.
    last_seq: Option<u64>,
    kitchen: JoinSet<()>,
}

impl Vendor {
    /// The owner signed in as `session`, whose store is `store_id`.
    pub fn new(session: Session, store_id: &str, shared: &Shared) -> Vendor {
        shared.add_store(store_id);
        Vendor {
            email: session.email().to_owned(),
            session: Arc::new(tokio::sync::Mutex::new(session)),
            busy: Arc::default(),
            last_seq: None,
            kitchen: JoinSet::new(),
        }
    }

    /// Stays connected (reconnecting whenever the socket ends) until `stop`.
    pub async fn run(mut self, mut stop: Stop) {
        while !stop.is_stopped() {
            let pause = match self.connected(&mut stop).await {
                Ok(()) => break,
                Err(e) => {
                    reconnect_pause(&self.email, "store's socket ended; connecting again", &e)
                }
            };
            if stop.sleep(pause).await {
                break;
            }
        }
        self.kitchen.shutdown().await;
    }

    async fn connected(&mut self, stop: &mut Stop) -> Result<(), CallError> {
        let path = match self.last_seq {
            Some(seq) => format!("/ws/vendor?after_seq={seq}"),
            None => "/ws/vendor".to_owned(),
        };
        let mut socket: Socket = self.session.lock().await.socket(&path).await?;
        // Paid orders that arrived while the socket was down (the first time: before it).
        let waiting: Result<QueuePage, CallError> = self
            .session
            .lock()
            .await
            .get("/api/v1/vendor/orders?status=paid")
            .await;
        match waiting {
            Ok(page) => {
                for order in page.items {
                    self.cook(order.id, stop);
                }
            }
            Err(e) => {
                tracing::warn!(vendor = %self.email, error = %e, "store's paid orders not read")
            }
        }
        loop {
            tokio::select! {
                () = stop.stopped() => {
                    let _ = socket.close(None).await;
                    return Ok(());
                }
                Some(_) = self.kitchen.join_next(), if !self.kitchen.is_empty() => {}
                frame = socket.next() => match frame {
                    Some(Ok(Message::Text(text))) => self.on_frame(text.as_str(), stop),
                    Some(Ok(Message::Close(close))) => {
                        return Err(CallError::closed(close.as_ref()));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e.into()),
                    None => return Err(CallError::closed(None)),
                },
            }
        }
    }

    fn on_frame(&mut self, text: &str, stop: &Stop) {
        match serde_json::from_str::<Incoming>(text) {
            Ok(Incoming::Hello { seq }) => {
                self.last_seq.get_or_insert(seq);
            }
            Ok(Incoming::OrderEvent {
                seq,
                order_id,
                status_after,
            }) => {
                self.last_seq = Some(self.last_seq.map_or(seq, |last| last.max(seq)));
                if status_after == "paid" {
                    self.cook(order_id, stop);
                }
            }
            Ok(Incoming::Other) => {}
            Err(e) => {
                tracing::warn!(vendor = %self.email, error = %e, frame = text, "store frame not understood")
            }
        }
    }

    /// Starts work on a paid order, unless it is under way already.
    fn cook(&mut self, order_id: String, stop: &Stop) {
        if !self.busy.lock().insert(order_id.clone()) {
            return;
        }
        let session = Arc::clone(&self.session);
        let busy = Arc::clone(&self.busy);
        let email = self.email.clone();
        let mut stop = stop.clone();
        self.kitchen.spawn(async move {
            for (action, reached, (low, high)) in STEPS {
                if stop.sleep(seconds_between(low, high)).await {
                    break;
                }
                match step(&session, &order_id, action, reached, &mut stop).await {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => {
                        tracing::warn!(vendor = %email, order_id, action, error = %e, "store gave an order up");
                        break;
                    }
                }
            }
            busy.lock().remove(&order_id);
        });
    }
}

/// Where a status is on the way to the door (closed ones are not on it).
fn progress(status: &str) -> Option<usize> {
    [
        "paid",
        "accepted",
        "preparing",
        "ready_for_pickup",
        "courier_assigned",
        "picked_up",
        "delivered",
    ]
    .iter()
    .position(|s| *s == status)
}

/// Moves the order on with `action`: true once it is at `reached` or beyond, false when it
/// left the store's hands (cancelled, say).
async fn step(
    session: &tokio::sync::Mutex<Session>,
    order_id: &str,
    action: &str,
    reached: &str,
    stop: &mut Stop,
) -> Result<bool, CallError> {
    let mut last = None;
    for attempt in 0..TRIES {
        if attempt > 0 && stop.sleep(Duration::from_secs(1 << attempt.min(3))).await {
            return Ok(false);
        }
        let path = format!("/api/v1/orders/{order_id}/{action}");
        let answer: Result<serde_json::Value, CallError> = session
            .lock()
            .await
            .call(Method::POST, &path, None, None)
            .await;
        match answer {
            Ok(_) => return Ok(true),
            Err(e) if e.code() == Some("illegal_transition") => {
                let order: Order = session
                    .lock()
                    .await
                    .get(&format!("/api/v1/orders/{order_id}"))
                    .await?;
                match (progress(&order.status), progress(reached)) {
                    (Some(now), Some(goal)) if now >= goal => return Ok(true),
                    (None, _) => return Ok(false),
                    _ => last = Some(e),
                }
            }
            Err(e) if e.is_transient() => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or(CallError::Timeout(Duration::ZERO)))
}
