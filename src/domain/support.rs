//! Support tickets: a conversation between one user and the platform's admins, with its
//! status, its internal notes and the times that measure how well it was served.
//!
//! The rules live here as methods of [`Ticket`], pure functions of the ticket and the time, so
//! the service only loads, decides and writes:
//!
//! - a user's message reopens a ticket that waits on them or was resolved; a closed ticket
//!   takes no more messages;
//! - an admin's public reply marks the first response (once) and, on an open ticket, hands the
//!   turn to the user (`waiting_on_user`); an internal note changes nothing the user can see;
//! - `resolved` records when (a reopened ticket forgets it until it is resolved again);
//! - a ticket *waits on an admin* while it is open and the last public word was its author's;
//!   it is *overdue* once it has waited longer than the platform allows.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::catalog::{ImageRef, check_line, check_text};
use super::ids::{OrderId, TicketId, UserId};

/// Longest subject.
pub const MAX_SUBJECT: usize = 200;
/// Longest message.
pub const MAX_BODY: usize = 4_000;
/// Messages (and notes) one ticket holds; the row stays bounded.
pub const MAX_MESSAGES: usize = 200;
/// Images one ticket holds.
pub const MAX_ATTACHMENTS: usize = 20;
/// Attachments one message may reference.
pub const MAX_MESSAGE_ATTACHMENTS: usize = 5;

/// What a ticket is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TicketCategory {
    OrderProblem,
    Payment,
    Account,
    CourierBehaviour,
    StoreOrProduct,
    Other,
}

/// Where a ticket stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TicketStatus {
    /// Waiting for the admins.
    Open,
    /// An admin answered and waits for the user.
    WaitingOnUser,
    /// An admin considers it solved; a message from the user reopens it.
    Resolved,
    /// Done for good: no more messages.
    Closed,
}

impl TicketStatus {
    pub const ALL: [TicketStatus; 4] = [
        TicketStatus::Open,
        TicketStatus::WaitingOnUser,
        TicketStatus::Resolved,
        TicketStatus::Closed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TicketStatus::Open => "open",
            TicketStatus::WaitingOnUser => "waiting_on_user",
            TicketStatus::Resolved => "resolved",
            TicketStatus::Closed => "closed",
        }
    }
}

/// One message of a ticket, or an admin's internal note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketMessage {
    /// Position in the ticket, from 1.
    pub seq: u32,
    pub author: UserId,
    /// Written by an admin (a reply or a note).
    pub from_admin: bool,
    /// An admin's note the ticket's author never sees.
    pub internal: bool,
    pub body: String,
    /// Ids of the ticket's attachments this message shows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<u32>,
    pub at: DateTime<Utc>,
}

/// An image uploaded to a ticket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// Position among the ticket's attachments, from 1.
    pub id: u32,
    pub image: ImageRef,
    pub uploaded_by: UserId,
    /// Uploaded by an admin: shown to the author only once a public reply references it.
    pub by_admin: bool,
    pub at: DateTime<Utc>,
}

/// A support ticket with its whole conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub id: TicketId,
    pub author: UserId,
    pub subject: String,
    pub category: TicketCategory,
    /// One of the author's orders this is about.
    pub order_id: Option<OrderId>,
    pub status: TicketStatus,
    pub assigned_to: Option<UserId>,
    pub messages: Vec<TicketMessage>,
    #[serde(default)]
    pub attachments: Vec<Attachment>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The first public reply of an admin.
    pub first_response_at: Option<DateTime<Utc>>,
    /// When it was last resolved (absent while it is not).
    pub resolved_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
    /// Since when the author's last public message waits for an admin.
    pub waiting_since: Option<DateTime<Utc>>,
}

/// Why a change to a ticket was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketRule {
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("the ticket is closed")]
    Closed,
    #[error("a ticket holds at most {MAX_MESSAGES} messages; open a new one")]
    Full,
    #[error("a ticket holds at most {MAX_ATTACHMENTS} images")]
    TooManyAttachments,
    #[error("the ticket has no attachment {0}")]
    UnknownAttachment(u32),
}

fn invalid(field: &'static str) -> impl Fn(String) -> TicketRule {
    move |message| TicketRule::Invalid { field, message }
}

/// A subject as stored: one line, 1..=[`MAX_SUBJECT`] characters.
pub fn subject(raw: &str) -> Result<String, TicketRule> {
    check_line("subject", raw, MAX_SUBJECT).map_err(invalid("subject"))
}

/// A message body as stored: trimmed, 1..=[`MAX_BODY`] characters, line breaks allowed.
pub fn body(raw: &str) -> Result<String, TicketRule> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(TicketRule::Invalid {
            field: "body",
            message: "body must not be empty".to_owned(),
        });
    }
    check_text("body", trimmed, MAX_BODY).map_err(invalid("body"))
}

impl Ticket {
    /// A new ticket holding the author's first message.
    pub fn open(
        id: TicketId,
        author: UserId,
        subject_line: &str,
        category: TicketCategory,
        order_id: Option<OrderId>,
        first_message: &str,
        now: DateTime<Utc>,
    ) -> Result<Ticket, TicketRule> {
        let subject = subject(subject_line)?;
        let body = body(first_message)?;
        Ok(Ticket {
            id,
            author,
            subject,
            category,
            order_id,
            status: TicketStatus::Open,
            assigned_to: None,
            messages: vec![TicketMessage {
                seq: 1,
                author,
                from_admin: false,
                internal: false,
                body,
                attachments: Vec::new(),
                at: now,
            }],
            attachments: Vec::new(),
            created_at: now,
            updated_at: now,
            first_response_at: None,
            resolved_at: None,
            closed_at: None,
            waiting_since: Some(now),
        })
    }

    fn check_room(&self, attachments: &[u32]) -> Result<(), TicketRule> {
        if self.status == TicketStatus::Closed {
            return Err(TicketRule::Closed);
        }
        if self.messages.len() >= MAX_MESSAGES {
            return Err(TicketRule::Full);
        }
        if attachments.len() > MAX_MESSAGE_ATTACHMENTS {
            return Err(TicketRule::Invalid {
                field: "attachments",
                message: format!("a message shows at most {MAX_MESSAGE_ATTACHMENTS} images"),
            });
        }
        for id in attachments {
            if !self.attachments.iter().any(|a| a.id == *id) {
                return Err(TicketRule::UnknownAttachment(*id));
            }
        }
        Ok(())
    }

    fn push(&mut self, message: TicketMessage) -> &TicketMessage {
        self.updated_at = message.at;
        self.messages.push(message);
        // Just pushed: the vector is not empty.
        &self.messages[self.messages.len() - 1]
    }

    /// The author writes: a ticket waiting on them or resolved opens again.
    pub fn user_message(
        &mut self,
        text: &str,
        attachments: Vec<u32>,
        now: DateTime<Utc>,
    ) -> Result<&TicketMessage, TicketRule> {
        let body = body(text)?;
        self.check_room(&attachments)?;
        if self.status != TicketStatus::Open {
            self.status = TicketStatus::Open;
            self.resolved_at = None;
        }
        if self.waiting_since.is_none() {
            self.waiting_since = Some(now);
        }
        let seq = self.next_seq();
        Ok(self.push(TicketMessage {
            seq,
            author: self.author,
            from_admin: false,
            internal: false,
            body,
            attachments,
            at: now,
        }))
    }

    /// An admin replies (`internal: false`) or notes (`internal: true`).
    pub fn admin_message(
        &mut self,
        admin: UserId,
        text: &str,
        internal: bool,
        attachments: Vec<u32>,
        now: DateTime<Utc>,
    ) -> Result<&TicketMessage, TicketRule> {
        let body = body(text)?;
        self.check_room(&attachments)?;
        if !internal {
            self.first_response_at.get_or_insert(now);
            self.waiting_since = None;
            if self.status == TicketStatus::Open {
                self.status = TicketStatus::WaitingOnUser;
            }
        }
        let seq = self.next_seq();
        Ok(self.push(TicketMessage {
            seq,
            author: admin,
            from_admin: true,
            internal,
            body,
            attachments,
            at: now,
        }))
    }

    fn next_seq(&self) -> u32 {
        self.messages.last().map_or(1, |m| m.seq + 1)
    }

    /// Moves the ticket to `status` (an admin's choice, or the author closing it).
    pub fn set_status(&mut self, status: TicketStatus, now: DateTime<Utc>) {
        if self.status == status {
            return;
        }
        match status {
            TicketStatus::Resolved => self.resolved_at = Some(now),
            TicketStatus::Closed => {
                self.closed_at = Some(now);
                // Closing an unresolved ticket ends it too: its resolution time is now.
                self.resolved_at.get_or_insert(now);
            }
            TicketStatus::Open | TicketStatus::WaitingOnUser => {
                self.resolved_at = None;
                self.closed_at = None;
            }
        }
        if status == TicketStatus::Open {
            self.waiting_since.get_or_insert(now);
        } else {
            self.waiting_since = None;
        }
        self.status = status;
        self.updated_at = now;
    }

    /// Adds an uploaded image; its id.
    pub fn attach(
        &mut self,
        image: ImageRef,
        uploaded_by: UserId,
        by_admin: bool,
        now: DateTime<Utc>,
    ) -> Result<u32, TicketRule> {
        if self.status == TicketStatus::Closed {
            return Err(TicketRule::Closed);
        }
        if self.attachments.len() >= MAX_ATTACHMENTS {
            return Err(TicketRule::TooManyAttachments);
        }
        let id = self.attachments.last().map_or(1, |a| a.id + 1);
        self.attachments.push(Attachment {
            id,
            image,
            uploaded_by,
            by_admin,
            at: now,
        });
        self.updated_at = now;
        Ok(id)
    }

    /// Whether the author may see an attachment: their own uploads, and admins' images shown
    /// in a public reply.
    pub fn author_sees(&self, attachment: &Attachment) -> bool {
        !attachment.by_admin
            || self
                .messages
                .iter()
                .any(|m| !m.internal && m.attachments.contains(&attachment.id))
    }

    /// Open, with the last public word from the author.
    pub fn waits_on_admin(&self) -> bool {
        self.status == TicketStatus::Open && self.waiting_since.is_some()
    }

    /// Waiting on an admin for longer than `after`.
    pub fn is_overdue(&self, now: DateTime<Utc>, after: std::time::Duration) -> bool {
        let after = chrono::Duration::from_std(after).unwrap_or(chrono::Duration::MAX);
        self.waits_on_admin() && self.waiting_since.is_some_and(|since| now - since > after)
    }

    /// Seconds from opening to the first public reply of an admin.
    pub fn first_response_secs(&self) -> Option<i64> {
        self.first_response_at
            .map(|at| (at - self.created_at).num_seconds())
    }

    /// Seconds from opening to the (last) resolution.
    pub fn resolution_secs(&self) -> Option<i64> {
        self.resolved_at
            .map(|at| (at - self.created_at).num_seconds())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn ticket(now: DateTime<Utc>) -> Ticket {
        Ticket::open(
            TicketId::new(),
            UserId::new(),
            "Cold pizza",
            TicketCategory::OrderProblem,
            None,
            "It arrived cold.",
            now,
        )
        .unwrap()
    }

    #[test]
    fn replies_hand_the_turn_over_and_notes_do_not() {
        let t0 = Utc::now();
        let mut t = ticket(t0);
        assert!(t.waits_on_admin());
        let admin = UserId::new();
        t.admin_message(
            admin,
            "Looking into it",
            true,
            vec![],
            t0 + Duration::minutes(5),
        )
        .unwrap();
        assert_eq!(t.status, TicketStatus::Open, "a note changes nothing");
        assert_eq!(t.first_response_at, None);
        assert!(t.waits_on_admin());
        t.admin_message(
            admin,
            "Refund on its way",
            false,
            vec![],
            t0 + Duration::minutes(10),
        )
        .unwrap();
        assert_eq!(t.status, TicketStatus::WaitingOnUser);
        assert_eq!(t.first_response_secs(), Some(600));
        assert!(!t.waits_on_admin());
        t.user_message("Thanks, still nothing", vec![], t0 + Duration::hours(1))
            .unwrap();
        assert_eq!(t.status, TicketStatus::Open);
        assert!(t.waits_on_admin());
        t.admin_message(admin, "Sent again", false, vec![], t0 + Duration::hours(2))
            .unwrap();
        assert_eq!(
            t.first_response_secs(),
            Some(600),
            "only the first reply counts"
        );
        assert_eq!(
            t.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
    }

    #[test]
    fn resolution_is_recorded_and_forgotten_on_reopening() {
        let t0 = Utc::now();
        let mut t = ticket(t0);
        t.set_status(TicketStatus::Resolved, t0 + Duration::hours(3));
        assert_eq!(t.resolution_secs(), Some(3 * 3600));
        t.user_message("Not solved", vec![], t0 + Duration::hours(4))
            .unwrap();
        assert_eq!(t.status, TicketStatus::Open);
        assert_eq!(t.resolution_secs(), None);
        t.set_status(TicketStatus::Closed, t0 + Duration::hours(5));
        assert_eq!(t.resolution_secs(), Some(5 * 3600));
        assert_eq!(
            t.user_message("Hello?", vec![], t0 + Duration::hours(6))
                .map(|_| ()),
            Err(TicketRule::Closed)
        );
    }

    #[test]
    fn overdue_means_waiting_on_an_admin_too_long() {
        let t0 = Utc::now();
        let mut t = ticket(t0);
        let four_hours = std::time::Duration::from_secs(4 * 3600);
        assert!(!t.is_overdue(t0 + Duration::hours(3), four_hours));
        assert!(t.is_overdue(t0 + Duration::hours(5), four_hours));
        t.admin_message(
            UserId::new(),
            "On it",
            false,
            vec![],
            t0 + Duration::hours(5),
        )
        .unwrap();
        assert!(!t.is_overdue(t0 + Duration::hours(10), four_hours));
    }

    #[test]
    fn bodies_subjects_and_counts_are_bounded() {
        let t0 = Utc::now();
        let mut t = ticket(t0);
        assert!(body("   ").is_err());
        assert!(body(&"x".repeat(MAX_BODY + 1)).is_err());
        assert!(body(&"x".repeat(MAX_BODY)).is_ok());
        assert!(subject("").is_err());
        assert!(subject("two\u{7}bells").is_err());
        assert_eq!(
            t.user_message("see picture", vec![1], t0).map(|_| ()),
            Err(TicketRule::UnknownAttachment(1))
        );
        for _ in 1..MAX_MESSAGES {
            t.user_message("again", vec![], t0).unwrap();
        }
        assert_eq!(
            t.user_message("one more", vec![], t0).map(|_| ()),
            Err(TicketRule::Full)
        );
    }

    #[test]
    fn admins_images_reach_the_author_only_through_a_reply() {
        let t0 = Utc::now();
        let mut t = ticket(t0);
        let image = ImageRef {
            key: "images/x.jpg".into(),
            thumbnail_key: "thumbs/x.jpg".into(),
            content_type: "image/jpeg".into(),
            width: 1,
            height: 1,
        };
        let admin = UserId::new();
        let id = t.attach(image, admin, true, t0).unwrap();
        t.admin_message(admin, "internal evidence", true, vec![id], t0)
            .unwrap();
        assert!(!t.author_sees(&t.attachments[0]));
        t.admin_message(admin, "here is the receipt", false, vec![id], t0)
            .unwrap();
        assert!(t.author_sees(&t.attachments[0]));
    }
}
