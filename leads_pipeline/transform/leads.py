"""Derives ``leads`` and ``lead_quality_issues`` from ``raw_notion_leads``.

Only raw rows changed since the last derivation are parsed: the raw table's Delta change data feed
gives them without scanning the table, and the raw version derived from is kept in the tables' own
commit metadata, so a fresh Dagster instance resumes correctly. A changed property map, a
missing mark, duplicate ids in ``leads`` or an explicit rebuild re-derives everything from raw,
without one call to Notion.

A write that would change nothing makes no commit, so a table's own mark can lag: the quality
issues rarely change, and reading raw's changes from their mark would parse and merge again every
change since (the ``leads`` step grew with every sync). A derivation into an existing ``leads``
therefore writes the issues first, then ``leads``; when the issues were already right, the leads
commit records that version of them (:data:`ISSUES_VERSION_KEY`): while no commit has changed
their rows since, they are derived through that commit's raw version. A crash between the two
writes leaves ``leads``' mark behind, and the next derivation reads raw's changes from it again
(both writes are idempotent).

Two derivations may run at once (two Dagster instances on one lake): a first derivation that
loses the race is derived again, as a merge; merges and overwrites that lose are redone from the
tables' new state (see :mod:`leads_pipeline.storage.lake`). A page stored twice in raw (by an older
version) is parsed once, from its newest copy, and ``leads`` never holds an id twice.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from leads_pipeline.storage.duck import scratch_connection
from leads_pipeline.storage.lake import (
    ACTION,
    DELETE,
    METADATA_PREFIX,
    NEWEST_ORDER,
    ROW_KEEPING_OPERATIONS,
    UPSERT,
    ConcurrentFirstLoadError,
    DeltaLake,
    WriteOutcome,
    key_in,
    newest_per_key,
)
from leads_pipeline.storage.raw_store import load_schema
from leads_pipeline.tables import ISSUES_TABLE, LEADS_TABLE, RAW_TABLE
from leads_pipeline.transform.parsing import ISSUES_SCHEMA, leads_schema, parse_pages
from leads_pipeline.transform.property_map import PropertyMap, ResolvedColumn, resolve

MARK_KEY = "raw_version"
MAP_KEY = "property_map"
#: Key of a ``leads`` commit: the version of ``lead_quality_issues`` its derivation found already
#: right (so wrote nothing to, not even a mark): derived through the same raw version as the commit.
ISSUES_VERSION_KEY = "issues_version"
#: How many recent commits of a table are searched for its mark.
_MARK_SEARCH = 200

_BATCH_ROWS = 25_000
_RAW_COLUMNS = [
    "page_id",
    "created_time",
    "last_edited_time",
    "url",
    "properties_json",
    "synced_at",
    "deleted_at",
]
#: A first derivation racing another one is derived again (as a merge) at most this often.
_DERIVE_ATTEMPTS = 3


class RawTableMissingError(RuntimeError):
    """``leads`` was asked for before ``raw_notion_leads`` exists."""


class RawSchemaMissingError(RawTableMissingError):
    """``raw_notion_leads`` has no stored data source schema yet (no sync has stored one)."""


@dataclass(frozen=True)
class DeriveOutcome:
    """What one derivation did."""

    mode: str
    raw_rows_processed: int
    leads: WriteOutcome
    issues: WriteOutcome
    issue_rows: int
    leads_rows: int
    issues_table: pa.Table
    #: Rows of ``leads`` removed because their id appeared more than once (an older version's).
    duplicates_removed: int = 0


def _commit_int(commit: Mapping | None, key: str) -> int | None:
    """The integer custom metadata ``key`` of ``commit`` (None if absent)."""
    value = None if commit is None else commit.get(METADATA_PREFIX + key)
    return int(value) if value else None


def _marks(lake: DeltaLake, leads: DeltaTable | None) -> list[int | None]:
    """The raw versions ``leads`` and ``lead_quality_issues`` are derived through (None: unknown).

    Each table's own mark is the newest of its commits that carries one. The issues' is newer
    when the newest marked ``leads`` commit records an issues version (:data:`ISSUES_VERSION_KEY`)
    and no commit since that version changed the issues' rows: they are then derived through that
    ``leads`` commit's raw version, even though no issues commit says so (it changed nothing).
    """
    history = [] if leads is None else leads.history(_MARK_SEARCH)
    leads_commit = next((c for c in history if METADATA_PREFIX + MARK_KEY in c), None)
    leads_mark = _commit_int(leads_commit, MARK_KEY)
    issues = lake.load(ISSUES_TABLE)
    issues_history = [] if issues is None else issues.history(_MARK_SEARCH)
    issues_mark = _commit_int(
        next((c for c in issues_history if METADATA_PREFIX + MARK_KEY in c), None), MARK_KEY
    )
    left = _commit_int(leads_commit, ISSUES_VERSION_KEY)
    if (
        None not in (leads_mark, issues_mark, left)
        and leads_mark > issues_mark
        and _rows_unchanged_since(issues, issues_history, left)
    ):
        issues_mark = leads_mark
    return [leads_mark, issues_mark]


def _rows_unchanged_since(table: DeltaTable, history: list[dict], version: int) -> bool:
    """Whether ``table`` holds the rows of its ``version``: no later commit changed a row.

    ``history`` is the table's newest commits, newest first; a version older than all of them
    cannot be vouched for.
    """
    if version > table.version() or version < table.version() - len(history):
        return False
    later = [c for c in history if c["version"] > version]
    return all(c.get("operation") in ROW_KEEPING_OPERATIONS for c in later)


@dataclass(frozen=True)
class LeadsFromRaw:
    """What :func:`derive_leads_from_raw` did, and what it derived with."""

    outcome: DeriveOutcome
    #: The property map resolved against the stored data source schema.
    columns: tuple[ResolvedColumn, ...]
    #: Who produced the raw pages (``notion``, ``sample``...; ``unknown`` if raw does not say).
    source: str


def derive_leads_from_raw(
    lake: DeltaLake,
    mapping: PropertyMap,
    *,
    rebuild: bool = False,
    now: datetime | None = None,
) -> LeadsFromRaw:
    """Derives ``leads`` and ``lead_quality_issues`` from raw as the stored schema describes it.

    The property map is resolved against the data source schema the last raw sync stored (by
    property id, so a renamed property still maps), and the commits record raw's source.

    Args:
        lake: The lake holding ``raw_notion_leads`` and its stored schema.
        mapping: The property map.
        rebuild: Re-derive everything from raw.
        now: Timestamp for new quality issues (now by default).

    Returns:
        The derivation's outcome, the resolved columns and the source.

    Raises:
        RawSchemaMissingError: If no raw sync has stored a data source schema yet.
        RawTableMissingError: If ``raw_notion_leads`` does not exist yet.
        PropertyMapError: If the map does not fit the stored schema.
    """
    stored = load_schema(lake)
    if stored is None:
        raise RawSchemaMissingError(
            "raw_notion_leads has no stored data source schema yet: materialize raw_notion_leads "
            "first (job sync_leads)."
        )
    schema, bound = stored
    columns = resolve(mapping, schema, bound)
    source = lake.commit_value(RAW_TABLE, "source") or "unknown"
    outcome = derive_leads(
        lake,
        columns,
        schema,
        mapping.fingerprint(),
        now or datetime.now(UTC),
        rebuild=rebuild,
        metadata={"source": source},
    )
    return LeadsFromRaw(outcome=outcome, columns=columns, source=source)


def derive_leads(
    lake: DeltaLake,
    columns: tuple[ResolvedColumn, ...],
    schema: Mapping[str, Mapping],
    map_fingerprint: str,
    now: datetime,
    *,
    rebuild: bool = False,
    metadata: Mapping[str, str] | None = None,
) -> DeriveOutcome:
    """Brings ``leads`` and ``lead_quality_issues`` in line with ``raw_notion_leads``.

    A full derivation (a rebuild, a changed property map, a missing mark, or ``leads`` holding an
    id twice) replaces or merges every lead parsed from raw, one per page (its newest copy).

    Args:
        lake: The lake holding the three tables.
        columns: The property map resolved against ``schema``.
        schema: The data source's properties.
        map_fingerprint: Fingerprint of the property map; a change triggers a full rebuild.
        now: Timestamp for new quality issues.
        rebuild: Re-derive everything from raw.
        metadata: Extra commit metadata (e.g. the source).

    Returns:
        Counts and versions of both writes.

    Raises:
        RawTableMissingError: If ``raw_notion_leads`` does not exist yet.
    """
    for attempt in range(1, _DERIVE_ATTEMPTS + 1):
        try:
            return _derive(
                lake, columns, schema, map_fingerprint, now, rebuild=rebuild, metadata=metadata
            )
        except ConcurrentFirstLoadError:
            # Another writer derived leads first: derive again, now as a merge into its table.
            if attempt == _DERIVE_ATTEMPTS:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _derive(
    lake: DeltaLake,
    columns: tuple[ResolvedColumn, ...],
    schema: Mapping[str, Mapping],
    map_fingerprint: str,
    now: datetime,
    *,
    rebuild: bool,
    metadata: Mapping[str, str] | None,
) -> DeriveOutcome:
    """One derivation (see :func:`derive_leads`)."""
    raw = lake.load(RAW_TABLE)
    if raw is None:
        raise RawTableMissingError(
            "raw_notion_leads does not exist yet: materialize it first (job sync_leads)."
        )
    through = raw.version()
    current = lake.load(LEADS_TABLE)
    existing = (
        None if current is None else current.to_pyarrow_dataset().to_table(columns=["id"])["id"]
    )
    duplicates = 0 if existing is None else len(existing) - pc.count_distinct(existing).as_py()
    marks = _marks(lake, current)
    full = (
        rebuild
        or duplicates > 0
        or None in marks
        or lake.commit_value(LEADS_TABLE, MAP_KEY) != map_fingerprint
    )
    changed = None if full else lake.changes(RAW_TABLE, min(marks), through, _RAW_COLUMNS)
    if changed is None:
        full = True
        batches = _newest_raw_batches(raw)
    else:
        batches = _newest_copies(changed).to_batches(max_chunksize=_BATCH_ROWS)

    issue_parts, gone_parts, affected_parts = [], [], []
    processed = 0
    target_schema = leads_schema(columns)

    def parsed_batches():
        """Parses raw batch by batch, collecting issues and ids on the side."""
        nonlocal processed
        for batch in batches:
            if batch.num_rows == 0:
                continue
            chunk = pa.Table.from_batches([batch])
            processed += chunk.num_rows
            affected_parts.append(chunk["page_id"])
            deleted = pc.is_valid(chunk["deleted_at"])
            gone_parts.append(chunk.filter(deleted)["page_id"])
            live = chunk.filter(pc.invert(deleted))
            if live.num_rows:
                # A DuckDB database per batch: closing it hands its memory back (peak RSS).
                parsed = parse_pages(live, columns, schema, now)
                issue_parts.append(parsed.issues)
                yield from parsed.leads.cast(target_schema).to_batches()

    commit_metadata = {**(metadata or {}), MARK_KEY: str(through), MAP_KEY: map_fingerprint}
    if current is None or len(existing) == 0:
        # A first derivation is all inserts: stream each parsed batch into one append, so memory
        # stays bounded by a batch rather than growing with the table. It only lands on the empty
        # table it read; if another writer filled it first, derive_leads derives again.
        leads_outcome = lake.append(
            LEADS_TABLE,
            target_schema,
            parsed_batches(),
            key="id",
            on_conflict="raise",
            metadata=commit_metadata,
            # lead_history reads only the rows each derivation changed.
            configuration={"delta.enableChangeDataFeed": "true"},
        )
        issues_outcome, issues = _write_issues(
            lake, issue_parts, affected_parts, full, commit_metadata
        )
    else:
        parsed_leads = pa.Table.from_batches(list(parsed_batches()), schema=target_schema)
        # The issues first: when they are already right (no commit, so no mark of their own),
        # the leads commit records the version found right, which moves the issues' mark.
        issues_outcome, issues = _write_issues(
            lake, issue_parts, affected_parts, full, commit_metadata
        )
        leads_metadata = (
            commit_metadata
            if issues_outcome.committed
            else {**commit_metadata, ISSUES_VERSION_KEY: str(issues_outcome.version)}
        )
        gone = (
            pa.chunked_array(gone_parts, pa.string()).combine_chunks()
            if gone_parts
            else pa.array([], pa.string())
        )
        dropped = set(pa.schema(current.schema().to_arrow()).names) - set(target_schema.names)
        if full and (dropped or duplicates):
            # A column left the property map (a merge would keep it, no longer maintained), or an
            # id is in the table twice (a merge would update both copies). A full derivation holds
            # every live lead, once: it replaces the table (the old version stays readable
            # through time travel).
            leads_outcome = lake.replace(LEADS_TABLE, parsed_leads, metadata=leads_metadata)
        else:
            if full:
                # Rows whose raw page is no longer live at all (e.g. written under another map).
                orphans = pc.filter(existing, pc.invert(pc.is_in(existing, parsed_leads["id"])))
                gone = pa.concat_arrays([gone, orphans.combine_chunks()])
            # Only ids leads holds: delta-rs fails a merge into a table with a change data feed
            # when a source row matches no clause (a deletion of an absent id) while another row
            # is inserted (it writes an all-null change row, which fails validation).
            gone = pc.filter(gone, pc.is_in(gone, value_set=existing.combine_chunks()))
            leads_outcome = _merge_leads(lake, parsed_leads, gone, leads_metadata)

    return DeriveOutcome(
        mode="full" if full else "incremental",
        raw_rows_processed=processed,
        leads=leads_outcome,
        issues=issues_outcome,
        issue_rows=issues.num_rows,
        leads_rows=lake.load(LEADS_TABLE).to_pyarrow_dataset().count_rows(),
        issues_table=issues,
        duplicates_removed=duplicates,
    )


def _write_issues(
    lake: DeltaLake,
    issue_parts: list[pa.Table],
    affected_parts: list[pa.Array],
    full: bool,
    metadata: Mapping[str, str],
) -> tuple[WriteOutcome, pa.Table]:
    """Replaces the issues of the affected pages (all of them if ``full``) in one commit, or none.

    Returns:
        The write's outcome and the issues the table now holds.
    """
    affected = (
        pa.chunked_array(affected_parts, pa.string()).combine_chunks()
        if affected_parts
        else pa.array([], pa.string())
    )
    new_issues = pa.concat_tables(issue_parts) if issue_parts else ISSUES_SCHEMA.empty_table()
    merged_issues = []

    def issues_from(current_issues: pa.Table | None) -> pa.Table:
        # Called again with the new state if another writer replaced the issues meanwhile.
        merged_issues[:] = [_merge_issues(current_issues, new_issues, affected, full)]
        return merged_issues[0]

    outcome = lake.replace(ISSUES_TABLE, issues_from, metadata=metadata)
    return outcome, merged_issues[0]


def _newest_raw_batches(raw: DeltaTable) -> Iterator[pa.RecordBatch]:
    """Every page of raw, batch by batch, once: its newest copy if it was stored more than once.

    Only the rows of pages stored twice (an older version's concurrent first loads) are read
    together; every other row is streamed. The table is opened here, not lazily: the batches are
    consumed inside a Delta write, where delta-rs cannot be called again.
    """
    dataset = raw.to_pyarrow_dataset()
    options = {
        "columns": _RAW_COLUMNS,
        "batch_size": _BATCH_ROWS,
        "batch_readahead": 1,
        "fragment_readahead": 1,
    }
    counts = pc.value_counts(dataset.to_table(columns=["page_id"])["page_id"])
    repeated = pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1))
    if len(repeated) == 0:
        return iter(dataset.to_batches(**options))
    copies = dataset.to_table(columns=_RAW_COLUMNS, filter=key_in("page_id", repeated))
    newest = newest_per_key(copies, "page_id", NEWEST_ORDER)
    return itertools.chain(
        dataset.to_batches(filter=~key_in("page_id", repeated), **options),
        newest.to_batches(max_chunksize=_BATCH_ROWS),
    )


def _newest_copies(rows: pa.Table) -> pa.Table:
    """``rows`` with one row per page, its newest copy."""
    if pc.count_distinct(rows["page_id"]).as_py() == rows.num_rows:
        return rows
    return newest_per_key(rows, "page_id", NEWEST_ORDER)


def _merge_leads(
    lake: DeltaLake, parsed: pa.Table, gone: pa.Array, metadata: Mapping[str, str]
) -> WriteOutcome:
    """Upserts parsed leads and deletes the ``gone`` ids, in one commit (or none)."""
    upserts = parsed.append_column(ACTION, pa.array([UPSERT] * parsed.num_rows, pa.string()))
    deletions = pa.table(
        {
            name: (gone if name == "id" else pa.nulls(len(gone), parsed.schema.field(name).type))
            for name in parsed.column_names
        }
    ).append_column(ACTION, pa.array([DELETE] * len(gone), pa.string()))
    return lake.upsert(
        LEADS_TABLE,
        pa.concat_tables([upserts, deletions.cast(upserts.schema)]),
        key="id",
        metadata=metadata,
    )


def _merge_issues(
    current: pa.Table | None, new: pa.Table, affected: pa.Array, full: bool
) -> pa.Table:
    """Replaces the issues of the affected pages, keeping ``detected_at`` of issues that persist."""
    if current is None:
        current = ISSUES_SCHEMA.empty_table()
    current = current.cast(ISSUES_SCHEMA)
    con = scratch_connection()
    try:
        con.register("current_issues", current)
        con.register("new_issues", new)
        con.register("affected", pa.table({"page_id": affected}))
        keep = "FALSE" if full else "page_id NOT IN (SELECT page_id FROM affected)"
        result = con.sql(
            f"""
            SELECT * FROM current_issues WHERE {keep}
            UNION ALL
            SELECT n.page_id, n."column", n.raw_value, n.reason,
                   coalesce(c.detected_at, n.detected_at) AS detected_at
            FROM new_issues n
            LEFT JOIN current_issues c
              ON c.page_id = n.page_id AND c."column" = n."column" AND c.reason = n.reason
             AND c.raw_value IS NOT DISTINCT FROM n.raw_value
            ORDER BY page_id, "column"
            """
        ).to_arrow_table()
    finally:
        con.close()
    return result.cast(ISSUES_SCHEMA)
