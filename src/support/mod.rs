//! Support tickets: users open them and write, admins work the queue, assign, answer, take
//! internal notes and set the status; each side hears of the other's messages.
//!
//! Only a ticket's author and admins know a ticket exists: everyone else gets
//! [`SupportError::NotFound`], as for a ticket that does not exist. The rules of a ticket's
//! life are [`crate::domain::support`]'s; this service loads, checks who is asking, writes by
//! compare-and-set and tells the people concerned afterwards (a notice is written once
//! however often it is told, so a retried request repeats nothing).

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::clock::Clock;
use crate::domain::ids::{OrderId, TicketId, UserId};
use crate::domain::notification::Notice;
use crate::domain::support::{Ticket, TicketCategory, TicketRule, TicketStatus};
use crate::media::{Media, MediaError};
use crate::notifications::{Notifications, UserNotice};
use crate::ratelimit::{Decision, LimitError, Quota, SharedLimiter};
use crate::settings::SettingsView;
use crate::store::orders::OrderRepo;
use crate::store::support::{TicketRepo, queue_bound};
use crate::store::typed::{Change, ModifyError};
use crate::store::{SharedStore, StoreError};

/// Tickets one user may open.
pub const OPEN_QUOTA: Quota = Quota::per_hour(5);
/// Messages (and uploads) one user may add to tickets.
pub const MESSAGE_QUOTA: Quota = Quota::new(30, Duration::from_secs(600));
/// Largest page of a list.
pub const MAX_PAGE: usize = 100;
/// Queue entries one request reads at most while filtering.
const QUEUE_BUDGET: usize = 2_000;

/// Why a support operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum SupportError {
    /// No such ticket, or not the caller's.
    #[error("no such ticket")]
    NotFound,
    #[error("no such attachment")]
    AttachmentNotFound,
    /// The ticket's rules refuse the change.
    #[error(transparent)]
    Rule(#[from] TicketRule),
    /// The order named is not the author's.
    #[error("order_id: no such order of yours")]
    NotYourOrder,
    /// A query that cannot be answered as asked.
    #[error("{field}: {message}")]
    InvalidQuery {
        field: &'static str,
        message: String,
    },
    #[error("too many requests; try again later")]
    Limited { retry_after: Duration },
    #[error(transparent)]
    Limiter(#[from] LimitError),
    #[error(transparent)]
    Media(#[from] MediaError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ModifyError<SupportError>> for SupportError {
    fn from(e: ModifyError<SupportError>) -> Self {
        match e {
            ModifyError::Rejected(e) => e,
            ModifyError::Store(e) => SupportError::Store(e),
        }
    }
}

/// Who is asking.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub id: UserId,
    pub admin: bool,
}

/// A new ticket.
#[derive(Debug, Clone)]
pub struct NewTicket {
    pub subject: String,
    pub category: TicketCategory,
    pub order_id: Option<OrderId>,
    pub body: String,
}

/// An admin's change of a ticket; absent fields stay.
#[derive(Debug, Clone, Default)]
pub struct TicketChange {
    pub status: Option<TicketStatus>,
    /// `Some(None)` unassigns.
    pub assigned_to: Option<Option<UserId>>,
}

/// Which tickets of the queue an admin wants.
#[derive(Debug, Clone)]
pub struct QueueFilter {
    pub status: Option<TicketStatus>,
    pub category: Option<TicketCategory>,
    pub assigned_to: Option<UserId>,
    /// Opened before this moment.
    pub opened_before: Option<DateTime<Utc>>,
    /// Only tickets waiting on an admin past the platform's threshold (open ones).
    pub overdue: bool,
    pub after: Option<String>,
    pub limit: usize,
}

/// One page of tickets and where the next starts.
#[derive(Debug, Clone)]
pub struct TicketPage {
    pub tickets: Vec<Ticket>,
    pub next: Option<String>,
}

/// What the support service is built from.
pub struct SupportParts {
    pub store: SharedStore,
    pub clock: Clock,
    pub limiter: SharedLimiter,
    pub media: Media,
    pub notifications: Notifications,
    /// The platform's live settings (how long a ticket may wait on an admin).
    pub settings: SettingsView,
}

/// The support service, cheap to clone.
#[derive(Clone)]
pub struct Support {
    tickets: TicketRepo,
    orders: OrderRepo,
    clock: Clock,
    limiter: SharedLimiter,
    media: Media,
    notifications: Notifications,
    settings: SettingsView,
}

impl Support {
    pub fn new(parts: SupportParts) -> Self {
        Support {
            tickets: TicketRepo::new(parts.store.clone()),
            orders: OrderRepo::new(parts.store),
            clock: parts.clock,
            limiter: parts.limiter,
            media: parts.media,
            notifications: parts.notifications,
            settings: parts.settings,
        }
    }

    /// How long a ticket may wait on an admin before it is listed as overdue (a live
    /// platform setting).
    pub fn support_overdue_after(&self) -> Duration {
        self.settings.get().support_overdue()
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Whether `ticket` is overdue now.
    pub fn is_overdue(&self, ticket: &Ticket) -> bool {
        ticket.is_overdue(self.clock.now(), self.support_overdue_after())
    }

    async fn limit(&self, what: &str, user: UserId, quota: Quota) -> Result<(), SupportError> {
        let key = format!("support:{what}:{user}");
        match self.limiter.hit(&key, quota).await? {
            Decision::Allowed { .. } => Ok(()),
            Decision::Limited { retry_after } => {
                tracing::warn!(user = %user, what, "support rate limit reached");
                Err(SupportError::Limited { retry_after })
            }
        }
    }

    /// Opens a ticket for `author`, tied to one of their orders if `order_id` is given.
    #[tracing::instrument(skip_all, fields(author = %author))]
    pub async fn open(&self, author: UserId, new: NewTicket) -> Result<Ticket, SupportError> {
        let ticket = Ticket::open(
            TicketId::new(),
            author,
            &new.subject,
            new.category,
            new.order_id,
            &new.body,
            self.clock.now(),
        )?;
        if let Some(order) = new.order_id {
            let theirs = self
                .orders
                .get(order)
                .await?
                .is_some_and(|o| o.value.customer_id == author);
            if !theirs {
                return Err(SupportError::NotYourOrder);
            }
        }
        self.limit("open", author, OPEN_QUOTA).await?;
        self.tickets.create(&ticket).await?;
        tracing::info!(ticket_id = %ticket.id, "support ticket opened");
        Ok(ticket)
    }

    /// The ticket, if `caller` may see it (its author or an admin).
    pub async fn get(&self, caller: Caller, id: TicketId) -> Result<Ticket, SupportError> {
        let ticket = self
            .tickets
            .get(id)
            .await?
            .ok_or(SupportError::NotFound)?
            .value;
        if caller.admin || ticket.author == caller.id {
            Ok(ticket)
        } else {
            Err(SupportError::NotFound)
        }
    }

    /// `author`'s tickets, newest first.
    pub async fn mine(
        &self,
        author: UserId,
        after: Option<String>,
        limit: usize,
    ) -> Result<TicketPage, SupportError> {
        let (tickets, next) = self
            .tickets
            .of_author(author, after, limit.clamp(1, MAX_PAGE))
            .await?;
        Ok(TicketPage { tickets, next })
    }

    /// Changes a ticket `caller` may see by `step`; the ticket before and after.
    async fn change(
        &self,
        caller: Caller,
        id: TicketId,
        mut step: impl FnMut(&mut Ticket) -> Result<(), SupportError>,
    ) -> Result<(Ticket, Ticket), SupportError> {
        let (changed, _) = self
            .tickets
            .modify(id, |current| {
                let Some(before) = current.filter(|t| caller.admin || t.author == caller.id) else {
                    return Err(SupportError::NotFound);
                };
                let mut after = before.clone();
                step(&mut after)?;
                if after == *before {
                    return Ok(Change::Keep((before.clone(), after)));
                }
                Ok(Change::Put(after.clone(), (before.clone(), after)))
            })
            .await?;
        Ok(changed)
    }

    /// The author writes on their ticket; the assigned admin hears of it.
    #[tracing::instrument(skip(self, body), fields(author = %author, ticket_id = %id))]
    pub async fn user_message(
        &self,
        author: UserId,
        id: TicketId,
        body: &str,
        attachments: Vec<u32>,
    ) -> Result<Ticket, SupportError> {
        let caller = Caller {
            id: author,
            admin: false,
        };
        // Refused before counting: someone else's ticket is not theirs to spend a limit on.
        self.get(caller, id).await?;
        self.limit("message", author, MESSAGE_QUOTA).await?;
        let now = self.clock.now();
        let (_, ticket) = self
            .change(caller, id, |t| {
                t.user_message(body, attachments.clone(), now)?;
                Ok(())
            })
            .await?;
        if let (Some(admin), Some(message)) = (ticket.assigned_to, ticket.messages.last()) {
            self.tell(UserNotice {
                recipient: admin,
                kind: Notice::SupportMessage,
                subject: subject(&ticket),
                occasion: message.seq.to_string(),
                at: message.at,
                title: format!("New message on ticket “{}”", ticket.subject),
                body: excerpt(&message.body),
            })
            .await;
        }
        Ok(ticket)
    }

    /// The author closes their ticket.
    #[tracing::instrument(skip(self), fields(author = %author, ticket_id = %id))]
    pub async fn close(&self, author: UserId, id: TicketId) -> Result<Ticket, SupportError> {
        let caller = Caller {
            id: author,
            admin: false,
        };
        let now = self.clock.now();
        let (_, ticket) = self
            .change(caller, id, |t| {
                t.set_status(TicketStatus::Closed, now);
                Ok(())
            })
            .await?;
        Ok(ticket)
    }

    /// An admin replies (the author hears of it) or takes an internal note (nobody does).
    /// Returns the ticket before and after.
    #[tracing::instrument(skip(self, body), fields(admin = %admin, ticket_id = %id, internal))]
    pub async fn admin_message(
        &self,
        admin: UserId,
        id: TicketId,
        body: &str,
        internal: bool,
        attachments: Vec<u32>,
    ) -> Result<(Ticket, Ticket), SupportError> {
        let caller = Caller {
            id: admin,
            admin: true,
        };
        let now = self.clock.now();
        let (before, ticket) = self
            .change(caller, id, |t| {
                t.admin_message(admin, body, internal, attachments.clone(), now)?;
                Ok(())
            })
            .await?;
        if let Some(message) = ticket.messages.last().filter(|m| !m.internal) {
            self.tell(UserNotice {
                recipient: ticket.author,
                kind: Notice::SupportReply,
                subject: subject(&ticket),
                occasion: message.seq.to_string(),
                at: message.at,
                title: format!("Support answered: “{}”", ticket.subject),
                body: excerpt(&message.body),
            })
            .await;
        }
        Ok((before, ticket))
    }

    /// An admin assigns the ticket or sets its status (the author hears of a new status).
    /// Returns the ticket before and after.
    #[tracing::instrument(skip(self, change), fields(admin = %admin, ticket_id = %id))]
    pub async fn update(
        &self,
        admin: UserId,
        id: TicketId,
        change: TicketChange,
    ) -> Result<(Ticket, Ticket), SupportError> {
        let caller = Caller {
            id: admin,
            admin: true,
        };
        let now = self.clock.now();
        let (before, ticket) = self
            .change(caller, id, |t| {
                if let Some(assignee) = change.assigned_to {
                    t.assigned_to = assignee;
                    t.updated_at = now;
                }
                if let Some(status) = change.status {
                    t.set_status(status, now);
                }
                Ok(())
            })
            .await?;
        if before.status != ticket.status {
            self.tell(UserNotice {
                recipient: ticket.author,
                kind: Notice::SupportStatus,
                subject: subject(&ticket),
                occasion: format!(
                    "{}:{}",
                    ticket.status.as_str(),
                    ticket.updated_at.timestamp_millis()
                ),
                at: ticket.updated_at,
                title: format!(
                    "Your ticket “{}” is {}",
                    ticket.subject,
                    status_words(ticket.status)
                ),
                body: format!(
                    "The support team marked your ticket “{}” as {}.",
                    ticket.subject,
                    status_words(ticket.status)
                ),
            })
            .await;
        }
        Ok((before, ticket))
    }

    /// The admins' queue: tickets in one status (open unless asked otherwise), oldest first.
    pub async fn queue(&self, filter: QueueFilter) -> Result<TicketPage, SupportError> {
        let status = match (filter.status, filter.overdue) {
            (Some(status), true) if status != TicketStatus::Open => {
                return Err(SupportError::InvalidQuery {
                    field: "overdue",
                    message: "only open tickets wait on an admin".to_owned(),
                });
            }
            (status, _) => status.unwrap_or(TicketStatus::Open),
        };
        let now = self.clock.now();
        let overdue_after = self.support_overdue_after();
        let keep = |t: &Ticket| {
            filter.category.is_none_or(|c| t.category == c)
                && filter.assigned_to.is_none_or(|a| t.assigned_to == Some(a))
                && (!filter.overdue || t.is_overdue(now, overdue_after))
        };
        let (rows, next) = self
            .tickets
            .queue(
                status,
                filter.after,
                filter.opened_before.map(queue_bound),
                filter.limit.clamp(1, MAX_PAGE),
                QUEUE_BUDGET,
                keep,
            )
            .await?;
        Ok(TicketPage {
            tickets: rows.into_iter().map(|(_, row)| row.value).collect(),
            next,
        })
    }

    /// Stores an uploaded image on a ticket `caller` may see; the ticket and the new
    /// attachment's id.
    #[tracing::instrument(skip(self, bytes), fields(user = %caller.id, ticket_id = %id))]
    pub async fn attach(
        &self,
        caller: Caller,
        id: TicketId,
        bytes: Bytes,
    ) -> Result<(Ticket, u32), SupportError> {
        let ticket = self.get(caller, id).await?;
        if ticket.status == TicketStatus::Closed {
            return Err(TicketRule::Closed.into());
        }
        if !caller.admin {
            self.limit("message", caller.id, MESSAGE_QUOTA).await?;
        }
        let image = self
            .media
            .store_image(&format!("support:{id}"), bytes)
            .await?;
        let now = self.clock.now();
        let mut added = 0;
        let outcome = self
            .change(caller, id, |t| {
                // The same picture again is the same attachment.
                if let Some(existing) = t.attachments.iter().find(|a| a.image.key == image.key) {
                    added = existing.id;
                    return Ok(());
                }
                added = t.attach(image.clone(), caller.id, caller.admin, now)?;
                Ok(())
            })
            .await;
        match outcome {
            Ok((_, ticket)) => Ok((ticket, added)),
            Err(e) => {
                // The image's keys are scoped to this ticket: nothing else can use them.
                self.media
                    .delete([image.key.as_str(), image.thumbnail_key.as_str()])
                    .await;
                Err(e)
            }
        }
    }

    /// The bytes of an attachment (or its thumbnail) `caller` may see.
    pub async fn attachment(
        &self,
        caller: Caller,
        id: TicketId,
        attachment: u32,
        thumbnail: bool,
    ) -> Result<(Bytes, &'static str), SupportError> {
        let ticket = self.get(caller, id).await?;
        let found = ticket
            .attachments
            .iter()
            .find(|a| a.id == attachment)
            .filter(|a| caller.admin || ticket.author_sees(a))
            .ok_or(SupportError::AttachmentNotFound)?;
        let key = if thumbnail {
            &found.image.thumbnail_key
        } else {
            &found.image.key
        };
        self.media
            .open(key)
            .await?
            .ok_or(SupportError::AttachmentNotFound)
    }

    /// Writes a notice; a failure is logged, not returned: the change it tells of is made.
    async fn tell(&self, notice: UserNotice) {
        let recipient = notice.recipient;
        if let Err(e) = self.notifications.notify(notice).await {
            tracing::warn!(error = %e, recipient = %recipient, "support notice not written");
        }
    }
}

fn subject(ticket: &Ticket) -> String {
    format!("ticket:{}", ticket.id)
}

/// The start of a message, for a notice.
fn excerpt(body: &str) -> String {
    const MAX: usize = 200;
    if body.chars().count() <= MAX {
        return body.to_owned();
    }
    let mut cut: String = body.chars().take(MAX).collect();
    cut.push('…');
    cut
}

fn status_words(status: TicketStatus) -> &'static str {
    match status {
        TicketStatus::Open => "open again",
        TicketStatus::WaitingOnUser => "waiting for your answer",
        TicketStatus::Resolved => "resolved",
        TicketStatus::Closed => "closed",
    }
}
