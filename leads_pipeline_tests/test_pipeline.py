"""End to end on sample data: real materializations into a temporary lake and warehouse."""

import collections
import datetime as dt
import itertools
import re

import dagster as dg
import pytest
from deltalake import DeltaTable

from leads_pipeline.defs.assets import analytics, ingestion
from leads_pipeline.sources.sample_data import generate_pages
from leads_pipeline.storage.warehouse import Warehouse
from leads_pipeline.tables import EVENT_COLUMNS, MONTH, WEEK
from leads_pipeline.transform.property_map import DEFAULT_COLUMNS

WEEKLY_TABLE, MONTHLY_TABLE = WEEK.table(), MONTH.table()

ASSETS = [*ingestion.ASSETS, *analytics.ASSETS]
TABLES = ("raw_notion_leads", "leads", "lead_quality_issues")
PROPERTY_OF = {c.column: c.property for c in DEFAULT_COLUMNS}


def independent_counts(pages, period) -> dict[str, collections.Counter]:
    """Counts computed straight from the page JSON, without the pipeline's code."""
    counts = {column: collections.Counter() for column in EVENT_COLUMNS}
    for page in pages:
        for column in EVENT_COLUMNS:
            value = page["properties"][PROPERTY_OF[column]]["date"]
            if value:
                counts[column][period(dt.date.fromisoformat(value["start"][:10]))] += 1
    return counts


def iso_week(day: dt.date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def read_warehouse(path, table):
    with Warehouse(path).read() as con:
        return con.sql(f"SELECT * FROM {table}").to_arrow_table().to_pylist()


def snapshot(lake_uri, warehouse_path):
    lake = {
        name: (
            DeltaTable(f"{lake_uri}/{name}").version(),
            DeltaTable(f"{lake_uri}/{name}").to_pyarrow_table().to_pylist(),
        )
        for name in TABLES
    }
    return (
        lake,
        read_warehouse(warehouse_path, WEEKLY_TABLE),
        read_warehouse(warehouse_path, MONTHLY_TABLE),
    )


@pytest.fixture
def materialized(sample_resources, lake_uri, warehouse_path):
    result = dg.materialize(ASSETS, resources=sample_resources)
    assert result.success
    return result


def test_counts_equal_an_independent_count_of_the_pages(materialized, warehouse_path):
    pages = generate_pages(2000, 42)
    for table, period, label in (
        (WEEKLY_TABLE, iso_week, "semaine"),
        (MONTHLY_TABLE, lambda d: d.strftime("%Y-%m"), "mois"),
    ):
        rows = read_warehouse(warehouse_path, table)
        expected = independent_counts(pages, period)
        for column in EVENT_COLUMNS:
            got = {r[label]: r[column] for r in rows if r[column]}
            assert got == dict(expected[column]), (table, column)
        labels = [r[label] for r in rows]
        assert labels == sorted(labels) and len(labels) == len(set(labels))


def test_weeks_are_contiguous(materialized, warehouse_path):
    starts = [r["week_start"] for r in read_warehouse(warehouse_path, WEEKLY_TABLE)]
    assert all(b - a == dt.timedelta(days=7) for a, b in itertools.pairwise(starts))
    assert len(starts) > 100


def test_nothing_is_lost_and_invalid_values_are_reported(materialized, lake_uri):
    pages = generate_pages(2000, 42)
    raw = DeltaTable(f"{lake_uri}/raw_notion_leads").to_pyarrow_table()
    leads = DeltaTable(f"{lake_uri}/leads").to_pyarrow_table()
    issues = DeltaTable(f"{lake_uri}/lead_quality_issues").to_pyarrow_table().to_pylist()
    ids = {p["id"] for p in pages}
    assert set(raw["page_id"].to_pylist()) == ids
    assert set(leads["id"].to_pylist()) == ids
    invalid = {
        p["id"]
        for p in pages
        if (email := p["properties"]["Email"]["email"])
        and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s.]+", email)
    }
    assert invalid, "the sample data should contain invalid emails"
    assert {i["page_id"] for i in issues if i["column"] == "email"} == invalid
    assert all(i["column"] == "email" for i in issues)
    emails = dict(zip(leads["id"].to_pylist(), leads["email"].to_pylist(), strict=True))
    assert all(emails[i] is None for i in invalid)


def test_materializations_report_metadata(materialized):
    by_key = {
        m.asset_key.to_user_string(): m.metadata
        for m in materialized.get_asset_materialization_events()
        for m in [m.event_specific_data.materialization]
    }
    assert set(by_key) == {*TABLES, "lead_history", "weekly_event_counts", "monthly_event_counts"}
    for metadata in by_key.values():
        assert metadata["source"].value == "sample"
        assert "dagster/row_count" in metadata
        assert "preview" in metadata
    assert by_key["leads"]["dagster/row_count"].value == 2000
    assert int(by_key["raw_notion_leads"]["delta_version"].value) >= 0  # text: not plotted
    assert by_key["weekly_event_counts"]["dagster/table_name"].value == WEEKLY_TABLE


def test_materializing_twice_changes_nothing(
    sample_resources, materialized, lake_uri, warehouse_path
):
    before = snapshot(lake_uri, warehouse_path)
    again = dg.materialize(ASSETS, resources=sample_resources)
    assert again.success
    assert snapshot(lake_uri, warehouse_path) == before
    raw_meta = next(
        m.event_specific_data.materialization.metadata
        for m in again.get_asset_materialization_events()
        if m.asset_key.to_user_string() == "raw_notion_leads"
    )
    assert raw_meta["delta_committed"].value is False
    assert raw_meta["mode"].value == "incremental"
    for asset in ("weekly_event_counts", "monthly_event_counts"):
        counts_meta = next(
            m.event_specific_data.materialization.metadata
            for m in again.get_asset_materialization_events()
            if m.asset_key.to_user_string() == asset
        )
        # leads did not change: the published counts are reused, not recomputed.
        assert counts_meta["recomputed"].value is False
