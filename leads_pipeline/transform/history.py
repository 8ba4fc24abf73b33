"""Derives ``lead_history``, the type-2 history of ``leads``: one row per observed version of a lead.

Notion only ever shows a lead as it is now; ``leads`` is upserted. This module keeps every version
the pipeline observed, from the Delta versions of ``leads`` (never from Notion, never from raw
except for deletion times):

- A lead's first version is ``created``. A new version (``updated``) is added only when a column
  of ``leads`` other than ``last_edited_time`` changed (``extra_properties`` included): an edit that
  changes nothing mapped adds no row. ``changed_columns`` lists the columns that differ from the
  previous version (for ``created``: every column holding a value; never ``last_edited_time``).
- A lead leaving ``leads`` (trashed or deleted in Notion) gets a **tombstone**: a ``deleted``
  version holding its last values, ``is_current`` false and ``valid_from = valid_to =`` the
  deletion time (``raw_notion_leads.deleted_at``, when the pipeline noticed it). Its previous
  version is closed at that time. A lead coming back gets a ``restored`` version. So every live
  lead has exactly one current version, a deleted one none, and "the version valid at *t*"
  (``valid_from <= t AND (t < valid_to OR valid_to IS NULL)``) never returns a tombstone.
- ``valid_from`` is the version's ``last_edited_time`` (Notion's, rounded down to the minute),
  never earlier than the previous version's: two versions may share it (two edits within one
  minute, seen by two syncs; a value changed without a new edit time), ``version`` orders them.
  ``valid_to`` is the next version's ``valid_from``; NULL while current. ``synced_at`` is when
  the pipeline observed the version: the time of the ``leads`` commit that first held it.
- A column ``leads`` gains (a property-map change) is added to the history: NULL in the versions
  before, and a version for each lead where it holds a value (that value is a change). A
  re-derivation of ``leads`` that leaves the values as they were adds nothing.

Each derivation replays the ``leads`` versions written since the one recorded in the history's
last commit (``leads_pipeline.leads_version``), oldest first, comparing each version's rows with
the previous version's by a vectorised DuckDB join on ``id``: from the change data feed of
``leads`` when it has one (only the rows a sync changed are read; see
:func:`enable_leads_change_feed`), else whole versions (Delta time travel). A run killed between
the ``leads`` commit and the history commit is therefore repaired by the next run, version by
version, exactly as if it had not been killed. The first derivation in an existing lake (no
``lead_history`` yet) replays every version of ``leads`` still readable in its Delta history: the
backfill.

Everything a derivation adds is one Delta commit, made only on the version it read (a concurrent
writer makes it fail, and it is derived again): the merge on ``(id, version)`` that closes the
previous versions and inserts the new ones. A derivation that finds nothing to add commits
nothing. The table is partitioned by ``is_current``: closed versions are written once and never
rewritten; the current versions' partition (one row per live lead) is rewritten when versions
close. The commit is written directly (Parquet files, then one Delta transaction), which saves
the re-read and the join a delta-rs merge would make; the history is never rewritten in full.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import DeltaTable, Schema
from deltalake.exceptions import CommitFailedError, DeltaError
from deltalake.fs import DeltaStorageHandler
from deltalake.transaction import AddAction, create_table_with_add_actions

from leads_pipeline.storage.duck import scratch_connection
from leads_pipeline.storage.lake import (
    METADATA_PREFIX,
    ROW_KEEPING_OPERATIONS,
    DeltaLake,
    commit_properties,
    key_in,
    newest_commit_with,
    newest_per_key,
)
from leads_pipeline.tables import (
    HISTORY_ONLY_COLUMNS,
    HISTORY_SYNCED_AT,
    HISTORY_TABLE,
    HISTORY_VERSION_FIELDS,
    LEADS_TABLE,
    RAW_TABLE,
)
from leads_pipeline.transform.leads import MARK_KEY as RAW_MARK_KEY

#: Commit metadata of ``lead_history``: the ``leads`` version it is derived through, and that
#: version's commit time (ms), which tells a ``leads`` table recreated since from the one derived.
#: (delta-rs gives a table a new id when a merge evolves its schema: the id cannot tell.)
LEADS_VERSION_KEY = "leads_version"
LEADS_COMMIT_KEY = "leads_commit_timestamp"

CREATED, UPDATED, DELETED, RESTORED = "created", "updated", "deleted", "restored"
CHANGES = (CREATED, UPDATED, DELETED, RESTORED)

#: A change of these ``leads`` columns alone adds no version (nor appears in ``changed_columns``).
UNVERSIONED = ("last_edited_time",)
#: The table is partitioned by this column: merges rewrite only the current versions' files.
PARTITION_COLUMN = "is_current"

_TS = pa.timestamp("us", tz="UTC")
_ID = pa.field("id", pa.string(), nullable=False)

#: Delta operations that change no row: a ``leads`` version made by one is not replayed. (A
#: ``CREATE TABLE`` creates an empty table; the first load is the next commit. Replayed onto an
#: existing history, the empty table would read as every lead deleted.)
_NO_DATA_OPERATIONS = ROW_KEEPING_OPERATIONS | {"CREATE TABLE"}

_ACTION = "_action"
_CLOSE, _INSERT = "close", "insert"
#: A derivation that loses a commit race to another writer is redone from the new state.
_ATTEMPTS = 8
_RETRY_DELAY_SECONDS = 0.25


class LeadsTableMissingError(RuntimeError):
    """``lead_history`` was asked for before ``leads`` exists."""


class HistorySchemaError(RuntimeError):
    """A column of ``leads`` cannot be stored in the ``lead_history`` column of the same name."""


@dataclass(frozen=True)
class ExaminedThrough:
    """What a previous derivation that committed nothing had examined (a hint, never the truth).

    When ``lead_history`` is still at ``history_version``, the ``leads`` versions up to
    ``leads_version`` are known to add nothing and are not read again. Without the hint (a fresh
    Dagster instance), they are: the result is the same.
    """

    history_version: int
    leads_version: int
    #: The commit time (ms) of that ``leads`` version, as its Delta log says.
    leads_commit_timestamp: int


@dataclass(frozen=True)
class HistoryOutcome:
    """What one derivation of ``lead_history`` did."""

    #: ``backfill`` (first derivation), ``incremental``, ``replay`` (``leads`` was recreated or
    #: the mark is missing: every version replayed onto the existing history) or ``unchanged``.
    mode: str
    #: The ``leads`` version the history is derived through after this derivation, and its
    #: commit time (ms; None when its log entry is gone).
    leads_version: int
    leads_commit_timestamp: int | None
    #: The ``leads`` versions compared, oldest first, and those that could not be read (vacuumed).
    leads_versions_read: tuple[int, ...]
    leads_versions_unreadable: tuple[int, ...]
    versions_added: int
    versions_closed: int
    leads_changed: int
    #: Versions added per ``change``.
    changes: Mapping[str, int]
    committed: bool
    #: The ``lead_history`` Delta version (None when the table does not exist).
    version: int | None
    rows: int
    #: The versions added, for a preview.
    added: pa.Table = field(repr=False)
    #: ``lead_history`` as loaded after the derivation (saves opening it again).
    table: DeltaTable | None = field(default=None, repr=False, compare=False)


def history_schema(leads_schema: pa.Schema) -> pa.Schema:
    """The schema of a new ``lead_history`` for a ``leads`` table of ``leads_schema``.

    ``id``, the version columns, every other column of ``leads`` in its order, ``synced_at``.
    """
    values = [f for f in leads_schema if f.name != "id"]
    clash = [f.name for f in values if f.name in HISTORY_ONLY_COLUMNS]
    if clash:
        raise HistorySchemaError(
            f"leads has column(s) {', '.join(clash)}, which lead_history uses for itself."
        )
    return pa.schema([_ID, *HISTORY_VERSION_FIELDS, *values, HISTORY_SYNCED_AT])


def derive_history(
    lake: DeltaLake,
    *,
    examined: ExaminedThrough | None = None,
    metadata: Mapping[str, str] | None = None,
) -> HistoryOutcome:
    """Brings ``lead_history`` in line with every ``leads`` version written since its last commit.

    Args:
        lake: The lake holding ``leads`` (and ``raw_notion_leads``, for deletion times).
        examined: What the previous derivation examined without committing (see
            :class:`ExaminedThrough`); only saves reading those ``leads`` versions again.
        metadata: Extra commit metadata (e.g. the source).

    Returns:
        What was added, and the versions of both tables.

    Raises:
        LeadsTableMissingError: If ``leads`` does not exist yet.
        HistorySchemaError: If a column of ``leads`` changed to a type its history cannot hold.
    """
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            return _derive(lake, examined, metadata or {})
        except CommitFailedError:
            # Another writer committed to lead_history since it was read: derive again from it.
            if attempt == _ATTEMPTS:
                raise
            time.sleep(_RETRY_DELAY_SECONDS * 2 ** (attempt - 1) * random.uniform(0.5, 1.5))
    raise AssertionError("unreachable")  # pragma: no cover


# -- planning: which leads versions to replay -----------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    mode: str
    after: int  # replay the leads versions after this one (-1: all)
    history: DeltaTable | None
    commits: list[dict]  # the commits of leads from ``after`` on (all: every one still logged)


def _plan(lake: DeltaLake, leads: DeltaTable, examined: ExaminedThrough | None) -> _Plan:
    history = lake.load(HISTORY_TABLE)
    if history is None:
        return _Plan("backfill", -1, None, leads.history())
    through = leads.version()
    mark, stamp = _history_marks(history)
    if mark is None or mark > through:
        return _Plan("replay", -1, history, leads.history())  # the mark is gone, or leads is new
    after = mark
    commits = leads.history(through - after + 1)
    if not _same_commit(commits, after, stamp):
        return _Plan("replay", -1, history, leads.history())  # leads was recreated since
    if (
        examined is not None
        and examined.history_version == history.version()
        and after <= examined.leads_version <= through
        and _same_commit(commits, examined.leads_version, examined.leads_commit_timestamp)
    ):
        after = examined.leads_version
    return _Plan("incremental", after, history, commits)


def _history_marks(history: DeltaTable) -> tuple[int | None, int | None]:
    """The ``leads`` version, and its commit time, that ``lead_history`` is derived through.

    Read from the newest of the last 200 commits that records them (compactions record none).
    """
    commit = newest_commit_with(history, LEADS_VERSION_KEY)
    if commit is None:
        return None, None
    stamp = commit.get(METADATA_PREFIX + LEADS_COMMIT_KEY)
    return int(commit[METADATA_PREFIX + LEADS_VERSION_KEY]), int(
        stamp
    ) if stamp is not None else None


def _same_commit(commits: list[dict], version: int, timestamp: object) -> bool:
    """Whether ``leads`` version ``version`` is the commit made at ``timestamp`` (unknown: yes)."""
    entry = next((c for c in commits if c["version"] == version), None)
    if entry is None or timestamp is None:
        return True
    return str(entry["timestamp"]) == str(timestamp)


def _commit_timestamp(commits: list[dict], version: int) -> int | None:
    return next((int(c["timestamp"]) for c in commits if c["version"] == version), None)


def _pending_versions(plan: _Plan, through: int) -> list[dict]:
    """The commits of ``leads`` after the plan's mark that may have changed rows, oldest first."""
    pending = [
        c
        for c in plan.commits
        if plan.after < c["version"] <= through and c.get("operation") not in _NO_DATA_OPERATIONS
    ]
    return sorted(pending, key=lambda c: c["version"])


# -- the derivation -------------------------------------------------------------------------------


def _derive(
    lake: DeltaLake, examined: ExaminedThrough | None, metadata: Mapping[str, str]
) -> HistoryOutcome:
    leads = lake.load(LEADS_TABLE)
    if leads is None:
        raise LeadsTableMissingError(
            "leads does not exist yet: materialize it first (job sync_leads)."
        )
    through = leads.version()
    plan = _plan(lake, leads, examined)
    stamp = _commit_timestamp(plan.commits, through)
    pending = _pending_versions(plan, through)
    if plan.history is not None and not pending:
        return _unchanged(plan, through, stamp)

    if plan.history is None:
        columns = _ValueColumns(history_schema(pa.schema(leads.schema().to_arrow())))
    else:
        columns = _ValueColumns(pa.schema(plan.history.schema().to_arrow()))
    current, kept = None, None
    events = (
        _events_from_feed(leads, pending, columns) if _feed_applies(plan, leads, pending) else None
    )
    if events is None:
        current = (
            columns.schema().empty_table()
            if plan.history is None
            else _current_versions(lake, plan.history)
        )
        events = _events_from_snapshots(lake, leads, pending, columns, columns.values(current))
    deletions = [
        _deletion_times(lake, commit, step, gone) for commit, step, gone in events.gone_by_step
    ]

    target = columns.schema()
    evolves = plan.history is not None and bool(
        set(target.names) - set(plan.history.schema().to_arrow().names)
    )
    if events.steps:
        all_events = pa.concat_tables([columns.values(e, keep=_EVENT_FIELDS) for e in events.steps])
        if current is None:
            current, kept = _current_for(lake, plan.history, all_events, target, evolves)
        base = _base_versions(plan.history, current, all_events, columns)
        added, closing = _combine(all_events, base, _concat(deletions, _DELETIONS_SCHEMA), columns)
    else:
        added, closing = target.empty_table(), _closing_schema().empty_table()

    commit_metadata = {
        **metadata,
        LEADS_VERSION_KEY: str(through),
        **({LEADS_COMMIT_KEY: str(stamp)} if stamp is not None else {}),
    }
    read, unreadable = tuple(events.read), tuple(events.unreadable)
    if plan.history is None:
        _create(lake, added.cast(target), commit_metadata)
    elif not (added.num_rows or closing.num_rows):
        return _unchanged(plan, through, stamp, read, unreadable)
    else:
        _rewrite_current(
            lake, plan.history, current, added.cast(target), closing, evolves, commit_metadata, kept
        )
    if plan.history is None:
        table = lake.load(HISTORY_TABLE)
    else:
        table = plan.history
        table.update_incremental()  # onto the commit just made (cheaper than a new load)
    lake.checkpoint_if_due(HISTORY_TABLE, table.version(), table)
    counts = pc.value_counts(added["change"]).to_pylist() if added.num_rows else []
    return HistoryOutcome(
        mode=plan.mode,
        leads_version=through,
        leads_commit_timestamp=stamp,
        leads_versions_read=read,
        leads_versions_unreadable=unreadable,
        versions_added=added.num_rows,
        versions_closed=closing.num_rows,
        leads_changed=pc.count_distinct(added["id"]).as_py() if added.num_rows else 0,
        changes={c: next((x["counts"] for x in counts if x["values"] == c), 0) for c in CHANGES},
        committed=True,
        version=table.version(),
        rows=_row_count(table),
        added=added,
        table=table,
    )


@dataclass
class _Events:
    """What the replayed ``leads`` versions changed, one table of events per version."""

    steps: list[pa.Table] = field(default_factory=list)
    #: (commit, version, ids) of the leads each version removed: their deletion times are looked up.
    gone_by_step: list[tuple[Mapping, int, pa.Array]] = field(default_factory=list)
    read: list[int] = field(default_factory=list)
    unreadable: list[int] = field(default_factory=list)

    def add(self, commit: Mapping, step: pa.Table) -> None:
        if step.num_rows == 0:
            return
        self.steps.append(step)
        gone = pc.filter(step["id"], pc.equal(step["kind"], "gone"))
        if len(gone):
            self.gone_by_step.append((commit, commit["version"], gone))


def _events_from_snapshots(
    lake: DeltaLake,
    leads: DeltaTable,
    pending: list[dict],
    columns: _ValueColumns,
    previous: pa.Table,
) -> _Events:
    """Compares each pending ``leads`` version in full with the one before (``previous`` first)."""
    events = _Events()
    for commit in pending:
        version = commit["version"]
        snapshot = _read_leads_version(lake, leads, version)
        if snapshot is None:
            events.unreadable.append(version)
            continue
        events.read.append(version)
        columns.extend(snapshot.schema)
        snapshot = columns.values(_one_row_per_id(snapshot))
        previous = columns.values(previous)
        events.add(commit, _diff(previous, snapshot, columns, version, _commit_time(commit)))
        previous = snapshot
    return events


#: The Delta table property that makes delta-rs write a change data feed.
CHANGE_FEED_PROPERTY = "delta.enableChangeDataFeed"
_FEED_COLUMNS = ("_change_type", "_commit_version", "_commit_timestamp")
_BEFORE = pa.array(["delete", "update_preimage"])
_AFTER = pa.array(["insert", "update_postimage"])


def _has_change_feed(table: DeltaTable) -> bool:
    return str(table.metadata().configuration.get(CHANGE_FEED_PROPERTY, "")).lower() == "true"


def _feed_applies(plan: _Plan, leads: DeltaTable, pending: list[dict]) -> bool:
    """Whether the pending versions are read from the change data feed of ``leads``.

    Only when continuing from the history's mark (a backfill or a replay compares every version
    with the one before, starting from the history's current versions), and not across an
    overwrite of ``leads`` (a rebuild, which may drop columns; the feed would hold every row
    anyway, and a full comparison costs less).
    """
    if plan.mode != "incremental" or not pending or not _has_change_feed(leads):
        return False
    return all(_feed_reads(commit) for commit in pending)


def _feed_reads(commit: Mapping) -> bool:
    """Whether a commit's changes are exactly what the feed shows (no overwrite)."""
    operation = commit.get("operation")
    if operation in ("MERGE", "DELETE", "UPDATE"):
        return True
    mode = str((commit.get("operationParameters") or {}).get("mode", "")).lower()
    return operation == "WRITE" and mode in ("append", "errorifexists")


def _events_from_feed(
    leads: DeltaTable, pending: list[dict], columns: _ValueColumns
) -> _Events | None:
    """The events of the pending versions from the change data feed: only changed rows are read.

    Each version's rows before (deleted, pre-images) are compared with its rows after (inserted,
    post-images), as a full comparison would. A version written before the feed was turned on
    is read from its added and removed files (delta-rs reads them as inserts and deletes).

    Returns:
        The events, or None when the feed cannot answer (vacuumed): compare snapshots instead.
    """
    versions = [c["version"] for c in pending]
    try:
        feed = pa.table(
            leads.load_cdf(starting_version=versions[0], ending_version=versions[-1]).read_all()
        )
    except Exception:  # any failure: missing files surface as a plain Exception
        return None  # the feed is an optimisation: compare whole versions instead
    feed = _without_views(feed)
    columns.extend(pa.schema(leads.schema().to_arrow()))
    kinds = feed["_change_type"].cast(pa.string())
    at = feed["_commit_version"].cast(pa.int64())
    events = _Events(read=list(versions))
    for commit in pending:
        version = commit["version"]
        here = pc.equal(at, version)
        before = feed.filter(pc.and_(here, pc.is_in(kinds, _BEFORE)))
        after = feed.filter(pc.and_(here, pc.is_in(kinds, _AFTER)))
        if before.num_rows == 0 and after.num_rows == 0:
            continue
        before, after = (
            columns.values(_one_row_per_id(t.drop_columns(list(_FEED_COLUMNS))))
            for t in (before, after)
        )
        events.add(commit, _diff(before, after, columns, version, _commit_time(commit)))
    return events


def _without_views(table: pa.Table) -> pa.Table:
    """``table`` with string and binary views (as the feed returns them) as plain arrays."""
    plain = {pa.types.is_string_view: pa.string(), pa.types.is_binary_view: pa.binary()}

    def unviewed(kind: pa.DataType) -> pa.DataType:
        return next((t for test, t in plain.items() if test(kind)), kind)

    schema = pa.schema(f.with_type(unviewed(f.type)) for f in table.schema)
    return table if schema == table.schema else table.cast(schema)


def enable_leads_change_feed(lake: DeltaLake) -> bool:
    """Turns on the change data feed of ``leads`` (one commit, once), if it is not on yet.

    With it, each derivation of ``lead_history`` reads only the rows a sync changed instead of
    comparing two whole versions of ``leads``. Tables written before keep working (their versions
    are compared in full).

    Returns:
        Whether a commit was made.
    """
    for attempt in range(1, _ATTEMPTS + 1):
        leads = lake.load(LEADS_TABLE)
        if leads is None or _has_change_feed(leads):
            return False
        try:
            leads.alter.set_table_properties(
                {CHANGE_FEED_PROPERTY: "true"},
                raise_if_not_exists=False,
                commit_properties=commit_properties(
                    {"operation": "enable change data feed"}, retry=False
                ),
            )
            return True
        except CommitFailedError:
            if attempt == _ATTEMPTS:
                raise
            time.sleep(_RETRY_DELAY_SECONDS * random.uniform(0.5, 1.5))
    raise AssertionError("unreachable")  # pragma: no cover


def _current_for(
    lake: DeltaLake, history: DeltaTable | None, events: pa.Table, schema: pa.Schema, evolves: bool
) -> tuple[pa.Table, list[AddAction] | None]:
    """The current versions needed to apply ``events`` read from the feed.

    When every event is a lead appearing (and no column is added), none of them should have a
    current version: a narrow read of the ids confirms it and nothing is rewritten. Otherwise the
    ``is_current=true`` partition is rewritten: the versions of the leads with events are
    returned, with the files already written holding every other current version (see
    :class:`_CurrentSplit`); or, when those files cannot be read directly, every current version
    and None.
    """
    if history is None:
        raise AssertionError("the feed is only read onto an existing history")
    ids = pc.unique(events["id"])
    only_new = not evolves and pc.all(pc.equal(events["kind"], "new")).as_py()
    if only_new:
        found = history.to_pyarrow_dataset().to_table(
            columns=["id"],
            filter=(ds.field(PARTITION_COLUMN) == True) & key_in("id", ids),  # noqa: E712
        )
        if found.num_rows == 0:
            return pa.schema(history.schema().to_arrow()).empty_table(), None
    split = _split_current(lake, history, ids, schema)
    if split is None:
        return _current_versions(lake, history), None
    return split.touched, split.kept


def _unchanged(
    plan: _Plan,
    through: int,
    stamp: int | None,
    read: tuple[int, ...] = (),
    unreadable: tuple[int, ...] = (),
) -> HistoryOutcome:
    history = plan.history
    return HistoryOutcome(
        mode="unchanged",
        leads_version=through,
        leads_commit_timestamp=stamp,
        leads_versions_read=read,
        leads_versions_unreadable=unreadable,
        versions_added=0,
        versions_closed=0,
        leads_changed=0,
        changes=dict.fromkeys(CHANGES, 0),
        committed=False,
        version=history.version(),
        rows=_row_count(history),
        added=pa.schema(history.schema().to_arrow()).empty_table(),
        table=history,
    )


class _ValueColumns:
    """The columns of ``lead_history``, growing as ``leads`` versions bring new columns.

    The value columns are every column of ``leads`` but ``id``, in the history's order, then the
    columns ``leads`` gained since (schema evolution: older versions read NULL there).
    """

    def __init__(self, history: pa.Schema):
        self._schema = history
        self._check_history(history)

    @staticmethod
    def _check_history(schema: pa.Schema) -> None:
        missing = [n for n in ("id", *HISTORY_ONLY_COLUMNS) if n not in schema.names]
        if missing:
            raise HistorySchemaError(
                f"lead_history lacks column(s) {', '.join(missing)}: it was not written by this "
                "pipeline."
            )

    def extend(self, leads: pa.Schema) -> None:
        """Adds the columns of a ``leads`` version the history does not have yet."""
        for name in leads.names:
            if name in HISTORY_ONLY_COLUMNS:
                raise HistorySchemaError(
                    f"leads has a column {name!r}, which lead_history uses for itself."
                )
            if name not in self._schema.names:
                self._schema = self._schema.append(leads.field(name).with_nullable(True))

    def schema(self) -> pa.Schema:
        return self._schema

    @property
    def names(self) -> list[str]:
        """The value columns (every column of leads but ``id``)."""
        return [n for n in self._schema.names if n != "id" and n not in HISTORY_ONLY_COLUMNS]

    @property
    def compared(self) -> list[str]:
        """The value columns whose change makes a version."""
        return [n for n in self.names if n not in UNVERSIONED]

    def values(self, table: pa.Table, keep: Sequence[pa.Field] = ()) -> pa.Table:
        """``table`` as ``id``, the ``keep`` columns and every value column, in that order.

        Columns ``table`` lacks are NULL; columns it has are cast to the history's type.
        """
        fields = [_ID, *keep, *(self._schema.field(n) for n in self.names)]
        arrays = []
        for f in fields:
            if f.name not in table.column_names:
                arrays.append(pa.nulls(table.num_rows, f.type))
                continue
            column = table[f.name]
            if column.type != f.type:
                try:
                    column = column.cast(f.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
                    raise HistorySchemaError(
                        f"Column {f.name!r} is {column.type} in leads but {f.type} in "
                        f"lead_history, and its values cannot be converted ({error}). The "
                        "property map changed this column's kind: map the property to a new "
                        "column name instead."
                    ) from error
            arrays.append(column)
        return pa.Table.from_arrays(arrays, schema=pa.schema(f.with_nullable(True) for f in fields))


def _current_versions(lake: DeltaLake, history: DeltaTable) -> pa.Table:
    """Every current version: the files of the ``is_current=true`` partition, read directly.

    Read on every sync that closes a version, so not through ``to_pyarrow_dataset``, which
    builds an expression from every file's statistics first (about a third of the read).
    """
    dataset = _current_dataset(lake, history)
    if dataset is None:
        current = ds.field(PARTITION_COLUMN) == True  # noqa: E712
        return history.to_pyarrow_dataset().to_table(filter=current)
    return _with_current_flag(dataset.to_table(), history)


def _current_dataset(lake: DeltaLake, history: DeltaTable) -> ds.Dataset | None:
    """The files of the ``is_current=true`` partition as a dataset (without the partition
    column), or None when the log names them by absolute paths (then delta-rs resolves them)."""
    actions = pa.table(history.get_add_actions(flatten=True))
    current = actions.filter(pc.fill_null(actions[f"partition.{PARTITION_COLUMN}"], False))
    paths = [unquote(p) for p in current["path"].to_pylist()]
    if any("://" in p or p.startswith("/") for p in paths):
        return None
    stored = pa.schema(
        f for f in pa.schema(history.schema().to_arrow()) if f.name != PARTITION_COLUMN
    )
    files = _table_files(lake, history.table_uri)
    return ds.dataset(paths, schema=stored, format="parquet", filesystem=files)


def _with_current_flag(rows: pa.Table, history: DeltaTable) -> pa.Table:
    """``rows`` read from the current versions' files, with their partition column (true)."""
    schema = pa.schema(history.schema().to_arrow())
    flags = pa.array([True] * rows.num_rows, pa.bool_())
    return rows.add_column(
        schema.get_field_index(PARTITION_COLUMN), schema.field(PARTITION_COLUMN), flags
    )


@dataclass(frozen=True)
class _CurrentSplit:
    """The current versions of the leads with events, and files already holding all the others.

    Each writer reads its share of the current versions' row groups, keeps aside those of the
    leads with events and writes the rest straight back as a new file: reading, filtering and
    encoding overlap on every core, and no table of every current version is ever assembled.
    """

    touched: pa.Table
    kept: list[AddAction]


def _split_current(
    lake: DeltaLake, history: DeltaTable, ids: pa.Array, schema: pa.Schema
) -> _CurrentSplit | None:
    """Splits the current versions into those of ``ids`` and the others (written, in ``schema``).

    Returns None when the files cannot be read directly (see :func:`_current_dataset`).
    """
    dataset = _current_dataset(lake, history)
    if dataset is None:
        return None
    pieces = [
        piece for fragment in dataset.get_fragments() for piece in fragment.split_by_row_group()
    ]
    shares = _balanced(pieces, max(1, min(os.cpu_count() or 1, _WRITERS)))
    files = _table_files(lake, history.table_uri)
    stored = dataset.schema

    def split(share: list[ds.ParquetFileFragment]) -> tuple[pa.Table, AddAction | None]:
        rows = pa.concat_tables(
            [p.to_table(schema=stored) for p in share] or [stored.empty_table()]
        )
        hit = pc.is_in(rows["id"], value_set=ids)
        kept = rows.filter(pc.invert(hit))
        action = _write_file(files, _conform(kept, schema), True) if kept.num_rows else None
        return rows.filter(hit), action

    if len(shares) == 1:
        results = [split(shares[0])]
    else:
        with ThreadPoolExecutor(len(shares)) as pool:
            results = list(pool.map(split, shares))
    touched = pa.concat_tables([t for t, _ in results] or [stored.empty_table()])
    return _CurrentSplit(
        touched=_with_current_flag(touched, history),
        kept=[a for _, a in results if a is not None],
    )


def _balanced(pieces: list[ds.ParquetFileFragment], count: int) -> list[list]:
    """``pieces`` (one row group each) in at most ``count`` shares of about equal rows."""
    shares: list[list] = [[] for _ in range(min(count, len(pieces)) or 1)]
    loads = [0] * len(shares)
    for piece in sorted(pieces, key=lambda p: -p.row_groups[0].num_rows):
        lightest = loads.index(min(loads))
        shares[lightest].append(piece)
        loads[lightest] += piece.row_groups[0].num_rows
    return shares


def _read_leads_version(lake: DeltaLake, leads: DeltaTable, version: int) -> pa.Table | None:
    """The rows of ``leads`` at ``version``, or None when they can no longer be read (vacuumed)."""
    try:
        table = leads if version == leads.version() else lake.load(LEADS_TABLE, version=version)
        return table.to_pyarrow_dataset().to_table()
    except (DeltaError, OSError, pa.ArrowException):
        return None


def _one_row_per_id(snapshot: pa.Table) -> pa.Table:
    """``snapshot`` with one row per id (a ``leads`` version holding an id twice: its newest)."""
    if pc.count_distinct(snapshot["id"]).as_py() == snapshot.num_rows:
        return snapshot
    order = tuple(c for c in ("last_edited_time",) if c in snapshot.column_names)
    return newest_per_key(snapshot, "id", order)


def _row_count(table: DeltaTable) -> int:
    """Rows of a table, from the row counts its Delta log keeps per file (no file is opened)."""
    counts = pa.table(table.get_add_actions(flatten=True))["num_records"]
    if counts.null_count:
        return table.to_pyarrow_dataset().count_rows()
    return int(pc.sum(counts).as_py() or 0)


def _commit_time(commit: Mapping) -> datetime:
    return datetime.fromtimestamp(commit["timestamp"] / 1000, UTC)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _concat(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    return pa.concat_tables(tables) if tables else schema.empty_table()


_EVENT_FIELDS = (
    pa.field("step", pa.int64()),
    pa.field("kind", pa.string()),
    pa.field("event_time", _TS),
    HISTORY_SYNCED_AT,
)
_DELETIONS_SCHEMA = pa.schema(
    [pa.field("step", pa.int64()), pa.field("id", pa.string()), pa.field("deleted_at", _TS)]
)


def _diff(
    previous: pa.Table, current: pa.Table, columns: _ValueColumns, step: int, observed: datetime
) -> pa.Table:
    """The leads that appeared (``new``), left (``gone``) or changed between two snapshots.

    One vectorised full join on ``id``. A ``gone`` lead keeps its previous values; the others take
    the current ones. ``event_time`` is the lead's ``last_edited_time`` (NULL for ``gone``).
    """
    names = columns.names
    differs = " OR ".join(f"p.{_ident(c)} IS DISTINCT FROM c.{_ident(c)}" for c in columns.compared)
    values = ", ".join(
        f"CASE WHEN c.id IS NULL THEN p.{_ident(c)} ELSE c.{_ident(c)} END AS {_ident(c)}"
        for c in names
    )
    con = scratch_connection()
    try:
        con.register("p", previous)
        con.register("c", current)
        result = con.sql(
            f"""
            SELECT coalesce(c.id, p.id) AS id, $step AS step,
                   CASE WHEN p.id IS NULL THEN 'new' WHEN c.id IS NULL THEN 'gone'
                        ELSE 'changed' END AS kind,
                   c.last_edited_time AS event_time,
                   $observed AS synced_at,
                   {values}
            FROM p FULL JOIN c ON p.id = c.id
            WHERE p.id IS NULL OR c.id IS NULL OR {differs or "FALSE"}
            """,
            params={"step": step, "observed": observed},
        ).to_arrow_table()
    finally:
        con.close()
    return columns.values(result, keep=_EVENT_FIELDS)


def _deletion_times(lake: DeltaLake, commit: Mapping, step: int, ids: pa.Array) -> pa.Table:
    """When raw says the ``ids`` were deleted, as of the raw version that ``leads`` commit read.

    A page missing there, or not marked deleted, gets no row (its deletion time is then the time
    of the ``leads`` commit).
    """
    empty = _DELETIONS_SCHEMA.empty_table()
    raw_version = commit.get(METADATA_PREFIX + RAW_MARK_KEY)
    try:
        raw = lake.load(RAW_TABLE, version=int(raw_version) if raw_version else None)
        if raw is None:
            return empty
        rows = raw.to_pyarrow_dataset().to_table(
            columns=["page_id", "deleted_at"],
            filter=key_in("page_id", ids) & ~ds.field("deleted_at").is_null(),
        )
    except (DeltaError, OSError, ValueError, pa.ArrowException):
        return empty
    return pa.table(
        {
            "step": pa.array([step] * rows.num_rows, pa.int64()),
            "id": rows["page_id"],
            "deleted_at": rows["deleted_at"].cast(_TS),
        },
        schema=_DELETIONS_SCHEMA,
    )


def _base_versions(
    history: DeltaTable | None, current: pa.Table, events: pa.Table, columns: _ValueColumns
) -> pa.Table:
    """The latest stored version of each lead with events: its current one, else its tombstone.

    Tombstones are looked up only for leads that appeared without a current version (a new lead or
    a restored one), reading first only the ids of the closed versions.
    """
    keep = [
        f for f in columns.schema() if f.name in ("version", "valid_from", "is_current", "change")
    ]
    ids = pc.unique(events["id"])
    base = columns.values(current.filter(pc.is_in(current["id"], ids)), keep=keep)
    if history is None:
        return base
    unmatched = pc.filter(ids, pc.invert(pc.is_in(ids, base["id"])))
    if len(unmatched) == 0:
        return base
    closed = ds.field(PARTITION_COLUMN) == False  # noqa: E712
    dataset = history.to_pyarrow_dataset()
    seen = dataset.to_table(columns=["id"], filter=closed & key_in("id", unmatched))
    if seen.num_rows == 0:
        return base
    rows = dataset.to_table(filter=closed & key_in("id", pc.unique(seen["id"])))
    latest = newest_per_key(rows, "id", ("version",))
    return pa.concat_tables([base, columns.values(latest, keep=keep)])


def _closing_schema() -> pa.Schema:
    return pa.schema([_ID, pa.field("version", pa.int64()), pa.field("valid_to", _TS)])


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _combine(
    events: pa.Table, base: pa.Table, deletions: pa.Table, columns: _ValueColumns
) -> tuple[pa.Table, pa.Table]:
    """Numbers the events of every lead after its stored versions, and links them into a chain.

    Each lead's chain is its stored latest version (if any), then its events by step. The chain
    is walked over narrow NumPy arrays (ids, steps, times, positions); the values are then taken
    by position and compared column by column in Arrow.

    Args:
        events: Every lead's events, all steps (``step`` = the ``leads`` version).
        base: The latest stored version of those leads (current, or a tombstone).
        deletions: Deletion times of the ``gone`` events, by step and id.
        columns: The history's columns.

    Returns:
        The versions to insert, and the current versions to close (``id``, ``version``,
        ``valid_to``).
    """
    names = columns.names
    values = pa.concat_tables([base.select(["id", *names]), events.select(["id", *names])])
    chain = _Chain(base, events, _event_times(events, deletions))
    added_at = np.flatnonzero(~chain.is_base)
    rows = values.take(pa.array(chain.order[added_at]))
    has_previous = added_at > chain.start[added_at]
    previous = values.take(pa.array(chain.order[added_at - 1], mask=~has_previous))
    kinds = chain.kind[added_at]
    gone = kinds == _GONE
    previous_kind = np.where(has_previous, chain.kind[np.maximum(added_at - 1, 0)], "")
    after_tombstone = (previous_kind == _GONE) | (
        (previous_kind == _BASE) & chain.base_deleted[np.maximum(added_at - 1, 0)]
    )
    change = np.select(
        [gone, ~has_previous, after_tombstone], [DELETED, CREATED, RESTORED], UPDATED
    )
    valid_from = chain.valid_from[added_at]
    added = {
        "id": rows["id"],
        "version": pa.array(chain.version[added_at], pa.int64()),
        "valid_from": _timestamps(valid_from),
        "valid_to": _timestamps(np.where(gone, valid_from, chain.next_valid_from[added_at])),
        PARTITION_COLUMN: pa.array(chain.is_last[added_at] & ~gone),
        "change": pa.array(change, pa.string()),
        "changed_columns": _changed_columns(rows, previous, columns.compared, ~has_previous, gone),
        **{name: rows[name] for name in names},
        HISTORY_SYNCED_AT.name: events[HISTORY_SYNCED_AT.name].take(
            pa.array(chain.order[added_at] - base.num_rows)
        ),
    }
    target = columns.schema()
    table = pa.table({name: added[name] for name in target.names})

    closes = np.flatnonzero(chain.is_base & chain.base_current & ~chain.is_last)
    closing = pa.table(
        {
            "id": values["id"].take(pa.array(chain.order[closes])),
            "version": pa.array(chain.stored_version[closes], pa.int64()),
            "valid_to": _timestamps(chain.next_valid_from[closes]),
        }
    )
    return table.cast(target), closing.cast(_closing_schema())


_BASE, _GONE = "base", "gone"
#: NULL times in the chain's int64 microseconds (below any real time: ``max`` ignores them).
_NO_TIME = np.iinfo(np.int64).min


class _Chain:
    """Every lead's chain, sorted by lead then step: its stored version, then its events.

    Arrays are in chain order; ``order`` maps back to positions in ``base`` then ``events``.
    """

    def __init__(self, base: pa.Table, events: pa.Table, event_times: np.ndarray):
        ids = pa.concat_arrays([c.combine_chunks() for c in (base["id"], events["id"])]).cast(
            pa.string()
        )
        steps = np.concatenate(
            [np.full(base.num_rows, -1, np.int64), _numpy(events["step"], np.int64)]
        )
        self.order = np.asarray(
            pc.sort_indices(
                pa.table({"id": ids, "step": steps}),
                sort_keys=[("id", "ascending"), ("step", "ascending")],
            ),
            dtype=np.int64,
        )
        size = len(self.order)
        sorted_ids = ids.take(pa.array(self.order))
        new_lead = np.ones(size, bool)
        if size > 1:
            new_lead[1:] = _numpy(pc.not_equal(sorted_ids[1:], sorted_ids[:-1]), bool)
        position = np.arange(size)
        self.start = np.maximum.accumulate(np.where(new_lead, position, 0))
        ends = np.ones(size, bool)
        ends[:-1] = new_lead[1:]
        self.is_last = ends

        kind = np.concatenate(
            [np.full(base.num_rows, _BASE, object), _numpy(events["kind"], object)]
        )
        self.kind = kind[self.order]
        self.is_base = self.kind == _BASE
        stored = np.concatenate(
            [_numpy(base["version"], np.int64), np.zeros(events.num_rows, np.int64)]
        )[self.order]
        self.base_current = np.concatenate(
            [
                _numpy(pc.fill_null(base[PARTITION_COLUMN], False), bool),
                np.zeros(events.num_rows, bool),
            ]
        )[self.order]
        self.base_deleted = np.concatenate(
            [
                _numpy(pc.fill_null(pc.equal(base["change"], DELETED), False), bool),
                np.zeros(events.num_rows, bool),
            ]
        )[self.order]
        # A lead's stored version heads its chain (step -1); the events are numbered after it.
        self.stored_version = np.where(self.is_base[self.start], stored[self.start], 0)
        counted = np.cumsum(~self.is_base)
        before = counted[self.start] - (~self.is_base[self.start])
        self.version = self.stored_version + counted - before

        times = np.concatenate([_micros(base["valid_from"]), event_times])[self.order]
        self.valid_from = _running_max(times, self.start)
        self.next_valid_from = np.full(size, _NO_TIME, np.int64)
        self.next_valid_from[:-1] = np.where(ends[:-1], _NO_TIME, self.valid_from[1:])


def _event_times(events: pa.Table, deletions: pa.Table) -> np.ndarray:
    """Each event's time (µs): a ``gone`` one's deletion time, else its edit time; when unknown,
    when it was observed."""
    deleted = np.full(events.num_rows, _NO_TIME, np.int64)
    if deletions.num_rows:
        keys = pc.binary_join_element_wise(events["id"], events["step"].cast(pa.string()), "\x00")
        deletion_keys = pc.binary_join_element_wise(
            deletions["id"], deletions["step"].cast(pa.string()), "\x00"
        )
        deleted = _micros(deletions["deleted_at"].take(pc.index_in(keys, deletion_keys)))
    gone = _numpy(events["kind"], object) == _GONE
    known = np.where(gone, deleted, _micros(events["event_time"]))
    return np.where(known == _NO_TIME, _micros(events[HISTORY_SYNCED_AT.name]), known)


def _running_max(values: np.ndarray, start: np.ndarray) -> np.ndarray:
    """The maximum of ``values`` from each row's group ``start`` to the row (a prefix scan)."""
    result = values.copy()
    position = np.arange(len(values))
    step = 1
    while step < len(values):
        source = position - step
        inside = source >= start
        if not inside.any():
            break
        shifted = result.copy()
        shifted[inside] = np.maximum(result[inside], result[source[inside]])
        result = shifted
        step *= 2
    return result


def _numpy(column: pa.ChunkedArray | pa.Array, dtype) -> np.ndarray:
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=dtype)


def _micros(column: pa.ChunkedArray) -> np.ndarray:
    """A timestamp column as int64 microseconds (UTC), NULL as :data:`_NO_TIME`."""
    as_us = column.cast(_TS).cast(pa.int64())
    return _numpy(pc.fill_null(as_us, _NO_TIME), np.int64)


def _timestamps(micros: np.ndarray) -> pa.Array:
    return pa.array(micros, pa.int64(), mask=micros == _NO_TIME).cast(_TS)


def _changed_columns(
    rows: pa.Table,
    previous: pa.Table,
    compared: Sequence[str],
    first: np.ndarray,
    gone: np.ndarray,
) -> pa.Array:
    """Per row, the ``compared`` columns that make it a new version, in order.

    A first version lists the columns holding a value, a tombstone none, any other version the
    columns whose value is distinct from the previous version's (NULL and a value differ, two
    NULLs do not).
    """
    masks = np.zeros((rows.num_rows, len(compared)), dtype=bool)
    for position, name in enumerate(compared):
        holds = rows[name].is_valid().to_numpy(zero_copy_only=False)
        differs = _distinct(rows[name], previous[name])
        masks[:, position] = np.where(first, holds, differs) & ~gone
    counts = masks.sum(axis=1)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    _, which = np.nonzero(masks)  # row-major: each row's columns in order
    names = pa.array(list(compared), pa.string()).take(pa.array(which, pa.int64()))
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), names)


def _distinct(left: pa.ChunkedArray, right: pa.ChunkedArray) -> np.ndarray:
    """``left IS DISTINCT FROM right``, row by row, as NumPy booleans."""
    try:
        unequal = pc.not_equal(left, right)
    except pa.ArrowNotImplementedError:  # nested values: DuckDB compares them
        con = scratch_connection()
        try:
            pair = pa.table({"l": left, "r": right})
            con.register("pair", pair)
            return (
                con.sql("SELECT l IS DISTINCT FROM r AS d FROM pair")
                .to_arrow_table()["d"]
                .to_numpy(zero_copy_only=False)
                .astype(bool)
            )
        finally:
            con.close()
    if pa.types.is_floating(left.type):  # NaN is not distinct from NaN, as in SQL
        both_nan = pc.and_(pc.is_nan(left), pc.is_nan(right))
        unequal = pc.and_(unequal, pc.invert(pc.fill_null(both_nan, False)))
    one_null = pc.xor(pc.is_null(left), pc.is_null(right))
    return (
        pc.fill_null(pc.if_else(pc.is_null(unequal), one_null, unequal), False)
        .to_numpy(zero_copy_only=False)
        .astype(bool)
    )


# -- writing --------------------------------------------------------------------------------------


def _create(lake: DeltaLake, rows: pa.Table, metadata: Mapping[str, str]) -> None:
    """Creates ``lead_history`` holding ``rows`` (the backfill), partitioned by ``is_current``.

    Its files are written as every later derivation writes them (:func:`_write_files`), then
    committed as the table's first version; the commit fails when another writer created the
    table meanwhile (its files are then never part of the table, and a vacuum removes them).
    """
    uri = lake.table_uri(HISTORY_TABLE)
    files = _table_files(lake, uri)
    is_current = pc.fill_null(rows[PARTITION_COLUMN], False)
    actions = _write_files(files, rows.filter(is_current), True) + _write_files(
        files, rows.filter(pc.invert(is_current)), False
    )
    try:
        create_table_with_add_actions(
            uri,
            Schema.from_arrow(rows.schema),
            actions,
            mode="error",
            partition_by=[PARTITION_COLUMN],
            storage_options=lake.storage_options,
            commit_properties=commit_properties(metadata, retry=False),
        )
    except CommitFailedError:
        raise
    except DeltaError as error:
        if lake.load(HISTORY_TABLE) is None:
            raise
        # Another writer created it first: derive again, onto its table.
        raise CommitFailedError(f"{uri} was created concurrently.") from error


#: Rows per Parquet file the rewrite writes (row groups of 64k rows, as the lake's other writes).
_ROWS_PER_FILE = 1_000_000
_ROW_GROUP_ROWS = 65_536
#: Files of one partition written at once, at most (one per core).
_WRITERS = 4


def _rewrite_current(
    lake: DeltaLake,
    history: DeltaTable,
    current: pa.Table,
    added: pa.Table,
    closing: pa.Table,
    evolves: bool,
    metadata: Mapping[str, str],
    kept: list[AddAction] | None = None,
) -> None:
    """One commit that closes the ``closing`` versions and adds ``added`` (a merge on
    ``(id, version)``, written directly).

    ``current`` is every row of the ``is_current=true`` partition at ``history``'s version (read
    for the comparison already); or, with ``kept`` (the files already holding every other
    current version, see :class:`_CurrentSplit`), only the current versions of the leads with
    events. When versions are closed, or ``leads`` brought a new column,
    that partition is replaced: the rows still current and the new current versions are written
    once, and the partition's old files are removed by the same commit (an overwrite of that
    partition, which also records the new schema: older versions read NULL in a new column).
    Closed versions and tombstones go into new files of the other partition, whose files are
    never rewritten. Nothing is read again and nothing is joined, which a delta-rs merge would
    do. The commit is made only on ``history``'s version: when another writer committed since, it
    fails and the derivation is redone.
    """
    closed = pc.is_in(current["id"], closing["id"])
    ended = current.take(pc.indices_nonzero(closed))
    valid_to = pc.take(closing["valid_to"], pc.index_in(ended["id"], closing["id"]))
    ended = ended.set_column(ended.schema.get_field_index("valid_to"), "valid_to", valid_to)
    ended = ended.set_column(
        ended.schema.get_field_index(PARTITION_COLUMN),
        PARTITION_COLUMN,
        pa.array([False] * ended.num_rows, pa.bool_()),
    )
    is_new_current = pc.fill_null(added[PARTITION_COLUMN], False)
    schema = added.schema
    replace = closing.num_rows > 0 or evolves or kept is not None
    new_current = _conform(added.filter(is_new_current), schema)
    files = _table_files(lake, history.table_uri)
    if kept is not None:
        # The others are written already; a touched version that no event closed stays current.
        rows = pa.concat_tables([_conform(current.filter(pc.invert(closed)), schema), new_current])
        actions = kept + _write_files(files, rows, True)
    elif replace:
        # The rows still current are filtered by the writers, each its own slice, in parallel.
        still = pa.chunked_array(
            [*pc.invert(closed).chunks, pa.array([True] * new_current.num_rows, pa.bool_())],
            pa.bool_(),
        )
        rows = pa.concat_tables([_conform(current, schema), new_current])
        actions = _write_files(files, rows, True, keep=still)
    else:
        actions = _write_files(files, new_current, True)
    closed_rows = [ended, added.filter(pc.invert(is_new_current))]
    actions += _write_files(
        files, pa.concat_tables([_conform(p, schema) for p in closed_rows]), False
    )
    history.create_write_transaction(
        actions,
        mode="overwrite" if replace else "append",
        schema=schema if replace else history.schema(),
        partition_by=[PARTITION_COLUMN],
        partition_filters=[(PARTITION_COLUMN, "=", "true")] if replace else None,
        commit_properties=commit_properties(metadata, retry=False),
    )


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` in ``schema``: its columns in that order, those it lacks NULL (a new column)."""
    arrays = [
        table[f.name] if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def _table_files(lake: DeltaLake, uri: str) -> pafs.FileSystem:
    """The directory of the table at ``uri`` as a filesystem: local files natively, object stores
    through deltalake's own storage (the lake's storage options and credentials)."""
    parsed = urlsplit(uri)
    if parsed.scheme in ("", "file"):
        path = url2pathname(parsed.path) if parsed.scheme else uri
        return pafs.SubTreeFileSystem(path, pafs.LocalFileSystem())
    return pafs.PyFileSystem(DeltaStorageHandler(uri, lake.storage_options))


def _write_files(
    files: pafs.FileSystem, rows: pa.Table, value: bool, keep: pa.ChunkedArray | None = None
) -> list[AddAction]:
    """Writes ``rows`` (those where ``keep`` is true, if given) into the ``is_current = value``
    partition, as several files in parallel.

    Encoding Parquet is the main cost of a derivation: large partitions are split over the cores
    (at least a row group per file, at most :data:`_ROWS_PER_FILE` rows), each writer filtering
    its own slice.
    """
    if rows.num_rows == 0:
        return []
    workers = max(1, min(os.cpu_count() or 1, _WRITERS))
    # An equal share per writer (small tables: one file of at least a row group).
    share = -(-rows.num_rows // workers)
    size = min(_ROWS_PER_FILE, share if rows.num_rows > _ROW_GROUP_ROWS else _ROW_GROUP_ROWS)
    starts = range(0, rows.num_rows, size)

    def write(start: int) -> AddAction | None:
        part = rows.slice(start, size)
        if keep is not None:
            part = part.filter(keep.slice(start, size))
        return _write_file(files, part, value) if part.num_rows else None

    if len(starts) == 1:
        written = [write(0)]
    else:
        with ThreadPoolExecutor(min(workers, len(starts))) as pool:
            written = list(pool.map(write, starts))
    return [action for action in written if action is not None]


#: Parquet codec per partition. The current versions are rewritten by every sync that closes a
#: version, and their superseded files are vacuumed: the fastest codec. Closed versions are
#: written once and kept: zstd at its fastest level (a third smaller).
_CODECS = {True: ("lz4", None), False: ("zstd", 1)}


def _statistics(schema: pa.Schema, value: bool) -> bool | list[str]:
    """The columns whose Parquet statistics a file of the ``is_current = value`` partition keeps.

    Closed versions keep them all. The current versions, rewritten by most syncs, keep them for
    ``id`` and the columns that are not text or lists: statistics of long strings and of
    ``changed_columns`` cost a fifth of the encoding, and nobody prunes on them.
    """
    if not value:
        return True
    kept = [
        f.name
        for f in schema
        if f.name == "id" or not (pa.types.is_string(f.type) or pa.types.is_list(f.type))
    ]
    return kept or False


def _write_file(files: pafs.FileSystem, rows: pa.Table, value: bool) -> AddAction:
    """Writes ``rows`` as one Parquet file of the ``is_current = value`` partition."""
    text = "true" if value else "false"
    codec, level = _CODECS[value]
    directory = f"{PARTITION_COLUMN}={text}"
    path = f"{directory}/part-00000-{uuid.uuid4()}-c000.{codec}.parquet"
    files.create_dir(directory, recursive=True)  # a no-op on object stores
    data = rows.drop_columns([PARTITION_COLUMN])  # partition values live in the Delta log
    with files.open_output_stream(path) as sink:
        # Without dictionaries: most columns are unique per lead.
        pq.write_table(
            data,
            sink,
            compression=codec,
            compression_level=level,
            use_dictionary=False,
            write_statistics=_statistics(data.schema, value),
            row_group_size=_ROW_GROUP_ROWS,
        )
    stats = {"numRecords": data.num_rows, "minValues": {}, "maxValues": {}, "nullCount": {}}
    for name in ("id", "version"):
        bounds = pc.min_max(data[name]).as_py()
        if data.num_rows:
            stats["minValues"][name], stats["maxValues"][name] = bounds["min"], bounds["max"]
        stats["nullCount"][name] = data[name].null_count
    return AddAction(
        path=path,
        size=files.get_file_info(path).size,
        partition_values={PARTITION_COLUMN: text},
        modification_time=int(time.time() * 1000),
        data_change=True,
        stats=json.dumps(stats),
    )


# -- verification (the blocking check history_matches_leads) --------------------------------------

#: What :func:`verify_history` looks for, with the sentence that describes a failure.
PROBLEMS = {
    "live_leads_without_current_version": "live lead(s) without a current version",
    "leads_with_several_current_versions": "lead(s) with more than one current version",
    "current_versions_of_deleted_leads": "current version(s) of leads no longer in leads",
    "current_versions_differing_from_leads": "current version(s) whose values differ from leads",
    "versions_not_numbered_1_to_n": "lead(s) whose versions are not numbered 1, 2, … n",
    "overlapping_or_gapped_versions": "version(s) not starting where the previous one ended",
    "malformed_validity": "version(s) with an impossible valid_from/valid_to/is_current",
    "impossible_changes": "version(s) whose change cannot follow the previous one",
}


@dataclass(frozen=True)
class HistoryVerification:
    """What :func:`verify_history` found."""

    exists: bool
    rows: int = 0
    live_leads: int = 0
    current_versions: int = 0
    #: Problem name (keys of :data:`PROBLEMS`) → how many rows or leads have it.
    problems: Mapping[str, int] = field(default_factory=dict)
    #: Problem name → up to five lead ids that have it.
    examples: Mapping[str, list[str]] = field(default_factory=dict)
    #: Column → how many current versions differ from leads in it.
    differing_columns: Mapping[str, int] = field(default_factory=dict)
    #: The leads version the history says it is derived through, and the leads version checked.
    history_leads_version: int | None = None
    leads_version: int | None = None

    @property
    def passed(self) -> bool:
        return self.exists and not any(self.problems.values())

    def describe(self) -> str:
        """A sentence for the check's result."""
        if not self.exists:
            return "lead_history or leads does not exist yet: materialize them first."
        if self.passed:
            return (
                f"{self.live_leads} live leads, each with exactly one current version equal to "
                f"its leads row; {self.rows} versions, chained without overlap."
            )
        parts = []
        for name, count in self.problems.items():
            if count:
                examples = ", ".join(self.examples.get(name, []))
                parts.append(
                    f"{count} {PROBLEMS[name]}" + (f" (e.g. {examples})" if examples else "")
                )
        if self.differing_columns:
            parts.append(
                "columns differing: "
                + ", ".join(f"{c} ({n})" for c, n in self.differing_columns.items() if n)
            )
        if self.history_leads_version != self.leads_version:
            parts.append(
                f"lead_history is derived through leads version {self.history_leads_version}, "
                f"leads is at version {self.leads_version}: materialize lead_history"
            )
        return "; ".join(parts) + "."


def verify_history(lake: DeltaLake) -> HistoryVerification:
    """Checks ``lead_history`` against ``leads`` and against itself.

    Exactly one current version per live lead, holding its ``leads`` row (every column but
    ``last_edited_time``, which stays the edit time the version began with; a column ``leads`` no
    longer has must be NULL); no current version for a lead ``leads`` no longer holds; per lead,
    versions numbered 1..n, each starting where the previous one ended (after a tombstone: not
    before it), only the last one possibly current, tombstones of no duration, and changes in a
    possible order (``created`` first, ``restored`` only after ``deleted``).

    Two vectorised passes: a full join of the current versions with ``leads``, and one window over
    the narrow columns of every version.
    """
    history, leads = lake.load(HISTORY_TABLE), lake.load(LEADS_TABLE)
    if history is None or leads is None:
        return HistoryVerification(exists=False)
    mark, _ = _history_marks(history)
    # Read as any reader reads the table (not through the derivation's direct file read).
    dataset = history.to_pyarrow_dataset()
    chain = dataset.to_table(
        columns=["id", "version", "valid_from", "valid_to", "is_current", "change"]
    )
    current = dataset.to_table(filter=ds.field(PARTITION_COLUMN) == True)  # noqa: E712
    live = leads.to_pyarrow_dataset().to_table()
    history_values = [
        n for n in current.column_names if n != "id" and n not in HISTORY_ONLY_COLUMNS
    ]
    leads_values = [n for n in live.column_names if n != "id"]
    compared = [c for c in dict.fromkeys([*leads_values, *history_values]) if c not in UNVERSIONED]

    def differs(c: str) -> str:
        if c in history_values and c in leads_values:
            return f"h.{_ident(c)} IS DISTINCT FROM l.{_ident(c)}"
        side = "l" if c in leads_values else "h"
        return f"{side}.{_ident(c)} IS NOT NULL"

    chained_sql = """
        SELECT *,
               row_number() OVER w AS rn,
               lag(change) OVER w AS prev_change,
               lag(valid_to) OVER w AS prev_valid_to,
               lead(version) OVER w IS NULL AS is_last
        FROM chain_rows
        WINDOW w AS (PARTITION BY id ORDER BY version)
    """
    # Each problem: (rows it is looked for in, the key naming a lead there, the condition).
    joined = "h FULL JOIN l ON l.id = h.id"
    key = "coalesce(h.id, l.id)"
    checks = {
        "live_leads_without_current_version": (joined, key, "h.id IS NULL"),
        "leads_with_several_current_versions": (
            "(SELECT id, count(*) AS n FROM h GROUP BY id)",
            "id",
            "n > 1",
        ),
        "current_versions_of_deleted_leads": (joined, key, "l.id IS NULL"),
        "current_versions_differing_from_leads": (
            joined,
            key,
            "h.id IS NOT NULL AND l.id IS NOT NULL AND ("
            + (" OR ".join(differs(c) for c in compared) or "FALSE")
            + ")",
        ),
        "versions_not_numbered_1_to_n": ("chained", "id", "version IS DISTINCT FROM rn"),
        "overlapping_or_gapped_versions": (
            "chained",
            "id",
            f"""prev_change IS NOT NULL AND (
                (prev_change <> '{DELETED}' AND prev_valid_to IS DISTINCT FROM valid_from)
                OR (prev_change = '{DELETED}' AND NOT valid_from >= prev_valid_to))""",
        ),
        "malformed_validity": (
            "chained",
            "id",
            f"""valid_from IS NULL OR valid_to < valid_from
                OR (NOT is_last AND (is_current IS DISTINCT FROM FALSE OR valid_to IS NULL))
                OR (is_last AND is_current IS DISTINCT FROM (change <> '{DELETED}'))
                OR (is_current AND valid_to IS NOT NULL)
                OR (change = '{DELETED}' AND valid_to IS DISTINCT FROM valid_from)""",
        ),
        "impossible_changes": (
            "chained",
            "id",
            f"""change IS NULL
                OR change NOT IN ({", ".join(_literal(c) for c in CHANGES)})
                OR (rn = 1) <> (change = '{CREATED}')
                OR (change = '{RESTORED}' AND prev_change IS DISTINCT FROM '{DELETED}')
                OR (change IN ('{UPDATED}', '{DELETED}') AND prev_change = '{DELETED}')""",
        ),
    }
    per_column = [
        f"count(*) FILTER (WHERE h.id IS NOT NULL AND l.id IS NOT NULL AND {differs(c)})"
        for c in compared
    ]
    con = scratch_connection(dedicated=True)
    try:
        con.register("chain_rows", chain)
        con.register("h", current)
        con.register("l", live)
        con.execute(f"CREATE TEMP TABLE chained AS {chained_sql}")
        # One pass per set of rows, counting rows; leads and examples only for what failed.
        found: dict[str, int] = {}
        differing: dict[str, int] = {}
        for rows in dict.fromkeys(source for source, _, _ in checks.values()):
            names = [n for n, (source, _, _) in checks.items() if source == rows]
            counts = [f"count(*) FILTER (WHERE {checks[n][2]})" for n in names]
            extra = per_column if rows == joined else []
            [result] = con.sql(f"SELECT {', '.join(counts + extra)} FROM {rows}").fetchall()
            found.update(zip(names, result[: len(names)], strict=True))
            if extra:
                differing = {
                    c: int(n) for c, n in zip(compared, result[len(names) :], strict=True) if n
                }
        problems, examples = {}, {}
        for name, (rows, lead_key, condition) in checks.items():
            problems[name], examples[name] = 0, []
            if found[name]:
                [(count, sample)] = con.sql(
                    f"SELECT count(DISTINCT {lead_key}), "
                    f"list(DISTINCT {lead_key} ORDER BY {lead_key})[1:5] "
                    f"FROM {rows} WHERE {condition}"
                ).fetchall()
                problems[name], examples[name] = int(count), [str(i) for i in sample or []]
    finally:
        con.close()
    return HistoryVerification(
        exists=True,
        rows=chain.num_rows,
        live_leads=live.num_rows,
        current_versions=current.num_rows,
        problems=problems,
        examples=examples,
        differing_columns=differing,
        history_leads_version=mark,
        leads_version=leads.version(),
    )
