"""Every asset check, passing and failing, on crafted tables; and the freshness policy of leads."""

import asyncio
import datetime as dt
import time

import dagster as dg
import pyarrow as pa
import pytest
from deltalake import write_deltalake

from leads_pipeline.definitions import defs
from leads_pipeline.defs.checks import (
    CHECKS,
    HISTORY_CHECK,
    LEADS_ID_CHECK,
    QUALITY_SHARE_CHECK,
    RECONCILE_CHECK,
    RECONCILE_CHECKS,
    SCHEMA_CHANGE_CHECK,
    leads_freshness_policy,
    leads_id_unique_and_not_null,
    quality_max_share,
    quality_share_check,
    share_of_leads_with_issues,
)
from leads_pipeline.defs.resources import LakeResource, WarehouseResource
from leads_pipeline.settings import ConfigurationError
from leads_pipeline.storage.warehouse import Warehouse, compute_event_counts
from leads_pipeline.tables import EVENT_COLUMNS, MONTH, WEEK

D = dt.date
WEEKLY_TABLE, MONTHLY_TABLE = WEEK.table(), MONTH.table()
weekly_counts_reconcile = RECONCILE_CHECKS[WEEK.name]
monthly_counts_reconcile = RECONCILE_CHECKS[MONTH.name]


def leads_table(rows: list[dict]) -> pa.Table:
    """A crafted ``leads`` table: ``id`` and the five event dates (missing ones null)."""
    return pa.table(
        {
            "id": pa.array([r.get("id") for r in rows], pa.string()),
            **{c: pa.array([r.get(c) for r in rows], pa.date32()) for c in EVENT_COLUMNS},
        }
    )


LEADS = [
    {"id": "a", "date_prise_contact": D(2024, 12, 30), "date_relance": D(2025, 1, 20)},
    {"id": "b", "date_prise_contact": D(2025, 1, 5), "date_appel_booke": D(2025, 2, 3)},
    {"id": "c", "date_prise_contact": D(2025, 2, 28), "date_reponse_prospect": D(2025, 3, 1)},
    {"id": "d"},
]


@pytest.fixture
def lake(lake_uri) -> LakeResource:
    return LakeResource(uri=lake_uri)


@pytest.fixture
def warehouse(warehouse_path) -> WarehouseResource:
    return WarehouseResource(path=warehouse_path)


def write_leads(lake: LakeResource, rows: list[dict], mode: str = "overwrite") -> None:
    write_deltalake(f"{lake.uri}/leads", leads_table(rows), mode=mode)


def publish_counts(warehouse: WarehouseResource, rows: list[dict]) -> None:
    table = leads_table(rows)
    Warehouse(warehouse.path).publish(
        {
            WEEKLY_TABLE: compute_event_counts(table, "week"),
            MONTHLY_TABLE: compute_event_counts(table, "month"),
        }
    )


def run_check(check, instance, **resources) -> dg.AssetCheckResult:
    context = dg.build_asset_check_context(instance=instance)
    return check(context, **resources)


def test_checks_are_declared_on_their_assets_with_the_right_blocking():
    specs = {
        (spec.asset_key.to_user_string(), spec.name): spec
        for check in CHECKS
        for spec in check.check_specs
    }
    assert set(specs) == {
        ("leads", LEADS_ID_CHECK),
        ("leads", SCHEMA_CHANGE_CHECK),
        ("weekly_event_counts", RECONCILE_CHECK),
        ("monthly_event_counts", RECONCILE_CHECK),
        ("lead_quality_issues", QUALITY_SHARE_CHECK),
        ("lead_history", HISTORY_CHECK),
    }
    assert specs["leads", LEADS_ID_CHECK].blocking
    assert specs["lead_history", HISTORY_CHECK].blocking
    assert specs["weekly_event_counts", RECONCILE_CHECK].blocking
    assert specs["monthly_event_counts", RECONCILE_CHECK].blocking
    assert not specs["lead_quality_issues", QUALITY_SHARE_CHECK].blocking
    assert not specs["leads", SCHEMA_CHANGE_CHECK].blocking
    assert set(specs) <= {(k.asset_key.to_user_string(), k.name) for k in _check_keys()}


def _check_keys():
    return defs.resolve_asset_graph().asset_check_keys


# -- leads.id ---------------------------------------------------------------------------------


def test_id_check_passes_on_unique_ids(lake):
    write_leads(lake, LEADS)
    result = leads_id_unique_and_not_null(dg.build_asset_check_context(), lake=lake)
    assert result.passed
    assert result.metadata["rows"].value == 4


def test_id_check_fails_on_duplicates_and_nulls(lake):
    write_leads(lake, [*LEADS, {"id": "b"}, {"id": None}, {"id": "b"}, {"id": "c"}])
    result = leads_id_unique_and_not_null(dg.build_asset_check_context(), lake=lake)
    assert not result.passed
    assert result.metadata["null_ids"].value == 1
    assert result.metadata["duplicated_ids"].value == 2
    assert "e.g. b, c" in result.description


def test_id_check_fails_when_the_table_is_missing(lake):
    result = leads_id_unique_and_not_null(dg.build_asset_check_context(), lake=lake)
    assert not result.passed
    assert "does not exist" in result.description


# -- counts reconcile -------------------------------------------------------------------------


@pytest.mark.parametrize("check", [weekly_counts_reconcile, monthly_counts_reconcile])
def test_counts_reconcile_with_leads(check, lake, warehouse):
    write_leads(lake, LEADS)
    publish_counts(warehouse, LEADS)
    with dg.instance_for_test() as instance:
        result = run_check(check, instance, lake=lake, warehouse=warehouse)
    assert result.passed, result.description
    assert result.metadata["date_prise_contact/counts"].value == 3
    assert result.metadata["date_prise_contact/leads"].value == 3
    # Both grains are reported, so weeks == months == leads is visible in one place.
    other = "monthly_event_counts" if check is weekly_counts_reconcile else "weekly_event_counts"
    assert result.metadata[f"date_prise_contact/{other}"].value == 3


@pytest.mark.parametrize(
    ("check", "table"),
    [(weekly_counts_reconcile, WEEKLY_TABLE), (monthly_counts_reconcile, MONTHLY_TABLE)],
)
def test_counts_that_lost_an_event_fail(check, table, lake, warehouse):
    write_leads(lake, LEADS)
    publish_counts(warehouse, LEADS)
    with Warehouse(warehouse.path).read() as con:
        tampered = con.sql(
            f"SELECT * REPLACE (CASE WHEN row_number() OVER () = 1 THEN date_relance + 1 "
            f"ELSE date_relance END AS date_relance) FROM {table}"
        ).to_arrow_table()
    Warehouse(warehouse.path).publish({table: tampered})
    with dg.instance_for_test() as instance:
        result = run_check(check, instance, lake=lake, warehouse=warehouse)
    assert not result.passed
    assert "date_relance: 2 counted vs 1 in leads" in result.description


def test_counts_behind_leads_fail_unless_computed_from_that_version(lake, warehouse):
    """The check compares with the leads version the counts were computed from."""
    write_leads(lake, LEADS)
    publish_counts(warehouse, LEADS)
    write_leads(lake, [{"id": "e", "date_prise_contact": D(2025, 3, 3)}], mode="append")
    with dg.instance_for_test() as instance:
        stale = run_check(weekly_counts_reconcile, instance, lake=lake, warehouse=warehouse)
        assert not stale.passed  # no record of which version: compared with the newest leads
        instance.report_runless_asset_event(
            dg.AssetMaterialization("weekly_event_counts", metadata={"leads_delta_version": 0})
        )
        pinned = run_check(weekly_counts_reconcile, instance, lake=lake, warehouse=warehouse)
    assert pinned.passed, pinned.description
    assert pinned.metadata["leads_delta_version"].value == "0"  # text: not plotted


def test_counts_check_fails_when_the_warehouse_is_missing(lake, warehouse):
    write_leads(lake, LEADS)
    with dg.instance_for_test() as instance:
        result = run_check(monthly_counts_reconcile, instance, lake=lake, warehouse=warehouse)
    assert not result.passed
    assert "does not exist" in result.description


# -- share of leads with quality issues --------------------------------------------------------


def write_issues(lake: LakeResource, page_ids: list[str]) -> None:
    write_deltalake(
        f"{lake.uri}/lead_quality_issues",
        pa.table(
            {
                "page_id": pa.array(page_ids, pa.string()),
                "column": pa.array(["email"] * len(page_ids), pa.string()),
            }
        ),
        mode="overwrite",
    )


def test_quality_share_passes_under_the_threshold(lake):
    write_leads(lake, [{"id": str(i)} for i in range(40)])
    write_issues(lake, ["1", "1", "gone"])  # one lead (twice); issues of deleted leads ignored
    result = share_of_leads_with_issues(dg.build_asset_check_context(), lake=lake)
    assert result.passed
    assert result.severity == dg.AssetCheckSeverity.WARN
    assert result.metadata["leads_with_issues"].value == 1
    assert result.metadata["leads_with_issues_percent"].value == 2.5


def test_quality_share_warns_over_the_threshold(lake):
    write_leads(lake, [{"id": str(i)} for i in range(10)])
    write_issues(lake, ["1", "2"])
    result = share_of_leads_with_issues(dg.build_asset_check_context(), lake=lake)
    assert not result.passed
    assert result.severity == dg.AssetCheckSeverity.WARN
    assert "2 of 10 leads (20.0%)" in result.description


def test_quality_threshold_is_configurable(lake):
    write_leads(lake, [{"id": str(i)} for i in range(10)])
    write_issues(lake, ["1", "2"])
    assert not share_of_leads_with_issues(
        dg.build_asset_check_context(), lake=lake
    ).passed  # 20 % > 5 % by default
    configured = quality_max_share({"LEADS_QUALITY_ISSUES_MAX_SHARE": "0.25"})
    assert quality_share_check(configured)(dg.build_asset_check_context(), lake=lake).passed
    for bad in ("1.5", "-0.1", "many"):
        with pytest.raises(ConfigurationError, match="LEADS_QUALITY_ISSUES_MAX_SHARE"):
            quality_max_share({"LEADS_QUALITY_ISSUES_MAX_SHARE": bad})


# -- freshness of leads -----------------------------------------------------------------------


def test_freshness_window_is_configurable():
    policy = leads_freshness_policy({})
    assert policy.fail_window.to_timedelta() == dt.timedelta(hours=2)
    assert policy.warn_window.to_timedelta() == dt.timedelta(hours=1)
    custom = leads_freshness_policy(
        {"LEADS_FRESHNESS_FAIL_MINUTES": "30", "LEADS_FRESHNESS_WARN_MINUTES": "0"}
    )
    assert custom.fail_window.to_timedelta() == dt.timedelta(minutes=30)
    assert custom.warn_window is None
    assert leads_freshness_policy({"LEADS_FRESHNESS_FAIL_MINUTES": "45"}).warn_window is None
    for env in (
        {"LEADS_FRESHNESS_FAIL_MINUTES": "0"},
        {"LEADS_FRESHNESS_FAIL_MINUTES": "soon"},
        {"LEADS_FRESHNESS_WARN_MINUTES": "150"},
    ):
        with pytest.raises(ConfigurationError, match="LEADS_FRESHNESS_"):
            leads_freshness_policy(env)


def test_leads_carries_the_freshness_policy():
    node = defs.resolve_asset_graph().get(dg.AssetKey("leads"))
    assert node.freshness_policy == leads_freshness_policy()


def test_freshness_passes_then_warns_then_fails():
    """Evaluated as the daemon does (its evaluator has no public entry point)."""
    from dagster._core.definitions.freshness import FreshnessState
    from dagster._core.definitions.freshness_evaluator import TimeWindowFreshnessPolicyEvaluator
    from dagster._core.test_utils import BasicLoadingContext, freeze_time

    node = defs.resolve_asset_graph().get(dg.AssetKey("leads"))
    evaluator = TimeWindowFreshnessPolicyEvaluator()

    def state(instance):
        context = BasicLoadingContext(instance)
        return asyncio.run(evaluator.evaluate_freshness(context=context, node=node))

    with dg.instance_for_test() as instance:
        assert state(instance) == FreshnessState.UNKNOWN
        instance.report_runless_asset_event(dg.AssetMaterialization("leads"))
        now = time.time()
        assert state(instance) == FreshnessState.PASS
        with freeze_time(now + 90 * 60):
            assert state(instance) == FreshnessState.WARN
        with freeze_time(now + 3 * 60 * 60):
            assert state(instance) == FreshnessState.FAIL
