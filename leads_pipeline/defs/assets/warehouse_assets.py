"""What every asset published in the DuckDB warehouse shares: its declaration, its inputs.

The count, movement and downstream assets are all DuckDB tables of the ``analytics`` group,
written under the warehouse pool and kept fresh by the same automation; :func:`warehouse_asset`
declares them so. They read a Delta table that may not exist yet (:func:`require_delta`), name the
source the lake was filled from (:func:`lake_source`) and key their reuse on the SQL that computes
them (:func:`sql_digest`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import dagster as dg
from deltalake import DeltaTable

from leads_pipeline.defs.assets import ANALYTICS_GROUP, ANALYTICS_LAYER
from leads_pipeline.defs.assets.schemas import definition_metadata
from leads_pipeline.defs.automation import follow_upstream
from leads_pipeline.defs.pools import WAREHOUSE_POOL
from leads_pipeline.storage.lake import DeltaLake
from leads_pipeline.tables import RAW_TABLE


def warehouse_asset(name: str, deps: Sequence[str], **options: Any) -> Callable:
    """``@dg.asset`` for the warehouse table asset ``name``.

    Args:
        name: The asset's name (also the key of its declared column schema).
        deps: The assets it is computed from.
        **options: Any other ``dg.asset`` argument (a description, check specs, config).
    """
    return dg.asset(
        name=name,
        deps=list(deps),
        group_name=ANALYTICS_GROUP,
        kinds={"duckdb", "python"},
        tags=ANALYTICS_LAYER,
        metadata=definition_metadata(name),
        pool=WAREHOUSE_POOL,
        automation_condition=follow_upstream(),
        **options,
    )


def require_delta(store: DeltaLake, table: str, upstream: str | None = None) -> DeltaTable:
    """The Delta ``table``, or a failure saying which asset to materialize first.

    Args:
        store: The lake.
        table: The table to read.
        upstream: The asset that writes it (``table`` itself when omitted).
    """
    loaded = store.load(table)
    if loaded is None:
        raise dg.Failure(
            f"The {table} table does not exist yet: materialize {upstream or table} first "
            "(job sync_leads)."
        )
    return loaded


def lake_source(store: DeltaLake) -> str:
    """The source the lake was filled from (``notion``, ``sample``), or ``unknown``."""
    return store.commit_value(RAW_TABLE, "source") or "unknown"


def sql_digest(*parts: str) -> str:
    """A short digest of the SQL (and anything else) a published table was computed with."""
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:12]
