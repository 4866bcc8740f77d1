//! Cost of the identity hot paths on one core: Argon2id verification (what a login costs) and
//! access-token verification (what every authenticated request costs).
//!
//! Run with `cargo bench --bench identity`.

use std::time::{Duration, Instant};

use hexmarket::domain::identity::Role;
use hexmarket::domain::ids::UserId;
use hexmarket::identity::password::PasswordHasher;
use hexmarket::identity::tokens::AccessTokens;

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    // One verification at a time: logins per second per core.
    let hasher = PasswordHasher::new()?;
    let phc = runtime.block_on(hasher.hash("correct horse battery staple".to_owned()))?;
    let rounds = 40;
    let started = Instant::now();
    for _ in 0..rounds {
        let ok = runtime.block_on(
            hasher.verify("correct horse battery staple".to_owned(), Some(phc.clone())),
        )?;
        assert!(ok);
    }
    let per_login = started.elapsed() / rounds;
    println!(
        "argon2id verify (m=19 MiB, t=2, p=1): {:.1} ms each, {:.0} logins/s per core",
        per_login.as_secs_f64() * 1e3,
        1.0 / per_login.as_secs_f64()
    );

    let tokens = AccessTokens::new(&[7; 32]);
    let now = chrono::Utc::now();
    let jwt = tokens.issue(UserId::new(), Role::Customer, now, None, now)?;
    let rounds = 200_000u32;
    let started = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(tokens.verify(std::hint::black_box(&jwt)).is_ok());
    }
    let per_check: Duration = started.elapsed() / rounds;
    println!(
        "access token verify (HS256 + claims): {:.2} µs each",
        per_check.as_secs_f64() * 1e6
    );
    Ok(())
}
