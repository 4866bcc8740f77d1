//! Product search: relevance, typos, filters, facets, cursors, reindexing.
