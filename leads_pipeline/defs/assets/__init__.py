"""Software-defined assets, one module per layer, and the asset groups the UI shows."""

#: Raw pages, ``leads``, its quality issues and history (Delta tables).
INGESTION_GROUP = "ingestion"
#: Tables computed in DuckDB from the lake, and the assets downstream of them.
ANALYTICS_GROUP = "analytics"

#: The ``layer`` tag of each group's assets (filter on it in the UI's catalog).
INGESTION_LAYER = {"layer": "ingestion"}
ANALYTICS_LAYER = {"layer": "analytics"}
