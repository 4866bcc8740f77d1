//! Password hashing with Argon2id at (at least) the OWASP minimum: m = 19 MiB, t = 2, p = 1.
//!
//! Hashing is deliberately slow, so it runs on the blocking pool behind a semaphore sized to
//! the cores: a flood of logins queues instead of starving everything else. Unknown accounts
//! are checked against a dummy hash so they cost the same as known ones.

use std::sync::Arc;

use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

/// Memory cost in KiB (19 MiB).
pub const MEMORY_KIB: u32 = 19 * 1024;
pub const ITERATIONS: u32 = 2;
pub const PARALLELISM: u32 = 1;

/// Hashes and verifies passwords.
#[derive(Clone)]
pub struct PasswordHasher {
    permits: Arc<Semaphore>,
    dummy: Arc<String>,
}

impl PasswordHasher {
    pub fn new() -> anyhow::Result<Self> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let dummy = hash_blocking("hexmarket-dummy-password")?;
        Ok(PasswordHasher {
            permits: Arc::new(Semaphore::new(cores)),
            dummy: Arc::new(dummy),
        })
    }

    /// The PHC string of a fresh hash of `password`.
    pub async fn hash(&self, password: String) -> anyhow::Result<String> {
        let _permit = self.permits.acquire().await?;
        tokio::task::spawn_blocking(move || hash_blocking(&password)).await?
    }

    /// Whether `password` matches `phc`; with `None`, spends the same work and says no.
    pub async fn verify(&self, password: String, phc: Option<String>) -> anyhow::Result<bool> {
        let _permit = self.permits.acquire().await?;
        let known = phc.is_some();
        let phc = phc.unwrap_or_else(|| self.dummy.as_ref().clone());
        let matches = tokio::task::spawn_blocking(move || {
            argon2()
                .verify_password(password.as_bytes(), phc.as_str())
                .is_ok()
        })
        .await?;
        Ok(known && matches)
    }
}

fn argon2() -> Argon2<'static> {
    // The constants are valid parameters; fall back to the library default (which is the
    // same OWASP setting) rather than fail.
    let params = Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn hash_blocking(password: &str) -> anyhow::Result<String> {
    let salt: [u8; 16] = rand::random();
    let hash = argon2()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))?;
    Ok(hash.to_string())
}
