//! A small WebSocket client for the live endpoints: connects with a bearer token or any other
//! headers, sends JSON, text or raw frames, and reads JSON frames with upper bounds on waiting.
//! Every JSON frame it reads is kept in `received`, so a test can look back at all of them.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Upper bound for a handshake to complete.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A handshake the server answered with an HTTP error instead of an upgrade.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    /// The response body: JSON when it parses, else the text as a JSON string.
    pub body: Value,
}

/// How a read ended when it did not give a JSON frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Ended {
    /// The server sent a close frame (with its code, if any).
    Closed(Option<u16>, String),
    /// The connection ended without a close frame, or failed.
    Broken(String),
}

pub struct WsClient {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Every JSON frame read so far, in order.
    pub received: Vec<Value>,
    /// Set once the connection has ended.
    pub ended: Option<Ended>,
}

/// `http://host:port` → `ws://host:port`.
pub fn ws_base(http_base: &str) -> String {
    http_base.replacen("http", "ws", 1)
}

impl WsClient {
    /// Opens `url` with the given extra request headers; an HTTP answer other than 101 is a
    /// [`Refused`]. Network failures panic: the tests run against a local node.
    pub async fn try_connect(url: &str, headers: &[(&str, &str)]) -> Result<WsClient, Refused> {
        let mut request = url.into_client_request().expect("a valid WebSocket URL");
        for (name, value) in headers {
            let name: tokio_tungstenite::tungstenite::http::HeaderName =
                name.parse().expect("a valid header name");
            request
                .headers_mut()
                .insert(name, HeaderValue::from_str(value).expect("a valid header"));
        }
        let connecting = tokio_tungstenite::connect_async(request);
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await {
            Err(_) => panic!("handshake with {url} took longer than {HANDSHAKE_TIMEOUT:?}"),
            Ok(Ok((stream, _))) => Ok(WsClient {
                stream,
                received: Vec::new(),
                ended: None,
            }),
            Ok(Err(WsError::Http(response))) => {
                let status = response.status().as_u16();
                let raw = response.body().clone().unwrap_or_default();
                let body = serde_json::from_slice(&raw)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&raw).into_owned()));
                Err(Refused { status, body })
            }
            Ok(Err(e)) => panic!("handshake with {url} failed: {e}"),
        }
    }

    /// Opens `url`, authenticated with a bearer token when one is given.
    pub async fn connect(url: &str, bearer: Option<&str>) -> Result<WsClient, Refused> {
        match bearer {
            Some(token) => {
                let value = format!("Bearer {token}");
                Self::try_connect(url, &[("authorization", &value)]).await
            }
            None => Self::try_connect(url, &[]).await,
        }
    }

    pub async fn send_json(&mut self, frame: &Value) {
        self.send_text(&frame.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.stream
            .send(Message::text(text))
            .await
            .expect("frame sent");
    }

    /// Sends a binary frame.
    pub async fn send_raw_bytes(&mut self, bytes: &[u8]) {
        self.stream
            .send(Message::binary(bytes.to_vec()))
            .await
            .expect("frame sent");
    }

    /// Queues many text frames and flushes them together, ignoring failures: the server may
    /// close the connection part way through a flood.
    pub async fn flood(&mut self, frames: impl IntoIterator<Item = String>) {
        for frame in frames {
            if self.stream.feed(Message::text(frame)).await.is_err() {
                return;
            }
        }
        let _ = self.stream.flush().await;
    }

    /// Sends a normal close and drops the connection.
    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }

    /// The next JSON frame, skipping pings and pongs; `None` when nothing came within
    /// `timeout` or the connection ended (then `ended` says how).
    pub async fn next_json(&mut self, timeout: Duration) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        self.next_json_until(deadline).await
    }

    async fn next_json_until(&mut self, deadline: Instant) -> Option<Value> {
        if self.ended.is_some() {
            return None;
        }
        loop {
            let message = match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return None,
                Ok(None) => {
                    self.ended = Some(Ended::Broken("stream ended".to_owned()));
                    return None;
                }
                Ok(Some(Err(e))) => {
                    self.ended = Some(Ended::Broken(e.to_string()));
                    return None;
                }
                Ok(Some(Ok(message))) => message,
            };
            match message {
                Message::Text(text) => {
                    let frame: Value = serde_json::from_str(text.as_str()).unwrap_or_else(|e| {
                        panic!("server sent a non-JSON text frame ({e}): {text}")
                    });
                    self.received.push(frame.clone());
                    return Some(frame);
                }
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                Message::Binary(bytes) => {
                    panic!("server sent a binary frame of {} bytes", bytes.len())
                }
                Message::Close(frame) => {
                    self.ended = Some(match frame {
                        Some(f) => Ended::Closed(Some(u16::from(f.code)), f.reason.to_string()),
                        None => Ended::Closed(None, String::new()),
                    });
                    return None;
                }
            }
        }
    }

    /// Reads until a frame satisfies `wanted`, within `timeout`; panics naming `what` and every
    /// frame skipped on the way otherwise.
    pub async fn expect_where(
        &mut self,
        what: &str,
        timeout: Duration,
        wanted: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        let mut skipped = Vec::new();
        loop {
            match self.next_json_until(deadline).await {
                Some(frame) if wanted(&frame) => return frame,
                Some(frame) => skipped.push(frame),
                None => panic!(
                    "expected {what} within {timeout:?}; {}; skipped frames: {}",
                    match &self.ended {
                        Some(ended) => format!("connection ended: {ended:?}"),
                        None => "timed out".to_owned(),
                    },
                    Value::Array(skipped)
                ),
            }
        }
    }

    /// Reads until a frame of type `kind` arrives (frames skipped on the way stay in
    /// `received`).
    pub async fn expect_type(&mut self, kind: &str, timeout: Duration) -> Value {
        self.expect_where(&format!("a {kind:?} frame"), timeout, |f| f["type"] == kind)
            .await
    }

    /// Reads until the server closes the connection; its close code, or `None` when the
    /// connection ended without one or stayed open past `timeout`.
    pub async fn expect_close(&mut self, timeout: Duration) -> Option<u16> {
        let deadline = Instant::now() + timeout;
        while self.ended.is_none() && Instant::now() < deadline {
            self.next_json_until(deadline).await;
        }
        match &self.ended {
            Some(Ended::Closed(code, _)) => *code,
            _ => None,
        }
    }

    /// Every frame that arrives within `window`.
    pub async fn drain(&mut self, window: Duration) -> Vec<Value> {
        let deadline = Instant::now() + window;
        let mut frames = Vec::new();
        while let Some(frame) = self.next_json_until(deadline).await {
            frames.push(frame);
        }
        frames
    }

    /// Reads for the whole of `window` and panics if a frame of type `kind` arrives; returns
    /// the other frames.
    pub async fn assert_no_frame_of_type(&mut self, kind: &str, window: Duration) -> Vec<Value> {
        let frames = self.drain(window).await;
        if let Some(frame) = frames.iter().find(|f| f["type"] == kind) {
            panic!("expected no {kind:?} frame within {window:?}, got {frame}");
        }
        frames
    }
}
