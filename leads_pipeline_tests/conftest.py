"""Shared fixtures: temporary lakes and warehouses, and resources pointing at them."""

import pytest

from leads_pipeline.resources import LakeResource, PropertyMapResource, WarehouseResource
from leads_pipeline.settings import NOTION_TUNING_KNOBS
from leads_pipeline.sources.sample import SampleLeadsSource

pytest_plugins = ["leads_pipeline_tests.notion_fixtures"]


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch, tmp_path):
    """No test reads the developer's configuration or writes into the working directory."""
    for name in (
        "LEADS_SOURCE",
        "NOTION_TOKEN",
        "NOTION_DATABASE_ID",
        "NOTION_DATA_SOURCE_ID",
        "NOTION_API_BASE_URL",
        "NOTION_API_VERSION",
        "LEADS_LAKE_URI",
        "LEADS_WAREHOUSE_PATH",
        "LEADS_PROPERTY_MAP",
        *(knob.variable for knob in NOTION_TUNING_KNOBS),
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def lake_uri(tmp_path) -> str:
    return str(tmp_path / "lake")


@pytest.fixture
def warehouse_path(tmp_path) -> str:
    return str(tmp_path / "warehouse.duckdb")


@pytest.fixture
def sample_resources(lake_uri, warehouse_path) -> dict:
    """Resources for a run on 2,000 sample leads in a temporary lake and warehouse."""
    return {
        "source": SampleLeadsSource(),
        "lake": LakeResource(uri=lake_uri),
        "warehouse": WarehouseResource(path=warehouse_path),
        "property_map": PropertyMapResource(),
    }
