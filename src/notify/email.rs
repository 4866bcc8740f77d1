//! Email: the [`EmailSender`] trait, SMTP for production and an outbox of `.eml` files.
//!
//! Both backends build the same RFC 5322 message with lettre (plain text, UTF-8, a
//! `Message-ID` made of the message's UUID and the sender's domain), so what an operator reads
//! in the outbox is byte for byte what an SMTP server would have received.
//!
//! [`SmtpEmail`] uses lettre's pooled async SMTP transport configured from a URL:
//! `smtp://user:pass@host:587?tls=required` (STARTTLS), `smtps://user:pass@host` (implicit
//! TLS), or plain `smtp://host:port` (a local relay, tests). [`OutboxEmail`] writes one file per
//! message to `{dir}/email/`, named `{UTC timestamp}-{uuid}.eml` so a directory listing is in
//! sending order, and only ever shows complete, fsynced files.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart};
use lettre::{Address, AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};
use uuid::Uuid;

use super::{
    NotifyError, SEND_TIMEOUT, blocking_io, create_private_dir, mask_email, private_file_options,
    scrub, sync_dir,
};

/// The longest subject accepted, in characters.
pub const MAX_SUBJECT_CHARS: usize = 200;
/// The largest text body accepted, in bytes. Verification and reset mails are a few hundred.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;
/// The longest address SMTP can carry (RFC 5321's path limit minus the angle brackets).
pub const MAX_ADDRESS_LEN: usize = 254;

/// One email: plain text, or plain text with an HTML alternative.
#[derive(Clone, PartialEq, Eq)]
pub struct Email {
    /// The recipient's bare address (`user@example.com`, no display name).
    pub to: String,
    /// One line, at most [`MAX_SUBJECT_CHARS`] characters.
    pub subject: String,
    /// The body, at most [`MAX_TEXT_BYTES`] bytes.
    pub text: String,
    /// The same body as HTML, at most [`MAX_TEXT_BYTES`] bytes.
    pub html: Option<String>,
    /// The message's id (its `Message-ID` is `<{id}@{sender's domain}>`): the same id for
    /// every attempt at one notification, so a receiving system can tell a repeat. A fresh
    /// one per send when absent.
    pub id: Option<Uuid>,
}

// Written by hand so that a stray `?email` in a log line shows no link or token.
impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Email")
            .field("to", &mask_email(&self.to))
            .field(
                "subject",
                &format_args!("<{} chars>", self.subject.chars().count()),
            )
            .field("text", &format_args!("<{} bytes>", self.text.len()))
            .field(
                "html",
                &format_args!("<{} bytes>", self.html.as_ref().map_or(0, String::len)),
            )
            .finish()
    }
}

impl Email {
    pub fn new(to: impl Into<String>, subject: impl Into<String>, text: impl Into<String>) -> Self {
        Email {
            to: to.into(),
            subject: subject.into(),
            text: text.into(),
            html: None,
            id: None,
        }
    }

    /// Adds an HTML alternative.
    pub fn with_html(mut self, html: impl Into<String>) -> Self {
        self.html = Some(html.into());
        self
    }

    /// Gives the message a fixed id.
    pub fn with_id(mut self, id: Uuid) -> Self {
        self.id = Some(id);
        self
    }

    /// Checks recipient, subject and text; every sender calls this before any I/O.
    pub fn validate(&self) -> Result<(), NotifyError> {
        self.checked_recipient().map(|_| ())
    }

    /// Validates the message and returns the parsed recipient.
    fn checked_recipient(&self) -> Result<Address, NotifyError> {
        let to = parse_address(&self.to).map_err(|why| {
            NotifyError::Invalid(format!("recipient {}: {why}", mask_email(&self.to)))
        })?;
        if self.subject.trim().is_empty() {
            return Err(NotifyError::Invalid("the subject is empty".to_owned()));
        }
        let subject_chars = self.subject.chars().count();
        if subject_chars > MAX_SUBJECT_CHARS {
            return Err(NotifyError::Invalid(format!(
                "the subject has {subject_chars} characters, at most {MAX_SUBJECT_CHARS} are allowed"
            )));
        }
        // A line break in a subject is the classic header injection; refuse rather than encode.
        if self.subject.chars().any(char::is_control) {
            return Err(NotifyError::Invalid(
                "the subject contains control characters (line breaks are not allowed)".to_owned(),
            ));
        }
        if self.text.trim().is_empty() {
            return Err(NotifyError::Invalid("the text is empty".to_owned()));
        }
        if self.text.len() > MAX_TEXT_BYTES {
            return Err(NotifyError::Invalid(format!(
                "the text has {} bytes, at most {MAX_TEXT_BYTES} are allowed",
                self.text.len()
            )));
        }
        if let Some(html) = &self.html
            && (html.len() > MAX_TEXT_BYTES || html.contains('\0'))
        {
            return Err(NotifyError::Invalid(format!(
                "the HTML has {} bytes or NUL characters, at most {MAX_TEXT_BYTES} bytes are allowed",
                html.len()
            )));
        }
        if self.text.contains('\0') {
            return Err(NotifyError::Invalid(
                "the text contains NUL characters".to_owned(),
            ));
        }
        Ok(to)
    }
}

fn parse_address(address: &str) -> Result<Address, String> {
    if address.len() > MAX_ADDRESS_LEN {
        return Err(format!("longer than {MAX_ADDRESS_LEN} characters"));
    }
    address.parse::<Address>().map_err(|e| e.to_string())
}

/// The sender's mailbox, `no-reply@example.com` or `Hexmarket <no-reply@example.com>`.
fn parse_from(from: &str) -> Result<Mailbox, String> {
    let mailbox = from
        .parse::<Mailbox>()
        .map_err(|e| format!("the sender address is invalid: {e}"))?;
    if mailbox.email.to_string().len() > MAX_ADDRESS_LEN {
        return Err(format!(
            "the sender address is longer than {MAX_ADDRESS_LEN} characters"
        ));
    }
    Ok(mailbox)
}

/// The RFC 5322 message both backends send.
fn build_message(
    from: &Mailbox,
    to: Address,
    email: &Email,
    id: Uuid,
) -> Result<Message, NotifyError> {
    let builder = Message::builder()
        .from(from.clone())
        .to(Mailbox::new(None, to))
        .subject(email.subject.clone())
        .message_id(Some(format!("<{id}@{}>", from.email.domain())));
    let built = match &email.html {
        Some(html) => builder.multipart(MultiPart::alternative_plain_html(
            email.text.clone(),
            html.clone(),
        )),
        None => builder
            .header(ContentType::TEXT_PLAIN)
            .body(email.text.clone()),
    };
    built.map_err(|e| NotifyError::Invalid(format!("the message cannot be built: {e}")))
}

/// Something that sends emails.
#[async_trait]
pub trait EmailSender: Send + Sync + 'static {
    /// A short name for logs and health output: `"smtp"`, `"outbox"`.
    fn backend(&self) -> &'static str;

    /// Sends one message. `Ok` means the transport has taken responsibility for it (the SMTP
    /// server accepted it, or it is durably in the outbox), not that it was delivered.
    async fn send(&self, email: &Email) -> Result<(), NotifyError>;
}

/// The sender the application holds.
pub type SharedEmail = Arc<dyn EmailSender>;

// ---------------------------------------------------------------------------------------------
// SMTP
// ---------------------------------------------------------------------------------------------

/// Sends through an SMTP server (submission with STARTTLS or implicit TLS, or a plain relay).
pub struct SmtpEmail {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// `scheme://host[:port]` without credentials, for Debug.
    endpoint: String,
    timeout: Duration,
}

// The URL may carry a password: Debug shows the endpoint without it.
impl fmt::Debug for SmtpEmail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpEmail")
            .field("endpoint", &self.endpoint)
            .field("from", &self.from.to_string())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl SmtpEmail {
    /// A sender for the server at `url`, sending from `from`, each send bounded by
    /// [`SEND_TIMEOUT`]. Must be called inside a tokio runtime: lettre's connection pool starts
    /// its housekeeping task here. Errors ([`NotifyError::Unavailable`]) describe the
    /// misconfiguration without repeating the URL, which may hold a password.
    pub fn new(url: &str, from: &str) -> Result<Self, NotifyError> {
        Self::new_with_timeout(url, from, SEND_TIMEOUT)
    }

    /// Like [`SmtpEmail::new`] with another bound on each send (and on each SMTP command).
    pub fn new_with_timeout(url: &str, from: &str, timeout: Duration) -> Result<Self, NotifyError> {
        let misconfigured = |why: String| NotifyError::Unavailable(format!("SMTP: {why}"));
        // lettre would panic spawning its pool task outside a runtime.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(misconfigured(
                "the sender must be created inside a tokio runtime".to_owned(),
            ));
        }
        let from = parse_from(from).map_err(misconfigured)?;
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| misconfigured(format!("the URL is not usable: {e}")))?
            // Per connection attempt and per command. When lettre's own timeout fires it drops
            // the connection; the bound on the whole send (in `send`) is a safety net for a
            // server that answers every command slowly. Should that one cut a transaction
            // short, lettre still pools the connection, and its pre-use NOOP probe or the next
            // command finds it out of step and drops it: at worst one more failed send.
            .timeout(Some(timeout))
            .build();
        Ok(SmtpEmail {
            transport,
            from,
            endpoint: redacted_endpoint(url),
            timeout,
        })
    }
}

impl Drop for SmtpEmail {
    fn drop(&mut self) {
        // Dropping lettre's pool spawns a task to close its connections, and tokio panics when
        // that happens outside a runtime (a sender dropped after the runtime is gone, e.g. at
        // process exit). There, keep the pool alive instead: the process is ending anyway, and
        // the OS closes the sockets.
        if tokio::runtime::Handle::try_current().is_err() {
            std::mem::forget(self.transport.clone());
        }
    }
}

/// `smtp://user:secret@host:587?tls=required` → `smtp://host:587`.
fn redacted_endpoint(url: &str) -> String {
    match url.parse::<actix_web::http::Uri>() {
        Ok(uri) => {
            let scheme = uri.scheme_str().unwrap_or("smtp");
            let host = uri.host().unwrap_or("?");
            match uri.port_u16() {
                Some(port) => format!("{scheme}://{host}:{port}"),
                None => format!("{scheme}://{host}"),
            }
        }
        Err(_) => "<unparsable URL>".to_owned(),
    }
}

#[async_trait]
impl EmailSender for SmtpEmail {
    fn backend(&self) -> &'static str {
        "smtp"
    }

    async fn send(&self, email: &Email) -> Result<(), NotifyError> {
        let recipient = email.checked_recipient()?;
        let id = email.id.unwrap_or_else(Uuid::now_v7);
        let message = build_message(&self.from, recipient, email, id)?;
        let to = mask_email(&email.to);

        let result = match tokio::time::timeout(self.timeout, self.transport.send(message)).await {
            Err(_) => Err(NotifyError::Unavailable(format!(
                "the SMTP server did not take the message within {:?}",
                self.timeout
            ))),
            Ok(Err(err)) => Err(smtp_error(&err, email, &to)),
            Ok(Ok(response)) => Ok(response.code().to_string()),
        };
        match &result {
            Ok(code) => {
                tracing::info!(backend = "smtp", %id, %to, smtp_code = %code, "email accepted by the SMTP server");
            }
            Err(err) => tracing::warn!(backend = "smtp", %id, %to, error = %err, "email not sent"),
        }
        result.map(|_| ())
    }
}

/// Maps lettre's error: a permanent refusal of the mailbox (550, 551, 552, 553) is about this
/// message; anything else (no connection, TLS, timeouts, 4xx, authentication) is about the
/// channel and may pass later.
fn smtp_error(err: &lettre::transport::smtp::Error, email: &Email, masked_to: &str) -> NotifyError {
    // Servers echo the recipient ("<bob@example.com>: Recipient address rejected").
    let text = scrub(&err.to_string(), &email.to, masked_to);
    let mailbox_refused = err.is_permanent()
        && err
            .status()
            .is_some_and(|code| matches!(code.to_string().as_str(), "550" | "551" | "552" | "553"));
    if mailbox_refused {
        NotifyError::Invalid(format!("the SMTP server refused the recipient: {text}"))
    } else {
        NotifyError::Unavailable(format!("SMTP: {text}"))
    }
}

// ---------------------------------------------------------------------------------------------
// Outbox
// ---------------------------------------------------------------------------------------------

/// Writes each message as an RFC 5322 file `{dir}/email/{UTC timestamp}-{uuid}.eml`.
///
/// A file is written under a hidden temporary name, fsynced, then renamed, so the directory
/// only ever shows complete messages; any mail reader opens them. Files and directory are
/// private to the service user: they hold verification and reset links.
pub struct OutboxEmail {
    dir: PathBuf,
    from: Mailbox,
}

impl fmt::Debug for OutboxEmail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboxEmail")
            .field("dir", &self.dir)
            .field("from", &self.from.to_string())
            .finish()
    }
}

impl OutboxEmail {
    /// The subdirectory of the outbox directory that holds the messages.
    pub const SUBDIR: &'static str = "email";

    /// An outbox in `{dir}/email/` (created as needed), with `from` as the sender.
    pub fn new(dir: &Path, from: &str) -> std::io::Result<Self> {
        let from = parse_from(from)
            .map_err(|why| std::io::Error::new(std::io::ErrorKind::InvalidInput, why))?;
        let email_dir = dir.join(Self::SUBDIR);
        create_private_dir(&email_dir)?;
        sync_dir(dir)?;
        Ok(OutboxEmail {
            dir: email_dir,
            from,
        })
    }

    /// Where the `.eml` files are written.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[async_trait]
impl EmailSender for OutboxEmail {
    fn backend(&self) -> &'static str {
        "outbox"
    }

    async fn send(&self, email: &Email) -> Result<(), NotifyError> {
        let recipient = email.checked_recipient()?;
        let id = email.id.unwrap_or_else(Uuid::now_v7);
        let message = build_message(&self.from, recipient, email, id)?;
        let file_name = format!(
            "{}-{id}.eml",
            chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ")
        );
        let dir = self.dir.clone();
        let name = file_name.clone();
        blocking_io(move || write_durably(&dir, &name, &message.formatted()))
            .await
            .map_err(|e| {
                NotifyError::Unavailable(format!("email outbox {}: {e}", self.dir.display()))
            })?;
        tracing::info!(backend = "outbox", %id, to = %mask_email(&email.to), file = %file_name,
            "email written to the outbox");
        Ok(())
    }
}

/// Writes `dir/name` so that it appears complete or not at all, and survives a crash once this
/// returns.
fn write_durably(dir: &Path, name: &str, contents: &[u8]) -> std::io::Result<()> {
    // Hidden, so that `ls *.eml` and mail tools never pick up a file being written.
    let temp = dir.join(format!(".{name}.tmp"));
    let written = (|| {
        let mut file = private_file_options()
            .write(true)
            .create_new(true)
            .open(&temp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&temp, dir.join(name))?;
        sync_dir(dir)
    })();
    if written.is_err() {
        // Best effort: the write error is the one worth reporting.
        let _ = std::fs::remove_file(&temp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_with_line_breaks_are_refused() {
        let email = Email::new("a@example.com", "Hi\r\nBcc: evil@example.com", "text");
        assert!(matches!(email.validate(), Err(NotifyError::Invalid(_))));
    }

    #[test]
    fn a_debugged_email_shows_no_text() {
        let shown = format!(
            "{:?}",
            Email::new("alice@example.com", "Reset", "https://x/reset?token=s3cr3t")
        );
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(!shown.contains("alice@"), "{shown}");
    }

    #[test]
    fn endpoints_are_shown_without_credentials() {
        assert_eq!(
            redacted_endpoint("smtp://user:hunter2@mail.example.com:587?tls=required"),
            "smtp://mail.example.com:587"
        );
        assert_eq!(
            redacted_endpoint("smtps://mail.example.com"),
            "smtps://mail.example.com"
        );
    }
}
