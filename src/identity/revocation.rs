//! Revocation of access tokens at once, on every node, without a store read per request.
//!
//! A revocation is a per-user *mark*: "every access token of this user issued at or before
//! this millisecond is dead". Bans, erasures, role changes, logout-all and password changes and
//! resets write one ([`Revocations::revoke`]):
//!
//! 1. durably to the store (`Table::TokenRevocations`) before the operation answers,
//! 2. into this node's in-memory [`Marks`], which [`AccessTokens::verify`] consults on every
//!    request (a concurrent-map lookup),
//! 3. on the bus ([`TOPIC`]), so other nodes learn it within milliseconds.
//!
//! The bus is best effort (and absent across nodes without Redis), so every node also reads the
//! last seconds of marks from the store every [`POLL_EVERY`] ([`Revocations::follow`]), and
//! loads all live marks when it starts ([`Revocations::load`]). WebSocket sessions wait on
//! [`RevocationWatch::revoked`], woken by the node's marks, never by the store.
//!
//! Marks are compared with the token's issue time in milliseconds ([`Claims::issued_at_ms`]),
//! as stamped by the issuing node's clock: nodes are assumed to agree on the time to well
//! within a second. A mark outlives every token it can refuse by a margin ([`MARK_LIFETIME`]),
//! then it is forgotten in memory and expires in the store.
//!
//! [`AccessTokens::verify`]: super::tokens::AccessTokens::verify
//! [`Claims::issued_at_ms`]: super::tokens::Claims::issued_at_ms

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use tokio::sync::broadcast;

use super::tokens::ACCESS_TTL;
use crate::bus::{Delivery, SharedBus, Subscription};
use crate::clock::Clock;
use crate::domain::ids::UserId;
use crate::store::revocations::{RevocationMark, RevocationRepo};
use crate::store::{SharedStore, StoreResult};

/// The bus topic marks are announced on.
pub const TOPIC: &str = "identity.revocations";
/// How often each node reads recent marks from the store.
pub const POLL_EVERY: Duration = Duration::from_secs(1);
/// How long a mark matters: the access-token lifetime, the 30 s of clock leeway
/// verification allows, and a margin.
pub const MARK_LIFETIME: Duration = Duration::from_secs(ACCESS_TTL_SECS + 30 + 60);
/// How far back each poll reads before the previous one began: a mark is stamped before it is
/// stored, and nodes' clocks differ a little.
const POLL_OVERLAP_MS: i64 = 10_000;
/// Wake-ups of sessions are spread over this many channels by user, so a revocation wakes
/// a sixty-fourth of the node's sessions rather than all of them.
const SHARDS: usize = 64;
/// Revocations buffered per shard for slow sessions; one that lags re-checks its own mark.
const SHARD_CAPACITY: usize = 16;

const ACCESS_TTL_SECS: u64 = ACCESS_TTL.num_seconds().unsigned_abs();

/// The marks this node knows, shared by every clone: user → latest mark in milliseconds.
#[derive(Clone)]
pub struct Marks {
    inner: Arc<MarksInner>,
}

struct MarksInner {
    latest: DashMap<UserId, i64>,
    shards: Box<[broadcast::Sender<UserId>]>,
}

impl Default for Marks {
    fn default() -> Self {
        Marks {
            inner: Arc::new(MarksInner {
                latest: DashMap::new(),
                shards: (0..SHARDS)
                    .map(|_| broadcast::channel(SHARD_CAPACITY).0)
                    .collect(),
            }),
        }
    }
}

impl std::fmt::Debug for Marks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Marks")
            .field("users", &self.inner.latest.len())
            .finish()
    }
}

impl Marks {
    /// Whether a token of `user` issued at `issued_ms` is revoked.
    pub fn covers(&self, user: UserId, issued_ms: i64) -> bool {
        self.inner
            .latest
            .get(&user)
            .is_some_and(|mark| issued_ms <= *mark)
    }

    /// Records a mark; wakes the user's sessions when it moves their mark forward. Marks
    /// arrive more than once (store, bus, the node's own write) and out of order: only the
    /// latest counts.
    pub fn raise(&self, user: UserId, at_ms: i64) -> bool {
        let raised = {
            let mut latest = self.inner.latest.entry(user).or_insert(i64::MIN);
            let raised = at_ms > *latest;
            if raised {
                *latest = at_ms;
            }
            raised
        };
        if raised {
            // No session of the user's shard listening is fine.
            let _ = self.shard(user).send(user);
        }
        raised
    }

    /// Forgets marks older than `before_ms`: every token they could refuse has expired.
    pub fn forget_before(&self, before_ms: i64) {
        self.inner.latest.retain(|_, mark| *mark >= before_ms);
    }

    /// How many users have a mark.
    pub fn len(&self) -> usize {
        self.inner.latest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.latest.is_empty()
    }

    /// A handle that resolves once a token of `user` issued at `issued_ms` is revoked.
    pub fn watch(&self, user: UserId, issued_ms: i64) -> RevocationWatch {
        RevocationWatch {
            marks: self.clone(),
            user,
            issued_ms,
        }
    }

    fn shard(&self, user: UserId) -> &broadcast::Sender<UserId> {
        // The low bytes of a UUIDv7 are random, so users spread evenly.
        let low = user.as_uuid().as_u128() as usize;
        &self.inner.shards[low % SHARDS]
    }
}

/// One access (a WebSocket session's), waiting for its revocation.
#[derive(Clone)]
pub struct RevocationWatch {
    marks: Marks,
    user: UserId,
    issued_ms: i64,
}

impl std::fmt::Debug for RevocationWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationWatch")
            .field("user", &self.user)
            .field("issued_ms", &self.issued_ms)
            .finish()
    }
}

impl RevocationWatch {
    /// Resolves when a mark covers the access (at once if one already does); never otherwise.
    pub async fn revoked(self) {
        // Subscribed before the first look, so a mark raised in between still wakes us.
        let mut wakes = self.marks.shard(self.user).subscribe();
        loop {
            if self.marks.covers(self.user, self.issued_ms) {
                return;
            }
            match wakes.recv().await {
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
            }
        }
    }
}

/// Why a revocation could not be recorded.
pub type RevocationError = crate::store::StoreError;

/// Writes marks and keeps this node's [`Marks`] up to date.
#[derive(Clone)]
pub struct Revocations {
    marks: Marks,
    repo: RevocationRepo,
    bus: SharedBus,
    clock: Clock,
}

impl Revocations {
    /// Keeps `marks` (those of the node's [`AccessTokens`](super::tokens::AccessTokens)).
    pub fn new(store: SharedStore, bus: SharedBus, clock: Clock, marks: Marks) -> Self {
        Revocations {
            marks,
            repo: RevocationRepo::new(store, MARK_LIFETIME),
            bus,
            clock,
        }
    }

    pub fn marks(&self) -> &Marks {
        &self.marks
    }

    /// Ends every access token of `user` issued until now, on this node at once and on every
    /// node within [`POLL_EVERY`] (sooner through the bus). Durable when it returns.
    #[tracing::instrument(skip(self), fields(user_id = %user))]
    pub async fn revoke(&self, user: UserId) -> Result<(), RevocationError> {
        let mark = RevocationMark {
            user_id: user,
            at_ms: self.clock.now().timestamp_millis(),
        };
        self.repo.put(mark).await?;
        self.marks.raise(user, mark.at_ms);
        match serde_json::to_vec(&mark) {
            Ok(payload) => {
                if let Err(e) = self.bus.publish(TOPIC, Bytes::from(payload)).await {
                    tracing::warn!(error = %e, "revocation not announced on the bus; other nodes read it from the store");
                }
            }
            Err(e) => tracing::error!(error = %e, "revocation mark not encoded for the bus"),
        }
        tracing::info!(at_ms = mark.at_ms, "access tokens revoked");
        Ok(())
    }

    /// Loads every mark that can still refuse a token; run before the node serves. Returns
    /// the time the next poll should read from.
    pub async fn load(&self) -> StoreResult<i64> {
        let now = self.clock.now().timestamp_millis();
        let from = now - lifetime_ms();
        let marks = self.repo.between(from, now + POLL_OVERLAP_MS).await?;
        let count = marks.len();
        self.apply(marks);
        tracing::info!(count, "revocation marks loaded");
        Ok(now - POLL_OVERLAP_MS)
    }

    /// Follows marks made on other nodes, from the bus as they are announced and from the
    /// store every [`POLL_EVERY`] after `since_ms` (what [`load`](Self::load) returned), and
    /// forgets marks that no longer matter. Runs until aborted.
    pub fn follow(&self, since_ms: i64) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move { this.run(since_ms).await })
    }

    async fn run(self, mut since_ms: i64) {
        let mut subscription = self.subscribe().await;
        let mut tick = tokio::time::interval(POLL_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                delivery = next(&mut subscription) => match delivery {
                    Some(Delivery::Message(payload)) => {
                        match serde_json::from_slice::<RevocationMark>(&payload) {
                            Ok(mark) => self.apply([mark]),
                            Err(e) => tracing::warn!(error = %e, "unreadable revocation on the bus"),
                        }
                    }
                    // Whatever was lost, the next poll reads from the store.
                    Some(Delivery::Lagged(_)) => {}
                    None => subscription = None,
                },
                _ = tick.tick() => {
                    since_ms = self.poll(since_ms).await;
                    if subscription.is_none() {
                        subscription = self.subscribe().await;
                    }
                }
            }
        }
    }

    /// Reads marks stored since `since_ms`; returns where the next poll starts.
    async fn poll(&self, since_ms: i64) -> i64 {
        let now = self.clock.now().timestamp_millis();
        // A node that could not read for a while reads everything still relevant.
        let from = since_ms.max(now - lifetime_ms());
        match self.repo.between(from, now + POLL_OVERLAP_MS).await {
            Ok(marks) => {
                self.apply(marks);
                self.marks.forget_before(now - lifetime_ms());
                now - POLL_OVERLAP_MS
            }
            Err(e) => {
                tracing::warn!(error = %e, "revocation marks not read from the store; retrying");
                from
            }
        }
    }

    fn apply(&self, marks: impl IntoIterator<Item = RevocationMark>) {
        let horizon = self.clock.now().timestamp_millis() - lifetime_ms();
        for mark in marks {
            if mark.at_ms >= horizon {
                self.marks.raise(mark.user_id, mark.at_ms);
            }
        }
    }

    async fn subscribe(&self) -> Option<Subscription> {
        match self.bus.subscribe(TOPIC).await {
            Ok(subscription) => Some(subscription),
            Err(e) => {
                tracing::warn!(error = %e, "revocations not followed on the bus; the store poll carries them");
                None
            }
        }
    }
}

/// The next delivery of a subscription; never, without one.
async fn next(subscription: &mut Option<Subscription>) -> Option<Delivery> {
    match subscription {
        Some(subscription) => subscription.recv().await,
        None => std::future::pending().await,
    }
}

fn lifetime_ms() -> i64 {
    i64::try_from(MARK_LIFETIME.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::local::LocalBus;
    use crate::store::embedded::EmbeddedStore;

    #[test]
    fn only_the_latest_mark_counts() {
        let marks = Marks::default();
        let user = UserId::new();
        assert!(!marks.covers(user, 0));
        assert!(marks.raise(user, 1_000));
        assert!(!marks.raise(user, 900), "an older mark arriving late");
        assert!(marks.covers(user, 1_000));
        assert!(!marks.covers(user, 1_001));
        marks.forget_before(1_001);
        assert!(marks.is_empty());
    }

    #[tokio::test]
    async fn a_watch_resolves_when_its_access_is_revoked_and_not_before() {
        let marks = Marks::default();
        let user = UserId::new();
        let mut watch = Box::pin(marks.watch(user, 2_000).revoked());
        let other = UserId::new();
        marks.raise(other, 5_000);
        marks.raise(user, 1_999);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut watch)
                .await
                .is_err()
        );
        marks.raise(user, 2_000);
        tokio::time::timeout(Duration::from_secs(5), watch)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_node_that_shares_only_the_store_learns_a_mark_from_its_poll_or_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let store: SharedStore = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let node = |store: &SharedStore| {
            Revocations::new(
                Arc::clone(store),
                Arc::new(LocalBus::new()),
                Clock::default(),
                Marks::default(),
            )
        };
        let (a, b) = (node(&store), node(&store));
        let since = b.load().await.unwrap();
        let user = UserId::new();
        a.revoke(user).await.unwrap();
        assert!(a.marks().covers(user, 0));
        assert!(!b.marks().covers(user, 0), "b shares no bus with a");
        b.poll(since).await;
        assert!(b.marks().covers(user, 0));

        let c = node(&store);
        c.load().await.unwrap();
        assert!(c.marks().covers(user, 0));
    }
}
