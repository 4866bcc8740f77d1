//! Collectors over fast fields: one page of results in a total order with the count and the
//! per-category facet of every match in the same pass, and id listings.
//!
//! Every result has a sort key `[primary, secondary, id_hi, id_lo]` whose ascending order is
//! the requested order; the product id makes it total, so "everything after this key" is an
//! exact continuation (keyset pagination).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::{Column, StrColumn};
use tantivy::{DocAddress, DocId, Score, SegmentOrdinal, SegmentReader, f64_to_u64, i64_to_u64};
use uuid::Uuid;

use super::Sort;
use super::schema::fast;
use crate::domain::ids::ProductId;

/// The position of a result in its order; compare ascending.
pub type SortKey = [u64; 4];

/// The order of a page, resolved from [`Sort`] and whether there is text to score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Score,
    PriceAsc,
    PriceDesc,
    Rating,
    Newest,
    Popular,
}

impl Order {
    pub fn of(sort: Sort, has_text: bool) -> Self {
        match sort {
            Sort::Relevance if has_text => Order::Score,
            Sort::Relevance | Sort::Newest => Order::Newest,
            Sort::PriceAsc => Order::PriceAsc,
            Sort::PriceDesc => Order::PriceDesc,
            Sort::Rating => Order::Rating,
            Sort::Popular => Order::Popular,
        }
    }
}

fn desc(v: u64) -> u64 {
    u64::MAX - v
}

/// Order-preserving image of a score (higher score → larger value).
fn score_bits(score: Score) -> u64 {
    if score.is_nan() {
        0
    } else {
        f64_to_u64(f64::from(score))
    }
}

/// Order-preserving image of an optional average rating; unrated sorts below every rating.
fn rating_bits(rating: Option<f64>) -> u64 {
    rating.filter(|r| !r.is_nan()).map_or(0, f64_to_u64)
}

/// The fast columns a sort key is computed from, for one segment. A column a segment has no
/// value of at all is absent.
struct KeyColumns {
    id_hi: Option<Column<u64>>,
    id_lo: Option<Column<u64>>,
    price: Option<Column<i64>>,
    rating: Option<Column<f64>>,
    rating_count: Option<Column<u64>>,
    sold_recent: Option<Column<u64>>,
    created_at: Option<Column<i64>>,
}

fn first<T>(column: &Option<Column<T>>, doc: DocId) -> Option<T>
where
    T: PartialOrd + Copy + std::fmt::Debug + Send + Sync + 'static,
{
    column.as_ref().and_then(|c| c.first(doc))
}

impl KeyColumns {
    fn open(reader: &SegmentReader) -> tantivy::Result<Self> {
        let f = reader.fast_fields();
        Ok(KeyColumns {
            id_hi: f.column_opt(fast::ID_HI)?,
            id_lo: f.column_opt(fast::ID_LO)?,
            price: f.column_opt(fast::PRICE)?,
            rating: f.column_opt(fast::RATING)?,
            rating_count: f.column_opt(fast::RATING_COUNT)?,
            sold_recent: f.column_opt(fast::SOLD_RECENT)?,
            created_at: f.column_opt(fast::CREATED_AT)?,
        })
    }

    /// The order-deciding part of a key: (primary, secondary).
    fn head(&self, order: Order, doc: DocId, score: Score) -> [u64; 2] {
        let created = || i64_to_u64(first(&self.created_at, doc).unwrap_or(0));
        let price = || i64_to_u64(first(&self.price, doc).unwrap_or(0));
        let rating = || rating_bits(first(&self.rating, doc));
        match order {
            Order::Score => [desc(score_bits(score)), desc(created())],
            Order::PriceAsc => [price(), 0],
            Order::PriceDesc => [desc(price()), 0],
            Order::Rating => [
                desc(rating()),
                desc(first(&self.rating_count, doc).unwrap_or(0)),
            ],
            Order::Newest => [desc(created()), 0],
            Order::Popular => [
                desc(first(&self.sold_recent, doc).unwrap_or(0)),
                desc(rating()),
            ],
        }
    }

    /// The full key: the head, then the product id, which makes the order total.
    fn complete(&self, head: [u64; 2], doc: DocId) -> SortKey {
        [
            head[0],
            head[1],
            first(&self.id_hi, doc).unwrap_or(0),
            first(&self.id_lo, doc).unwrap_or(0),
        ]
    }
}

/// One result: where it is and where it sorts.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub key: SortKey,
    pub address: DocAddress,
    pub score: Score,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key.cmp(&other.key)
    }
}

/// Collects the first `take` matches after `after` in `order`, the number of all matches
/// and, with `facets`, their count per own category.
pub struct PageCollector {
    pub order: Order,
    pub after: Option<SortKey>,
    pub take: usize,
    pub facets: bool,
}

/// What [`PageCollector`] found.
#[derive(Debug, Default)]
pub struct Page {
    /// At most `take` entries, in order.
    pub entries: Vec<Entry>,
    /// Every match, wherever it sorts.
    pub total: u64,
    /// Category id → matches.
    pub facets: HashMap<String, u64>,
}

pub struct PageSegment {
    segment: SegmentOrdinal,
    order: Order,
    after: Option<SortKey>,
    take: usize,
    columns: KeyColumns,
    /// The `take` smallest keys seen so far (the largest on top, to be evicted).
    best: BinaryHeap<Entry>,
    total: u64,
    categories: Option<(StrColumn, Vec<u64>)>,
}

pub struct SegmentPage {
    entries: Vec<Entry>,
    total: u64,
    categories: Option<(StrColumn, Vec<u64>)>,
}

impl Collector for PageCollector {
    type Fruit = Page;
    type Child = PageSegment;

    fn for_segment(
        &self,
        segment: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<PageSegment> {
        let categories = if self.facets {
            reader.fast_fields().str(fast::CATEGORY)?.map(|column| {
                let terms = column.num_terms();
                (column, vec![0u64; terms])
            })
        } else {
            None
        };
        Ok(PageSegment {
            segment,
            order: self.order,
            after: self.after,
            take: self.take,
            columns: KeyColumns::open(reader)?,
            best: BinaryHeap::with_capacity(self.take.saturating_add(1).min(1024)),
            total: 0,
            categories,
        })
    }

    fn requires_scoring(&self) -> bool {
        self.order == Order::Score
    }

    fn merge_fruits(&self, fruits: Vec<SegmentPage>) -> tantivy::Result<Page> {
        let mut page = Page::default();
        let mut name = String::new();
        for fruit in fruits {
            page.total += fruit.total;
            page.entries.extend(fruit.entries);
            if let Some((column, counts)) = fruit.categories {
                for (ord, count) in counts.into_iter().enumerate() {
                    if count > 0 && column.ord_to_str(ord as u64, &mut name)? {
                        *page.facets.entry(name.clone()).or_default() += count;
                    }
                }
            }
        }
        page.entries.sort_unstable();
        page.entries.truncate(self.take);
        Ok(page)
    }
}

impl SegmentCollector for PageSegment {
    type Fruit = SegmentPage;

    fn collect(&mut self, doc: DocId, score: Score) {
        self.total += 1;
        if let Some((column, counts)) = &mut self.categories
            && let Some(ord) = column.ords().first(doc)
            && let Some(count) = usize::try_from(ord).ok().and_then(|i| counts.get_mut(i))
        {
            *count += 1;
        }
        if self.take == 0 {
            return;
        }
        // Most matches sort behind the page: decide on the head alone and read the id columns
        // only for candidates (and ties).
        let head = self.columns.head(self.order, doc, score);
        if self
            .after
            .is_some_and(|after| [head[0], head[1]] < [after[0], after[1]])
        {
            return;
        }
        if self.best.len() == self.take
            && self
                .best
                .peek()
                .is_some_and(|worst| [worst.key[0], worst.key[1]] < head)
        {
            return;
        }
        let key = self.columns.complete(head, doc);
        if self.after.is_some_and(|after| key <= after) {
            return;
        }
        if self.best.len() == self.take && self.best.peek().is_some_and(|worst| worst.key <= key) {
            return;
        }
        self.best.push(Entry {
            key,
            address: DocAddress::new(self.segment, doc),
            score,
        });
        if self.best.len() > self.take {
            self.best.pop();
        }
    }

    fn harvest(self) -> SegmentPage {
        SegmentPage {
            entries: self.best.into_vec(),
            total: self.total,
            categories: self.categories,
        }
    }
}

/// What the index holds about one product, read from fast fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Indexed {
    pub id: ProductId,
    pub version: u64,
    pub fingerprint: u64,
}

/// Lists the id, version and fingerprint of every match.
pub struct IdCollector;

pub struct IdSegment {
    id_hi: Option<Column<u64>>,
    id_lo: Option<Column<u64>>,
    version: Option<Column<u64>>,
    fingerprint: Option<Column<u64>>,
    found: Vec<Indexed>,
}

impl Collector for IdCollector {
    type Fruit = Vec<Indexed>;
    type Child = IdSegment;

    fn for_segment(&self, _: SegmentOrdinal, reader: &SegmentReader) -> tantivy::Result<IdSegment> {
        let f = reader.fast_fields();
        Ok(IdSegment {
            id_hi: f.column_opt(fast::ID_HI)?,
            id_lo: f.column_opt(fast::ID_LO)?,
            version: f.column_opt(fast::VERSION)?,
            fingerprint: f.column_opt(fast::FINGERPRINT)?,
            found: Vec::new(),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<Vec<Indexed>>) -> tantivy::Result<Vec<Indexed>> {
        Ok(fruits.into_iter().flatten().collect())
    }
}

impl SegmentCollector for IdSegment {
    type Fruit = Vec<Indexed>;

    fn collect(&mut self, doc: DocId, _: Score) {
        if let (Some(hi), Some(lo)) = (first(&self.id_hi, doc), first(&self.id_lo, doc)) {
            self.found.push(Indexed {
                id: ProductId::from(Uuid::from_u64_pair(hi, lo)),
                version: first(&self.version, doc).unwrap_or(0),
                fingerprint: first(&self.fingerprint, doc).unwrap_or(0),
            });
        }
    }

    fn harvest(self) -> Vec<Indexed> {
        self.found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_images_keep_the_order_of_their_values() {
        assert!(score_bits(0.5) < score_bits(2.0));
        assert!(score_bits(0.0) < score_bits(0.1));
        assert!(i64_to_u64(-5) < i64_to_u64(3));
        assert!(rating_bits(None) < rating_bits(Some(1.0)));
        assert!(rating_bits(Some(4.5)) < rating_bits(Some(4.75)));
        assert!(desc(rating_bits(Some(5.0))) < desc(rating_bits(Some(1.0))));
    }

    #[test]
    fn relevance_without_text_is_newest() {
        assert_eq!(Order::of(Sort::Relevance, false), Order::Newest);
        assert_eq!(Order::of(Sort::Relevance, true), Order::Score);
        assert_eq!(Order::of(Sort::Popular, true), Order::Popular);
    }
}
