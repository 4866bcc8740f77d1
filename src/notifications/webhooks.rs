//! Webhook endpoints: registration (with the target checked) and delivery (signed, to the
//! address that was checked).
//!
//! A target must be `http` or `https` and resolve only to public addresses, unless the operator
//! allows private ones (`HEXMARKET_WEBHOOK_ALLOW_PRIVATE`): otherwise the server could be made
//! to call its own network. The check runs at registration and again at every delivery, and
//! the delivery connects to the very addresses it checked (a name that resolves elsewhere a
//! moment later is not followed), with redirects off.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use chrono::Utc;
use parking_lot::Mutex;
use serde_json::json;
use uuid::Uuid;

use super::Notifications;
use crate::domain::account::NotificationEvent;
use crate::domain::ids::UserId;
use crate::domain::notification::OutboxMessage;
use crate::domain::order::{OrderEvent, OrderRecord};
use crate::domain::webhook::{
    MAX_ENDPOINTS, MAX_URL_LEN, WebhookEndpoint, WebhookScope, is_private, new_secret,
    signature_header,
};
use crate::notify::NotifyError;
use crate::store::StoreError;

/// How long one delivery may take.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a delivery is retried before it is given up on.
pub const RETRY_FOR: chrono::Duration = chrono::Duration::hours(24);

/// Why an endpoint cannot be registered.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("{0}")]
    InvalidUrl(String),
    #[error("{0}")]
    TargetRefused(String),
    #[error("at most {MAX_ENDPOINTS} endpoints per account")]
    TooMany,
    #[error("choose at least one event")]
    NoEvents,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A checked target: the URL and the addresses its host resolved to.
pub(super) struct Target {
    pub(super) url: reqwest013::Url,
    host: String,
    addresses: Vec<SocketAddr>,
}

/// Most clients kept; past this many targets, the cache starts over.
const MAX_CLIENTS: usize = 1024;

/// HTTP clients by checked target. Building one reads and parses the system's root
/// certificates, which is milliseconds of blocking work on the thread that sends: thousands
/// of deliveries building their own stalled the sender long enough for answers to go unheard.
/// A kept client also keeps its connections alive between deliveries.
#[derive(Default)]
pub(super) struct Clients {
    kept: Mutex<HashMap<(String, Vec<SocketAddr>), reqwest013::Client>>,
}

impl Clients {
    /// A client that connects to the target's checked addresses only, follows no redirect,
    /// and gives up after [`DELIVERY_TIMEOUT`].
    pub(super) fn for_target(&self, target: &Target) -> Result<reqwest013::Client, NotifyError> {
        let key = (target.host.clone(), target.addresses.clone());
        if let Some(client) = self.kept.lock().get(&key) {
            return Ok(client.clone());
        }
        let client = reqwest013::Client::builder()
            .timeout(DELIVERY_TIMEOUT)
            .redirect(reqwest013::redirect::Policy::none())
            .resolve_to_addrs(&target.host, &target.addresses)
            .build()
            .map_err(|e| NotifyError::Unavailable(format!("HTTP client: {e}")))?;
        let mut kept = self.kept.lock();
        if kept.len() >= MAX_CLIENTS {
            kept.clear();
        }
        kept.insert(key, client.clone());
        Ok(client)
    }
}

/// Parses `raw` and resolves its host; refuses other schemes, credentials in the URL, and
/// (unless `allow_private`) any private address.
pub(super) async fn check_target(raw: &str, allow_private: bool) -> Result<Target, WebhookError> {
    let invalid = |why: &str| WebhookError::InvalidUrl(why.to_owned());
    if raw.len() > MAX_URL_LEN {
        return Err(invalid("the URL is longer than 2048 characters"));
    }
    let url = reqwest013::Url::parse(raw).map_err(|e| invalid(&format!("not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the URL must be http or https"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("the URL must not carry credentials"));
    }
    let host = url
        .host_str()
        .ok_or_else(|| invalid("the URL has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = url
        .port_or_known_default()
        .ok_or_else(|| invalid("the URL has no port"))?;
    let addresses: Vec<SocketAddr> = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::lookup_host((host.as_str(), port)),
    )
    .await
    .map_err(|_| WebhookError::TargetRefused(format!("{host} did not resolve in time")))?
    .map_err(|e| WebhookError::TargetRefused(format!("{host} does not resolve: {e}")))?
    .collect();
    if addresses.is_empty() {
        return Err(WebhookError::TargetRefused(format!(
            "{host} has no address"
        )));
    }
    if !allow_private && addresses.iter().any(|a| is_private(a.ip())) {
        return Err(WebhookError::TargetRefused(format!(
            "{host} resolves to a private or reserved address"
        )));
    }
    Ok(Target {
        url,
        host,
        addresses,
    })
}

impl Notifications {
    /// Registers an endpoint for `owner` (a store's owner for its store, or an admin for the
    /// platform) after checking its target.
    pub async fn register_webhook(
        &self,
        owner: UserId,
        scope: WebhookScope,
        url: &str,
        events: Vec<NotificationEvent>,
    ) -> Result<WebhookEndpoint, WebhookError> {
        let mut events = events;
        events.sort();
        events.dedup();
        if events.is_empty() {
            return Err(WebhookError::NoEvents);
        }
        check_target(url, self.inner.allow_private_webhooks).await?;
        if self.inner.webhooks.of_owner(owner).await?.len() >= MAX_ENDPOINTS {
            return Err(WebhookError::TooMany);
        }
        let endpoint = WebhookEndpoint {
            id: Uuid::now_v7(),
            owner,
            scope,
            url: url.to_owned(),
            events,
            secret: new_secret(),
            created_at: self.inner.clock.now(),
        };
        self.inner.webhooks.create(&endpoint).await?;
        Ok(endpoint)
    }

    pub async fn webhooks_of(&self, owner: UserId) -> Result<Vec<WebhookEndpoint>, StoreError> {
        self.inner.webhooks.of_owner(owner).await
    }

    pub async fn webhook(
        &self,
        owner: UserId,
        id: Uuid,
    ) -> Result<Option<WebhookEndpoint>, StoreError> {
        self.inner.webhooks.get(owner, id).await
    }

    pub async fn delete_webhook(&self, owner: UserId, id: Uuid) -> Result<bool, StoreError> {
        self.inner.webhooks.delete(owner, id).await
    }

    /// An endpoint's deliveries, newest first. `None`: `owner` has no such endpoint.
    pub async fn webhook_deliveries(
        &self,
        owner: UserId,
        id: Uuid,
        after: Option<String>,
        limit: usize,
    ) -> Result<Option<(Vec<OutboxMessage>, Option<String>)>, StoreError> {
        if self.inner.webhooks.get(owner, id).await?.is_none() {
            return Ok(None);
        }
        let (ids, next) = self.inner.webhooks.deliveries(id, after, limit).await?;
        let mut out = Vec::with_capacity(ids.len());
        for delivery in ids {
            if let Some(m) = self.inner.outbox.get(delivery).await? {
                out.push(m.value);
            }
        }
        Ok(Some((out, next)))
    }

    /// Sends one delivery again (a new round of attempts). `None`: no such delivery of
    /// `owner`'s endpoint `id`.
    pub async fn redeliver(
        &self,
        owner: UserId,
        id: Uuid,
        delivery: Uuid,
    ) -> Result<Option<OutboxMessage>, StoreError> {
        if self.inner.webhooks.get(owner, id).await?.is_none() {
            return Ok(None);
        }
        match self.inner.outbox.get(delivery).await? {
            Some(m) if m.value.endpoint == Some(id) => {
                self.inner
                    .outbox
                    .resend(delivery, self.inner.clock.now())
                    .await
            }
            _ => Ok(None),
        }
    }

    /// Delivers one webhook message; `None` when its endpoint was deleted.
    pub(super) async fn post_webhook(
        &self,
        message: &OutboxMessage,
        record: &OrderRecord,
        event: &OrderEvent,
    ) -> Result<Option<Result<(), NotifyError>>, StoreError> {
        let Some(endpoint_id) = message.endpoint else {
            return Ok(None);
        };
        let Some(endpoint) = self
            .inner
            .webhooks
            .get(message.recipient, endpoint_id)
            .await?
        else {
            return Ok(None);
        };
        let target = match check_target(&endpoint.url, self.inner.allow_private_webhooks).await {
            Ok(t) => t,
            Err(WebhookError::TargetRefused(why)) => {
                return Ok(Some(Err(NotifyError::Invalid(why))));
            }
            Err(e) => return Ok(Some(Err(NotifyError::Unavailable(e.to_string())))),
        };
        let body = json!({
            "id": message.id,
            "type": message.event,
            "created_at": event.at,
            "data": {
                "order_id": record.id(),
                "vendor_id": record.order.vendor_id,
                "order_seq": event.seq,
                "status": event.status_after,
                "event": event.kind,
                "total": record.totals.map(|t| t.total),
            },
        });
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let signature = signature_header(&endpoint.secret, Utc::now().timestamp(), &body);
        let client = match self.inner.clients.for_target(&target) {
            Ok(c) => c,
            Err(e) => return Ok(Some(Err(e))),
        };
        let sent = client
            .post(target.url)
            .header("content-type", "application/json")
            .header("user-agent", "hexmarket-webhooks/1")
            .header("hexmarket-webhook-id", message.id.to_string())
            .header("hexmarket-signature", signature)
            .body(body)
            .send()
            .await;
        Ok(Some(match sent {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(NotifyError::Unavailable(format!(
                "the endpoint answered {}",
                response.status()
            ))),
            Err(e) if e.is_timeout() => Err(NotifyError::Unavailable(format!(
                "the endpoint did not answer within {DELIVERY_TIMEOUT:?}"
            ))),
            Err(e) => Err(NotifyError::Unavailable(format!(
                "the endpoint cannot be reached: {}",
                e.without_url()
            ))),
        }))
    }
}
