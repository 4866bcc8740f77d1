//! The command line: `serve` (the default), `migrate`, `verify-store`, `create-admin`,
//! `seed-demo`, `demo`, `reindex`, `report-duplicate-emails`, `reconcile`, `rebuild-analytics`
//! and `seed-analytics`.

use clap::{Parser, Subcommand};

use crate::app::Application;
use crate::config::Settings;

/// hexmarket: a real-time delivery marketplace backend. Configured by HEXMARKET_* environment
/// variables (see the README).
#[derive(Debug, Parser)]
#[command(name = "hexmarket", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API (the default).
    Serve,
    /// Apply the ScyllaDB schema (schema/*.cql) that is not applied yet; needs
    /// HEXMARKET_SCYLLA_NODES.
    Migrate,
    /// Check the configured store (ScyllaDB when HEXMARKET_SCYLLA_NODES is set, else the
    /// embedded one) against the store contract, in a scratch keyspace or directory that is
    /// removed afterwards: one line per property; exits 1 when one fails.
    VerifyStore,
    /// Create an administrator account; reads the password from standard input. Enrols the
    /// administrator's authenticator app at once: prints its otpauth URI and ten recovery
    /// codes, once.
    CreateAdmin {
        /// The administrator's email address.
        #[arg(long)]
        email: String,
        /// Display name.
        #[arg(long, default_value = "Administrator")]
        name: String,
    },
    /// Create (or complete) a demo city: vendors with products and stock, couriers and
    /// customers, all with one password. Idempotent. On the embedded store, run it while the
    /// server is stopped.
    SeedDemo {
        #[arg(long, default_value_t = 50)]
        vendors: usize,
        #[arg(long, default_value_t = 5_000)]
        products: usize,
        #[arg(long, default_value_t = 200)]
        couriers: usize,
        #[arg(long, default_value_t = 100)]
        customers: usize,
        /// Write in large batches, for benchmark cities: new accounts share one hash of the
        /// demo password, products are committed 2,048 at a time and, when most of the
        /// catalog is new, indexed by one rebuild of the search index.
        #[arg(long)]
        bulk: bool,
    },
    /// Start a node on a fresh data directory with a small demo city and a demo administrator,
    /// print where to open it and how to sign in, and keep the city moving: simulated
    /// customers order, stores prepare, couriers ride, all through the public API and
    /// WebSockets. Ctrl-C stops it (and removes the temporary data directory).
    Demo(crate::demo::DemoOptions),
    /// List the mailboxes that several accounts share (case or Unicode variants of one address
    /// registered before addresses were compared in canonical form). Changes nothing; exits 0
    /// when there are none, 1 when there are some.
    ReportDuplicateEmails,
    /// Rebuild the search index (in the data directory) from the store. Run it with the node
    /// on this data directory stopped.
    Reindex,
    /// Compare the ledger with the payment provider's records (payments captured and
    /// refunded, payouts transferred) for payments and payouts created in a period; prints
    /// the report as JSON and exits 1 when there is a difference. On the embedded store, run
    /// it while the server is stopped.
    Reconcile {
        /// Start of the period (RFC 3339, inclusive).
        #[arg(long)]
        from: chrono::DateTime<chrono::Utc>,
        /// End of the period (RFC 3339, exclusive; default: now).
        #[arg(long)]
        to: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// Rebuild the analytics rollups from the event logs (every order's log and the courier
    /// journal) into a new generation and switch reports to it; prints what it did and the
    /// rows that differ from the rollups it replaced, as JSON, then deletes the replaced
    /// generation. With `--check`, compares only (exit code 1 on a difference) and deletes
    /// what it wrote. On the embedded store, run it while the server is stopped.
    RebuildAnalytics {
        #[arg(long)]
        check: bool,
    },
    /// Write a synthetic history (orders of fixed stores, products and couriers, spread over
    /// the days before today) into the analytics rollups through the same fold as real
    /// events, for benchmarks. On the embedded store, run it while the server is stopped.
    SeedAnalytics {
        #[arg(long, default_value_t = 1000)]
        stores: u32,
        #[arg(long, default_value_t = 1_000_000)]
        orders: u64,
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
}

/// Runs a command to completion.
pub async fn run(cli: Cli, settings: Settings) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            Application::build(settings)
                .await?
                .run_until_stopped()
                .await
        }
        Command::Migrate => {
            let scylla = settings
                .scylla
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("HEXMARKET_SCYLLA_NODES: must be set to migrate"))?;
            let applied = crate::store::migrate::run(scylla).await?;
            if applied.is_empty() {
                tracing::info!(keyspace = %scylla.keyspace, "schema is up to date");
            } else {
                tracing::info!(keyspace = %scylla.keyspace, ?applied, "schema migrated");
            }
            // Every deploy runs migrate: index accounts that nodes of an older version
            // registered during a rolling upgrade.
            let store = crate::app::open_store(&settings).await?;
            let users = crate::store::users::UserRepo::new(store);
            crate::app::index_canonical_emails(&users, true).await
        }
        Command::VerifyStore => crate::store_contract::verify_store(&settings).await,
        Command::CreateAdmin { email, name } => create_admin(&settings, &email, &name).await,
        Command::SeedDemo {
            vendors,
            products,
            couriers,
            customers,
            bulk,
        } => {
            let options = crate::seed::SeedOptions {
                vendors: vendors.max(1),
                products,
                couriers,
                customers,
                bulk,
                ..Default::default()
            };
            seed_demo(&settings, &options).await
        }
        Command::Demo(options) => crate::demo::run(options).await,
        Command::Reindex => reindex(&settings).await,
        Command::ReportDuplicateEmails => crate::mailbox_report::run(&settings).await,
        Command::Reconcile { from, to } => reconcile(&settings, from, to).await,
        Command::RebuildAnalytics { check } => rebuild_analytics(&settings, check).await,
        Command::SeedAnalytics {
            stores,
            orders,
            days,
        } => {
            let analytics = analytics(&settings).await?;
            let report = analytics.seed(stores, orders, days).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
    }
}

async fn analytics(settings: &Settings) -> anyhow::Result<crate::analytics::Analytics> {
    let store = crate::app::open_store(settings).await?;
    Ok(crate::analytics::Analytics::new(
        store,
        settings.ledger.rates,
        uuid::Uuid::new_v4(),
    ))
}

async fn rebuild_analytics(settings: &Settings, check: bool) -> anyhow::Result<()> {
    let report = analytics(settings).await?.rebuild(!check).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    if check && !report.differences.is_empty() {
        anyhow::bail!("{} rollup rows differ", report.differences.len())
    }
    Ok(())
}

async fn reconcile(
    settings: &Settings,
    from: chrono::DateTime<chrono::Utc>,
    to: Option<chrono::DateTime<chrono::Utc>>,
) -> anyhow::Result<()> {
    let to = to.unwrap_or_else(chrono::Utc::now);
    anyhow::ensure!(from < to, "--from must be before --to");
    let store = crate::app::open_store(settings).await?;
    let clock = crate::clock::Clock::default();
    let payments = crate::app::build_payments(settings, &store, clock.clone())?;
    let ledger = crate::ledger::Ledger::new(crate::ledger::LedgerParts {
        store,
        payments,
        settings: settings.ledger.clone(),
        clock,
        node: uuid::Uuid::new_v4(),
        live: crate::settings::SettingsView::fixed(settings.platform_defaults()),
    });
    let report = ledger.reconcile(from, to).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    if report.differences.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("{} differences", report.differences.len())
    }
}

/// Reads one line (the password) from standard input, without its line ending.
fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

async fn create_admin(settings: &Settings, email: &str, name: &str) -> anyhow::Result<()> {
    use crate::domain::identity::{Email, Role};
    use crate::identity::{IdentityError, NewAccount};

    let email = Email::parse(email).map_err(|e| anyhow::anyhow!("--email {e}"))?;
    let name = crate::http::auth::parse_name(name).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
    eprintln!("Password for {email} (one line on standard input):");
    let password = tokio::task::spawn_blocking(read_password).await??;
    let store = crate::app::open_store(settings).await?;
    let secrets = crate::secrets::Secrets::load(settings)?;
    let bus = crate::app::open_bus(settings)?;
    let identity =
        crate::app::build_identity(settings, &store, &bus, &secrets, Default::default())?;
    let account = NewAccount {
        email,
        password,
        name,
        role: Role::Admin,
        phone: None,
    };
    match identity.register(account).await {
        Ok(user) => {
            // The secret and codes are shown here only.
            let (totp, recovery) = crate::app::enrol_admin(&identity, &store, &user).await?;
            println!("created admin {} ({})", user.email, user.id);
            println!(
                "authenticator (scan or open in an authenticator app): {}",
                totp.uri
            );
            println!("authenticator secret (to type in instead): {}", totp.secret);
            println!("recovery codes (each works once in place of a code; keep them offline):");
            for code in recovery {
                println!("  {code}");
            }
            Ok(())
        }
        Err(IdentityError::Password(rule)) => anyhow::bail!("password {rule}"),
        Err(IdentityError::EmailTaken) => anyhow::bail!("an account with this email exists"),
        Err(e) => Err(e.into()),
    }
}

async fn seed_demo(settings: &Settings, options: &crate::seed::SeedOptions) -> anyhow::Result<()> {
    let store = crate::app::open_store(settings).await?;
    let secrets = crate::secrets::Secrets::load(settings)?;
    let clock = crate::clock::Clock::default();
    let bus = crate::app::open_bus(settings)?;
    let identity = crate::app::build_identity(settings, &store, &bus, &secrets, clock.clone())?;
    let catalog = crate::app::build_catalog(settings, &store, &bus, &secrets, clock).await?;
    let report = crate::seed::seed_demo(&catalog, &identity, options).await?;
    println!(
        "demo city ready in {:.1} s: {} vendors and {} products created ({} products already there), \
         {} accounts created ({} already there)",
        report.took.as_secs_f64(),
        report.vendors_created,
        report.products_created,
        report.products_existing,
        report.users_created,
        report.users_existing,
    );
    println!(
        "sign in as vendor0@{d}, courier0@{d} or customer0@{d} with the password {p}",
        d = crate::seed::DEMO_DOMAIN,
        p = crate::seed::DEMO_PASSWORD,
    );
    Ok(())
}

async fn reindex(settings: &Settings) -> anyhow::Result<()> {
    use anyhow::Context as _;

    let store = crate::app::open_store(settings).await?;
    let secrets = crate::secrets::Secrets::load(settings)?;
    let dir = settings.data_dir.join("search");
    let search = crate::search::SearchIndex::open(&dir, secrets.signer("search-cursor"))
        .with_context(|| format!("opening the search index in {}", dir.display()))?;
    let indexer = crate::catalog::indexing::Indexer::new(store, search.clone());
    let report = indexer.reindex_all().await?;
    let stats = search.stats();
    println!(
        "reindexed {} products in {:.2?} ({} documents, {} bytes on disk)",
        report.products, report.took, stats.documents, stats.bytes_on_disk
    );
    Ok(())
}
