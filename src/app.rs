//! Building and running a hexmarket node: pick the backends the settings name, start the
//! actor runtime, serve HTTP, and on shutdown persist every live actor.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, web};
use anyhow::Context as _;

use crate::actors::courier::{self, CourierDeps};
use crate::actors::order::{self, OrderDeps};
use crate::actors::trail::TrailDrainer;
use crate::actors::{ArbiterPool, Registry, WeakRegistry};
use crate::analytics::Analytics;
use crate::bus::SharedBus;
use crate::bus::local::LocalBus;
use crate::bus::redis::RedisBus;
use crate::cache::{LocalCache, RedisCache, SharedCache};
use crate::catalog::{Catalog, CatalogParts};
use crate::clock::Clock;
use crate::config::Settings;
use crate::dispatch::board::Board;
use crate::dispatch::index::CourierIndex;
use crate::dispatch::queue::DispatchQueue;
use crate::fulfilment::Fulfilment;
use crate::fulfilment::checkout::{Checkout, CheckoutParts};
use crate::fulfilment::dispatcher::{Dispatcher, DispatcherParts, Live};
use crate::fulfilment::orders::{Orders, OrdersParts};
use crate::fulfilment::settlement::{self, Settlement};
use crate::http;
use crate::identity::tokens::AccessTokens;
use crate::identity::{Delivery, Identity, IdentityParts};
use crate::ledger::{Ledger, LedgerParts};
use crate::media::Media;
use crate::metrics::Metrics;
use crate::notifications::templates::Templates;
use crate::notifications::{Notifications, NotificationsParts};
use crate::notify::{OutboxEmail, OutboxSms, SharedEmail, SharedSms, SmtpEmail, TwilioSms};
use crate::payments::{Payments, PaymentsParts, SimulatedProvider, StripeProvider};
use crate::ratelimit::SharedLimiter;
use crate::ratelimit::fallback::with_local_fallback;
use crate::ratelimit::local::LocalLimiter;
use crate::ratelimit::redis::RedisLimiter;
use crate::search::SearchIndex;
use crate::secrets::Secrets;
use crate::store::SharedStore;
use crate::store::carts::CartRepo;
use crate::store::courier_journal::CourierJournal;
use crate::store::couriers::CourierRepo;
use crate::store::embedded::EmbeddedStore;
use crate::store::live::{OpenOrdersRepo, VendorFeedRepo};
use crate::store::orders::OrderRepo;
use crate::store::scylla::ScyllaStore;
use crate::store::users::UserRepo;
use crate::web::AppState;

/// The platform's live settings, from the store; the environment's (and, on a platform
/// upgraded from before they were settings, the default rates an administrator had set) make
/// the first version.
async fn open_platform_settings(
    settings: &Settings,
    store: &SharedStore,
    bus: &SharedBus,
    clock: Clock,
) -> anyhow::Result<crate::settings::SettingsBook> {
    let mut defaults = settings.platform_defaults();
    let earlier = crate::store::ledger::LedgerRepo::new(Arc::clone(store))
        .rates(None)
        .await
        .context("reading the default rates")?;
    if let Some(rates) = earlier {
        defaults.commission_bps = rates.commission_bps;
        defaults.courier_fee_bps = rates.courier_fee_bps;
    }
    crate::settings::SettingsBook::open(Arc::clone(store), Arc::clone(bus), clock, defaults)
        .await
        .context("loading the platform settings")
}

/// A built node, listening but not yet serving.
pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
    pool: ArbiterPool,
    settings: Settings,
    /// The dispatcher loop and the presence follower, stopped on shutdown.
    live_tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Application {
    /// Opens the store and bus, starts the actor runtime and binds the listener. Must run
    /// inside an actix `System`.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, Clock::default()).await
    }

    /// Like [`build`](Self::build), with a clock the caller can move (tests).
    pub async fn build_with_clock(settings: Settings, clock: Clock) -> anyhow::Result<Self> {
        let store = open_store(&settings).await?;
        Self::build_on_store(settings, clock, store).await
    }

    /// Like [`build_with_clock`](Self::build_with_clock), on a store that is already open:
    /// several nodes in one process sharing one store (tests of what crosses nodes, where
    /// ScyllaDB would be shared in production).
    pub async fn build_on_store(
        settings: Settings,
        clock: Clock,
        store: SharedStore,
    ) -> anyhow::Result<Self> {
        let bus = open_bus(&settings)?;
        let secrets = Secrets::load(&settings)?;
        let platform = open_platform_settings(&settings, &store, &bus, clock.clone()).await?;
        let live_settings = platform.view().clone();
        let audit = crate::audit::Audit::new(Arc::clone(&store), clock.clone());
        let pool = ArbiterPool::new(settings.actor_threads);
        let carts = Registry::new(
            CartRepo::new(Arc::clone(&store)),
            pool.clone(),
            settings.actor_idle,
        );
        let metrics = Metrics::new();
        let identity =
            build_identity_metered(&settings, &store, &bus, &secrets, clock.clone(), &metrics)?;
        index_canonical_emails(&identity.users, false).await?;
        // Before serving: a node must not accept a token revoked while it was down.
        let revocations_since = identity
            .revocations
            .load()
            .await
            .context("loading revocation marks")?;
        let catalog = build_catalog(&settings, &store, &bus, &secrets, clock.clone()).await?;
        let dispatch_queue = DispatchQueue::new(Arc::clone(&store), clock.clone());
        let feed = VendorFeedRepo::new(Arc::clone(&store));
        let open_orders = OpenOrdersRepo::new(Arc::clone(&store));
        let orders = Registry::new(
            OrderDeps {
                repo: OrderRepo::new(Arc::clone(&store)),
                bus: Arc::clone(&bus),
                inventory: catalog.inventory.clone(),
                clock: clock.clone(),
                settings: live_settings.clone(),
                feed: feed.clone(),
                open: open_orders.clone(),
                dispatch: dispatch_queue.clone(),
                coupons: crate::store::coupons::CouponRepo::new(Arc::clone(&store)),
            },
            pool.clone(),
            settings.actor_idle,
        );
        let node = uuid::Uuid::new_v4();
        let index = CourierIndex::new();
        let board = Board::new();
        let courier_repo = CourierRepo::new(Arc::clone(&store), settings.live.trail_retention);
        let couriers = Registry::new(
            CourierDeps {
                repo: courier_repo.clone(),
                trail: TrailDrainer::start(
                    &store,
                    settings.live.trail_retention,
                    settings.live.trail_flush,
                ),
                index: index.clone(),
                board: board.clone(),
                bus: Arc::clone(&bus),
                orders: orders.clone(),
                clock: clock.clone(),
                metrics: metrics.clone(),
                settings: live_settings.clone(),
                node,
                journal: CourierJournal::new(Arc::clone(&store)),
            },
            pool.clone(),
            settings.actor_idle,
        );
        let dispatcher = Dispatcher::new(DispatcherParts {
            queue: dispatch_queue,
            index: index.clone(),
            bus: Arc::clone(&bus),
            orders: orders.clone(),
            couriers: couriers.clone(),
            catalog: catalog.clone(),
            store: Arc::clone(&store),
            clock: clock.clone(),
            settings: live_settings.clone(),
            journal: CourierJournal::new(Arc::clone(&store)),
        });
        let mut live_tasks = vec![
            identity.revocations.follow(revocations_since),
            dispatcher.start(),
            tokio::spawn(courier::follow_presence(
                Arc::clone(&bus),
                index.clone(),
                node,
            )),
        ];
        let live = Live {
            couriers,
            dispatcher,
            index,
            board,
            courier_repo,
            feed,
            open: open_orders,
            settings: settings.live.clone(),
        };
        let expiry_clock = clock.clone();
        let idempotency = crate::idempotency::Idempotency::new(Arc::clone(&store), clock.clone())
            .with_lease(settings.idempotency_lease);
        let ws_gate =
            crate::web::gate::WsGate::new(Arc::clone(&store), &settings.live, clock.clone())
                .with_sessions_gauge(metrics.ws_sessions.clone())
                .with_revocations(identity.revocations.marks().clone());
        let notifications = Notifications::new(NotificationsParts {
            store: Arc::clone(&store),
            bus: Arc::clone(&bus),
            clock: clock.clone(),
            email: identity.delivery().email.clone(),
            sms: identity.delivery().sms.clone(),
            templates: Templates::new(Some(settings.data_dir.join("templates/notifications"))),
            public_url: identity.delivery().public_url.clone(),
            node,
            metrics: metrics.clone(),
            allow_private_webhooks: settings.webhook_allow_private,
            handed: crate::notifications::handed::HandedLog::open(
                &settings.data_dir.join("notifications/handed.log"),
            )?,
            vapid: crate::notifications::push::Vapid::from_seed(
                secrets.derive("vapid-p256"),
                &vapid_subject(&settings.mail_from),
            )?,
        });
        let payments = build_payments(&settings, &store, clock.clone())?;
        let settlement = Settlement::new(payments.clone(), orders.clone(), Arc::clone(&store));
        payments.set_listener(settlement.listener());
        let ledger = Ledger::new(LedgerParts {
            store: Arc::clone(&store),
            payments: payments.clone(),
            settings: settings.ledger.clone(),
            clock: clock.clone(),
            node: lease_holder(&settings.data_dir)?,
            live: live_settings.clone(),
        });
        let analytics = Analytics::new(
            Arc::clone(&store),
            settings.ledger.rates,
            lease_holder(&settings.data_dir)?,
        );
        let fulfilment = Fulfilment {
            checkout: Checkout::new(CheckoutParts {
                carts: carts.clone(),
                orders: orders.clone(),
                catalog: catalog.clone(),
                payments: payments.clone(),
                ledger: ledger.clone(),
                store: Arc::clone(&store),
                settings: live_settings.clone(),
            }),
            orders: Orders::new(OrdersParts {
                actors: orders.clone(),
                store: Arc::clone(&store),
                catalog: catalog.clone(),
                payments: payments.clone(),
                settlement: settlement.clone(),
                board: live.board.clone(),
                couriers: live.courier_repo.clone(),
            }),
        };
        let support = crate::support::Support::new(crate::support::SupportParts {
            store: Arc::clone(&store),
            clock: clock.clone(),
            limiter: Arc::clone(identity.limiter()),
            media: catalog.media.clone(),
            notifications: notifications.clone(),
            settings: live_settings.clone(),
        });
        let moderation = crate::moderation::Moderation::new(crate::moderation::ModerationParts {
            store: Arc::clone(&store),
            catalog: catalog.clone(),
            notifications: notifications.clone(),
            limiter: Arc::clone(identity.limiter()),
            clock: clock.clone(),
        });
        let state = web::Data::new(AppState {
            store,
            bus,
            redis: settings.redis_url.is_some(),
            carts,
            orders,
            metrics,
            cart_tokens: secrets.signer("cart-token"),
            identity,
            catalog,
            payments,
            settlement,
            idempotency,
            secure_cookies: settings.secure_cookies,
            ws: ws_gate,
            fulfilment,
            live,
            notifications,
            ledger,
            settings: platform,
            audit,
            support,
            moderation,
            analytics,
            closing: tokio::sync::broadcast::channel(1).0,
        });
        let node = Arc::downgrade(&state);
        live_tasks.push(crate::settings::SettingsBook::follow(move || {
            node.upgrade().map(|s| s.settings.clone())
        }));
        if settings.notifications {
            let node = Arc::downgrade(&state);
            live_tasks.extend(Notifications::start(move || {
                node.upgrade().map(|s| s.notifications.clone())
            }));
        }
        if settings.ledger.book {
            let node = Arc::downgrade(&state);
            live_tasks.push(Ledger::start(move || {
                node.upgrade().map(|s| s.ledger.clone())
            }));
        }
        if settings.analytics {
            let node = Arc::downgrade(&state);
            live_tasks.push(Analytics::start(move || {
                node.upgrade().map(|s| s.analytics.clone())
            }));
        }
        // The sweepers hold the node only during a round, so they end when the node is dropped.
        let node = Arc::downgrade(&state);
        tokio::spawn(settlement::run_sweep(
            move || node.upgrade().map(|s| s.settlement.clone()),
            settlement::SWEEP_INTERVAL,
        ));
        let node = Arc::downgrade(&state);
        tokio::spawn(order::run_expiry(
            move || {
                node.upgrade()
                    .map(|s| (s.orders.clone(), OrderRepo::new(Arc::clone(&s.store))))
            },
            expiry_clock,
            order::EXPIRY_SWEEP_INTERVAL,
        ));

        let listener = TcpListener::bind(settings.listen)
            .with_context(|| format!("HEXMARKET_LISTEN: cannot listen on {}", settings.listen))?;
        let port = listener.local_addr()?.port();
        let server_state = state.clone();
        let json_limit = settings.json_limit;
        let client_address = web::Data::new(settings.client_address.clone());
        let webapp = web::Data::new(http::webapp::WebApp::new(&settings));
        let server = crate::web::server::serve(
            listener,
            &crate::web::server::ServerOptions {
                workers: settings.workers,
                max_connections_per_worker: settings.max_connections_per_worker,
                shutdown_timeout: settings.shutdown_timeout,
            },
            move || {
                App::new()
                    .app_data(server_state.clone())
                    .app_data(client_address.clone())
                    .app_data(webapp.clone())
                    .wrap(http::error_bodies::error_bodies())
                    .wrap(from_fn(http::middleware::header_limits))
                    .wrap(from_fn(http::middleware::telemetry))
                    .configure(http::configure(json_limit))
                    .configure(crate::ws::configure)
            },
        )?;
        tracing::info!(
            listen = %settings.listen,
            port,
            store = state.store.backend(),
            bus = state.bus.backend(),
            "hexmarket is listening"
        );
        Ok(Application {
            port,
            server,
            state,
            pool,
            settings,
            live_tasks,
        })
    }

    /// The port the node listens on (useful when the settings asked for port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The identity service this node uses (for tools and tests).
    pub fn identity(&self) -> crate::identity::Identity {
        self.state.identity.clone()
    }

    /// The catalog this node uses (for tools and tests).
    pub fn catalog(&self) -> Catalog {
        self.state.catalog.clone()
    }

    /// The store this node uses (to start another node on it in tests).
    pub fn store(&self) -> SharedStore {
        Arc::clone(&self.state.store)
    }

    /// The payments service this node uses (for checkout wiring, tools and tests).
    pub fn payments(&self) -> crate::payments::Payments {
        self.state.payments.clone()
    }

    /// A handle that stops the node.
    pub fn handle(&self) -> NodeHandle {
        NodeHandle {
            server: self.server.handle(),
            closing: self.state.closing.clone(),
            couriers: self.state.live.couriers.downgrade(),
            timeout: self.settings.shutdown_timeout,
        }
    }

    /// Serves until SIGINT/SIGTERM (or a stop through [`handle`](Self::handle)), then
    /// passivates every live actor so its state is persisted.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(stop_signal()).await
    }

    /// Like [`run_until_stopped`](Self::run_until_stopped), stopping when `stop` resolves
    /// instead of at a signal: a caller that owns other work in the process (`hexmarket demo`
    /// and its simulated clients) ends that work before the node goes.
    pub async fn run_until(
        self,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let handle = self.handle();
        let signals = tokio::spawn(async move {
            stop.await;
            tracing::info!("stop signal received: closing WebSockets and draining requests");
            handle.stop(true).await;
        });
        let served = self.server.await;
        signals.abort();
        served.context("the HTTP server failed")?;
        tracing::info!("shutting down: persisting live actors");
        self.state.catalog.stop();
        for task in &self.live_tasks {
            task.abort();
        }
        self.state
            .live
            .couriers
            .shutdown(self.settings.shutdown_timeout)
            .await;
        self.state
            .carts
            .shutdown(self.settings.shutdown_timeout)
            .await;
        self.state
            .orders
            .shutdown(self.settings.shutdown_timeout)
            .await;
        self.pool.stop();
        tracing::info!("hexmarket stopped");
        Ok(())
    }
}

/// Stops a node: WebSocket sessions are told to go (close 1001, so clients reconnect to
/// another node) and the HTTP server drains in-flight requests.
#[derive(Clone)]
pub struct NodeHandle {
    server: actix_web::dev::ServerHandle,
    closing: tokio::sync::broadcast::Sender<()>,
    // Weak: a handle kept after its node is gone must not keep the node's actors (and store)
    // alive.
    couriers: WeakRegistry<crate::actors::courier::CourierActor>,
    timeout: Duration,
}

impl NodeHandle {
    /// Stops the node; `graceful` waits for in-flight requests (up to the shutdown timeout).
    pub async fn stop(&self, graceful: bool) {
        // No session listening is fine.
        let _ = self.closing.send(());
        // Courier actors live on the HTTP workers, next to their couriers' sockets
        // ([`Registry::send_here`]); they persist before the workers stop.
        if let Some(couriers) = self.couriers.upgrade() {
            couriers.shutdown(self.timeout).await;
        }
        self.server.stop(graceful).await;
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "SIGTERM not handled; stopping on SIGINT only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Opens the store the settings name.
pub async fn open_store(settings: &Settings) -> anyhow::Result<SharedStore> {
    Ok(match &settings.scylla {
        Some(scylla) => Arc::new(
            ScyllaStore::connect(scylla)
                .await
                .context("connecting to ScyllaDB (has `hexmarket migrate` been run?)")?,
        ),
        None => Arc::new(EmbeddedStore::open(&settings.data_dir.join("store"))?),
    })
}

/// The catalog: search index and media in the data directory (or object storage), on the
/// same store and bus.
pub async fn build_catalog(
    settings: &Settings,
    store: &SharedStore,
    bus: &SharedBus,
    secrets: &Secrets,
    clock: Clock,
) -> anyhow::Result<Catalog> {
    let search_dir = settings.data_dir.join("search");
    let search = SearchIndex::open(&search_dir, secrets.signer("search-cursor"))
        .with_context(|| format!("opening the search index in {}", search_dir.display()))?;
    let media = match &settings.s3 {
        Some(s3) => Media::s3(s3)?,
        None => {
            let media_dir = settings.data_dir.join("media");
            Media::local(&media_dir)
                .with_context(|| format!("opening the media store in {}", media_dir.display()))?
        }
    };
    let cache: SharedCache = match &settings.redis_url {
        Some(url) => Arc::new(
            RedisCache::new(url, &settings.redis_prefix)
                .map_err(anyhow::Error::msg)
                .context("HEXMARKET_REDIS_URL")?,
        ),
        None => Arc::new(LocalCache::new()),
    };
    let catalog = Catalog::new(CatalogParts {
        store: Arc::clone(store),
        search,
        media,
        cache,
        clock,
        bus: Arc::clone(bus),
    });
    catalog.start().await?;
    Ok(catalog)
}

/// Payments: Stripe when configured, the simulated provider always (for development and for
/// checkouts created before Stripe was switched on).
pub fn build_payments(
    settings: &Settings,
    store: &SharedStore,
    clock: Clock,
) -> anyhow::Result<Payments> {
    let stripe = match &settings.stripe {
        Some(stripe) => Some(
            Arc::new(StripeProvider::new(stripe).context("HEXMARKET_STRIPE_*")?)
                as Arc<dyn crate::payments::PaymentProvider>,
        ),
        None => None,
    };
    tracing::info!(
        provider = if stripe.is_some() {
            "stripe"
        } else {
            "simulated"
        },
        "payments"
    );
    Ok(Payments::new(PaymentsParts {
        store: Arc::clone(store),
        clock,
        simulated: Arc::new(SimulatedProvider::new()),
        stripe,
        webhook_secret: settings.stripe.as_ref().map(|s| s.webhook_secret.clone()),
    }))
}

/// This node's name as the holder of the ledger's lease: kept in the data directory, so a node
/// that restarts (after a crash too) takes its own lease back at once instead of waiting for
/// it to run out. Nodes have data directories of their own, so each has its own name.
fn lease_holder(data_dir: &std::path::Path) -> anyhow::Result<uuid::Uuid> {
    let path = data_dir.join("ledger-holder");
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Ok(id) = uuid::Uuid::parse_str(text.trim())
    {
        return Ok(id);
    }
    let id = uuid::Uuid::new_v4();
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    std::fs::write(&path, id.to_string()).with_context(|| format!("writing {}", path.display()))?;
    Ok(id)
}

/// Gives accounts from before canonical emails their canonical index row (once per store, or
/// again with `force`), before this node accepts a registration or a login.
pub async fn index_canonical_emails(users: &UserRepo, force: bool) -> anyhow::Result<()> {
    let done = users
        .backfill_email_index(force)
        .await
        .context("indexing accounts by canonical email")?;
    if let Some(report) = done {
        tracing::info!(
            accounts = report.accounts,
            claimed = report.claimed,
            shared = report.shared,
            "accounts indexed by canonical email"
        );
        if report.shared > 0 {
            tracing::warn!(
                shared = report.shared,
                "some mailboxes have several accounts; see `hexmarket report-duplicate-emails`"
            );
        }
    }
    Ok(())
}

/// Enrols the authenticator (TOTP) of an administrator just registered and records the
/// creation in the audit trail as the command line's: an administrator can do nothing without
/// a second factor, so `create-admin` and `demo` enrol it at once and show its secret and
/// recovery codes (returned here) once.
pub async fn enrol_admin(
    identity: &Identity,
    store: &SharedStore,
    admin: &crate::domain::account::User,
) -> anyhow::Result<(crate::identity::TotpEnrolment, Vec<String>)> {
    let enrolled = identity.enrol_totp_now(admin.id).await?;
    crate::audit::Audit::new(Arc::clone(store), Clock::default())
        .record(
            crate::domain::audit::AuditEntry::from_cli(
                "user.create_admin",
                format!("user:{}", admin.id),
            )
            .after(serde_json::json!({"email": admin.email.to_string(), "role": "admin"})),
        )
        .await?;
    Ok(enrolled)
}

/// The identity service, on the same store and with the rate limiter the settings name.
pub fn build_identity(
    settings: &Settings,
    store: &SharedStore,
    bus: &SharedBus,
    secrets: &Secrets,
    clock: Clock,
) -> anyhow::Result<Identity> {
    build_identity_metered(settings, store, bus, secrets, clock, &Metrics::new())
}

/// [`build_identity`], counting the rate limiter's fallbacks in `metrics`.
pub fn build_identity_metered(
    settings: &Settings,
    store: &SharedStore,
    bus: &SharedBus,
    secrets: &Secrets,
    clock: Clock,
    metrics: &Metrics,
) -> anyhow::Result<Identity> {
    let limiter: SharedLimiter = match &settings.redis_url {
        Some(url) => with_local_fallback(
            Arc::new(
                RedisLimiter::new(url, &settings.redis_prefix).context("HEXMARKET_REDIS_URL")?,
            ),
            metrics.rate_limiter_fallbacks.clone(),
        ),
        None => Arc::new(LocalLimiter::new()),
    };
    let jwt_key = match &settings.jwt_secret {
        Some(secret) => secret.as_bytes().to_vec(),
        None => secrets.derive("jwt-hs256").to_vec(),
    };
    Identity::new(IdentityParts {
        store: Arc::clone(store),
        bus: Arc::clone(bus),
        tokens: AccessTokens::new(&jwt_key),
        limiter,
        clock,
        code_key: secrets.derive("auth-codes"),
        delivery: open_delivery(settings)?,
        providers: settings.oidc.clone(),
        webauthn: settings.webauthn.clone(),
    })
}

/// Twilio and SMTP when configured; otherwise outboxes in the data directory.
fn open_delivery(settings: &Settings) -> anyhow::Result<Delivery> {
    let outbox = settings.data_dir.join("outbox");
    let sms: SharedSms = match &settings.twilio {
        Some(t) => Arc::new(
            TwilioSms::try_new(&t.base_url, &t.account_sid, &t.auth_token, &t.from)
                .context("HEXMARKET_TWILIO_*")?,
        ),
        None => Arc::new(
            OutboxSms::new(&outbox)
                .with_context(|| format!("opening the SMS outbox in {}", outbox.display()))?,
        ),
    };
    let email: SharedEmail = match &settings.smtp_url {
        Some(url) => {
            Arc::new(SmtpEmail::new(url, &settings.mail_from).context("HEXMARKET_SMTP_URL")?)
        }
        None => Arc::new(
            OutboxEmail::new(&outbox, &settings.mail_from).with_context(|| {
                format!(
                    "opening the email outbox in {} (HEXMARKET_MAIL_FROM)",
                    outbox.display()
                )
            })?,
        ),
    };
    tracing::info!(
        sms = sms.backend(),
        email = email.backend(),
        "message delivery"
    );
    Ok(Delivery {
        sms,
        email,
        public_url: settings.public_url.clone(),
    })
}

/// Who runs the server, for push services: `mailto:` the sender address of emails.
fn vapid_subject(mail_from: &str) -> String {
    let address = match (mail_from.rfind('<'), mail_from.rfind('>')) {
        (Some(open), Some(close)) if open < close => &mail_from[open + 1..close],
        _ => mail_from.trim(),
    };
    format!("mailto:{address}")
}

/// The bus the settings name: Redis pub/sub, or in-process.
pub fn open_bus(settings: &Settings) -> anyhow::Result<SharedBus> {
    Ok(match &settings.redis_url {
        Some(url) => {
            Arc::new(RedisBus::new(url, &settings.redis_prefix).context("HEXMARKET_REDIS_URL")?)
        }
        None => Arc::new(LocalBus::new()),
    })
}
