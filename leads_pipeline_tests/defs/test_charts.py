"""The count assets' metadata: a 12-month PNG chart, a preview, numbers stable across runs."""

import base64
import datetime as dt

import dagster as dg
import pyarrow as pa

from leads_pipeline.defs.assets import analytics, ingestion
from leads_pipeline.defs.charts import chart_metadata, event_counts_png, last_months
from leads_pipeline.storage.warehouse import Warehouse
from leads_pipeline.tables import EVENT_COLUMNS

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def monthly(starts: list[dt.date]) -> pa.Table:
    return pa.table(
        {
            "mois": [d.strftime("%Y-%m") for d in starts],
            "month_start": pa.array(starts, pa.date32()),
            **{c: pa.array(range(len(starts)), pa.int64()) for c in EVENT_COLUMNS},
        }
    )


def test_chart_covers_the_last_twelve_calendar_months():
    starts = [dt.date(2023 + (m - 1) // 12, (m - 1) % 12 + 1, 1) for m in range(1, 31)]
    rows = last_months(monthly(starts), "month_start")
    assert rows["mois"].to_pylist()[0] == "2024-07"
    assert rows["mois"].to_pylist()[-1] == "2025-06"
    assert rows.num_rows == 12

    weeks = pa.table(
        {
            "semaine": ["x"] * 3,
            "week_start": pa.array(
                [dt.date(2024, 6, 24), dt.date(2024, 7, 1), dt.date(2025, 6, 30)], pa.date32()
            ),
        }
    )
    assert last_months(weeks, "week_start")["week_start"].to_pylist() == [
        dt.date(2024, 7, 1),
        dt.date(2025, 6, 30),
    ]


def test_chart_is_a_png_embedded_in_markdown():
    table = monthly([dt.date(2025, m, 1) for m in range(1, 7)])
    assert event_counts_png(table, "t").startswith(PNG_SIGNATURE)
    markdown = chart_metadata(event_counts_png(table, "Leads per month")).md_str
    prefix = "![chart](data:image/png;base64,"
    assert markdown.startswith(prefix) and markdown.endswith(")")
    assert base64.b64decode(markdown[len(prefix) : -1]).startswith(PNG_SIGNATURE)
    assert "no events" in chart_metadata(None).md_str


def _shape(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, str]:
    [event] = [
        e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(asset)
    ]
    return {k: type(v).__name__ for k, v in event.materialization.metadata.items()}


def test_count_metadata_keeps_its_keys_and_types_across_runs(sample_resources):
    assets = [*ingestion.ASSETS, *analytics.ASSETS]
    with dg.instance_for_test() as instance:
        first = dg.materialize(assets, resources=sample_resources, instance=instance)
        second = dg.materialize(assets, resources=sample_resources, instance=instance)
    for asset in ("weekly_event_counts", "monthly_event_counts"):
        shape = _shape(first, asset)
        assert shape == _shape(second, asset)
        assert shape["chart"] == shape["preview"] == "MarkdownMetadataValue"
        assert shape["dagster/row_count"] == "IntMetadataValue"
        assert next(iter(shape)) == "chart"  # the first entry: shown on top
        for name in (
            "first_contacts_total",
            "replies_total",
            "calls_proposed_total",
            "calls_booked_total",
            "follow_ups_total",
        ):
            assert shape[name] == "IntMetadataValue"


def _metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    [event] = [
        e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(asset)
    ]
    return event.materialization.metadata


def test_unchanged_counts_reuse_the_chart_published_with_them(sample_resources, warehouse_path):
    assets = [*ingestion.ASSETS, *analytics.ASSETS]
    table = "analytics.weekly_event_counts"
    first = _metadata(dg.materialize(assets, resources=sample_resources), "weekly_event_counts")
    assert first["recomputed"].value is True
    warehouse = Warehouse(warehouse_path)
    drawn = warehouse.chart(table)
    assert drawn.startswith(PNG_SIGNATURE)
    assert first["chart"].md_str == chart_metadata(drawn).md_str

    # Counts unchanged (a fresh Dagster instance, too): the chart stored with them is shown again,
    # not redrawn. A marker stands in for it, so reuse is what the test sees.
    with warehouse.read() as con:
        counts = con.sql(f"SELECT * FROM {table}").to_arrow_table()
    marker = PNG_SIGNATURE + b"marker"
    warehouse.publish(
        {table: counts}, lineage={table: warehouse.lineage(table)}, charts={table: marker}
    )
    second = _metadata(dg.materialize(assets, resources=sample_resources), "weekly_event_counts")
    assert second["recomputed"].value is False
    assert second["chart"].md_str == chart_metadata(marker).md_str

    # A warehouse published before charts were stored: the chart is drawn again, and stored.
    warehouse.publish({table: counts}, lineage={table: warehouse.lineage(table)})
    assert warehouse.chart(table) is None
    third = _metadata(dg.materialize(assets, resources=sample_resources), "weekly_event_counts")
    assert third["recomputed"].value is False
    assert third["chart"].md_str == first["chart"].md_str
    assert warehouse.chart(table) == drawn
