"""Storage: the Delta lake, the raw store, the listing spool, the DuckDB warehouse."""
