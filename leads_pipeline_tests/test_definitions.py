"""The Definitions load exactly as ``dagster dev`` loads them, with the contract's names."""

import importlib

import dagster as dg
import pytest

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
