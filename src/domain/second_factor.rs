//! The TOTP second factor as it is kept on the account row: the authenticator secret sealed
//! under a key derived from the master secret (never in clear, so a copied users table or a
//! logged row gives no codes away), the last time step a code was accepted for (a code works
//! once), a pending secret waiting for its first code, and keyed hashes of unused recovery
//! codes.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// An account's second factor; the default is "none enrolled".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecondFactor {
    /// The active authenticator, if one is enrolled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp: Option<ActiveTotp>,
    /// A secret handed out by enrolment and not yet confirmed with a code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingTotp>,
    /// Keyed hashes (hex) of the recovery codes not used yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recovery: Vec<String>,
}

/// An enrolled authenticator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveTotp {
    /// The sealed secret (see `identity::totp::Sealer`).
    pub sealed: String,
    /// The newest 30-second step a code was accepted for; codes of this step or earlier are
    /// refused, so an observed code cannot be replayed.
    pub last_step: u64,
    pub enabled_at: DateTime<Utc>,
}

/// A secret waiting for its first code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingTotp {
    pub sealed: String,
    pub expires_at: DateTime<Utc>,
}

impl SecondFactor {
    pub fn enabled(&self) -> bool {
        self.totp.is_some()
    }
}
