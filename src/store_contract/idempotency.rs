fn recorded(status: u16, body: &str) -> hexmarket::idempotency::Recorded {
    hexmarket::idempotency::Recorded {
        status,
        body: body.to_owned(),
    }
}

async fn idempotency_keys_replay_the_first_answer_and_refuse_other_requests(store: SharedStore) {
    use hexmarket::idempotency::{Idempotency, IdempotencyError, Outcome, fingerprint};
    let keys = Idempotency::new(store, hexmarket::clock::Clock::default());
    let user = hexmarket::domain::ids::UserId::new();
    let request = fingerprint("POST", "/api/v1/checkout", br#"{"a":1}"#);
    let first = keys
        .run(user, "key-1", &request, || async { recorded(201, "first") })
        .await
        .unwrap();
    assert_eq!(first, Outcome::Fresh(recorded(201, "first")));
    let again = keys
        .run(user, "key-1", &request, || async {
            recorded(201, "second")
        })
        .await
        .unwrap();
    assert_eq!(again, Outcome::Replayed(recorded(201, "first")));

    let other = fingerprint("POST", "/api/v1/checkout", br#"{"a":2}"#);
    let mismatch = keys
        .run(user, "key-1", &other, || async { recorded(201, "x") })
        .await;
    assert!(matches!(mismatch, Err(IdempotencyError::Mismatch)));

    // Keys are per user.
    let someone = hexmarket::domain::ids::UserId::new();
    let theirs = keys
        .run(someone, "key-1", &other, || async {
            recorded(201, "theirs")
        })
        .await
        .unwrap();
    assert_eq!(theirs, Outcome::Fresh(recorded(201, "theirs")));

    // Server faults are not recorded: a retry runs again.
    let failed = keys
        .run(user, "key-2", &request, || async { recorded(503, "down") })
        .await
        .unwrap();
    assert_eq!(failed, Outcome::Fresh(recorded(503, "down")));
    let retried = keys
        .run(user, "key-2", &request, || async { recorded(201, "ok") })
        .await
        .unwrap();
    assert_eq!(retried, Outcome::Fresh(recorded(201, "ok")));

    for bad in ["", "with space", &"k".repeat(201)] {
        let refused = keys
            .run(user, bad, &request, || async { recorded(201, "x") })
            .await;
        assert!(
            matches!(refused, Err(IdempotencyError::InvalidKey)),
            "{bad:?}"
        );
    }
}

async fn concurrent_requests_with_one_key_run_once(store: SharedStore) {
    use hexmarket::idempotency::{Idempotency, fingerprint};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let keys = Idempotency::new(store, hexmarket::clock::Clock::default());
    let user = hexmarket::domain::ids::UserId::new();
    let request = fingerprint("POST", "/api/v1/checkout", b"{}");
    let runs = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (keys, request, runs) = (keys.clone(), request.clone(), Arc::clone(&runs));
            tokio::spawn(async move {
                keys.run(user, "same", &request, || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    recorded(201, &format!("run {i}"))
                })
                .await
                .unwrap()
                .response()
                .clone()
            })
        })
        .collect();
    let mut answers = BTreeSet::new();
    for task in tasks {
        answers.insert(task.await.unwrap().body);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the work ran once");
    assert_eq!(
        answers.len(),
        1,
        "everyone got the same answer: {answers:?}"
    );
}

async fn an_abandoned_claim_is_taken_over_after_its_lease(store: SharedStore) {
    use hexmarket::idempotency::{Idempotency, IdempotencyError, LEASE, Outcome, fingerprint};
    let clock = hexmarket::clock::Clock::default();
    let keys = Idempotency::new(store, clock.clone()).with_wait(Duration::from_millis(500));
    let user = hexmarket::domain::ids::UserId::new();
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
            keys.run(user, "abandoned", &request, || async { recorded(201, "x") })
                .await
        })
    };
    // Within the lease a retry waits and then reports the request as in progress.
    clock.advance(Duration::from_secs(1));
    let answer = busy.await.unwrap();
    assert!(
        matches!(answer, Err(IdempotencyError::InProgress)),
        "{answer:?}"
    );
    clock.advance(LEASE);
    let taken = keys
        .run(user, "abandoned", &request, || async {
            recorded(201, "retried")
        })
        .await
        .unwrap();
    assert_eq!(taken, Outcome::Fresh(recorded(201, "retried")));
}
