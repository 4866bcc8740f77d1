//! Opening authenticated WebSockets and speaking the contract's JSON frames.

use std::time::Duration;

use anyhow::Context as _;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a handshake may take before the connection counts as failed.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The load generator ran out of file descriptors: raise `ulimit -n`.
    #[error(
        "out of file descriptors (EMFILE) opening {0}: raise the limit (`ulimit -n 65536`, bench/live.sh does)"
    )]
    TooManyOpenFiles(String),
    /// The server answered the upgrade with an HTTP status (401, 403, 429…).
    #[error("{url}: upgrade refused with HTTP {status}")]
    Refused { url: String, status: u16 },
    #[error("{url}: {source}")]
    Other {
        url: String,
        #[source]
        source: anyhow::Error,
    },
}

/// Opens `url` with `Authorization: Bearer token` (no Origin, like a native app).
pub async fn connect(url: &str, token: &str) -> Result<Ws, ConnectError> {
    let other = |source: anyhow::Error| ConnectError::Other {
        url: url.to_owned(),
        source,
    };
    let mut request = url
        .into_client_request()
        .map_err(|e| other(anyhow::Error::new(e)))?;
    let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|e| other(anyhow::Error::new(e)))?;
    request.headers_mut().insert("authorization", bearer);
    let attempt = tokio_tungstenite::connect_async_with_config(request, None, true);
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, attempt).await {
        Err(_) => Err(other(anyhow::anyhow!(
            "no handshake within {HANDSHAKE_TIMEOUT:?}"
        ))),
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(tungstenite::Error::Http(response))) => Err(ConnectError::Refused {
            url: url.to_owned(),
            status: response.status().as_u16(),
        }),
        Ok(Err(tungstenite::Error::Io(e))) if is_emfile(&e) => {
            Err(ConnectError::TooManyOpenFiles(url.to_owned()))
        }
        Ok(Err(e)) => Err(other(anyhow::Error::new(e))),
    }
}

fn is_emfile(e: &std::io::Error) -> bool {
    // EMFILE (process limit) and ENFILE (system limit) on Linux.
    matches!(e.raw_os_error(), Some(24) | Some(23))
}

/// Sends one JSON frame.
pub async fn send(ws: &mut Ws, frame: &Value) -> anyhow::Result<()> {
    ws.send(Message::text(frame.to_string()))
        .await
        .context("sending a frame")
}

/// What arrived on a socket.
pub enum Incoming {
    /// A JSON text frame.
    Frame(Value),
    /// The server closed the socket (code and reason), or the connection ended.
    Closed(Option<(u16, String)>),
    /// Anything else (pings, pongs, binary); tungstenite answers pings by itself.
    Other,
}

/// Reads the next frame.
pub async fn next(ws: &mut Ws) -> Incoming {
    match ws.next().await {
        None => Incoming::Closed(None),
        Some(Err(_)) => Incoming::Closed(None),
        Some(Ok(Message::Text(text))) => match serde_json::from_str(text.as_str()) {
            Ok(value) => Incoming::Frame(value),
            Err(_) => Incoming::Other,
        },
        Some(Ok(Message::Close(frame))) => Incoming::Closed(frame.map(close_parts)),
        Some(Ok(_)) => Incoming::Other,
    }
}

fn close_parts(frame: CloseFrame) -> (u16, String) {
    (u16::from(frame.code), frame.reason.as_str().to_owned())
}

/// Reads frames until one satisfies `wanted` (others are skipped; an error frame fails), for at most
/// `timeout`.
pub async fn expect(
    ws: &mut Ws,
    timeout: Duration,
    what: &str,
    wanted: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let wait = async {
        loop {
            match next(ws).await {
                Incoming::Frame(frame) if wanted(&frame) => return Ok(frame),
                Incoming::Frame(frame) if frame["type"] == "error" => {
                    anyhow::bail!("waiting for {what}: error frame {frame}")
                }
                Incoming::Frame(_) | Incoming::Other => {}
                Incoming::Closed(close) => {
                    anyhow::bail!("waiting for {what}: socket closed {close:?}")
                }
            }
        }
    };
    tokio::time::timeout(timeout, wait)
        .await
        .map_err(|_| anyhow::anyhow!("no {what} within {timeout:?}"))?
}

/// Closes politely (ignoring a peer that is already gone).
pub async fn close(mut ws: Ws) {
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
}
