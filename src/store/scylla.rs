//! The ScyllaDB store: the [`Store`] contract on a ScyllaDB (or Cassandra-compatible) cluster.
//!
//! This module owns the driver session, one set of prepared statements per [`Table`], the
//! mapping of lightweight-transaction results onto [`Cas`], and the mapping of driver errors
//! onto [`StoreError`]. Its schema is in `schema/` and is applied by [`super::migrate`].
//!
//! Every table has the same shape, `(pk text, ck text, version bigint, data blob)` with `pk`
//! the partition key and `ck` the clustering key. That is deliberate: the typed repositories
//! above the contract encode domain values into `data` once, for both backends, so this module
//! never learns what a cart or an order is, and adding an aggregate means adding a table, not
//! code here. Statement texts differ between tables only by name, so they are built and
//! prepared once per table at [`ScyllaStore::connect`]; no call builds CQL.
//!
//! Consistency, set per prepared statement:
//! - versioned writes (`insert`, `update`, `delete`) are LWTs at serial consistency `SERIAL`
//!   and consistency `QUORUM` for their commit, so a compare-and-set is linearizable across
//!   datacenters and its result is visible to the next quorum read;
//! - reads of versioned tables are at `QUORUM`, so they see every completed compare-and-set;
//! - append writes and reads (the courier trail) are at `ONE`: the trail takes a write per
//!   courier every few seconds, each point is superseded by the next, and losing or briefly not
//!   seeing one is harmless, so latency and availability win over stronger guarantees.
//!
//! Rows whose `version` is null read as absent. They arise when a row inserted with a longer TTL
//! (or none) is updated with a shorter one: `UPDATE` cannot refresh the row marker that
//! `INSERT` wrote, so once the new cells expire the marker alone keeps an empty row alive.
//! [`Store::insert`] takes such a row over with `IF version = null`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::ControlFlow;
use std::time::Duration;

use ::scylla::client::execution_profile::ExecutionProfile;
use ::scylla::client::session::Session;
use ::scylla::client::session_builder::SessionBuilder;
use ::scylla::deserialize::row::{ColumnIterator, DeserializeRow};
use ::scylla::deserialize::value::DeserializeValue;
use ::scylla::deserialize::{DeserializationError, TypeCheckError};
use ::scylla::errors::{DbError, ExecutionError, RequestAttemptError};
use ::scylla::frame::response::result::ColumnSpec;
use ::scylla::policies::load_balancing::DefaultPolicy;
use ::scylla::response::PagingState;
use ::scylla::response::query_result::QueryResult;
use ::scylla::serialize::row::SerializeRow;
use ::scylla::statement::batch::{Batch, BatchStatement, BatchType};
use ::scylla::statement::prepared::PreparedStatement;
use ::scylla::statement::{Consistency, SerialConsistency};
use anyhow::{Context as _, bail};
use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use futures_util::future::try_join_all;

use super::{
    Cas, Key, MAX_PAGE, Mode, Page, Row, ScanRange, Store, StoreError, StoreResult, Table, Version,
    check_mode, clamp_limit,
};
use crate::config::ScyllaSettings;

/// Longest TTL CQL accepts (20 years), in seconds.
const MAX_TTL_SECS: u64 = 630_720_000;
/// Longest key accepted, partition and clustering together; the same limit as the embedded
/// store, so a key valid on one backend is valid on the other.
const MAX_KEY_BYTES: usize = 60_000;
/// Most rows in one unlogged batch of `put`.
const BATCH_MAX_ROWS: usize = 100;
/// Most row data in one unlogged batch of `put`, kept under ScyllaDB's default batch size
/// warning threshold (128 KiB).
const BATCH_MAX_BYTES: usize = 64 * 1024;
/// Most `put` requests in flight at once; one call with a large backlog must not take every
/// stream of every connection.
const MAX_IN_FLIGHT: usize = 128;

/// Opens a driver session: contact points, credentials, the per-request timeout, and the
/// preferred datacenter when one is configured. With `use_keyspace`, every connection uses the
/// configured keyspace, which must exist (see [`super::migrate`]).
pub async fn connect_session(
    settings: &ScyllaSettings,
    use_keyspace: bool,
) -> anyhow::Result<Session> {
    let mut policy = DefaultPolicy::builder();
    if let Some(datacenter) = &settings.datacenter {
        // Our consistency levels are cluster-wide (QUORUM, SERIAL), so a coordinator in another
        // datacenter gives the same guarantees; failing over only costs latency.
        policy = policy
            .prefer_datacenter(datacenter.clone())
            .permit_dc_failover(true);
    }
    // Statement-level settings override these; they apply to what migrate runs.
    let profile = ExecutionProfile::builder()
        .request_timeout(Some(settings.request_timeout))
        .load_balancing_policy(policy.build())
        .consistency(Consistency::Quorum)
        .serial_consistency(Some(SerialConsistency::Serial))
        .build();

    let mut builder = SessionBuilder::new()
        .known_nodes(&settings.nodes)
        .default_execution_profile_handle(profile.into_handle())
        // Token-aware routing needs our keyspace's metadata, and nothing else's. The name is
        // unquoted in every statement, so the server knows it in lower case.
        .keyspaces_to_fetch([settings.keyspace.to_ascii_lowercase()]);
    match (&settings.username, &settings.password) {
        (Some(username), Some(password)) => builder = builder.user(username, password),
        (None, None) => {}
        _ => bail!("ScyllaDB username and password must be set together"),
    }
    if use_keyspace {
        builder = builder.use_keyspace(&settings.keyspace, false);
    }
    builder
        .build()
        .await
        .with_context(|| format!("connecting to ScyllaDB at {}", settings.nodes.join(", ")))
}

/// The store on a ScyllaDB cluster. One per process (as a `SharedStore`): its session
/// multiplexes every request over a pool of connections per node.
pub struct ScyllaStore {
    session: Session,
    tables: HashMap<Table, TableStatements>,
    ping: PreparedStatement,
}

/// The prepared statements of one table.
struct TableStatements {
    get: PreparedStatement,
    scan: ScanStatements,
    scan_table: PreparedStatement,
    writes: Writes,
}

/// `SELECT ck, version, data ... LIMIT ?` with each combination of clustering bounds.
struct ScanStatements {
    all: PreparedStatement,
    after: PreparedStatement,
    before: PreparedStatement,
    between: PreparedStatement,
}

/// Write statements exist only for the table's [`Mode`]: ScyllaDB must never see plain and
/// conditional writes to the same rows.
enum Writes {
    Versioned(Box<VersionedWrites>),
    Append(AppendWrites),
}

struct VersionedWrites {
    insert: PreparedStatement,
    /// Takes over a row left with a null version (see the module docs).
    claim: PreparedStatement,
    update: PreparedStatement,
    delete: PreparedStatement,
}

struct AppendWrites {
    put: PreparedStatement,
}

/// How a statement runs, set on it once when it is prepared.
#[derive(Clone, Copy)]
enum Run {
    /// A read or plain write at this consistency; safe for the driver to retry.
    Idempotent(Consistency),
    /// A lightweight transaction. Not idempotent: a retried compare-and-set whose first attempt
    /// did apply would report a conflict with its own write.
    Lwt,
}

async fn prepare(session: &Session, cql: String, run: Run) -> anyhow::Result<PreparedStatement> {
    let mut statement = session
        .prepare(cql.as_str())
        .await
        .with_context(|| format!("preparing {cql}"))?;
    match run {
        Run::Idempotent(consistency) => {
            statement.set_consistency(consistency);
            statement.set_is_idempotent(true);
        }
        Run::Lwt => {
            statement.set_consistency(Consistency::Quorum);
            statement.set_serial_consistency(Some(SerialConsistency::Serial));
            statement.set_is_idempotent(false);
        }
    }
    Ok(statement)
}

impl TableStatements {
    async fn prepare(session: &Session, keyspace: &str, table: Table) -> anyhow::Result<Self> {
        let t = format!("{keyspace}.{}", table.name());
        let read = Run::Idempotent(read_consistency(table));

        let mut scan = ScanStatements {
            all: prepare(
                session,
                format!("SELECT ck, version, data FROM {t} WHERE pk = ? LIMIT ?"),
                read,
            )
            .await?,
            after: prepare(
                session,
                format!("SELECT ck, version, data FROM {t} WHERE pk = ? AND ck > ? LIMIT ?"),
                read,
            )
            .await?,
            before: prepare(
                session,
                format!("SELECT ck, version, data FROM {t} WHERE pk = ? AND ck < ? LIMIT ?"),
                read,
            )
            .await?,
            between: prepare(
                session,
                format!(
                    "SELECT ck, version, data FROM {t} WHERE pk = ? AND ck > ? AND ck < ? LIMIT ?"
                ),
                read,
            )
            .await?,
        };
        // LIMIT caps a scan at MAX_PAGE rows; a page that large lets it finish in one round
        // trip unless the server cuts the page short by size.
        for statement in [
            &mut scan.all,
            &mut scan.after,
            &mut scan.before,
            &mut scan.between,
        ] {
            statement.set_page_size(MAX_PAGE as i32);
        }

        let writes = match table.mode() {
            Mode::Versioned => Writes::Versioned(Box::new(VersionedWrites {
                insert: prepare(
                    session,
                    format!(
                        "INSERT INTO {t} (pk, ck, version, data) VALUES (:pk, :ck, 1, :data) \
                         IF NOT EXISTS USING TTL :ttl"
                    ),
                    Run::Lwt,
                )
                .await?,
                claim: prepare(
                    session,
                    format!(
                        "UPDATE {t} USING TTL :ttl SET version = 1, data = :data \
                         WHERE pk = :pk AND ck = :ck IF version = null"
                    ),
                    Run::Lwt,
                )
                .await?,
                update: prepare(
                    session,
                    format!(
                        "UPDATE {t} USING TTL :ttl SET version = :version, data = :data \
                         WHERE pk = :pk AND ck = :ck IF version = :expected"
                    ),
                    Run::Lwt,
                )
                .await?,
                delete: prepare(
                    session,
                    format!("DELETE FROM {t} WHERE pk = :pk AND ck = :ck IF version = :expected"),
                    Run::Lwt,
                )
                .await?,
            })),
            Mode::Append => Writes::Append(AppendWrites {
                put: prepare(
                    session,
                    format!(
                        "INSERT INTO {t} (pk, ck, version, data) VALUES (:pk, :ck, 1, :data) \
                         USING TTL :ttl"
                    ),
                    Run::Idempotent(Consistency::One),
                )
                .await?,
            }),
        };

        Ok(TableStatements {
            get: prepare(
                session,
                format!("SELECT version, data FROM {t} WHERE pk = ? AND ck = ?"),
                read,
            )
            .await?,
            scan,
            scan_table: prepare(
                session,
                format!("SELECT pk, ck, version, data FROM {t}"),
                read,
            )
            .await?,
            writes,
        })
    }
}

fn read_consistency(table: Table) -> Consistency {
    match table.mode() {
        Mode::Versioned => Consistency::Quorum,
        Mode::Append => Consistency::One,
    }
}

impl ScyllaStore {
    /// Connects to the cluster in the configured keyspace and prepares every statement of
    /// every table. Fails if the schema is missing: run `migrate` first.
    pub async fn connect(settings: &ScyllaSettings) -> anyhow::Result<ScyllaStore> {
        let session = connect_session(settings, true).await?;
        let keyspace = settings.keyspace.as_str();
        let prepared = try_join_all(Table::ALL.map(|table| {
            let session = &session;
            async move {
                TableStatements::prepare(session, keyspace, table)
                    .await
                    .map(|statements| (table, statements))
                    .with_context(|| format!("table {table} (has `migrate` been run?)"))
            }
        }))
        .await?;
        let ping = prepare(
            &session,
            "SELECT now() FROM system.local".to_owned(),
            Run::Idempotent(Consistency::One),
        )
        .await?;
        Ok(ScyllaStore {
            session,
            tables: prepared.into_iter().collect(),
            ping,
        })
    }

    fn statements(&self, table: Table) -> StoreResult<&TableStatements> {
        self.tables
            .get(&table)
            .ok_or_else(|| StoreError::Misuse(format!("table {table} has no prepared statements")))
    }

    fn versioned(&self, table: Table) -> StoreResult<&VersionedWrites> {
        match &self.statements(table)?.writes {
            Writes::Versioned(writes) => Ok(writes),
            Writes::Append(_) => Err(StoreError::Misuse(format!("table {table} is append-only"))),
        }
    }

    /// Reads one row at the table's read consistency; rows with a null version are absent.
    async fn read_row(&self, table: Table, key: &Key) -> StoreResult<Option<Row>> {
        let statement = &self.statements(table)?.get;
        let result = self
            .session
            .execute_unpaged(statement, (key.partition.as_str(), key.clustering.as_str()))
            .await
            .map_err(store_error)?;
        let rows = result.into_rows_result().map_err(|e| corrupt(table, e))?;
        match rows
            .maybe_first_row::<StoredRow>()
            .map_err(|e| corrupt(table, e))?
        {
            Some(row) => live_row(table, key.clone(), row.version, row.data),
            None => Ok(None),
        }
    }

    /// Runs one lightweight transaction and decodes its `[applied]` row.
    async fn lwt(
        &self,
        table: Table,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> StoreResult<LwtOutcome> {
        let result = self
            .session
            .execute_unpaged(statement, values)
            .await
            .map_err(store_error)?;
        lwt_outcome(table, result)
    }

    /// The [`Cas::Conflict`] for a transaction that did not apply. `UPDATE` and `DELETE` return
    /// only the columns of their condition, so when the data is missing the row is read back;
    /// it may have changed again since, which is fine: a conflict reports the row as it is.
    async fn conflict(&self, table: Table, key: &Key, outcome: LwtOutcome) -> StoreResult<Cas> {
        let current = match (outcome.version, outcome.data) {
            (None, _) => None,
            (Some(version), Some(data)) => live_row(table, key.clone(), Some(version), Some(data))?,
            (Some(_), None) => self.read_row(table, key).await?,
        };
        Ok(Cas::Conflict(current))
    }

    /// Reads every page of a bounded partition scan. The server may cut pages short by size,
    /// so this follows the paging state until the query's LIMIT is exhausted.
    async fn scan_rows(
        &self,
        table: Table,
        statement: &PreparedStatement,
        values: impl SerializeRow,
        limit: usize,
    ) -> StoreResult<Vec<ClusteredRow>> {
        let mut rows = Vec::new();
        let mut paging = PagingState::start();
        loop {
            let (result, more) = self
                .session
                .execute_single_page(statement, &values, paging)
                .await
                .map_err(store_error)?;
            let page = result.into_rows_result().map_err(|e| corrupt(table, e))?;
            for row in page.rows::<ClusteredRow>().map_err(|e| corrupt(table, e))? {
                rows.push(row.map_err(|e| corrupt(table, e))?);
            }
            match more.into_paging_control_flow() {
                ControlFlow::Continue(next) if rows.len() < limit => paging = next,
                _ => return Ok(rows),
            }
        }
    }

    /// Writes rows of one partition: a single row as a plain insert, several as one unlogged
    /// batch, which ScyllaDB applies as one mutation of that partition.
    async fn put_partition(
        &self,
        put: &PreparedStatement,
        rows: &[RowValues<'_>],
    ) -> StoreResult<()> {
        match rows {
            [] => Ok(()),
            [row] => self
                .session
                .execute_unpaged(put, row)
                .await
                .map(drop)
                .map_err(store_error),
            _ => {
                let mut batch = Batch::new_with_statements(
                    BatchType::Unlogged,
                    vec![BatchStatement::PreparedStatement(put.clone()); rows.len()],
                );
                batch.set_consistency(Consistency::One);
                batch.set_is_idempotent(true);
                self.session
                    .batch(&batch, rows)
                    .await
                    .map(drop)
                    .map_err(store_error)
            }
        }
    }
}

#[async_trait]
impl Store for ScyllaStore {
    fn backend(&self) -> &'static str {
        "scylla"
    }

    #[tracing::instrument(level = "debug", skip_all, fields(table = %table))]
    async fn get(&self, table: Table, key: &Key) -> StoreResult<Option<Row>> {
        check_key(key)?;
        self.read_row(table, key).await
    }

    /// `INSERT ... IF NOT EXISTS`. A [`StoreError::Timeout`] does not mean the insert failed:
    /// the transaction may still have applied (read the row to find out).
    #[tracing::instrument(level = "debug", skip_all, fields(table = %table))]
    async fn insert(
        &self,
        table: Table,
        key: &Key,
        data: Bytes,
        ttl: Option<Duration>,
    ) -> StoreResult<Cas> {
        check_mode(table, Mode::Versioned)?;
        check_key(key)?;
        let values = RowValues {
            pk: &key.partition,
            ck: &key.clustering,
            data: &data,
            ttl: ttl_seconds(ttl)?,
        };
        let writes = self.versioned(table)?;
        let outcome = self.lwt(table, &writes.insert, &values).await?;
        if outcome.applied {
            return Ok(Cas::Applied(1));
        }
        if outcome.version.is_some() {
            return self.conflict(table, key, outcome).await;
        }
        // The row exists but its version expired: it reads as absent, so the insert takes it.
        let claimed = self.lwt(table, &writes.claim, &values).await?;
        if claimed.applied {
            Ok(Cas::Applied(1))
        } else {
            self.conflict(table, key, claimed).await
        }
    }

    /// `UPDATE ... IF version = ?`. A [`StoreError::Timeout`] does not mean the update failed:
    /// the transaction may still have applied (read the row to find out).
    #[tracing::instrument(level = "debug", skip_all, fields(table = %table, expected = expected))]
    async fn update(
        &self,
        table: Table,
        key: &Key,
        expected: Version,
        data: Bytes,
        ttl: Option<Duration>,
    ) -> StoreResult<Cas> {
        check_mode(table, Mode::Versioned)?;
        check_key(key)?;
        let version = expected.checked_add(1).ok_or_else(|| {
            StoreError::Misuse(format!("version {expected} cannot be incremented"))
        })?;
        let values = UpdateValues {
            pk: &key.partition,
            ck: &key.clustering,
            data: &data,
            ttl: ttl_seconds(ttl)?,
            version: cql_version(version)?,
            expected: cql_version(expected)?,
        };
        let outcome = self
            .lwt(table, &self.versioned(table)?.update, &values)
            .await?;
        if outcome.applied {
            Ok(Cas::Applied(version))
        } else {
            self.conflict(table, key, outcome).await
        }
    }

    /// `DELETE ... IF version = ?`. A [`StoreError::Timeout`] does not mean the delete failed:
    /// the transaction may still have applied (read the row to find out).
    #[tracing::instrument(level = "debug", skip_all, fields(table = %table, expected = expected))]
    async fn delete(&self, table: Table, key: &Key, expected: Version) -> StoreResult<Cas> {
        check_mode(table, Mode::Versioned)?;
        check_key(key)?;
        let values = DeleteValues {
            pk: &key.partition,
            ck: &key.clustering,
            expected: cql_version(expected)?,
        };
        let outcome = self
            .lwt(table, &self.versioned(table)?.delete, &values)
            .await?;
        if outcome.applied {
            Ok(Cas::Applied(expected))
        } else {
            self.conflict(table, key, outcome).await
        }
    }

    /// Rows of one partition go out as unlogged batches, rows of different partitions as
    /// concurrent requests. If a key appears twice, its last row wins.
    #[tracing::instrument(level = "debug", skip_all, fields(table = %table, rows = rows.len()))]
    async fn put(
        &self,
        table: Table,
        rows: Vec<(Key, Bytes)>,
        ttl: Option<Duration>,
    ) -> StoreResult<()> {
        check_mode(table, Mode::Append)?;
        for (key, _) in &rows {
            check_key(key)?;
        }
        let ttl = ttl_seconds(ttl)?;
        let put = match &self.statements(table)?.writes {
            Writes::Append(writes) => &writes.put,
            Writes::Versioned(_) => {
                return Err(StoreError::Misuse(format!("table {table} is versioned")));
            }
        };

        // Rows of one batch share its timestamp, so a duplicate key would resolve by comparing
        // values rather than by order; keeping only the last row per key avoids that.
        let mut partitions: HashMap<&str, BTreeMap<&str, &Bytes>> = HashMap::new();
        for (key, data) in &rows {
            partitions
                .entry(key.partition.as_str())
                .or_default()
                .insert(key.clustering.as_str(), data);
        }
        let mut chunks: Vec<Vec<RowValues<'_>>> = Vec::new();
        for (pk, partition) in partitions {
            let mut chunk = Vec::new();
            let mut bytes = 0;
            for (ck, data) in partition {
                if !chunk.is_empty()
                    && (chunk.len() == BATCH_MAX_ROWS || bytes + data.len() > BATCH_MAX_BYTES)
                {
                    chunks.push(std::mem::take(&mut chunk));
                    bytes = 0;
                }
                bytes += data.len();
                chunk.push(RowValues { pk, ck, data, ttl });
            }
            chunks.push(chunk);
        }

        for wave in chunks.chunks(MAX_IN_FLIGHT) {
            try_join_all(wave.iter().map(|chunk| self.put_partition(put, chunk))).await?;
        }
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(table = %table))]
    async fn scan(&self, table: Table, partition: &str, range: ScanRange) -> StoreResult<Page> {
        if partition.is_empty() {
            return Err(StoreError::Misuse("empty partition key".into()));
        }
        let limit = clamp_limit(range.limit);
        // clamp_limit caps it at MAX_PAGE, far below i32::MAX.
        let cql_limit = limit as i32;
        let scan = &self.statements(table)?.scan;
        let raw = match (range.after.as_deref(), range.before.as_deref()) {
            (None, None) => {
                self.scan_rows(table, &scan.all, (partition, cql_limit), limit)
                    .await?
            }
            (Some(after), None) => {
                self.scan_rows(table, &scan.after, (partition, after, cql_limit), limit)
                    .await?
            }
            (None, Some(before)) => {
                self.scan_rows(table, &scan.before, (partition, before, cql_limit), limit)
                    .await?
            }
            (Some(after), Some(before)) => {
                self.scan_rows(
                    table,
                    &scan.between,
                    (partition, after, before, cql_limit),
                    limit,
                )
                .await?
            }
        };

        // The cursor follows the last row the query returned, live or not, so rows skipped
        // for a null version neither end the scan early nor come back on the next page.
        let next = if raw.len() >= limit {
            raw.last().map(|row| row.ck.clone())
        } else {
            None
        };
        let mut rows = Vec::with_capacity(raw.len());
        for row in raw {
            let key = Key::new(partition, row.ck);
            if let Some(row) = live_row(table, key, row.version, row.data)? {
                rows.push(row);
            }
        }
        Ok(Page { rows, next })
    }

    /// Pages in token order with the driver's paging state; the cursor is that state's bytes in
    /// base64url. A page may hold fewer than `limit` rows (the server cuts pages by size too)
    /// and still have a `next`; it is never empty unless it is the last.
    #[tracing::instrument(level = "debug", skip_all, fields(table = %table))]
    async fn scan_table(
        &self,
        table: Table,
        cursor: Option<String>,
        limit: usize,
    ) -> StoreResult<Page> {
        let mut paging = match cursor {
            None => PagingState::start(),
            Some(cursor) => {
                let raw = URL_SAFE_NO_PAD
                    .decode(cursor.as_bytes())
                    .ok()
                    .filter(|raw| !raw.is_empty())
                    .ok_or_else(|| StoreError::Misuse("malformed scan cursor".into()))?;
                PagingState::new_from_raw_bytes(raw)
            }
        };
        // The page size is a property of the statement; a copy shares the prepared id.
        let mut statement = self.statements(table)?.scan_table.clone();
        statement.set_page_size(clamp_limit(limit) as i32);

        loop {
            let (result, more) = self
                .session
                .execute_single_page(&statement, (), paging)
                .await
                .map_err(store_error)?;
            let page = result.into_rows_result().map_err(|e| corrupt(table, e))?;
            let mut rows = Vec::new();
            for row in page.rows::<KeyedRow>().map_err(|e| corrupt(table, e))? {
                let row = row.map_err(|e| corrupt(table, e))?;
                let key = Key::new(row.pk, row.ck);
                if let Some(row) = live_row(table, key, row.version, row.data)? {
                    rows.push(row);
                }
            }
            match more.into_paging_control_flow() {
                // A page of only expired or tombstoned rows says nothing to the caller; skip it
                // rather than hand out an empty page that looks like the end.
                ControlFlow::Continue(next) if rows.is_empty() => paging = next,
                ControlFlow::Continue(next) => {
                    let next = next.as_bytes_slice().map(|raw| URL_SAFE_NO_PAD.encode(raw));
                    return Ok(Page { rows, next });
                }
                ControlFlow::Break(()) => return Ok(Page { rows, next: None }),
            }
        }
    }

    async fn ping(&self) -> StoreResult<()> {
        self.session
            .execute_unpaged(&self.ping, ())
            .await
            .map(drop)
            .map_err(store_error)
    }

    async fn schema_version(&self) -> StoreResult<Option<String>> {
        match self.session.check_schema_agreement().await {
            Ok(Some(version)) => Ok(Some(version.to_string())),
            Ok(None) => Err(StoreError::Unavailable(
                "the nodes do not agree on the schema".into(),
            )),
            Err(e) => Err(StoreError::Unavailable(format!(
                "checking schema agreement: {e}"
            ))),
        }
    }
}

/// Bound values of the insert, claim and put statements.
#[derive(::scylla::SerializeRow)]
struct RowValues<'a> {
    pk: &'a str,
    ck: &'a str,
    data: &'a Bytes,
    ttl: i32,
}

#[derive(::scylla::SerializeRow)]
struct UpdateValues<'a> {
    pk: &'a str,
    ck: &'a str,
    data: &'a Bytes,
    ttl: i32,
    version: i64,
    expected: i64,
}

#[derive(::scylla::SerializeRow)]
struct DeleteValues<'a> {
    pk: &'a str,
    ck: &'a str,
    expected: i64,
}

/// A row read by key. Both columns are nullable: see the module docs on null versions.
#[derive(::scylla::DeserializeRow)]
struct StoredRow {
    version: Option<i64>,
    data: Option<Bytes>,
}

/// A row read by a partition scan.
#[derive(::scylla::DeserializeRow)]
struct ClusteredRow {
    ck: String,
    version: Option<i64>,
    data: Option<Bytes>,
}

/// A row read by a table scan.
#[derive(::scylla::DeserializeRow)]
struct KeyedRow {
    pk: String,
    ck: String,
    version: Option<i64>,
    data: Option<Bytes>,
}

/// The row a lightweight transaction answers with. Its columns vary with the statement and the
/// server: `[applied]` always comes first; ScyllaDB then always returns the current values of
/// the columns the condition reads (every column for `IF NOT EXISTS`), null when the row does
/// not exist, while Cassandra returns them only when the transaction did not apply. So columns
/// are matched by name, all but `[applied]` are optional, and unknown ones are ignored.
struct LwtOutcome {
    applied: bool,
    version: Option<i64>,
    data: Option<Bytes>,
}

#[derive(Debug, thiserror::Error)]
#[error("a lightweight transaction result has no [applied] column")]
struct NotAnLwtResult;

impl<'frame, 'metadata> DeserializeRow<'frame, 'metadata> for LwtOutcome {
    fn type_check(specs: &[ColumnSpec]) -> Result<(), TypeCheckError> {
        let mut has_applied = false;
        for spec in specs {
            match spec.name() {
                "[applied]" => {
                    <bool as DeserializeValue<'frame, 'metadata>>::type_check(spec.typ())?;
                    has_applied = true;
                }
                "version" => {
                    <Option<i64> as DeserializeValue<'frame, 'metadata>>::type_check(spec.typ())?;
                }
                "data" => {
                    <Option<Bytes> as DeserializeValue<'frame, 'metadata>>::type_check(spec.typ())?;
                }
                _ => {}
            }
        }
        if has_applied {
            Ok(())
        } else {
            Err(TypeCheckError::new(NotAnLwtResult))
        }
    }

    fn deserialize(row: ColumnIterator<'frame, 'metadata>) -> Result<Self, DeserializationError> {
        let mut outcome = LwtOutcome {
            applied: false,
            version: None,
            data: None,
        };
        for column in row {
            let column = column?;
            let typ = column.spec.typ();
            match column.spec.name() {
                "[applied]" => outcome.applied = bool::deserialize(typ, column.slice)?,
                "version" => outcome.version = Option::<i64>::deserialize(typ, column.slice)?,
                "data" => outcome.data = Option::<Bytes>::deserialize(typ, column.slice)?,
                _ => {}
            }
        }
        Ok(outcome)
    }
}

fn lwt_outcome(table: Table, result: QueryResult) -> StoreResult<LwtOutcome> {
    result
        .into_rows_result()
        .map_err(|e| corrupt(table, e))?
        .maybe_first_row::<LwtOutcome>()
        .map_err(|e| corrupt(table, e))?
        .ok_or_else(|| corrupt(table, "a lightweight transaction returned no row"))
}

/// Turns stored columns into a row; a null version is a row that has expired (see the module
/// docs) and reads as absent.
fn live_row(
    table: Table,
    key: Key,
    version: Option<i64>,
    data: Option<Bytes>,
) -> StoreResult<Option<Row>> {
    let Some(version) = version else {
        return Ok(None);
    };
    let version = Version::try_from(version)
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| corrupt(table, format_args!("invalid version {version}")))?;
    // version and data are always written together, with the same TTL.
    let data = data.ok_or_else(|| corrupt(table, "a row has a version but no data"))?;
    Ok(Some(Row { key, version, data }))
}

fn cql_version(version: Version) -> StoreResult<i64> {
    i64::try_from(version).map_err(|_| StoreError::Misuse(format!("version {version} too large")))
}

/// `USING TTL` takes whole seconds, 0 meaning "never expires". A sub-second TTL rounds up so
/// it still expires.
fn ttl_seconds(ttl: Option<Duration>) -> StoreResult<i32> {
    let Some(ttl) = ttl.filter(|ttl| !ttl.is_zero()) else {
        return Ok(0);
    };
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    if secs > MAX_TTL_SECS {
        return Err(StoreError::Misuse(format!(
            "TTL of {secs} s exceeds the maximum of {MAX_TTL_SECS} s"
        )));
    }
    i32::try_from(secs).map_err(|_| StoreError::Misuse(format!("TTL of {secs} s too large")))
}

/// ScyllaDB rejects an empty partition key; the length limit matches the embedded store.
fn check_key(key: &Key) -> StoreResult<()> {
    if key.partition.is_empty() {
        return Err(StoreError::Misuse("empty partition key".into()));
    }
    if key.partition.len() + key.clustering.len() > MAX_KEY_BYTES {
        return Err(StoreError::Misuse(format!(
            "key longer than {MAX_KEY_BYTES} bytes"
        )));
    }
    Ok(())
}

fn corrupt(table: Table, reason: impl fmt::Display) -> StoreError {
    StoreError::Corrupt {
        table,
        reason: reason.to_string(),
    }
}

/// Maps a driver error onto the contract. Timeouts, on the server or in the client, and
/// connections that broke mid-request leave the outcome unknown, so they are all
/// [`StoreError::Timeout`]; for a lightweight transaction that means it may have applied.
/// Failures where the request was refused or never sent are [`StoreError::Unavailable`].
fn store_error(err: ExecutionError) -> StoreError {
    let unknown_outcome = || {
        tracing::debug!(error = %err, "ScyllaDB request outcome unknown");
        StoreError::Timeout
    };
    match &err {
        ExecutionError::RequestTimeout(_) => unknown_outcome(),
        ExecutionError::BadQuery(_) => StoreError::Misuse(err.to_string()),
        ExecutionError::LastAttemptError(attempt) => match attempt {
            RequestAttemptError::DbError(db, _) => match db {
                DbError::ReadTimeout { .. } | DbError::WriteTimeout { .. } => unknown_outcome(),
                DbError::SyntaxError | DbError::Invalid => StoreError::Misuse(err.to_string()),
                _ => StoreError::Unavailable(err.to_string()),
            },
            RequestAttemptError::BrokenConnectionError(_) => unknown_outcome(),
            RequestAttemptError::SerializationError(_) => StoreError::Misuse(err.to_string()),
            _ => StoreError::Unavailable(err.to_string()),
        },
        _ => StoreError::Unavailable(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_is_whole_seconds_rounded_up_and_zero_means_none() {
        assert_eq!(ttl_seconds(None).unwrap(), 0);
        assert_eq!(ttl_seconds(Some(Duration::ZERO)).unwrap(), 0);
        assert_eq!(ttl_seconds(Some(Duration::from_millis(1))).unwrap(), 1);
        assert_eq!(ttl_seconds(Some(Duration::from_millis(1500))).unwrap(), 2);
        assert_eq!(
            ttl_seconds(Some(Duration::from_secs(86_400))).unwrap(),
            86_400
        );
        assert!(matches!(
            ttl_seconds(Some(Duration::from_secs(MAX_TTL_SECS + 1))),
            Err(StoreError::Misuse(_))
        ));
    }

    #[test]
    fn a_null_version_reads_as_absent() {
        let key = Key::single("p");
        assert_eq!(
            live_row(Table::Carts, key.clone(), None, None).unwrap(),
            None
        );
        assert_eq!(
            live_row(
                Table::Carts,
                key.clone(),
                Some(3),
                Some(Bytes::from_static(b"x"))
            )
            .unwrap(),
            Some(Row {
                key: key.clone(),
                version: 3,
                data: Bytes::from_static(b"x"),
            })
        );
        assert!(matches!(
            live_row(Table::Carts, key.clone(), Some(0), Some(Bytes::new())),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(
            live_row(Table::Carts, key, Some(1), None),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn keys_need_a_partition_and_a_bounded_length() {
        assert!(check_key(&Key::single("p")).is_ok());
        assert!(check_key(&Key::new("p", "")).is_ok());
        assert!(matches!(
            check_key(&Key::single("")),
            Err(StoreError::Misuse(_))
        ));
        assert!(matches!(
            check_key(&Key::new("p", "c".repeat(MAX_KEY_BYTES))),
            Err(StoreError::Misuse(_))
        ));
    }

    #[test]
    fn timeouts_and_broken_connections_have_unknown_outcomes() {
        use ::scylla::errors::WriteType;

        let write_timeout = ExecutionError::LastAttemptError(RequestAttemptError::DbError(
            DbError::WriteTimeout {
                consistency: Consistency::Serial,
                received: 1,
                required: 2,
                write_type: WriteType::Cas,
            },
            "timed out".into(),
        ));
        assert!(matches!(store_error(write_timeout), StoreError::Timeout));
        assert!(matches!(
            store_error(ExecutionError::RequestTimeout(Duration::from_secs(5))),
            StoreError::Timeout
        ));

        let unavailable = ExecutionError::LastAttemptError(RequestAttemptError::DbError(
            DbError::Unavailable {
                consistency: Consistency::Quorum,
                required: 2,
                alive: 1,
            },
            "not enough replicas".into(),
        ));
        assert!(matches!(
            store_error(unavailable),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            store_error(ExecutionError::EmptyPlan),
            StoreError::Unavailable(_)
        ));
    }
}
