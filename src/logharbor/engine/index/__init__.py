"""Search and analysis: index configuration, the index store, the indexer and queries."""
