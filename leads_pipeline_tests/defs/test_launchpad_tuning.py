"""Tuning the Notion source without code: by environment variables, and from the launchpad.

- The tuning variables alone tune a real materialization against the fake Notion server (what
  each request looked like is read from the server, what the run did from its events).
- Run config naming one field of the ``source`` resource changes that field and keeps every other
  value: the token's ``EnvVar``, the database id, the other knobs. Checked in process for each
  field, then end to end: ``dagster dev`` (configured by environment variables only) and runs of
  ``sync_leads`` launched through the webserver's GraphQL API, as the launchpad launches them.
  The token, unique to this module, must appear nowhere: not in the launchpad's default config or
  config schema, not on the resource's page, not in the runs' stored config or events, not in any
  file the instance or ``dagster dev`` wrote.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster_shared.serdes import serialize_value

from leads_pipeline.defs.assets.ingestion import raw_notion_leads
from leads_pipeline.defs.resources import LakeResource, build_resources, build_source
from leads_pipeline.settings import load_settings
from leads_pipeline.sources.notion import NotionLeadsSource
from leads_pipeline.sources.sample_data import SAMPLE_DATABASE_ID
from leads_pipeline_tests.fake_notion import FakeNotion, Fault
from leads_pipeline_tests.test_dagster_dev import (
    LAUNCH,
    REPOSITORIES,
    SENSOR_TICKS,
    DagsterDev,
    dagster_dev,
    wait_for_run,
)

TOKEN = f"ntn_launchpad0tuning0{uuid.uuid4().hex}"
PAGES = 40
#: Every knob set away from its default (3, 100, 60, 1800, 60, 10) ...
TUNING_ENV = {
    "NOTION_REQUESTS_PER_SECOND": "4",
    "NOTION_PAGE_SIZE": "50",
    "NOTION_TIMEOUT_SECONDS": "20",
    "NOTION_MAX_RETRY_SECONDS": "30",
    "NOTION_MAX_BACKOFF_SECONDS": "0.01",
    "NOTION_PROGRESS_INTERVAL_SECONDS": "0",
}
#: ... and the source fields' values it stands for.
TUNED = {
    "requests_per_second": 4.0,
    "page_size": 50,
    "timeout_seconds": 20.0,
    "max_retry_seconds": 30.0,
    "max_backoff_seconds": 0.01,
    "progress_interval_seconds": 0.0,
}


class RecordingNotion(FakeNotion):
    """The fake Notion server, also keeping the JSON body of every query it is sent."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.query_bodies: list[dict] = []

    def handle(self, method, raw_path, headers, body):
        if method == "POST" and raw_path.split("?", 1)[0].endswith("/query"):
            with self.lock:
                self.query_bodies.append(json.loads(body))
        return super().handle(method, raw_path, headers, body)

    def take_queries(self) -> tuple[list[dict], list[dict]]:
        """The queries since the last call: (listing queries, probes for the newest edit)."""
        with self.lock:
            bodies, self.query_bodies = self.query_bodies, []
        listing = [b for b in bodies if b["sorts"][0]["direction"] == "ascending"]
        probes = [b for b in bodies if b["sorts"][0]["direction"] == "descending"]
        return listing, probes


@pytest.fixture
def recording_notion():
    fake = RecordingNotion(token=TOKEN)
    fake.add_database()
    with fake:
        yield fake


def _notion_env(fake: FakeNotion) -> dict[str, str]:
    return {
        "LEADS_SOURCE": "notion",
        "NOTION_TOKEN": TOKEN,
        "NOTION_DATABASE_ID": SAMPLE_DATABASE_ID,
        "NOTION_API_BASE_URL": fake.url,
    }


def _set_env(monkeypatch, env: dict[str, str]) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def _raw_metadata(events) -> dict:
    """The metadata of the run's ``raw_notion_leads`` materialization."""
    [materialization] = [
        event.asset_materialization
        for event in events
        if event.is_dagster_event
        and event.dagster_event.is_step_materialization
        and event.asset_materialization.asset_key == dg.AssetKey("raw_notion_leads")
    ]
    return {key: value.value for key, value in materialization.metadata.items()}


def _retry_lines(events) -> list[str]:
    return [event.user_message for event in events if "retrying in" in event.user_message]


# -- (a) environment variables -------------------------------------------------------------------


def _materialize_raw(instance: dg.DagsterInstance, lake_uri: str) -> dg.ExecuteInProcessResult:
    """``raw_notion_leads`` with the resources the definitions build from the environment."""
    resources = build_resources(load_settings())
    return dg.materialize(
        [raw_notion_leads],
        resources={
            "source": resources["source"],
            "property_map": resources["property_map"],
            "lake": LakeResource(uri=lake_uri),
        },
        instance=instance,
        raise_on_error=False,
    )


def test_the_tuning_variables_alone_tune_a_materialization(recording_notion, monkeypatch, lake_uri):
    fake = recording_notion
    fake.seed_sample(PAGES)
    tuning = {
        "NOTION_PAGE_SIZE": "7",
        "NOTION_REQUESTS_PER_SECOND": "0",
        "NOTION_TIMEOUT_SECONDS": "1",
        "NOTION_MAX_BACKOFF_SECONDS": "0.01",
        "NOTION_PROGRESS_INTERVAL_SECONDS": "0",
    }
    _set_env(monkeypatch, {**_notion_env(fake), **tuning})
    # The first query answers after 3 s, past the 1 s timeout: it is retried.
    slow = fake.inject(Fault("slow", route="query", delay=3))

    with dg.DagsterInstance.ephemeral() as instance:
        result = _materialize_raw(instance, lake_uri)
        assert result.success
        events = instance.all_logs(result.run_id)
    metadata = _raw_metadata(events)
    listing, probes = fake.take_queries()
    assert metadata["pages_fetched"] == PAGES
    assert len(listing) >= math.ceil(PAGES / 7) and {body["page_size"] for body in listing} == {7}
    assert metadata["pacing_wait_seconds"] == 0  # paced at 3 per second by default
    # A progress line (estimated with a probe for the newest edit) during the listing, besides
    # the last one: with the default 10 s, a listing of about a second shows none.
    progress = [event for event in events if "Notion listing:" in event.user_message]
    assert probes and len(progress) >= 2
    # Timed out after 1 s (not 60), then retried after at most 0.01 s (not 0.5 s to 1 s).
    assert slow.hits == 1
    retries = _retry_lines(events)
    assert retries and all("timeout" in line for line in retries), retries
    assert all(re.search(r"retrying in 0\.0 s", line) for line in retries), retries


def test_a_zero_retry_budget_from_the_environment_fails_at_the_first_error(
    recording_notion, monkeypatch, lake_uri
):
    fake = recording_notion
    fake.seed_sample(5)
    _set_env(monkeypatch, {**_notion_env(fake), "NOTION_MAX_RETRY_SECONDS": "0"})
    fake.inject(Fault("status", route="query", status=503))
    with dg.DagsterInstance.ephemeral() as instance:
        result = _materialize_raw(instance, lake_uri)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "max_retry_seconds=0)" in failure.event_specific_data.error.to_string()
    assert fake.counts["query"] == 1  # not retried


# -- (b) one field from run config, in process ---------------------------------------------------

OTHER_URL = "http://127.0.0.1:9"
FROM_ENV = {"token": TOKEN, "database_id": SAMPLE_DATABASE_ID, "api_base_url": OTHER_URL, **TUNED}


def _reading_job(source) -> dg.JobDefinition:
    """A job whose one asset returns the values the run's ``source`` holds."""

    @dg.asset
    def reading(source: NotionLeadsSource) -> dict:
        return {name: getattr(source, name) for name in FROM_ENV}

    defs = dg.Definitions(assets=[reading], resources={"source": source})
    return defs.resolve_implicit_global_asset_job_def()


@pytest.mark.parametrize(
    ("field", "given", "value"),
    [
        ("requests_per_second", 0, 0.0),
        ("page_size", 7, 7),
        ("timeout_seconds", 5, 5.0),
        ("max_retry_seconds", 0, 0.0),
        ("max_backoff_seconds", 2.5, 2.5),
        ("progress_interval_seconds", 60, 60.0),
        ("database_id", "another-database", "another-database"),
        ("token", {"env": "LEADS_TEST_OTHER_TOKEN"}, "ntn_other"),
    ],
)
def test_run_config_naming_one_field_keeps_every_other_value(monkeypatch, field, given, value):
    env = {
        "NOTION_TOKEN": TOKEN,
        "NOTION_DATABASE_ID": SAMPLE_DATABASE_ID,
        "NOTION_API_BASE_URL": OTHER_URL,
        "LEADS_TEST_OTHER_TOKEN": "ntn_other",
        **TUNING_ENV,
    }
    _set_env(monkeypatch, env)
    job = _reading_job(build_source(load_settings()))
    assert job.execute_in_process().output_for_node("reading") == FROM_ENV
    run_config = {"resources": {"source": {"config": {field: given}}}}
    result = job.execute_in_process(run_config=run_config)
    assert result.output_for_node("reading") == {**FROM_ENV, field: value}


def test_an_out_of_range_value_from_run_config_fails_the_run_naming_the_field(monkeypatch):
    monkeypatch.setenv("NOTION_TOKEN", TOKEN)
    settings = load_settings({"NOTION_TOKEN": TOKEN, "NOTION_DATABASE_ID": SAMPLE_DATABASE_ID})
    job = _reading_job(build_source(settings))
    run_config = {"resources": {"source": {"config": {"page_size": 500}}}}
    result = job.execute_in_process(run_config=run_config, raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "RESOURCE_INIT_FAILURE"]
    error = failure.event_specific_data.error.to_string()
    assert "page_size" in error and "less than or equal to 100" in error
    assert TOKEN not in error


# -- (b) end to end: the launchpad's GraphQL API on dagster dev ---------------------------------

DEFAULT_CONFIG = """
query Defaults($selector: PipelineSelector!) {
  runConfigSchemaOrError(selector: $selector) {
    __typename
    ... on RunConfigSchema {
      rootDefaultYaml
      allConfigTypes {
        key
        ... on CompositeConfigType { fields { name isRequired defaultValueAsJson } }
      }
    }
  }
}
"""

VALIDATE = """
query Validate($selector: PipelineSelector!, $runConfigData: RunConfigData) {
  runConfigSchemaOrError(selector: $selector) {
    ... on RunConfigSchema {
      isRunConfigValid(runConfigData: $runConfigData) {
        __typename
        ... on RunConfigValidationInvalid { errors { message } }
      }
    }
  }
}
"""

RESOURCE = """
query Resource($selector: ResourceSelector!) {
  topLevelResourceDetailsOrError(resourceSelector: $selector) {
    __typename
    ... on ResourceDetails {
      resourceType
      configuredValues { key value type }
      configFields { name defaultValueAsJson }
    }
  }
}
"""

RUN_CONFIG = """
query Run($runId: ID!) { runOrError(runId: $runId) { ... on Run { runConfigYaml } } }
"""


def _selectors(dev: DagsterDev) -> tuple[dict, dict]:
    """The repository's selector and the ``sync_leads`` job's."""
    [repository] = dev.graphql(REPOSITORIES)["repositoriesOrError"]["nodes"]
    where = {
        "repositoryLocationName": repository["location"]["name"],
        "repositoryName": repository["name"],
    }
    return where, {**where, "pipelineName": "sync_leads"}


def _wait_for_first_sensor_tick(dev: DagsterDev, where: dict, timeout: float = 90) -> None:
    """The sensor (running by default on Notion) ticks once at start, on an empty database:
    seeding the pages after that tick keeps it from launching a sync of its own."""
    selector = {**where, "sensorName": "notion_changes_sensor"}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = dev.graphql(SENSOR_TICKS, selector=selector)["sensorOrError"]["sensorState"]
        if any(tick["status"] != "STARTED" for tick in state["ticks"]):
            assert all(tick["status"] == "SKIPPED" for tick in state["ticks"]), state
            return
        time.sleep(1)
    pytest.fail(f"the sensor did not tick within {timeout} s:\n{dev.output()}")


def _check_launchpad(dev: DagsterDev, where: dict, job: dict, api_url: str) -> str:
    """The default config holds every value from the environment, the token as ``{env: ...}``.

    Returns:
        Everything the launchpad and the resource's page were sent, for the token check.
    """
    schema = dev.graphql(DEFAULT_CONFIG, selector=job)["runConfigSchemaOrError"]
    assert schema["__typename"] == "RunConfigSchema", schema
    shown = yaml.safe_load(schema["rootDefaultYaml"])["resources"]["source"]["config"]
    assert str(shown.pop("api_version")) == "2025-09-03"  # unquoted: PyYAML reads a date
    assert shown == {**FROM_ENV, "token": {"env": "NOTION_TOKEN"}, "api_base_url": api_url}

    resource = dev.graphql(RESOURCE, selector={**where, "resourceName": "source"})[
        "topLevelResourceDetailsOrError"
    ]
    assert resource["__typename"] == "ResourceDetails", resource
    assert resource["resourceType"] == "leads_pipeline.sources.notion.NotionLeadsSource"
    values = {item["key"]: item for item in resource["configuredValues"]}
    assert values["token"]["type"] == "ENV_VAR" and values["token"]["value"] == "NOTION_TOKEN"
    assert values["page_size"]["value"] == "50"
    return json.dumps([schema, resource])


def _launch(dev: DagsterDev, job: dict, run_config: dict) -> str:
    """Validates ``run_config`` and launches it as the launchpad does; returns the run's id
    once it succeeded."""
    validity = dev.graphql(VALIDATE, selector=job, runConfigData=run_config)
    checked = validity["runConfigSchemaOrError"]["isRunConfigValid"]
    assert checked["__typename"] == "PipelineConfigValidationValid", checked
    launched = dev.graphql(
        LAUNCH,
        executionParams={
            "selector": job,
            "mode": "default",
            "runConfigData": run_config,
            "executionMetadata": {"tags": []},
        },
    )["launchPipelineExecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    assert wait_for_run(dev, run_id) == "SUCCESS", dev.output()
    return run_id


def test_one_field_from_the_launchpad_keeps_every_other_value(tmp_path, recording_notion):
    fake = recording_notion
    env = {
        **_notion_env(fake),
        "LEADS_SENSOR_INTERVAL_SECONDS": "86400",  # one tick at start, then none in this test
        **TUNING_ENV,
    }
    with dagster_dev(tmp_path, env) as dev:
        where, job = _selectors(dev)
        _wait_for_first_sensor_tick(dev, where)
        fake.seed_sample(PAGES)
        fake.take_queries()
        shown = [_check_launchpad(dev, where, job, fake.url)]

        # 1. Only page_size: the first sync lists every page, 7 per query, paced at the
        #    environment's 4 requests per second, reporting progress during the listing.
        first_config = {"resources": {"source": {"config": {"page_size": 7}}}}
        first = _launch(dev, job, first_config)
        listing, probes = fake.take_queries()
        assert [body["page_size"] for body in listing] == [7] * math.ceil(PAGES / 7)
        assert probes, "NOTION_PROGRESS_INTERVAL_SECONDS=0 was lost: no progress probe"

        # 2. Only requests_per_second: pacing off; the environment's page size (50) and backoff
        #    cap (0.01 s, against 0.5 s to 1 s for a first retry by default) are kept.
        fake.inject(Fault("status", route="query", status=503))
        second_config = {"resources": {"source": {"config": {"requests_per_second": 0}}}}
        second = _launch(dev, job, second_config)
        listing, probes = fake.take_queries()
        assert listing and {body["page_size"] for body in listing} == {50}
        assert probes

        for run_id in (first, second):
            shown.append(dev.graphql(RUN_CONFIG, runId=run_id)["runOrError"]["runConfigYaml"])

    home = tmp_path / "dagster_home"  # where dagster_dev keeps the instance
    with dg.DagsterInstance.from_config(str(home)) as instance:
        stored = {
            run_id: (instance.get_run_by_id(run_id).run_config, instance.all_logs(run_id))
            for run_id in (first, second)
        }
    assert stored[first][0] == first_config and stored[second][0] == second_config

    first_events, second_events = stored[first][1], stored[second][1]
    assert _raw_metadata(first_events)["pages_fetched"] == PAGES
    assert _raw_metadata(first_events)["pacing_wait_seconds"] > 0
    assert _raw_metadata(second_events)["pacing_wait_seconds"] == 0
    assert _raw_metadata(second_events)["retries"] == 1
    retries = _retry_lines(second_events)
    assert len(retries) == 1 and re.search(r"retrying in 0\.0 s", retries[0]), retries

    _assert_token_nowhere(shown, stored, home, dev.log)


def _assert_token_nowhere(shown: list[str], stored: dict, home: Path, dev_log: Path) -> None:
    """Not in what the UI was sent, the runs' stored config and events, nor any file written."""
    for text in shown:
        assert TOKEN not in text
    for run_config, events in stored.values():
        assert TOKEN not in json.dumps(run_config)
        assert TOKEN not in serialize_value(events)
    written = [path for path in [dev_log, *home.rglob("*")] if path.is_file()]
    assert any(path.suffix == ".db" for path in written)  # the run and event storage included
    leaked = [str(path) for path in written if TOKEN.encode() in path.read_bytes()]
    assert not leaked, leaked
