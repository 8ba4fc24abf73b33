"""Check memory: a check that passed on exactly these inputs passes again without reading them.

A check's *input state* names its inputs without reading their data: for a Delta table, its URI,
the version compared and the newest commit (version and timestamp: a table recreated at the same
version number commits at another time); for a small published DuckDB table, the SHA-256 of its
rows (the warehouse's lineage is not enough: a table published without one keeps the previous
table's). Every value is text, recorded in the evaluation's metadata.

:func:`remembered` looks up the latest completed evaluation of the check. When it passed on
exactly the state found now, the check passes again without verifying, saying so in its
description, with metadata ``unchanged_since_last_pass: true``, the figures of the evaluation it
relies on and ``verified_in_run`` (the run that verified in full). Otherwise it verifies in full
and records the state with ``unchanged_since_last_pass: false`` and its own run. A failed
evaluation is never relied on: the next one verifies again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping

import dagster as dg
import pyarrow as pa

# Private, but the only way Dagster 1.13 gives the latest *completed* evaluation: its public
# instance methods give materializations and observations only, and
# ``DagsterInstance.get_latest_asset_check_evaluation_record`` (not public either) returns the
# latest execution whatever its status, which inside a run is the check's own planned one.
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError

from leads_pipeline.defs.metadata import recorded_int
from leads_pipeline.storage.lake import DeltaLake

#: Metadata: whether the evaluation relied on an earlier one instead of reading its inputs.
UNCHANGED_KEY = "unchanged_since_last_pass"
#: Metadata: the run whose evaluation verified the inputs in full.
VERIFIED_IN_RUN_KEY = "verified_in_run"
#: ``verified_in_run`` of a check invoked directly, outside any run (never recorded).
NO_RUN = "none (invoked outside a run)"
#: The digest recorded for a DuckDB table that is not built.
NOT_BUILT = "not built"

_COMPLETED = frozenset(
    {AssetCheckExecutionRecordStatus.SUCCEEDED, AssetCheckExecutionRecordStatus.FAILED}
)

#: An input state: metadata key → text.
State = dict[str, str]


def delta_state(
    store: DeltaLake, name: str, prefix: str, latest: DeltaTable, compared: int | None = None
) -> State:
    """The input state of the Delta table ``name`` (its log only, no data read).

    Args:
        store: The lake holding it.
        name: Table name.
        prefix: Prefix of the metadata keys (``leads`` → ``leads_table_uri``, ...).
        latest: The table loaded at its newest version.
        compared: The version the check reads when it is not the newest (e.g. the version a
            count table was computed from); the state then also holds the newest version.

    Returns:
        ``<prefix>_table_uri``, ``<prefix>_delta_version`` (the version compared),
        ``<prefix>_commit_timestamp`` (of the newest commit, in ms) and, with ``compared``,
        ``<prefix>_newest_version``.
    """
    [commit] = latest.history(1) or [{"timestamp": -1}]
    state = {
        f"{prefix}_table_uri": store.table_uri(name),
        f"{prefix}_delta_version": str(latest.version() if compared is None else compared),
        f"{prefix}_commit_timestamp": str(int(commit.get("timestamp") or -1)),
    }
    if compared is not None:
        state[f"{prefix}_newest_version"] = str(latest.version())
    return state


def rows_digest(rows: pa.Table | None) -> str:
    """SHA-256 of a table's schema and rows (Arrow IPC), or :data:`NOT_BUILT` for None.

    Meant for the small published tables (counts, entries): equal digests mean equal data; a
    different layout of equal data only costs a full verification.
    """
    if rows is None:
        return NOT_BUILT
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, rows.schema) as writer:
        writer.write_table(rows.combine_chunks())
    return hashlib.sha256(memoryview(sink.getvalue())).hexdigest()


def recorded_version(instance: dg.DagsterInstance, asset: str, key: str) -> int | None:
    """The version ``asset``'s latest materialization recorded under ``key`` (None if none)."""
    event = instance.get_latest_materialization_event(dg.AssetKey(asset))
    if event is None or event.asset_materialization is None:
        return None
    return recorded_int(event.asset_materialization.metadata, key)


def at_version(
    context: dg.AssetCheckExecutionContext,
    store: DeltaLake,
    name: str,
    latest: DeltaTable,
    version: int | None,
) -> DeltaTable:
    """``name`` loaded at ``version`` (its log only); ``latest`` when it is None, the newest, or
    cannot be loaded (vacuumed, unreadable: a warning says so)."""
    if version is None or version == latest.version():
        return latest
    try:
        table = store.load(name, version=version)
    except (DeltaError, OSError):
        table = None
    if table is None:
        context.log.warning(f"{name} version {version} cannot be read; using the current one.")
        return latest
    return table


def run_id_of(context: dg.AssetCheckExecutionContext) -> str:
    """The id of the run evaluating the check; :data:`NO_RUN` when invoked directly."""
    try:
        return context.run.run_id
    except dg.DagsterError:  # no run: a direct invocation (DagsterInvalidPropertyError)
        return NO_RUN


def last_pass(
    instance: dg.DagsterInstance, key: dg.AssetCheckKey, state: Mapping[str, str]
) -> dg.AssetCheckEvaluation | None:
    """The latest completed evaluation of ``key`` if it passed on exactly ``state``; else None.

    Only the latest completed one counts: a failure after a pass is never skipped over.
    """
    records = instance.event_log_storage.get_asset_check_execution_history(
        key, limit=1, status=set(_COMPLETED)
    )
    evaluation = records[0].evaluation if records else None
    if not isinstance(evaluation, dg.AssetCheckEvaluation) or not evaluation.passed:
        return None
    metadata = evaluation.metadata
    if VERIFIED_IN_RUN_KEY not in metadata:
        return None
    recorded = {k: getattr(metadata.get(k), "value", None) for k in state}
    return evaluation if recorded == dict(state) else None


def remembered(
    context: dg.AssetCheckExecutionContext,
    key: dg.AssetCheckKey,
    state: Mapping[str, str],
    verify: Callable[[], dg.AssetCheckResult],
    inputs: str,
) -> dg.AssetCheckResult:
    """The check's result: the last pass on exactly ``state`` again, or ``verify()``'s.

    Args:
        context: The check's context (its instance holds the previous evaluations).
        key: The check's key.
        state: Its input state, read before verifying (a commit made meanwhile is verified next
            time).
        verify: The full verification.
        inputs: The inputs in words, for the description (``"leads (Delta version 4)"``).
    """
    label = f"{key.asset_key.to_user_string()}:{key.name}"
    previous = last_pass(context.instance, key, state)
    if previous is not None:
        run = getattr(previous.metadata.get(VERIFIED_IN_RUN_KEY), "value", None)
        context.log.info(
            f"{label}: passed, unchanged since run {run} verified it ({inputs}); not read again."
        )
        return dg.AssetCheckResult(
            passed=True,
            severity=previous.severity,
            description=(
                f"Passed: {inputs} unchanged since the last passing evaluation, which verified "
                f"them in full (run {run}): not read again."
            ),
            metadata={**previous.metadata, **state, UNCHANGED_KEY: True},
        )
    result = verify()
    return dg.AssetCheckResult(
        passed=result.passed,
        severity=result.severity,
        description=result.description,
        metadata={
            **result.metadata,
            **state,
            UNCHANGED_KEY: False,
            VERIFIED_IN_RUN_KEY: run_id_of(context),
        },
    )
