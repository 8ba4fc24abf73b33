"""Analytics layer: weekly and monthly event counts in DuckDB, computed over the Delta ``leads``."""

import hashlib

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from leads_pipeline.automation import follow_upstream
from leads_pipeline.charts import chart_metadata, event_counts_png
from leads_pipeline.metadata import markdown_preview
from leads_pipeline.pools import WAREHOUSE_POOL
from leads_pipeline.property_map import EVENT_COLUMNS
from leads_pipeline.raw_store import RAW_TABLE
from leads_pipeline.resources import LakeResource, WarehouseResource
from leads_pipeline.transform import LEADS_TABLE
from leads_pipeline.warehouse import (
    MONTHLY_TABLE,
    WEEKLY_TABLE,
    Warehouse,
    compute_event_counts,
    event_counts_sql,
)

GROUP = "analytics"


def _published_counts(warehouse: Warehouse, table: str) -> pa.Table | None:
    try:
        with warehouse.read() as con:
            return con.sql(f"SELECT * FROM {table} ORDER BY 2").to_arrow_table()
    except duckdb.CatalogException:
        return None


def _materialize_counts(
    lake: LakeResource, warehouse: WarehouseResource, grain: str, table: str, title: str
):
    store = lake.lake()
    leads = store.load(LEADS_TABLE)
    if leads is None:
        raise dg.Failure(
            "The leads table does not exist yet: materialize leads first (job sync_leads)."
        )
    # Counts are a pure function of the leads version and of the SQL: when neither changed since
    # the last publication (a sync that changed nothing), the published table is reused.
    sql_hash = hashlib.sha256(event_counts_sql("leads", grain).encode()).hexdigest()[:12]
    origin = f"{store.table_uri(LEADS_TABLE)}@{leads.version()}#{sql_hash}"
    published = warehouse.warehouse()
    counts = _published_counts(published, table) if published.lineage(table) == origin else None
    recomputed = counts is None
    if recomputed:
        counts = compute_event_counts(leads.to_pyarrow_dataset(), grain)
        chart = event_counts_png(counts, title) if counts.num_rows else None
        published.publish({table: counts}, lineage={table: origin}, charts={table: chart})
    else:
        # Drawing (matplotlib) would cost more than the rest of an unchanged run: reuse the chart.
        chart = published.chart(table)
        if chart is None and counts.num_rows:  # published before charts were stored with counts
            chart = event_counts_png(counts, title)
            published.publish({}, lineage={table: origin}, charts={table: chart})
    label = counts.column_names[0]
    totals = {f"total_{c}": pc.sum(counts[c]).as_py() or 0 for c in EVENT_COLUMNS}
    return dg.MaterializeResult(
        metadata={
            "source": store.commit_value(RAW_TABLE, "source") or "unknown",
            "table": table,
            "warehouse": warehouse.path,
            "dagster/row_count": counts.num_rows,
            "leads_delta_version": leads.version(),
            "recomputed": recomputed,
            "first_period": counts[label][0].as_py() if counts.num_rows else "",
            "last_period": counts[label][-1].as_py() if counts.num_rows else "",
            **totals,
            "preview": markdown_preview(counts, limit=12, tail=True),
            "chart": chart_metadata(chart),
        }
    )


@dg.asset(
    deps=[LEADS_TABLE],
    group_name=GROUP,
    kinds={"duckdb"},
    pool=WAREHOUSE_POOL,
    automation_condition=follow_upstream(),
)
def weekly_event_counts(lake: LakeResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """How many leads reached each funnel step, week by week.

    One row per ISO 8601 week (labelled like ``2025-W01``, with the ISO year) from the first to the
    last event, weeks without events included with zeros: first contacts, prospects' replies,
    calls proposed, calls booked and follow-ups dated in that week.
    """
    return _materialize_counts(
        lake, warehouse, "week", WEEKLY_TABLE, "Leads per week, last 12 months"
    )


@dg.asset(
    deps=[LEADS_TABLE],
    group_name=GROUP,
    kinds={"duckdb"},
    pool=WAREHOUSE_POOL,
    automation_condition=follow_upstream(),
)
def monthly_event_counts(lake: LakeResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """How many leads reached each funnel step, month by month.

    One row per calendar month (labelled like ``2025-01``) from the first to the last event, months
    without events included with zeros, with the same five counts as the weekly table.
    """
    return _materialize_counts(
        lake, warehouse, "month", MONTHLY_TABLE, "Leads per month, last 12 months"
    )


ASSETS = [weekly_event_counts, monthly_event_counts]
