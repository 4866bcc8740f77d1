//! Outgoing notifications: SMS (one-time codes) and email (verification and reset links).
//!
//! Each channel is a trait with a production transport and an outbox:
//!
//! | channel | production                               | embedded default                          |
//! |---------|------------------------------------------|-------------------------------------------|
//! | SMS     | [`sms::TwilioSms`] (Twilio Messages API) | [`sms::OutboxSms`]: `{dir}/sms.jsonl`     |
//! | email   | [`email::SmtpEmail`] (SMTP, lettre)      | [`email::OutboxEmail`]: `{dir}/email/*.eml` |
//!
//! The outboxes let an operator (or a developer) read what would have been sent when no
//! provider is configured; they are durable (fsynced before `send` returns) so a code that was
//! "sent" can always be found again.
//!
//! Messages carry secrets (OTP codes, reset tokens), so nothing here ever logs a message body or
//! a credential: logs name the backend, a message id and the recipient masked by
//! [`mask_phone`] / [`mask_email`]. Every message is validated before any I/O, and every remote
//! call is bounded by [`SEND_TIMEOUT`] unless a sender is given another one.

pub mod email;
pub mod sms;

use std::time::Duration;

pub use email::{Email, EmailSender, OutboxEmail, SharedEmail, SmtpEmail};
pub use sms::{OutboxSms, SharedSms, Sms, SmsSender, TwilioSms};

/// How long a remote transport (Twilio, SMTP) may take to accept one message. Callers are
/// usually inside an HTTP request, so a provider outage must turn into an error quickly rather
/// than pile up waiting requests.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a message was not sent.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The transport cannot take the message now (unreachable, timed out, 5xx, rate limited,
    /// misconfigured credentials); the same message may go through later.
    #[error("notification transport unavailable: {0}")]
    Unavailable(String),
    /// The message itself is unacceptable (bad recipient, too long, refused by the provider
    /// for this message); sending it again will not help.
    #[error("invalid message: {0}")]
    Invalid(String),
}

/// A phone number as it may appear in logs: country/area prefix and the last two digits,
/// e.g. `+447700900112` → `+4477****12`. Short or odd inputs are masked more heavily, since
/// they have not necessarily been validated as phone numbers.
pub fn mask_phone(number: &str) -> String {
    let chars: Vec<char> = number.chars().collect();
    match chars.len() {
        n if n >= 9 => {
            let head: String = chars[..5].iter().collect();
            let tail: String = chars[n - 2..].iter().collect();
            format!("{head}****{tail}")
        }
        n if n >= 4 => format!("{}****", chars[0]),
        _ => "****".to_owned(),
    }
}

/// An email address as it may appear in logs: the first character of the local part and the
/// domain, e.g. `alice@example.com` → `a***@example.com`. The domain stays readable because
/// delivery problems are usually per domain.
pub fn mask_email(address: &str) -> String {
    match address.rsplit_once('@') {
        Some((local, domain)) => match local.chars().next() {
            Some(first) => format!("{first}***@{domain}"),
            None => format!("***@{domain}"),
        },
        None => "***".to_owned(),
    }
}

/// Replaces every occurrence of `raw` in a provider's error text by `masked`: providers like to
/// echo the recipient back ("The 'To' number +44… is not valid"), and these texts end up in
/// errors that callers log.
fn scrub(text: &str, raw: &str, masked: &str) -> String {
    if raw.is_empty() {
        text.to_owned()
    } else {
        text.replace(raw, masked)
    }
}

/// Runs blocking file I/O on tokio's blocking pool, so fsyncs never stall an executor thread
/// (actix workers are single-threaded runtimes: a stalled one stalls every request on it).
async fn blocking_io<T, F>(work: F) -> std::io::Result<T>
where
    F: FnOnce() -> std::io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| std::io::Error::other(format!("outbox writer task failed: {e}")))?
}

/// Creates `dir` (and parents) if missing; on unix a new directory is private to the service
/// user, since outboxes hold one-time codes and reset links.
fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Options for opening a new outbox file readable by the service user only.
fn private_file_options() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options
}

/// Makes a directory entry (a created or renamed file) durable. On unix that takes an fsync of
/// the directory itself; elsewhere there is no portable equivalent and it is skipped.
fn sync_dir(dir: &std::path::Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_keep_their_prefix_and_last_two_digits() {
        assert_eq!(mask_phone("+447700900112"), "+4477****12");
        assert_eq!(mask_phone("+14155550100"), "+1415****00");
        assert_eq!(mask_phone("12345"), "1****");
        assert_eq!(mask_phone("+1"), "****");
    }

    #[test]
    fn email_addresses_keep_their_first_letter_and_domain() {
        assert_eq!(mask_email("alice@example.com"), "a***@example.com");
        assert_eq!(mask_email("@example.com"), "***@example.com");
        assert_eq!(mask_email("not-an-address"), "***");
    }

    #[test]
    fn scrubbing_replaces_the_raw_recipient() {
        assert_eq!(
            scrub(
                "The 'To' number +447700900112 is bad",
                "+447700900112",
                "+4477****12"
            ),
            "The 'To' number +4477****12 is bad"
        );
        assert_eq!(scrub("text", "", "x"), "text");
    }
}
