//! Support tickets in the store: one versioned row per ticket (its messages inside, bounded),
//! listed per author, newest first, and per status for the admins' queue, oldest first.
//!
//! The author's list never changes once written, so its entry is written before the ticket
//! row and readers skip an entry whose row is not there. The queue entry moves with the
//! ticket's status by the protocol of [`super::indexed`].

use chrono::{DateTime, Utc};

use super::indexed::{Entry, IndexedRows, Listed, Pointer};
use super::typed::{Change, ModifyError, Rows, Versioned};
use super::{Key, ScanRange, SharedStore, StoreResult, Table, Version};
use crate::domain::ids::{TicketId, UserId};
use crate::domain::support::{Ticket, TicketStatus};

/// The queue partition of a status.
pub fn status_partition(status: TicketStatus) -> String {
    format!("status:{}", status.as_str())
}

/// The queue's clustering key: opening time, then id (oldest first).
pub fn queue_clustering(created_at: DateTime<Utc>, id: TicketId) -> String {
    format!("{:020}.{id}", created_at.timestamp_millis().max(0))
}

/// The first queue key of tickets opened at `at` or later (a bound for `opened_before`).
pub fn queue_bound(at: DateTime<Utc>) -> String {
    format!("{:020}", at.timestamp_millis().max(0))
}

fn queue_entry(ticket: &Ticket) -> Entry {
    Entry {
        partition: status_partition(ticket.status),
        clustering: queue_clustering(ticket.created_at, ticket.id),
    }
}

fn author_partition(author: UserId) -> String {
    format!("author:{author}")
}

fn author_clustering(ticket: &Ticket) -> String {
    let inverted = i64::MAX - ticket.created_at.timestamp_millis().max(0);
    format!("{inverted:020}.{}", ticket.id)
}

pub fn ticket_key(id: TicketId) -> Key {
    Key::single(format!("id:{id}"))
}

/// Typed access to the ticket tables.
#[derive(Clone)]
pub struct TicketRepo {
    tickets: IndexedRows<Ticket>,
    /// The authors' lists (the queue shares the table, under `status:` partitions).
    index: Rows<Pointer>,
}

impl TicketRepo {
    pub fn new(store: SharedStore) -> Self {
        TicketRepo {
            tickets: IndexedRows::new(
                store.clone(),
                Table::SupportTickets,
                Table::SupportIndex,
                queue_entry,
            ),
            index: Rows::new(store, Table::SupportIndex),
        }
    }

    pub async fn get(&self, id: TicketId) -> StoreResult<Option<Versioned<Ticket>>> {
        self.tickets.get(&ticket_key(id)).await
    }

    /// Writes a new ticket: its author's entry first, then the row with its queue entry.
    pub async fn create(&self, ticket: &Ticket) -> StoreResult<()> {
        let key = ticket_key(ticket.id);
        let pointer = Pointer {
            pk: key.partition.clone(),
            ck: key.clustering.clone(),
        };
        // Already there: the same ticket, written by an earlier attempt.
        let _already = self
            .index
            .insert(
                &Key::new(author_partition(ticket.author), author_clustering(ticket)),
                &pointer,
            )
            .await?;
        let created = ticket.clone();
        self.tickets
            .modify(&key, |current| match current {
                // A retry of the same write finds it done.
                Some(_) => Ok::<_, std::convert::Infallible>(Change::Keep(())),
                None => Ok(Change::Put(created.clone(), ())),
            })
            .await
            .map_err(|e| match e {
                ModifyError::Store(e) => e,
                ModifyError::Rejected(never) => match never {},
            })?;
        Ok(())
    }

    /// Changes a ticket by compare-and-set, moving its queue entry with its status.
    pub async fn modify<R, E>(
        &self,
        id: TicketId,
        step: impl FnMut(Option<&Ticket>) -> Result<Change<Ticket, R>, E>,
    ) -> Result<(R, Version), ModifyError<E>> {
        self.tickets.modify(&ticket_key(id), step).await
    }

    /// A page of `author`'s tickets, newest first, after the cursor `after`.
    pub async fn of_author(
        &self,
        author: UserId,
        after: Option<String>,
        limit: usize,
    ) -> StoreResult<(Vec<Ticket>, Option<String>)> {
        let (entries, next) = self
            .index
            .scan(
                &author_partition(author),
                ScanRange {
                    after,
                    before: None,
                    limit,
                },
            )
            .await?;
        let keys: Vec<Key> = entries
            .iter()
            .map(|(_, e)| Key::new(&e.value.pk, &e.value.ck))
            .collect();
        let rows =
            futures_util::future::join_all(keys.iter().map(|key| self.tickets.get(key))).await;
        let mut tickets = Vec::with_capacity(entries.len());
        for row in rows {
            // An entry without its row: a creation that did not finish.
            if let Some(row) = row? {
                tickets.push(row.value);
            }
        }
        Ok((tickets, next))
    }

    /// A page of the tickets in `status`, oldest first, after the cursor `after` and opened
    /// before `before` (a [`queue_bound`]), those `keep` accepts; reads at most `budget`
    /// entries.
    pub async fn queue(
        &self,
        status: TicketStatus,
        after: Option<String>,
        before: Option<String>,
        limit: usize,
        budget: usize,
        keep: impl FnMut(&Ticket) -> bool,
    ) -> StoreResult<(Vec<Listed<Ticket>>, Option<String>)> {
        let range = ScanRange {
            after,
            before,
            limit,
        };
        self.tickets
            .page(&status_partition(status), range, limit, budget, keep)
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::domain::support::TicketCategory;
    use crate::store::embedded::EmbeddedStore;

    fn ticket(at: DateTime<Utc>) -> Ticket {
        Ticket::open(
            TicketId::new(),
            UserId::new(),
            "Lost parcel",
            TicketCategory::OrderProblem,
            None,
            "It never came.",
            at,
        )
        .unwrap()
    }

    async fn listed(repo: &TicketRepo, status: TicketStatus) -> Vec<TicketId> {
        let (rows, _) = repo
            .queue(status, None, None, 100, 1_000, |_| true)
            .await
            .unwrap();
        rows.into_iter().map(|(_, row)| row.value.id).collect()
    }

    async fn set_status(repo: &TicketRepo, id: TicketId, status: TicketStatus) {
        repo.modify(id, |current| {
            let mut t = current.cloned().ok_or(())?;
            t.set_status(status, Utc::now());
            Ok::<_, ()>(Change::Put(t, ()))
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_ticket_is_listed_under_its_status_alone_as_it_moves() {
        let dir = tempfile::tempdir().unwrap();
        let store: SharedStore = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let repo = TicketRepo::new(store);
        let t = ticket(Utc::now());
        repo.create(&t).await.unwrap();
        repo.create(&t).await.unwrap();
        assert_eq!(listed(&repo, TicketStatus::Open).await, [t.id]);

        set_status(&repo, t.id, TicketStatus::Resolved).await;
        assert!(listed(&repo, TicketStatus::Open).await.is_empty());
        assert_eq!(listed(&repo, TicketStatus::Resolved).await, [t.id]);
        let (mine, _) = repo.of_author(t.author, None, 10).await.unwrap();
        assert_eq!(mine.len(), 1, "a retried creation lists the ticket once");
    }

    #[tokio::test]
    async fn entries_left_by_a_crash_are_skipped_and_repaired_by_readers() {
        let dir = tempfile::tempdir().unwrap();
        let store: SharedStore = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let repo = TicketRepo::new(store.clone());
        let t = ticket(Utc::now());
        repo.create(&t).await.unwrap();
        // A change to `closed` killed after its first step: the entry is there, the row is not.
        let index: Rows<Pointer> = Rows::new(store, Table::SupportIndex);
        let key = ticket_key(t.id);
        let pointer = Pointer {
            pk: key.partition.clone(),
            ck: key.clustering.clone(),
        };
        let closed_entry = Key::new(
            status_partition(TicketStatus::Closed),
            queue_clustering(t.created_at, t.id),
        );
        index
            .insert(&closed_entry, &pointer)
            .await
            .unwrap()
            .unwrap();
        // And the open entry lost, as a race between two changes could leave it.
        let open_entry = Key::new(
            status_partition(TicketStatus::Open),
            queue_clustering(t.created_at, t.id),
        );
        let found = index.get(&open_entry).await.unwrap().unwrap();
        index
            .delete(&open_entry, found.version)
            .await
            .unwrap()
            .unwrap();

        assert!(listed(&repo, TicketStatus::Closed).await.is_empty());
        assert!(index.get(&closed_entry).await.unwrap().is_none(), "removed");
        assert_eq!(
            listed(&repo, TicketStatus::Open).await,
            [t.id],
            "the reader that found the stray entry put the right one back"
        );
    }
}
