//! Cost of the identity hot paths on one core, with criterion: Argon2id verification (what a
//! login costs) and the access-token check every authenticated request makes, without the
//! revocation lookup, with it and no marks held, and with 10,000 marks held (the token's user
//! among them or not).
//!
//! Run with `cargo bench --bench identity` (about a minute; add `-- --quick` for a fast pass).

// A benchmark whose setup fails has nothing to measure: it stops loudly.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};

use hexmarket::domain::identity::Role;
use hexmarket::domain::ids::UserId;
use hexmarket::identity::password::PasswordHasher;
use hexmarket::identity::tokens::AccessTokens;

const MARKS: usize = 10_000;
const PASSWORD: &str = "correct horse battery staple";

fn argon2id(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let hasher = PasswordHasher::new().unwrap();
    let phc = runtime.block_on(hasher.hash(PASSWORD.to_owned())).unwrap();
    let mut group = c.benchmark_group("login");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("argon2id verify (m=19 MiB, t=2, p=1)", |b| {
        b.iter(|| {
            let ok = runtime
                .block_on(hasher.verify(PASSWORD.to_owned(), Some(phc.clone())))
                .unwrap();
            assert!(ok);
        })
    });
    group.finish();
}

fn access_token(c: &mut Criterion) {
    let now = chrono::Utc::now();
    let user = UserId::new();
    let bare = AccessTokens::new(&[7; 32]);
    let jwt = bare.issue(user, Role::Customer, now, None, now).unwrap();

    // 10,000 other users revoked, and separately the token's own user revoked before it was
    // issued (the lookup finds a mark and compares it).
    let crowded = AccessTokens::new(&[7; 32]);
    let mark = now.timestamp_millis() - 1;
    for _ in 0..MARKS {
        crowded.marks().raise(UserId::new(), mark);
    }
    let own = AccessTokens::new(&[7; 32]);
    for _ in 0..MARKS - 1 {
        own.marks().raise(UserId::new(), mark);
    }
    own.marks().raise(user, mark);
    assert!(own.verify(&jwt).is_ok());

    let mut group = c.benchmark_group("access token check");
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("signature and claims only", |b| {
        b.iter(|| black_box(bare.verify_signature(black_box(&jwt)).is_ok()))
    });
    group.bench_function("with revocation lookup, no marks", |b| {
        b.iter(|| black_box(bare.verify(black_box(&jwt)).is_ok()))
    });
    group.bench_function("with revocation lookup, 10k marks of others", |b| {
        b.iter(|| black_box(crowded.verify(black_box(&jwt)).is_ok()))
    });
    group.bench_function("with revocation lookup, 10k marks incl. the user's", |b| {
        b.iter(|| black_box(own.verify(black_box(&jwt)).is_ok()))
    });
    group.bench_function("revocation lookup alone, 10k marks", |b| {
        b.iter(|| black_box(own.marks().covers(black_box(user), black_box(mark + 1))))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1));
    targets = argon2id, access_token
}
criterion_main!(benches);
