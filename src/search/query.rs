//! Turns a [`SearchQuery`] into a tantivy query: the text through query parsers over the text
//! fields (exact terms, terms within one typo, and the last term as a prefix while it is
//! being typed), the filters as non-scoring required clauses.

use std::ops::Bound;

use tantivy::query::{
    AllQuery, BooleanQuery, BoostQuery, ConstScoreQuery, EmptyQuery, Occur, Query, QueryParser,
    RangeQuery, TermQuery, TermSetQuery,
};
use tantivy::schema::IndexRecordOption;
use tantivy::tokenizer::{TextAnalyzer, TokenStream as _};
use tantivy::{Searcher, Term};

use super::SearchQuery;
use super::schema::{Fields, text_analyzer};

/// Words of a text query beyond this many are ignored.
const MAX_WORDS: usize = 12;
/// Up to this many stores, the "near" filter is a union of term lookups.
const VENDOR_TERMS_AS_CLAUSES: usize = 256;
/// Words at least this long also match terms one edit away.
const FUZZY_MIN_CHARS: usize = 4;
/// The last word matches as a prefix when at least this long.
const PREFIX_MIN_CHARS: usize = 2;
/// Weight of a typo match and of a prefix match relative to an exact one (both score a
/// constant, the exact one BM25).
const FUZZY_WEIGHT: f32 = 0.4;
const PREFIX_WEIGHT: f32 = 0.3;

/// Field weights: a match in the title counts most, then attributes, the vendor's name and
/// the description.
const TITLE_BOOST: f32 = 3.0;
const ATTRIBUTES_BOOST: f32 = 1.5;
const VENDOR_BOOST: f32 = 1.0;
const DESCRIPTION_BOOST: f32 = 0.7;

/// Query parsers over the text fields, built once per index.
#[derive(Clone)]
pub struct QueryBuilder {
    fields: Fields,
    exact: QueryParser,
    typo: QueryParser,
    prefix: QueryParser,
    analyzer: TextAnalyzer,
}

impl QueryBuilder {
    pub fn new(index: &tantivy::Index, fields: &Fields) -> Self {
        let text_fields = vec![
            fields.title,
            fields.attributes,
            fields.vendor_name,
            fields.description,
        ];
        let boosted = |mut parser: QueryParser| {
            parser.set_field_boost(fields.title, TITLE_BOOST);
            parser.set_field_boost(fields.attributes, ATTRIBUTES_BOOST);
            parser.set_field_boost(fields.vendor_name, VENDOR_BOOST);
            parser.set_field_boost(fields.description, DESCRIPTION_BOOST);
            parser
        };
        let exact = boosted(QueryParser::for_index(index, text_fields.clone()));
        let mut typo = boosted(QueryParser::for_index(index, text_fields));
        for field in [
            fields.title,
            fields.attributes,
            fields.vendor_name,
            fields.description,
        ] {
            typo.set_field_fuzzy(field, false, 1, true);
        }
        // Prefixes only on the short fields: in descriptions they match almost anything.
        let prefix_fields = vec![fields.title, fields.attributes, fields.vendor_name];
        let mut prefix = boosted(QueryParser::for_index(index, prefix_fields.clone()));
        for field in prefix_fields {
            prefix.set_field_fuzzy(field, true, 0, true);
        }
        QueryBuilder {
            fields: fields.clone(),
            exact,
            typo,
            prefix,
            analyzer: text_analyzer(),
        }
    }

    /// The words of `text` that can match anything (not stop words, not over-long), lowercased.
    fn words(&self, text: &str) -> Vec<String> {
        let mut analyzer = self.analyzer.clone();
        text.split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .filter(|w| analyzer.token_stream(w).advance())
            .take(MAX_WORDS)
            .collect()
    }

    /// Every word must match, exactly, with one typo (longer words) or, for the last word,
    /// as a prefix. `None` when the text has no searchable word.
    /// Whether some indexed text field holds `word` exactly (after analysis).
    fn known(&self, word: &str, searcher: &Searcher) -> bool {
        let mut analyzer = self.analyzer.clone();
        let mut stream = analyzer.token_stream(word);
        let mut tokens = Vec::new();
        while stream.advance() {
            tokens.push(stream.token().text.clone());
        }
        let f = &self.fields;
        !tokens.is_empty()
            && tokens.iter().all(|token| {
                [f.title, f.attributes, f.vendor_name, f.description]
                    .into_iter()
                    .any(|field| {
                        searcher
                            .doc_freq(&Term::from_field_text(field, token))
                            .is_ok_and(|n| n > 0)
                    })
            })
    }

    /// The text part of a query: every word must match. A word the index holds exactly is
    /// looked up as it is; only a word it does not hold is expanded to its one-typo neighbours
    /// (and, the last word, to the words it begins), which is what makes typo tolerance cheap
    /// for the common case of correctly spelt queries.
    pub fn text(&self, text: &str, searcher: &Searcher) -> Option<Box<dyn Query>> {
        let words = self.words(text);
        let last = words.len().checked_sub(1)?;
        let clauses = words
            .iter()
            .enumerate()
            .map(|(i, word)| {
                let chars = word.chars().count();
                let known = self.known(word, searcher);
                let mut alternatives: Vec<(Occur, Box<dyn Query>)> =
                    vec![(Occur::Should, self.exact.parse_query_lenient(word).0)];
                if !known && chars >= FUZZY_MIN_CHARS {
                    let typo = self.typo.parse_query_lenient(word).0;
                    alternatives
                        .push((Occur::Should, Box::new(BoostQuery::new(typo, FUZZY_WEIGHT))));
                }
                if !known && i == last && chars >= PREFIX_MIN_CHARS {
                    let prefix = self.prefix.parse_query_lenient(word).0;
                    alternatives.push((
                        Occur::Should,
                        Box::new(BoostQuery::new(prefix, PREFIX_WEIGHT)),
                    ));
                }
                let word_query: Box<dyn Query> = Box::new(BooleanQuery::new(alternatives));
                (Occur::Must, word_query)
            })
            .collect();
        Some(Box::new(BooleanQuery::new(clauses)))
    }

    /// The filters of `q`, none of them scoring.
    pub fn filters(&self, q: &SearchQuery) -> Vec<Box<dyn Query>> {
        let f = &self.fields;
        let mut filters: Vec<Box<dyn Query>> = Vec::new();
        let term = |term: Term| -> Box<dyn Query> {
            Box::new(TermQuery::new(term, IndexRecordOption::Basic))
        };
        if let Some(category) = q.category {
            filters.push(term(Term::from_field_text(
                f.category_path,
                &category.to_string(),
            )));
        }
        if let Some(vendor) = q.vendor {
            filters.push(term(Term::from_field_text(
                f.vendor_id,
                &vendor.to_string(),
            )));
        }
        if let Some(vendors) = &q.vendors_in {
            if vendors.is_empty() {
                filters.push(Box::new(EmptyQuery));
            } else if vendors.len() <= VENDOR_TERMS_AS_CLAUSES {
                // A handful of stores: look each up, rather than walk the whole term dictionary
                // with a set automaton.
                let clauses = vendors
                    .iter()
                    .map(|v| {
                        (
                            Occur::Should,
                            term(Term::from_field_text(f.vendor_id, &v.to_string())),
                        )
                    })
                    .collect();
                filters.push(Box::new(BooleanQuery::new(clauses)));
            } else {
                let terms = vendors
                    .iter()
                    .map(|v| Term::from_field_text(f.vendor_id, &v.to_string()));
                filters.push(Box::new(TermSetQuery::new(terms)));
            }
        }
        if q.min_price.is_some() || q.max_price.is_some() {
            let bound = |v: Option<i64>| {
                v.map_or(Bound::Unbounded, |v| {
                    Bound::Included(Term::from_field_i64(f.price, v))
                })
            };
            filters.push(Box::new(RangeQuery::new(
                bound(q.min_price),
                bound(q.max_price),
            )));
        }
        if q.in_stock {
            filters.push(Box::new(RangeQuery::new(
                Bound::Included(Term::from_field_u64(f.available, 1)),
                Bound::Unbounded,
            )));
        }
        if let Some(min) = q.min_rating.filter(|r| r.is_finite()) {
            filters.push(Box::new(RangeQuery::new(
                Bound::Included(Term::from_field_f64(f.rating, min)),
                Bound::Unbounded,
            )));
        }
        if !q.include_unlisted {
            filters.push(term(Term::from_field_bool(f.public, true)));
        }
        filters
    }

    /// The whole query: the text (if any) scoring, every filter required.
    pub fn build(&self, q: &SearchQuery, searcher: &Searcher) -> (Box<dyn Query>, bool) {
        let text = q.text.as_deref().and_then(|t| self.text(t, searcher));
        let has_text = text.is_some();
        let filters = self.filters(q);
        let query: Box<dyn Query> = match (text, filters.is_empty()) {
            (None, true) => Box::new(AllQuery),
            (Some(text), true) => text,
            (text, false) => {
                let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
                if let Some(text) = text {
                    clauses.push((Occur::Must, text));
                }
                for filter in filters {
                    clauses.push((Occur::Must, Box::new(ConstScoreQuery::new(filter, 0.0))));
                }
                Box::new(BooleanQuery::new(clauses))
            }
        };
        (query, has_text)
    }
}
