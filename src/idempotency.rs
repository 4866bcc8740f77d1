//! Idempotency keys for unsafe requests that clients retry (`Idempotency-Key` header).
//!
//! The first request with a key claims a record (insert-if-absent, so of concurrent requests
//! with one key exactly one runs), runs, and stores its response in the record before
//! answering. A retry with the same key and the same body gets the stored response; the same
//! key with another body is refused. Records expire after [`RECORD_TTL`].
//!
//! A request whose process dies while it runs leaves its claim behind. After [`LEASE`] a retry
//! takes the claim over (by compare-and-set, so only one retry does) and runs again, which is
//! why whatever runs under a key must itself converge on retries: checkout, for instance,
//! derives its checkout id from the key, so a second run finds what the first one wrote.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::clock::Clock;
use crate::domain::ids::UserId;
use crate::store::typed::{Change, ModifyError, Rows};
use crate::store::{Key, SharedStore, StoreError, Table};

/// How long a key is remembered.
pub const RECORD_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long a claim protects a running request before a retry may take it over (default).
pub const LEASE: Duration = Duration::from_secs(30);
/// How long a concurrent duplicate waits for the first request to finish.
pub const WAIT: Duration = Duration::from_secs(10);
/// Longest accepted key.
pub const MAX_KEY: usize = 200;

/// A stored response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    pub status: u16,
    pub body: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    /// SHA-256 of what the request asked (method, path and body), hex.
    request: String,
    claimed_at: DateTime<Utc>,
    /// Incremented by every takeover, so a stale run cannot overwrite a newer one's answer.
    attempt: u32,
    response: Option<Recorded>,
}

/// Why a keyed request was not run.
#[derive(Debug, thiserror::Error)]
pub enum IdempotencyError {
    /// The key is empty, too long or not printable ASCII.
    #[error("Idempotency-Key must be 1–{MAX_KEY} printable ASCII characters")]
    InvalidKey,
    /// The key was used for a different request.
    #[error("this Idempotency-Key was used for a different request")]
    Mismatch,
    /// Another request with this key is still running.
    #[error("a request with this Idempotency-Key is still being processed; retry shortly")]
    InProgress,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What [`Idempotency::run`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The request ran now and this is its response.
    Fresh(Recorded),
    /// An earlier request with this key answered this.
    Replayed(Recorded),
}

impl Outcome {
    pub fn response(&self) -> &Recorded {
        match self {
            Outcome::Fresh(r) | Outcome::Replayed(r) => r,
        }
    }
}

/// Idempotency records in the store.
#[derive(Clone)]
pub struct Idempotency {
    records: Rows<Record>,
    clock: Clock,
    wait: Duration,
    lease: Duration,
}

/// Checks a client's key.
pub fn check_key(key: &str) -> Result<(), IdempotencyError> {
    if key.is_empty() || key.len() > MAX_KEY || !key.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        Err(IdempotencyError::InvalidKey)
    } else {
        Ok(())
    }
}

/// The fingerprint of a request: what must be equal for a retry to be the same request.
pub fn fingerprint(method: &str, path: &str, body: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(method.as_bytes());
    hash.update([0]);
    hash.update(path.as_bytes());
    hash.update([0]);
    hash.update(body);
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

enum Claim {
    Run(u32),
    Done(Recorded),
    Busy,
}

impl Idempotency {
    pub fn new(store: SharedStore, clock: Clock) -> Self {
        Idempotency {
            records: Rows::new(store, Table::Idempotency).with_ttl(RECORD_TTL),
            clock,
            wait: WAIT,
            lease: LEASE,
        }
    }

    /// How long a claim protects a running request (default [`LEASE`]).
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How long a duplicate waits for the running request before answering "in progress".
    pub fn with_wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    fn key(user: UserId, key: &str) -> Key {
        // Keys are per user: two users may pick the same key.
        Key::new(user.to_string(), key.to_owned())
    }

    async fn claim(&self, at: &Key, request: &str) -> Result<Claim, IdempotencyError> {
        let now = self.clock.now();
        let lease = chrono::Duration::from_std(self.lease).unwrap_or(chrono::Duration::seconds(30));
        let (claim, _) = self
            .records
            .modify(at, |current| match current {
                None => Ok(Change::Put(
                    Record {
                        request: request.to_owned(),
                        claimed_at: now,
                        attempt: 1,
                        response: None,
                    },
                    Claim::Run(1),
                )),
                Some(r) if r.request != request => Err(IdempotencyError::Mismatch),
                Some(r) => match &r.response {
                    Some(done) => Ok(Change::Keep(Claim::Done(done.clone()))),
                    None if now - r.claimed_at >= lease => {
                        let attempt = r.attempt + 1;
                        Ok(Change::Put(
                            Record {
                                claimed_at: now,
                                attempt,
                                ..r.clone()
                            },
                            Claim::Run(attempt),
                        ))
                    }
                    None => Ok(Change::Keep(Claim::Busy)),
                },
            })
            .await
            .map_err(|e| match e {
                ModifyError::Rejected(e) => e,
                ModifyError::Store(e) => IdempotencyError::Store(e),
            })?;
        Ok(claim)
    }

    /// Runs `work` once per (user, key) and request: a retry gets the first answer.
    ///
    /// `work` answers a status and a body; answers with a 5xx status are not recorded (the
    /// claim is dropped so a retry runs again), everything else is.
    pub async fn run<F, Fut>(
        &self,
        user: UserId,
        key: &str,
        request: &str,
        work: F,
    ) -> Result<Outcome, IdempotencyError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Recorded>,
    {
        check_key(key)?;
        let at = Self::key(user, key);
        let started = std::time::Instant::now();
        let attempt = loop {
            match self.claim(&at, request).await? {
                Claim::Run(attempt) => break attempt,
                Claim::Done(recorded) => return Ok(Outcome::Replayed(recorded)),
                Claim::Busy if started.elapsed() < self.wait => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Claim::Busy => return Err(IdempotencyError::InProgress),
            }
        };
        let recorded = work().await;
        let keep = recorded.status < 500;
        let answer = recorded.clone();
        self.records
            .modify(&at, |current| match current {
                // Only the attempt that holds the claim records (or drops) it.
                Some(r) if r.attempt == attempt && r.response.is_none() => {
                    if keep {
                        Ok::<_, IdempotencyError>(Change::Put(
                            Record {
                                response: Some(recorded.clone()),
                                ..r.clone()
                            },
                            (),
                        ))
                    } else {
                        Ok(Change::Delete(()))
                    }
                }
                _ => Ok(Change::Keep(())),
            })
            .await
            .map_err(|e| match e {
                ModifyError::Rejected(e) => e,
                ModifyError::Store(e) => IdempotencyError::Store(e),
            })?;
        Ok(Outcome::Fresh(answer))
    }
}
