//! Pagination cursors and the searcher snapshots they pin.
//!
//! A cursor names the index snapshot its first page was read from (this node's instance and
//! the reader generation), how many results came before, the sort key of the last result,
//! and a digest of the query. While the snapshot is kept (a small LRU with idle expiry), the
//! next page is read from exactly the same documents and scores, so a walk sees every
//! product that existed at its first page exactly once whatever is written meanwhile. When
//! the snapshot is gone (expired, another node, a restart) the walk continues on the current
//! index after the same sort key. Cursors are signed: a cursor altered, made by someone else
//! or used with other parameters is refused.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use tantivy::Searcher;

use super::collect::SortKey;
use super::{SearchError, SearchQuery};
use crate::secrets::Signer;

/// Format of the cursor payload.
const CURSOR_FORMAT: u8 = 1;
/// Most snapshots kept for open walks.
pub const MAX_SNAPSHOTS: usize = 32;
/// A snapshot nobody paged through for this long is dropped.
pub const SNAPSHOT_IDLE: Duration = Duration::from_secs(600);

/// Where a walk stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The index instance (one per open) whose generation `generation` is.
    pub instance: u64,
    pub generation: u64,
    /// Results returned before the next page.
    pub offset: u64,
    /// Sort key of the last result returned.
    pub after: SortKey,
    /// Digest of the query parameters (see [`query_digest`]).
    pub query: u64,
}

/// Bytes of an encoded cursor: the format, then eight big-endian `u64`s.
const ENCODED_LEN: usize = 1 + 8 * 8;

impl Cursor {
    pub fn new(instance: u64, generation: u64, offset: u64, after: SortKey, query: u64) -> Self {
        Cursor {
            instance,
            generation,
            offset,
            after,
            query,
        }
    }

    /// The signed token handed to clients.
    pub fn encode(&self, signer: &Signer) -> String {
        let mut bytes = Vec::with_capacity(ENCODED_LEN);
        bytes.push(CURSOR_FORMAT);
        for n in [self.instance, self.generation, self.offset]
            .into_iter()
            .chain(self.after)
            .chain([self.query])
        {
            bytes.extend_from_slice(&n.to_be_bytes());
        }
        signer.sign(&URL_SAFE_NO_PAD.encode(bytes))
    }

    /// The cursor of a token this platform issued for this query.
    pub fn decode(token: &str, signer: &Signer, query: u64) -> Result<Self, SearchError> {
        let payload = signer.verify(token).ok_or(SearchError::BadCursor)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| SearchError::BadCursor)?;
        let (format, rest) = bytes.split_first().ok_or(SearchError::BadCursor)?;
        if *format != CURSOR_FORMAT || bytes.len() != ENCODED_LEN {
            return Err(SearchError::BadCursor);
        }
        let mut numbers = rest.chunks_exact(8).map(|chunk| {
            let mut n = [0u8; 8];
            n.copy_from_slice(chunk);
            u64::from_be_bytes(n)
        });
        let mut next = || numbers.next().ok_or(SearchError::BadCursor);
        let cursor = Cursor {
            instance: next()?,
            generation: next()?,
            offset: next()?,
            after: [next()?, next()?, next()?, next()?],
            query: next()?,
        };
        if cursor.query != query {
            return Err(SearchError::BadCursor);
        }
        Ok(cursor)
    }
}

/// A digest of everything that decides which results a query has and in what order (not the
/// page size nor the cursor).
pub fn query_digest(q: &SearchQuery) -> u64 {
    // Each present field is tagged and its bytes length-prefixed, so no two different queries
    // are encoded alike. Absent fields are left out (their tags tell them apart).
    fn field(hash: &mut Sha256, tag: u8, bytes: &[u8]) {
        hash.update([tag]);
        hash.update((bytes.len() as u64).to_be_bytes());
        hash.update(bytes);
    }
    let mut hash = Sha256::new();
    if let Some(text) = &q.text {
        field(&mut hash, 1, text.trim().as_bytes());
    }
    if let Some(category) = q.category {
        field(&mut hash, 2, category.as_uuid().as_bytes());
    }
    if let Some(vendor) = q.vendor {
        field(&mut hash, 3, vendor.as_uuid().as_bytes());
    }
    if let Some(vendors) = &q.vendors_in {
        // A set: its order and repeats do not change the results.
        let mut ids: Vec<u128> = vendors.iter().map(|v| v.as_uuid().as_u128()).collect();
        ids.sort_unstable();
        ids.dedup();
        let bytes: Vec<u8> = ids.iter().flat_map(|id| id.to_be_bytes()).collect();
        field(&mut hash, 4, &bytes);
    }
    if let Some(min) = q.min_price {
        field(&mut hash, 5, &min.to_be_bytes());
    }
    if let Some(max) = q.max_price {
        field(&mut hash, 6, &max.to_be_bytes());
    }
    field(&mut hash, 7, &[u8::from(q.in_stock)]);
    if let Some(rating) = q.min_rating {
        field(&mut hash, 8, &rating.to_bits().to_be_bytes());
    }
    field(&mut hash, 9, format!("{:?}", q.sort).as_bytes());
    field(&mut hash, 10, &[u8::from(q.include_unlisted)]);
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The digest cursors carried before [`query_digest`] (a SHA-256 of the query rendered as
/// JSON). Cursors are still accepted with it, so a walk begun on a node of the previous
/// version goes on across a rolling upgrade.
fn previous_query_digest(q: &SearchQuery) -> u64 {
    let mut vendors: Vec<String> = q
        .vendors_in
        .iter()
        .flatten()
        .map(ToString::to_string)
        .collect();
    vendors.sort_unstable();
    let canonical = serde_json::json!({
        "text": q.text.as_deref().map(str::trim),
        "category": q.category.map(|c| c.to_string()),
        "vendor": q.vendor.map(|v| v.to_string()),
        "vendors_in": q.vendors_in.as_ref().map(|_| vendors),
        "min_price": q.min_price,
        "max_price": q.max_price,
        "in_stock": q.in_stock,
        "min_rating": q.min_rating.map(f64::to_bits),
        "sort": format!("{:?}", q.sort),
        "include_unlisted": q.include_unlisted,
    });
    let digest = Sha256::digest(canonical.to_string().as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

impl Cursor {
    /// Decodes a cursor issued for `query`, whose [`query_digest`] the caller has already
    /// computed as `digest`, whichever digest the cursor carries (this version's or the
    /// previous one's, computed only for a cursor that does not match this one).
    pub fn decode_for(
        token: &str,
        signer: &Signer,
        query: &SearchQuery,
        digest: u64,
    ) -> Result<Self, SearchError> {
        Cursor::decode(token, signer, digest)
            .or_else(|_| Cursor::decode(token, signer, previous_query_digest(query)))
    }
}

/// Searchers kept for open walks, by reader generation.
#[derive(Default)]
pub struct Snapshots {
    entries: Vec<(u64, Searcher, Instant)>,
}

impl Snapshots {
    /// The searcher of `generation` if still kept (and marks it used).
    pub fn get(&mut self, generation: u64, now: Instant) -> Option<Searcher> {
        self.expire(now);
        let entry = self.entries.iter_mut().find(|(g, _, _)| *g == generation)?;
        entry.2 = now;
        Some(entry.1.clone())
    }

    /// Keeps `searcher` for walks that continue from it.
    pub fn keep(&mut self, searcher: &Searcher, now: Instant) {
        self.expire(now);
        let generation = searcher.generation().generation_id();
        if let Some(entry) = self.entries.iter_mut().find(|(g, _, _)| *g == generation) {
            entry.2 = now;
            return;
        }
        if self.entries.len() >= MAX_SNAPSHOTS
            && let Some(oldest) = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, (_, _, used))| *used)
                .map(|(i, _)| i)
        {
            self.entries.swap_remove(oldest);
        }
        self.entries.push((generation, searcher.clone(), now));
    }

    fn expire(&mut self, now: Instant) {
        self.entries
            .retain(|(_, _, used)| now.saturating_duration_since(*used) < SNAPSHOT_IDLE);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::VendorId;
    use crate::search::Sort;

    fn signer(purpose: &str) -> Signer {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = crate::config::Settings::for_data_dir(dir.path());
        settings.secret_key = Some("k".repeat(32));
        crate::secrets::Secrets::load(&settings)
            .unwrap()
            .signer(purpose)
    }

    #[test]
    fn a_cursor_round_trips_and_is_bound_to_its_signer_and_query() {
        let signer = signer("search-cursor");
        let query = SearchQuery {
            text: Some("pizza".into()),
            ..SearchQuery::default()
        };
        let digest = query_digest(&query);
        let cursor = Cursor::new(7, 3, 20, [1, 2, 3, 4], digest);
        let token = cursor.encode(&signer);
        assert_eq!(Cursor::decode(&token, &signer, digest).unwrap(), cursor);

        let other_query = SearchQuery {
            sort: Sort::PriceAsc,
            ..query.clone()
        };
        assert!(matches!(
            Cursor::decode(&token, &signer, query_digest(&other_query)),
            Err(SearchError::BadCursor)
        ));
        assert!(matches!(
            Cursor::decode(&token, &self::signer("other"), digest),
            Err(SearchError::BadCursor)
        ));
        let mut tampered = token.clone().into_bytes();
        tampered[3] = if tampered[3] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert!(matches!(
            Cursor::decode(&tampered, &signer, digest),
            Err(SearchError::BadCursor)
        ));
    }

    #[test]
    fn a_cursor_of_the_previous_version_is_still_accepted_for_its_query() {
        let signer = signer("search-cursor");
        let query = SearchQuery {
            text: Some("pizza".into()),
            vendors_in: Some(vec![VendorId::new(), VendorId::new()]),
            ..SearchQuery::default()
        };
        let old = Cursor::new(7, 3, 20, [1, 2, 3, 4], previous_query_digest(&query));
        let token = old.encode(&signer);
        let digest = query_digest(&query);
        assert_eq!(
            Cursor::decode_for(&token, &signer, &query, digest).unwrap(),
            old
        );
        let other_query = SearchQuery {
            in_stock: true,
            ..query.clone()
        };
        assert!(matches!(
            Cursor::decode_for(&token, &signer, &other_query, query_digest(&other_query)),
            Err(SearchError::BadCursor)
        ));
        let current = Cursor::new(7, 3, 20, [1, 2, 3, 4], digest);
        let token = current.encode(&signer);
        assert_eq!(
            Cursor::decode_for(&token, &signer, &query, digest).unwrap(),
            current
        );
    }

    #[test]
    fn the_page_size_does_not_change_the_query_digest() {
        let a = SearchQuery {
            limit: 10,
            ..SearchQuery::default()
        };
        let b = SearchQuery {
            limit: 50,
            cursor: Some("x".into()),
            ..SearchQuery::default()
        };
        assert_eq!(query_digest(&a), query_digest(&b));
        let c = SearchQuery {
            in_stock: true,
            ..SearchQuery::default()
        };
        assert_ne!(query_digest(&a), query_digest(&c));
    }

    #[test]
    fn snapshots_keep_the_most_recently_used_and_expire_idle_ones() {
        use tantivy::schema::{INDEXED, Schema};
        use tantivy::{Index, IndexWriter, ReloadPolicy, doc};

        let mut builder = Schema::builder();
        let n = builder.add_u64_field("n", INDEXED);
        let index = Index::create_in_ram(builder.build());
        let mut writer: IndexWriter = index.writer_with_num_threads(1, 15_000_000).unwrap();
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .unwrap();
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let mut snapshots = Snapshots::default();
        let mut generations = Vec::new();
        for i in 0..=MAX_SNAPSHOTS as u64 {
            writer.add_document(doc!(n => i)).unwrap();
            writer.commit().unwrap();
            reader.reload().unwrap();
            let searcher = reader.searcher();
            generations.push(searcher.generation().generation_id());
            snapshots.keep(&searcher, at(i));
        }

        assert_eq!(snapshots.len(), MAX_SNAPSHOTS);
        assert!(
            snapshots.get(generations[0], at(40)).is_none(),
            "least recently used"
        );
        assert!(snapshots.get(generations[1], at(40)).is_some());
        let idle = at(40) + SNAPSHOT_IDLE - Duration::from_secs(1);
        assert!(
            snapshots.get(generations[2], idle).is_none(),
            "idle too long"
        );
        assert!(
            snapshots.get(generations[1], idle).is_some(),
            "used at 40 s"
        );
        assert_eq!(snapshots.len(), 1);
    }
}
