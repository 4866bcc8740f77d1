//! One lazily opened, self-reconnecting Redis connection, shared by the Redis-backed bus and
//! rate limiter.
//!
//! Nothing contacts Redis until the first command, so a node starts while Redis is down. The
//! connection (and anything else spawned through [`RedisLink::spawn`]) is pinned to the runtime
//! the link was created on, so it does not die with whichever short-lived runtime (an HTTP
//! worker's, say) happened to make the first call.

use std::future::Future;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::runtime::Handle;
use tokio::sync::OnceCell;
use tokio::task::JoinHandle;

/// Longest wait for a TCP connection to Redis.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest wait for Redis to answer one command.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// A Redis client and its shared connection, opened on first use.
pub struct RedisLink {
    client: redis::Client,
    runtime: Option<Handle>,
    connection: OnceCell<ConnectionManager>,
}

impl RedisLink {
    /// Parses `url` without contacting Redis; fails only on a malformed URL.
    pub fn new(url: &str) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|err| format!("invalid Redis URL: {err}"))?;
        Ok(RedisLink {
            client,
            runtime: Handle::try_current().ok(),
            connection: OnceCell::new(),
        })
    }

    /// The client, for connections that cannot be shared (pub/sub).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// Spawns `future` on the runtime the link was created on (or the current one).
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.runtime {
            Some(runtime) => runtime.spawn(future),
            None => tokio::spawn(future),
        }
    }

    /// The shared connection; a failed open is retried by the next call, after which the
    /// manager reconnects by itself.
    pub async fn connection(&self) -> Result<ConnectionManager, String> {
        let manager = self
            .connection
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(COMMAND_TIMEOUT))
                    // Callers are waiting: one attempt per call, never a retry loop inside it.
                    .set_number_of_retries(0);
                let open = ConnectionManager::new_with_config(self.client.clone(), config);
                match self.spawn(open).await {
                    Ok(result) => result.map_err(|err| err.to_string()),
                    Err(err) => Err(format!("opening a Redis connection was aborted: {err}")),
                }
            })
            .await?;
        Ok(manager.clone())
    }
}
