"""LeadsAnalytics: the old API's shapes, date filters, caching, status, not-run-yet errors."""

import json
import threading
from datetime import date

import dagster as dg
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable

from leads_pipeline.defs.assets import analytics, ingestion
from leads_pipeline.serving import (
    BUILD_COMMAND,
    IngestionStatus,
    LeadsAnalytics,
    MonthlyEventCount,
    PipelineNotRunError,
    WeeklyEventCount,
)
from leads_pipeline.storage.warehouse import Warehouse
from leads_pipeline.tables import MONTH, WEEK
from leads_pipeline_tests.crafted_counts import monthly_table, publish_counts, weekly_table

WEEKLY_TABLE, MONTHLY_TABLE = WEEK.table(), MONTH.table()

# The examples of the old service's documentation, verbatim (key order included).
OLD_WEEK_EXAMPLE = (
    '{"semaine": "2025-W01", "date_prise_contact": 45, "date_reponse_prospect": 32, '
    '"date_appel_booke": 28, "date_appel_propose": 35, "date_relance": 40}'
)
OLD_MONTH_EXAMPLE = (
    '{"mois": "2025-01", "date_prise_contact": 180, "date_reponse_prospect": 145, '
    '"date_appel_booke": 120, "date_appel_propose": 150, "date_relance": 160}'
)

WEEKS = {
    "2024-W52": (1, 0, 0, 0, 0),
    "2025-W01": (45, 32, 35, 28, 40),  # starts Monday 2024-12-30
    "2025-W02": (2, 1, 0, 0, 0),
    "2025-W03": (3, 0, 1, 0, 0),
}
MONTHS = {
    "2024-12": (5, 0, 0, 0, 0),
    "2025-01": (180, 145, 150, 120, 160),
    "2025-02": (7, 1, 0, 0, 2),
}


@pytest.fixture
def crafted(warehouse_path) -> LeadsAnalytics:
    publish_counts(warehouse_path, weekly=WEEKS, monthly=MONTHS)
    return LeadsAnalytics(warehouse_path=warehouse_path, lake_uri="unused")


def test_weekly_shape_is_the_old_api_example(crafted):
    week = next(w for w in crafted.count_date_by_week() if w.semaine == "2025-W01")
    assert json.dumps(week.model_dump(mode="json")) == OLD_WEEK_EXAMPLE
    assert list(WeeklyEventCount.model_fields) == list(json.loads(OLD_WEEK_EXAMPLE))


def test_monthly_shape_is_the_old_api_example(crafted):
    month = next(m for m in crafted.count_date_by_month() if m.mois == "2025-01")
    assert json.dumps(month.model_dump(mode="json")) == OLD_MONTH_EXAMPLE
    assert list(MonthlyEventCount.model_fields) == list(json.loads(OLD_MONTH_EXAMPLE))


def test_all_periods_oldest_first(crafted):
    assert [w.semaine for w in crafted.count_date_by_week()] == list(WEEKS)
    assert [m.mois for m in crafted.count_date_by_month()] == list(MONTHS)


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        # The week holding 1 January 2025 is 2025-W01 (it starts 2024-12-30): it is kept.
        (date(2025, 1, 1), None, ["2025-W01", "2025-W02", "2025-W03"]),
        (date(2024, 12, 30), None, ["2025-W01", "2025-W02", "2025-W03"]),
        (None, date(2025, 1, 12), ["2024-W52", "2025-W01", "2025-W02"]),  # Sunday of W02
        (None, date(2025, 1, 13), list(WEEKS)),  # Monday of W03
        (date(2025, 1, 6), date(2025, 1, 6), ["2025-W02"]),
        ("2025-01-06", "2025-01-19", ["2025-W02", "2025-W03"]),
        (date(2026, 1, 1), None, []),
    ],
)
def test_week_filters_keep_the_periods_containing_the_bounds(crafted, start, end, expected):
    assert [w.semaine for w in crafted.count_date_by_week(start=start, end=end)] == expected


def test_month_filters_keep_the_periods_containing_the_bounds(crafted):
    assert [m.mois for m in crafted.count_date_by_month(start=date(2025, 1, 15))] == [
        "2025-01",
        "2025-02",
    ]
    assert [m.mois for m in crafted.count_date_by_month(end="2025-01-31")] == ["2024-12", "2025-01"]
    assert [m.mois for m in crafted.count_date_by_month(date(2025, 1, 31), date(2025, 1, 31))] == [
        "2025-01"
    ]
    with pytest.raises(ValueError, match="after"):
        crafted.count_date_by_month(start=date(2025, 2, 1), end=date(2025, 1, 1))
    with pytest.raises(ValueError, match="not a date"):
        crafted.count_date_by_week(start="January")


def test_not_run_yet_names_the_command(warehouse_path, tmp_path):
    analytics_ = LeadsAnalytics(warehouse_path=warehouse_path, lake_uri=str(tmp_path / "lake"))
    for call in (
        analytics_.count_date_by_week,
        analytics_.count_date_by_month,
        analytics_.ingestion_status,
    ):
        with pytest.raises(PipelineNotRunError, match="has not run") as error:
            call()
        assert BUILD_COMMAND in str(error.value)


def test_not_run_yet_when_the_table_is_missing(warehouse_path):
    Warehouse(warehouse_path).publish({MONTHLY_TABLE: monthly_table(MONTHS)})
    analytics_ = LeadsAnalytics(warehouse_path=warehouse_path)
    assert len(analytics_.count_date_by_month()) == 3
    with pytest.raises(PipelineNotRunError, match="weekly_event_counts") as error:
        analytics_.count_date_by_week()
    assert BUILD_COMMAND in str(error.value)


def test_a_new_publication_is_seen_and_cached_lists_are_not_shared(crafted, warehouse_path):
    first = crafted.count_date_by_week()
    first.clear()
    assert len(crafted.count_date_by_week()) == len(WEEKS)
    publish_counts(warehouse_path, weekly={"2025-W10": (9, 9, 9, 9, 9)})
    assert [w.semaine for w in crafted.count_date_by_week()] == ["2025-W10"]
    uncached = LeadsAnalytics(warehouse_path=warehouse_path, cache=False)
    assert uncached.count_date_by_week() == crafted.count_date_by_week()


def test_readers_do_not_block_writers(crafted, warehouse_path):
    """A reader holding a snapshot open does not stop a publication; the next read sees it."""
    warehouse = Warehouse(warehouse_path)
    with warehouse.read() as held:
        writer = threading.Thread(
            target=warehouse.publish, args=({WEEKLY_TABLE: weekly_table({"2025-W20": (1,) * 5})},)
        )
        writer.start()
        writer.join(timeout=30)
        assert not writer.is_alive()
        assert held.execute(f"SELECT count(*) FROM {WEEKLY_TABLE}").fetchone()[0] == len(WEEKS)
    assert [w.semaine for w in crafted.count_date_by_week()] == ["2025-W20"]


def test_from_env_reads_the_variables(monkeypatch, warehouse_path):
    monkeypatch.setenv("LEADS_WAREHOUSE_PATH", warehouse_path)
    monkeypatch.setenv("LEADS_LAKE_URI", "s3://bucket/lake")
    analytics_ = LeadsAnalytics.from_env()
    assert (analytics_.warehouse_path, analytics_.lake_uri) == (warehouse_path, "s3://bucket/lake")
    assert LeadsAnalytics().warehouse_path == "data/warehouse.duckdb"


def test_usable_as_a_dagster_resource(crafted, warehouse_path):
    @dg.asset
    def busiest_week(analytics: LeadsAnalytics) -> dg.MaterializeResult:
        weeks = analytics.count_date_by_week(start=date(2025, 1, 1))
        best = max(weeks, key=lambda w: w.date_prise_contact)
        return dg.MaterializeResult(metadata={"week": best.semaine})

    result = dg.materialize(
        [busiest_week], resources={"analytics": LeadsAnalytics(warehouse_path=warehouse_path)}
    )
    [event] = result.get_asset_materialization_events()
    assert event.materialization.metadata["week"].value == "2025-W01"


def test_ingestion_status_after_a_sample_run(sample_resources, lake_uri, warehouse_path):
    dg.materialize([*ingestion.ASSETS, *analytics.ASSETS], resources=sample_resources)
    status = LeadsAnalytics(warehouse_path=warehouse_path, lake_uri=lake_uri).ingestion_status()
    assert isinstance(status, IngestionStatus)

    raw = DeltaTable(f"{lake_uri}/raw_notion_leads")
    raw_rows = raw.to_pyarrow_dataset().to_table()
    leads = DeltaTable(f"{lake_uri}/leads")
    issues = DeltaTable(f"{lake_uri}/lead_quality_issues")
    assert status.source == "sample"
    assert status.source_identity.startswith("sample")
    assert status.raw_rows == raw_rows.num_rows == 2000
    assert status.raw_delta_version == raw.version()
    assert status.leads_rows == leads.to_pyarrow_dataset().count_rows()
    assert status.leads_delta_version == leads.version()
    assert status.open_quality_issues == issues.to_pyarrow_dataset().count_rows() > 0
    assert status.watermark == pc.max(raw_rows["last_edited_time"]).as_py()
    # Delta statistics keep timestamps to the millisecond.
    newest_sync = pc.max(raw_rows["synced_at"]).as_py()
    assert abs((status.last_sync_at - newest_sync).total_seconds()) < 0.001
    assert status.counts_published_at is not None
    assert set(status.model_dump(mode="json")) == set(IngestionStatus.model_fields)


def test_ingestion_status_before_leads_is_built(lake_uri):
    from leads_pipeline.storage.lake import DeltaLake
    from leads_pipeline.storage.raw_store import RAW_SCHEMA
    from leads_pipeline.tables import RAW_TABLE

    DeltaLake(lake_uri).ensure(RAW_TABLE, RAW_SCHEMA, {"source": "sample"})
    status = LeadsAnalytics(lake_uri=lake_uri, warehouse_path="missing.duckdb").ingestion_status()
    assert (status.raw_rows, status.watermark, status.leads_rows) == (0, None, None)
    assert status.counts_published_at is None
    assert status.source == "sample"
