"""Declarative automation: the counts follow leads, never past a failed blocking check."""

import dagster as dg
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from leads_pipeline.definitions import defs as project_defs
from leads_pipeline.defs.assets import analytics, downstream, ingestion
from leads_pipeline.defs.checks import CHECKS, LEADS_ID_CHECK

COUNTS = {dg.AssetKey("weekly_event_counts"), dg.AssetKey("monthly_event_counts")}
LEADS_CHECK = dg.AssetCheckKey(dg.AssetKey("leads"), LEADS_ID_CHECK)


ASSETS = [*ingestion.ASSETS, *analytics.ASSETS, *downstream.ASSETS]


@pytest.fixture
def defs(sample_resources) -> dg.Definitions:
    return dg.Definitions(assets=ASSETS, asset_checks=CHECKS, resources=sample_resources)


def run(defs: dg.Definitions, instance, selection: dg.AssetSelection) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [*ASSETS, *CHECKS],
        selection=selection,
        instance=instance,
        resources=defs.resources,
        raise_on_error=False,
    )


def requested(result) -> set[dg.AssetKey]:
    return {
        key
        for r in result.results
        if r.true_subset.size
        for key in [r.key]
        if isinstance(key, dg.AssetKey)
    }


def test_the_automation_sensor_runs_by_default_over_every_asset():
    sensor = next(s for s in project_defs.sensors if s.name == "leads_automation_sensor")
    assert isinstance(sensor, dg.AutomationConditionSensorDefinition)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.description.startswith("Always running by default")
    assert "automation conditions" in sensor.description
    graph = project_defs.resolve_asset_graph()
    for key in COUNTS:
        condition = graph.get(key).automation_condition
        assert condition is not None
        assert "blocking" in condition.get_label() or "blocking" in str(condition)


def test_counts_follow_leads_once_its_checks_pass(defs, sample_resources):
    with dg.instance_for_test() as instance:
        # Nothing materialized: nothing to follow yet (leads is missing).
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        assert not requested(result) & COUNTS

        # A whole sync handles the counts in the same run: automation adds nothing.
        assert run(defs, instance, dg.AssetSelection.all()).success
        result = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, cursor=result.cursor
        )
        assert not requested(result)

        # leads alone is rebuilt (e.g. from the UI), its checks pass: the counts follow.
        ingest = dg.AssetSelection.assets("raw_notion_leads", "leads", "lead_quality_issues")
        assert run(defs, instance, ingest).success
        result = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, cursor=result.cursor
        )
        assert requested(result) >= COUNTS


def _duplicate_a_lead(lake_uri: str) -> pa.Table:
    table = DeltaTable(f"{lake_uri}/leads").to_pyarrow_table()
    write_deltalake(f"{lake_uri}/leads", table.slice(0, 1), mode="append")
    return table


def test_a_failed_blocking_check_on_leads_holds_the_counts_back(defs, lake_uri):
    with dg.instance_for_test() as instance:
        assert run(defs, instance, dg.AssetSelection.all()).success
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance)

        # leads gets updated, and its blocking check fails on a duplicated id.
        original = _duplicate_a_lead(lake_uri)
        instance.report_runless_asset_event(dg.AssetMaterialization("leads"))
        checked = run(defs, instance, dg.AssetSelection.checks(LEADS_CHECK))
        [evaluation] = checked.get_asset_check_evaluations()
        assert not evaluation.passed
        result = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, cursor=result.cursor
        )
        assert not requested(result) & COUNTS

        # Fixed: the check passes again and the counts catch up on the pending update.
        write_deltalake(f"{lake_uri}/leads", original, mode="overwrite")
        checked = run(defs, instance, dg.AssetSelection.checks(LEADS_CHECK))
        assert checked.get_asset_check_evaluations()[0].passed
        result = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, cursor=result.cursor
        )
        assert requested(result) >= COUNTS


def test_a_failed_blocking_check_stops_the_counts_within_a_run(defs, lake_uri):
    with dg.instance_for_test() as instance:
        assert run(defs, instance, dg.AssetSelection.all()).success
        _duplicate_a_lead(lake_uri)
        selection = dg.AssetSelection.checks(LEADS_CHECK) | dg.AssetSelection.assets(
            "weekly_event_counts"
        )
        result = run(defs, instance, selection)
        assert not result.success
        assert "weekly_event_counts" not in {e.step_key for e in result.get_step_success_events()}
        materialized = {e.asset_key for e in result.get_asset_materialization_events()}
        assert dg.AssetKey("weekly_event_counts") not in materialized
