//! The per-address login limit, and the limiter's state for `/ready`.
//!
//! The per-address limit counts failed logins from one client address, so that guessing many
//! accounts' passwords from one place is slowed down while the people behind one NAT or proxy
//! who type their password right are never refused.
//!
//! The limit is checked before the attempt without counting it, and a failure is counted
//! after it. Two failures racing from one address may both pass the check just before the
//! limit; the next attempt is refused all the same, so at most a handful of guesses more get
//! through, in exchange for never counting a success. The per-account limits (see `login`)
//! are unchanged: they count every attempt and forget them on success.

use std::time::Duration;

use super::{Identity, IdentityError};
use crate::ratelimit::{Decision, Quota};

/// Failed logins per client address.
pub(super) const ADDRESS_QUOTA: Quota = Quota {
    limit: 30,
    window: Duration::from_secs(15 * 60),
};

/// Sign-in ceremonies one client address may start (or finish) per minute.
const FLOW_QUOTA: Quota = Quota {
    limit: 60,
    window: Duration::from_secs(60),
};

/// The limiter key of a client address.
pub(super) fn address_key(client: &str) -> String {
    format!("login:ip:{client}")
}

impl Identity {
    /// Refuses a login from `client` when it failed too often lately; counts nothing.
    pub(super) async fn check_address(&self, client: &str) -> Result<(), IdentityError> {
        let key = address_key(client);
        match self.limiter.check(&key, ADDRESS_QUOTA).await? {
            Decision::Allowed { .. } => Ok(()),
            Decision::Limited { retry_after } => {
                tracing::warn!(key, retry_after_s = retry_after.as_secs(), "rate limited");
                Err(IdentityError::TooManyAttempts { retry_after })
            }
        }
    }

    /// Counts a failed login against `client`. A limiter fault is logged, not returned: the
    /// caller is already answering that the login failed.
    pub(super) async fn address_failed(&self, client: &str) {
        if let Err(e) = self.limiter.hit(&address_key(client), ADDRESS_QUOTA).await {
            tracing::warn!(error = %e, "failed login not counted against its address");
        }
    }

    /// Counts a sign-in ceremony started or finished under `key` (per client address);
    /// refuses past [`FLOW_QUOTA`].
    pub async fn limit_flow(&self, key: &str) -> Result<(), IdentityError> {
        self.limit(key, &[FLOW_QUOTA]).await
    }

    /// Refuses a sign-in from `client` when its logins failed too often lately (the same
    /// count password logins and passkeys use).
    pub async fn check_sign_in_address(&self, client: &str) -> Result<(), IdentityError> {
        self.check_address(client).await
    }

    /// Counts a failed sign-in (a refused provider callback) against `client`.
    pub async fn sign_in_failed(&self, client: &str) {
        self.address_failed(client).await;
    }

    /// Which limiter backend decides right now, and whether it is standing in for an
    /// unreachable one (for `/ready`). Asks the limiter first (a check, which counts
    /// nothing), so that a readiness probe also notices when Redis is back.
    pub async fn limiter_state(&self) -> (&'static str, bool) {
        let _ = self.limiter.check("ready:probe", PROBE_QUOTA).await;
        (self.limiter.backend(), self.limiter.degraded())
    }
}

/// The quota of the readiness probe's check; nothing ever counts against it.
const PROBE_QUOTA: Quota = Quota {
    limit: 1,
    window: Duration::from_secs(1),
};
