"""Dead runs never hold a pool: our runs free the pool slots left behind by runs that died.

Dagster's pools (``concurrency: pools`` in ``dagster.yaml``) are slots in the instance's storage,
claimed by a step before it starts and freed when it ends. A run worker killed with SIGKILL frees
nothing, and every later run waits on "Step blocked by limit for pool leads_lake" forever. Under
the daemon, run monitoring marks such a run failed and frees its slots (see ``dagster.yaml``);
headless runs (``dg launch``, ``dagster job execute``) have no daemon. So the executor of our jobs
records which process runs each run (tag :data:`RUN_WORKER_TAG`) and, before any step claims a
slot and then every :data:`CHECK_INTERVAL_SECONDS` while the run lasts, looks at who holds the
pools:

- a run that has ended, or was deleted, yet still holds slots: its slots are freed;
- a run whose worker process is gone (checked on the same machine): it is marked failed and its
  slots are freed;
- a run whose worker is alive, or runs on another machine or container: this run waits for it, and
  says so in its log (with the command that frees the slot, should that worker be dead);
- a run that did not record its worker (an older version, foreign code): this run fails at once,
  naming the command that frees the slot, instead of waiting silently.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import dagster as dg

RUN_WORKER_TAG = "leads_pipeline/run_worker"
CHECK_INTERVAL_SECONDS = 15.0
_PROC = Path("/proc")


class PoolHeldError(RuntimeError):
    """A pool slot is held by a run whose process this run cannot check."""


@dataclass(frozen=True)
class RunWorker:
    """Where a run's steps execute: enough to tell, from the same machine, whether it still runs.

    ``boot`` (the kernel's boot id), ``pid_namespace`` and ``started`` (the process start time, in
    clock ticks since boot) exist on Linux only; they tell a reboot, another container or a reused
    process id apart from the original process.
    """

    host: str
    pid: int
    boot: str | None = None
    pid_namespace: str | None = None
    started: str | None = None

    @classmethod
    def current(cls) -> RunWorker:
        """The worker running this code."""
        pid = os.getpid()
        stat = _proc_stat(pid)
        return cls(
            host=socket.gethostname(),
            pid=pid,
            boot=_read(_PROC / "sys/kernel/random/boot_id"),
            pid_namespace=_readlink(_PROC / "self/ns/pid"),
            started=stat[19] if stat else None,
        )

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> RunWorker | None:
        """The worker recorded in a run's tags, if any."""
        raw = tags.get(RUN_WORKER_TAG)
        if not raw:
            return None
        try:
            recorded = json.loads(raw)
            known = {f.name for f in fields(cls)}
            return cls(**{k: v for k, v in recorded.items() if k in known})
        except (AttributeError, TypeError, ValueError):
            return None

    def to_tag(self) -> str:
        """The JSON value of :data:`RUN_WORKER_TAG`."""
        return json.dumps(asdict(self), sort_keys=True)

    def is_running(self) -> bool | None:
        """Whether this worker process still runs; ``None`` when it cannot be checked from here."""
        here = RunWorker.current()
        if self.host != here.host:
            return None
        if self.boot and here.boot and self.boot != here.boot:
            return False  # the machine restarted since
        if self.pid_namespace != here.pid_namespace:
            return None  # another container on this machine: its process ids are not ours
        return _process_running(self.pid, self.started)

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host}"


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _readlink(path: Path) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first), or None."""
    text = _read(_PROC / str(pid) / "stat")
    return text.rpartition(")")[2].split() if text else None


def _process_running(pid: int, started: str | None) -> bool | None:
    if os.name == "nt":
        return None  # os.kill(pid, 0) would interrupt the process there
    if _PROC.joinpath("self/stat").exists():
        stat = _proc_stat(pid)
        if stat is None or stat[0] in ("Z", "X"):  # gone, or dead and not yet reaped
            return False
        return started is None or stat[19] == started  # else the id was reused
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _free_command(run_id: str) -> str:
    return f"dagster run delete -f {run_id}"


def _pool_list(pools: set[str]) -> str:
    return ", ".join(sorted(pools))


class PoolGuard:
    """Frees the pool slots of dead runs for one run (see the module docstring).

    Args:
        instance: The run's Dagster instance.
        run_id: The run being guarded (its own slots are never touched).
        log: Where the run's log lines go (``context.log`` of the run).
    """

    def __init__(self, instance: dg.DagsterInstance, run_id: str, log: Any) -> None:
        self._instance = instance
        self._run_id = run_id
        self._log = log
        self._told: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def _storage(self) -> Any:
        return self._instance.event_log_storage

    def __enter__(self) -> PoolGuard:
        if not self._storage.supports_global_concurrency_limits:
            return self
        self._instance.add_run_tags(self._run_id, {RUN_WORKER_TAG: RunWorker.current().to_tag()})
        self.check(fail_on_unknown=True)
        self._thread = threading.Thread(target=self._watch, name="pool-guard", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=CHECK_INTERVAL_SECONDS)

    def _watch(self) -> None:
        while not self._stop.wait(CHECK_INTERVAL_SECONDS):
            try:
                self.check(fail_on_unknown=False)
            except Exception as error:  # never let the watcher kill the run
                self._log.warning(f"Could not check the pools' holders: {error!r}")

    def _holders(self) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
        """Other runs' claimed slots and waiting steps, as pools by run id."""
        claimed: dict[str, set[str]] = defaultdict(set)
        waiting: dict[str, set[str]] = defaultdict(set)
        for pool in self._storage.get_concurrency_keys():
            info = self._storage.get_concurrency_info(pool)
            for slot in info.claimed_slots:
                claimed[slot.run_id].add(pool)
            for step in info.pending_steps:
                waiting[step.run_id].add(pool)
        claimed.pop(self._run_id, None)
        waiting.pop(self._run_id, None)
        return claimed, waiting

    def check(self, *, fail_on_unknown: bool) -> None:
        """Frees what dead runs hold; reports live holders once each.

        Args:
            fail_on_unknown: Raise :class:`PoolHeldError` for a holder whose worker is unknown
                (at the start of the run), rather than logging it (later checks).
        """
        claimed, waiting = self._holders()
        for run_id in sorted(set(claimed) | set(waiting)):
            pools = claimed.get(run_id, set()) | waiting.get(run_id, set())
            self._check_run(run_id, pools, holds=run_id in claimed, fail=fail_on_unknown)

    def _check_run(self, run_id: str, pools: set[str], *, holds: bool, fail: bool) -> None:
        run = self._instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            self._free_ended(run_id, run, pools)
            return
        worker = RunWorker.from_tags(run.tags)
        running = worker.is_running() if worker else None
        if running is False:
            self._fail_dead(run, worker, pools)
        elif not holds:
            return  # only waiting for a slot, like this run
        elif running:
            self._tell_once(
                run_id, f"Waiting for run {run_id} ({worker}), which holds {_pool_list(pools)}."
            )
        elif worker:
            self._tell_once(
                run_id,
                f"Waiting for run {run_id}, which holds {_pool_list(pools)} and whose worker"
                f" ({worker}) cannot be checked from here. If that run is dead, the daemon's run"
                f" monitoring frees its slot, or free it by hand with: {_free_command(run_id)}",
                level="warning",
            )
        else:
            message = (
                f"Pool {_pool_list(pools)} is held by run {run_id} ({run.status.value}), which did"
                " not record its worker process, so this run cannot tell whether it still runs."
                f" If it does not, free its slot with: {_free_command(run_id)} (then launch again);"
                " if it does, launch again once it has finished."
            )
            if fail:
                raise PoolHeldError(message)
            self._tell_once(run_id, message, level="error")

    def _free_ended(self, run_id: str, run: dg.DagsterRun | None, pools: set[str]) -> None:
        self._storage.free_concurrency_slots_for_run(run_id)
        state = "was deleted" if run is None else f"ended ({run.status.value})"
        self._log.info(f"Run {run_id} {state} but still held {_pool_list(pools)}; freed.")

    def _fail_dead(self, run: dg.DagsterRun, worker: RunWorker, pools: set[str]) -> None:
        self._instance.report_run_failed(
            run, f"Its run worker ({worker}) is gone; marked failed by run {self._run_id}."
        )
        self._storage.free_concurrency_slots_for_run(run.run_id)
        self._log.warning(
            f"Run {run.run_id} ({worker}) is gone; marked it failed and freed its"
            f" {_pool_list(pools)} slot(s)."
        )

    def _tell_once(self, run_id: str, message: str, *, level: str = "info") -> None:
        """Logs ``message`` unless this guard already said something about ``run_id``."""
        if run_id in self._told:
            return
        self._told.add(run_id)
        getattr(self._log, level)(message)


class PoolGuardedExecutor(dg.Executor):
    """An executor that runs another one inside a :class:`PoolGuard`."""

    def __init__(self, inner: dg.Executor) -> None:
        self._inner = inner

    @property
    def retries(self) -> Any:
        return self._inner.retries

    @property
    def step_dependency_config(self) -> Any:
        return self._inner.step_dependency_config

    def execute(self, plan_context: Any, execution_plan: Any) -> Iterator[Any]:
        """Executes the plan with the inner executor, the pools' holders checked throughout."""
        guard = PoolGuard(plan_context.instance, plan_context.run_id, plan_context.log)
        with guard:
            yield from self._inner.execute(plan_context, execution_plan)


@dg.executor(
    name="in_process",
    config_schema=dg.in_process_executor.config_schema.as_field(),
)
def guarded_in_process_executor(init_context: dg.InitExecutorContext) -> dg.Executor:
    """Dagster's in-process executor, freeing pool slots held by dead runs first."""
    creation_fn = dg.in_process_executor.executor_creation_fn
    assert creation_fn is not None
    return PoolGuardedExecutor(creation_fn(init_context))
