"""Concurrency pools: runs that write the same store never interleave (limits in dagster.yaml)."""

LAKE_POOL = "leads_lake"
WAREHOUSE_POOL = "leads_warehouse"
