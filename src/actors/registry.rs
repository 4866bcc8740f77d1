//! The registry of one kind of entity actor.
//!
//! Every message goes through [`Registry::send`], which finds the entity's actor or activates
//! it, and enqueues the message while holding the registry lock. Passivation removes an idle
//! entry under the same lock and then sends [`Passivate`]; since no message can be enqueued to
//! that address afterwards, `Passivate` is its last message and nothing is ever dropped by a
//! passivating actor. The next message activates a fresh actor from the store.
//!
//! actix's `Supervisor` restarts actors that stop, but a panic inside a handler ends the
//! actor's future and leaves its address disconnected. The registry notices: the request in
//! flight fails with [`ActorError::Crashed`] (its effect may or may not have been persisted, so
//! it is not retried), and the next message finds the dead address and activates a new actor,
//! which reloads the last persisted state.
//!
//! Actors are spread over a fixed pool of arbiters by a hash of their id, so entity work uses
//! every core rather than the thread that happened to create the actor; or, through
//! [`Registry::send_here`], started on the arbiter of the session that drives them, so that a
//! stream of messages from one socket to one entity never crosses threads. A session that finds
//! its entity's actor already running elsewhere (activated by an HTTP request, say) brings it
//! over with [`Registry::bring_here`].

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use actix::prelude::*;
use parking_lot::Mutex;
use tokio::sync::OnceCell;

use crate::store::StoreError;

/// Asks an actor to persist anything not yet persisted and stop.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Passivate;

/// A kind of entity actor the registry can activate.
pub trait Entity: Actor<Context = Context<Self>> + Handler<Passivate> + Send {
    /// The entity's id.
    type Id: Clone + Eq + Hash + fmt::Display + Send + Sync + 'static;
    /// What activation needs (store handles, other registries, ...).
    type Deps: Clone + Send + Sync + 'static;

    /// Name of the kind, for metrics and logs (`cart`, `order`, ...).
    const KIND: &'static str;

    /// Loads the entity's state and builds its actor (not yet started).
    fn activate(
        id: Self::Id,
        deps: Self::Deps,
    ) -> Pin<Box<dyn Future<Output = Result<Self, StoreError>> + Send>>;
}

/// Why a message could not be handled by its actor.
#[derive(Debug, thiserror::Error)]
pub enum ActorError {
    /// Loading the entity's state failed.
    #[error("activating the actor failed: {0}")]
    Activation(#[from] StoreError),
    /// The actor stopped while handling the message (it panicked); the next message
    /// re-activates it from the store.
    #[error("the actor stopped while handling the message")]
    Crashed,
    /// The actor kept disappearing while the message was being delivered.
    #[error("the actor is unavailable")]
    Unavailable,
}

/// A fixed set of actor threads.
#[derive(Clone)]
pub struct ArbiterPool {
    arbiters: Arc<Vec<ArbiterHandle>>,
    hasher: std::collections::hash_map::RandomState,
}

impl ArbiterPool {
    /// Starts `threads` arbiters. Must be called inside an actix `System`.
    pub fn new(threads: usize) -> Self {
        let arbiters = (0..threads.max(1))
            .map(|_| Arbiter::new().handle())
            .collect();
        ArbiterPool {
            arbiters: Arc::new(arbiters),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    fn pick<K: Hash>(&self, key: &K) -> &ArbiterHandle {
        let index = self.hasher.hash_one(key) as usize % self.arbiters.len();
        &self.arbiters[index]
    }

    /// Stops every arbiter once its actors are done.
    pub fn stop(&self) {
        for arbiter in self.arbiters.iter() {
            arbiter.stop();
        }
    }
}

/// A registry that does not keep its actors alive; see [`Registry::downgrade`].
pub struct WeakRegistry<E: Entity> {
    inner: Weak<Inner<E>>,
}

impl<E: Entity> Clone for WeakRegistry<E> {
    fn clone(&self) -> Self {
        WeakRegistry {
            inner: Weak::clone(&self.inner),
        }
    }
}

impl<E: Entity> WeakRegistry<E> {
    /// The registry, while something else still holds it.
    pub fn upgrade(&self) -> Option<Registry<E>> {
        self.inner.upgrade().map(|inner| Registry { inner })
    }
}

/// Finds, activates and passivates the actors of one entity kind.
pub struct Registry<E: Entity> {
    inner: Arc<Inner<E>>,
}

impl<E: Entity> Clone for Registry<E> {
    fn clone(&self) -> Self {
        Registry {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<E: Entity> {
    deps: E::Deps,
    pool: ArbiterPool,
    idle: Duration,
    entries: Mutex<HashMap<E::Id, Entry<E>>>,
}

struct Entry<E: Entity> {
    cell: Arc<OnceCell<Active<E>>>,
    last_used: Instant,
}

/// A running actor and where it runs.
struct Active<E: Entity> {
    addr: Addr<E>,
    /// The thread of the caller's arbiter it was started on; `None` on the pool's.
    home: Option<ThreadId>,
}

/// Where an actor activated for a message starts.
enum Placement {
    /// On the pool's arbiter for its id.
    Spread,
    /// On the caller's arbiter.
    On(Here),
}

/// The caller's arbiter and the thread it runs on.
struct Here {
    arbiter: ArbiterHandle,
    thread: ThreadId,
}

impl Here {
    /// The caller's own arbiter, when the caller runs on one.
    fn current() -> Option<Self> {
        Arbiter::try_current().map(|arbiter| Here {
            arbiter,
            thread: std::thread::current().id(),
        })
    }
}

/// How many times a message is re-routed when the entry it found was replaced meanwhile.
const ROUTE_ATTEMPTS: usize = 3;

impl<E: Entity> Registry<E> {
    /// A registry whose actors run on `pool` and are passivated after `idle` without messages.
    /// Starts the passivation sweep on the current runtime.
    pub fn new(deps: E::Deps, pool: ArbiterPool, idle: Duration) -> Self {
        let inner = Arc::new(Inner {
            deps,
            pool,
            idle,
            entries: Mutex::new(HashMap::new()),
        });
        actix::spawn(reaper(Arc::downgrade(&inner)));
        Registry { inner }
    }

    /// A handle that does not keep the registry (and what its actors hold) alive.
    pub fn downgrade(&self) -> WeakRegistry<E> {
        WeakRegistry {
            inner: Arc::downgrade(&self.inner),
        }
    }

    /// Number of live (activated) actors.
    pub fn live(&self) -> usize {
        self.inner
            .entries
            .lock()
            .values()
            .filter(|e| e.cell.initialized())
            .count()
    }

    /// Delivers `msg` to the entity's actor, activating it first if needed, and waits for the
    /// answer.
    pub async fn send<M>(&self, id: E::Id, msg: M) -> Result<M::Result, ActorError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        E: Handler<M>,
        E::Context: actix::dev::ToEnvelope<E, M>,
    {
        self.route(id, msg, Placement::Spread).await
    }

    /// Like [`send`](Self::send), but an actor activated for this message starts on the
    /// caller's own arbiter (when the caller runs on one) instead of the pool's. A session that
    /// talks to one entity all the time (a courier's socket and the courier's actor) then keeps
    /// every message on one thread, with no wake-up of another thread per message. An actor
    /// that is already running stays where it is.
    pub async fn send_here<M>(&self, id: E::Id, msg: M) -> Result<M::Result, ActorError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        E: Handler<M>,
        E::Context: actix::dev::ToEnvelope<E, M>,
    {
        let placement = Here::current().map_or(Placement::Spread, Placement::On);
        self.route(id, msg, placement).await
    }

    /// Moves the entity's running actor onto the caller's arbiter when it runs on another one,
    /// so that the messages the caller sends it from then on stay on one thread (see
    /// [`send_here`](Self::send_here)). The actor there handles what it was sent before,
    /// persists and stops (it is passivated); only then is the entity activated here, and the
    /// messages sent meanwhile wait for that activation. An entity with no running actor, or
    /// one already here, is left as it is; so is every actor when the caller runs on no
    /// arbiter.
    pub async fn bring_here(&self, id: E::Id) -> Result<(), ActorError> {
        let Some(here) = Here::current() else {
            return Ok(());
        };
        let (cell, elsewhere) = {
            let mut entries = self.inner.entries.lock();
            let Some(entry) = entries.get_mut(&id) else {
                return Ok(());
            };
            match entry.cell.get() {
                Some(active) if active.home != Some(here.thread) && active.addr.connected() => {
                    let elsewhere = active.addr.clone();
                    entry.cell = Arc::new(OnceCell::new());
                    entry.last_used = Instant::now();
                    (Arc::clone(&entry.cell), elsewhere)
                }
                // Not running yet (the next `send_here` starts it here), already here, or dead
                // (the next message re-activates it).
                _ => return Ok(()),
            }
        };
        let placement = Placement::On(here);
        cell.get_or_try_init(|| async {
            // An actor that stopped meanwhile (it crashed) answers nothing; the store holds
            // what it persisted.
            let _ = elsewhere.send(Passivate).await;
            self.start(id.clone(), &placement).await
        })
        .await?;
        Ok(())
    }

    async fn route<M>(
        &self,
        id: E::Id,
        msg: M,
        placement: Placement,
    ) -> Result<M::Result, ActorError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        E: Handler<M>,
        E::Context: actix::dev::ToEnvelope<E, M>,
    {
        let mut msg = Some(msg);
        for _ in 0..ROUTE_ATTEMPTS {
            let cell = self.cell(&id);
            let addr = cell
                .get_or_try_init(|| self.start(id.clone(), &placement))
                .await?
                .addr
                .clone();
            let request = {
                let mut entries = self.inner.entries.lock();
                match entries.get_mut(&id) {
                    Some(entry) if Arc::ptr_eq(&entry.cell, &cell) => {
                        if addr.connected() {
                            entry.last_used = Instant::now();
                            msg.take().map(|m| addr.send(m))
                        } else {
                            tracing::warn!(kind = E::KIND, id = %id, "actor found dead; re-activating from the store");
                            entries.remove(&id);
                            None
                        }
                    }
                    // Passivated or replaced while we were activating: route again.
                    _ => None,
                }
            };
            if let Some(request) = request {
                return match request.await {
                    Ok(answer) => Ok(answer),
                    Err(_) => {
                        self.evict(&id, &cell);
                        tracing::error!(kind = E::KIND, id = %id, "actor stopped while handling a message");
                        Err(ActorError::Crashed)
                    }
                };
            }
        }
        Err(ActorError::Unavailable)
    }

    /// Passivates every live actor and waits (up to `timeout`) until each has persisted.
    pub async fn shutdown(&self, timeout: Duration) {
        let addrs: Vec<Addr<E>> = {
            let mut entries = self.inner.entries.lock();
            entries
                .drain()
                .filter_map(|(_, e)| e.cell.get().map(|active| active.addr.clone()))
                .collect()
        };
        let count = addrs.len();
        let all = futures_util::future::join_all(addrs.iter().map(|a| a.send(Passivate)));
        if tokio::time::timeout(timeout, all).await.is_err() {
            tracing::warn!(
                kind = E::KIND,
                count,
                "some actors did not passivate in time"
            );
        } else {
            tracing::info!(kind = E::KIND, count, "actors passivated");
        }
    }

    fn cell(&self, id: &E::Id) -> Arc<OnceCell<Active<E>>> {
        let mut entries = self.inner.entries.lock();
        let entry = entries.entry(id.clone()).or_insert_with(|| Entry {
            cell: Arc::new(OnceCell::new()),
            last_used: Instant::now(),
        });
        entry.last_used = Instant::now();
        Arc::clone(&entry.cell)
    }

    fn evict(&self, id: &E::Id, cell: &Arc<OnceCell<Active<E>>>) {
        let mut entries = self.inner.entries.lock();
        if entries.get(id).is_some_and(|e| Arc::ptr_eq(&e.cell, cell)) {
            entries.remove(id);
        }
    }

    async fn start(&self, id: E::Id, placement: &Placement) -> Result<Active<E>, StoreError> {
        let actor = E::activate(id.clone(), self.inner.deps.clone()).await?;
        let (arbiter, home) = match placement {
            Placement::On(here) => (&here.arbiter, Some(here.thread)),
            Placement::Spread => (self.inner.pool.pick(&id), None),
        };
        tracing::debug!(kind = E::KIND, id = %id, "actor activated");
        Ok(Active {
            addr: E::start_in_arbiter(arbiter, move |_ctx| actor),
            home,
        })
    }
}

/// Passivates idle actors until the registry is dropped.
async fn reaper<E: Entity>(inner: Weak<Inner<E>>) {
    let period = match inner.upgrade() {
        Some(inner) => (inner.idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(30)),
        None => return,
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let idle: Vec<Addr<E>> = {
            let mut entries = inner.entries.lock();
            let mut idle = Vec::new();
            entries.retain(|_, entry| {
                if entry.last_used.elapsed() < inner.idle {
                    return true;
                }
                match entry.cell.get() {
                    Some(active) => {
                        idle.push(active.addr.clone());
                        false
                    }
                    // Activation failed or is under way; drop the entry only if nobody is
                    // activating it (an actor started for a dropped entry would be orphaned).
                    None => Arc::strong_count(&entry.cell) > 1,
                }
            });
            idle
        };
        if !idle.is_empty() {
            tracing::debug!(
                kind = E::KIND,
                count = idle.len(),
                "passivating idle actors"
            );
        }
        for addr in idle {
            addr.do_send(Passivate);
        }
    }
}
