"""Analytics layer: event counts per time grain in DuckDB, computed over the Delta ``leads``.

One asset per grain of :data:`leads_pipeline.tables.GRAINS` (``weekly_event_counts``,
``monthly_event_counts``), all built by :func:`event_counts_asset`.
"""

import hashlib

import dagster as dg
import pyarrow.compute as pc

from leads_pipeline.defs.assets import ANALYTICS_GROUP
from leads_pipeline.defs.automation import follow_upstream
from leads_pipeline.defs.charts import chart_metadata, event_counts_png
from leads_pipeline.defs.metadata import markdown_preview
from leads_pipeline.defs.pools import WAREHOUSE_POOL
from leads_pipeline.defs.resources import LakeResource, WarehouseResource
from leads_pipeline.storage.warehouse import compute_event_counts, event_counts_sql
from leads_pipeline.tables import EVENT_COLUMNS, EVENT_COUNTS, GRAINS, LEADS_TABLE, RAW_TABLE, Grain


def _materialize_counts(
    lake: LakeResource, warehouse: WarehouseResource, grain: Grain
) -> dg.MaterializeResult:
    table = grain.table(EVENT_COUNTS)
    title = f"Leads {grain.title}, last 12 months"
    store = lake.delta_lake()
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
    counts = published.published_from(table, origin, order_by=grain.start_column)
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
    label = grain.label
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


def _description(grain: Grain) -> str:
    return (
        f"How many leads reached each funnel step, {grain.name} by {grain.name}.\n\n"
        f"One row per {grain.period} (labelled like ``{grain.example}`` in ``{grain.label}``, "
        f"first day in ``{grain.start_column}``) from the first to the last event, "
        f"{grain.plural} without events included with zeros: first contacts, prospects' replies, "
        f"calls proposed, calls booked and follow-ups dated in that {grain.name}. "
        f"Table ``{grain.table(EVENT_COUNTS)}``."
    )


def event_counts_asset(grain: Grain) -> dg.AssetsDefinition:
    """The asset publishing ``grain``'s event counts (e.g. ``weekly_event_counts``).

    Args:
        grain: The time grain of the table.
    """

    @dg.asset(
        name=grain.asset(EVENT_COUNTS),
        deps=[LEADS_TABLE],
        group_name=ANALYTICS_GROUP,
        kinds={"duckdb"},
        pool=WAREHOUSE_POOL,
        automation_condition=follow_upstream(),
        description=_description(grain),
    )
    def _counts(lake: LakeResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
        return _materialize_counts(lake, warehouse, grain)

    return _counts


ASSETS = [event_counts_asset(grain) for grain in GRAINS]
