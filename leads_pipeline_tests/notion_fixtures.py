"""Fixtures around the fake Notion server: a live server per test and resources pointing at it."""

from __future__ import annotations

import dagster as dg
import pytest

from leads_pipeline.defs.resources import LakeResource, PropertyMapResource, WarehouseResource
from leads_pipeline.sources.notion import NotionLeadsSource
from leads_pipeline.sources.sample_data import SAMPLE_DATABASE_ID
from leads_pipeline_tests.fake_notion import DEFAULT_TOKEN, FakeNotion


@pytest.fixture
def fake_notion():
    """A fake Notion API on 127.0.0.1 (ephemeral port) holding the sample database, no pages."""
    fake = FakeNotion()
    fake.add_database()
    with fake:
        yield fake


@pytest.fixture
def notion_env(fake_notion, monkeypatch):
    """The environment variables a user would set, pointing at the fake server."""
    monkeypatch.setenv("NOTION_TOKEN", DEFAULT_TOKEN)
    monkeypatch.setenv("NOTION_DATABASE_ID", SAMPLE_DATABASE_ID)
    monkeypatch.setenv("NOTION_API_BASE_URL", fake_notion.url)
    return fake_notion


def notion_source(fake: FakeNotion, **overrides) -> NotionLeadsSource:
    """A Notion source on ``fake``, token read through ``EnvVar`` (set it with ``notion_env``),
    unpaced and with short retries unless overridden."""
    options = {
        "token": dg.EnvVar("NOTION_TOKEN"),
        "database_id": SAMPLE_DATABASE_ID,
        "api_base_url": fake.url,
        "requests_per_second": 0,
        "max_retry_seconds": 20,
        "max_backoff_seconds": 0.2,
        "timeout_seconds": 5,
    }
    options.update(overrides)
    return NotionLeadsSource(**options)


@pytest.fixture
def notion_resources(notion_env, lake_uri, warehouse_path) -> dict:
    """Resources for a run reading the fake server into a temporary lake and warehouse."""
    return {
        "source": notion_source(notion_env),
        "lake": LakeResource(uri=lake_uri),
        "warehouse": WarehouseResource(path=warehouse_path),
        "property_map": PropertyMapResource(),
    }
