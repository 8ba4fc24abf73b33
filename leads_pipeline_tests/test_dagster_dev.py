"""End to end like a user: ``dagster dev`` (webserver and daemon) driven through its GraphQL API.

Each test starts ``dagster dev`` in a temporary ``DAGSTER_HOME`` holding the repository's
``dagster.yaml``, with the lake and the warehouse in a temporary folder, and talks to it only the
way the UI does. Everything is bounded by timeouts, and the whole process group is killed on
teardown.
"""

import contextlib
import datetime as dt
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from deltalake import DeltaTable

from leads_pipeline.sources.sample_data import SAMPLE_DATABASE_ID
from leads_pipeline.storage.warehouse import Warehouse
from leads_pipeline.tables import WEEK
from leads_pipeline_tests.fake_notion import DEFAULT_TOKEN

WEEKLY_TABLE = WEEK.table()

ROOT = Path(__file__).resolve().parents[1]
DAGSTER = Path(sys.executable).with_name("dagster")
STARTUP_TIMEOUT = 60
RUN_TIMEOUT = 90


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class DagsterDev:
    """A running ``dagster dev`` and where its data goes."""

    url: str
    lake: Path
    warehouse: Path
    log: Path

    def graphql(self, query: str, **variables) -> dict:
        answer = httpx.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables}, timeout=30
        )
        answer.raise_for_status()
        body = answer.json()
        assert "errors" not in body, body["errors"]
        return body["data"]

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]


REPOSITORIES = """
{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } } } } }
"""

ASSET_KEYS = """
{ assetNodes { assetKey { path } } }
"""

LAUNCH = """
mutation Launch($executionParams: ExecutionParams!) {
  launchPipelineExecution(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message stack }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""

RUN_STATUS = """
query Run($runId: ID!) { runOrError(runId: $runId) { ... on Run { status } } }
"""

RUNS = """
query Runs($filter: RunsFilter!) {
  runsOrError(filter: $filter) {
    ... on Runs { results { runId status tags { key value } } }
  }
}
"""

LATEST_METADATA = """
query Asset($key: AssetKeyInput!) {
  assetOrError(assetKey: $key) {
    ... on Asset {
      assetMaterializations(limit: 1) {
        metadataEntries {
          label
          ... on MarkdownMetadataEntry { mdStr }
          ... on IntMetadataEntry { intValue }
        }
      }
    }
  }
}
"""

SENSOR_TICKS = """
query Sensor($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    ... on Sensor { sensorState { status ticks(limit: 20) { status skipReason error { message } } } }
  }
}
"""


@contextlib.contextmanager
def dagster_dev(tmp_path: Path, env: dict[str, str]) -> Iterator[DagsterDev]:
    """Starts ``dagster dev`` on a free port and yields once its code location is loaded."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    port = _free_port()
    dev = DagsterDev(
        url=f"http://127.0.0.1:{port}",
        lake=tmp_path / "lake",
        warehouse=tmp_path / "warehouse.duckdb",
        log=tmp_path / "dagster_dev.log",
    )
    process_env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "LEADS_LAKE_URI": str(dev.lake),
        "LEADS_WAREHOUSE_PATH": str(dev.warehouse),
        # The scheduler must not fire on its own during the test (crons far from now).
        "LEADS_SYNC_CRON": "0 3 1 1 *",
        "LEADS_REFRESH_CRON": "0 3 1 1 *",
        "LEADS_MAINTAIN_CRON": "0 3 1 1 *",
        **env,
    }
    with open(dev.log, "wb") as log:
        process = subprocess.Popen(
            [str(DAGSTER), "dev", "-m", "leads_pipeline.definitions", "-p", str(port)],
            cwd=tmp_path,
            env=process_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"dagster dev exited with {process.returncode}:\n{dev.output()}")
            with contextlib.suppress(httpx.HTTPError, AssertionError, KeyError, TypeError):
                nodes = dev.graphql(REPOSITORIES)["repositoriesOrError"]["nodes"]
                if nodes:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"dagster dev did not load the code location:\n{dev.output()}")
            time.sleep(1)
        yield dev
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):  # run workers left behind, if any
            os.killpg(process.pid, signal.SIGKILL)


def wait_for_run(dev: DagsterDev, run_id: str, timeout: float = RUN_TIMEOUT) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = dev.graphql(RUN_STATUS, runId=run_id)["runOrError"]["status"]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            return status
        time.sleep(1)
    pytest.fail(f"run {run_id} did not finish within {timeout} s:\n{dev.output()}")


def sensor_runs(dev: DagsterDev) -> list[dict]:
    runs = dev.graphql(
        RUNS,
        filter={
            "pipelineName": "sync_leads",
            "tags": [{"key": "dagster/sensor_name", "value": "notion_changes_sensor"}],
        },
    )["runsOrError"]["results"]
    return [{**r, "tags": {t["key"]: t["value"] for t in r["tags"]}} for r in runs]


def wait_for_sensor_run(dev: DagsterDev, run_key_suffix: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run in sensor_runs(dev):
            if run["tags"].get("dagster/run_key", "").endswith(run_key_suffix) and run[
                "status"
            ] in ("SUCCESS", "FAILURE", "CANCELED"):
                return run
        time.sleep(1)
    pytest.fail(f"no finished sensor run for ...{run_key_suffix}:\n{dev.output()}")


def test_materialize_all_from_the_ui_api(tmp_path):
    with dagster_dev(tmp_path, {"LEADS_SOURCE": "sample"}) as dev:
        [repository] = dev.graphql(REPOSITORIES)["repositoriesOrError"]["nodes"]
        # "Materialize all" in the asset graph: every asset, in the implicit asset job.
        keys = [node["assetKey"] for node in dev.graphql(ASSET_KEYS)["assetNodes"]]
        assert {"path": ["leads"]} in keys and {"path": ["weekly_event_counts"]} in keys
        launched = dev.graphql(
            LAUNCH,
            executionParams={
                "selector": {
                    "repositoryLocationName": repository["location"]["name"],
                    "repositoryName": repository["name"],
                    "pipelineName": "__ASSET_JOB",
                    "assetSelection": keys,
                },
                "mode": "default",
                # What the UI's button sends: no run config (the definitions run every job's
                # steps in one process).
                "runConfigData": {},
                "executionMetadata": {"tags": []},
            },
        )["launchPipelineExecution"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run_id = launched["run"]["runId"]
        assert wait_for_run(dev, run_id) == "SUCCESS", dev.output()

        entries = dev.graphql(LATEST_METADATA, key={"path": ["weekly_event_counts"]})[
            "assetOrError"
        ]["assetMaterializations"][0]["metadataEntries"]
        shown = {e["label"]: e for e in entries}
        assert shown["chart"]["mdStr"].startswith("![chart](data:image/png;base64,")
        assert shown["first_contacts_total"]["intValue"] == 2000

    assert DeltaTable(str(dev.lake / "leads")).to_pyarrow_dataset().count_rows() == 2000
    with Warehouse(dev.warehouse).read() as con:
        total = con.execute(f"SELECT sum(date_prise_contact) FROM {WEEKLY_TABLE}").fetchone()[0]
    assert total == 2000


def test_sensor_in_the_daemon_reacts_to_an_edit_in_notion(tmp_path, fake_notion):
    pages = fake_notion.seed_sample(40)
    env = {
        "LEADS_SOURCE": "notion",
        "NOTION_TOKEN": DEFAULT_TOKEN,
        "NOTION_DATABASE_ID": SAMPLE_DATABASE_ID,
        "NOTION_API_BASE_URL": fake_notion.url,
        "LEADS_SENSOR_INTERVAL_SECONDS": "2",
    }
    with dagster_dev(tmp_path, env) as dev:
        # First tick on an empty lake: the sensor asks for the initial sync.
        newest = max(p["last_edited_time"] for p in pages).replace("Z", "+00:00")
        first = wait_for_sensor_run(
            dev, dt.datetime.fromisoformat(newest).isoformat(), timeout=RUN_TIMEOUT
        )
        assert first["status"] == "SUCCESS", dev.output()

        # A user edits a lead in Notion: the next tick notices it and syncs it.
        edited_at = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
        page_id = pages[0]["id"]
        fake_notion.edit(
            page_id, {"Email": {"type": "email", "email": "edited@exemple.fr"}}, at=edited_at
        )
        second = wait_for_sensor_run(dev, edited_at.isoformat(), timeout=RUN_TIMEOUT)
        assert second["status"] == "SUCCESS", dev.output()
        assert len(sensor_runs(dev)) == 2  # nothing in between: one run per change

    leads = DeltaTable(str(dev.lake / "leads")).to_pyarrow_table(columns=["id", "email"])
    emails = dict(zip(leads["id"].to_pylist(), leads["email"].to_pylist(), strict=True))
    assert emails[page_id] == "edited@exemple.fr"
    assert len(emails) == 40
