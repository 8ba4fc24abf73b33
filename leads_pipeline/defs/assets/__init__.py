"""Software-defined assets, one module per layer, and the asset groups the UI shows."""

#: Raw pages, ``leads``, its quality issues and history (Delta tables).
INGESTION_GROUP = "ingestion"
#: Tables computed in DuckDB from the lake, and the assets downstream of them.
ANALYTICS_GROUP = "analytics"
