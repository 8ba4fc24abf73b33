"""Shared fixtures: temporary lakes and warehouses, and resources pointing at them."""

import os

import pytest

from leads_pipeline.defs.resources import LakeResource, PropertyMapResource, WarehouseResource
from leads_pipeline.settings import VARIABLES
from leads_pipeline.sources.sample import SampleLeadsSource

pytest_plugins = ["leads_pipeline_tests.notion_fixtures"]


def pytest_configure(config):
    """Clears the developer's settings before any test module is imported.

    Some modules build the definitions when imported (``from leads_pipeline.definitions import
    defs``), before any fixture runs; subprocesses the tests start inherit the cleared environment.
    """
    for name in VARIABLES:
        os.environ.pop(name, None)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch, tmp_path):
    """No test reads the developer's configuration or writes into the working directory.

    Every variable the settings read (:data:`leads_pipeline.settings.VARIABLES`) is unset, also
    after a test that set one.
    """
    for name in VARIABLES:
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
