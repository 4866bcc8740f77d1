//! Stripe webhooks: the `Stripe-Signature` check over the raw body, and the translation of the
//! few event types hexmarket acts on into [`PaymentEvent`]s.
//!
//! The header reads `t=<unix seconds>,v1=<hex HMAC-SHA256>[,v1=…]`; the signed payload is
//! `"{t}.{raw body}"` keyed with the endpoint's signing secret. Several `v1` values appear
//! while a secret is being rolled; any one matching is enough. Events older or newer than
//! [`TOLERANCE_SECS`] are refused so that a captured request cannot be replayed later.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::{PaymentEvent, PaymentEventKind, RefundAmount};

/// How far the signed timestamp may be from our clock, either way.
pub const TOLERANCE_SECS: i64 = 300;

/// Why a webhook was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Stripe-Signature header is missing")]
    Missing,
    #[error("the Stripe-Signature header is malformed")]
    Malformed,
    #[error("the signed timestamp is outside the tolerance")]
    Stale,
    #[error("no signature matches")]
    Mismatch,
}

/// Checks `header` against `body` signed with `secret`, at time `now`.
pub fn verify(
    secret: &str,
    header: Option<&str>,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp: Option<&str> = None;
    let mut signatures: Vec<Vec<u8>> = Vec::new();
    for item in header.split(',') {
        let (name, value) = item
            .trim()
            .split_once('=')
            .ok_or(SignatureError::Malformed)?;
        match name {
            "t" if timestamp.is_some() => return Err(SignatureError::Malformed),
            "t" => timestamp = Some(value),
            "v1" => signatures.push(decode_hex(value).ok_or(SignatureError::Malformed)?),
            // v0 (test-mode legacy) and future schemes are ignored, as Stripe's libraries do.
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    let seconds: i64 = timestamp.parse().map_err(|_| SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if (now.timestamp() - seconds).abs() > TOLERANCE_SECS {
        return Err(SignatureError::Stale);
    }
    let matches = signatures.iter().any(|candidate| {
        let mut mac = mac(secret);
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        // `verify_slice` compares in constant time.
        mac.verify_slice(candidate).is_ok()
    });
    if matches {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The `Stripe-Signature` header Stripe would send for `body` at `timestamp` (tests, tools).
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = mac(secret);
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={timestamp},v1={hex}")
}

fn mac(secret: &str) -> Hmac<Sha256> {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"))
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.is_empty() || !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        })
        .collect()
}

#[derive(Deserialize)]
struct StripeEvent {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    data: EventData,
}

#[derive(Deserialize)]
struct EventData {
    object: serde_json::Value,
}

/// What a verified webhook body means for hexmarket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// An event hexmarket acts on.
    Event(PaymentEvent),
    /// A well-formed event of a type hexmarket does not act on (answered 200 so that Stripe
    /// stops sending it).
    Ignored { event_id: String, kind: String },
}

/// Reads a verified Stripe event. `None` when the body is not an event at all.
pub fn parse_event(body: &[u8]) -> Option<Parsed> {
    let event: StripeEvent = serde_json::from_slice(body).ok()?;
    let object = &event.data.object;
    let field = |name: &str| object.get(name).and_then(serde_json::Value::as_str);
    let (kind, provider_ref) = match event.kind.as_str() {
        "payment_intent.succeeded" => (PaymentEventKind::Succeeded, field("id")),
        "payment_intent.payment_failed" => (PaymentEventKind::Failed, field("id")),
        "charge.refunded" => {
            let total = object
                .get("amount_refunded")
                .and_then(serde_json::Value::as_i64)?;
            (
                PaymentEventKind::Refunded(RefundAmount::Total(total)),
                field("payment_intent"),
            )
        }
        _ => {
            return Some(Parsed::Ignored {
                event_id: event.id,
                kind: event.kind,
            });
        }
    };
    let Some(provider_ref) = provider_ref else {
        // A charge without a PaymentIntent was not made by hexmarket.
        return Some(Parsed::Ignored {
            event_id: event.id,
            kind: event.kind,
        });
    };
    Some(Parsed::Event(PaymentEvent {
        event_id: event.id,
        kind,
        provider_ref: provider_ref.to_owned(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";
    const BODY: &[u8] =
        br#"{"id":"evt_1","type":"payment_intent.succeeded","data":{"object":{"id":"pi_1"}}}"#;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default()
    }

    #[test]
    fn a_correct_signature_passes() {
        let header = sign(SECRET, now().timestamp(), BODY);
        assert_eq!(verify(SECRET, Some(&header), BODY, now()), Ok(()));
    }

    #[test]
    fn a_flipped_byte_in_the_body_is_refused() {
        let header = sign(SECRET, now().timestamp(), BODY);
        let mut body = BODY.to_vec();
        body[10] ^= 0x01;
        assert_eq!(
            verify(SECRET, Some(&header), &body, now()),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn a_flipped_byte_in_the_signature_is_refused() {
        let header = sign(SECRET, now().timestamp(), BODY);
        let last = header.chars().last().unwrap_or('0');
        let flipped = if last == '0' { '1' } else { '0' };
        let header = format!("{}{flipped}", &header[..header.len() - 1]);
        assert_eq!(
            verify(SECRET, Some(&header), BODY, now()),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn another_secret_is_refused() {
        let header = sign("whsec_other", now().timestamp(), BODY);
        assert_eq!(
            verify(SECRET, Some(&header), BODY, now()),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn timestamps_301_seconds_away_are_refused_and_300_pass() {
        let t = now().timestamp();
        for (offset, expected) in [
            (-301, Err(SignatureError::Stale)),
            (301, Err(SignatureError::Stale)),
            (-300, Ok(())),
            (300, Ok(())),
        ] {
            let header = sign(SECRET, t + offset, BODY);
            assert_eq!(
                verify(SECRET, Some(&header), BODY, now()),
                expected,
                "offset {offset}"
            );
        }
    }

    #[test]
    fn missing_or_garbled_headers_are_refused() {
        assert_eq!(
            verify(SECRET, None, BODY, now()),
            Err(SignatureError::Missing)
        );
        let t = now().timestamp();
        for garbled in [
            "",
            "garbage",
            "t=abc,v1=00",
            &format!("t={t}"),
            &format!("t={t},v1=zz"),
            &format!("t={t},v1=abc"),
            &format!("t={t},t={t},v1=00"),
            "v1=00",
        ] {
            assert_eq!(
                verify(SECRET, Some(garbled), BODY, now()),
                Err(SignatureError::Malformed),
                "{garbled:?}"
            );
        }
    }

    #[test]
    fn any_matching_v1_among_several_passes() {
        let t = now().timestamp();
        let good = sign(SECRET, t, BODY);
        let good_v1 = good.split(",v1=").nth(1).unwrap_or_default();
        let header = format!("t={t},v1={},v1={good_v1},v0=ffff", "00".repeat(32));
        assert_eq!(verify(SECRET, Some(&header), BODY, now()), Ok(()));
        let none = format!("t={t},v1={},v1={}", "00".repeat(32), "11".repeat(32));
        assert_eq!(
            verify(SECRET, Some(&none), BODY, now()),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn the_three_event_types_are_read_and_others_ignored() {
        assert_eq!(
            parse_event(BODY),
            Some(Parsed::Event(PaymentEvent {
                event_id: "evt_1".to_owned(),
                kind: PaymentEventKind::Succeeded,
                provider_ref: "pi_1".to_owned(),
            }))
        );
        let failed = br#"{"id":"evt_2","type":"payment_intent.payment_failed","data":{"object":{"id":"pi_2"}}}"#;
        assert!(matches!(
            parse_event(failed),
            Some(Parsed::Event(PaymentEvent {
                kind: PaymentEventKind::Failed,
                ..
            }))
        ));
        let refunded = br#"{"id":"evt_3","type":"charge.refunded","data":{"object":{"id":"ch_1","payment_intent":"pi_3","amount_refunded":250}}}"#;
        assert_eq!(
            parse_event(refunded),
            Some(Parsed::Event(PaymentEvent {
                event_id: "evt_3".to_owned(),
                kind: PaymentEventKind::Refunded(RefundAmount::Total(250)),
                provider_ref: "pi_3".to_owned(),
            }))
        );
        let other = br#"{"id":"evt_4","type":"customer.created","data":{"object":{"id":"cus_1"}}}"#;
        assert!(matches!(parse_event(other), Some(Parsed::Ignored { .. })));
        assert_eq!(parse_event(b"not json"), None);
    }
}
