//! The single writer of the index: a dedicated thread owns the `IndexWriter` and
//! group-commits.
//!
//! Callers put changes in a queue (latest change per product wins) and, if they want to see
//! them searchable, a reply slot. The thread takes everything queued, applies it, commits
//! once, reloads the reader and answers every reply slot; whatever arrives meanwhile goes
//! into the next commit. Changes nobody waits for are committed at most [`COMMIT_DELAY`]
//! after the first of them arrived. The queue holds at most one change per product, so it is
//! bounded by the size of the catalog however slow the disk is.
//!
//! A rebuild empties the index and refills it in batches without committing in between, so
//! searches see the old index until the new one is complete. Changes arriving during a
//! rebuild are applied on top of it (their waiters answered at its commit); a rebuild
//! document older than such a change is skipped.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tantivy::{IndexReader, IndexWriter, TantivyDocument};
use tokio::sync::{OwnedMutexGuard, oneshot};

use super::ProductDoc;
use super::schema::{Fields, SCHEMA_VERSION};
use crate::domain::ids::ProductId;

/// Longest time a change nobody waits for stays uncommitted.
pub const COMMIT_DELAY: Duration = Duration::from_millis(250);

/// What to do with one product's document.
#[derive(Debug, Clone)]
pub enum Change {
    Upsert(Box<ProductDoc>),
    Remove,
}

type Reply = oneshot::Sender<Result<(), String>>;

enum RebuildStep {
    Start(Reply),
    Batch(Vec<ProductDoc>, Reply),
    Finish(Reply),
    Abort,
}

#[derive(Default)]
struct Queue {
    changes: HashMap<ProductId, Change>,
    /// When the oldest change nobody waits for arrived.
    soon_since: Option<Instant>,
    waiters: Vec<Reply>,
    rebuild: VecDeque<RebuildStep>,
    closed: bool,
    /// The writer thread has ended: nothing queued now would ever be answered.
    stopped: bool,
}

/// The queue and what the writer reports back, shared by the index handles and the thread.
#[derive(Default)]
pub struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    /// The index is not (yet) a complete copy of the store.
    pub needs_rebuild: AtomicBool,
    pub documents: AtomicU64,
    pub bytes_on_disk: AtomicU64,
}

impl Shared {
    /// Queues changes; with `reply`, it is answered once they are searchable.
    pub fn submit(
        &self,
        changes: impl IntoIterator<Item = (ProductId, Change)>,
        reply: Option<Reply>,
    ) {
        let mut queue = self.queue.lock();
        if queue.stopped {
            // Dropping `reply` tells the caller the writer is gone.
            return;
        }
        queue.changes.extend(changes);
        match reply {
            Some(reply) => queue.waiters.push(reply),
            None => {
                queue.soon_since.get_or_insert_with(Instant::now);
            }
        }
        self.wake.notify_one();
    }

    fn step(&self, step: RebuildStep) {
        let mut queue = self.queue.lock();
        if !queue.stopped {
            queue.rebuild.push_back(step);
            self.wake.notify_one();
        }
    }

    /// Asks the thread to commit what is queued and stop.
    pub fn close(&self) {
        self.queue.lock().closed = true;
        self.wake.notify_one();
    }
}

/// Waits for the writer's answer.
pub async fn answer(reply: oneshot::Receiver<Result<(), String>>) -> anyhow::Result<()> {
    match reply.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(anyhow::anyhow!("search index write failed: {e}")),
        Err(_) => Err(anyhow::anyhow!("the search index writer has stopped")),
    }
}

/// A rebuild in progress: add every document in batches, then [`finish`](Self::finish).
/// Dropped unfinished, it is rolled back and the index stays as it was.
pub struct Rebuild {
    shared: Arc<Shared>,
    _exclusive: OwnedMutexGuard<()>,
    documents: u64,
    finished: bool,
}

impl Rebuild {
    pub(super) async fn start(
        shared: Arc<Shared>,
        exclusive: OwnedMutexGuard<()>,
    ) -> anyhow::Result<Self> {
        let (reply, answered) = oneshot::channel();
        shared.step(RebuildStep::Start(reply));
        // Until it is answered, dropping this rebuild must still roll the start back.
        let rebuild = Rebuild {
            shared,
            _exclusive: exclusive,
            documents: 0,
            finished: false,
        };
        answer(answered).await?;
        Ok(rebuild)
    }

    /// Adds documents to the new index; returns once they are written (not yet visible).
    pub async fn add(&mut self, docs: Vec<ProductDoc>) -> anyhow::Result<()> {
        if docs.is_empty() {
            return Ok(());
        }
        let count = docs.len() as u64;
        let (reply, answered) = oneshot::channel();
        self.shared.step(RebuildStep::Batch(docs, reply));
        answer(answered).await?;
        self.documents += count;
        Ok(())
    }

    /// Commits the new index; returns the number of documents added once it is searchable.
    pub async fn finish(mut self) -> anyhow::Result<u64> {
        let (reply, answered) = oneshot::channel();
        self.shared.step(RebuildStep::Finish(reply));
        self.finished = true;
        answer(answered).await?;
        Ok(self.documents)
    }
}

impl Drop for Rebuild {
    fn drop(&mut self) {
        if !self.finished {
            self.shared.step(RebuildStep::Abort);
        }
    }
}

/// What the writer took from the queue in one go.
struct Drained {
    changes: HashMap<ProductId, Change>,
    waiters: Vec<Reply>,
    rebuild: VecDeque<RebuildStep>,
}

/// A rebuild as the writer sees it.
#[derive(Default)]
struct Rebuilding {
    /// Products changed since the rebuild started: the product version of the change
    /// (`None`: removed).
    touched: HashMap<ProductId, Option<u64>>,
    /// Those changes, to apply again should the rebuild be rolled back.
    replay: Vec<(ProductId, Change)>,
    /// Callers waiting for changes made during the rebuild.
    waiters: Vec<Reply>,
}

/// The thread owning the `IndexWriter`.
pub struct WriterTask {
    pub writer: IndexWriter<TantivyDocument>,
    pub reader: IndexReader,
    pub fields: Fields,
    pub shared: Arc<Shared>,
    pub dir: PathBuf,
    rebuild: Option<Rebuilding>,
}

impl WriterTask {
    pub fn new(
        writer: IndexWriter<TantivyDocument>,
        reader: IndexReader,
        fields: Fields,
        shared: Arc<Shared>,
        dir: PathBuf,
    ) -> Self {
        let task = WriterTask {
            writer,
            reader,
            fields,
            shared,
            dir,
            rebuild: None,
        };
        task.update_stats();
        task
    }

    /// Runs until the index is closed, then waits for merges to finish.
    pub fn run(mut self) {
        let _stopped = Stopped(Arc::clone(&self.shared));
        while let Some(batch) = self.next() {
            for step in batch.rebuild {
                self.rebuild_step(step);
            }
            let had_changes = !batch.changes.is_empty();
            let applied = self.apply(batch.changes);
            if let Some(rebuild) = &mut self.rebuild {
                match applied {
                    Ok(()) => rebuild.waiters.extend(batch.waiters),
                    Err(e) => reply_all(batch.waiters, &Err(e)),
                }
                continue;
            }
            let result = match applied {
                Ok(()) if had_changes => self.commit(),
                Ok(()) => Ok(()),
                Err(e) => {
                    self.roll_back();
                    Err(e)
                }
            };
            reply_all(batch.waiters, &result);
        }
        if self.rebuild.is_some() {
            tracing::warn!("search index closed during a rebuild; the rebuild is discarded");
        }
        if let Err(e) = self.writer.wait_merging_threads() {
            tracing::warn!(error = %e, "search index merges did not finish");
        }
    }

    /// Blocks until there is work that is due; `None` once closed and drained.
    fn next(&self) -> Option<Drained> {
        let mut queue = self.shared.queue.lock();
        loop {
            let urgent = !queue.waiters.is_empty() || !queue.rebuild.is_empty() || queue.closed;
            let due = queue.soon_since.map(|since| since + COMMIT_DELAY);
            if urgent || due.is_some_and(|due| Instant::now() >= due) {
                break;
            }
            match due {
                Some(due) => {
                    self.shared.wake.wait_until(&mut queue, due);
                }
                None => self.shared.wake.wait(&mut queue),
            }
        }
        if queue.closed
            && queue.changes.is_empty()
            && queue.waiters.is_empty()
            && queue.rebuild.is_empty()
        {
            return None;
        }
        queue.soon_since = None;
        Some(Drained {
            changes: std::mem::take(&mut queue.changes),
            waiters: std::mem::take(&mut queue.waiters),
            rebuild: std::mem::take(&mut queue.rebuild),
        })
    }

    fn apply(&mut self, changes: HashMap<ProductId, Change>) -> Result<(), String> {
        for (id, change) in changes {
            self.writer.delete_term(self.fields.id_term(id));
            if let Change::Upsert(doc) = &change {
                self.writer
                    .add_document(self.fields.document(doc))
                    .map_err(|e| e.to_string())?;
            }
            if let Some(rebuild) = &mut self.rebuild {
                let version = match &change {
                    Change::Upsert(doc) => Some(doc.version),
                    Change::Remove => None,
                };
                rebuild.touched.insert(id, version);
                rebuild.replay.push((id, change));
            }
        }
        Ok(())
    }

    fn rebuild_step(&mut self, step: RebuildStep) {
        match step {
            RebuildStep::Start(reply) => {
                let result = if self.rebuild.is_some() {
                    Err("a rebuild is already in progress".to_owned())
                } else {
                    self.writer
                        .delete_all_documents()
                        .map(|_| {
                            self.rebuild = Some(Rebuilding::default());
                        })
                        .map_err(|e| e.to_string())
                };
                let _ = reply.send(result);
            }
            RebuildStep::Batch(docs, reply) => {
                let result = self.add_rebuilt(docs);
                let _ = reply.send(result);
            }
            RebuildStep::Finish(reply) => {
                let Some(rebuild) = self.rebuild.take() else {
                    let _ = reply.send(Err("no rebuild in progress".to_owned()));
                    return;
                };
                let was = self.shared.needs_rebuild.swap(false, Ordering::SeqCst);
                let result = self.commit();
                if result.is_err() {
                    self.shared.needs_rebuild.store(was, Ordering::SeqCst);
                }
                reply_all(rebuild.waiters, &result);
                let _ = reply.send(result);
            }
            RebuildStep::Abort => {
                let Some(rebuild) = self.rebuild.take() else {
                    return;
                };
                tracing::warn!("search index rebuild abandoned; rolling back");
                self.roll_back();
                let replay = rebuild.replay.into_iter().collect();
                let result = self.apply(replay).and_then(|()| self.commit());
                reply_all(rebuild.waiters, &result);
            }
        }
    }

    fn add_rebuilt(&mut self, docs: Vec<ProductDoc>) -> Result<(), String> {
        let Some(rebuild) = &self.rebuild else {
            return Err("no rebuild in progress".to_owned());
        };
        for doc in docs {
            let id = doc.product.id;
            match rebuild.touched.get(&id) {
                // Changed meanwhile from a read at least as recent: keep that change.
                Some(None) => continue,
                Some(Some(version)) if *version >= doc.version => continue,
                Some(Some(_)) => {
                    self.writer.delete_term(self.fields.id_term(id));
                }
                None => {}
            }
            self.writer
                .add_document(self.fields.document(&doc))
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<(), String> {
        let payload = serde_json::json!({
            "schema": SCHEMA_VERSION,
            "complete": !self.shared.needs_rebuild.load(Ordering::SeqCst),
        })
        .to_string();
        let committed = self.writer.prepare_commit().and_then(|mut prepared| {
            prepared.set_payload(&payload);
            prepared.commit()
        });
        if let Err(e) = committed {
            tracing::error!(error = %e, "search index commit failed");
            self.roll_back();
            return Err(e.to_string());
        }
        if let Err(e) = self.reader.reload() {
            tracing::error!(error = %e, "search index reader reload failed");
            return Err(e.to_string());
        }
        self.update_stats();
        Ok(())
    }

    fn roll_back(&mut self) {
        if let Err(e) = self.writer.rollback() {
            tracing::error!(error = %e, "search index rollback failed");
        }
    }

    fn update_stats(&self) {
        let documents = self.reader.searcher().num_docs();
        self.shared.documents.store(documents, Ordering::Relaxed);
        self.shared
            .bytes_on_disk
            .store(dir_size(&self.dir), Ordering::Relaxed);
    }
}

/// Marks the writer gone when its thread ends (also by a panic), dropping whatever is queued
/// so that nobody waits for it forever.
struct Stopped(Arc<Shared>);

impl Drop for Stopped {
    fn drop(&mut self) {
        let mut queue = self.0.queue.lock();
        queue.stopped = true;
        queue.changes.clear();
        queue.waiters.clear();
        queue.rebuild.clear();
    }
}

fn reply_all(waiters: Vec<Reply>, result: &Result<(), String>) {
    for waiter in waiters {
        // A caller that stopped waiting does not care.
        let _ = waiter.send(result.clone());
    }
}

/// Bytes of the files directly in `dir` (tantivy keeps its files flat).
pub fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(std::fs::Metadata::is_file)
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
