//! The index schema, the analyzer of the text fields, and the conversion of a [`ProductDoc`]
//! into an index document and of a stored document back into a [`SearchHit`].

use anyhow::Context as _;
use chrono::DateTime;
use sha2::{Digest, Sha256};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing,
    TextOptions, Value,
};
use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer,
    StopWordFilter, TextAnalyzer,
};
use tantivy::{Index, TantivyDocument, Term};

use super::{ProductDoc, SearchHit};
use crate::domain::catalog::Visibility;
use crate::domain::ids::ProductId;
use crate::domain::money::{Currency, Money};
use crate::domain::review::RatingSummary;

/// Bump whenever the schema or the analyzer changes: an index of another version is wiped on
/// open and rebuilt from the store.
pub const SCHEMA_VERSION: u32 = 1;

/// Name of the analyzer of the text fields: lowercased, ASCII-folded, English stop words
/// dropped, English-stemmed.
pub const TEXT_ANALYZER: &str = "hexmarket_en";

/// Fast field names the collectors read.
pub mod fast {
    pub const ID_HI: &str = "id_hi";
    pub const ID_LO: &str = "id_lo";
    pub const CATEGORY: &str = "category";
    pub const PRICE: &str = "price";
    pub const AVAILABLE: &str = "available";
    pub const RATING: &str = "rating";
    pub const RATING_COUNT: &str = "rating_count";
    pub const SOLD_RECENT: &str = "sold_recent";
    pub const CREATED_AT: &str = "created_at";
    pub const VERSION: &str = "version";
    pub const FINGERPRINT: &str = "fingerprint";
}

/// Handles of every field of the schema.
#[derive(Debug, Clone)]
pub struct Fields {
    pub schema: Schema,
    /// The product id as text: the term upserts and removals delete by.
    pub id: Field,
    /// The product id's UUID as two integers, for the id tie-break and id listings without
    /// touching the document store.
    pub id_hi: Field,
    pub id_lo: Field,
    pub title: Field,
    pub description: Field,
    /// Attribute values, one value each.
    pub attributes: Field,
    pub vendor_name: Field,
    pub vendor_id: Field,
    /// The own category and its ancestors ("this category or below").
    pub category_path: Field,
    /// The own category (facet counts).
    pub category: Field,
    pub price: Field,
    pub currency: Field,
    pub available: Field,
    /// Average rating; absent without ratings.
    pub rating: Field,
    pub rating_count: Field,
    pub sold_recent: Field,
    /// Microseconds since the Unix epoch.
    pub created_at: Field,
    pub visibility: Field,
    pub public: Field,
    pub thumbnail: Field,
    /// Version of the product row the document was built from.
    pub version: Field,
    /// Digest of everything the document was built from (see [`fingerprint`]).
    pub fingerprint: Field,
}

impl Fields {
    pub fn new() -> Self {
        let mut b = Schema::builder();
        let text = |stored: bool| {
            let indexing = TextFieldIndexing::default()
                .set_tokenizer(TEXT_ANALYZER)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions);
            let options = TextOptions::default().set_indexing_options(indexing);
            if stored {
                options.set_stored()
            } else {
                options
            }
        };
        let id = b.add_text_field("id", STRING | STORED);
        let id_hi = b.add_u64_field(fast::ID_HI, FAST);
        let id_lo = b.add_u64_field(fast::ID_LO, FAST);
        let title = b.add_text_field("title", text(true));
        let description = b.add_text_field("description", text(false));
        let attributes = b.add_text_field("attributes", text(false));
        let vendor_name = b.add_text_field("vendor_name", text(true));
        let vendor_id = b.add_text_field("vendor_id", STRING | STORED);
        let category_path = b.add_text_field("category_path", STRING);
        let category = b.add_text_field(fast::CATEGORY, STRING | STORED | FAST);
        let price = b.add_i64_field(fast::PRICE, FAST | STORED);
        let currency = b.add_text_field("currency", STORED);
        let available = b.add_u64_field(fast::AVAILABLE, FAST | STORED);
        let rating = b.add_f64_field(fast::RATING, FAST | STORED);
        let rating_count = b.add_u64_field(fast::RATING_COUNT, FAST | STORED);
        let sold_recent = b.add_u64_field(fast::SOLD_RECENT, FAST | STORED);
        let created_at = b.add_i64_field(fast::CREATED_AT, FAST | STORED);
        let visibility = b.add_text_field("visibility", STRING | STORED);
        let public = b.add_bool_field("public", INDEXED | FAST);
        let thumbnail = b.add_text_field("thumbnail", STORED);
        let version = b.add_u64_field(fast::VERSION, FAST | STORED);
        let fingerprint = b.add_u64_field(fast::FINGERPRINT, FAST);
        Fields {
            schema: b.build(),
            id,
            id_hi,
            id_lo,
            title,
            description,
            attributes,
            vendor_name,
            vendor_id,
            category_path,
            category,
            price,
            currency,
            available,
            rating,
            rating_count,
            sold_recent,
            created_at,
            visibility,
            public,
            thumbnail,
            version,
            fingerprint,
        }
    }

    /// The term a product's document is found (and deleted) by.
    pub fn id_term(&self, id: ProductId) -> Term {
        Term::from_field_text(self.id, &id.to_string())
    }

    /// The index document of `doc`.
    pub fn document(&self, doc: &ProductDoc) -> TantivyDocument {
        let p = &doc.product;
        let mut d = TantivyDocument::default();
        let (hi, lo) = p.id.as_uuid().as_u64_pair();
        d.add_text(self.id, p.id.to_string());
        d.add_u64(self.id_hi, hi);
        d.add_u64(self.id_lo, lo);
        d.add_text(self.title, &p.title);
        d.add_text(self.description, &p.description);
        for value in p.attributes.values() {
            d.add_text(self.attributes, value);
        }
        d.add_text(self.vendor_name, &doc.vendor_name);
        d.add_text(self.vendor_id, p.vendor_id.to_string());
        for category in &doc.category_path {
            d.add_text(self.category_path, category.to_string());
        }
        if !doc.category_path.contains(&p.category_id) {
            d.add_text(self.category_path, p.category_id.to_string());
        }
        d.add_text(self.category, p.category_id.to_string());
        d.add_i64(self.price, p.price.amount_minor);
        d.add_text(self.currency, p.price.currency.code());
        d.add_u64(self.available, u64::from(doc.available));
        if let Some(average) = doc.rating.average {
            d.add_f64(self.rating, average);
        }
        d.add_u64(self.rating_count, doc.rating.count);
        d.add_u64(self.sold_recent, u64::from(doc.sold_recent));
        d.add_i64(self.created_at, p.created_at.timestamp_micros());
        d.add_text(self.visibility, visibility_name(p.visibility));
        d.add_bool(self.public, doc.is_public());
        if let Some(image) = p.images.first() {
            d.add_text(self.thumbnail, &image.thumbnail_key);
        }
        d.add_u64(self.version, doc.version);
        d.add_u64(self.fingerprint, fingerprint(doc));
        d
    }

    /// The result entry of a stored document.
    pub fn hit(&self, d: &TantivyDocument, score: f32) -> anyhow::Result<SearchHit> {
        let text = |field: Field, name: &str| {
            d.get_first(field)
                .and_then(|v| v.as_str().map(str::to_owned))
                .with_context(|| format!("indexed product without {name}"))
        };
        let u64_of = |field: Field| d.get_first(field).and_then(|v| v.as_u64()).unwrap_or(0);
        let id = text(self.id, "id")?.parse().context("indexed product id")?;
        let currency: Currency = text(self.currency, "currency")?
            .parse()
            .map_err(|e: String| anyhow::anyhow!(e))?;
        let amount = d
            .get_first(self.price)
            .and_then(|v| v.as_i64())
            .context("indexed product without price")?;
        let created = d
            .get_first(self.created_at)
            .and_then(|v| v.as_i64())
            .and_then(DateTime::from_timestamp_micros)
            .context("indexed product without creation time")?;
        let visibility = parse_visibility(&text(self.visibility, "visibility")?)
            .context("indexed product with an unknown visibility")?;
        Ok(SearchHit {
            id,
            title: text(self.title, "title")?,
            vendor_id: text(self.vendor_id, "vendor")?
                .parse()
                .context("indexed vendor id")?,
            vendor_name: text(self.vendor_name, "vendor name")?,
            category_id: text(self.category, "category")?
                .parse()
                .context("indexed category id")?,
            price: Money::new(amount, currency),
            available: u32::try_from(u64_of(self.available)).unwrap_or(u32::MAX),
            rating: RatingSummary {
                average: d.get_first(self.rating).and_then(|v| v.as_f64()),
                count: u64_of(self.rating_count),
            },
            visibility,
            thumbnail_key: d
                .get_first(self.thumbnail)
                .and_then(|v| v.as_str().map(str::to_owned)),
            created_at: created,
            score,
        })
    }
}

impl Default for Fields {
    fn default() -> Self {
        Self::new()
    }
}

/// The analyzer of the text fields.
pub fn text_analyzer() -> TextAnalyzer {
    let builder = TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .dynamic();
    let builder = match StopWordFilter::new(Language::English) {
        Some(stop_words) => builder.filter_dynamic(stop_words),
        None => builder,
    };
    builder
        .filter_dynamic(Stemmer::new(Language::English))
        .build()
}

/// Registers the analyzers the schema names with `index`.
pub fn register_analyzers(index: &Index) {
    index.tokenizers().register(TEXT_ANALYZER, text_analyzer());
}

pub fn visibility_name(v: Visibility) -> &'static str {
    match v {
        Visibility::Draft => "draft",
        Visibility::Published => "published",
        Visibility::Hidden => "hidden",
    }
}

fn parse_visibility(raw: &str) -> Option<Visibility> {
    match raw {
        "draft" => Some(Visibility::Draft),
        "published" => Some(Visibility::Published),
        "hidden" => Some(Visibility::Hidden),
        _ => None,
    }
}

/// A digest of everything a document is built from: when the store's data yields a different
/// fingerprint than the indexed one, the document is stale.
pub fn fingerprint(doc: &ProductDoc) -> u64 {
    let canonical = serde_json::json!({
        "product": doc.product,
        "vendor_name": doc.vendor_name,
        "vendor_active": doc.vendor_active,
        "category_path": doc.category_path,
        "available": doc.available,
        "rating": doc.rating,
        "sold_recent": doc.sold_recent,
    });
    let digest = Sha256::digest(canonical.to_string().as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}
