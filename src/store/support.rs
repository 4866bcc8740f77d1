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
