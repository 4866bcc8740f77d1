//! Moderation in the store: one versioned row per reported item, listed under its report
//! status (the admins' queue, oldest round first) by the protocol of [`super::indexed`], and
//! the history of decisions, newest first, for all items and per item.

use super::indexed::{Entry, IndexedRows, Listed};
use super::typed::{Change, ModifyError, Rows, Versioned};
use super::{Key, ScanRange, SharedStore, StoreResult, Table, Version};
use crate::domain::moderation::{Decision, ReportStatus, Reported, ReportedItem};

pub fn queue_partition(status: ReportStatus) -> String {
    format!("status:{}", status.as_str())
}

fn queue_entry(item: &ReportedItem) -> Entry {
    Entry {
        partition: queue_partition(item.status),
        clustering: format!(
            "{:020}.{}",
            item.opened_at.timestamp_millis().max(0),
            item.item.key()
        ),
    }
}

fn item_key(item: &Reported) -> Key {
    Key::single(format!("item:{}", item.key()))
}

/// The history partition of every decision.
const ALL_DECISIONS: &str = "all";

fn history_partition(item: &str) -> String {
    format!("item:{item}")
}

fn history_clustering(decision: &Decision) -> String {
    let inverted = i64::MAX - decision.at.timestamp_millis().max(0);
    format!("{inverted:020}.{}", decision.id)
}

/// Typed access to the moderation tables.
#[derive(Clone)]
pub struct ModerationRepo {
    items: IndexedRows<ReportedItem>,
    decisions: Rows<Decision>,
}

impl ModerationRepo {
    pub fn new(store: SharedStore) -> Self {
        ModerationRepo {
            items: IndexedRows::new(
                store.clone(),
                Table::ModerationItems,
                Table::ModerationQueue,
                queue_entry,
            ),
            decisions: Rows::new(store, Table::ModerationDecisions),
        }
    }

    pub async fn item(&self, item: &Reported) -> StoreResult<Option<Versioned<ReportedItem>>> {
        self.items.get(&item_key(item)).await
    }

    /// Changes an item's reports by compare-and-set, moving its queue entry with its status.
    pub async fn modify<R, E>(
        &self,
        item: &Reported,
        step: impl FnMut(Option<&ReportedItem>) -> Result<Change<ReportedItem, R>, E>,
    ) -> Result<(R, Version), ModifyError<E>> {
        self.items.modify(&item_key(item), step).await
    }

    /// A page of the items whose reports are in `status`, oldest round first.
    pub async fn queue(
        &self,
        status: ReportStatus,
        after: Option<String>,
        limit: usize,
        budget: usize,
        keep: impl FnMut(&ReportedItem) -> bool,
    ) -> StoreResult<(Vec<Listed<ReportedItem>>, Option<String>)> {
        let range = ScanRange {
            after,
            before: None,
            limit,
        };
        self.items
            .page(&queue_partition(status), range, limit, budget, keep)
            .await
    }

    /// Records a decision in the history of its item and of all items (idempotent: the same
    /// decision written twice is kept once).
    pub async fn record(&self, decision: &Decision) -> StoreResult<()> {
        let ck = history_clustering(decision);
        for partition in [history_partition(&decision.item), ALL_DECISIONS.to_owned()] {
            // Already there: the same decision, written by an earlier attempt.
            let _already = self
                .decisions
                .insert(&Key::new(partition, ck.clone()), decision)
                .await?;
        }
        Ok(())
    }

    /// A page of decisions, newest first: of one item (`item:{key}` given) or of all.
    pub async fn history(
        &self,
        item: Option<&str>,
        after: Option<String>,
        limit: usize,
    ) -> StoreResult<(Vec<Decision>, Option<String>)> {
        let partition = item.map_or_else(|| ALL_DECISIONS.to_owned(), history_partition);
        let (rows, next) = self
            .decisions
            .scan(
                &partition,
                ScanRange {
                    after,
                    before: None,
                    limit,
                },
            )
            .await?;
        Ok((rows.into_iter().map(|(_, r)| r.value).collect(), next))
    }
}
