"""Analytics layer: event counts per time grain in DuckDB, computed over the Delta ``leads``.

One asset per grain of :data:`leads_pipeline.tables.GRAINS` (``weekly_event_counts``,
``monthly_event_counts``), all built by :func:`event_counts_asset`.
"""

import dagster as dg
import pyarrow.compute as pc

from leads_pipeline.defs.assets.schemas import duckdb_descriptions
from leads_pipeline.defs.assets.warehouse_assets import (
    lake_source,
    require_delta,
    sql_digest,
    warehouse_asset,
)
from leads_pipeline.defs.charts import chart_metadata, event_counts_png
from leads_pipeline.defs.metadata import (
    duckdb_table_metadata,
    markdown_preview,
    thousands,
    version_text,
)
from leads_pipeline.defs.resources import LakeResource, WarehouseResource
from leads_pipeline.storage.warehouse import compute_event_counts, event_counts_sql
from leads_pipeline.tables import EVENT_COLUMNS, EVENT_COUNTS, GRAINS, LEADS_TABLE, Grain

#: The metadata name of each event column's total: what it counts, in English.
TOTAL_NAMES: dict[str, str] = {
    "date_prise_contact": "first_contacts_total",
    "date_reponse_prospect": "replies_total",
    "date_appel_propose": "calls_proposed_total",
    "date_appel_booke": "calls_booked_total",
    "date_relance": "follow_ups_total",
}
#: Metadata of a count materialization: the ``leads`` version it was computed from (as text),
#: which its reconcile check reads back.
LEADS_VERSION_KEY = "leads_delta_version"


def _materialize_counts(
    context: dg.AssetExecutionContext,
    lake: LakeResource,
    warehouse: WarehouseResource,
    grain: Grain,
) -> dg.MaterializeResult:
    table = grain.table(EVENT_COUNTS)
    title = f"Leads {grain.title}, last 12 months"
    store = lake.delta_lake()
    leads = require_delta(store, LEADS_TABLE)
    # Counts are a pure function of the leads version and of the SQL: when neither changed since
    # the last publication (a sync that changed nothing), the published table is reused.
    origin = f"{store.table_uri(LEADS_TABLE)}@{leads.version()}#{sql_digest(event_counts_sql('leads', grain))}"
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
    totals = {TOTAL_NAMES[c]: int(pc.sum(counts[c]).as_py() or 0) for c in EVENT_COLUMNS}
    context.log.info(
        f"{grain.asset(EVENT_COUNTS)}: {thousands(counts.num_rows)} {grain.plural}, "
        f"{thousands(totals['first_contacts_total'])} first contacts, "
        f"{thousands(totals['calls_booked_total'])} calls booked, "
        f"{'recomputed' if recomputed else 'unchanged (reused)'} from leads version "
        f"{leads.version()}."
    )
    return dg.MaterializeResult(
        metadata={
            # First: the UI shows the chart on top, not behind the other entries.
            "chart": chart_metadata(chart),
            **totals,
            "dagster/row_count": counts.num_rows,
            "first_period": counts[label][0].as_py() if counts.num_rows else "",
            "last_period": counts[label][-1].as_py() if counts.num_rows else "",
            "recomputed": recomputed,
            "source": lake_source(store),
            LEADS_VERSION_KEY: version_text(leads.version()),
            **duckdb_table_metadata(published, table, duckdb_descriptions(table)),
            "preview": markdown_preview(counts, limit=12, tail=True),
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

    @warehouse_asset(grain.asset(EVENT_COUNTS), [LEADS_TABLE], description=_description(grain))
    def _counts(
        context: dg.AssetExecutionContext, lake: LakeResource, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        return _materialize_counts(context, lake, warehouse, grain)

    return _counts


ASSETS = [event_counts_asset(grain) for grain in GRAINS]
