//! Properties of idempotency keys on the store: a claim is a conditional insert, so one key
//! runs its request once across nodes, and an abandoned claim is taken over after its lease.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::ensure;

use super::joined;
use crate::clock::Clock;
use crate::domain::ids::UserId;
use crate::idempotency::{Idempotency, IdempotencyError, LEASE, Outcome, Recorded, fingerprint};
use crate::store::SharedStore;

fn recorded(status: u16, body: &str) -> Recorded {
    Recorded {
        status,
        body: body.to_owned(),
    }
}

pub async fn idempotency_keys_replay_the_first_answer_and_refuse_other_requests(
    store: SharedStore,
) -> anyhow::Result<String> {
    let keys = Idempotency::new(store, Clock::default());
    let user = UserId::new();
    let request = fingerprint("POST", "/api/v1/checkout", br#"{"a":1}"#);
    let first = keys
        .run(user, "key-1", &request, || async { recorded(201, "first") })
        .await?;
    ensure!(first == Outcome::Fresh(recorded(201, "first")));
    let again = keys
        .run(user, "key-1", &request, || async {
            recorded(201, "second")
        })
        .await?;
    ensure!(again == Outcome::Replayed(recorded(201, "first")));

    let other = fingerprint("POST", "/api/v1/checkout", br#"{"a":2}"#);
    let mismatch = keys
        .run(user, "key-1", &other, || async { recorded(201, "x") })
        .await;
    ensure!(
        matches!(mismatch, Err(IdempotencyError::Mismatch)),
        "another request under a used key: {mismatch:?}"
    );

    // Keys are per user.
    let someone = UserId::new();
    let theirs = keys
        .run(someone, "key-1", &other, || async {
            recorded(201, "theirs")
        })
        .await?;
    ensure!(theirs == Outcome::Fresh(recorded(201, "theirs")));

    // Server faults are not recorded: a retry runs again.
    let failed = keys
        .run(user, "key-2", &request, || async { recorded(503, "down") })
        .await?;
    ensure!(failed == Outcome::Fresh(recorded(503, "down")));
    let retried = keys
        .run(user, "key-2", &request, || async { recorded(201, "ok") })
        .await?;
    ensure!(retried == Outcome::Fresh(recorded(201, "ok")));

    for bad in ["", "with space", &"k".repeat(201)] {
        let refused = keys
            .run(user, bad, &request, || async { recorded(201, "x") })
            .await;
        ensure!(
            matches!(refused, Err(IdempotencyError::InvalidKey)),
            "{bad:?}: {refused:?}"
        );
    }
    Ok(
        "replayed, refused for another request, per user; faults not kept; bad keys refused"
            .to_owned(),
    )
}

pub async fn concurrent_requests_with_one_key_run_once(
    store: SharedStore,
) -> anyhow::Result<String> {
    const REQUESTS: usize = 20;
    let keys = Idempotency::new(store, Clock::default());
    let user = UserId::new();
    let request = fingerprint("POST", "/api/v1/checkout", b"{}");
    let runs = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..REQUESTS)
        .map(|i| {
            let (keys, request, runs) = (keys.clone(), request.clone(), Arc::clone(&runs));
            tokio::spawn(async move {
                let outcome = keys
                    .run(user, "same", &request, || async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        recorded(201, &format!("run {i}"))
                    })
                    .await?;
                Ok(outcome.response().clone())
            })
        })
        .collect();
    let mut answers = BTreeSet::new();
    for task in tasks {
        answers.insert(joined(task).await?.body);
    }
    ensure!(
        runs.load(Ordering::SeqCst) == 1,
        "the work ran more than once"
    );
    ensure!(
        answers.len() == 1,
        "everyone must get the same answer: {answers:?}"
    );
    Ok(format!(
        "{REQUESTS} concurrent requests, one run, one answer"
    ))
}

pub async fn an_abandoned_claim_is_taken_over_after_its_lease(
    store: SharedStore,
) -> anyhow::Result<String> {
    let clock = Clock::default();
    let keys = Idempotency::new(store, clock.clone()).with_wait(Duration::from_millis(500));
    let user = UserId::new();
    let request = fingerprint("POST", "/api/v1/checkout", b"{}");
    // A request that never finishes (its process died): the claim stays.
    let stuck = {
        let (keys, request) = (keys.clone(), request.clone());
        tokio::spawn(async move {
            keys.run(user, "abandoned", &request, std::future::pending)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    stuck.abort();
    let busy = {
        let keys = keys.clone();
        let request = request.clone();
        tokio::spawn(async move {
            Ok(keys
                .run(user, "abandoned", &request, || async { recorded(201, "x") })
                .await)
        })
    };
    // Within the lease a retry waits and then reports the request as in progress.
    clock.advance(Duration::from_secs(1));
    let answer = joined(busy).await?;
    ensure!(
        matches!(answer, Err(IdempotencyError::InProgress)),
        "a retry within the lease: {answer:?}"
    );
    clock.advance(LEASE);
    let taken = keys
        .run(user, "abandoned", &request, || async {
            recorded(201, "retried")
        })
        .await?;
    ensure!(taken == Outcome::Fresh(recorded(201, "retried")));
    Ok(format!(
        "in progress within the lease; taken over after {} s",
        LEASE.as_secs()
    ))
}
