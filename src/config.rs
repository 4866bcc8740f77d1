//! Settings: every `HEXMARKET_*` environment variable, parsed once at start into [`Settings`]
//! and passed down explicitly. A bad value stops the process with one line naming the variable.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines for a terminal.
    Human,
    /// One JSON object per line for log collectors.
    Json,
}

/// Which header trusted proxies report the client's address in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1` (nginx, HAProxy, most cloud load balancers).
    #[default]
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239).
    Forwarded,
}

/// Whose word is taken for the client's address (see `http::client_addr`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientAddressSettings {
    /// Peers whose forwarding header is believed; empty: nobody's.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub header: ForwardedHeader,
}

/// Connection settings for ScyllaDB, present when `HEXMARKET_SCYLLA_NODES` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScyllaSettings {
    /// Contact points, `host:port`.
    pub nodes: Vec<String>,
    pub keyspace: String,
    /// Replication factor used when `migrate` creates the keyspace.
    pub replication_factor: u8,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Preferred datacenter for load balancing, when the cluster has several.
    pub datacenter: Option<String>,
    /// Per-request timeout.
    pub request_timeout: Duration,
}

/// Twilio credentials, present when `HEXMARKET_TWILIO_ACCOUNT_SID` is set.
#[derive(Clone, PartialEq, Eq)]
pub struct TwilioSettings {
    pub base_url: String,
    pub account_sid: String,
    pub auth_token: String,
    /// Sender: an E.164 number or an alphanumeric sender id.
    pub from: String,
}

impl std::fmt::Debug for TwilioSettings {
    // The auth token never reaches logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioSettings")
            .field("base_url", &self.base_url)
            .field("account_sid", &self.account_sid)
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

/// Stripe credentials, present when `HEXMARKET_STRIPE_SECRET_KEY` is set.
#[derive(Clone, PartialEq, Eq)]
pub struct StripeSettings {
    /// API base; tests point it at localstripe or a loopback fake.
    pub api_base: String,
    pub secret_key: String,
    /// The webhook endpoint's signing secret (`whsec_…`).
    pub webhook_secret: String,
}

impl std::fmt::Debug for StripeSettings {
    // Neither secret ever reaches logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeSettings")
            .field("api_base", &self.api_base)
            .finish_non_exhaustive()
    }
}

/// An S3-compatible bucket for product images, present when `HEXMARKET_S3_BUCKET` is set.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Settings {
    pub bucket: String,
    /// Endpoint of an S3-compatible store (MinIO, R2, …); AWS S3 when unset.
    pub endpoint: Option<String>,
    pub region: String,
    /// Static credentials; when unset, the instance's metadata service provides them.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Whether a plain `http://` endpoint may be used (local MinIO only).
    pub allow_http: bool,
}

impl std::fmt::Debug for S3Settings {
    // The secret key never reaches logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("allow_http", &self.allow_http)
            .finish_non_exhaustive()
    }
}

/// Everything configurable about a hexmarket process.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub scylla: Option<ScyllaSettings>,
    pub redis_url: Option<String>,
    /// Prefix of every Redis key and channel, so several deployments can share one Redis.
    pub redis_prefix: String,
    pub log_format: LogFormat,
    /// `tracing` filter directives, e.g. `info,hexmarket=debug`.
    pub log_filter: String,
    /// Largest JSON request body accepted, in bytes.
    pub json_limit: usize,
    /// HTTP worker threads.
    pub workers: usize,
    /// Connections (WebSockets included) each HTTP worker holds at most; beyond them the node
    /// stops accepting until some close.
    pub max_connections_per_worker: usize,
    /// Actor threads (arbiters) that entity actors are spread over.
    pub actor_threads: usize,
    /// An entity actor that received nothing for this long is passivated.
    pub actor_idle: Duration,
    /// How long a graceful shutdown waits for in-flight requests.
    pub shutdown_timeout: Duration,
    /// How long an order waits for its payment before it expires and its stock is released.
    pub order_payment_timeout: Duration,
    /// A support ticket waiting on an administrator longer than this is overdue.
    pub support_overdue: Duration,
    /// How long a request holding an `Idempotency-Key` keeps it before a retry may take over
    /// (a request whose node died mid-way).
    pub idempotency_lease: Duration,
    /// Master secret (≥ 32 bytes) from which signing keys are derived; generated in the data
    /// directory on first start when unset.
    pub secret_key: Option<String>,
    /// HS256 key for access tokens (≥ 32 bytes); derived from the master secret when unset.
    pub jwt_secret: Option<String>,
    /// Whether the refresh cookie is marked `Secure`.
    pub secure_cookies: bool,
    /// SMTP server for email (`smtp://` or `smtps://`); email goes to the outbox when unset.
    pub smtp_url: Option<String>,
    /// Sender of every email, e.g. `hexmarket <no-reply@example.com>`.
    pub mail_from: String,
    /// Twilio for SMS; SMS go to the outbox when unset.
    pub twilio: Option<TwilioSettings>,
    /// Whether this node consumes order events into notifications and sends them (one node of
    /// those that do holds the lease at a time); off for nodes that only serve requests.
    pub notifications: bool,
    /// Whether this node folds order and courier events into the analytics rollups (one
    /// node at a time does, by lease; reports are answered either way).
    pub analytics: bool,
    /// Whether webhook endpoints may resolve to private, loopback or reserved addresses.
    pub webhook_allow_private: bool,
    /// The money ledger: default rates, hold period, payout schedule.
    pub ledger: LedgerSettings,
    /// Stripe for payments; payments are simulated when unset.
    pub stripe: Option<StripeSettings>,
    /// Base URL of the site, for links in emails.
    pub public_url: String,
    /// S3 for product images; they go to `<data dir>/media` when unset.
    pub s3: Option<S3Settings>,
    /// Couriers, dispatch and the WebSocket streams.
    pub live: LiveSettings,
    /// Trusted proxies, for the client's address behind them.
    pub client_address: ClientAddressSettings,
    /// OpenID Connect providers users may sign in with (none by default).
    pub oidc: Vec<OidcProviderSettings>,
    /// Passkeys: who the relying party is and which origins may use them.
    pub webauthn: WebauthnSettings,
    /// The web app served at `/`.
    pub webapp: WebAppSettings,
}

/// How a provider differs from plain OpenID Connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OidcPreset {
    Generic,
    /// `https://accounts.google.com`; asks the user to pick an account.
    Google,
    /// `https://appleid.apple.com`: the answer comes back as a form POST, the client secret is
    /// a JWT signed with the team's key, and `email_verified` may be a string.
    Apple,
}

/// Apple's client secret is made from a key, not configured.
#[derive(Clone)]
pub struct AppleKey {
    pub team_id: String,
    pub key_id: String,
    /// PKCS#8 PEM of the P-256 key from Apple's developer console.
    pub private_key_pem: String,
}

impl std::fmt::Debug for AppleKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppleKey")
            .field("team_id", &self.team_id)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// One OpenID Connect provider.
#[derive(Clone)]
pub struct OidcProviderSettings {
    /// Its name in URLs and in linked identities (`google`, `apple`, `corp`).
    pub name: String,
    /// What the sign-in page calls it.
    pub display_name: String,
    pub preset: OidcPreset,
    /// The issuer URL; discovery reads `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    pub apple_key: Option<AppleKey>,
    pub scopes: Vec<String>,
}

impl std::fmt::Debug for OidcProviderSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcProviderSettings")
            .field("name", &self.name)
            .field("preset", &self.preset)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("apple_key", &self.apple_key)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// The WebAuthn relying party.
#[derive(Debug, Clone)]
pub struct WebauthnSettings {
    /// The domain passkeys are bound to (the public URL's host by default).
    pub rp_id: String,
    /// Origins whose pages may register and use passkeys (the public URL's by default).
    pub origins: Vec<String>,
}

/// The web app's map and payment form.
#[derive(Debug, Clone)]
pub struct WebAppSettings {
    /// Map tiles, an `{z}/{x}/{y}` URL template (with `{s}` for subdomains); `None` draws the
    /// map on a plain background.
    pub map_tile_url: Option<String>,
    /// The tiles' attribution, shown on every map.
    pub map_attribution: String,
    /// Stripe's publishable key, for the Payment Element when Stripe takes payments.
    pub stripe_publishable_key: Option<String>,
}

/// The money ledger.
#[derive(Debug, Clone)]
pub struct LedgerSettings {
    /// Whether this node books order events into the ledger and runs payouts (one node of
    /// those that do holds the lease at a time).
    pub book: bool,
    /// Commission and courier-fee rates for stores without their own (until an admin sets
    /// others; frozen on each order at checkout).
    pub rates: crate::domain::ledger::Rates,
    /// How long after a verified delivery its money becomes payable.
    pub hold: Duration,
    /// How often payouts run by themselves (zero: only when an admin runs them).
    pub payout_every: Duration,
}

/// Couriers, dispatch and the WebSocket streams.
#[derive(Debug, Clone)]
pub struct LiveSettings {
    /// Browser origins allowed to open a WebSocket (requests without `Origin` always may).
    pub ws_allowed_origins: Vec<String>,
    /// Open WebSocket sessions one user may hold on one node.
    pub ws_max_per_user: usize,
    /// GPS points less accurate than this (metres) are dropped.
    pub gps_max_accuracy_m: f64,
    /// How long a courier's location trail is kept.
    pub trail_retention: Duration,
    /// How long the trail drainer gathers couriers' points before writing them in one go.
    pub trail_flush: Duration,
    /// How long a courier has to answer a delivery offer.
    pub offer_timeout: Duration,
    /// How far from the vendor the dispatcher looks for couriers, in kilometres.
    pub dispatch_radius_km: f64,
}

/// A setting that could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{var}: {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub reason: String,
}

impl Settings {
    /// The platform's live settings as the environment gives them: version 1 at the
    /// platform's first start (after that, administrators change them; see
    /// [`crate::settings`]).
    pub fn platform_defaults(&self) -> crate::domain::settings::PlatformSettings {
        crate::domain::settings::PlatformSettings {
            commission_bps: self.ledger.rates.commission_bps,
            courier_fee_bps: self.ledger.rates.courier_fee_bps,
            delivery_fees: crate::domain::settings::DeliveryFees::default(),
            dispatch_radius_km: self.live.dispatch_radius_km,
            offer_timeout_secs: self.live.offer_timeout.as_secs(),
            payment_timeout_secs: self.order_payment_timeout.as_secs(),
            gps_max_accuracy_m: self.live.gps_max_accuracy_m,
            payout_hold_secs: self.ledger.hold.as_secs(),
            support_overdue_secs: self.support_overdue.as_secs(),
        }
    }

    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    /// Reads the settings from `(name, value)` pairs; unknown names are ignored.
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let env = Env(vars
            .into_iter()
            .filter(|(k, _)| k.starts_with("HEXMARKET_"))
            .collect());
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());

        let scylla = match env.get("HEXMARKET_SCYLLA_NODES") {
            None => None,
            Some(raw) => Some(ScyllaSettings {
                nodes: parse_nodes(raw)?,
                keyspace: env.parse_with(
                    "HEXMARKET_SCYLLA_KEYSPACE",
                    "hexmarket",
                    parse_identifier,
                )?,
                replication_factor: env.parse_num(
                    "HEXMARKET_SCYLLA_REPLICATION_FACTOR",
                    1,
                    1..=9,
                )?,
                username: env.get("HEXMARKET_SCYLLA_USERNAME").map(str::to_owned),
                password: env.get("HEXMARKET_SCYLLA_PASSWORD").map(str::to_owned),
                datacenter: env.get("HEXMARKET_SCYLLA_DATACENTER").map(str::to_owned),
                request_timeout: Duration::from_millis(env.parse_num(
                    "HEXMARKET_SCYLLA_TIMEOUT_MS",
                    5_000,
                    100..=120_000,
                )?),
            }),
        };

        let redis_url = match env.get("HEXMARKET_REDIS_URL") {
            None => None,
            Some(url) if url.starts_with("redis://") || url.starts_with("rediss://") => {
                Some(url.to_owned())
            }
            Some(_) => {
                return Err(err(
                    "HEXMARKET_REDIS_URL",
                    "must start with redis:// or rediss://",
                ));
            }
        };

        let secret_key = env.get("HEXMARKET_SECRET_KEY").map(str::to_owned);
        if secret_key.as_ref().is_some_and(|key| key.len() < 32) {
            return Err(err("HEXMARKET_SECRET_KEY", "must be at least 32 bytes"));
        }

        let jwt_secret = env.get("HEXMARKET_JWT_SECRET").map(str::to_owned);
        if jwt_secret.as_ref().is_some_and(|key| key.len() < 32) {
            return Err(err("HEXMARKET_JWT_SECRET", "must be at least 32 bytes"));
        }

        let smtp_url = match env.get("HEXMARKET_SMTP_URL") {
            None => None,
            Some(url) if url.starts_with("smtp://") || url.starts_with("smtps://") => {
                Some(url.to_owned())
            }
            Some(_) => {
                return Err(err(
                    "HEXMARKET_SMTP_URL",
                    "must start with smtp:// or smtps://",
                ));
            }
        };
        let twilio = match env.get("HEXMARKET_TWILIO_ACCOUNT_SID") {
            None => None,
            Some(sid) => Some(TwilioSettings {
                base_url: env.parse_with(
                    "HEXMARKET_TWILIO_BASE_URL",
                    "https://api.twilio.com",
                    parse_http_url,
                )?,
                account_sid: sid.to_owned(),
                auth_token: env
                    .get("HEXMARKET_TWILIO_AUTH_TOKEN")
                    .ok_or_else(|| {
                        err(
                            "HEXMARKET_TWILIO_AUTH_TOKEN",
                            "must be set with HEXMARKET_TWILIO_ACCOUNT_SID",
                        )
                    })?
                    .to_owned(),
                from: env
                    .get("HEXMARKET_TWILIO_FROM")
                    .ok_or_else(|| {
                        err(
                            "HEXMARKET_TWILIO_FROM",
                            "must be set with HEXMARKET_TWILIO_ACCOUNT_SID",
                        )
                    })?
                    .to_owned(),
            }),
        };
        let stripe = match env.get("HEXMARKET_STRIPE_SECRET_KEY") {
            None => None,
            Some(key) => Some(StripeSettings {
                api_base: env.parse_with(
                    "HEXMARKET_STRIPE_API_BASE",
                    "https://api.stripe.com",
                    parse_http_url,
                )?,
                secret_key: key.to_owned(),
                webhook_secret: env
                    .get("HEXMARKET_STRIPE_WEBHOOK_SECRET")
                    .ok_or_else(|| {
                        err(
                            "HEXMARKET_STRIPE_WEBHOOK_SECRET",
                            "must be set with HEXMARKET_STRIPE_SECRET_KEY",
                        )
                    })?
                    .to_owned(),
            }),
        };
        let s3 = parse_s3(&env)?;
        let listen = env.parse_with("HEXMARKET_LISTEN", "127.0.0.1:8080", |s| {
            s.parse::<SocketAddr>()
                .map_err(|_| format!("expected host:port, got {s:?}"))
        })?;
        let public_url = env.parse_with(
            "HEXMARKET_PUBLIC_URL",
            &format!("http://{listen}"),
            parse_http_url,
        )?;

        Ok(Settings {
            listen,
            data_dir: PathBuf::from(env.get("HEXMARKET_DATA_DIR").unwrap_or("./data")),
            scylla,
            redis_url,
            redis_prefix: env.parse_with(
                "HEXMARKET_REDIS_PREFIX",
                "hexmarket",
                parse_identifier,
            )?,
            log_format: env.parse_with("HEXMARKET_LOG_FORMAT", "human", |s| match s {
                "human" => Ok(LogFormat::Human),
                "json" => Ok(LogFormat::Json),
                other => Err(format!("expected human or json, got {other:?}")),
            })?,
            log_filter: env.parse_with("HEXMARKET_LOG", "info", |s| {
                tracing_subscriber::EnvFilter::try_new(s)
                    .map(|_| s.to_owned())
                    .map_err(|e| format!("not a log filter: {e}"))
            })?,
            json_limit: env.parse_num("HEXMARKET_JSON_LIMIT_BYTES", 1 << 20, 1024..=(64 << 20))?,
            workers: env.parse_num("HEXMARKET_WORKERS", cores, 1..=256)?,
            max_connections_per_worker: env.parse_num(
                "HEXMARKET_MAX_CONNECTIONS_PER_WORKER",
                25_000,
                1..=1_000_000,
            )?,
            actor_threads: env.parse_num("HEXMARKET_ACTOR_THREADS", cores, 1..=256)?,
            actor_idle: Duration::from_secs(env.parse_num(
                "HEXMARKET_ACTOR_IDLE_SECS",
                300,
                1..=86_400,
            )?),
            shutdown_timeout: Duration::from_secs(env.parse_num(
                "HEXMARKET_SHUTDOWN_TIMEOUT_SECS",
                30,
                1..=600,
            )?),
            order_payment_timeout: Duration::from_secs(env.parse_num(
                "HEXMARKET_ORDER_PAYMENT_TIMEOUT_SECS",
                900,
                1..=86_400,
            )?),
            support_overdue: Duration::from_secs(env.parse_num(
                "HEXMARKET_SUPPORT_OVERDUE_SECS",
                14_400,
                60..=30 * 86_400,
            )?),
            idempotency_lease: Duration::from_secs(env.parse_num(
                "HEXMARKET_IDEMPOTENCY_LEASE_SECS",
                30,
                1..=3_600,
            )?),
            secret_key,
            jwt_secret,
            secure_cookies: env.parse_with("HEXMARKET_COOKIE_SECURE", "true", |s| match s {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                other => Err(format!("expected true or false, got {other:?}")),
            })?,
            smtp_url,
            notifications: env.parse_with("HEXMARKET_NOTIFICATIONS", "true", parse_bool)?,
            analytics: env.parse_with("HEXMARKET_ANALYTICS", "true", parse_bool)?,
            ledger: LedgerSettings {
                book: env.parse_with("HEXMARKET_LEDGER", "true", parse_bool)?,
                rates: crate::domain::ledger::Rates {
                    commission_bps: env.parse_num("HEXMARKET_COMMISSION_BPS", 1_500, 0..=10_000)?,
                    courier_fee_bps: env.parse_num(
                        "HEXMARKET_COURIER_FEE_BPS",
                        8_000,
                        0..=10_000,
                    )?,
                },
                hold: Duration::from_secs(env.parse_num(
                    "HEXMARKET_PAYOUT_HOLD_SECS",
                    86_400,
                    0..=90 * 86_400,
                )?),
                payout_every: Duration::from_secs(env.parse_num(
                    "HEXMARKET_PAYOUT_EVERY_SECS",
                    86_400,
                    0..=90 * 86_400,
                )?),
            },
            webhook_allow_private: env.parse_with(
                "HEXMARKET_WEBHOOK_ALLOW_PRIVATE",
                "false",
                parse_bool,
            )?,
            mail_from: env
                .get("HEXMARKET_MAIL_FROM")
                .unwrap_or("hexmarket <no-reply@hexmarket.invalid>")
                .to_owned(),
            twilio,
            stripe,
            live: LiveSettings {
                ws_allowed_origins: env.parse_with(
                    "HEXMARKET_WS_ALLOWED_ORIGINS",
                    &origin_of(&public_url),
                    parse_origins,
                )?,
                ws_max_per_user: env.parse_num("HEXMARKET_WS_MAX_PER_USER", 8, 1..=1_000)?,
                gps_max_accuracy_m: env.parse_num(
                    "HEXMARKET_GPS_MAX_ACCURACY_M",
                    100.0,
                    1.0..=10_000.0,
                )?,
                trail_retention: Duration::from_secs(
                    86_400 * env.parse_num("HEXMARKET_TRAIL_RETENTION_DAYS", 30, 1..=3_650)?,
                ),
                trail_flush: Duration::from_millis(env.parse_num(
                    "HEXMARKET_TRAIL_FLUSH_MS",
                    10,
                    0..=1_000,
                )?),
                offer_timeout: Duration::from_secs(env.parse_num(
                    "HEXMARKET_OFFER_TIMEOUT_SECS",
                    20,
                    1..=600,
                )?),
                dispatch_radius_km: env.parse_num(
                    "HEXMARKET_DISPATCH_RADIUS_KM",
                    8.0,
                    0.5..=50.0,
                )?,
            },
            oidc: parse_oidc(&env)?,
            webauthn: {
                let (rp_id, origin) = webauthn_defaults(&public_url);
                WebauthnSettings {
                    rp_id: env.parse_with("HEXMARKET_WEBAUTHN_RP_ID", &rp_id, parse_rp_id)?,
                    origins: env.parse_with(
                        "HEXMARKET_WEBAUTHN_ORIGINS",
                        &origin,
                        parse_origins,
                    )?,
                }
            },
            webapp: WebAppSettings {
                map_tile_url: env.parse_with(
                    "HEXMARKET_MAP_TILE_URL",
                    DEFAULT_TILE_URL,
                    parse_tile_url,
                )?,
                map_attribution: env
                    .get("HEXMARKET_MAP_ATTRIBUTION")
                    .unwrap_or(DEFAULT_TILE_ATTRIBUTION)
                    .to_owned(),
                stripe_publishable_key: env
                    .get("HEXMARKET_STRIPE_PUBLISHABLE_KEY")
                    .map(str::to_owned),
            },
            public_url,
            s3,
            client_address: ClientAddressSettings {
                trusted_proxies: env.parse_with(
                    "HEXMARKET_TRUSTED_PROXIES",
                    "",
                    parse_trusted_proxies,
                )?,
                header: env.parse_with(
                    "HEXMARKET_FORWARDED_HEADER",
                    "x-forwarded-for",
                    |s| match s.to_ascii_lowercase().as_str() {
                        "x-forwarded-for" => Ok(ForwardedHeader::XForwardedFor),
                        "forwarded" => Ok(ForwardedHeader::Forwarded),
                        _ => Err(format!("expected x-forwarded-for or forwarded, got {s:?}")),
                    },
                )?,
            },
        })
    }

    /// Settings for tests and tools: defaults, with the given data directory and an ephemeral
    /// port on loopback.
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        let mut settings = Settings::from_vars(std::iter::empty())
            .unwrap_or_else(|_| unreachable!("the defaults are valid"));
        settings.data_dir = data_dir.into();
        settings.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        settings
    }
}

struct Env(HashMap<String, String>);

impl Env {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }

    fn parse_with<T>(
        &self,
        name: &'static str,
        default: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        parse(self.get(name).unwrap_or(default).trim()).map_err(|reason| err(name, reason))
    }

    fn parse_num<T>(
        &self,
        name: &'static str,
        default: T,
        range: std::ops::RangeInclusive<T>,
    ) -> Result<T, ConfigError>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        let Some(raw) = self.get(name) else {
            return Ok(default);
        };
        let value: T = raw
            .trim()
            .parse()
            .map_err(|_| err(name, format!("expected a number, got {raw:?}")))?;
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(err(
                name,
                format!(
                    "must be between {} and {}, got {value}",
                    range.start(),
                    range.end()
                ),
            ))
        }
    }
}

fn err(var: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        reason: reason.into(),
    }
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(format!("expected true or false, got {other:?}")),
    }
}

fn parse_s3(env: &Env) -> Result<Option<S3Settings>, ConfigError> {
    let Some(bucket) = env.get("HEXMARKET_S3_BUCKET") else {
        return Ok(None);
    };
    let allow_http = env.parse_with("HEXMARKET_S3_ALLOW_HTTP", "false", parse_bool)?;
    let endpoint = match env.get("HEXMARKET_S3_ENDPOINT") {
        None => None,
        Some(raw) => {
            let url = parse_http_url(raw.trim()).map_err(|r| err("HEXMARKET_S3_ENDPOINT", r))?;
            if url.starts_with("http://") && !allow_http {
                return Err(err(
                    "HEXMARKET_S3_ENDPOINT",
                    "is plain http://; set HEXMARKET_S3_ALLOW_HTTP=true to allow it",
                ));
            }
            Some(url)
        }
    };
    let access_key_id = env.get("HEXMARKET_S3_ACCESS_KEY_ID").map(str::to_owned);
    let secret_access_key = env.get("HEXMARKET_S3_SECRET_ACCESS_KEY").map(str::to_owned);
    match (&access_key_id, &secret_access_key) {
        (Some(_), None) => {
            return Err(err(
                "HEXMARKET_S3_SECRET_ACCESS_KEY",
                "must be set with HEXMARKET_S3_ACCESS_KEY_ID",
            ));
        }
        (None, Some(_)) => {
            return Err(err(
                "HEXMARKET_S3_ACCESS_KEY_ID",
                "must be set with HEXMARKET_S3_SECRET_ACCESS_KEY",
            ));
        }
        _ => {}
    }
    Ok(Some(S3Settings {
        bucket: bucket.trim().to_owned(),
        endpoint,
        region: env.parse_with("HEXMARKET_S3_REGION", "us-east-1", |s| Ok(s.to_owned()))?,
        access_key_id,
        secret_access_key,
        allow_http,
    }))
}

fn parse_nodes(raw: &str) -> Result<Vec<String>, ConfigError> {
    let nodes: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            if s.contains(':') {
                s.to_owned()
            } else {
                format!("{s}:9042")
            }
        })
        .collect();
    if nodes.is_empty() {
        return Err(err(
            "HEXMARKET_SCYLLA_NODES",
            "expected a comma-separated list of host[:port]",
        ));
    }
    Ok(nodes)
}

/// An `http://` or `https://` URL, without a trailing slash.
fn parse_http_url(s: &str) -> Result<String, String> {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !s.chars().any(char::is_whitespace) => {
            Ok(s.trim_end_matches('/').to_owned())
        }
        _ => Err(format!("expected an http:// or https:// URL, got {s:?}")),
    }
}

/// OpenStreetMap's standard tiles (<https://operations.osmfoundation.org/policies/tiles/>).
const DEFAULT_TILE_URL: &str = "https://tile.openstreetmap.org/{z}/{x}/{y}.png";
const DEFAULT_TILE_ATTRIBUTION: &str = "© OpenStreetMap contributors";

/// A tile URL template: `http(s)://…` with `{z}`, `{x}` and `{y}`; `none` for no tiles.
fn parse_tile_url(s: &str) -> Result<Option<String>, String> {
    if s.is_empty() || s.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let url = parse_http_url(s)?;
    let host = url.split_once("://").map_or("", |(_, rest)| rest);
    let host = host.split('/').next().unwrap_or_default();
    let placeholders = ["{z}", "{x}", "{y}"].iter().all(|p| url.contains(p));
    if !placeholders || host.is_empty() || host.contains(['"', '\'', ';', ' ']) {
        return Err(format!(
            "expected an http(s) URL template with {{z}}, {{x}} and {{y}}, or none, got {s:?}"
        ));
    }
    Ok(Some(url))
}

/// The origin (`scheme://host[:port]`) of a URL that passed [`parse_http_url`].
fn origin_of(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let host = rest.split('/').next().unwrap_or(rest);
    format!("{scheme}://{host}")
}

/// The host (without port) of a URL that passed [`parse_http_url`].
fn host_of(url: &str) -> String {
    let origin = origin_of(url);
    let host = origin.split_once("://").map_or(origin.as_str(), |(_, h)| h);
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest).to_owned();
    }
    host.split(':').next().unwrap_or(host).to_owned()
}

/// The relying party and origin passkeys default to: the public URL's host and origin, except
/// that an IP address (which WebAuthn does not take) stands for `localhost` on the same port.
fn webauthn_defaults(public_url: &str) -> (String, String) {
    let host = host_of(public_url);
    if host.parse::<std::net::IpAddr>().is_err() {
        return (host, origin_of(public_url));
    }
    let origin = origin_of(public_url);
    let (scheme, rest) = origin.split_once("://").unwrap_or(("http", &origin));
    let port = rest
        .rsplit_once(':')
        .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
        .map(|(_, p)| format!(":{p}"))
        .unwrap_or_default();
    (
        "localhost".to_owned(),
        format!("{scheme}://localhost{port}"),
    )
}

/// A WebAuthn relying-party id: a lowercase domain name (no scheme, port or path).
fn parse_rp_id(s: &str) -> Result<String, String> {
    let fine = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    if fine {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "expected a lowercase domain such as example.com, got {s:?}"
        ))
    }
}

const OIDC_VAR: &str = "HEXMARKET_OIDC_PROVIDERS";

/// `HEXMARKET_OIDC_PROVIDERS` names the providers; each has its own variables
/// (`HEXMARKET_OIDC_<NAME>_ISSUER`, `_CLIENT_ID`, `_CLIENT_SECRET`, `_SCOPES`, `_DISPLAY_NAME`,
/// `_PRESET`, and for Apple `_TEAM_ID`, `_KEY_ID`, `_PRIVATE_KEY_FILE`).
fn parse_oidc(env: &Env) -> Result<Vec<OidcProviderSettings>, ConfigError> {
    let Some(list) = env.get(OIDC_VAR) else {
        return Ok(Vec::new());
    };
    let mut providers: Vec<OidcProviderSettings> = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let valid = name.len() <= 32
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid {
            return Err(err(
                OIDC_VAR,
                format!("a provider name is 1 to 32 of a-z, 0-9 and -, got {name:?}"),
            ));
        }
        if providers.iter().any(|p| p.name == name) {
            return Err(err(OIDC_VAR, format!("{name} is named twice")));
        }
        providers.push(parse_oidc_provider(env, name)?);
    }
    Ok(providers)
}

fn parse_oidc_provider(env: &Env, name: &str) -> Result<OidcProviderSettings, ConfigError> {
    let prefix = format!(
        "HEXMARKET_OIDC_{}_",
        name.to_ascii_uppercase().replace('-', "_")
    );
    let var = |field: &str| format!("{prefix}{field}");
    let get = |field: &str| env.get(&var(field)).map(|v| v.trim().to_owned());
    let missing = |field: &str| err(OIDC_VAR, format!("{} must be set", var(field)));
    let preset = match get("PRESET").as_deref().unwrap_or(name) {
        "google" => OidcPreset::Google,
        "apple" => OidcPreset::Apple,
        "generic" => OidcPreset::Generic,
        _ if get("PRESET").is_none() => OidcPreset::Generic,
        other => {
            return Err(err(
                OIDC_VAR,
                format!(
                    "{}: expected google, apple or generic, got {other:?}",
                    var("PRESET")
                ),
            ));
        }
    };
    let (default_issuer, default_scopes, default_display) = match preset {
        OidcPreset::Google => (
            "https://accounts.google.com",
            "openid email profile",
            "Google",
        ),
        OidcPreset::Apple => ("https://appleid.apple.com", "openid email name", "Apple"),
        OidcPreset::Generic => ("", "openid email profile", name),
    };
    let issuer = match get("ISSUER") {
        Some(raw) => parse_http_url(&raw)
            .map_err(|reason| err(OIDC_VAR, format!("{}: {reason}", var("ISSUER"))))?,
        None if !default_issuer.is_empty() => default_issuer.to_owned(),
        None => return Err(missing("ISSUER")),
    };
    let client_id = get("CLIENT_ID").ok_or_else(|| missing("CLIENT_ID"))?;
    let apple_key = match preset {
        OidcPreset::Apple if get("CLIENT_SECRET").is_none() => {
            let path = get("PRIVATE_KEY_FILE").ok_or_else(|| missing("PRIVATE_KEY_FILE"))?;
            let private_key_pem = std::fs::read_to_string(&path).map_err(|e| {
                err(
                    OIDC_VAR,
                    format!("{}: cannot read {path}: {e}", var("PRIVATE_KEY_FILE")),
                )
            })?;
            Some(AppleKey {
                team_id: get("TEAM_ID").ok_or_else(|| missing("TEAM_ID"))?,
                key_id: get("KEY_ID").ok_or_else(|| missing("KEY_ID"))?,
                private_key_pem,
            })
        }
        _ => None,
    };
    let client_secret = get("CLIENT_SECRET");
    if client_secret.is_none() && apple_key.is_none() {
        return Err(missing("CLIENT_SECRET"));
    }
    let scopes: Vec<String> = get("SCOPES")
        .as_deref()
        .unwrap_or(default_scopes)
        .split([' ', ','])
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if !scopes.iter().any(|s| s == "openid") {
        return Err(err(
            OIDC_VAR,
            format!("{}: must include openid", var("SCOPES")),
        ));
    }
    Ok(OidcProviderSettings {
        name: name.to_owned(),
        display_name: get("DISPLAY_NAME").unwrap_or_else(|| default_display.to_owned()),
        preset,
        issuer,
        client_id,
        client_secret,
        apple_key,
        scopes,
    })
}

/// A comma-separated list of origins (`http(s)://host[:port]`, no path).
fn parse_origins(s: &str) -> Result<Vec<String>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(|o| {
            let url = parse_http_url(o)?;
            if origin_of(&url) == url {
                Ok(url)
            } else {
                Err(format!("an origin has no path, got {o:?}"))
            }
        })
        .collect()
}

/// A comma-separated list of IP addresses and CIDR networks, IPv4 or IPv6 (`10.0.0.0/8,
/// 2001:db8::/32, 192.0.2.1`); empty for none.
pub fn parse_trusted_proxies(s: &str) -> Result<Vec<ipnet::IpNet>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<ipnet::IpNet>()
                .map(|net| net.trunc())
                .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| format!("expected IP addresses or CIDR networks, got {p:?}"))
        })
        .collect()
}

/// Keyspace names and key prefixes: a letter, then letters, digits or `_`, at most 48.
fn parse_identifier(s: &str) -> Result<String, String> {
    let mut chars = s.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 48;
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "expected a letter followed by letters, digits or _ (at most 48), got {s:?}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_tiles_are_a_url_template_or_none() {
        let default = Settings::from_vars(vars(&[])).unwrap();
        assert_eq!(
            default.webapp.map_tile_url.as_deref(),
            Some("https://tile.openstreetmap.org/{z}/{x}/{y}.png")
        );
        let none = Settings::from_vars(vars(&[("HEXMARKET_MAP_TILE_URL", "none")])).unwrap();
        assert_eq!(none.webapp.map_tile_url, None);
        let own = Settings::from_vars(vars(&[(
            "HEXMARKET_MAP_TILE_URL",
            "https://{s}.tiles.example.com/{z}/{x}/{y}@2x.png",
        )]))
        .unwrap();
        assert!(own.webapp.map_tile_url.is_some());
        for bad in [
            "tiles.example.com/{z}/{x}/{y}",
            "https://t.example.com/map.png",
        ] {
            let e = Settings::from_vars(vars(&[("HEXMARKET_MAP_TILE_URL", bad)])).unwrap_err();
            assert_eq!(e.var, "HEXMARKET_MAP_TILE_URL", "{bad}");
        }
    }

    #[test]
    fn passkeys_default_to_the_public_host_or_localhost() {
        assert_eq!(
            webauthn_defaults("https://shop.example.com"),
            (
                "shop.example.com".to_owned(),
                "https://shop.example.com".to_owned()
            )
        );
        assert_eq!(
            webauthn_defaults("http://127.0.0.1:8080"),
            ("localhost".to_owned(), "http://localhost:8080".to_owned())
        );
        assert_eq!(
            webauthn_defaults("http://[::1]:9000/base"),
            ("localhost".to_owned(), "http://localhost:9000".to_owned())
        );
    }

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_the_embedded_store_on_loopback_8080() {
        let s = Settings::from_vars(vars(&[])).unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.data_dir, PathBuf::from("./data"));
        assert!(s.scylla.is_none());
        assert!(s.redis_url.is_none());
        assert_eq!(s.json_limit, 1 << 20);
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let e = Settings::from_vars(vars(&[("HEXMARKET_LISTEN", "nope")])).unwrap_err();
        assert_eq!(e.var, "HEXMARKET_LISTEN");
        let e = Settings::from_vars(vars(&[("HEXMARKET_WORKERS", "0")])).unwrap_err();
        assert_eq!(e.var, "HEXMARKET_WORKERS");
        let e = Settings::from_vars(vars(&[("HEXMARKET_REDIS_URL", "http://x")])).unwrap_err();
        assert_eq!(e.var, "HEXMARKET_REDIS_URL");
        let e = Settings::from_vars(vars(&[("HEXMARKET_SECRET_KEY", "short")])).unwrap_err();
        assert_eq!(e.var, "HEXMARKET_SECRET_KEY");
        let e = Settings::from_vars(vars(&[
            ("HEXMARKET_SCYLLA_NODES", "a"),
            ("HEXMARKET_SCYLLA_KEYSPACE", "1bad;drop"),
        ]))
        .unwrap_err();
        assert_eq!(e.var, "HEXMARKET_SCYLLA_KEYSPACE");
    }

    #[test]
    fn s3_is_off_by_default_and_checks_its_group() {
        assert!(Settings::from_vars(vars(&[])).unwrap().s3.is_none());
        let s = Settings::from_vars(vars(&[
            ("HEXMARKET_S3_BUCKET", "images"),
            ("HEXMARKET_S3_ENDPOINT", "http://minio:9000/"),
            ("HEXMARKET_S3_ALLOW_HTTP", "true"),
            ("HEXMARKET_S3_ACCESS_KEY_ID", "minio"),
            ("HEXMARKET_S3_SECRET_ACCESS_KEY", "minio-secret"),
        ]))
        .unwrap();
        let s3 = s.s3.unwrap();
        assert_eq!(s3.endpoint.as_deref(), Some("http://minio:9000"));
        assert_eq!(s3.region, "us-east-1");
        assert!(!format!("{s3:?}").contains("minio-secret"));
        let e = Settings::from_vars(vars(&[
            ("HEXMARKET_S3_BUCKET", "images"),
            ("HEXMARKET_S3_ENDPOINT", "http://minio:9000"),
        ]))
        .unwrap_err();
        assert_eq!(e.var, "HEXMARKET_S3_ENDPOINT");
        let e = Settings::from_vars(vars(&[
            ("HEXMARKET_S3_BUCKET", "images"),
            ("HEXMARKET_S3_ACCESS_KEY_ID", "minio"),
        ]))
        .unwrap_err();
        assert_eq!(e.var, "HEXMARKET_S3_SECRET_ACCESS_KEY");
    }

    #[test]
    fn trusted_proxies_are_addresses_or_networks_of_either_family() {
        assert!(
            Settings::from_vars(vars(&[]))
                .unwrap()
                .client_address
                .trusted_proxies
                .is_empty(),
            "nobody is trusted by default"
        );
        let s = Settings::from_vars(vars(&[
            (
                "HEXMARKET_TRUSTED_PROXIES",
                " 10.0.0.0/8, 192.0.2.1 ,2001:db8::/32, ::1",
            ),
            ("HEXMARKET_FORWARDED_HEADER", "Forwarded"),
        ]))
        .unwrap();
        let shown: Vec<String> = s
            .client_address
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            shown,
            ["10.0.0.0/8", "192.0.2.1/32", "2001:db8::/32", "::1/128"]
        );
        assert_eq!(s.client_address.header, ForwardedHeader::Forwarded);
        for bad in ["10.0.0.0/33", "proxy.internal", "10.0.0.1, nope", "::1/129"] {
            let e = Settings::from_vars(vars(&[("HEXMARKET_TRUSTED_PROXIES", bad)])).unwrap_err();
            assert_eq!(e.var, "HEXMARKET_TRUSTED_PROXIES", "{bad}");
        }
        let e =
            Settings::from_vars(vars(&[("HEXMARKET_FORWARDED_HEADER", "x-real-ip")])).unwrap_err();
        assert_eq!(e.var, "HEXMARKET_FORWARDED_HEADER");
    }

    #[test]
    fn scylla_nodes_get_the_default_port() {
        let s = Settings::from_vars(vars(&[("HEXMARKET_SCYLLA_NODES", "a, b:19042")])).unwrap();
        let scylla = s.scylla.unwrap();
        assert_eq!(scylla.nodes, vec!["a:9042", "b:19042"]);
        assert_eq!(scylla.keyspace, "hexmarket");
    }

    #[test]
    fn stripe_needs_its_webhook_secret_and_never_shows_either_secret() {
        assert!(Settings::from_vars(vars(&[])).unwrap().stripe.is_none());
        let e =
            Settings::from_vars(vars(&[("HEXMARKET_STRIPE_SECRET_KEY", "sk_test_1")])).unwrap_err();
        assert_eq!(e.var, "HEXMARKET_STRIPE_WEBHOOK_SECRET");
        let s = Settings::from_vars(vars(&[
            ("HEXMARKET_STRIPE_SECRET_KEY", "sk_test_1"),
            ("HEXMARKET_STRIPE_WEBHOOK_SECRET", "whsec_1"),
            ("HEXMARKET_STRIPE_API_BASE", "http://127.0.0.1:12111/"),
        ]))
        .unwrap();
        let stripe = s.stripe.unwrap();
        assert_eq!(stripe.api_base, "http://127.0.0.1:12111");
        let shown = format!("{stripe:?}");
        assert!(!shown.contains("sk_test_1") && !shown.contains("whsec_1"));
    }
}
