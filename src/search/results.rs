//! Answers of the current index snapshot, kept until the snapshot changes.
//!
//! A search is a pure function of the query and the searcher snapshot it runs on, so an
//! answer computed on generation G is exactly right for as long as G is the current one: this
//! cache never serves anything stale. It is emptied the moment a newer generation shows up
//! (every index commit), and bounded in between, so popular searches are computed once per
//! commit instead of once per request.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use super::{SearchError, SearchResults};

/// One computed answer, and its JSON once a caller has asked for it (a popular search is
/// encoded once per snapshot, not once per request).
#[derive(Debug)]
pub struct Answer {
    pub results: SearchResults,
    json: OnceLock<Bytes>,
}

impl Answer {
    pub fn new(results: SearchResults) -> Self {
        Answer {
            results,
            json: OnceLock::new(),
        }
    }

    /// The answer as the API's JSON body.
    pub fn json(&self) -> Result<Bytes, SearchError> {
        if let Some(json) = self.json.get() {
            return Ok(json.clone());
        }
        let json = Bytes::from(
            serde_json::to_vec(&self.results)
                .map_err(|e| SearchError::Internal(anyhow::anyhow!("encoding an answer: {e}")))?,
        );
        Ok(self.json.get_or_init(|| json).clone())
    }
}

/// Most answers kept for one generation.
pub const MAX_ANSWERS: usize = 1_024;

/// What identifies an answer within a generation: the query's digest, the page size and the
/// cursor it continues from.
pub type AnswerKey = (u64, usize, Option<String>);

#[derive(Default)]
pub struct Answers {
    generation: u64,
    answers: HashMap<AnswerKey, Arc<Answer>>,
}

impl Answers {
    /// The answer computed on `generation`, if this is the current generation and it has one.
    pub fn get(&self, generation: u64, key: &AnswerKey) -> Option<Arc<Answer>> {
        if generation == self.generation {
            self.answers.get(key).cloned()
        } else {
            None
        }
    }

    /// Keeps an answer computed on `generation`. A newer generation replaces everything kept;
    /// an older one (a walk continuing on a pinned snapshot) is not kept.
    pub fn put(&mut self, generation: u64, key: AnswerKey, answer: Arc<Answer>) {
        if generation > self.generation {
            self.generation = generation;
            self.answers.clear();
        }
        if generation == self.generation {
            if self.answers.len() >= MAX_ANSWERS {
                self.answers.clear();
            }
            self.answers.insert(key, answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(total: u64) -> Arc<Answer> {
        Arc::new(Answer::new(SearchResults {
            items: Vec::new(),
            total,
            facets: Vec::new(),
            next_cursor: None,
        }))
    }

    #[test]
    fn answers_live_as_long_as_their_generation() {
        let mut answers = Answers::default();
        let key = (1, 20, None);
        answers.put(3, key.clone(), answer(7));
        assert_eq!(answers.get(3, &key).map(|a| a.results.total), Some(7));
        assert!(answers.get(4, &key).is_none());
        answers.put(2, (9, 20, None), answer(1));
        assert!(answers.get(2, &(9, 20, None)).is_none());
        answers.put(4, (2, 20, None), answer(5));
        assert!(answers.get(3, &key).is_none());
        assert!(answers.get(4, &key).is_none());
    }
}
