"""Downstream assets: funnel conversion and weekly objectives on crafted and sample counts."""

from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa
import pytest

from leads_pipeline.defs.assets import analytics, downstream, ingestion
from leads_pipeline.defs.assets.downstream import (
    WeeklyObjectivesConfig,
    monthly_funnel_conversion,
    reference_day,
    weekly_objectives,
)
from leads_pipeline.defs.assets.downstream_checks import (
    FUNNEL_MATCHES_COUNTS,
    FUNNEL_RATIOS_WELL_FORMED,
    OBJECTIVES_MATCH_COUNTS,
    OBJECTIVES_WINDOW_COMPLETE,
    OBJECTIVES_WINDOW_RECENT,
    check_funnel_matches_counts,
    check_funnel_ratios,
    check_objectives_match_counts,
    check_objectives_window_recent,
)
from leads_pipeline.defs.automation import follow_upstream
from leads_pipeline.defs.resources import LakeResource, WarehouseResource
from leads_pipeline.serving import LeadsAnalytics
from leads_pipeline.sources.sample_data import generate_pages
from leads_pipeline.storage.lake import DeltaLake
from leads_pipeline.storage.warehouse import Warehouse
from leads_pipeline.tables import EVENT_COLUMNS, FUNNEL_TABLE, MONTH, OBJECTIVES_TABLE, WEEK
from leads_pipeline.transform.funnel import (
    compute_funnel,
    compute_objectives,
    objectives_window,
)
from leads_pipeline_tests.crafted_counts import monthly_table, publish_counts, weekly_table

WEEKLY_TABLE, MONTHLY_TABLE = WEEK.table(), MONTH.table()

# (contact, reply, proposed, booked, follow-up) per month.
MONTHS = {
    "2025-01": (10, 5, 4, 2, 1),
    "2025-02": (0, 3, 0, 0, 0),  # replies to January's contacts, no contact this month
    "2025-03": (4, 6, 0, 0, 0),  # more replies than contacts: a ratio above 1 is legitimate
    "2025-04": (0, 0, 0, 0, 0),
}
EXPECTED_FUNNEL = {
    #          contact→reply      reply→proposed   proposed→booked   reply→booked
    "2025-01": ((5, 10, 0.5), (4, 5, 0.8), (2, 4, 0.5), (2, 5, 0.4)),
    "2025-02": ((3, 0, None), (0, 3, 0.0), (0, 0, None), (0, 3, 0.0)),
    "2025-03": ((6, 4, 1.5), (0, 6, 0.0), (0, 0, None), (0, 6, 0.0)),
    "2025-04": ((0, 0, None), (0, 0, None), (0, 0, None), (0, 0, None)),
}
STEPS = ["contact_to_reply", "reply_to_call_proposed", "proposed_to_booked", "reply_to_booked"]

WEEKS = {
    "2025-W01": (100, 100, 100, 100, 100),
    "2025-W02": (100, 100, 100, 100, 100),
    "2025-W03": (40, 30, 20, 10, 0),
    "2025-W04": (50, 30, 25, 10, 0),
    "2025-W05": (45, 34, 30, 20, 0),
    "2025-W06": (45, 34, 25, 20, 4),
    "2025-W07": (999, 999, 999, 999, 999),  # in progress on 2025-02-12: never averaged
}
AS_OF = "2025-02-12"  # a Wednesday of 2025-W07
TARGETS = {
    "target_date_prise_contact": 45,
    "target_date_reponse_prospect": 40,
    "target_date_appel_propose": 20,
    "target_date_appel_booke": 30,
    "target_date_relance": 0,
}


def _resources(warehouse_path: str) -> dict:
    # An empty lake next to the warehouse: no recorded source, so the wall clock is the reference.
    lake = str(Path(warehouse_path).parent / "empty_lake")
    return {"warehouse": WarehouseResource(path=warehouse_path), "lake": LakeResource(uri=lake)}


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {c.check_name: c for c in result.get_asset_check_evaluations()}


def _read(warehouse_path: str, table: str) -> list[dict]:
    return LeadsAnalytics(warehouse_path=warehouse_path).table(table).to_pylist()


def _objectives(warehouse_path: str, **config) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [weekly_objectives],
        resources=_resources(warehouse_path),
        run_config=dg.RunConfig({"weekly_objectives": WeeklyObjectivesConfig(**config)}),
    )


def test_funnel_ratios_on_crafted_counts(warehouse_path):
    publish_counts(warehouse_path, monthly=MONTHS)
    result = dg.materialize([monthly_funnel_conversion], resources=_resources(warehouse_path))
    rows = _read(warehouse_path, FUNNEL_TABLE)
    assert [row["mois"] for row in rows] == list(MONTHS)
    for row in rows:
        for step, (numerator, denominator, ratio) in zip(
            STEPS, EXPECTED_FUNNEL[row["mois"]], strict=True
        ):
            assert row[f"{step}_numerator"] == numerator, (row["mois"], step)
            assert row[f"{step}_denominator"] == denominator, (row["mois"], step)
            if ratio is None:
                assert row[f"{step}_ratio"] is None, (row["mois"], step)
            else:
                assert row[f"{step}_ratio"] == pytest.approx(ratio), (row["mois"], step)
    checks = _checks(result)
    assert checks[FUNNEL_MATCHES_COUNTS].passed
    assert checks[FUNNEL_RATIOS_WELL_FORMED].passed
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["dagster/row_count"].value == 4
    assert metadata["last_month"].value == "2025-04"
    assert "50.0%" in metadata["preview"].value and "∅" in metadata["preview"].value


def _republished(result: dg.ExecuteInProcessResult) -> bool:
    [event] = result.get_asset_materialization_events()
    return event.materialization.metadata["republished"].value


def test_funnel_is_idempotent_and_leaves_an_unchanged_warehouse_file_alone(warehouse_path):
    publish_counts(warehouse_path, monthly=MONTHS)
    first_run = dg.materialize([monthly_funnel_conversion], resources=_resources(warehouse_path))
    assert _republished(first_run)
    first = _read(warehouse_path, FUNNEL_TABLE)
    inode = Path(warehouse_path).stat().st_ino
    second_run = dg.materialize([monthly_funnel_conversion], resources=_resources(warehouse_path))
    assert _read(warehouse_path, FUNNEL_TABLE) == first
    assert not _republished(second_run)
    assert Path(warehouse_path).stat().st_ino == inode  # not replaced by a copy
    # Changed counts are published again.
    changed = dict(MONTHS)
    changed["2025-01"] = tuple(n + 1 for n in MONTHS["2025-01"])
    publish_counts(warehouse_path, monthly=changed)
    third_run = dg.materialize([monthly_funnel_conversion], resources=_resources(warehouse_path))
    assert _republished(third_run)
    assert _read(warehouse_path, FUNNEL_TABLE) != first


def test_funnel_check_fails_on_negative_counts(warehouse_path):
    publish_counts(warehouse_path, monthly={"2025-01": (-1, 2, 1, 1, 0)})
    result = dg.materialize([monthly_funnel_conversion], resources=_resources(warehouse_path))
    checks = _checks(result)
    assert checks[FUNNEL_MATCHES_COUNTS].passed
    failed = checks[FUNNEL_RATIOS_WELL_FORMED]
    assert not failed.passed
    assert failed.severity == dg.AssetCheckSeverity.ERROR
    assert "2025-01 contact_to_reply" in failed.description


def test_funnel_checks_catch_tampered_tables():
    counts = monthly_table(MONTHS)
    con = duckdb.connect()
    con.register("counts", counts)
    funnel = compute_funnel(con, "counts")
    assert check_funnel_matches_counts(funnel, counts).passed
    assert check_funnel_ratios(funnel).passed

    rows = funnel.to_pylist()
    rows[0]["reply_to_booked_numerator"] = 3  # no longer January's bookings
    rows[1]["proposed_to_booked_ratio"] = 0.0  # a ratio over a zero denominator
    rows[2]["contact_to_reply_ratio"] = 0.5  # not 6/4
    tampered = pa.Table.from_pylist(rows, schema=funnel.schema)
    matches = check_funnel_matches_counts(tampered, counts)
    assert not matches.passed
    assert "2025-01 reply_to_booked_numerator=3" in matches.description
    ratios = check_funnel_ratios(tampered)
    assert not ratios.passed
    assert "2025-02 proposed_to_booked: denominator 0" in ratios.description
    assert "2025-03 contact_to_reply: ratio 0.5" in ratios.description
    assert not check_funnel_matches_counts(funnel.slice(1), counts).passed


def test_funnel_without_counts_fails_with_the_next_step(warehouse_path):
    result = dg.materialize(
        [monthly_funnel_conversion], resources=_resources(warehouse_path), raise_on_error=False
    )
    assert not result.success
    [failure] = result.get_step_failure_events()
    assert "materialize monthly_event_counts first" in str(failure.event_specific_data.error)


def test_objectives_on_crafted_weeks(warehouse_path):
    publish_counts(warehouse_path, weekly=WEEKS)
    result = _objectives(warehouse_path, weeks=4, as_of=AS_OF, **TARGETS)
    rows = {row["event"]: row for row in _read(warehouse_path, OBJECTIVES_TABLE)}
    assert list(rows) == list(EVENT_COLUMNS)
    expected = {
        # event: (average, target, attainment, met)
        "date_prise_contact": (45.0, 45.0, 1.0, True),
        "date_reponse_prospect": (32.0, 40.0, 0.8, False),
        "date_appel_propose": (25.0, 20.0, 1.25, True),
        "date_appel_booke": (15.0, 30.0, 0.5, False),
        "date_relance": (1.0, 0.0, None, True),  # a zero target has no attainment ratio
    }
    for event, (average, target, attainment, met) in expected.items():
        row = rows[event]
        assert row["average"] == pytest.approx(average), event
        assert row["target"] == target, event
        assert row["attainment"] == (None if attainment is None else pytest.approx(attainment))
        assert row["met"] is met, event
        assert (row["weeks"], row["first_week"], row["last_week"]) == (4, "2025-W03", "2025-W06")
        assert (str(row["window_start"]), str(row["window_end"])) == ("2025-01-13", "2025-02-09")
    checks = _checks(result)
    assert all(check.passed for check in checks.values()), checks
    assert set(checks) == {
        OBJECTIVES_MATCH_COUNTS,
        OBJECTIVES_WINDOW_COMPLETE,
        OBJECTIVES_WINDOW_RECENT,
    }
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["objectives_met"].value == 3
    assert metadata["window"].value == "2025-W03 → 2025-W06"
    assert metadata["calls_booked_attainment_percent"].value == pytest.approx(50.0)


def test_objectives_default_targets_and_window(warehouse_path):
    publish_counts(warehouse_path, weekly=WEEKS)
    _objectives(warehouse_path, as_of=AS_OF)
    rows = {row["event"]: row for row in _read(warehouse_path, OBJECTIVES_TABLE)}
    # Just above the sample's median week (see test_sample_health.py for the sample's weeks).
    assert {event: row["target"] for event, row in rows.items()} == {
        "date_prise_contact": 20.0,
        "date_reponse_prospect": 12.0,
        "date_appel_propose": 9.0,
        "date_appel_booke": 6.0,
        "date_relance": 10.0,
    }
    assert rows["date_prise_contact"]["weeks"] == 4


def test_without_as_of_and_without_a_sample_lake_the_wall_clock_is_the_reference(warehouse_path):
    publish_counts(warehouse_path, weekly=WEEKS)
    result = _objectives(warehouse_path, weeks=4)
    recent = _checks(result)[OBJECTIVES_WINDOW_RECENT]
    # Today is long after 2025-W06: the crafted counts are stale against the wall clock.
    assert (recent.passed, recent.severity) == (False, dg.AssetCheckSeverity.WARN)
    today = datetime.now(UTC).date()
    assert abs(date.fromisoformat(recent.metadata["reference_day"].value) - today).days <= 1
    assert recent.metadata["reference"].value == "today in Europe/Paris"
    assert recent.metadata["weeks_behind"].value > 50
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["reference"].value == "today in Europe/Paris"


def test_reference_day_order_configured_then_sample_watermark_then_today(
    sample_resources, lake_uri
):
    lake = DeltaLake(lake_uri)
    now = datetime(2026, 3, 1, 23, 30, tzinfo=UTC)  # already 2 March in Paris
    assert reference_day(None, lake, now=now).day == date(2026, 3, 2)  # empty lake: the clock
    assert reference_day(date(2025, 5, 5), lake, now=now).day == date(2025, 5, 5)
    dg.materialize([ingestion.raw_notion_leads], resources=sample_resources)
    # The sample's newest edit: its "now", whatever the wall clock says.
    newest = max(page["last_edited_time"] for page in generate_pages(2000, 42))
    sample_day = date.fromisoformat(newest[:10])
    reference = reference_day(None, lake, now=now)
    assert reference.day == sample_day
    assert "sample" in reference.reason and newest[:10] in reference.reason
    assert reference_day(date(2025, 5, 5), lake, now=now).day == date(2025, 5, 5)


def test_recency_check_passes_on_the_last_complete_week_and_names_its_reference():
    window = objectives_window(weekly_table(WEEKS), 4, date(2025, 2, 12))
    passed = check_objectives_window_recent(window, date(2025, 2, 12), "a test clock")
    assert passed.passed and "2025-W06" in passed.description
    assert "a test clock" in passed.description
    # The next Monday starts W08: W07 is complete now, and the window (ending W06) is behind.
    late = check_objectives_window_recent(window, date(2025, 2, 17), "a test clock")
    assert not late.passed and late.metadata["weeks_behind"].value == 1
    assert "a test clock" in late.description


def test_objectives_warn_on_short_or_stale_history(warehouse_path):
    publish_counts(warehouse_path, weekly=WEEKS)
    checks = _checks(_objectives(warehouse_path, weeks=10, as_of="2025-03-05"))
    short = checks[OBJECTIVES_WINDOW_COMPLETE]
    assert (short.passed, short.severity) == (False, dg.AssetCheckSeverity.WARN)
    assert short.metadata["weeks_in_window"].value == 7
    stale = checks[OBJECTIVES_WINDOW_RECENT]
    assert (stale.passed, stale.severity) == (False, dg.AssetCheckSeverity.WARN)
    assert stale.metadata["weeks_behind"].value == 2
    assert checks[OBJECTIVES_MATCH_COUNTS].passed
    rows = _read(warehouse_path, OBJECTIVES_TABLE)
    total_contacts = sum(counts[0] for counts in WEEKS.values())
    assert rows[0]["average"] == pytest.approx(total_contacts / 7)


def test_objectives_with_no_complete_week(warehouse_path):
    publish_counts(warehouse_path, weekly=WEEKS)
    checks = _checks(_objectives(warehouse_path, as_of="2024-12-31"))
    rows = _read(warehouse_path, OBJECTIVES_TABLE)
    assert len(rows) == 5
    assert all(r["weeks"] == 0 and r["average"] is None and r["met"] is None for r in rows)
    assert checks[OBJECTIVES_MATCH_COUNTS].passed
    assert not checks[OBJECTIVES_WINDOW_COMPLETE].passed
    assert "No complete week" in checks[OBJECTIVES_WINDOW_RECENT].description


def test_objectives_check_catches_a_wrong_flag():
    window = objectives_window(weekly_table(WEEKS), 4, date(2025, 2, 12))
    targets = {event: float(TARGETS[f"target_{event}"]) for event in EVENT_COLUMNS}
    objectives = compute_objectives(window, targets)
    assert check_objectives_match_counts(objectives, window).passed
    rows = objectives.to_pylist()
    rows[1]["met"] = True  # 32 a week is not 40
    rows[2]["average"] = 26.0
    tampered = pa.Table.from_pylist(rows, schema=objectives.schema)
    result = check_objectives_match_counts(tampered, window)
    assert not result.passed
    assert "date_reponse_prospect: met=True" in result.description
    assert "date_appel_propose: average 26.0" in result.description
    assert result.metadata["violations"].value == 3  # met, average and its attainment


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"weeks": 0}, "weeks must be at least 1"),
        ({"target_date_relance": -1}, "cannot be negative"),
        ({"as_of": "12/02/2025"}, "not a YYYY-MM-DD date"),
    ],
)
def test_objectives_reject_bad_configuration(warehouse_path, config, message):
    publish_counts(warehouse_path, weekly=WEEKS)
    result = dg.materialize(
        [weekly_objectives],
        resources=_resources(warehouse_path),
        run_config=dg.RunConfig({"weekly_objectives": WeeklyObjectivesConfig(**config)}),
        raise_on_error=False,
    )
    assert not result.success
    assert message in str(result.get_step_failure_events()[0].event_specific_data.error)


def test_end_to_end_on_sample_data(sample_resources, warehouse_path, lake_uri):
    everything = [*ingestion.ASSETS, *analytics.ASSETS, *downstream.ASSETS]
    result = dg.materialize(everything, resources=sample_resources)
    checks = _checks(result)
    for name in (FUNNEL_MATCHES_COUNTS, FUNNEL_RATIOS_WELL_FORMED, OBJECTIVES_MATCH_COUNTS):
        assert checks[name].passed, checks[name].description

    served = LeadsAnalytics(warehouse_path=warehouse_path, lake_uri=lake_uri)
    months = served.count_date_by_month()
    funnel = _read(warehouse_path, FUNNEL_TABLE)
    assert [row["mois"] for row in funnel] == [m.mois for m in months]
    for row, month in zip(funnel, months, strict=True):
        assert row["contact_to_reply_numerator"] == month.date_reponse_prospect
        assert row["contact_to_reply_denominator"] == month.date_prise_contact
    objectives = _read(warehouse_path, OBJECTIVES_TABLE)
    assert [row["event"] for row in objectives] == list(EVENT_COLUMNS)
    assert {row["weeks"] for row in objectives} == {4}
    assert served.ingestion_status().leads_rows > 0

    dg.materialize(everything, resources=sample_resources)
    assert _read(warehouse_path, FUNNEL_TABLE) == funnel
    assert _read(warehouse_path, OBJECTIVES_TABLE) == objectives
    with Warehouse(warehouse_path).read() as con:
        tables = {
            row[0]
            for row in con.execute(
                "SELECT schema_name || '.' || table_name FROM duckdb_tables()"
            ).fetchall()
        }
    assert {WEEKLY_TABLE, MONTHLY_TABLE, FUNNEL_TABLE, OBJECTIVES_TABLE} <= tables


def test_definitions_carry_the_downstream_assets_and_checks():
    from leads_pipeline.definitions import defs

    graph = defs.resolve_asset_graph()
    for asset, upstream in (
        (monthly_funnel_conversion, "monthly_event_counts"),
        (weekly_objectives, "weekly_event_counts"),
    ):
        node = graph.get(asset.key)
        assert node.group_name == "analytics"
        assert dg.AssetKey(upstream) in node.parent_keys
        assert node.automation_condition == follow_upstream()
        assert node.metadata is not None
        assert asset.descriptions_by_key[asset.key]
    check_names = {key.name for key in graph.asset_check_keys}
    assert {
        FUNNEL_MATCHES_COUNTS,
        FUNNEL_RATIOS_WELL_FORMED,
        OBJECTIVES_MATCH_COUNTS,
        OBJECTIVES_WINDOW_COMPLETE,
        OBJECTIVES_WINDOW_RECENT,
    } <= check_names
