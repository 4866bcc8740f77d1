//! Web Push: browsers' subscriptions, the server's VAPID key, and delivery.
//!
//! A message is encrypted for one browser (RFC 8291, `aes128gcm`, with the subscription's
//! P-256 key and auth secret) and posted to its push service (RFC 8030) with a VAPID
//! authorization (RFC 8292): an ES256 JWT for the push service's origin, signed with the
//! server's key, whose public half browsers get from `GET /api/v1/push/vapid-public-key` for
//! `PushManager.subscribe`. A push service that answers 404 or 410 has dropped the
//! subscription: it is removed from the account. Endpoints are checked like webhook targets
//! (public addresses only, unless the operator allows private ones).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use p256::pkcs8::EncodePrivateKey as _;
use serde::Serialize;
use uuid::Uuid;

use super::Notifications;
use super::webhooks::{WebhookError, check_target};
use crate::domain::account::PushSubscription;
use crate::domain::ids::UserId;
use crate::domain::notification::OutboxMessage;
use crate::notify::NotifyError;
use crate::store::StoreError;

/// How long a push service keeps a message for a browser that is offline.
pub const PUSH_TTL: Duration = Duration::from_secs(24 * 3600);
/// Subscriptions one account may have.
pub const MAX_SUBSCRIPTIONS: usize = 10;
/// How long a VAPID token is valid (RFC 8292 allows at most a day).
const VAPID_VALIDITY: chrono::Duration = chrono::Duration::hours(12);

/// The server's VAPID key pair.
#[derive(Clone)]
pub struct Vapid {
    signing: jsonwebtoken::EncodingKey,
    /// The public key, uncompressed SEC1, base64url: the `applicationServerKey`.
    public: String,
    /// Who runs the server (`mailto:` or `https:`), as push services want to know.
    subject: String,
}

impl Vapid {
    /// A key pair from 32 secret bytes (derived from the master secret), or from the first
    /// valid scalar after them.
    pub fn from_seed(seed: [u8; 32], subject: &str) -> anyhow::Result<Self> {
        let mut bytes = seed;
        let secret = loop {
            if let Ok(secret) = p256::SecretKey::from_slice(&bytes) {
                break secret;
            }
            bytes = <sha2::Sha256 as sha2::Digest>::digest(bytes).into();
        };
        let der = secret
            .to_pkcs8_der()
            .map_err(|e| anyhow::anyhow!("VAPID key: {e}"))?;
        let public = secret.public_key();
        let point = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&public, false);
        Ok(Vapid {
            signing: jsonwebtoken::EncodingKey::from_ec_der(der.as_bytes()),
            public: URL_SAFE_NO_PAD.encode(point.as_bytes()),
            subject: subject.to_owned(),
        })
    }

    pub fn public_key(&self) -> &str {
        &self.public
    }

    /// `Authorization: vapid t=…, k=…` for a push service at `origin`.
    fn authorization(&self, origin: &str) -> Result<String, NotifyError> {
        #[derive(Serialize)]
        struct Claims<'a> {
            aud: &'a str,
            exp: i64,
            sub: &'a str,
        }
        let claims = Claims {
            aud: origin,
            exp: (Utc::now() + VAPID_VALIDITY).timestamp(),
            sub: &self.subject,
        };
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        let token = jsonwebtoken::encode(&header, &claims, &self.signing)
            .map_err(|e| NotifyError::Invalid(format!("VAPID token: {e}")))?;
        Ok(format!("vapid t={token}, k={}", self.public))
    }
}

/// Why a subscription is refused.
#[derive(Debug, thiserror::Error)]
pub enum SubscriptionError {
    #[error("{0}")]
    Invalid(&'static str),
    #[error("at most {MAX_SUBSCRIPTIONS} subscriptions per account")]
    TooMany,
    #[error(transparent)]
    Target(#[from] WebhookError),
}

fn decode(text: &str) -> Option<Vec<u8>> {
    let trimmed = text.trim_end_matches('=');
    URL_SAFE_NO_PAD.decode(trimmed).ok()
}

/// Checks the keys of a subscription: a P-256 point and a 16-byte secret.
pub fn check_keys(p256dh: &str, auth: &str) -> Result<(), SubscriptionError> {
    let point = decode(p256dh).ok_or(SubscriptionError::Invalid("keys.p256dh is not base64url"))?;
    p256::PublicKey::from_sec1_bytes(&point)
        .map_err(|_| SubscriptionError::Invalid("keys.p256dh is not a P-256 public key"))?;
    match decode(auth) {
        Some(secret) if secret.len() == 16 => Ok(()),
        _ => Err(SubscriptionError::Invalid(
            "keys.auth must be 16 bytes, base64url",
        )),
    }
}

impl Notifications {
    /// The key browsers subscribe with.
    pub fn vapid_public_key(&self) -> &str {
        self.inner.vapid.public_key()
    }

    /// Checks a subscription's push service and keys (the account's update is the caller's).
    pub async fn check_subscription(
        &self,
        endpoint: &str,
        p256dh: &str,
        auth: &str,
    ) -> Result<(), SubscriptionError> {
        check_keys(p256dh, auth)?;
        check_target(endpoint, self.inner.allow_private_webhooks).await?;
        Ok(())
    }

    /// Sends one push message; `None` when the subscription is gone from the account.
    pub(super) async fn post_push(
        &self,
        message: &OutboxMessage,
        subscription: &PushSubscription,
        payload: &serde_json::Value,
    ) -> Result<Option<Result<(), NotifyError>>, StoreError> {
        let target =
            match check_target(&subscription.endpoint, self.inner.allow_private_webhooks).await {
                Ok(t) => t,
                Err(WebhookError::TargetRefused(why)) => {
                    return Ok(Some(Err(NotifyError::Invalid(why))));
                }
                Err(e) => return Ok(Some(Err(NotifyError::Unavailable(e.to_string())))),
            };
        let (Some(point), Some(secret)) =
            (decode(&subscription.p256dh), decode(&subscription.auth))
        else {
            return Ok(Some(Err(NotifyError::Invalid(
                "bad subscription keys".into(),
            ))));
        };
        let (Ok(key), true) = (p256::PublicKey::from_sec1_bytes(&point), secret.len() == 16) else {
            return Ok(Some(Err(NotifyError::Invalid(
                "bad subscription keys".into(),
            ))));
        };
        let auth = web_push_native::Auth::clone_from_slice(&secret);
        let body = serde_json::to_vec(payload).unwrap_or_default();
        let encrypted = match web_push_native::encrypt(body, &key, &auth) {
            Ok(e) => e,
            Err(e) => return Ok(Some(Err(NotifyError::Invalid(format!("encryption: {e}"))))),
        };
        let origin = target.url.origin().ascii_serialization();
        let authorization = match self.inner.vapid.authorization(&origin) {
            Ok(a) => a,
            Err(e) => return Ok(Some(Err(e))),
        };
        let client = match self.inner.clients.for_target(&target) {
            Ok(c) => c,
            Err(e) => return Ok(Some(Err(e))),
        };
        let sent = client
            .post(target.url)
            .header("ttl", PUSH_TTL.as_secs().to_string())
            .header("content-encoding", "aes128gcm")
            .header("content-type", "application/octet-stream")
            .header("urgency", "normal")
            // RFC 8030 §5.4: a message sent again (a crash before its outcome was recorded)
            // replaces the first while the push service still holds it.
            .header("topic", URL_SAFE_NO_PAD.encode(message.id.as_bytes()))
            .header("authorization", authorization)
            .body(encrypted)
            .send()
            .await;
        let outcome = match sent {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) if matches!(r.status().as_u16(), 404 | 410) => {
                self.forget_subscription(message.recipient, subscription.id)
                    .await?;
                return Ok(None);
            }
            Ok(r) if r.status().as_u16() == 429 || r.status().is_server_error() => Err(
                NotifyError::Unavailable(format!("the push service answered {}", r.status())),
            ),
            Ok(r) => Err(NotifyError::Invalid(format!(
                "the push service refused the message: {}",
                r.status()
            ))),
            Err(e) => Err(NotifyError::Unavailable(format!(
                "the push service cannot be reached: {}",
                e.without_url()
            ))),
        };
        Ok(Some(outcome))
    }

    /// Removes a subscription the push service dropped.
    async fn forget_subscription(&self, user: UserId, id: Uuid) -> Result<(), StoreError> {
        let users = &self.inner.users;
        for _ in 0..8 {
            let Some(current) = users.get(user).await? else {
                return Ok(());
            };
            let mut changed = current.value.clone();
            changed.push_subscriptions.retain(|s| s.id != id);
            if changed.push_subscriptions.len() == current.value.push_subscriptions.len() {
                return Ok(());
            }
            if users.update(&changed, current.version).await?.is_some() {
                tracing::info!(user_id = %user, subscription = %id, "push subscription expired; removed");
                return Ok(());
            }
        }
        Ok(())
    }
}
