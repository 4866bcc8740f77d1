//! The audit trail's entries: who did what to which object, when, from where, with the object
//! before and after. Entries are only ever appended; nothing in the API edits or removes one.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::ids::UserId;

/// Longest `reason` kept on an entry (longer ones are cut at a character boundary).
pub const MAX_REASON: usize = 1_000;

/// How an action reached the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// An administrator's request to the HTTP API.
    Api,
    /// The operator's command line on a node (`hexmarket create-admin` and the like).
    Cli,
}

/// One administrative action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// Time-ordered (UUIDv7).
    #[schema(value_type = String, format = Uuid)]
    pub id: uuid::Uuid,
    pub at: DateTime<Utc>,
    /// The administrator who acted; none for the command line.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub actor: Option<UserId>,
    pub channel: Channel,
    /// The client's address, as far as it could be known (the trusted proxies say).
    #[schema(value_type = Option<String>)]
    pub from: Option<IpAddr>,
    /// What was done, `area.verb`: `user.ban`, `order.refund`, `settings.change`, ...
    #[schema(example = "user.ban")]
    pub action: String,
    /// What it was done to, `kind:id`: `user:…`, `order:…`, `settings`, ...
    #[schema(example = "user:0191f0a4-7c1e-7b53-8a0e-2f1b9c3d4e5f")]
    pub target: String,
    /// The object before the action (absent when it did not exist or says nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub before: Option<serde_json::Value>,
    /// The object after the action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub after: Option<serde_json::Value>,
    /// Why, when the administrator said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl AuditEntry {
    /// An action through the API by `actor`, from `from`, stamped now.
    pub fn new(
        actor: UserId,
        from: Option<IpAddr>,
        action: &str,
        target: impl Into<String>,
    ) -> Self {
        AuditEntry::blank(Some(actor), Channel::Api, from, action, target.into())
    }

    /// An action of the operator's command line on this node.
    pub fn from_cli(action: &str, target: impl Into<String>) -> Self {
        AuditEntry::blank(None, Channel::Cli, None, action, target.into())
    }

    fn blank(
        actor: Option<UserId>,
        channel: Channel,
        from: Option<IpAddr>,
        action: &str,
        target: String,
    ) -> Self {
        AuditEntry {
            id: uuid::Uuid::now_v7(),
            at: Utc::now(),
            actor,
            channel,
            from,
            action: action.to_owned(),
            target,
            before: None,
            after: None,
            reason: None,
        }
    }

    /// Stamps the entry at `at` (the platform's clock, which tests move).
    pub fn at(mut self, at: DateTime<Utc>) -> Self {
        self.at = at;
        self
    }

    pub fn before(mut self, value: impl Serialize) -> Self {
        self.before = state(value);
        self
    }

    pub fn after(mut self, value: impl Serialize) -> Self {
        self.after = state(value);
        self
    }

    pub fn reason(mut self, reason: Option<impl Into<String>>) -> Self {
        self.reason = reason.map(|r| {
            let mut r: String = r.into();
            if r.len() > MAX_REASON {
                let mut cut = MAX_REASON;
                while !r.is_char_boundary(cut) {
                    cut -= 1;
                }
                r.truncate(cut);
            }
            r
        });
        self
    }
}

/// Which entries a reader wants.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<UserId>,
    /// An action (`user.ban`) or an area (`user`, matching every `user.…`).
    pub action: Option<String>,
    /// The exact target (`order:…`).
    pub target: Option<String>,
}

impl AuditFilter {
    pub fn matches(&self, entry: &AuditEntry) -> bool {
        self.actor.is_none_or(|a| entry.actor == Some(a))
            && self.action.as_deref().is_none_or(|wanted| {
                entry.action == wanted
                    || entry
                        .action
                        .strip_prefix(wanted)
                        .is_some_and(|rest| rest.starts_with('.'))
            })
            && self
                .target
                .as_deref()
                .is_none_or(|wanted| entry.target == wanted)
    }
}

/// An object's state as an entry keeps it: an object, or nothing. A value of another shape (a
/// bare string or list) is kept as `{"value": …}`, so every entry reads the same way.
fn state(value: impl Serialize) -> Option<serde_json::Value> {
    match serde_json::to_value(value).ok()? {
        serde_json::Value::Null => None,
        object @ serde_json::Value::Object(_) => Some(object),
        other => Some(serde_json::json!({ "value": other })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn before_and_after_are_objects_or_absent_whatever_they_were_given() {
        let entry = AuditEntry::new(UserId::from(uuid::Uuid::nil()), None, "x.y", "x:1")
            .before(None::<String>)
            .after("0000");
        assert_eq!(entry.before, None);
        assert_eq!(entry.after, Some(serde_json::json!({"value": "0000"})));
        let entry = entry.before(vec![1, 2]).after(serde_json::json!({"a": 1}));
        assert_eq!(entry.before, Some(serde_json::json!({"value": [1, 2]})));
        assert_eq!(entry.after, Some(serde_json::json!({"a": 1})));
    }

    #[test]
    fn an_area_matches_its_actions_and_nothing_that_only_starts_alike() {
        let entry = AuditEntry::new(UserId::from(uuid::Uuid::nil()), None, "user.ban", "user:x");
        let area = |a: &str| AuditFilter {
            action: Some(a.into()),
            ..AuditFilter::default()
        };
        assert!(area("user").matches(&entry));
        assert!(area("user.ban").matches(&entry));
        assert!(!area("use").matches(&entry));
        assert!(!area("user.ba").matches(&entry));
        assert!(!area("order").matches(&entry));
    }

    #[test]
    fn long_reasons_are_cut_on_a_character_boundary() {
        let entry = AuditEntry::from_cli("x.y", "t").reason(Some("é".repeat(MAX_REASON)));
        let reason = entry.reason.unwrap_or_default();
        assert!(reason.len() <= MAX_REASON);
        assert!(reason.chars().all(|c| c == 'é'));
        assert_eq!(entry.actor, None);
    }
}
