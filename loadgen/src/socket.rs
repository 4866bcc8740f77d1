//! Opening authenticated WebSockets and speaking the contract's JSON frames.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::{HeaderValue, Uri};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a handshake may take before the connection counts as failed.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

/// Sockets to a server on a loopback address come from this many source addresses in turn
/// (127.0.0.1, 127.0.0.2, …: all of 127.0.0.0/8 is the loopback interface). The kernel gives
/// one pair of addresses and one server port only as many connections as its ephemeral port
/// range has ports (32768–60999 by default: 28,232), so from one address the load generator
/// could not open the 40,000 sockets of 20,000 couriers and as many watchers; from eight it
/// can open over 200,000.
const LOOPBACK_SOURCES: u8 = 8;
/// The source address the next loopback socket takes (modulo [`LOOPBACK_SOURCES`]).
static NEXT_SOURCE: AtomicU8 = AtomicU8::new(0);

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
    let attempt = async {
        let stream = open_tcp(request.uri())
            .await
            .map_err(tungstenite::Error::Io)?;
        tokio_tungstenite::client_async_with_config(request, MaybeTlsStream::Plain(stream), None)
            .await
    };
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

/// A TCP connection to the URI's host and port, Nagle off; to a loopback IPv4 server, from
/// the next of [`LOOPBACK_SOURCES`] source addresses.
async fn open_tcp(uri: &Uri) -> std::io::Result<TcpStream> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, what.to_owned());
    let host = uri.host().ok_or_else(|| invalid("no host in the URL"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(80);
    let server = tokio::net::lookup_host((host, port))
        .await?
        .next()
        .ok_or_else(|| invalid("the host has no address"))?;
    let socket = match server.ip() {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if loopback_source(server.ip(), 0).is_some() {
        bind_loopback_source(&socket, server.ip())?;
    }
    socket.set_nodelay(true)?;
    socket.connect(server).await
}

/// Binds `socket` to the next loopback source address with a free port, trying each of them
/// once: an address whose ports are all taken (open sockets, or closed ones waiting out
/// TIME_WAIT, which a bound port does not reuse) is passed over.
fn bind_loopback_source(socket: &TcpSocket, server: IpAddr) -> std::io::Result<()> {
    let mut taken = None;
    for _ in 0..LOOPBACK_SOURCES {
        let n = NEXT_SOURCE.fetch_add(1, Ordering::Relaxed);
        let Some(source) = loopback_source(server, n) else {
            return Ok(());
        };
        match socket.bind(SocketAddr::new(IpAddr::V4(source), 0)) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => taken = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(taken.unwrap_or_else(|| std::io::ErrorKind::AddrInUse.into()))
}

/// The source address of the `n`th socket to `server`: one of 127.0.0.1 to
/// 127.0.0.[`LOOPBACK_SOURCES`] for a loopback IPv4 server; none (the kernel's choice)
/// otherwise.
fn loopback_source(server: IpAddr, n: u8) -> Option<Ipv4Addr> {
    match server {
        IpAddr::V4(ip) if ip.is_loopback() => {
            Some(Ipv4Addr::new(127, 0, 0, 1 + n % LOOPBACK_SOURCES))
        }
        _ => None,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_sockets_take_the_source_addresses_in_turn() {
        let server = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let sources: Vec<Ipv4Addr> = (0..=LOOPBACK_SOURCES)
            .filter_map(|n| loopback_source(server, n))
            .collect();
        assert_eq!(sources[0], Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(sources[1], Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(
            sources[usize::from(LOOPBACK_SOURCES) - 1],
            Ipv4Addr::new(127, 0, 0, LOOPBACK_SOURCES)
        );
        assert_eq!(sources[usize::from(LOOPBACK_SOURCES)], sources[0]);
        // The counter wraps at 256, a multiple of the number of sources: no address skipped.
        assert_eq!(
            loopback_source(server, 255),
            Some(Ipv4Addr::new(127, 0, 0, 8))
        );
    }

    #[test]
    fn other_servers_get_the_kernels_choice() {
        assert_eq!(loopback_source("192.0.2.7".parse().unwrap(), 3), None);
        assert_eq!(loopback_source("::1".parse().unwrap(), 3), None);
    }

    #[tokio::test]
    async fn a_loopback_connection_comes_from_the_address_in_turn() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let uri: Uri = format!("ws://127.0.0.1:{port}/ws").parse().unwrap();
        let mut seen = Vec::new();
        for _ in 0..2 {
            let _client = open_tcp(&uri).await.unwrap();
            let (_, peer) = listener.accept().await.unwrap();
            seen.push(peer.ip());
        }
        // Consecutive sockets come from different loopback addresses.
        assert_ne!(seen[0], seen[1]);
        assert!(seen.iter().all(IpAddr::is_loopback));
    }
}
