//! `hexmarket demo`: a node on a fresh data directory with a small demo city and a demo
//! administrator, a banner saying where to open it and how to sign in, and a city that moves:
//! simulated customers order, simulated stores accept and prepare, simulated couriers ride and
//! hand over. The simulated people are clients of the node like any other, on loopback: they
//! act only through the public HTTP API and WebSockets (the README's *API* and *WebSocket*
//! sections are their contract). The accounts the banner names (customer0, vendor0, courier0
//! and the administrator) are left to people in the browser.
//!
//! Ctrl-C or SIGTERM ends the simulation, then the node (gracefully, as `serve` does), then
//! removes the temporary data directory.

mod api;
mod city;
mod courier;
mod customer;
mod vendor;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures_util::future::join_all;
use tokio::sync::mpsc;
use tokio::time::Instant;

use self::api::{Api, CallError, Session, Store, StorePage};
use self::city::{Pos, Shared, Stop};
use self::courier::Courier;
use self::customer::{Customer, Customers};
use self::vendor::Vendor;
use crate::app::Application;
use crate::config::Settings;
use crate::seed::{DEMO_DOMAIN, DEMO_PASSWORD};

/// The demo's log filter when `HEXMARKET_LOG` names none: a person reads the banner and the
/// status lines on standard output; warnings still show on standard error.
pub const LOG_FILTER: &str = "warn";
/// The demo administrator (password [`DEMO_PASSWORD`], like every demo account).
pub const ADMIN_EMAIL: &str = "admin@demo.hexmarket.dev";

/// The demo city's radius: small, so the whole of it fits on one screen of the map.
const CITY_RADIUS_KM: f64 = 3.0;
/// The first customers live round the corner from a store, so that the first orders are
/// delivered within the first minute of a demo.
const NEIGHBOURS: usize = 3;
const NEIGHBOUR_M: (f64, f64) = (120.0, 200.0);
/// Everyone else lives this far from the store they are placed by.
const RESIDENT_M: (f64, f64) = (200.0, 800.0);
/// How long the simulated people get to end their sockets at shutdown.
const WIND_DOWN: Duration = Duration::from_secs(5);
/// The status line's period.
const STATUS_EVERY: Duration = Duration::from_secs(30);

/// `hexmarket demo` options.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoOptions {
    /// Port to serve on, on 127.0.0.1 (0: any free port). HEXMARKET_LISTEN is not used.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Data directory to use instead of a temporary one; it must be empty or not exist, and
    /// it is kept on exit (the temporary one is removed).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Stores (vendor0's is left to a person; the others are simulated).
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub vendors: u32,
    /// Products, shared out among the stores.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub products: u32,
    /// Couriers (courier0 is left to a person; the others are simulated).
    #[arg(long, default_value_t = 25, value_parser = clap::value_parser!(u32).range(1..=2_000))]
    pub couriers: u32,
    /// Customers (customer0 is left to a person; the others are simulated).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=2_000))]
    pub customers: u32,
    /// Seconds between two orders of the simulated customers, across the city, on average.
    #[arg(long, default_value_t = 4.0, value_parser = parse_period)]
    pub order_every_secs: f64,
}

fn parse_period(raw: &str) -> Result<f64, String> {
    match raw.parse::<f64>() {
        Ok(secs) if (0.2..=3_600.0).contains(&secs) => Ok(secs),
        _ => Err(format!("expected seconds from 0.2 to 3600, got {raw:?}")),
    }
}

/// Runs the demo until SIGINT or SIGTERM.
pub async fn run(options: DemoOptions) -> anyhow::Result<()> {
    let started = Instant::now();
    let port = match options.port {
        // A port of our own now, so the public URL (and the WebSocket origins it allows)
        // name the one the node serves on.
        0 => std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .context("finding a free port")?
            .port(),
        // Checked before anything is opened: a port in use is a plain error then.
        port => match std::net::TcpListener::bind(("127.0.0.1", port)) {
            Ok(_) => port,
            Err(e) => {
                anyhow::bail!("cannot listen on 127.0.0.1:{port} ({e}): choose another --port")
            }
        },
    };
    let data = DataDir::prepare(options.data_dir.as_deref())?;
    let settings = demo_settings(port, &data.path)?;
    let app = Application::build(settings).await?;
    let url = format!("http://127.0.0.1:{}", app.port());

    let seeded = crate::seed::seed_demo(
        &app.catalog(),
        &app.identity(),
        &crate::seed::SeedOptions {
            vendors: options.vendors as usize,
            products: options.products as usize,
            couriers: options.couriers as usize,
            customers: options.customers as usize,
            radius_km: CITY_RADIUS_KM,
            ..Default::default()
        },
    )
    .await
    .context("seeding the demo city")?;
    let admin = create_admin(&app)
        .await
        .context("creating the demo administrator")?;
    println!("{}", banner(&url, &admin, &data, &options));
    tracing::info!(took_ms = seeded.took.as_millis() as u64, "demo city seeded");

    let (trigger, stop) = Stop::new();
    // Every simulated person holds a sender: when all are gone, the simulation has ended.
    let (running, mut ended) = mpsc::channel::<()>(1);
    let shared = Arc::new(Shared::default());
    let plan = Plan {
        vendors: options.vendors as usize,
        couriers: options.couriers as usize,
        customers: options.customers as usize,
        order_every: Duration::from_secs_f64(options.order_every_secs),
    };
    let api = Api::new(&url)?;
    tokio::spawn(simulate(
        api,
        plan,
        Arc::clone(&shared),
        stop.clone(),
        running.clone(),
    ));
    tokio::spawn(status_lines(shared, started, stop, running));

    let shutdown = async move {
        crate::app::stop_signal().await;
        println!("[demo] stopping: the simulation first, then the node");
        let _ = trigger.send(true);
        if tokio::time::timeout(WIND_DOWN, ended.recv()).await.is_err() {
            tracing::warn!("some simulated people were still busy; stopping the node anyway");
        }
    };
    app.run_until(shutdown).await?;
    let kept = (!data.temporary).then(|| data.path.clone());
    drop(data);
    match kept {
        Some(path) => println!("[demo] stopped; the data is kept in {}", path.display()),
        None => println!("[demo] stopped; its temporary data directory is removed"),
    }
    Ok(())
}

/// The node's settings: the environment's, on 127.0.0.1:`port` and `data_dir`, in-process
/// (no Redis), and without `Secure` cookies unless asked for (the demo is plain HTTP).
fn demo_settings(port: u16, data_dir: &Path) -> anyhow::Result<Settings> {
    let mut vars: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| k.starts_with("HEXMARKET_"))
        .collect();
    let set = |vars: &[(String, String)], name: &str| vars.iter().any(|(k, _)| k == name);
    anyhow::ensure!(
        !set(&vars, "HEXMARKET_SCYLLA_NODES"),
        "the demo runs on a fresh embedded store of its own: unset HEXMARKET_SCYLLA_NODES"
    );
    if set(&vars, "HEXMARKET_REDIS_URL") {
        eprintln!(
            "[demo] HEXMARKET_REDIS_URL is not used: the demo keeps its events, limits and cache \
             in the process, away from any other node"
        );
    }
    vars.retain(|(k, _)| !matches!(k.as_str(), "HEXMARKET_LISTEN" | "HEXMARKET_REDIS_URL"));
    if !set(&vars, "HEXMARKET_COOKIE_SECURE") {
        vars.push(("HEXMARKET_COOKIE_SECURE".into(), "false".into()));
    }
    vars.push(("HEXMARKET_LISTEN".into(), format!("127.0.0.1:{port}")));
    let mut settings = Settings::from_vars(vars).map_err(|e| anyhow::anyhow!("{e}"))?;
    settings.data_dir = data_dir.to_owned();
    Ok(settings)
}

/// The data directory: a new temporary one (removed when this is dropped), or the one the
/// command line names, which must be empty or not exist yet (kept).
struct DataDir {
    path: PathBuf,
    temporary: bool,
}

impl DataDir {
    fn prepare(chosen: Option<&Path>) -> anyhow::Result<DataDir> {
        let Some(path) = chosen else {
            let name = format!("hexmarket-demo-{}", uuid::Uuid::new_v4().simple());
            let path = std::env::temp_dir().join(name);
            std::fs::create_dir_all(&path)
                .with_context(|| format!("creating the data directory {}", path.display()))?;
            return Ok(DataDir {
                path,
                temporary: true,
            });
        };
        match std::fs::read_dir(path) {
            Ok(mut entries) => anyhow::ensure!(
                entries.next().is_none(),
                "--data-dir {}: not empty (the demo starts on a fresh directory)",
                path.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir_all(path)
                .with_context(|| format!("creating the data directory {}", path.display()))?,
            Err(e) => {
                return Err(e).with_context(|| format!("--data-dir {}", path.display()));
            }
        }
        Ok(DataDir {
            path: path.to_owned(),
            temporary: false,
        })
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        if self.temporary
            && let Err(e) = std::fs::remove_dir_all(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!(
                "[demo] could not remove the data directory {}: {e}",
                self.path.display()
            );
        }
    }
}

/// What the administrator signs in with, shown once.
struct AdminLogin {
    uri: String,
    secret: String,
    recovery_codes: Vec<String>,
}

async fn create_admin(app: &Application) -> anyhow::Result<AdminLogin> {
    use crate::domain::identity::{Email, Role};

    let identity = app.identity();
    let admin = identity
        .register(crate::identity::NewAccount {
            email: Email::parse(ADMIN_EMAIL).map_err(anyhow::Error::msg)?,
            password: DEMO_PASSWORD.to_owned(),
            name: "Demo Administrator".to_owned(),
            role: Role::Admin,
            phone: None,
        })
        .await?;
    let (totp, recovery_codes) = crate::app::enrol_admin(&identity, &app.store(), &admin).await?;
    Ok(AdminLogin {
        uri: totp.uri,
        secret: totp.secret,
        recovery_codes,
    })
}

fn banner(url: &str, admin: &AdminLogin, data: &DataDir, options: &DemoOptions) -> String {
    let rule = "─".repeat(78);
    let codes: Vec<String> = admin
        .recovery_codes
        .chunks(5)
        .map(|row| format!("       {}", row.join("  ")))
        .collect();
    let data_line = if data.temporary {
        format!("data directory: {} (removed on exit)", data.path.display())
    } else {
        format!("data directory: {} (kept on exit)", data.path.display())
    };
    format!(
        "{rule}
 hexmarket demo: a small city around Berlin Alexanderplatz, and it is moving

 Open  {url}/
       (API under {url}/api/v1, its documentation at {url}/docs)

 Sign in with the password {DEMO_PASSWORD} as
   customer0@{DEMO_DOMAIN}   to order from a store and watch the courier come
   vendor0@{DEMO_DOMAIN}     to run a store: accept, prepare, hand over
   courier0@{DEMO_DOMAIN}    to ride: go online near a store to be offered orders
   {ADMIN_EMAIL}       to run the platform; it asks for an authenticator code:
       scan or open {uri}
       or type the secret {secret} into an authenticator app,
       or use a recovery code (each works once):
{codes}
 These four are yours: the simulation never acts as them.

 The city is moving: simulated couriers ({couriers}) ride, simulated stores ({vendors}) accept
 and prepare, simulated customers ({customers}) order about every {every} s, all through the
 public API and WebSockets like any client. When courier0 carries an order of a simulated
 customer, its handoff code is printed below.
 {data_line}. Ctrl-C stops the demo.
{rule}",
        uri = admin.uri,
        secret = admin.secret,
        codes = codes.join("\n"),
        couriers = options.couriers.saturating_sub(1),
        vendors = options.vendors.saturating_sub(1),
        customers = options.customers.saturating_sub(1),
        every = options.order_every_secs,
    )
}

/// How many of each kind of simulated person, and the pace of orders.
struct Plan {
    vendors: usize,
    couriers: usize,
    customers: usize,
    order_every: Duration,
}

/// `{kind}{n}@demo.hexmarket.dev`.
fn email(kind: &str, n: usize) -> String {
    format!("{kind}{n}@{DEMO_DOMAIN}")
}

/// Brings the simulated people out: couriers first (they should be riding when the first
/// order is paid), then the stores, then the customers. Number 0 of each kind is a person's.
async fn simulate(
    api: Api,
    plan: Plan,
    shared: Arc<Shared>,
    mut stop: Stop,
    running: mpsc::Sender<()>,
) {
    let Some(stores) = all_stores(&api, &mut stop).await else {
        return;
    };
    for n in 1..plan.couriers {
        let base: Pos = stores[(n - 1) % stores.len()].location.into();
        let courier = Courier::new(email("courier", n), Arc::clone(&shared), base);
        let (api, stop, running) = (api.clone(), stop.clone(), running.clone());
        tokio::spawn(async move {
            courier.run(api, stop).await;
            drop(running);
        });
    }

    let vendors = join_all((1..plan.vendors).map(|n| {
        let (api, mut stop) = (api.clone(), stop.clone());
        async move {
            let mut session = sign_in(&api, &email("vendor", n), &mut stop).await?;
            match session.get::<Store>("/api/v1/vendors/mine").await {
                Ok(store) => Some((session, store.id)),
                Err(e) => {
                    tracing::warn!(vendor = n, error = %e, "store not found; this vendor sits out");
                    None
                }
            }
        }
    }))
    .await;
    let mut vendors_out = 0;
    for (session, store) in vendors.into_iter().flatten() {
        let vendor = Vendor::new(session, &store, &shared);
        let (stop, running) = (stop.clone(), running.clone());
        vendors_out += 1;
        tokio::spawn(async move {
            vendor.run(stop).await;
            drop(running);
        });
    }

    // Customers live around the stores the simulation runs (around any store when it runs
    // none), the first few round the corner.
    let mut anchors: Vec<Pos> = stores
        .iter()
        .filter(|s| shared.is_simulated_store(&s.id))
        .map(|s| s.location.into())
        .collect();
    if anchors.is_empty() {
        anchors = stores.iter().map(|s| s.location.into()).collect();
    }
    let people = join_all((1..plan.customers).map(|n| {
        let (api, mut stop) = (api.clone(), stop.clone());
        let (near, far) = if n <= NEIGHBOURS {
            NEIGHBOUR_M
        } else {
            RESIDENT_M
        };
        let home = anchors[(n - 1) % anchors.len()].random_within(near, far);
        async move {
            let session = sign_in(&api, &email("customer", n), &mut stop).await?;
            Some(Customer {
                number: n,
                session,
                home,
                ordered: false,
            })
        }
    }))
    .await;
    let people: Vec<Customer> = people.into_iter().flatten().collect();
    if stop.is_stopped() {
        return;
    }
    println!(
        "[demo] {} stores and {} customers of the simulation are in, {} couriers going online: \
         the first order is on its way",
        vendors_out,
        people.len(),
        plan.couriers.saturating_sub(1),
    );
    // About one open order per courier: beyond that, orders would only wait for a courier.
    let most_open = plan.couriers.saturating_sub(1).max(4);
    let customers = Customers::new(api, shared, people, plan.order_every, most_open);
    tokio::spawn(async move {
        customers.run(stop).await;
        drop(running);
    });
}

/// Every store, as any client lists them (page by page).
async fn all_stores(api: &Api, stop: &mut Stop) -> Option<Vec<Store>> {
    let mut stores = Vec::new();
    let mut cursor: Option<String> = None;
    let mut failures = 0;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/api/v1/vendors?limit=100&cursor={cursor}"),
            None => "/api/v1/vendors?limit=100".to_owned(),
        };
        match api.get::<StorePage>(&path).await {
            Ok(page) => {
                stores.extend(page.items);
                cursor = page.next_cursor;
                if cursor.is_none() {
                    break;
                }
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, failures, "stores not listed; trying again");
                if stop.sleep(Duration::from_secs(1)).await {
                    return None;
                }
            }
        }
    }
    if stores.is_empty() {
        tracing::warn!("the city has no stores: nothing to simulate");
        return None;
    }
    Some(stores)
}

/// Signs a demo account in, trying again while the node may come round (it may not serve
/// yet, or be busy); `None` when it refuses for good or the demo stops.
async fn sign_in(api: &Api, email: &str, stop: &mut Stop) -> Option<Session> {
    let mut pause = Duration::from_millis(500);
    for attempt in 1..=30 {
        match Session::login(api, email, DEMO_PASSWORD).await {
            Ok(session) => return Some(session),
            Err(e) if e.is_transient() || attempt < 3 => {
                tracing::debug!(email, error = %e, attempt, "sign-in failed; trying again");
            }
            Err(e) => {
                tracing::warn!(email, error = %e, "sign-in refused; this one sits out");
                return None;
            }
        }
        if stop.sleep(pause).await {
            return None;
        }
        pause = (pause * 2).min(Duration::from_secs(10));
    }
    tracing::warn!(email, "could not sign in; this one sits out");
    None
}

/// Logs why a simulated person's socket ended and answers how long to wait before connecting
/// again: quietly and briefly when the node ended it in its ordinary course (an access token
/// that ran out), as a warning and after a second or more otherwise.
fn reconnect_pause(who: &str, what: &str, e: &CallError) -> std::time::Duration {
    if e.is_expected_close() {
        tracing::debug!(who, error = %e, "{what}");
        std::time::Duration::from_millis(200)
    } else {
        tracing::warn!(who, error = %e, "{what}");
        city::seconds_between(1.0, 3.0)
    }
}

/// A line on standard output when the first order is delivered, then the city's figures
/// every [`STATUS_EVERY`].
async fn status_lines(
    shared: Arc<Shared>,
    started: Instant,
    mut stop: Stop,
    running: mpsc::Sender<()>,
) {
    let mut first_delivered = false;
    let mut next_status = Instant::now() + STATUS_EVERY;
    while !stop.sleep(Duration::from_secs(1)).await {
        let delivered = Shared::count(&shared.orders_delivered);
        if !first_delivered && delivered > 0 {
            first_delivered = true;
            println!(
                "[demo] first order delivered, {:.0} s after the demo started",
                started.elapsed().as_secs_f64()
            );
        }
        if Instant::now() >= next_status {
            next_status += STATUS_EVERY;
            println!(
                "[demo] {} orders placed, {} delivered, {} on their way; {} couriers online",
                Shared::count(&shared.orders_placed),
                delivered,
                Shared::count(&shared.orders_open),
                Shared::count(&shared.couriers_online),
            );
        }
    }
    drop(running);
}
