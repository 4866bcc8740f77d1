//! The audit trail: every administrative action, appended before the action is acknowledged,
//! read back a page at a time with filters. There is no way to change or remove an entry.

use chrono::{DateTime, Utc};

use crate::clock::Clock;
use crate::domain::audit::{AuditEntry, AuditFilter};
use crate::store::audit::{AuditCursor, AuditRepo};
use crate::store::{SharedStore, StoreResult};

/// The trail, shared by the node's handlers and commands.
#[derive(Clone)]
pub struct Audit {
    repo: AuditRepo,
    clock: Clock,
}

impl Audit {
    pub fn new(store: SharedStore, clock: Clock) -> Self {
        Audit {
            repo: AuditRepo::new(store),
            clock,
        }
    }

    /// Appends `entry`, stamped with the platform's clock; durable when this returns, so a
    /// handler that records before answering never acknowledges an action the trail lacks.
    pub async fn record(&self, entry: AuditEntry) -> StoreResult<()> {
        let entry = entry.at(self.clock.now());
        tracing::info!(
            action = %entry.action,
            target = %entry.target,
            actor = ?entry.actor,
            "audit"
        );
        self.repo.append(&entry).await
    }

    /// A page of entries, newest first (see [`AuditRepo::page`]).
    pub async fn page(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        filter: &AuditFilter,
        limit: usize,
        cursor: Option<AuditCursor>,
    ) -> StoreResult<(Vec<AuditEntry>, Option<AuditCursor>)> {
        self.repo.page(from, to, filter, limit, cursor).await
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }
}
