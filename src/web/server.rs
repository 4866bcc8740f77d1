//! The HTTP server: actix-web's application behind actix-http's HTTP/1 service, with one
//! change from `actix_web::HttpServer`. A connection whose request asks for an upgrade (every
//! WebSocket handshake) leaves the HTTP/1 dispatcher: the same application answers the request,
//! and the connection is then driven here, straight on the socket.
//!
//! The HTTP/1 dispatcher keeps an 8 KiB read buffer and an 8 KiB write buffer for as long as a
//! connection lives, which is most of what an idle WebSocket would cost. Driven here, an open
//! session holds no buffer: a read copies what arrived into a chunk the session consumes, and a
//! frame the session writes goes to the socket as it is.

use std::io;
use std::net::TcpListener;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_codec::Encoder as _;
use actix_codec::{Framed, FramedParts};
use actix_http::body::{BodySize, BoxBody, MessageBody};
use actix_http::error::PayloadError;
use actix_http::h1::{self, Codec};
use actix_http::{
    BoxedPayloadStream, ConnectionType, HttpService, Payload, Request, Response, StatusCode,
};
use actix_server::Server;
use actix_service::{
    IntoServiceFactory, Service, ServiceFactory, fn_factory, fn_service, map_config,
};
use actix_web::dev::AppConfig;
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Worker threads, each with its own copy of the application.
    pub workers: usize,
    /// Connections a worker serves at once; more wait in the listen queue.
    pub max_connections_per_worker: usize,
    /// How long a stop waits for open connections to finish.
    pub shutdown_timeout: Duration,
}

/// Serves `factory`'s application on `listener`. Signals are left to the caller: a node's stop
/// signals go through `NodeHandle::stop`, which closes WebSockets before it stops the server.
pub fn serve<F, I, S, B>(
    listener: TcpListener,
    options: &ServerOptions,
    factory: F,
) -> io::Result<Server>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig, Error = actix_web::Error, InitError = ()>
        + 'static,
    S::Response: Into<Response<B>> + 'static,
    S::Service: 'static,
    <S::Service as Service<Request>>::Future: 'static,
    B: MessageBody + 'static,
{
    let addr = listener.local_addr()?;
    let builder = Server::build()
        .workers(options.workers)
        .max_concurrent_connections(options.max_connections_per_worker)
        .disable_signals()
        .shutdown_timeout(options.shutdown_timeout.as_secs());
    let shutdown = builder.graceful_shutdown_signal();
    let builder = builder.listen("hexmarket", listener, move || {
        let shutdown = shutdown.clone();
        let upgrades = factory.clone();
        HttpService::build()
            // actix-web's defaults.
            .keep_alive(Duration::from_secs(5))
            .client_request_timeout(Duration::from_secs(5))
            .client_disconnect_timeout(Duration::from_secs(1))
            .h1_allow_half_closed(true)
            .local_addr(addr)
            .graceful_shutdown_signal(move || {
                let shutdown = shutdown.clone();
                async move { shutdown.notified().await }
            })
            .upgrade(fn_factory(move || {
                // The upgrade path has its own copy of the application (its routes and
                // middleware; the state they share is behind `Data`).
                let app = upgrades().into_factory().new_service(app_config());
                async move {
                    let app = Rc::new(app.await?);
                    Ok::<_, ()>(fn_service(move |(req, framed)| {
                        drive_upgraded(Rc::clone(&app), req, framed)
                    }))
                }
            }))
            .finish(map_config(factory().into_factory(), |_| app_config()))
            .tcp()
    })?;
    Ok(builder.run())
}

/// The configuration the application is built with. hexmarket generates no URLs from it: the
/// `Host` header names the host.
fn app_config() -> AppConfig {
    AppConfig::default()
}

/// Answers an upgrade request with the application, then runs the connection: the response
/// head, then its body (a WebSocket session's frames) until the body ends. What the client
/// sends after its request reaches the application as the request's payload, read when the
/// session asks for it. Any answer other than 101 is written whole and the connection closed.
async fn drive_upgraded<S, B>(
    app: Rc<S>,
    req: Request,
    framed: Framed<TcpStream, Codec>,
) -> Result<(), actix_web::Error>
where
    S: Service<Request, Error = actix_web::Error>,
    S::Response: Into<Response<B>>,
    B: MessageBody + 'static,
{
    // A peer that goes away mid-write is how connections end; it is not the server's error.
    if let Err(e) = run_upgraded(app, req, framed).await {
        tracing::debug!(error = %e, "upgraded connection ended");
    }
    Ok(())
}

async fn run_upgraded<S, B>(
    app: Rc<S>,
    req: Request,
    framed: Framed<TcpStream, Codec>,
) -> io::Result<()>
where
    S: Service<Request, Error = actix_web::Error>,
    S::Response: Into<Response<B>>,
    B: MessageBody + 'static,
{
    let FramedParts {
        io,
        mut codec,
        read_buf,
        write_buf,
        ..
    } = framed.into_parts();
    // Bytes that arrived behind the request head (a client may send its first frames at once)
    // are copied out, so that the dispatcher's buffers are freed here.
    let early = Bytes::copy_from_slice(&read_buf);
    drop(read_buf);
    let (reader, mut writer) = io.into_split();
    if !write_buf.is_empty() {
        writer.write_all(&write_buf).await?;
    }
    drop(write_buf);
    let payload: BoxedPayloadStream = Box::pin(SocketPayload { early, reader });
    let (req, _) = req.replace_payload(Payload::from(payload));
    let res: Response<BoxBody> = match app.call(req).await {
        Ok(res) => res.into().map_body(|_, body| body.boxed()),
        Err(err) => err.error_response().into(),
    };
    let (mut head, body) = res.into_parts();
    // The codec knows the request's version and that it asked for an upgrade, so what follows
    // the head is written as it is.
    let mut out = BytesMut::new();
    if head.status() != StatusCode::SWITCHING_PROTOCOLS {
        // A refusal goes out whole in one write (a client may read no further than the first
        // segment it gets), and nothing more is read from this connection.
        head.head_mut().set_connection_type(ConnectionType::Close);
        let body = actix_http::body::to_bytes(body)
            .await
            .map_err(|e| io::Error::other(e.to_string()))?;
        codec.encode(
            h1::Message::Item((head, BodySize::Sized(body.len() as u64))),
            &mut out,
        )?;
        out.extend_from_slice(&body);
        writer.write_all(&out).await?;
        return writer.shutdown().await;
    }
    codec.encode(h1::Message::Item((head, body.size())), &mut out)?;
    writer.write_all(&out).await?;
    drop(out);
    let mut body = std::pin::pin!(body);
    while let Some(chunk) = std::future::poll_fn(|cx| body.as_mut().poll_next(cx)).await {
        let chunk = chunk.map_err(|e| io::Error::other(e.to_string()))?;
        writer.write_all(&chunk).await?;
    }
    writer.shutdown().await
}

/// The client's side of an upgraded connection as a request payload: the bytes that came with
/// the request, then each read from the socket as a chunk of its own.
struct SocketPayload {
    early: Bytes,
    reader: OwnedReadHalf,
}

/// The most one read takes from the socket.
const READ_CHUNK: usize = 8 * 1024;

impl Stream for SocketPayload {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if !this.early.is_empty() {
            return Poll::Ready(Some(Ok(std::mem::take(&mut this.early))));
        }
        let mut space = [std::mem::MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut buf = ReadBuf::uninit(&mut space);
        match Pin::new(&mut this.reader).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) if buf.filled().is_empty() => Poll::Ready(None),
            Poll::Ready(Ok(())) => Poll::Ready(Some(Ok(Bytes::copy_from_slice(buf.filled())))),
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(PayloadError::Io(e)))),
            Poll::Pending => Poll::Pending,
        }
    }
}
