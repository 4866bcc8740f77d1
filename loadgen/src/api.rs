//! The node's REST API as the load generator calls it: JSON in, JSON out, problems as errors.

use std::time::Duration;

use anyhow::Context as _;
use reqwest::{Client, Method, StatusCode};
use serde_json::Value;

/// A REST client bound to one node.
#[derive(Clone)]
pub struct Api {
    client: Client,
    base: String,
}

/// An answer that was not 2xx: its status and problem `code` (when the body had one).
#[derive(Debug, thiserror::Error)]
#[error("{method} {path}: HTTP {status} {code}: {detail}")]
pub struct Refused {
    pub method: Method,
    pub path: String,
    pub status: StatusCode,
    pub code: String,
    pub detail: String,
}

impl Api {
    pub fn new(base: &str) -> anyhow::Result<Self> {
        // reqwest is built with rustls but no crypto provider of its own (the hexmarket library
        // asks for that); only plain http to loopback is used, yet building a client needs a
        // provider installed. Installing fails only when one already is, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .build()
            .context("building the HTTP client")?;
        Ok(Api {
            client,
            base: base.to_owned(),
        })
    }

    /// Sends a request; 2xx answers give their JSON body (`null` when empty), others a
    /// [`Refused`] error.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Value> {
        let mut request = self
            .client
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(serde_json::to_vec(body)?);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .with_context(|| format!("{method} {path}: reading the body"))?;
        let json: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        if status.is_success() {
            return Ok(json);
        }
        Err(Refused {
            method,
            path: path.to_owned(),
            status,
            code: json["code"].as_str().unwrap_or("").to_owned(),
            detail: json["detail"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(200).collect()),
        }
        .into())
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> anyhow::Result<Value> {
        self.call(Method::GET, path, token, None, &[]).await
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> anyhow::Result<Value> {
        self.call(Method::POST, path, Some(token), Some(body), &[])
            .await
    }

    /// The body of a GET that answers text (such as `/metrics`).
    pub async fn text(&self, path: &str) -> anyhow::Result<String> {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .with_context(|| format!("GET {path}"))?
            .error_for_status()
            .with_context(|| format!("GET {path}"))?;
        Ok(response.text().await?)
    }

    /// Waits until `/health` answers, for at most `timeout`.
    pub async fn wait_healthy(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.get("/health", None).await {
                Ok(_) => return Ok(()),
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(e.context(format!("{} is not healthy", self.base)));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

/// The problem code of a refused call, if that is what failed.
pub fn refused_code(e: &anyhow::Error) -> Option<(StatusCode, &str)> {
    e.downcast_ref::<Refused>()
        .map(|r| (r.status, r.code.as_str()))
}
