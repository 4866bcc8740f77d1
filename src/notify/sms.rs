//! SMS: the [`SmsSender`] trait, Twilio for production and an append-only outbox file.
//!
//! [`TwilioSms`] posts to Twilio's Messages API through the `twilio-rs` client. That crate is
//! generated from Twilio's OpenAPI spec and its `create_message` request builder has no way to
//! set the form fields (`To`, `From`, `Body`): it posts an empty body, which Twilio refuses.
//! So the request is built on the `TwilioClient`'s own HTTP client (which carries the
//! configured base URL) against the same `Messages.json` path, with the form and the Basic
//! credentials set here, and the answer is decoded into twilio-rs's `ApiV2010AccountMessage`.
//!
//! [`OutboxSms`] appends one JSON object per line to `{dir}/sms.jsonl`, fsynced before `send`
//! returns, for deployments without an SMS provider (development, the embedded default).

use std::fmt;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    NotifyError, SEND_TIMEOUT, blocking_io, create_private_dir, mask_phone, private_file_options,
    scrub, sync_dir,
};

/// The longest body Twilio accepts, in characters (it splits it into segments itself).
pub const MAX_BODY_CHARS: usize = 1600;

/// Twilio's production API.
pub const TWILIO_BASE_URL: &str = "https://api.twilio.com";

/// One text message.
#[derive(Clone, PartialEq, Eq)]
pub struct Sms {
    /// The recipient in E.164 form: `+`, then 8 to 15 digits, the first not `0`.
    pub to: String,
    /// The text, at most [`MAX_BODY_CHARS`] characters.
    pub body: String,
}

// Written by hand so that a stray `?sms` in a log line shows neither the code nor the number.
impl fmt::Debug for Sms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sms")
            .field("to", &mask_phone(&self.to))
            .field(
                "body",
                &format_args!("<{} chars>", self.body.chars().count()),
            )
            .finish()
    }
}

impl Sms {
    pub fn new(to: impl Into<String>, body: impl Into<String>) -> Self {
        Sms {
            to: to.into(),
            body: body.into(),
        }
    }

    /// Checks the recipient and the body; every sender calls this before any I/O.
    pub fn validate(&self) -> Result<(), NotifyError> {
        if !is_e164(&self.to) {
            return Err(NotifyError::Invalid(format!(
                "recipient {} is not an E.164 number (+ and 8 to 15 digits)",
                mask_phone(&self.to)
            )));
        }
        if self.body.trim().is_empty() {
            return Err(NotifyError::Invalid("the body is empty".to_owned()));
        }
        let chars = self.body.chars().count();
        if chars > MAX_BODY_CHARS {
            return Err(NotifyError::Invalid(format!(
                "the body has {chars} characters, at most {MAX_BODY_CHARS} are allowed"
            )));
        }
        Ok(())
    }
}

/// Whether `number` is `+` followed by 8 to 15 digits, the first of which is not `0` (no
/// country calling code starts with 0).
pub fn is_e164(number: &str) -> bool {
    let Some(digits) = number.strip_prefix('+') else {
        return false;
    };
    (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// Something that sends text messages.
#[async_trait]
pub trait SmsSender: Send + Sync + 'static {
    /// A short name for logs and health output: `"twilio"`, `"outbox"`.
    fn backend(&self) -> &'static str;

    /// Sends one message. `Ok` means the transport has taken responsibility for it (Twilio
    /// accepted it, or it is durably in the outbox), not that it reached the phone.
    async fn send(&self, sms: &Sms) -> Result<(), NotifyError>;
}

/// The sender the application holds.
pub type SharedSms = Arc<dyn SmsSender>;

// ---------------------------------------------------------------------------------------------
// Twilio
// ---------------------------------------------------------------------------------------------

/// Sends through Twilio's Messages API (`POST /2010-04-01/Accounts/{sid}/Messages.json`).
pub struct TwilioSms {
    base_url: String,
    account_sid: String,
    from: String,
    timeout: Duration,
    // A misconfiguration found by `new` is kept here, so each send reports it rather than
    // the constructor panicking or the process failing to start over an optional channel.
    transport: Result<TwilioTransport, String>,
}

struct TwilioTransport {
    client: twilio::TwilioClient,
    /// `base64(account_sid:auth_token)`: the credential itself, never printed.
    basic_auth: String,
    /// `/2010-04-01/Accounts/{sid}/Messages.json`, relative to the client's base URL.
    messages_path: String,
}

// The auth token must never reach logs, so Debug lists the harmless fields only.
impl fmt::Debug for TwilioSms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwilioSms")
            .field("base_url", &self.base_url)
            .field("account_sid", &self.account_sid)
            .field("from", &self.from)
            .field("auth_token", &"<redacted>")
            .field("timeout", &self.timeout)
            .field(
                "misconfiguration",
                &self.transport.as_ref().err().map(String::as_str),
            )
            .finish()
    }
}

impl TwilioSms {
    /// A sender for `account_sid`, sending from `from` (an E.164 number or an alphanumeric
    /// sender id). `base_url` is [`TWILIO_BASE_URL`] in production. A misconfiguration is
    /// logged and every send then fails with [`NotifyError::Unavailable`]; use
    /// [`TwilioSms::try_new`] to refuse it at startup instead.
    pub fn new(base_url: &str, account_sid: &str, auth_token: &str, from: &str) -> Self {
        match Self::try_new(base_url, account_sid, auth_token, from) {
            Ok(sender) => sender,
            Err(err) => {
                tracing::error!(error = %err, "Twilio SMS is misconfigured; every SMS will fail");
                TwilioSms {
                    base_url: base_url.to_owned(),
                    account_sid: account_sid.to_owned(),
                    from: from.to_owned(),
                    timeout: SEND_TIMEOUT,
                    transport: Err(err.to_string()),
                }
            }
        }
    }

    /// Like [`TwilioSms::new`], but a misconfiguration is an error.
    pub fn try_new(
        base_url: &str,
        account_sid: &str,
        auth_token: &str,
        from: &str,
    ) -> Result<Self, NotifyError> {
        let misconfigured = |why: String| NotifyError::Unavailable(format!("Twilio: {why}"));
        let base_url = base_url.trim_end_matches('/');
        // The SID is pasted into the URL path by the client, unescaped.
        if account_sid.is_empty()
            || account_sid.len() > 64
            || !account_sid.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(misconfigured(
                "the account SID must be 1 to 64 letters and digits".to_owned(),
            ));
        }
        if auth_token.is_empty() {
            return Err(misconfigured("the auth token is empty".to_owned()));
        }
        if !is_e164(from) && !is_alphanumeric_sender_id(from) {
            return Err(misconfigured(
                "the sender must be an E.164 number or an alphanumeric sender id of at most 11 characters"
                    .to_owned(),
            ));
        }
        let messages_path = format!("/2010-04-01/Accounts/{account_sid}/Messages.json");
        check_base_url(base_url, &messages_path).map_err(misconfigured)?;

        let basic_auth = STANDARD.encode(format!("{account_sid}:{auth_token}"));
        let authentication = twilio::TwilioAuthentication::BasicAuth {
            basic_auth: basic_auth.clone(),
        };
        // twilio-rs's HTTP client loads the platform's CA certificates when the first client is
        // built and panics when there are none (a container without ca-certificates). That is
        // a deployment problem to report, not a reason to bring the process down.
        let client =
            std::panic::catch_unwind(|| twilio::TwilioClient::new(base_url, authentication))
                .map_err(|_| {
                    misconfigured(
                        "its HTTP client could not be built (are CA certificates installed?)"
                            .to_owned(),
                    )
                })?;
        Ok(TwilioSms {
            base_url: base_url.to_owned(),
            account_sid: account_sid.to_owned(),
            from: from.to_owned(),
            timeout: SEND_TIMEOUT,
            transport: Ok(TwilioTransport {
                client,
                basic_auth,
                messages_path,
            }),
        })
    }

    /// Replaces the [`SEND_TIMEOUT`] bound on one send (connect, request and answer).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

#[async_trait]
impl SmsSender for TwilioSms {
    fn backend(&self) -> &'static str {
        "twilio"
    }

    async fn send(&self, sms: &Sms) -> Result<(), NotifyError> {
        sms.validate()?;
        let transport = self
            .transport
            .as_ref()
            .map_err(|why| NotifyError::Unavailable(format!("Twilio: {why}")))?;
        let id = Uuid::now_v7();
        let to = mask_phone(&sms.to);

        let result = match tokio::time::timeout(self.timeout, transport.post(&self.from, sms)).await
        {
            Err(_) => Err(NotifyError::Unavailable(format!(
                "Twilio did not answer within {:?}",
                self.timeout
            ))),
            Ok(Err(why)) => Err(NotifyError::Unavailable(format!(
                "Twilio is unreachable: {why}"
            ))),
            Ok(Ok((status, body))) => interpret_answer(status, &body, sms, &to),
        };
        match &result {
            Ok(sid) => {
                tracing::info!(backend = "twilio", %id, %to, twilio_sid = %sid, "SMS accepted by Twilio");
            }
            Err(err) => tracing::warn!(backend = "twilio", %id, %to, error = %err, "SMS not sent"),
        }
        result.map(|_| ())
    }
}

impl TwilioTransport {
    /// Posts the message; the HTTP status and body, or why there was no answer.
    async fn post(&self, from: &str, sms: &Sms) -> Result<(u16, Vec<u8>), String> {
        let form = form_urlencoded(&[("To", &sms.to), ("From", from), ("Body", &sms.body)]);
        let response = self
            .client
            .client
            .post(&self.messages_path)
            .basic_auth(&self.basic_auth)
            .header("Accept", "application/json")
            .content_type("application/x-www-form-urlencoded")
            .text(form)
            .send()
            .await
            // Transport errors only (no answer): they carry no request headers, so no secret.
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        Ok((status, body.to_vec()))
    }
}

/// Twilio's error document (`{"code": 21211, "message": "...", "more_info": "...", "status": 400}`).
#[derive(Deserialize)]
struct TwilioError {
    code: Option<i64>,
    message: Option<String>,
}

/// Maps Twilio's answer to the outcome: the message SID when accepted.
fn interpret_answer(
    status: u16,
    body: &[u8],
    sms: &Sms,
    masked_to: &str,
) -> Result<String, NotifyError> {
    match status {
        // Twilio answers a created message with its resource, always with a SID. A success
        // without one means something else answered (a proxy, a wrong base URL): calling that
        // sent would lose one-time codes silently, so it is an outage of the channel.
        200..=299 => match serde_json::from_slice::<twilio::model::ApiV2010AccountMessage>(body) {
            Ok(twilio::model::ApiV2010AccountMessage { sid: Some(sid), .. }) => Ok(sid),
            _ => Err(NotifyError::Unavailable(format!(
                "HTTP {status} without a Twilio message resource (is the base URL Twilio's?)"
            ))),
        },
        // Bad credentials or a suspended account fail every message alike: that is an outage
        // of the channel (and an operator problem), not something wrong with this message.
        401 | 403 => Err(NotifyError::Unavailable(format!(
            "Twilio refused the credentials ({})",
            describe_error(status, body, sms, masked_to)
        ))),
        429 => Err(NotifyError::Unavailable(format!(
            "Twilio is rate limiting ({})",
            describe_error(status, body, sms, masked_to)
        ))),
        400..=499 => Err(NotifyError::Invalid(format!(
            "Twilio refused the message ({})",
            describe_error(status, body, sms, masked_to)
        ))),
        _ => Err(NotifyError::Unavailable(format!(
            "Twilio failed ({})",
            describe_error(status, body, sms, masked_to)
        ))),
    }
}

/// "HTTP 400, Twilio error 21211: The 'To' number +4477****12 is not a valid phone number."
fn describe_error(status: u16, body: &[u8], sms: &Sms, masked_to: &str) -> String {
    const MAX_MESSAGE_CHARS: usize = 300;
    let mut text = format!("HTTP {status}");
    if let Ok(error) = serde_json::from_slice::<TwilioError>(body) {
        if let Some(code) = error.code {
            text.push_str(&format!(", Twilio error {code}"));
        }
        if let Some(message) = error.message {
            let message: String = message.chars().take(MAX_MESSAGE_CHARS).collect();
            // Twilio echoes numbers back; keep the recipient masked in errors that get logged.
            text.push_str(": ");
            text.push_str(&scrub(&message, &sms.to, masked_to));
        }
    }
    text
}

/// An alphanumeric sender id as Twilio accepts it: up to 11 letters, digits and spaces,
/// with at least one letter.
fn is_alphanumeric_sender_id(from: &str) -> bool {
    (1..=11).contains(&from.len())
        && from.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' ')
        && from.bytes().any(|b| b.is_ascii_alphabetic())
}

/// Refuses base URLs the client would choke on (it panics on an unparsable URL) and plain
/// http to anything but the local machine (the credentials travel in every request).
fn check_base_url(base_url: &str, messages_path: &str) -> Result<(), String> {
    // The client builds exactly this string, so parsing it here rules out a panic there.
    let uri: actix_web::http::Uri = format!("{base_url}{messages_path}")
        .parse()
        .map_err(|_| "the base URL is not a valid URL".to_owned())?;
    let authority = uri
        .authority()
        .ok_or_else(|| "the base URL has no host".to_owned())?;
    if authority.as_str().contains('@') {
        return Err("the base URL must not carry credentials".to_owned());
    }
    if !uri.path().ends_with(messages_path) || uri.query().is_some() {
        return Err("the base URL must be scheme://host[:port][/prefix], no query".to_owned());
    }
    let host = authority.host();
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if is_loopback(host) => Ok(()),
        Some("http") => Err("the base URL must use https outside the local machine".to_owned()),
        _ => Err("the base URL must start with https://".to_owned()),
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `application/x-www-form-urlencoded` encoding, as browsers and Twilio's SDKs produce it.
fn form_urlencoded(pairs: &[(&str, &str)]) -> String {
    fn encode_into(out: &mut String, text: &str) {
        for byte in text.bytes() {
            match byte {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                    out.push(char::from(byte));
                }
                b' ' => out.push('+'),
                _ => out.push_str(&format!("%{byte:02X}")),
            }
        }
    }
    let mut out = String::new();
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        encode_into(&mut out, key);
        out.push('=');
        encode_into(&mut out, value);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Outbox
// ---------------------------------------------------------------------------------------------

/// Appends each message as one JSON line to `{dir}/sms.jsonl`:
/// `{"id": "<uuid v7>", "to": "+44…", "body": "…", "created_at": "<RFC 3339 UTC>"}`.
///
/// Lines are written by one writer at a time and fsynced before `send` returns, so the file
/// is always a sequence of complete lines even under concurrent sends; a failed append is cut
/// off again. The file is private to the service user: it holds one-time codes.
pub struct OutboxSms {
    path: PathBuf,
    // Serializes appends; the guard travels into the blocking task so that a caller giving up
    // (a dropped future) cannot let the next append start before this one has finished.
    file: Arc<tokio::sync::Mutex<std::fs::File>>,
}

impl fmt::Debug for OutboxSms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboxSms")
            .field("path", &self.path)
            .finish()
    }
}

#[derive(Serialize)]
struct OutboxLine<'a> {
    id: Uuid,
    to: &'a str,
    body: &'a str,
    created_at: String,
}

impl OutboxSms {
    /// The file name inside the outbox directory.
    pub const FILE_NAME: &'static str = "sms.jsonl";

    /// Opens (creating as needed) `{dir}/sms.jsonl` for appending.
    pub fn new(dir: &Path) -> std::io::Result<Self> {
        create_private_dir(dir)?;
        let path = dir.join(Self::FILE_NAME);
        let file = private_file_options()
            .create(true)
            .append(true)
            .open(&path)?;
        // Make the file's existence durable now, so each send only has to sync its data.
        sync_dir(dir)?;
        Ok(OutboxSms {
            path,
            file: Arc::new(tokio::sync::Mutex::new(file)),
        })
    }

    /// Where the messages are appended.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[async_trait]
impl SmsSender for OutboxSms {
    fn backend(&self) -> &'static str {
        "outbox"
    }

    async fn send(&self, sms: &Sms) -> Result<(), NotifyError> {
        sms.validate()?;
        let id = Uuid::now_v7();
        let mut line = serde_json::to_vec(&OutboxLine {
            id,
            to: &sms.to,
            body: &sms.body,
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        })
        .map_err(|e| NotifyError::Unavailable(format!("SMS outbox: encoding failed: {e}")))?;
        line.push(b'\n');

        let file = Arc::clone(&self.file).lock_owned().await;
        blocking_io(move || append_line(&file, &line))
            .await
            .map_err(|e| {
                NotifyError::Unavailable(format!("SMS outbox {}: {e}", self.path.display()))
            })?;
        tracing::info!(backend = "outbox", %id, to = %mask_phone(&sms.to), "SMS written to the outbox");
        Ok(())
    }
}

/// Appends `line` and syncs it; on failure the file is cut back to its previous length so that
/// readers never meet half a line.
fn append_line(file: &std::fs::File, line: &[u8]) -> std::io::Result<()> {
    let before = file.metadata()?.len();
    let mut writer = file;
    let written = writer.write_all(line).and_then(|()| file.sync_data());
    if written.is_err() {
        // Best effort: the append error is the one worth reporting.
        let _ = file.set_len(before);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e164_numbers_are_a_plus_and_eight_to_fifteen_digits() {
        assert!(is_e164("+447700900112"));
        assert!(is_e164("+12345678"));
        assert!(is_e164("+123456789012345"));
        assert!(!is_e164("447700900112"));
        assert!(!is_e164("+1234567"));
        assert!(!is_e164("+1234567890123456"));
        assert!(!is_e164("+0447700900112"));
        assert!(!is_e164("+44 7700 900112"));
        assert!(!is_e164("+٤٤٧٧٠٠٩٠٠١١٢"));
    }

    #[test]
    fn forms_are_encoded_like_browsers_do() {
        assert_eq!(
            form_urlencoded(&[("To", "+4477"), ("Body", "a b&c=d/é")]),
            "To=%2B4477&Body=a+b%26c%3Dd%2F%C3%A9"
        );
    }

    #[test]
    fn base_urls_must_be_https_or_loopback_http() {
        let path = "/2010-04-01/Accounts/AC1/Messages.json";
        assert!(check_base_url("https://api.twilio.com", path).is_ok());
        assert!(check_base_url("http://127.0.0.1:8080", path).is_ok());
        assert!(check_base_url("http://[::1]:8080", path).is_ok());
        assert!(check_base_url("http://localhost:1", path).is_ok());
        assert!(check_base_url("http://api.twilio.com", path).is_err());
        assert!(check_base_url("ftp://api.twilio.com", path).is_err());
        assert!(check_base_url("not a url", path).is_err());
        assert!(check_base_url("https://u:p@api.twilio.com", path).is_err());
        assert!(check_base_url("https://api.twilio.com?x=1", path).is_err());
    }

    #[test]
    fn only_a_message_resource_counts_as_accepted() {
        let sms = Sms::new("+447700900112", "code");
        let created =
            br#"{"sid": "SM0123", "status": "queued", "num_segments": "1", "error_code": null}"#;
        assert_eq!(interpret_answer(201, created, &sms, "m").unwrap(), "SM0123");
        for body in [&b"<html>hello</html>"[..], b"{}", b""] {
            assert!(matches!(
                interpret_answer(200, body, &sms, "m"),
                Err(NotifyError::Unavailable(_))
            ));
        }
        assert!(matches!(
            interpret_answer(400, b"not json", &sms, "m"),
            Err(NotifyError::Invalid(m)) if m == "Twilio refused the message (HTTP 400)"
        ));
        assert!(matches!(
            interpret_answer(503, b"", &sms, "m"),
            Err(NotifyError::Unavailable(_))
        ));
    }

    #[test]
    fn a_debugged_sms_shows_neither_body_nor_number() {
        let shown = format!("{:?}", Sms::new("+447700900112", "your code is 123456"));
        assert!(!shown.contains("123456"), "{shown}");
        assert!(!shown.contains("447700900112"), "{shown}");
    }
}
