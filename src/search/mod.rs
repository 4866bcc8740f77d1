//! Full-text product search on tantivy: relevance with typo tolerance, filters, facet counts
//! per category and stable cursor pagination.
//!
//! The index is a derived copy of the store: [`crate::catalog::indexing`] builds a
//! [`ProductDoc`] from the product, its vendor, the category tree, its stock and its rating,
//! and hands it here. Writes are group-committed: every change queued while a commit runs goes
//! into the next one, and [`SearchIndex::upsert`] returns once its documents are searchable.
//! Searches run on the blocking pool; cursors pin the snapshot their walk started on (see
//! [`cursor`]).

mod collect;
mod cursor;
mod query;
mod results;
mod schema;
mod writer;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tantivy::directory::error::LockError;
use tantivy::directory::{INDEX_WRITER_LOCK, MmapDirectory};
use tantivy::query::{AllQuery, Query, TermQuery};
use tantivy::schema::{IndexRecordOption, Schema};
use tantivy::{
    Directory as _, Index, IndexReader, IndexSettings, IndexWriter, ReloadPolicy, Searcher,
    TantivyDocument, TantivyError, Term,
};
use tokio::sync::oneshot;

use crate::domain::catalog::{Product, Visibility};
use crate::domain::ids::{CategoryId, ProductId, VendorId};
use crate::domain::money::Money;
use crate::domain::review::RatingSummary;
use crate::secrets::Signer;

pub use collect::Indexed;
use collect::{IdCollector, Order, PageCollector};
use cursor::{Cursor, Snapshots, query_digest};
use query::QueryBuilder;
use schema::Fields;
pub use schema::{SCHEMA_VERSION, fingerprint};
pub use writer::{COMMIT_DELAY, Rebuild};
use writer::{Change, Shared, WriterTask, answer};

/// Everything the index knows about one product.
#[derive(Debug, Clone)]
pub struct ProductDoc {
    pub product: Product,
    /// Version of the product row this was built from.
    pub version: u64,
    pub vendor_name: String,
    /// Whether the vendor is active (its published products are visible to everyone).
    pub vendor_active: bool,
    /// The product's category and its ancestors, root first.
    pub category_path: Vec<CategoryId>,
    /// Units a checkout could hold now.
    pub available: u32,
    pub rating: RatingSummary,
    /// Units sold in the last 7 days.
    pub sold_recent: u32,
}

impl ProductDoc {
    /// Whether everyone may find it: published, and its vendor active.
    pub fn is_public(&self) -> bool {
        self.product.is_listed(self.vendor_active)
    }
}

/// Result order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Sort {
    /// Best text match first (newest first without a query).
    #[default]
    Relevance,
    PriceAsc,
    PriceDesc,
    /// Highest average rating first.
    Rating,
    Newest,
    /// Most sold in the last 7 days, then best rated.
    Popular,
}

/// A validated search.
#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    pub text: Option<String>,
    /// Only products in this category or below it.
    pub category: Option<CategoryId>,
    pub vendor: Option<VendorId>,
    /// Only products of these vendors (the "near" filter); empty means none match.
    pub vendors_in: Option<Vec<VendorId>>,
    /// Price bounds in minor units, inclusive.
    pub min_price: Option<i64>,
    pub max_price: Option<i64>,
    pub in_stock: bool,
    pub min_rating: Option<f64>,
    pub sort: Sort,
    /// 1..=100.
    pub limit: usize,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Include drafts, hidden products and products of inactive vendors (a vendor's own
    /// listing, admins).
    pub include_unlisted: bool,
}

/// One product in a result page.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SearchHit {
    #[schema(value_type = String, format = Uuid)]
    pub id: ProductId,
    pub title: String,
    #[schema(value_type = String, format = Uuid)]
    pub vendor_id: VendorId,
    pub vendor_name: String,
    #[schema(value_type = String, format = Uuid)]
    pub category_id: CategoryId,
    pub price: Money,
    pub available: u32,
    pub rating: RatingSummary,
    pub visibility: Visibility,
    /// Storage key of the first image's thumbnail (served under `/media/{key}`).
    pub thumbnail_key: Option<String>,
    pub created_at: DateTime<Utc>,
    /// Relevance score (only meaningful for text queries).
    pub score: f32,
}

/// Matches per category (the product's own category; they add up to `total`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CategoryCount {
    #[schema(value_type = String, format = Uuid)]
    pub category_id: CategoryId,
    pub count: u64,
}

/// One page of results.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SearchResults {
    pub items: Vec<SearchHit>,
    /// How many products match in all.
    pub total: u64,
    pub facets: Vec<CategoryCount>,
    pub next_cursor: Option<String>,
}

/// What can go wrong searching.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The cursor was not issued by this platform (or was tampered with).
    #[error("the cursor is invalid")]
    BadCursor,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Size and shape of the index, for `/metrics` and benchmarks.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IndexStats {
    pub documents: u64,
    pub bytes_on_disk: u64,
}

/// Memory of the index writer, shared by its indexing threads.
const WRITER_HEAP_BYTES: usize = 50_000_000;
const WRITER_THREADS: usize = 2;
/// How long opening waits for a previous writer of the same directory (a node restarting in
/// the same process) to let go of its lock.
const WRITER_LOCK_WAIT: Duration = Duration::from_secs(10);
/// Most results per page.
pub const MAX_LIMIT: usize = 100;
/// Documents per batch when [`SearchIndex::replace_all`] feeds a rebuild.
const REBUILD_BATCH: usize = 1_000;
/// Decompressed doc-store blocks kept per segment (16 KiB each): ≈ 64 MiB at most, enough for
/// the stored fields of a few hundred thousand products.
const DOC_STORE_CACHE_BLOCKS: usize = 4_096;

/// What each commit records about the index it leaves behind.
#[derive(Debug, Deserialize)]
struct CommitPayload {
    schema: u32,
    /// Whether the index was a complete copy of the store at some point since its creation
    /// (a rebuild finished).
    complete: bool,
}

/// The product index of this node.
#[derive(Clone)]
pub struct SearchIndex {
    inner: Arc<Inner>,
}

struct Inner {
    reader: IndexReader,
    fields: Fields,
    queries: QueryBuilder,
    signer: Signer,
    shared: Arc<Shared>,
    snapshots: Mutex<Snapshots>,
    answers: Mutex<results::Answers>,
    /// One permit per core: how many searches are computed at once.
    turns: tokio::sync::Semaphore,
    /// Tells this opening's reader generations apart from another's (another node, or before
    /// a restart).
    instance: u64,
    rebuilds: Arc<tokio::sync::Mutex<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.close();
    }
}

impl SearchIndex {
    /// Opens (or creates) the index in `dir`. Cursors are signed with `signer`.
    ///
    /// An index of another schema version (or an unreadable one) is wiped; then, as for a new
    /// index, [`needs_rebuild`](Self::needs_rebuild) says so until a rebuild finishes.
    pub fn open(dir: &Path, signer: Signer) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let fields = Fields::new();
        let (index, complete) = open_index(dir, &fields.schema)?;
        schema::register_analyzers(&index);
        let reader: IndexReader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            // Hits are read from the doc store; keep its decompressed blocks (16 KiB each) so a
            // page of results rarely decompresses anything.
            .doc_store_cache_num_blocks(DOC_STORE_CACHE_BLOCKS)
            .try_into()
            .context("opening the search index reader")?;
        let writer = acquire_writer(&index)?;
        let shared = Arc::new(Shared::default());
        shared.needs_rebuild.store(!complete, Ordering::SeqCst);
        let task = WriterTask::new(
            writer,
            reader.clone(),
            fields.clone(),
            Arc::clone(&shared),
            dir.to_path_buf(),
        );
        std::thread::Builder::new()
            .name("search-writer".into())
            .spawn(move || task.run())
            .context("starting the search index writer")?;
        let queries = QueryBuilder::new(&index, &fields);
        Ok(SearchIndex {
            inner: Arc::new(Inner {
                reader,
                fields,
                queries,
                signer,
                shared,
                snapshots: Mutex::new(Snapshots::default()),
                answers: Mutex::new(results::Answers::default()),
                turns: tokio::sync::Semaphore::new(
                    std::thread::available_parallelism().map_or(2, std::num::NonZero::get),
                ),
                instance: rand::random(),
                rebuilds: Arc::new(tokio::sync::Mutex::new(())),
            }),
        })
    }

    /// Whether the index is not a complete copy of the store (new, wiped after a schema
    /// change, or a rebuild never finished): then catching up must rebuild it.
    pub fn needs_rebuild(&self) -> bool {
        self.inner.shared.needs_rebuild.load(Ordering::SeqCst)
    }

    /// Adds or replaces documents; returns once they are searchable.
    pub async fn upsert(&self, docs: Vec<ProductDoc>) -> anyhow::Result<()> {
        if docs.is_empty() {
            return Ok(());
        }
        let (reply, answered) = oneshot::channel();
        self.inner.shared.submit(upserts(docs), Some(reply));
        answer(answered).await
    }

    /// Adds or replaces documents without waiting for them to become searchable (they are
    /// within [`COMMIT_DELAY`]).
    pub fn upsert_soon(&self, docs: Vec<ProductDoc>) {
        if !docs.is_empty() {
            self.inner.shared.submit(upserts(docs), None);
        }
    }

    /// Removes products; returns once they no longer match.
    pub async fn remove(&self, ids: Vec<ProductId>) -> anyhow::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let (reply, answered) = oneshot::channel();
        self.inner.shared.submit(removals(ids), Some(reply));
        answer(answered).await
    }

    /// Removes products without waiting.
    pub fn remove_soon(&self, ids: Vec<ProductId>) {
        if !ids.is_empty() {
            self.inner.shared.submit(removals(ids), None);
        }
    }

    ///
    /// A first page the current snapshot already answered is served at once. Anything else is
    /// computed on the blocking pool, at most one search per core at a time: queued searches
    /// wait their turn in order instead of all slowing each other down.
    pub async fn search(&self, query: SearchQuery) -> Result<SearchResults, SearchError> {
        Ok(self.answer(query).await?.results.clone())
    }

    /// Like [`search`](Self::search), answered as the API's JSON body.
    pub async fn search_json(&self, query: SearchQuery) -> Result<Bytes, SearchError> {
        self.answer(query).await?.json()
    }

    async fn answer(&self, query: SearchQuery) -> Result<Arc<results::Answer>, SearchError> {
        // Computed once: the cache key, the cursor's check and the next cursor all use it.
        let digest = query_digest(&query);
        if let Some(answer) = self.inner.cached(&query, digest) {
            return Ok(answer);
        }
        let _turn = self
            .inner
            .turns
            .acquire()
            .await
            .map_err(|e| SearchError::Internal(anyhow::anyhow!("search queue closed: {e}")))?;
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || inner.search_cached(query, digest))
            .await
            .map_err(|e| SearchError::Internal(anyhow::anyhow!("search task failed: {e}")))?
    }

    /// Products per category (their own category). `public_only`: count only what everyone
    /// sees.
    pub async fn count_by_category(
        &self,
        public_only: bool,
    ) -> anyhow::Result<HashMap<CategoryId, u64>> {
        self.blocking(move |inner| {
            let query: Box<dyn Query> = if public_only {
                inner.public_query()
            } else {
                Box::new(AllQuery)
            };
            let collector = PageCollector {
                order: Order::Newest,
                after: None,
                take: 0,
                facets: true,
            };
            let page = inner.reader.searcher().search(&*query, &collector)?;
            Ok(parse_facets(page.facets)
                .into_iter()
                .map(|c| (c.category_id, c.count))
                .collect())
        })
        .await
    }

    /// Every indexed product of a vendor (any visibility).
    pub async fn products_of_vendor(&self, vendor: VendorId) -> anyhow::Result<Vec<ProductId>> {
        self.blocking(move |inner| {
            let term = Term::from_field_text(inner.fields.vendor_id, &vendor.to_string());
            let query = TermQuery::new(term, IndexRecordOption::Basic);
            let found = inner.reader.searcher().search(&query, &IdCollector)?;
            Ok(found.into_iter().map(|i| i.id).collect())
        })
        .await
    }

    /// Every indexed product in a category or below it (any visibility).
    pub async fn products_in_category(
        &self,
        category: CategoryId,
    ) -> anyhow::Result<Vec<ProductId>> {
        self.blocking(move |inner| {
            let term = Term::from_field_text(inner.fields.category_path, &category.to_string());
            let query = TermQuery::new(term, IndexRecordOption::Basic);
            let found = inner.reader.searcher().search(&query, &IdCollector)?;
            Ok(found.into_iter().map(|i| i.id).collect())
        })
        .await
    }

    /// Product id → the product row version each indexed document was built from.
    pub async fn indexed_versions(&self) -> anyhow::Result<HashMap<ProductId, u64>> {
        Ok(self
            .indexed()
            .await?
            .into_iter()
            .map(|(id, i)| (id, i.version))
            .collect())
    }

    /// Product id → what its indexed document was built from (version and fingerprint).
    pub async fn indexed(&self) -> anyhow::Result<HashMap<ProductId, Indexed>> {
        self.blocking(|inner| {
            let found = inner.reader.searcher().search(&AllQuery, &IdCollector)?;
            Ok(found.into_iter().map(|i| (i.id, i)).collect())
        })
        .await
    }

    /// Starts replacing the whole index: feed it every document with [`Rebuild::add`], then
    /// [`Rebuild::finish`]. Searches see the old index until then; one rebuild at a time.
    pub async fn rebuild(&self) -> anyhow::Result<Rebuild> {
        let exclusive = Arc::clone(&self.inner.rebuilds).lock_owned().await;
        Rebuild::start(Arc::clone(&self.inner.shared), exclusive).await
    }

    /// Replaces the whole index with `docs` (a rebuild); searchable when it returns.
    pub async fn replace_all(&self, docs: Vec<ProductDoc>) -> anyhow::Result<()> {
        let mut rebuild = self.rebuild().await?;
        let mut docs = docs.into_iter().peekable();
        while docs.peek().is_some() {
            rebuild
                .add(docs.by_ref().take(REBUILD_BATCH).collect())
                .await?;
        }
        rebuild.finish().await?;
        Ok(())
    }

    pub fn stats(&self) -> IndexStats {
        IndexStats {
            documents: self.inner.shared.documents.load(Ordering::Relaxed),
            bytes_on_disk: self.inner.shared.bytes_on_disk.load(Ordering::Relaxed),
        }
    }

    /// Runs `work` on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Inner) -> tantivy::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let inner = Arc::clone(&self.inner);
        let result = tokio::task::spawn_blocking(move || work(&inner))
            .await
            .context("search task failed")?;
        Ok(result?)
    }
}

impl Inner {
    fn public_query(&self) -> Box<dyn Query> {
        Box::new(TermQuery::new(
            Term::from_field_bool(self.fields.public, true),
            IndexRecordOption::Basic,
        ))
    }

    /// The searcher a walk continues on: its pinned snapshot while kept, else the current one.
    fn searcher_for(&self, cursor: Option<&Cursor>) -> Searcher {
        cursor
            .filter(|c| c.instance == self.instance)
            .and_then(|c| self.snapshots.lock().get(c.generation, Instant::now()))
            .unwrap_or_else(|| self.reader.searcher())
    }

    /// Answers from the current snapshot's answers when it has this one; computes (and keeps)
    /// it otherwise.
    /// `digest` is `q`'s [`query_digest`].
    fn cached(&self, q: &SearchQuery, digest: u64) -> Option<Arc<results::Answer>> {
        if q.cursor.is_some() {
            return None;
        }
        let generation = self.reader.searcher().generation().generation_id();
        let key = (digest, q.limit, None);
        self.answers.lock().get(generation, &key)
    }

    fn search_cached(
        &self,
        q: SearchQuery,
        digest: u64,
    ) -> Result<Arc<results::Answer>, SearchError> {
        if let Some(answer) = self.cached(&q, digest) {
            return Ok(answer);
        }
        let generation = self.reader.searcher().generation().generation_id();
        let key = (digest, q.limit, q.cursor.clone());
        let answer = Arc::new(results::Answer::new(self.search(q, digest)?));
        if key.2.is_none() {
            self.answers
                .lock()
                .put(generation, key, Arc::clone(&answer));
        }
        Ok(answer)
    }

    fn search(&self, q: SearchQuery, digest: u64) -> Result<SearchResults, SearchError> {
        let limit = q.limit.clamp(1, MAX_LIMIT);
        let cursor = match &q.cursor {
            Some(token) => Some(Cursor::decode_for(token, &self.signer, &q, digest)?),
            None => None,
        };
        let searcher = self.searcher_for(cursor.as_ref());
        let (query, has_text) = self.queries.build(&q, &searcher);
        let collector = PageCollector {
            order: Order::of(q.sort, has_text),
            after: cursor.as_ref().map(|c| c.after),
            take: limit + 1,
            facets: true,
        };
        let page = searcher
            .search(&*query, &collector)
            .context("searching the product index")?;
        let shown = &page.entries[..page.entries.len().min(limit)];
        let items = shown
            .iter()
            .map(|entry| {
                let doc: TantivyDocument = searcher
                    .doc(entry.address)
                    .context("reading an indexed product")?;
                self.fields.hit(&doc, entry.score)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let next_cursor = match shown.last() {
            Some(last) if page.entries.len() > limit => {
                self.snapshots.lock().keep(&searcher, Instant::now());
                let offset = cursor.as_ref().map_or(0, |c| c.offset) + shown.len() as u64;
                let next = Cursor::new(
                    self.instance,
                    searcher.generation().generation_id(),
                    offset,
                    last.key,
                    digest,
                );
                Some(next.encode(&self.signer))
            }
            _ => None,
        };
        Ok(SearchResults {
            items,
            total: page.total,
            facets: parse_facets(page.facets),
            next_cursor,
        })
    }
}

fn upserts(docs: Vec<ProductDoc>) -> impl Iterator<Item = (ProductId, Change)> {
    docs.into_iter()
        .map(|doc| (doc.product.id, Change::Upsert(Box::new(doc))))
}

fn removals(ids: Vec<ProductId>) -> impl Iterator<Item = (ProductId, Change)> {
    ids.into_iter().map(|id| (id, Change::Remove))
}

/// Category counts, most matches first.
fn parse_facets(raw: HashMap<String, u64>) -> Vec<CategoryCount> {
    let mut facets: Vec<CategoryCount> = raw
        .into_iter()
        .filter_map(|(id, count)| {
            Some(CategoryCount {
                category_id: id.parse().ok()?,
                count,
            })
        })
        .collect();
    facets.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.category_id.cmp(&b.category_id))
    });
    facets
}

/// Opens the index in `dir` if it is of this schema version, else creates it afresh; also
/// says whether it is complete (see [`CommitPayload`]).
fn open_index(dir: &Path, schema: &Schema) -> anyhow::Result<(Index, bool)> {
    let directory = MmapDirectory::open(dir)
        .with_context(|| format!("opening the search index directory {}", dir.display()))?;
    if Index::exists(&directory).context("looking for a search index")? {
        match Index::open(directory.clone()) {
            Ok(index) => {
                let payload = index
                    .load_metas()
                    .ok()
                    .and_then(|metas| metas.payload)
                    .and_then(|p| serde_json::from_str::<CommitPayload>(&p).ok());
                let same_schema = index.schema() == *schema;
                match payload {
                    Some(p) if same_schema && p.schema == SCHEMA_VERSION => {
                        return Ok((index, p.complete));
                    }
                    None if same_schema => return Ok((index, false)),
                    _ => tracing::warn!(
                        dir = %dir.display(),
                        "search index of another schema version; rebuilding it"
                    ),
                }
            }
            Err(e) => tracing::warn!(
                dir = %dir.display(),
                error = %e,
                "search index unreadable; rebuilding it"
            ),
        }
        wipe(&directory, dir)?;
    }
    let index = Index::create(directory, schema.clone(), IndexSettings::default())
        .context("creating the search index")?;
    Ok((index, false))
}

/// Deletes the index files in `dir`, unless another writer holds the index.
fn wipe(directory: &MmapDirectory, dir: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let _lock = loop {
        match directory.acquire_lock(&INDEX_WRITER_LOCK) {
            Ok(lock) => break lock,
            Err(LockError::LockBusy) if started.elapsed() < WRITER_LOCK_WAIT => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => anyhow::bail!("the search index in {} is in use: {e}", dir.display()),
        }
    };
    let lock_file = INDEX_WRITER_LOCK.filepath.clone();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        if entry.path().file_name() == lock_file.file_name() {
            continue;
        }
        let path = entry.path();
        let removed = if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}

/// The index writer, waiting a little for a previous writer in this process to let go.
fn acquire_writer(index: &Index) -> anyhow::Result<IndexWriter<TantivyDocument>> {
    let started = Instant::now();
    loop {
        match index.writer_with_num_threads(WRITER_THREADS, WRITER_HEAP_BYTES) {
            Ok(writer) => return Ok(writer),
            Err(TantivyError::LockFailure(LockError::LockBusy, _))
                if started.elapsed() < WRITER_LOCK_WAIT =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                return Err(e)
                    .context("opening the search index writer (is another process using it?)");
            }
        }
    }
}
