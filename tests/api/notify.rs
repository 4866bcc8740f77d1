//! Outgoing SMS and email. Twilio is exercised against [`FakeTwilio`], a loopback HTTP server
//! that answers like Twilio's Messages API; SMTP against [`SmtpSink`], a loopback server that
//! speaks real (plain) SMTP; the outboxes on a temporary directory. Both fakes are `pub` so
//! that other tests (sign-up, password reset) can reuse them as `crate::notify::FakeTwilio`
//! and `crate::notify::SmtpSink` and read the codes and links that were sent.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hexmarket::notify::{
    Email, EmailSender, NotifyError, OutboxEmail, OutboxSms, Sms, SmsSender, SmtpEmail, TwilioSms,
};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

/// Longest any test may take; only reached when something hangs.
const PATIENCE: Duration = Duration::from_secs(30);
/// A failure that needs no waiting (refused connection, validation) must be this quick.
const PROMPTLY: Duration = Duration::from_secs(3);

const PHONE: &str = "+447700900112";
const MASKED_PHONE: &str = "+4477****12";
const SENDER_NUMBER: &str = "+15005550006";
const SENDER_EMAIL: &str = "Hexmarket <no-reply@hexmarket.test>";

async fn within<T>(test: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, test)
        .await
        .expect("the test did not finish in time")
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A server that accepts connections and never says a word.
struct SilentServer {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl SilentServer {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        SilentServer { port, task }
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// FakeTwilio
// ---------------------------------------------------------------------------------------------

/// One message as the fake Twilio received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedSms {
    pub account_sid: String,
    pub to: String,
    pub from: String,
    pub body: String,
    pub content_type: String,
}

/// A loopback stand-in for Twilio's Messages API: `POST /2010-04-01/Accounts/{sid}/Messages.json`
/// with HTTP Basic `sid:token`, answering `201` and a message resource like Twilio's. Requests
/// with other credentials get Twilio's `401` (error 20003) and are not recorded.
pub struct FakeTwilio {
    pub base_url: String,
    pub account_sid: String,
    pub auth_token: String,
    state: Arc<FakeTwilioState>,
    handle: actix_web::dev::ServerHandle,
}

struct FakeTwilioState {
    account_sid: String,
    auth_token: String,
    received: Mutex<Vec<ReceivedSms>>,
    requests: AtomicUsize,
    /// 0: behave; otherwise the HTTP status to fail every authenticated request with.
    fail_with: AtomicU16,
}

impl FakeTwilio {
    pub const ACCOUNT_SID: &'static str = "AC0123456789abcdef0123456789abcdef";
    pub const AUTH_TOKEN: &'static str = "fake-twilio-auth-token-0123456789";

    /// Starts the fake on a free loopback port, with [`Self::ACCOUNT_SID`]/[`Self::AUTH_TOKEN`].
    /// Needs an actix system (`#[actix_web::test]`).
    pub async fn start() -> Self {
        let state = Arc::new(FakeTwilioState {
            account_sid: Self::ACCOUNT_SID.to_owned(),
            auth_token: Self::AUTH_TOKEN.to_owned(),
            received: Mutex::new(Vec::new()),
            requests: AtomicUsize::new(0),
            fail_with: AtomicU16::new(0),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let data = web::Data::from(Arc::clone(&state));
        let server = HttpServer::new(move || {
            App::new().app_data(data.clone()).route(
                "/2010-04-01/Accounts/{sid}/Messages.json",
                web::post().to(fake_create_message),
            )
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        FakeTwilio {
            base_url: format!("http://127.0.0.1:{port}"),
            account_sid: Self::ACCOUNT_SID.to_owned(),
            auth_token: Self::AUTH_TOKEN.to_owned(),
            state,
            handle,
        }
    }

    /// Every message accepted so far, oldest first.
    pub fn received(&self) -> Vec<ReceivedSms> {
        self.state.received.lock().clone()
    }

    /// The latest message accepted for `to` (to read a one-time code in flow tests).
    pub fn last_to(&self, to: &str) -> Option<ReceivedSms> {
        self.received().into_iter().rev().find(|sms| sms.to == to)
    }

    /// How many requests arrived, accepted or not.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// From now on, answer authenticated requests with `status` (400, 429, 500, ...) and the
    /// matching Twilio error document; `0` restores normal service.
    pub fn fail_with(&self, status: u16) {
        self.state.fail_with.store(status, Ordering::SeqCst);
    }

    /// A sender with the right credentials, sending from `from`.
    pub fn sender(&self, from: &str) -> TwilioSms {
        TwilioSms::try_new(&self.base_url, &self.account_sid, &self.auth_token, from).unwrap()
    }
}

impl Drop for FakeTwilio {
    fn drop(&mut self) {
        // The stop command is sent right away; nobody needs to wait for the workers to finish.
        drop(self.handle.stop(false));
    }
}

async fn fake_create_message(
    request: HttpRequest,
    sid: web::Path<String>,
    body: web::Bytes,
    state: web::Data<FakeTwilioState>,
) -> HttpResponse {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let authorized = request
        .headers()
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Basic "))
        .and_then(|encoded| STANDARD.decode(encoded).ok())
        .is_some_and(|decoded| {
            decoded == format!("{}:{}", state.account_sid, state.auth_token).as_bytes()
        });
    if !authorized {
        return twilio_error(401, 20003, "Authenticate");
    }
    if *sid != state.account_sid {
        return twilio_error(
            404,
            20404,
            &format!(
                "The requested resource /2010-04-01/Accounts/{sid}/Messages.json was not found"
            ),
        );
    }
    let form = parse_form(&body);
    let field = |name: &str| form.get(name).cloned().unwrap_or_default();
    let (to, from, text) = (field("To"), field("From"), field("Body"));
    match state.fail_with.load(Ordering::SeqCst) {
        0 => {}
        400 => {
            return twilio_error(
                400,
                21211,
                &format!("The 'To' number {to} is not a valid phone number."),
            );
        }
        429 => return twilio_error(429, 20429, "Too Many Requests"),
        status => return twilio_error(status, 20500, "An internal server error has occurred"),
    }
    if to.is_empty() {
        return twilio_error(400, 21604, "A 'To' phone number is required.");
    }
    if text.is_empty() {
        return twilio_error(400, 21602, "Message body is required.");
    }
    let content_type = request
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    state.received.lock().push(ReceivedSms {
        account_sid: sid.clone(),
        to: to.clone(),
        from: from.clone(),
        body: text.clone(),
        content_type,
    });
    HttpResponse::Created().json(message_resource(&sid, &to, &from, &text))
}

/// A message resource as Twilio returns it on creation.
fn message_resource(account_sid: &str, to: &str, from: &str, body: &str) -> Value {
    let sid = format!("SM{}", uuid::Uuid::new_v4().simple());
    let now = chrono::Utc::now()
        .format("%a, %d %b %Y %H:%M:%S +0000")
        .to_string();
    json!({
        "account_sid": account_sid,
        "api_version": "2010-04-01",
        "body": body,
        "date_created": now,
        "date_sent": null,
        "date_updated": now,
        "direction": "outbound-api",
        "error_code": null,
        "error_message": null,
        "from": from,
        "messaging_service_sid": null,
        "num_media": "0",
        "num_segments": "1",
        "price": null,
        "price_unit": "USD",
        "sid": sid,
        "status": "queued",
        "subresource_uris": {
            "media": format!("/2010-04-01/Accounts/{account_sid}/Messages/{sid}/Media.json")
        },
        "to": to,
        "uri": format!("/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json"),
    })
}

fn twilio_error(status: u16, code: u32, message: &str) -> HttpResponse {
    let status = actix_web::http::StatusCode::from_u16(status).unwrap();
    HttpResponse::build(status).json(json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status.as_u16(),
    }))
}

/// Decodes `application/x-www-form-urlencoded`.
fn parse_form(body: &[u8]) -> HashMap<String, String> {
    fn decode(raw: &[u8]) -> String {
        let mut out = Vec::with_capacity(raw.len());
        let mut i = 0;
        while i < raw.len() {
            match raw[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < raw.len() => {
                    let hex = std::str::from_utf8(&raw[i + 1..i + 3]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 2;
                }
                byte => out.push(byte),
            }
            i += 1;
        }
        String::from_utf8(out).unwrap()
    }
    body.split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let mut parts = pair.splitn(2, |&b| b == b'=');
            let key = decode(parts.next().unwrap_or_default());
            let value = decode(parts.next().unwrap_or_default());
            (key, value)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// SmtpSink
// ---------------------------------------------------------------------------------------------

/// One message as the SMTP sink received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMail {
    /// The envelope sender (`MAIL FROM`).
    pub mail_from: String,
    /// The envelope recipients (`RCPT TO`).
    pub rcpt_to: Vec<String>,
    /// The message as sent after `DATA`, dot-unstuffed, CRLF line endings.
    pub data: String,
}

impl ReceivedMail {
    /// The value of the first header called `name` (case-insensitive), unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        parse_headers(&self.data)
            .into_iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    }

    /// Everything after the blank line that ends the headers, with `\n` line endings.
    pub fn body(&self) -> String {
        message_body(&self.data)
    }
}

/// A loopback SMTP server (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT; no TLS, no AUTH) that
/// records every message it accepts.
pub struct SmtpSink {
    /// `smtp://127.0.0.1:{port}`, ready for `SmtpEmail::new`.
    pub url: String,
    state: Arc<SinkState>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct SinkState {
    received: Mutex<Vec<ReceivedMail>>,
    connections: AtomicUsize,
    /// When set, the reply to every `RCPT TO` (e.g. `550 5.1.1 no such user`).
    rcpt_reply: Mutex<Option<String>>,
}

impl SmtpSink {
    /// Starts the sink on a free loopback port (any tokio runtime).
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(SinkState::default());
        let accepting = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                accepting.connections.fetch_add(1, Ordering::SeqCst);
                let state = Arc::clone(&accepting);
                tokio::spawn(async move {
                    // A client hanging up mid-conversation is its business.
                    let _ = serve_smtp(stream, &state).await;
                });
            }
        });
        SmtpSink {
            url: format!("smtp://127.0.0.1:{port}"),
            state,
            task,
        }
    }

    /// Every message accepted so far, oldest first.
    pub fn received(&self) -> Vec<ReceivedMail> {
        self.state.received.lock().clone()
    }

    /// The latest message for `address` (to read a link in flow tests).
    pub fn last_to(&self, address: &str) -> Option<ReceivedMail> {
        self.received()
            .into_iter()
            .rev()
            .find(|mail| mail.rcpt_to.iter().any(|rcpt| rcpt == address))
    }

    /// How many connections were accepted.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// From now on, answer `RCPT TO` with `reply` (a full reply line such as
    /// `550 5.1.1 <x@y>: Recipient address rejected`).
    pub fn reject_recipients_with(&self, reply: &str) {
        *self.state.rcpt_reply.lock() = Some(reply.to_owned());
    }

    /// From now on, accept every recipient again.
    pub fn accept_recipients(&self) {
        *self.state.rcpt_reply.lock() = None;
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The angle-bracketed path of `MAIL FROM:<a@b> SIZE=1` / `RCPT TO:<a@b>`.
fn smtp_path(argument: &str) -> String {
    match (argument.find('<'), argument.find('>')) {
        (Some(start), Some(end)) if start < end => argument[start + 1..end].to_owned(),
        _ => argument.trim().to_owned(),
    }
}

async fn serve_smtp(stream: TcpStream, state: &SinkState) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    write.write_all(b"220 sink.test ESMTP ready\r\n").await?;
    let mut mail_from: Option<String> = None;
    let mut rcpt_to: Vec<String> = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        let command = String::from_utf8_lossy(&line)
            .trim_end_matches(['\r', '\n'])
            .to_owned();
        let verb = command
            .split([' ', ':'])
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let reply = match verb.as_str() {
            "EHLO" => {
                "250-sink.test greets you\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 10485760"
                    .to_owned()
            }
            "HELO" => "250 sink.test".to_owned(),
            "MAIL" => {
                mail_from = Some(smtp_path(&command[command.find(':').unwrap_or(4) + 1..]));
                rcpt_to.clear();
                "250 2.1.0 Ok".to_owned()
            }
            "RCPT" if mail_from.is_none() => "503 5.5.1 MAIL first".to_owned(),
            "RCPT" => match state.rcpt_reply.lock().clone() {
                Some(rejection) => rejection,
                None => {
                    rcpt_to.push(smtp_path(&command[command.find(':').unwrap_or(4) + 1..]));
                    "250 2.1.5 Ok".to_owned()
                }
            },
            "DATA" if rcpt_to.is_empty() => "503 5.5.1 RCPT first".to_owned(),
            "DATA" => {
                write
                    .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                let mut data = Vec::new();
                loop {
                    line.clear();
                    if reader.read_until(b'\n', &mut line).await? == 0 {
                        return Ok(());
                    }
                    if line == b".\r\n" || line == b".\n" {
                        break;
                    }
                    // Dot-unstuffing (RFC 5321 4.5.2): a leading dot was doubled by the client.
                    let content = line.strip_prefix(b".").unwrap_or(&line);
                    data.extend_from_slice(content);
                }
                state.received.lock().push(ReceivedMail {
                    mail_from: mail_from.take().unwrap_or_default(),
                    rcpt_to: std::mem::take(&mut rcpt_to),
                    data: String::from_utf8_lossy(&data).into_owned(),
                });
                "250 2.0.0 Ok: queued".to_owned()
            }
            "RSET" => {
                mail_from = None;
                rcpt_to.clear();
                "250 2.0.0 Ok".to_owned()
            }
            "NOOP" => "250 2.0.0 Ok".to_owned(),
            "QUIT" => {
                write.write_all(b"221 2.0.0 Bye\r\n").await?;
                return Ok(());
            }
            _ => "502 5.5.2 Command not recognized".to_owned(),
        };
        write.write_all(format!("{reply}\r\n").as_bytes()).await?;
    }
}

/// The headers of an RFC 5322 message, folded lines joined.
fn parse_headers(message: &str) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in message.split("\r\n").flat_map(|l| l.split('\n')) {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = headers.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    headers
}

fn message_body(message: &str) -> String {
    let normalized = message.replace("\r\n", "\n");
    normalized
        .split_once("\n\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Twilio
// ---------------------------------------------------------------------------------------------

#[actix_web::test]
async fn twilio_sender_posts_to_from_and_body_with_basic_auth() {
    within(async {
        let twilio = FakeTwilio::start().await;
        let sender = twilio.sender(SENDER_NUMBER);
        let body = "Your hexmarket code is 482913.\nDon't share it: ça & + = /";

        sender.send(&Sms::new(PHONE, body)).await.unwrap();

        assert_eq!(
            twilio.received(),
            vec![ReceivedSms {
                account_sid: FakeTwilio::ACCOUNT_SID.to_owned(),
                to: PHONE.to_owned(),
                from: SENDER_NUMBER.to_owned(),
                body: body.to_owned(),
                content_type: "application/x-www-form-urlencoded".to_owned(),
            }]
        );
        assert_eq!(sender.backend(), "twilio");
    })
    .await;
}

#[actix_web::test]
async fn twilio_sender_accepts_a_body_of_1600_multibyte_characters() {
    within(async {
        let twilio = FakeTwilio::start().await;
        let body = "é".repeat(1600);
        twilio
            .sender(SENDER_NUMBER)
            .send(&Sms::new(PHONE, body.clone()))
            .await
            .unwrap();
        assert_eq!(twilio.last_to(PHONE).unwrap().body, body);
    })
    .await;
}

#[actix_web::test]
async fn twilio_sender_with_a_wrong_token_is_refused_and_nothing_is_sent() {
    within(async {
        let twilio = FakeTwilio::start().await;
        let sender = TwilioSms::try_new(
            &twilio.base_url,
            &twilio.account_sid,
            "not-the-token",
            SENDER_NUMBER,
        )
        .unwrap();

        let err = sender.send(&Sms::new(PHONE, "code 1")).await.unwrap_err();

        // Bad credentials break every message: an outage of the channel, not a bad message.
        assert!(
            matches!(&err, NotifyError::Unavailable(m) if m.contains("20003")),
            "{err}"
        );
        assert_eq!(twilio.requests(), 1);
        assert!(twilio.received().is_empty());
    })
    .await;
}

#[actix_web::test]
async fn twilio_server_errors_are_unavailable() {
    within(async {
        let twilio = FakeTwilio::start().await;
        twilio.fail_with(500);
        let err = twilio
            .sender(SENDER_NUMBER)
            .send(&Sms::new(PHONE, "code 1"))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, NotifyError::Unavailable(m) if m.contains("HTTP 500")),
            "{err}"
        );
    })
    .await;
}

#[actix_web::test]
async fn twilio_rate_limiting_is_unavailable() {
    within(async {
        let twilio = FakeTwilio::start().await;
        twilio.fail_with(429);
        let err = twilio
            .sender(SENDER_NUMBER)
            .send(&Sms::new(PHONE, "code 1"))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, NotifyError::Unavailable(m) if m.contains("20429")),
            "{err}"
        );
    })
    .await;
}

#[actix_web::test]
async fn twilio_client_errors_are_invalid_with_twilios_code_and_a_masked_number() {
    within(async {
        let twilio = FakeTwilio::start().await;
        twilio.fail_with(400);
        let err = twilio
            .sender(SENDER_NUMBER)
            .send(&Sms::new(PHONE, "code 1"))
            .await
            .unwrap_err();
        let NotifyError::Invalid(message) = &err else {
            panic!("expected Invalid, got {err:?}");
        };
        assert!(message.contains("21211"), "{message}");
        assert!(message.contains(MASKED_PHONE), "{message}");
        assert!(!message.contains(PHONE), "{message}");
    })
    .await;
}

#[actix_web::test]
async fn twilio_on_a_closed_port_is_unavailable_at_once() {
    within(async {
        let sender = TwilioSms::try_new(
            &format!("http://127.0.0.1:{}", closed_port()),
            FakeTwilio::ACCOUNT_SID,
            FakeTwilio::AUTH_TOKEN,
            SENDER_NUMBER,
        )
        .unwrap();
        let started = Instant::now();
        let err = sender.send(&Sms::new(PHONE, "code 1")).await.unwrap_err();
        assert!(matches!(err, NotifyError::Unavailable(_)), "{err}");
        assert!(started.elapsed() < PROMPTLY, "took {:?}", started.elapsed());
    })
    .await;
}

#[actix_web::test]
async fn twilio_that_never_answers_is_unavailable_after_the_timeout() {
    within(async {
        let silent = SilentServer::start().await;
        let sender = TwilioSms::try_new(
            &format!("http://127.0.0.1:{}", silent.port),
            FakeTwilio::ACCOUNT_SID,
            FakeTwilio::AUTH_TOKEN,
            SENDER_NUMBER,
        )
        .unwrap()
        .with_timeout(Duration::from_millis(300));
        let started = Instant::now();
        let err = sender.send(&Sms::new(PHONE, "code 1")).await.unwrap_err();
        assert!(
            matches!(&err, NotifyError::Unavailable(m) if m.contains("did not answer")),
            "{err}"
        );
        assert!(started.elapsed() < PROMPTLY, "took {:?}", started.elapsed());
    })
    .await;
}

#[actix_web::test]
async fn invalid_numbers_and_bodies_are_rejected_without_any_request() {
    within(async {
        let twilio = FakeTwilio::start().await;
        let sender = twilio.sender(SENDER_NUMBER);
        let too_long = "x".repeat(1601);
        let refused = [
            ("447700900112", "code"),      // no plus
            ("+4477009", "code"),          // 7 digits
            ("+4477009001121234", "code"), // 16 digits
            ("+44 7700 900112", "code"),   // spaces
            ("+04477009001", "code"),      // no country code starts with 0
            ("", "code"),
            (PHONE, ""),
            (PHONE, "   "),
            (PHONE, too_long.as_str()),
        ];
        for (to, body) in refused {
            let err = sender.send(&Sms::new(to, body)).await.unwrap_err();
            assert!(matches!(err, NotifyError::Invalid(_)), "{to:?}: {err}");
        }
        assert_eq!(twilio.requests(), 0);
    })
    .await;
}

#[actix_web::test]
async fn a_misconfigured_twilio_sender_fails_its_sends_instead_of_panicking() {
    within(async {
        for (base_url, sid, token, from) in [
            ("not a url", FakeTwilio::ACCOUNT_SID, "t", SENDER_NUMBER),
            (
                "http://api.twilio.com",
                FakeTwilio::ACCOUNT_SID,
                "t",
                SENDER_NUMBER,
            ),
            ("https://api.twilio.com", "AC1/../x", "t", SENDER_NUMBER),
            (
                "https://api.twilio.com",
                FakeTwilio::ACCOUNT_SID,
                "",
                SENDER_NUMBER,
            ),
            (
                "https://api.twilio.com",
                FakeTwilio::ACCOUNT_SID,
                "t",
                "not a sender id",
            ),
        ] {
            assert!(
                TwilioSms::try_new(base_url, sid, token, from).is_err(),
                "{base_url} {sid}"
            );
            let err = TwilioSms::new(base_url, sid, token, from)
                .send(&Sms::new(PHONE, "code 1"))
                .await
                .unwrap_err();
            assert!(matches!(err, NotifyError::Unavailable(_)), "{err}");
        }
    })
    .await;
}

#[actix_web::test]
async fn the_twilio_auth_token_does_not_appear_in_debug_output() {
    let sender = TwilioSms::try_new(
        "https://api.twilio.com",
        FakeTwilio::ACCOUNT_SID,
        FakeTwilio::AUTH_TOKEN,
        SENDER_NUMBER,
    )
    .unwrap();
    let shown = format!("{sender:?}");
    let basic = STANDARD.encode(format!(
        "{}:{}",
        FakeTwilio::ACCOUNT_SID,
        FakeTwilio::AUTH_TOKEN
    ));
    assert!(!shown.contains(FakeTwilio::AUTH_TOKEN), "{shown}");
    assert!(!shown.contains(&basic), "{shown}");
}

// ---------------------------------------------------------------------------------------------
// SMTP
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn smtp_sender_delivers_headers_and_body_to_the_server() {
    within(async {
        let sink = SmtpSink::start().await;
        let sender = SmtpEmail::new(&sink.url, SENDER_EMAIL).unwrap();
        // The second line starts with a dot: it is stuffed on the wire and must arrive intact.
        let text = "Confirm your address:\n.https://hexmarket.test/verify?token=abc123\n\nThanks";
        let email = Email::new("alice@example.com", "Confirm your email address", text);

        sender.send(&email).await.unwrap();

        let mails = sink.received();
        assert_eq!(mails.len(), 1);
        let mail = &mails[0];
        assert_eq!(mail.mail_from, "no-reply@hexmarket.test");
        assert_eq!(mail.rcpt_to, vec!["alice@example.com".to_owned()]);
        assert_eq!(
            mail.header("From").as_deref(),
            Some("Hexmarket <no-reply@hexmarket.test>")
        );
        assert_eq!(mail.header("To").as_deref(), Some("alice@example.com"));
        assert_eq!(
            mail.header("Subject").as_deref(),
            Some("Confirm your email address")
        );
        let message_id = mail.header("Message-ID").unwrap();
        assert!(message_id.ends_with("@hexmarket.test>"), "{message_id}");
        assert!(mail.header("Date").is_some());
        assert_eq!(mail.body().trim_end(), text);
        assert_eq!(sender.backend(), "smtp");
    })
    .await;
}

#[tokio::test]
async fn smtp_sender_reuses_its_connection_for_several_messages() {
    within(async {
        let sink = SmtpSink::start().await;
        let sender = SmtpEmail::new(&sink.url, SENDER_EMAIL).unwrap();
        for n in 0..3 {
            let email = Email::new(
                format!("user{n}@example.com"),
                "Hello",
                format!("message {n}"),
            );
            sender.send(&email).await.unwrap();
        }
        let mails = sink.received();
        assert_eq!(mails.len(), 3);
        assert_eq!(
            sink.last_to("user2@example.com").unwrap().body().trim_end(),
            "message 2"
        );
        // Pooled: lettre parks the connection after each message; at most one per message.
        assert!(sink.connections() <= 3);
    })
    .await;
}

#[tokio::test]
async fn smtp_on_a_closed_port_is_unavailable_at_once() {
    within(async {
        let sender =
            SmtpEmail::new(&format!("smtp://127.0.0.1:{}", closed_port()), SENDER_EMAIL).unwrap();
        let started = Instant::now();
        let err = sender
            .send(&Email::new("alice@example.com", "Hi", "text"))
            .await
            .unwrap_err();
        assert!(matches!(err, NotifyError::Unavailable(_)), "{err}");
        assert!(started.elapsed() < PROMPTLY, "took {:?}", started.elapsed());
    })
    .await;
}

#[tokio::test]
async fn an_smtp_server_that_never_greets_is_unavailable_after_the_timeout() {
    within(async {
        let silent = SilentServer::start().await;
        let sender = SmtpEmail::new_with_timeout(
            &format!("smtp://127.0.0.1:{}", silent.port),
            SENDER_EMAIL,
            Duration::from_millis(300),
        )
        .unwrap();
        let started = Instant::now();
        let err = sender
            .send(&Email::new("alice@example.com", "Hi", "text"))
            .await
            .unwrap_err();
        assert!(matches!(err, NotifyError::Unavailable(_)), "{err}");
        assert!(started.elapsed() < PROMPTLY, "took {:?}", started.elapsed());
    })
    .await;
}

#[tokio::test]
async fn a_recipient_refused_for_good_is_invalid_and_a_deferral_is_unavailable() {
    within(async {
        let sink = SmtpSink::start().await;
        let sender = SmtpEmail::new(&sink.url, SENDER_EMAIL).unwrap();
        let email = Email::new("bob@example.com", "Hi", "text");

        sink.reject_recipients_with("550 5.1.1 <bob@example.com>: Recipient address rejected");
        let err = sender.send(&email).await.unwrap_err();
        let NotifyError::Invalid(message) = &err else {
            panic!("expected Invalid, got {err:?}");
        };
        assert!(message.contains("550"), "{message}");
        assert!(!message.contains("bob@example.com"), "{message}");

        sink.reject_recipients_with("451 4.3.0 Try again later");
        let err = sender.send(&email).await.unwrap_err();
        assert!(matches!(err, NotifyError::Unavailable(_)), "{err}");
        assert!(sink.received().is_empty());
    })
    .await;
}

#[tokio::test]
async fn invalid_emails_are_rejected_without_connecting() {
    within(async {
        let sink = SmtpSink::start().await;
        let sender = SmtpEmail::new(&sink.url, SENDER_EMAIL).unwrap();
        let long_local = format!("{}@example.com", "a".repeat(250));
        let refused = [
            Email::new("not-an-address", "Hi", "text"),
            Email::new("", "Hi", "text"),
            Email::new("Alice <alice@example.com>", "Hi", "text"),
            Email::new(long_local, "Hi", "text"),
            Email::new("alice@example.com", "", "text"),
            Email::new("alice@example.com", "Hi\r\nBcc: eve@example.com", "text"),
            Email::new("alice@example.com", "s".repeat(201), "text"),
            Email::new("alice@example.com", "Hi", ""),
            Email::new("alice@example.com", "Hi", "x".repeat(64 * 1024 + 1)),
        ];
        for email in refused {
            let err = sender.send(&email).await.unwrap_err();
            assert!(matches!(err, NotifyError::Invalid(_)), "{email:?}: {err}");
        }
        assert_eq!(sink.connections(), 0);
    })
    .await;
}

#[tokio::test]
async fn a_bad_smtp_configuration_is_refused_without_repeating_the_password() {
    for url in [
        "smtpx://user:hunter2@mail.test",
        "not a url",
        "smtp://user:hunter2@",
    ] {
        let err = SmtpEmail::new(url, SENDER_EMAIL).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
    assert!(SmtpEmail::new("smtp://127.0.0.1:2525", "not an address").is_err());
    let sender = SmtpEmail::new(
        "smtp://user:hunter2@127.0.0.1:2525?tls=required",
        SENDER_EMAIL,
    )
    .unwrap();
    let shown = format!("{sender:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
}

#[test]
fn an_smtp_sender_outside_a_runtime_is_an_error_not_a_panic() {
    let err = SmtpEmail::new("smtp://127.0.0.1:2525", SENDER_EMAIL).unwrap_err();
    assert!(matches!(err, NotifyError::Unavailable(_)), "{err}");
}

#[test]
fn an_smtp_sender_outliving_its_runtime_drops_without_a_panic() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sender = runtime.block_on(async { SmtpEmail::new("smtp://127.0.0.1:2525", SENDER_EMAIL) });
    drop(runtime);
    drop(sender.unwrap());
}

// ---------------------------------------------------------------------------------------------
// Outboxes
// ---------------------------------------------------------------------------------------------

fn outbox_lines(outbox: &OutboxSms) -> Vec<Value> {
    std::fs::read_to_string(outbox.path())
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[tokio::test]
async fn the_sms_outbox_appends_one_json_line_per_message() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let outbox = OutboxSms::new(dir.path()).unwrap();
        assert_eq!(outbox.path(), dir.path().join("sms.jsonl"));

        outbox.send(&Sms::new(PHONE, "code 111111")).await.unwrap();
        outbox
            .send(&Sms::new("+14155550100", "code 222222\nline two"))
            .await
            .unwrap();

        let lines = outbox_lines(&outbox);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["to"], PHONE);
        assert_eq!(lines[0]["body"], "code 111111");
        assert_eq!(lines[1]["to"], "+14155550100");
        assert_eq!(lines[1]["body"], "code 222222\nline two");
        for line in &lines {
            uuid::Uuid::parse_str(line["id"].as_str().unwrap()).unwrap();
            chrono::DateTime::parse_from_rfc3339(line["created_at"].as_str().unwrap()).unwrap();
            assert_eq!(line.as_object().unwrap().len(), 4, "{line}");
        }
        assert_eq!(outbox.backend(), "outbox");

        // A second outbox on the same directory (a restart) appends after what is there.
        drop(outbox);
        let reopened = OutboxSms::new(dir.path()).unwrap();
        reopened
            .send(&Sms::new(PHONE, "code 333333"))
            .await
            .unwrap();
        assert_eq!(outbox_lines(&reopened).len(), 3);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sms_outbox_sends_from_20_tasks_produce_20_intact_lines() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Arc::new(OutboxSms::new(dir.path()).unwrap());
        let tasks: Vec<_> = (0..20)
            .map(|n| {
                let outbox = Arc::clone(&outbox);
                // Long bodies make a torn or interleaved write visible.
                let body = format!("{n:02} {}", "x".repeat(1500));
                tokio::spawn(async move { outbox.send(&Sms::new(PHONE, body)).await })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }

        let lines = outbox_lines(&outbox);
        assert_eq!(lines.len(), 20);
        let numbers: HashSet<String> = lines
            .iter()
            .map(|line| line["body"].as_str().unwrap()[..2].to_owned())
            .collect();
        assert_eq!(numbers.len(), 20);
        let ids: HashSet<&str> = lines
            .iter()
            .map(|line| line["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), 20);
    })
    .await;
}

#[tokio::test]
async fn the_sms_outbox_refuses_invalid_messages_without_writing() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let outbox = OutboxSms::new(dir.path()).unwrap();
        let err = outbox.send(&Sms::new("12345", "code")).await.unwrap_err();
        assert!(matches!(err, NotifyError::Invalid(_)), "{err}");
        assert_eq!(std::fs::read_to_string(outbox.path()).unwrap(), "");
    })
    .await;
}

#[cfg(unix)]
#[tokio::test]
async fn outbox_files_are_private_to_the_service_user() {
    use std::os::unix::fs::PermissionsExt as _;
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let outbox_dir = dir.path().join("outbox");
        let sms = OutboxSms::new(&outbox_dir).unwrap();
        let email = OutboxEmail::new(&outbox_dir, SENDER_EMAIL).unwrap();
        sms.send(&Sms::new(PHONE, "code")).await.unwrap();
        email
            .send(&Email::new("alice@example.com", "Hi", "text"))
            .await
            .unwrap();
        let mode =
            |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&outbox_dir), 0o700);
        assert_eq!(mode(sms.path()), 0o600);
        assert_eq!(mode(email.dir()), 0o700);
        for entry in std::fs::read_dir(email.dir()).unwrap() {
            assert_eq!(mode(&entry.unwrap().path()), 0o600);
        }
    })
    .await;
}

/// `20250101T120000.123Z-<uuid>.eml`
fn is_outbox_email_name(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".eml") else {
        return false;
    };
    let Some((timestamp, id)) = stem.split_once('-') else {
        return false;
    };
    chrono::NaiveDateTime::parse_from_str(timestamp, "%Y%m%dT%H%M%S%.3fZ").is_ok()
        && uuid::Uuid::parse_str(id).is_ok()
}

#[tokio::test]
async fn the_email_outbox_writes_one_parseable_eml_file_per_message() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let outbox = OutboxEmail::new(dir.path(), SENDER_EMAIL).unwrap();
        assert_eq!(outbox.dir(), dir.path().join("email"));
        let texts = [
            "Reset your password: https://hexmarket.test/reset?token=t1",
            "Confirm your address: https://hexmarket.test/verify?token=t2",
        ];
        for (n, text) in texts.iter().enumerate() {
            let email = Email::new(
                format!("user{n}@example.com"),
                format!("Subject {n}"),
                *text,
            );
            outbox.send(&email).await.unwrap();
        }

        let mut names: Vec<String> = std::fs::read_dir(outbox.dir())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names.len(), 2, "{names:?}");
        for (n, name) in names.iter().enumerate() {
            assert!(is_outbox_email_name(name), "{name}");
            let raw = std::fs::read_to_string(outbox.dir().join(name)).unwrap();
            let mail = ReceivedMail {
                mail_from: String::new(),
                rcpt_to: Vec::new(),
                data: raw,
            };
            assert_eq!(
                mail.header("From").as_deref(),
                Some("Hexmarket <no-reply@hexmarket.test>")
            );
            assert_eq!(mail.header("To"), Some(format!("user{n}@example.com")));
            assert_eq!(mail.header("Subject"), Some(format!("Subject {n}")));
            assert!(mail.header("Date").is_some());
            assert!(mail.header("Message-ID").is_some());
            assert!(
                mail.header("Content-Type")
                    .unwrap()
                    .starts_with("text/plain"),
                "{:?}",
                mail.header("Content-Type")
            );
            assert_eq!(mail.body().trim_end(), texts[n]);
        }
        assert_eq!(outbox.backend(), "outbox");
    })
    .await;
}

#[tokio::test]
async fn the_email_outbox_refuses_invalid_messages_and_senders() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        assert!(OutboxEmail::new(dir.path(), "not an address").is_err());
        let outbox = OutboxEmail::new(dir.path(), SENDER_EMAIL).unwrap();
        let err = outbox
            .send(&Email::new(
                "alice@example.com",
                "Hi\nBcc: eve@example.com",
                "text",
            ))
            .await
            .unwrap_err();
        assert!(matches!(err, NotifyError::Invalid(_)), "{err}");
        assert_eq!(std::fs::read_dir(outbox.dir()).unwrap().count(), 0);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------------------------

/// Collects everything hexmarket logs on this thread while alive.
#[derive(Clone, Default)]
struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLogs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock()).into_owned()
    }
}

#[actix_web::test]
async fn logs_show_masked_recipients_but_never_codes_links_or_credentials() {
    let logs = CapturedLogs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("hexmarket=trace"))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    within(async {
        let dir = tempfile::tempdir().unwrap();
        let twilio = FakeTwilio::start().await;
        let sink = SmtpSink::start().await;
        let code = "Your hexmarket code is 482913";
        let link = "Reset: https://hexmarket.test/reset?token=s3cr3tT0ken";
        // Other tests, running beside this one with no subscriber, may have registered the
        // notifiers' log callsites while this subscriber was being installed, leaving them
        // cached as disabled: recompute every callsite's interest with this subscriber in place.
        tracing::callsite::rebuild_interest_cache();

        let twilio_sms = twilio.sender(SENDER_NUMBER);
        twilio_sms.send(&Sms::new(PHONE, code)).await.unwrap();
        twilio.fail_with(400);
        twilio_sms.send(&Sms::new(PHONE, code)).await.unwrap_err();
        OutboxSms::new(dir.path())
            .unwrap()
            .send(&Sms::new(PHONE, code))
            .await
            .unwrap();
        let email = Email::new("alice@example.com", "Reset your password", link);
        SmtpEmail::new(&sink.url, SENDER_EMAIL)
            .unwrap()
            .send(&email)
            .await
            .unwrap();
        OutboxEmail::new(dir.path(), SENDER_EMAIL)
            .unwrap()
            .send(&email)
            .await
            .unwrap();
    })
    .await;

    let text = logs.text();
    assert!(text.contains(MASKED_PHONE), "{text}");
    assert!(text.contains("a***@example.com"), "{text}");
    let basic = STANDARD.encode(format!(
        "{}:{}",
        FakeTwilio::ACCOUNT_SID,
        FakeTwilio::AUTH_TOKEN
    ));
    for secret in [
        "482913",
        "s3cr3tT0ken",
        PHONE,
        "alice@example.com",
        FakeTwilio::AUTH_TOKEN,
        basic.as_str(),
    ] {
        assert!(
            !text.contains(secret),
            "{secret:?} leaked into the logs:\n{text}"
        );
    }
}
