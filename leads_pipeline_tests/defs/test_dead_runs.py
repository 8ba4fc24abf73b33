"""Dead runs never hold the pipeline: a run killed with SIGKILL while it holds a pool slot.

Headless (``dagster job execute``, what ``dg launch`` runs) the next run frees the slot itself
(:mod:`leads_pipeline.defs.run_guard`); under the daemon (``dagster dev``) run monitoring marks the dead
run failed and frees its slot within the bound stated in ``dagster.yaml``. Real runs in subprocesses,
real instances in temporary ``DAGSTER_HOME`` s holding the repository's ``dagster.yaml``, real slots.
"""

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import httpx
import pytest
import yaml
from deltalake import DeltaTable

from leads_pipeline.definitions import ASSETS, defs
from leads_pipeline.defs.pools import LAKE_POOL
from leads_pipeline.defs.resources import build_resources
from leads_pipeline.defs.run_guard import (
    RUN_WORKER_TAG,
    PoolGuard,
    RunWorker,
    guarded_in_process_executor,
)
from leads_pipeline.settings import load_settings
from leads_pipeline.sources.sample_data import cached_pages
from leads_pipeline.storage.warehouse import Warehouse
from leads_pipeline_tests.killed_run_child import STALL_MARKER_ENV

REPO = Path(__file__).resolve().parents[2]
DAGSTER = Path(sys.executable).with_name("dagster")
RUN_TIMEOUT = 120
# dagster.yaml promises about 46 s from the worker's death to its slot being free.
DAEMON_FREE_BOUND = 75
VOLATILE_COLUMNS = {"synced_at", "detected_at"}
LINUX = Path("/proc/self/stat").exists()


# --- helpers -------------------------------------------------------------------------------------


@dataclasses.dataclass
class Place:
    """A Dagster home (the repository's dagster.yaml), a lake and a warehouse in a temp folder."""

    root: Path

    def __post_init__(self) -> None:
        self.home.mkdir(parents=True)
        shutil.copy(REPO / "dagster.yaml", self.home / "dagster.yaml")

    @property
    def home(self) -> Path:
        return self.root / "dagster_home"

    @property
    def lake(self) -> Path:
        return self.root / "lake"

    @property
    def warehouse(self) -> Path:
        return self.root / "warehouse.duckdb"

    @property
    def marker(self) -> Path:
        return self.root / "stalled.pid"

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "DAGSTER_HOME": str(self.home),
            "LEADS_SOURCE": "sample",
            "LEADS_LAKE_URI": str(self.lake),
            "LEADS_WAREHOUSE_PATH": str(self.warehouse),
            # No schedule fires on its own under the daemon during a test.
            "LEADS_SYNC_CRON": "0 3 1 1 *",
            "LEADS_REFRESH_CRON": "0 3 1 1 *",
            "LEADS_MAINTAIN_CRON": "0 3 1 1 *",
            **extra,
        }

    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(str(self.home))

    def start_sync(self, module: str, log: Path, **env: str) -> subprocess.Popen:
        """``dagster job execute -j sync_leads`` in a new process group, output to ``log``."""
        with open(log, "wb") as out:
            return subprocess.Popen(
                [str(DAGSTER), "job", "execute", "-m", module, "-j", "sync_leads"],
                cwd=self.root,
                env=self.env(**env),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def sync(self, log: Path) -> subprocess.Popen:
        """A headless sync of the project's own definitions, waited for (bounded)."""
        process = self.start_sync("leads_pipeline.definitions", log)
        try:
            process.wait(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            kill_group(process)
            pytest.fail(f"the sync did not finish within {RUN_TIMEOUT} s:\n{tail(log)}")
        return process


def kill_group(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def text(log: Path) -> str:
    return log.read_text(errors="replace")


def tail(log: Path) -> str:
    return text(log)[-6000:]


def wait_for(condition, timeout: float, what: str, output=lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout} s:\n{output()}")
        time.sleep(0.2)


def wait_for_marker(place: Place, process: subprocess.Popen | None, log: Path) -> int:
    """The pid the stalled listing wrote, once it is inside the ``raw_notion_leads`` step."""

    def inside() -> bool:
        assert process is None or process.poll() is None, tail(log)
        return place.marker.exists()

    wait_for(inside, RUN_TIMEOUT, "the run never reached its listing", lambda: tail(log))
    return int(place.marker.read_text())


def holders(instance: dg.DagsterInstance, pool: str = LAKE_POOL) -> list[str]:
    """Run ids holding a slot of ``pool``."""
    return [s.run_id for s in instance.event_log_storage.get_concurrency_info(pool).claimed_slots]


def status(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRunStatus:
    return instance.get_run_by_id(run_id).status


def table_rows(path: Path) -> list[str]:
    rows = DeltaTable(str(path)).to_pyarrow_table().to_pylist()
    kept = [{k: v for k, v in row.items() if k not in VOLATILE_COLUMNS} for row in rows]
    return sorted(json.dumps(row, sort_keys=True, default=str) for row in kept)


def contents(lake: Path, warehouse: Path) -> dict[str, list]:
    """Every Delta table's rows and every warehouse table's rows, without sync timestamps."""
    result = {p.name: table_rows(p) for p in sorted(lake.iterdir()) if (p / "_delta_log").is_dir()}
    with Warehouse(warehouse).read() as con:
        tables = con.sql(
            "SELECT table_schema, table_name FROM information_schema.tables ORDER BY ALL"
        ).fetchall()
        for schema, name in tables:
            if name.startswith("_"):  # bookkeeping (lineage: paths and times), not data
                continue
            result[f"{schema}.{name}"] = con.sql(
                f'SELECT * FROM "{schema}"."{name}" ORDER BY ALL'
            ).fetchall()
    return result


def reference_contents(root: Path) -> dict[str, list]:
    """What an uninterrupted sync of the sample source writes."""
    env = {
        "LEADS_SOURCE": "sample",
        "LEADS_LAKE_URI": str(root / "lake"),
        "LEADS_WAREHOUSE_PATH": str(root / "warehouse.duckdb"),
    }
    result = dg.materialize(
        ASSETS,
        resources=build_resources(load_settings(env)),
    )
    assert result.success
    return contents(root / "lake", root / "warehouse.duckdb")


def fake_holder(instance: dg.DagsterInstance, tags: dict[str, str]) -> str:
    """A STARTED run of ``sync_leads`` that holds the lake pool's slot, as a killed run leaves it."""
    run = dg.DagsterRun(job_name="sync_leads", status=dg.DagsterRunStatus.STARTED, tags=tags)
    instance.add_run(run)
    storage = instance.event_log_storage
    storage.initialize_concurrency_limit_to_default(LAKE_POOL)
    assert storage.claim_concurrency_slot(LAKE_POOL, run.run_id, "raw_notion_leads").is_claimed
    return run.run_id


def proc_start(pid: int) -> str:
    """Field 22 of /proc/<pid>/stat: the process's start time since boot."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19]


def worker_tag(pid: int, **changes: str) -> dict[str, str]:
    """The tag a run worker with process ``pid`` on this machine records (``changes`` applied)."""
    fields = {"pid": pid, "started": proc_start(pid) if LINUX else None, **changes}
    return {RUN_WORKER_TAG: dataclasses.replace(RunWorker.current(), **fields).to_tag()}


# --- configuration -------------------------------------------------------------------------------


def test_both_instances_monitor_runs_and_free_the_slots_of_dead_ones(tmp_path):
    local = yaml.safe_load((REPO / "dagster.yaml").read_text())["run_monitoring"]
    deployed = yaml.safe_load((REPO / "deploy" / "dagster.yaml").read_text())["run_monitoring"]
    assert local == deployed
    place = Place(tmp_path)
    with place.instance() as instance:
        assert instance.run_monitoring_enabled
        settings = instance.run_monitoring_settings
        # Dagster frees the slots of ended runs only with this key; the DefaultRunLauncher
        # cannot resume runs, so resuming must stay off for the instance to load.
        freed_after = settings["free_slots_after_run_end_seconds"]
        assert freed_after > 0
        assert instance.run_monitoring_max_resume_run_attempts == 0
        # The bound stated in dagster.yaml: freed at most one poll after the delay.
        assert freed_after + instance.run_monitoring_poll_interval_seconds <= 60


def test_every_job_runs_guarded_so_its_runs_record_their_worker():
    # A run that records no worker cannot be checked, and blocks other runs' start (see
    # test_a_holder_that_recorded_no_worker_...): every job of the project must be guarded.
    executors = {job.name: job.executor_def for job in defs.resolve_all_job_defs()}
    assert {"sync_leads", "refresh_leads", "maintain_lake", "__ASSET_JOB"} <= set(executors)
    unguarded = [name for name, e in executors.items() if e is not guarded_in_process_executor]
    assert unguarded == []


# --- headless ------------------------------------------------------------------------------------


def test_a_killed_headless_run_does_not_block_the_next_one(tmp_path):
    place = Place(tmp_path / "killed")
    first_log = tmp_path / "first.log"
    first = place.start_sync(
        "leads_pipeline_tests.killed_run_child", first_log, **{STALL_MARKER_ENV: str(place.marker)}
    )
    try:
        pid = wait_for_marker(place, first, first_log)
        assert pid == first.pid  # the CLI process is the run worker
        with place.instance() as instance:
            [killed_run] = holders(instance)
    finally:
        kill_group(first)
    assert first.returncode == -signal.SIGKILL
    with place.instance() as instance:
        # What the kill leaves: a STARTED run holding the lake's only slot.
        assert status(instance, killed_run) == dg.DagsterRunStatus.STARTED
        assert holders(instance) == [killed_run]

    second_log = tmp_path / "second.log"
    assert place.sync(second_log).returncode == 0, tail(second_log)
    output = text(second_log)
    assert f"Run {killed_run} (pid {pid} on {socket.gethostname()}) is gone" in output
    assert f"freed its {LAKE_POOL} slot" in output
    with place.instance() as instance:
        assert status(instance, killed_run) == dg.DagsterRunStatus.FAILURE
        assert holders(instance) == []

    expected_ids = {page["id"] for page in cached_pages(2000, 42)}
    leads = DeltaTable(str(place.lake / "leads")).to_pyarrow_table(columns=["id"])
    assert sorted(leads["id"].to_pylist()) == sorted(expected_ids)
    assert contents(place.lake, place.warehouse) == reference_contents(tmp_path / "reference")


@pytest.mark.skipif(not LINUX, reason="checks process start times in /proc")
def test_a_waiting_run_takes_the_slot_when_its_holder_dies(tmp_path):
    place = Place(tmp_path)
    sleeper = subprocess.Popen(["sleep", "600"])
    try:
        with place.instance() as instance:
            holder = fake_holder(instance, worker_tag(sleeper.pid))
        log = tmp_path / "sync.log"
        run = place.start_sync("leads_pipeline.definitions", log)
        try:
            wait_for(
                lambda: f"Waiting for run {holder}" in text(log),
                RUN_TIMEOUT,
                "the run did not say whom it waits for",
                lambda: tail(log),
            )
            time.sleep(2)
            assert run.poll() is None  # still waiting: its holder is alive
            with place.instance() as instance:
                assert holders(instance) == [holder]
            sleeper.kill()
            sleeper.wait()
            run.wait(timeout=RUN_TIMEOUT)
        finally:
            kill_group(run)
        assert run.returncode == 0, tail(log)
        assert f"Run {holder} (pid {sleeper.pid} on" in text(log)
        with place.instance() as instance:
            assert status(instance, holder) == dg.DagsterRunStatus.FAILURE
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_holder_that_recorded_no_worker_fails_the_run_at_once_naming_the_command(tmp_path):
    place = Place(tmp_path)
    with place.instance() as instance:
        holder = fake_holder(instance, tags={})
    log = tmp_path / "sync.log"
    started = time.monotonic()
    assert place.sync(log).returncode != 0
    assert time.monotonic() - started < RUN_TIMEOUT / 2
    output = text(log)
    assert f"dagster run delete -f {holder}" in output
    assert "cannot tell whether it still runs" in output
    with place.instance() as instance:
        assert holders(instance) == [holder]  # not sure it is dead: left alone
        assert status(instance, holder) == dg.DagsterRunStatus.STARTED


# --- the guard's decisions, on a real instance ----------------------------------------------------


@pytest.fixture
def instance(tmp_path) -> Iterator[dg.DagsterInstance]:
    with Place(tmp_path).instance() as instance:
        yield instance


def guard_check(instance: dg.DagsterInstance, caplog, *, fail_on_unknown: bool = True) -> str:
    log = logging.getLogger("test_dead_runs")
    with caplog.at_level(logging.INFO, logger=log.name):
        PoolGuard(instance, str(uuid.uuid4()), log).check(fail_on_unknown=fail_on_unknown)
    return caplog.text


def test_slots_of_a_run_that_ended_are_freed_at_once(instance, caplog):
    holder = fake_holder(instance, worker_tag(os.getpid()))
    instance.report_run_failed(instance.get_run_by_id(holder))
    assert holders(instance) == [holder]  # Dagster keeps them until its daemon frees them
    text = guard_check(instance, caplog)
    assert holders(instance) == []
    assert f"Run {holder} ended (FAILURE) but still held {LAKE_POOL}; freed." in text


@pytest.mark.skipif(not LINUX, reason="checks process start times in /proc")
def test_a_reused_process_id_is_not_taken_for_the_dead_worker(instance, caplog):
    # This very process, but started at another time: the holder's own process is gone.
    holder = fake_holder(instance, worker_tag(os.getpid(), started="1"))
    text = guard_check(instance, caplog)
    assert holders(instance) == []
    assert status(instance, holder) == dg.DagsterRunStatus.FAILURE
    assert f"Run {holder} (pid {os.getpid()} on" in text


def test_a_live_worker_is_waited_for(instance, caplog):
    holder = fake_holder(instance, worker_tag(os.getpid()))
    text = guard_check(instance, caplog)
    assert holders(instance) == [holder]
    assert status(instance, holder) == dg.DagsterRunStatus.STARTED
    assert f"Waiting for run {holder} (pid {os.getpid()} on" in text


def test_a_worker_on_another_machine_is_waited_for_with_the_command_to_free_it(instance, caplog):
    holder = fake_holder(instance, worker_tag(os.getpid(), host="other-host"))
    text = guard_check(instance, caplog)
    assert holders(instance) == [holder]
    assert status(instance, holder) == dg.DagsterRunStatus.STARTED
    assert "whose worker (pid" in text and "on other-host) cannot be checked from here" in text
    assert f"dagster run delete -f {holder}" in text


# --- under the daemon ----------------------------------------------------------------------------

LAUNCH = """
mutation Launch($executionParams: ExecutionParams!) {
  launchPipelineExecution(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}
"""
RUN_STATUS = "query Run($runId: ID!) { runOrError(runId: $runId) { ... on Run { status } } }"
LOCATION = "leads_pipeline_tests.killed_run_child"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def graphql(url: str, query: str, **variables) -> dict:
    answer = httpx.post(f"{url}/graphql", json={"query": query, "variables": variables}, timeout=30)
    answer.raise_for_status()
    body = answer.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


@contextlib.contextmanager
def dagster_dev(place: Place, log: Path) -> Iterator[str]:
    """``dagster dev`` on the stalling code location; yields its URL once the location loaded."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(DAGSTER), "dev", "-m", LOCATION, "-p", str(port)],
            cwd=place.root,
            env=place.env(**{STALL_MARKER_ENV: str(place.marker)}),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def loaded() -> bool:
        assert process.poll() is None, tail(log)
        with contextlib.suppress(httpx.HTTPError, AssertionError, KeyError, TypeError):
            query = "{ repositoriesOrError { ... on RepositoryConnection { nodes { name } } } }"
            return bool(graphql(url, query)["repositoriesOrError"]["nodes"])
        return False

    try:
        wait_for(loaded, 90, "dagster dev did not load the code location", lambda: tail(log))
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=20)
        with contextlib.suppress(ProcessLookupError):  # and any run worker left behind
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def launch_sync(url: str) -> str:
    launched = graphql(
        url,
        LAUNCH,
        executionParams={
            "selector": {
                "repositoryLocationName": LOCATION,
                "repositoryName": "__repository__",
                "pipelineName": "sync_leads",
            },
            "mode": "default",
            "runConfigData": {},
        },
    )["launchPipelineExecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return launched["run"]["runId"]


def test_under_the_daemon_a_killed_run_is_failed_and_its_slot_freed(tmp_path):
    place = Place(tmp_path)
    log = tmp_path / "dagster_dev.log"
    with dagster_dev(place, log) as url:
        killed_run = launch_sync(url)
        pid = wait_for_marker(place, None, log)
        with place.instance() as instance:
            assert holders(instance) == [killed_run]
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()

        def run_status(run_id: str) -> str:
            return graphql(url, RUN_STATUS, runId=run_id)["runOrError"]["status"]

        wait_for(
            lambda: run_status(killed_run) == "FAILURE",
            30,
            "the dead run was not failed",
            lambda: tail(log),
        )
        with place.instance() as instance:
            # Nothing else runs: only the daemon can free the slot here.
            wait_for(
                lambda: holders(instance) == [],
                DAEMON_FREE_BOUND - (time.monotonic() - killed_at),
                "the daemon did not free the dead run's slot",
                lambda: tail(log),
            )
        freed_after = time.monotonic() - killed_at

        next_run = launch_sync(url)
        wait_for(
            lambda: run_status(next_run) in ("SUCCESS", "FAILURE", "CANCELED"),
            RUN_TIMEOUT,
            "the next run did not finish",
            lambda: tail(log),
        )
        assert run_status(next_run) == "SUCCESS", tail(log)
    assert freed_after < DAEMON_FREE_BOUND
    expected_ids = {page["id"] for page in cached_pages(2000, 42)}
    leads = DeltaTable(str(place.lake / "leads")).to_pyarrow_table(columns=["id"])
    assert sorted(leads["id"].to_pylist()) == sorted(expected_ids)
