//! The embedded store: fjall on local disk, durable by group commit.
//!
//! Reads go straight to fjall on the blocking pool. Every write goes to one writer thread,
//! which takes all writes waiting in its queue, checks their conditions against the current
//! rows (and against earlier writes of the same group), commits the group as one atomic fjall
//! batch synced to disk once, and only then answers each caller. One sync acknowledges many
//! writes, and because a single thread decides every condition, compare-and-set needs no locks
//! and behaves exactly like ScyllaDB's LWT. Readers never see a write before it is synced:
//! fjall applies a batch to its memtables only after the journal was persisted.
//!
//! On disk, each [`Table`] is a fjall keyspace. A row's key is
//! `len(partition) as u16 BE ‖ partition ‖ clustering`, so a partition is a key prefix and its
//! rows sort by clustering key. A row's value is `version u64 BE ‖ expires_at_ms i64 BE ‖ data`
//! (0 = never expires). Rows written with a TTL also get an entry in the `_expiry` keyspace,
//! ordered by expiry time, which a sweeper walks to delete them. A row written conditionally
//! gets an entry of its own. Rows of an append table (a courier's trail: thousands of rows a
//! second) get one entry per partition and stretch of expiry times instead (see
//! [`partition_bucket`]): the sweeper scans such a partition and deletes the rows in it that
//! have expired. Reads never return an expired row, whenever it is deleted.

use std::collections::{HashMap, HashSet};
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use tokio::sync::{mpsc, oneshot};

use super::{
    Cas, Key, Mode, Page, Row, ScanRange, Store, StoreError, StoreResult, Table, Version,
    check_mode, clamp_limit,
};

/// Most writes committed by one sync. Bounds the latency one group adds to its first writer.
const MAX_GROUP: usize = 2048;
/// Writes queued for the writer thread before callers wait for room.
const QUEUE_DEPTH: usize = 16 * 1024;
/// How often expired rows are swept.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);
/// Most expired rows deleted per sweep; the rest wait for the next one.
const SWEEP_BATCH: usize = 10_000;
/// How soon a sweep that had more to delete than [`SWEEP_BATCH`] runs again.
const SWEEP_AGAIN: Duration = Duration::from_secs(1);
/// Partition expiry entries the writer remembers having written (see [`Written`]).
const REMEMBERED_ENTRIES: usize = 65_536;
/// Set in an expiry entry's table tag when the entry stands for a partition, not a row.
const PARTITION_ENTRY: u8 = 0x80;
const _: () = assert!(Table::ALL.len() < PARTITION_ENTRY as usize);
const HEADER: usize = 16;

/// The embedded, durable store.
pub struct EmbeddedStore {
    tables: Arc<Tables>,
    // Both are `None` only while dropping.
    writer: Option<mpsc::Sender<Job>>,
    writer_thread: Option<std::thread::JoinHandle<()>>,
}

struct Tables {
    db: Database,
    by_table: HashMap<Table, Keyspace>,
    expiry: Keyspace,
}

impl Tables {
    fn keyspace(&self, table: Table) -> StoreResult<&Keyspace> {
        self.by_table
            .get(&table)
            .ok_or_else(|| StoreError::Misuse(format!("table {table} is not open")))
    }
}

enum Op {
    Insert {
        table: Table,
        key: Key,
        data: Bytes,
        ttl: Option<Duration>,
    },
    Update {
        table: Table,
        key: Key,
        expected: Version,
        data: Bytes,
        ttl: Option<Duration>,
    },
    Delete {
        table: Table,
        key: Key,
        expected: Version,
    },
    Put {
        table: Table,
        rows: Vec<(Key, Bytes)>,
        ttl: Option<Duration>,
    },
    /// Deletes a row if it is expired by now, and an expiry entry; sent by the sweeper.
    Expire {
        table: Table,
        raw_key: Option<Vec<u8>>,
        expiry_key: Option<Vec<u8>>,
    },
}

struct Job {
    op: Op,
    reply: oneshot::Sender<StoreResult<Cas>>,
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir` and starts its writer and sweeper.
    ///
    /// Must be called inside a tokio runtime. Only one process may open a directory at a time.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the store directory {}", dir.display()))?;
        let db = Database::builder(dir)
            .open()
            .with_context(|| format!("opening the embedded store in {}", dir.display()))?;
        let mut by_table = HashMap::new();
        for table in Table::ALL {
            let ks = db
                .keyspace(table.name(), KeyspaceCreateOptions::default)
                .with_context(|| format!("opening table {table}"))?;
            by_table.insert(table, ks);
        }
        let expiry = db
            .keyspace("_expiry", KeyspaceCreateOptions::default)
            .context("opening the expiry index")?;
        let tables = Arc::new(Tables {
            db,
            by_table,
            expiry,
        });

        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let writer_tables = Arc::clone(&tables);
        let writer_thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(&writer_tables, rx))
            .context("starting the store writer thread")?;

        tokio::spawn(sweeper(Arc::downgrade(&tables), tx.downgrade()));
        Ok(EmbeddedStore {
            tables,
            writer: Some(tx),
            writer_thread: Some(writer_thread),
        })
    }

    async fn submit(&self, op: Op) -> StoreResult<Cas> {
        let (reply, answer) = oneshot::channel();
        let writer = self.writer.as_ref().ok_or_else(stopped)?;
        writer
            .send(Job { op, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    async fn blocking<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Tables) -> StoreResult<T> + Send + 'static,
    {
        let tables = Arc::clone(&self.tables);
        tokio::task::spawn_blocking(move || f(&tables))
            .await
            .map_err(|e| StoreError::Unavailable(format!("store read task failed: {e}")))?
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    async fn get(&self, table: Table, key: &Key) -> StoreResult<Option<Row>> {
        // A point read is answered on the caller's thread: it finds the row in the memtables
        // or in the block cache (at worst one read of a page the kernel caches), which costs
        // less than handing it to another thread and waking the caller again.
        let raw = encode_key(key)?;
        let value = self.tables.keyspace(table)?.get(&raw).map_err(io)?;
        Ok(match value.map(|v| decode_value(table, &v)).transpose()? {
            Some(v) if !v.expired(now_ms()) => Some(Row {
                key: key.clone(),
                version: v.version,
                data: v.data,
            }),
            _ => None,
        })
    }

    async fn insert(
        &self,
        table: Table,
        key: &Key,
        data: Bytes,
        ttl: Option<Duration>,
    ) -> StoreResult<Cas> {
        check_mode(table, Mode::Versioned)?;
        encode_key(key)?;
        self.submit(Op::Insert {
            table,
            key: key.clone(),
            data,
            ttl,
        })
        .await
    }

    async fn update(
        &self,
        table: Table,
        key: &Key,
        expected: Version,
        data: Bytes,
        ttl: Option<Duration>,
    ) -> StoreResult<Cas> {
        check_mode(table, Mode::Versioned)?;
        encode_key(key)?;
        self.submit(Op::Update {
            table,
            key: key.clone(),
            expected,
            data,
            ttl,
        })
        .await
    }

    async fn delete(&self, table: Table, key: &Key, expected: Version) -> StoreResult<Cas> {
        check_mode(table, Mode::Versioned)?;
        encode_key(key)?;
        self.submit(Op::Delete {
            table,
            key: key.clone(),
            expected,
        })
        .await
    }

    async fn put(
        &self,
        table: Table,
        rows: Vec<(Key, Bytes)>,
        ttl: Option<Duration>,
    ) -> StoreResult<()> {
        check_mode(table, Mode::Append)?;
        for (key, _) in &rows {
            encode_key(key)?;
        }
        if rows.is_empty() {
            return Ok(());
        }
        self.submit(Op::Put { table, rows, ttl }).await.map(|_| ())
    }

    async fn scan(&self, table: Table, partition: &str, range: ScanRange) -> StoreResult<Page> {
        let prefix = partition_prefix(partition)?;
        let partition = partition.to_owned();
        let limit = clamp_limit(range.limit);
        self.blocking(move |t| {
            let ks = t.keyspace(table)?;
            let lower = match &range.after {
                Some(after) => Bound::Excluded([prefix.as_slice(), after.as_bytes()].concat()),
                None => Bound::Included(prefix.clone()),
            };
            let upper = match &range.before {
                Some(before) => Bound::Excluded([prefix.as_slice(), before.as_bytes()].concat()),
                None => Bound::Unbounded,
            };
            let now = now_ms();
            let mut rows = Vec::new();
            for item in ks.range::<Vec<u8>, _>((lower, upper)) {
                let (k, v) = item.into_inner().map_err(io)?;
                if !k.starts_with(&prefix) {
                    break;
                }
                let value = decode_value(table, &v)?;
                if value.expired(now) {
                    continue;
                }
                let clustering = std::str::from_utf8(&k[prefix.len()..])
                    .map_err(|_| corrupt(table, "clustering key is not UTF-8"))?
                    .to_owned();
                rows.push(Row {
                    key: Key::new(partition.clone(), clustering),
                    version: value.version,
                    data: value.data,
                });
                if rows.len() == limit {
                    break;
                }
            }
            let next = (rows.len() == limit)
                .then(|| rows.last().map(|r| r.key.clustering.clone()))
                .flatten();
            Ok(Page { rows, next })
        })
        .await
    }

    async fn scan_table(
        &self,
        table: Table,
        cursor: Option<String>,
        limit: usize,
    ) -> StoreResult<Page> {
        let limit = clamp_limit(limit);
        let after = match cursor {
            Some(c) => Some(
                URL_SAFE_NO_PAD
                    .decode(c.as_bytes())
                    .map_err(|_| StoreError::Misuse("malformed scan cursor".into()))?,
            ),
            None => None,
        };
        self.blocking(move |t| {
            let ks = t.keyspace(table)?;
            let lower = match after {
                Some(a) => Bound::Excluded(a),
                None => Bound::Unbounded,
            };
            let now = now_ms();
            let mut rows = Vec::new();
            let mut last_raw = None;
            for item in ks.range::<Vec<u8>, _>((lower, Bound::Unbounded)) {
                let (k, v) = item.into_inner().map_err(io)?;
                let value = decode_value(table, &v)?;
                if value.expired(now) {
                    continue;
                }
                rows.push(Row {
                    key: decode_key(table, &k)?,
                    version: value.version,
                    data: value.data,
                });
                last_raw = Some(k);
                if rows.len() == limit {
                    break;
                }
            }
            let next = (rows.len() == limit)
                .then(|| last_raw.map(|k| URL_SAFE_NO_PAD.encode(&k)))
                .flatten();
            Ok(Page { rows, next })
        })
        .await
    }

    async fn ping(&self) -> StoreResult<()> {
        if self.writer.as_ref().is_none_or(|w| w.is_closed()) {
            return Err(stopped());
        }
        self.blocking(|t| {
            t.expiry.first_key_value();
            Ok(())
        })
        .await
    }
}

impl Drop for EmbeddedStore {
    /// Lets the writer finish what is queued and waits for it, so that once the store is
    /// dropped its directory can be opened again (by a restart in the same process).
    fn drop(&mut self) {
        drop(self.writer.take());
        if let Some(thread) = self.writer_thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the store writer thread panicked");
        }
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the store writer has stopped".into())
}

/// The writer thread: group commit until every sender is gone.
fn writer_loop(tables: &Tables, mut rx: mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(MAX_GROUP);
    let mut written = Written::default();
    while let Some(first) = rx.blocking_recv() {
        jobs.push(first);
        while jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        commit_group(tables, &mut jobs, &mut written);
    }
    if let Err(e) = tables.db.persist(PersistMode::SyncAll) {
        tracing::error!(error = %e, "final sync of the embedded store failed");
    }
    tracing::debug!("store writer stopped");
}

/// Partition expiry entries written by earlier groups, so that a courier's trail adds its
/// entry once per stretch of expiry times rather than with every point. Forgetting one only
/// writes it again; an entry is remembered once its group is committed.
#[derive(Default)]
struct Written(HashSet<Vec<u8>>);

impl Written {
    fn remember(&mut self, entries: HashSet<Vec<u8>>) {
        if self.0.len() + entries.len() > REMEMBERED_ENTRIES {
            self.0.clear();
        }
        self.0.extend(entries);
    }
}

fn commit_group(tables: &Tables, jobs: &mut Vec<Job>, written: &mut Written) {
    let mut group = Group {
        tables,
        overlay: HashMap::new(),
        batch: tables.db.batch().durability(Some(PersistMode::SyncData)),
        now: now_ms(),
        expiring: jobs.iter().any(|job| matches!(job.op, Op::Expire { .. })),
        written,
        new_entries: HashSet::new(),
    };
    let outcomes: Vec<StoreResult<Cas>> = jobs
        .iter_mut()
        .map(|job| group.apply(&mut job.op))
        .collect();
    let new_entries = std::mem::take(&mut group.new_entries);
    let committed = group.batch.commit();
    if committed.is_ok() {
        written.remember(new_entries);
    }
    for (job, outcome) in jobs.drain(..).zip(outcomes) {
        let answer = match &committed {
            Ok(()) => outcome,
            Err(e) => Err(StoreError::Unavailable(format!("commit failed: {e}"))),
        };
        // The caller may have gone away (request cancelled); its write is durable regardless.
        let _ = job.reply.send(answer);
    }
    if let Err(e) = committed {
        tracing::error!(error = %e, "embedded store commit failed");
    }
}

/// Writes of one group: conditions are checked against the overlay of earlier writes in the
/// group first, then against what is on disk.
struct Group<'a> {
    tables: &'a Tables,
    overlay: HashMap<(Table, Vec<u8>), Option<StoredValue>>,
    batch: fjall::OwnedWriteBatch,
    now: i64,
    /// The group expires rows, so it must see the rows appended before the expiry in it.
    /// Otherwise appended rows stay out of the overlay: no conditional write reads an append
    /// table, and a courier's trail is thousands of rows a second.
    expiring: bool,
    /// Partition expiry entries committed by earlier groups.
    written: &'a Written,
    /// Partition expiry entries this group writes.
    new_entries: HashSet<Vec<u8>>,
}

impl Group<'_> {
    fn current(&self, table: Table, raw: &[u8]) -> StoreResult<Option<StoredValue>> {
        if let Some(v) = self.overlay.get(&(table, raw.to_vec())) {
            return Ok(v.clone());
        }
        let stored = self.tables.keyspace(table)?.get(raw).map_err(io)?;
        Ok(stored
            .map(|v| decode_value(table, &v))
            .transpose()?
            .filter(|v| !v.expired(self.now)))
    }

    fn write(&mut self, table: Table, raw: Vec<u8>, value: StoredValue) -> StoreResult<()> {
        self.stage(table, raw.clone(), &value)?;
        self.overlay.insert((table, raw), Some(value));
        Ok(())
    }

    /// Writes a row of an append table (see [`Group::expiring`]), which expires with its
    /// partition's entry for the stretch `ttl` puts it in (see [`partition_bucket`]).
    fn append(
        &mut self,
        table: Table,
        raw: Vec<u8>,
        value: StoredValue,
        ttl: Duration,
    ) -> StoreResult<()> {
        if value.expires_at != 0 {
            let entry = partition_expiry_key(
                partition_bucket(value.expires_at, ttl),
                table,
                partition_of(&raw)?,
            );
            if !self.written.0.contains(&entry) && !self.new_entries.contains(&entry) {
                self.batch.insert(&self.tables.expiry, entry.clone(), []);
                self.new_entries.insert(entry);
            }
        }
        let ks = self.tables.keyspace(table)?.clone();
        if self.expiring {
            self.overlay
                .insert((table, raw.clone()), Some(value.clone()));
        }
        self.batch.insert(&ks, raw, value.encode());
        Ok(())
    }

    fn stage(&mut self, table: Table, raw: Vec<u8>, value: &StoredValue) -> StoreResult<()> {
        let ks = self.tables.keyspace(table)?.clone();
        if value.expires_at != 0 {
            self.batch.insert(
                &self.tables.expiry,
                expiry_key(value.expires_at, table, &raw),
                [],
            );
        }
        self.batch.insert(&ks, raw, value.encode());
        Ok(())
    }

    fn remove(&mut self, table: Table, raw: Vec<u8>) -> StoreResult<()> {
        let ks = self.tables.keyspace(table)?.clone();
        self.batch.remove(&ks, raw.clone());
        self.overlay.insert((table, raw), None);
        Ok(())
    }

    fn apply(&mut self, op: &mut Op) -> StoreResult<Cas> {
        match op {
            Op::Insert {
                table,
                key,
                data,
                ttl,
            } => {
                let raw = encode_key(key)?;
                match self.current(*table, &raw)? {
                    Some(existing) => Ok(Cas::Conflict(Some(existing.into_row(key.clone())))),
                    None => {
                        let value = StoredValue::new(1, *ttl, self.now, data.clone());
                        self.write(*table, raw, value)?;
                        Ok(Cas::Applied(1))
                    }
                }
            }
            Op::Update {
                table,
                key,
                expected,
                data,
                ttl,
            } => {
                let raw = encode_key(key)?;
                match self.current(*table, &raw)? {
                    Some(existing) if existing.version == *expected => {
                        let version = *expected + 1;
                        let value = StoredValue::new(version, *ttl, self.now, data.clone());
                        self.write(*table, raw, value)?;
                        Ok(Cas::Applied(version))
                    }
                    other => Ok(Cas::Conflict(other.map(|v| v.into_row(key.clone())))),
                }
            }
            Op::Delete {
                table,
                key,
                expected,
            } => {
                let raw = encode_key(key)?;
                match self.current(*table, &raw)? {
                    Some(existing) if existing.version == *expected => {
                        self.remove(*table, raw)?;
                        Ok(Cas::Applied(*expected))
                    }
                    other => Ok(Cas::Conflict(other.map(|v| v.into_row(key.clone())))),
                }
            }
            Op::Put { table, rows, ttl } => {
                let ttl = ttl.unwrap_or_default();
                for (key, data) in rows.drain(..) {
                    let raw = encode_key(&key)?;
                    let value = StoredValue::new(1, Some(ttl), self.now, data);
                    self.append(*table, raw, value, ttl)?;
                }
                Ok(Cas::Applied(1))
            }
            Op::Expire {
                table,
                raw_key,
                expiry_key,
            } => {
                if let Some(expiry_key) = expiry_key.take() {
                    self.batch.remove(&self.tables.expiry, expiry_key);
                }
                let Some(raw_key) = raw_key.take() else {
                    return Ok(Cas::Applied(0));
                };
                let current = match self.overlay.get(&(*table, raw_key.clone())) {
                    Some(v) => v.clone(),
                    None => self
                        .tables
                        .keyspace(*table)?
                        .get(raw_key.as_slice())
                        .map_err(io)?
                        .map(|v| decode_value(*table, &v))
                        .transpose()?,
                };
                // A row rewritten since with a later expiry (or none) must stay.
                if current.is_some_and(|v| v.expired(self.now)) {
                    self.remove(*table, raw_key)?;
                }
                Ok(Cas::Applied(0))
            }
        }
    }
}

/// Deletes expired rows in the background, through the writer so conditions stay consistent.
async fn sweeper(tables: std::sync::Weak<Tables>, writer: mpsc::WeakSender<Job>) {
    // The first sweep at once: rows may have expired while the node was down.
    let mut wait = Duration::ZERO;
    loop {
        tokio::time::sleep(wait).await;
        let Some(tables) = tables.upgrade() else {
            return;
        };
        wait = match sweep(tables, &writer, now_ms()).await {
            Ok(Swept::All) => SWEEP_INTERVAL,
            Ok(Swept::More) => SWEEP_AGAIN,
            Err(e) => {
                tracing::warn!(error = %e, "sweeping expired rows failed");
                SWEEP_INTERVAL
            }
        };
    }
}

/// Whether a sweep left expired rows for the next one.
#[derive(Debug, PartialEq, Eq)]
enum Swept {
    All,
    More,
}

/// Hands the writer the deletion of up to [`SWEEP_BATCH`] rows expired by `now`, and of the
/// expiry entries that found them. A partition's entry goes once every expired row of the
/// partition has been handed over, after those rows: the writer commits in order, so a crash
/// leaves the entry to find the rest again.
async fn sweep(
    tables: Arc<Tables>,
    writer: &mpsc::WeakSender<Job>,
    now: i64,
) -> StoreResult<Swept> {
    let (due, more) = tokio::task::spawn_blocking(move || expired_entries(&tables, now))
        .await
        .map_err(|e| StoreError::Unavailable(format!("expiry scan task failed: {e}")))??;
    // Never held across an await: dropping the store waits for every sender.
    let Some(writer) = writer.upgrade() else {
        return Ok(Swept::All);
    };
    for (table, raw_key, expiry_key) in due {
        let (reply, _answer) = oneshot::channel();
        let job = Job {
            op: Op::Expire {
                table,
                raw_key,
                expiry_key,
            },
            reply,
        };
        if writer.try_send(job).is_err() {
            // Queue full (busy) or closed: the rest waits for the next sweep.
            return Ok(Swept::More);
        }
    }
    Ok(if more { Swept::More } else { Swept::All })
}

/// What the sweeper hands the writer: a table, maybe a row of it, maybe an expiry entry.
type Due = (Table, Option<Vec<u8>>, Option<Vec<u8>>);

/// Up to [`SWEEP_BATCH`] rows expired by `now`, and whether there are more.
fn expired_entries(tables: &Tables, now: i64) -> StoreResult<(Vec<Due>, bool)> {
    let upper = (now as u64).to_be_bytes();
    let mut due = Vec::new();
    for item in tables
        .expiry
        .range::<&[u8], _>((Bound::Unbounded, Bound::Excluded(&upper[..])))
    {
        if due.len() >= SWEEP_BATCH {
            return Ok((due, true));
        }
        let key = item.key().map_err(io)?;
        match parse_expiry_key(&key) {
            Some(Expiring::Row(table, raw)) => {
                due.push((table, Some(raw.to_vec()), Some(key.to_vec())));
            }
            Some(Expiring::Partition(table, prefix)) => {
                let ks = tables.keyspace(table)?;
                let mut whole = true;
                for row in ks.prefix(prefix) {
                    if due.len() >= SWEEP_BATCH {
                        whole = false;
                        break;
                    }
                    let (k, v) = row.into_inner().map_err(io)?;
                    if decode_value(table, &v)?.expired(now) {
                        due.push((table, Some(k.to_vec()), None));
                    }
                }
                if !whole {
                    return Ok((due, true));
                }
                due.push((table, None, Some(key.to_vec())));
            }
            // Written by a version that knew tables this one does not: left alone.
            None => {}
        }
    }
    Ok((due, false))
}

fn expiry_key(expires_at: i64, table: Table, raw: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(9 + raw.len());
    key.extend_from_slice(&(expires_at as u64).to_be_bytes());
    key.push(table_tag(table));
    key.extend_from_slice(raw);
    key
}

/// The entry that finds the rows of a partition (its key prefix) expiring by `bucket`.
fn partition_expiry_key(bucket: i64, table: Table, prefix: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(9 + prefix.len());
    key.extend_from_slice(&(bucket as u64).to_be_bytes());
    key.push(table_tag(table) | PARTITION_ENTRY);
    key.extend_from_slice(prefix);
    key
}

/// When the entry of a row expiring at `expires_at` (ms) comes due: at the end of its stretch
/// of `ttl / 32` (at least a second, at most a day). A courier's trail, kept 30 days in
/// partitions of one day, gets one or two entries per partition, and a row is deleted at most
/// a thirty-second of its TTL late.
fn partition_bucket(expires_at: i64, ttl: Duration) -> i64 {
    let width = (ttl / 32).clamp(Duration::from_secs(1), Duration::from_secs(86_400));
    let width = width.as_millis() as i64;
    expires_at
        .div_euclid(width)
        .saturating_add(1)
        .saturating_mul(width)
}

/// The partition part of a raw key (its length and the partition).
fn partition_of(raw: &[u8]) -> StoreResult<&[u8]> {
    let len = raw
        .get(..2)
        .map(|l| u16::from_be_bytes([l[0], l[1]]) as usize)
        .ok_or_else(|| StoreError::Misuse("malformed key".into()))?;
    raw.get(..2 + len)
        .ok_or_else(|| StoreError::Misuse("malformed key".into()))
}

/// What an expiry entry finds.
enum Expiring<'a> {
    Row(Table, &'a [u8]),
    Partition(Table, &'a [u8]),
}

fn parse_expiry_key(key: &[u8]) -> Option<Expiring<'_>> {
    let tag = *key.get(8)?;
    let table = Table::ALL
        .into_iter()
        .find(|t| table_tag(*t) == tag & !PARTITION_ENTRY)?;
    let rest = key.get(9..)?;
    Some(if tag & PARTITION_ENTRY == 0 {
        Expiring::Row(table, rest)
    } else {
        Expiring::Partition(table, rest)
    })
}

fn table_tag(table: Table) -> u8 {
    // Position in the stable ALL list; fewer than 128 tables by construction (the high bit
    // marks a partition entry).
    Table::ALL.iter().position(|t| *t == table).unwrap_or(0) as u8
}

#[derive(Clone)]
struct StoredValue {
    version: Version,
    expires_at: i64,
    data: Bytes,
}

impl StoredValue {
    fn new(version: Version, ttl: Option<Duration>, now: i64, data: Bytes) -> Self {
        let expires_at = match ttl {
            Some(ttl) if !ttl.is_zero() => now.saturating_add(ttl.as_millis() as i64),
            _ => 0,
        };
        StoredValue {
            version,
            expires_at,
            data,
        }
    }

    fn expired(&self, now: i64) -> bool {
        self.expires_at != 0 && self.expires_at <= now
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.data.len());
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.expires_at.to_be_bytes());
        out.extend_from_slice(&self.data);
        out
    }

    fn into_row(self, key: Key) -> Row {
        Row {
            key,
            version: self.version,
            data: self.data,
        }
    }
}

fn decode_value(table: Table, raw: &[u8]) -> StoreResult<StoredValue> {
    let (header, data) = raw
        .split_at_checked(HEADER)
        .ok_or_else(|| corrupt(table, "value shorter than its header"))?;
    let (version, expires_at) = header.split_at(8);
    Ok(StoredValue {
        version: u64::from_be_bytes(version.try_into().map_err(|_| corrupt(table, "version"))?),
        expires_at: i64::from_be_bytes(
            expires_at
                .try_into()
                .map_err(|_| corrupt(table, "expiry"))?,
        ),
        data: Bytes::copy_from_slice(data),
    })
}

fn partition_prefix(partition: &str) -> StoreResult<Vec<u8>> {
    let len = u16::try_from(partition.len())
        .map_err(|_| StoreError::Misuse("partition key longer than 65535 bytes".into()))?;
    let mut out = Vec::with_capacity(2 + partition.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(partition.as_bytes());
    Ok(out)
}

fn encode_key(key: &Key) -> StoreResult<Vec<u8>> {
    let mut out = partition_prefix(&key.partition)?;
    out.extend_from_slice(key.clustering.as_bytes());
    if out.len() > 60_000 {
        return Err(StoreError::Misuse("key longer than 60000 bytes".into()));
    }
    Ok(out)
}

fn decode_key(table: Table, raw: &[u8]) -> StoreResult<Key> {
    let bad = || corrupt(table, "malformed key");
    let len = u16::from_be_bytes(
        raw.get(..2)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?,
    ) as usize;
    let partition = raw.get(2..2 + len).ok_or_else(bad)?;
    let clustering = raw.get(2 + len..).ok_or_else(bad)?;
    Ok(Key::new(
        std::str::from_utf8(partition).map_err(|_| bad())?,
        std::str::from_utf8(clustering).map_err(|_| bad())?,
    ))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn io(e: fjall::Error) -> StoreError {
    StoreError::Unavailable(format!("embedded store I/O: {e}"))
}

fn corrupt(table: Table, reason: &str) -> StoreError {
    StoreError::Corrupt {
        table,
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(partition: &str, clustering: String) -> (Key, Bytes) {
        (Key::new(partition, clustering), Bytes::from_static(b"p"))
    }

    /// Returns once every job queued before it is committed: the writer commits in order.
    async fn settled(store: &EmbeddedStore) {
        let row = point("barrier", uuid::Uuid::new_v4().to_string());
        store.put(Table::AuditLog, vec![row], None).await.unwrap();
    }

    /// 300 trail rows in two partitions add an expiry entry per partition and stretch, not
    /// one per row; once they expire, a sweep deletes them and the entries, and leaves the
    /// row of the same partition written without a TTL. A conditionally written row keeps an
    /// entry of its own and is swept too.
    #[tokio::test]
    async fn a_sweep_deletes_expired_rows_by_partition_and_by_row() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let ttl = Duration::from_millis(300);
        for round in 0..3 {
            let rows = (0..100)
                .map(|i| point(&format!("courier-{}", i % 2), format!("{round}{i:03}")))
                .collect();
            store
                .put(Table::CourierTrail, rows, Some(ttl))
                .await
                .unwrap();
        }
        let kept = point("courier-0", "kept".to_owned());
        store
            .put(Table::CourierTrail, vec![kept], None)
            .await
            .unwrap();
        let session = Key::single("session");
        let insert = store.insert(
            Table::Sessions,
            &session,
            Bytes::from_static(b"s"),
            Some(ttl),
        );
        assert_eq!(insert.await.unwrap(), Cas::Applied(1));

        let tables = Arc::clone(&store.tables);
        let writer = store.writer.as_ref().unwrap().downgrade();
        let trail = tables.keyspace(Table::CourierTrail).unwrap().clone();
        assert_eq!(trail.iter().count(), 301);
        // Each partition's rows expire within one or two one-second stretches.
        let entries = tables.expiry.iter().count();
        assert!((3..=5).contains(&entries), "{entries} expiry entries");

        assert_eq!(
            sweep(Arc::clone(&tables), &writer, now_ms()).await.unwrap(),
            Swept::All
        );
        settled(&store).await;
        assert_eq!(trail.iter().count(), 301, "nothing is due yet");

        // The TTL, and at most a stretch of one second after it.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert_eq!(
            sweep(Arc::clone(&tables), &writer, now_ms()).await.unwrap(),
            Swept::All
        );
        settled(&store).await;
        let left: Vec<_> = trail.iter().map(|kv| kv.key().unwrap().to_vec()).collect();
        assert_eq!(left, [encode_key(&Key::new("courier-0", "kept")).unwrap()]);
        assert_eq!(tables.expiry.iter().count(), 0);
        let sessions = tables.keyspace(Table::Sessions).unwrap();
        assert_eq!(sessions.iter().count(), 0);
    }

    #[test]
    fn a_partition_entry_comes_due_at_the_end_of_its_stretch() {
        let day = Duration::from_secs(30 * 86_400);
        // 30 days: stretches of 22.5 hours.
        let width = 81_000_000;
        assert_eq!(partition_bucket(0, day), width);
        assert_eq!(partition_bucket(width - 1, day), width);
        assert_eq!(partition_bucket(width, day), 2 * width);
        // Short TTLs: a second; long ones: a day.
        assert_eq!(partition_bucket(1_500, Duration::from_millis(10)), 2_000);
        let decade = Duration::from_secs(3_650 * 86_400);
        assert_eq!(partition_bucket(1, decade), 86_400_000);

        let raw = encode_key(&Key::new("courier-1", "00042")).unwrap();
        assert_eq!(partition_of(&raw).unwrap(), b"\0\x09courier-1");
        let entry = partition_expiry_key(7, Table::CourierTrail, partition_of(&raw).unwrap());
        assert!(matches!(
            parse_expiry_key(&entry),
            Some(Expiring::Partition(Table::CourierTrail, b"\0\x09courier-1"))
        ));
        let entry = expiry_key(7, Table::CourierTrail, &raw);
        assert!(matches!(
            parse_expiry_key(&entry),
            Some(Expiring::Row(Table::CourierTrail, r)) if r == raw.as_slice()
        ));
    }
}
