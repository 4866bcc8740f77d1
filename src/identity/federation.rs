//! Sign-in with OpenID Connect providers: discovery, the authorization code flow with PKCE,
//! `state` and `nonce`, and the ID token checked against the provider's keys (`iss`, `aud`,
//! `exp`, signature), refetching the keys once when a token names one the node has not seen.
//!
//! A flow is kept in the store between its two halves ([`Ceremonies`], kind `oidc`), so the
//! provider's redirect may land on any node, and it is taken once: a replayed callback finds
//! nothing. What the account side does with an asserted identity is in [`super::linking`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use chrono::Duration;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreIdToken, CoreJwsSigningAlgorithm, CoreProviderMetadata,
};
use openidconnect::{
    AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken, IdTokenVerifier,
    IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    SignatureVerificationError, TokenResponse as _,
};
use serde::{Deserialize, Serialize};

use crate::config::{AppleKey, OidcPreset, OidcProviderSettings};
use crate::domain::ids::UserId;
use crate::store::StoreError;
use crate::store::sign_in::Ceremonies;

/// How long a user has to come back from the provider.
pub const FLOW_TTL: Duration = Duration::minutes(10);
/// The kind of the flows' ceremony rows.
const FLOW_KIND: &str = "oidc";
/// Provider metadata and keys are read again after this long.
const METADATA_TTL: StdDuration = StdDuration::from_secs(60 * 60);
/// Tokens naming unknown keys refetch the keys at most this often.
const REFETCH_EVERY: StdDuration = StdDuration::from_secs(1);
/// The largest answer read from a provider.
const MAX_ANSWER_BYTES: usize = 1 << 20;
/// Signature algorithms accepted on ID tokens: asymmetric ones only.
const ALGORITHMS: [CoreJwsSigningAlgorithm; 9] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EdDsa,
];

/// Why a provider flow failed.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    #[error("no identity provider is called {0:?}")]
    UnknownProvider(String),
    #[error("the provider cannot be reached or answered nonsense: {0}")]
    Unavailable(String),
    #[error("the state is unknown, expired or already used")]
    StateMismatch,
    #[error("the provider answered an error: {0}")]
    ProviderError(String),
    #[error("the provider refused the authorization code: {0}")]
    CodeRejected(String),
    #[error("the ID token is not valid: {0}")]
    TokenInvalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a flow is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Intent {
    /// Sign in (or sign up) with the provider.
    SignIn,
    /// Attach the provider identity to this signed-in account.
    Link { user_id: UserId },
}

/// A flow between the redirect to the provider and its way back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Flow {
    pub provider: String,
    pub intent: Intent,
    nonce: String,
    pkce_verifier: String,
    /// SHA-256 (hex) of the secret in the browser cookie of whoever started the flow.
    binding: String,
}

impl Flow {
    /// Whether `cookie` is the secret of the client that started this flow.
    pub fn bound_to(&self, cookie: Option<&str>) -> bool {
        cookie.is_some_and(|c| super::tokens::constant_time_eq(&digest(c), &self.binding))
    }
}

/// A started flow: where to send the user, and the secrets of its two halves.
#[derive(Debug, Clone)]
pub struct Started {
    pub authorization_url: String,
    pub state: String,
    /// Goes into the browser cookie that ties the callback to this client.
    pub binding: String,
    pub expires_in: Duration,
}

/// What the provider asserted about the user, once its ID token checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asserted {
    pub provider: String,
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
}

/// A configured provider (for listings).
#[derive(Debug, Clone)]
pub struct ProviderInfo {
    pub name: String,
    pub display_name: String,
    pub redirect_uri: String,
}

struct Discovered {
    metadata: CoreProviderMetadata,
    at: Instant,
    /// When the keys were last read again for a token naming an unknown key.
    refetched: Option<Instant>,
}

struct Provider {
    settings: OidcProviderSettings,
    discovered: tokio::sync::Mutex<Option<Discovered>>,
}

/// The configured providers and the flows through them.
#[derive(Clone)]
pub struct Federation {
    providers: Arc<BTreeMap<String, Provider>>,
    http: reqwest013::Client,
    public_url: String,
    ceremonies: Ceremonies,
}

#[derive(Debug, thiserror::Error)]
enum HttpError {
    #[error(transparent)]
    Client(#[from] reqwest013::Error),
    #[error(transparent)]
    Http(#[from] openidconnect::http::Error),
    #[error("the answer is larger than {MAX_ANSWER_BYTES} bytes")]
    TooLarge,
}

/// Sends one request of the OpenID Connect library with the node's HTTP client.
async fn send(
    client: &reqwest013::Client,
    request: openidconnect::HttpRequest,
) -> Result<openidconnect::HttpResponse, HttpError> {
    let (parts, body) = request.into_parts();
    let mut builder = client
        .request(parts.method, parts.uri.to_string())
        .body(body);
    for (name, value) in &parts.headers {
        builder = builder.header(name, value);
    }
    let mut answer = builder.send().await?;
    let mut out = openidconnect::http::Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        out = out.header(name, value);
    }
    let mut body = Vec::new();
    while let Some(chunk) = answer.chunk().await? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(HttpError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(out.body(body)?)
}

fn digest(secret: &str) -> String {
    use sha2::Digest as _;
    data_encoding::HEXLOWER.encode(&sha2::Sha256::digest(secret.as_bytes()))
}

pub(super) fn random_secret() -> String {
    data_encoding::BASE64URL_NOPAD.encode(&rand::random::<[u8; 32]>())
}

impl Federation {
    pub fn new(
        settings: &[OidcProviderSettings],
        public_url: &str,
        ceremonies: Ceremonies,
    ) -> anyhow::Result<Self> {
        // The HTTP client's TLS takes the process's crypto provider (ring, as everywhere
        // here); installing it twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest013::Client::builder()
            // Following redirects would let a provider's answer point the node anywhere.
            .redirect(reqwest013::redirect::Policy::none())
            .timeout(StdDuration::from_secs(10))
            .build()?;
        let providers = settings
            .iter()
            .map(|s| {
                (
                    s.name.clone(),
                    Provider {
                        settings: s.clone(),
                        discovered: tokio::sync::Mutex::new(None),
                    },
                )
            })
            .collect();
        Ok(Federation {
            providers: Arc::new(providers),
            http,
            public_url: public_url.trim_end_matches('/').to_owned(),
            ceremonies,
        })
    }

    /// The configured providers, by name.
    pub fn providers(&self) -> Vec<ProviderInfo> {
        self.providers
            .values()
            .map(|p| ProviderInfo {
                name: p.settings.name.clone(),
                display_name: p.settings.display_name.clone(),
                redirect_uri: self.redirect_uri(&p.settings.name),
            })
            .collect()
    }

    /// The redirect URI an operator registers with the provider.
    pub fn redirect_uri(&self, provider: &str) -> String {
        format!("{}/api/v1/auth/oidc/{provider}/callback", self.public_url)
    }

    fn provider(&self, name: &str) -> Result<&Provider, FederationError> {
        self.providers
            .get(name)
            .ok_or_else(|| FederationError::UnknownProvider(name.to_owned()))
    }

    /// The provider's metadata and keys: cached for [`METADATA_TTL`]; with `refetch`, read
    /// again unless they were read in the last [`REFETCH_EVERY`].
    async fn metadata(
        &self,
        provider: &Provider,
        refetch: bool,
    ) -> Result<CoreProviderMetadata, FederationError> {
        let mut discovered = provider.discovered.lock().await;
        if let Some(d) = discovered.as_ref() {
            let fresh = d.at.elapsed() < METADATA_TTL;
            // Unknown key ids refetch at most every REFETCH_EVERY, whoever sends them.
            let throttled = d.refetched.is_some_and(|at| at.elapsed() < REFETCH_EVERY);
            if fresh && (!refetch || throttled) {
                return Ok(d.metadata.clone());
            }
        }
        let issuer = IssuerUrl::new(provider.settings.issuer.clone())
            .map_err(|e| FederationError::Unavailable(format!("issuer URL: {e}")))?;
        let http = |request| send(&self.http, request);
        let metadata = CoreProviderMetadata::discover_async(issuer, &http)
            .await
            .map_err(|e| {
                tracing::warn!(provider = %provider.settings.name, error = %e, "provider discovery failed");
                FederationError::Unavailable(e.to_string())
            })?;
        let now = Instant::now();
        *discovered = Some(Discovered {
            metadata: metadata.clone(),
            at: now,
            refetched: refetch.then_some(now),
        });
        Ok(metadata)
    }

    /// Starts a flow through `provider` for `intent`.
    pub async fn start(&self, name: &str, intent: Intent) -> Result<Started, FederationError> {
        let provider = self.provider(name)?;
        let metadata = self.metadata(provider, false).await?;
        let redirect = RedirectUrl::new(self.redirect_uri(name))
            .map_err(|e| FederationError::Unavailable(format!("redirect URI: {e}")))?;
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(provider.settings.client_id.clone()),
            None,
        )
        .set_redirect_uri(redirect);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for scope in provider.settings.scopes.iter().filter(|s| *s != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        request = match provider.settings.preset {
            OidcPreset::Google => request.add_extra_param("prompt", "select_account"),
            // Apple answers with a form POST whenever the name or email is asked for.
            OidcPreset::Apple => request.add_extra_param("response_mode", "form_post"),
            OidcPreset::Generic => request,
        };
        let (url, state, nonce) = request.url();
        let binding = random_secret();
        let flow = Flow {
            provider: name.to_owned(),
            intent,
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
            binding: digest(&binding),
        };
        let ttl = FLOW_TTL.to_std().unwrap_or(StdDuration::from_secs(600));
        self.ceremonies
            .put(FLOW_KIND, state.secret(), &flow, ttl)
            .await?;
        tracing::info!(provider = name, "provider flow started");
        Ok(Started {
            authorization_url: url.to_string(),
            state: state.secret().clone(),
            binding,
            expires_in: FLOW_TTL,
        })
    }

    /// Takes the flow of `state` (once) for `provider`.
    pub async fn take_flow(&self, name: &str, state: &str) -> Result<Flow, FederationError> {
        self.provider(name)?;
        match self.ceremonies.take::<Flow>(FLOW_KIND, state).await? {
            Some(flow) if flow.provider == name => Ok(flow),
            _ => Err(FederationError::StateMismatch),
        }
    }

    /// Exchanges `code` (with the flow's PKCE verifier) and checks the ID token against the
    /// flow's nonce and the provider's keys.
    pub async fn finish(&self, flow: &Flow, code: &str) -> Result<Asserted, FederationError> {
        let provider = self.provider(&flow.provider)?;
        let metadata = self.metadata(provider, false).await?;
        let redirect = RedirectUrl::new(self.redirect_uri(&flow.provider))
            .map_err(|e| FederationError::Unavailable(format!("redirect URI: {e}")))?;
        let secret = client_secret(&provider.settings)?;
        let client = CoreClient::from_provider_metadata(
            metadata.clone(),
            ClientId::new(provider.settings.client_id.clone()),
            Some(secret),
        )
        .set_redirect_uri(redirect);
        let http = |request| send(&self.http, request);
        let answer = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| FederationError::Unavailable(format!("token endpoint: {e}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(flow.pkce_verifier.clone()))
            .request_async(&http)
            .await
            .map_err(|e| match e {
                openidconnect::RequestTokenError::ServerResponse(answer) => {
                    FederationError::CodeRejected(answer.error().to_string())
                }
                openidconnect::RequestTokenError::Request(cause) => {
                    FederationError::Unavailable(cause.to_string())
                }
                // The token endpoint answered, but with no tokens for this code (a provider
                // that does not answer errors as OAuth JSON says so this way).
                other => FederationError::CodeRejected(other.to_string()),
            })?;
        let id_token = answer
            .id_token()
            .ok_or_else(|| FederationError::TokenInvalid("the provider sent no ID token".into()))?;
        let nonce = Nonce::new(flow.nonce.clone());
        let settings = &provider.settings;
        match read_claims(id_token, settings, &metadata, &nonce) {
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) => {
                // The provider may have rotated its keys since they were read.
                tracing::info!(provider = %settings.name, "ID token names an unknown key; reading the keys again");
                let fresh = self.metadata(provider, true).await?;
                read_claims(id_token, settings, &fresh, &nonce)
            }
            other => other,
        }
        .map_err(|e| {
            tracing::info!(provider = %settings.name, error = %e, "ID token refused");
            FederationError::TokenInvalid(e.to_string())
        })
    }
}

/// Checks the ID token (signature with the provider's keys, issuer, audience, expiry, nonce)
/// and reads what it asserts.
fn read_claims(
    token: &CoreIdToken,
    settings: &OidcProviderSettings,
    metadata: &CoreProviderMetadata,
    nonce: &Nonce,
) -> Result<Asserted, ClaimsVerificationError> {
    let verifier = IdTokenVerifier::new_public_client(
        ClientId::new(settings.client_id.clone()),
        metadata.issuer().clone(),
        metadata.jwks().clone(),
    )
    .set_allowed_algs(ALGORITHMS);
    let claims = token.claims(&verifier, nonce)?;
    let name = claims
        .name()
        .and_then(|n| n.get(None))
        .map(|n| n.as_str().to_owned())
        .or_else(|| {
            let given = claims.given_name().and_then(|n| n.get(None))?;
            let family = claims.family_name().and_then(|n| n.get(None));
            Some(match family {
                Some(f) => format!("{} {}", given.as_str(), f.as_str()),
                None => given.as_str().to_owned(),
            })
        });
    Ok(Asserted {
        provider: settings.name.clone(),
        subject: claims.subject().as_str().to_owned(),
        email: claims.email().map(|e| e.as_str().to_owned()),
        email_verified: claims.email_verified().unwrap_or(false),
        name,
    })
}

/// The client secret to authenticate to the token endpoint with: the configured one, or for
/// Apple a short-lived JWT signed with the team's key.
fn client_secret(settings: &OidcProviderSettings) -> Result<ClientSecret, FederationError> {
    if let Some(secret) = &settings.client_secret {
        return Ok(ClientSecret::new(secret.clone()));
    }
    match &settings.apple_key {
        Some(key) => apple_secret(key, &settings.client_id, chrono::Utc::now().timestamp())
            .map(ClientSecret::new)
            .map_err(|e| FederationError::Unavailable(format!("Apple client secret: {e}"))),
        None => Err(FederationError::Unavailable(
            "the provider has no client secret".into(),
        )),
    }
}

/// Apple's client secret: an ES256 JWT from the team (`iss`) for the client (`sub`), valid
/// for five minutes.
pub fn apple_secret(key: &AppleKey, client_id: &str, now: i64) -> anyhow::Result<String> {
    #[derive(Serialize)]
    struct Claims<'a> {
        iss: &'a str,
        iat: i64,
        exp: i64,
        aud: &'static str,
        sub: &'a str,
    }
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(key.key_id.clone());
    let signing = jsonwebtoken::EncodingKey::from_ec_pem(key.private_key_pem.as_bytes())?;
    let claims = Claims {
        iss: &key.team_id,
        iat: now,
        exp: now + 300,
        aud: "https://appleid.apple.com",
        sub: client_id,
    };
    Ok(jsonwebtoken::encode(&header, &claims, &signing)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flows_are_bound_to_the_cookie_that_started_them() {
        let flow = Flow {
            provider: "corp".into(),
            intent: Intent::SignIn,
            nonce: "n".into(),
            pkce_verifier: "v".into(),
            binding: digest("cookie-secret"),
        };
        assert!(flow.bound_to(Some("cookie-secret")));
        assert!(!flow.bound_to(Some("another")));
        assert!(!flow.bound_to(None));
    }

    #[test]
    fn intents_keep_their_account() {
        let user = UserId::new();
        let json = serde_json::to_string(&Intent::Link { user_id: user }).unwrap_or_default();
        let back: Intent = serde_json::from_str(&json).unwrap_or(Intent::SignIn);
        assert_eq!(back, Intent::Link { user_id: user });
    }
}
