"""The Definitions load exactly as ``dagster dev`` loads them, with the contract's names."""

import datetime as dt
import importlib

import dagster as dg
import pyarrow as pa
import pytest
from deltalake import write_deltalake

from leads_pipeline.defs.checks import QUALITY_SHARE_CHECK
from leads_pipeline.defs.resources import LakeResource
from leads_pipeline.settings import ConfigurationError


def load_defs():
    import leads_pipeline.definitions as module

    return importlib.reload(module).defs


def test_definitions_are_loadable_and_named_as_the_contract_says():
    defs = load_defs()
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    groups = {key.to_user_string(): graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert groups["raw_notion_leads"] == "ingestion"
    assert groups["leads"] == "ingestion"
    assert groups["lead_quality_issues"] == "ingestion"
    assert groups["weekly_event_counts"] == "analytics"
    assert groups["monthly_event_counts"] == "analytics"
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.description, f"{key} has no description"
        assert node.kinds, f"{key} has no kinds"
    parents = {
        key.to_user_string(): {p.to_user_string() for p in graph.get(key).parent_keys}
        for key in graph.get_all_asset_keys()
    }
    assert parents["leads"] == {"raw_notion_leads"}
    assert parents["weekly_event_counts"] == {"leads"}
    assert parents["monthly_event_counts"] == {"leads"}
    assert defs.resolve_job_def("sync_leads") is not None
    assert defs.resolve_job_def("refresh_leads") is not None


def test_sample_source_is_the_default(monkeypatch):
    defs = load_defs()
    source = defs.resources["source"]
    assert source.source_name == "sample"


def test_a_notion_variable_without_a_token_fails_naming_it(monkeypatch):
    monkeypatch.setenv("NOTION_DATABASE_ID", "abc")
    with pytest.raises(ConfigurationError, match="NOTION_TOKEN"):
        load_defs()


def test_the_definitions_hand_their_settings_to_the_checks_and_the_freshness_policy(
    monkeypatch, tmp_path
):
    """Loaded once: the threshold is the one at load, whatever the environment when it runs."""
    monkeypatch.setenv("LEADS_QUALITY_ISSUES_MAX_SHARE", "0.25")
    monkeypatch.setenv("LEADS_FRESHNESS_FAIL_MINUTES", "30")
    defs = load_defs()
    monkeypatch.setenv("LEADS_QUALITY_ISSUES_MAX_SHARE", "0.01")
    policy = defs.resolve_asset_graph().get(dg.AssetKey("leads")).freshness_policy
    assert policy.fail_window.to_timedelta() == dt.timedelta(minutes=30)
    assert policy.warn_window is None  # the 60-minute default is not below 30
    lake = LakeResource(uri=str(tmp_path / "lake"))
    write_deltalake(f"{lake.uri}/leads", pa.table({"id": [str(i) for i in range(10)]}))
    write_deltalake(f"{lake.uri}/lead_quality_issues", pa.table({"page_id": ["1", "2"]}))
    [check] = [
        check
        for check in defs.asset_checks
        if QUALITY_SHARE_CHECK in {key.name for key in check.check_keys}
    ]
    result = check(dg.build_asset_check_context(), lake=lake)
    assert result.passed, result.description  # 2 of 10 leads: 20 % ≤ 25 %
    assert result.metadata["threshold_percent"].value == 25.0
    monkeypatch.delenv("LEADS_QUALITY_ISSUES_MAX_SHARE")
    monkeypatch.delenv("LEADS_FRESHNESS_FAIL_MINUTES")
    load_defs()  # as the other tests expect it
