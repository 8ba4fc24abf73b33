"""The raw sync: a source's pages into ``raw_notion_leads``, as one plain function.

:func:`sync_raw` resolves the property map against the data source's schema, reads what earlier
syncs stored, lists the pages (every page, or those edited since the watermark) into a spool on
disk, selects the rows to write, infers deletions from a full listing, appends (first sync) or
merges them, and stores the schema beside the pages. It returns a :class:`RawSyncOutcome`
holding everything the ``raw_notion_leads`` asset reports; the asset only wires resources,
configuration and metadata.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc

from leads_pipeline.sources.base import LeadsSource, ListingStats
from leads_pipeline.storage.lake import DeltaLake, WriteOutcome
from leads_pipeline.storage.raw_store import (
    WATERMARK_MARGIN,
    RawState,
    append_raw,
    check_source,
    load_schema,
    merge_raw,
    read_state,
    schema_changes,
    store_schema,
)
from leads_pipeline.storage.spool import RawSpool
from leads_pipeline.tables import RAW_TABLE
from leads_pipeline.transform.property_map import PropertyMap, ResolvedColumn, bindings, resolve

_log = logging.getLogger(__name__)
#: Rows of the listing's tail kept for the materialization's preview (keys only).
TAIL_ROWS = 10
#: Notion types whose values the listing truncates (at 25 items) unless completed.
_TRUNCATED_TYPES = ("people", "relation")
#: No page deleted (an incremental listing infers no deletion).
_NO_IDS = pa.array([], pa.string())


@dataclass(frozen=True)
class RawSyncOutcome:
    """What one raw sync did, for the asset's metadata and logs.

    Attributes:
        source: The source's name (``"notion"``, ``"sample"``).
        full_listing_reason: Why every page was listed; None for an incremental sync.
        schema_changes: How the data source's properties changed since the last sync.
        pages_fetched: Rows the listing returned.
        changed_without_edit: Listed pages whose content changed without a new edit time.
        write: Counts of the raw table's write (soft deletions in ``deleted``).
        stats: The listing's counters (requests, retries, waits, completed values).
        row_count: Rows of ``raw_notion_leads`` after the sync.
        delta_version: Version of ``raw_notion_leads`` after the sync.
        watermark: Newest ``last_edited_time`` stored after the sync (None: no page yet).
        table_uri: Where ``raw_notion_leads`` lives.
        tail: Keys (``page_id``, ``last_edited_time``, ``in_trash``) of the last listed rows.
    """

    source: str
    full_listing_reason: str | None
    schema_changes: tuple[str, ...]
    pages_fetched: int
    changed_without_edit: int
    write: WriteOutcome
    stats: ListingStats
    row_count: int
    delta_version: int
    watermark: datetime | None
    table_uri: str
    tail: pa.Table

    @property
    def full_listing(self) -> bool:
        """Whether every page was listed."""
        return self.full_listing_reason is not None

    @property
    def mode(self) -> str:
        """``"full listing"`` or ``"incremental"``."""
        return "full listing" if self.full_listing else "incremental"

    @property
    def pages_written(self) -> int:
        """Pages inserted or updated."""
        return self.write.inserted + self.write.updated


@dataclass(frozen=True)
class _Plan:
    """What a sync lists and compares, decided before any listing."""

    schema: dict
    columns: tuple[ResolvedColumn, ...]
    changes: list[str]
    state: RawState
    reason: str | None
    cutoff: datetime | None

    @property
    def full(self) -> bool:
        return self.reason is not None

    @property
    def since(self) -> datetime | None:
        return None if self.full else self.cutoff


def sync_raw(
    source: LeadsSource,
    lake: DeltaLake,
    *,
    mapping: PropertyMap,
    full_listing: bool = False,
    log: logging.Logger | None = None,
    synced_at: datetime | None = None,
) -> RawSyncOutcome:
    """Brings ``raw_notion_leads`` in line with the source, in one commit (or none).

    An incremental sync lists the pages edited since the watermark (less a margin: Notion
    rounds edit times down to the minute). A full listing (requested, a first sync, or a changed
    data source schema) lists every page, writes those whose content differs from the stored
    copy, edit time or not, and marks the pages no longer listed deleted. The schema is stored
    once the pages are, so a sync failing before sees the change again.

    Args:
        source: Where the pages come from.
        lake: The lake holding ``raw_notion_leads``.
        mapping: The property map; a mapped property missing or of the wrong type fails the
            sync before any listing.
        full_listing: List every page even when an incremental sync would do.
        log: Where to report the listing, schema changes and repairs (e.g. the run's log).
        synced_at: Time of this sync, written in ``synced_at`` (now when None).

    Returns:
        What the sync did.

    Raises:
        PropertyMapError: If a mapped property is missing or of the wrong type.
        SourceMismatchError: If the lake holds pages of another source.
    """
    log = log or _log
    synced_at = synced_at or datetime.now(UTC)
    plan = _plan(source, lake, mapping, full_listing, log)
    what = (
        f"every page ({plan.reason})"
        if plan.full
        else f"pages edited on or after {plan.since.isoformat()}"
    )
    log.info(f"Listing {what} from {source.source_name}.")
    stats = ListingStats()
    commit_metadata = {"source": source.source_name, "source_identity": source.identity()}
    with RawSpool() as spool:
        for rows in source.list_raw(
            edited_on_or_after=plan.since,
            stats=stats,
            synced_at=synced_at,
            complete_property_ids=_truncatable(plan.columns),
            log=log,
        ):
            spool.append(rows)
        write, changed_without_edit = _write(spool, lake, plan, synced_at, commit_metadata)
        # Stored once the pages are: a sync failing before this point sees the change again.
        store_schema(
            lake,
            plan.schema,
            bindings(mapping, plan.columns),
            {**commit_metadata, "schema_changes": json.dumps(plan.changes, ensure_ascii=False)},
        )
        keys = spool.keys()
    if changed_without_edit:
        log.info(
            f"{changed_without_edit} listed pages changed in Notion without a new edit time; "
            "their new values were written."
        )
    # Raw's newest edit after this sync, without scanning the table again.
    fetched_newest = pc.max(keys["last_edited_time"]).as_py()
    table = lake.load(RAW_TABLE)
    return RawSyncOutcome(
        source=source.source_name,
        full_listing_reason=plan.reason,
        schema_changes=tuple(plan.changes),
        pages_fetched=keys.num_rows,
        changed_without_edit=changed_without_edit,
        write=write,
        stats=stats,
        row_count=table.to_pyarrow_dataset().count_rows(),
        delta_version=table.version(),
        watermark=max(
            (t for t in (plan.state.watermark, fetched_newest) if t is not None), default=None
        ),
        table_uri=lake.table_uri(RAW_TABLE),
        tail=keys.slice(max(keys.num_rows - TAIL_ROWS, 0)),
    )


def _plan(
    source: LeadsSource,
    lake: DeltaLake,
    mapping: PropertyMap,
    full_listing: bool,
    log: logging.Logger,
) -> _Plan:
    """Reads the schema and the stored state, and decides what to list."""
    schema = dict(source.data_source_schema(log=log))
    stored = load_schema(lake)
    # A mapped property that is missing or of the wrong type fails here, before any listing.
    columns = resolve(mapping, schema, stored[1] if stored else None)
    changes = schema_changes(stored[0] if stored else None, schema)
    if changes:
        log.warning(
            f"The data source's schema changed since the last sync: {'; '.join(changes)}. "
            "Listing every page and comparing its content with the stored copy."
        )
    state = read_state(lake)
    check_source(state, source.identity(), lake.root)
    state = _without_duplicates(lake, state, log)
    # Notion rounds edit times down to the minute: re-read (and compare) a margin before the mark.
    cutoff = None if state.watermark is None else state.watermark - WATERMARK_MARGIN
    reason = full_listing_reason(
        full_listing=full_listing, empty=state.watermark is None, schema_changed=bool(changes)
    )
    return _Plan(schema, columns, changes, state, reason, cutoff)


def full_listing_reason(*, full_listing: bool, empty: bool, schema_changed: bool) -> str | None:
    """Why a sync lists every page (None: it is incremental).

    Args:
        full_listing: A full listing was requested.
        empty: The raw table holds no page yet.
        schema_changed: The data source's schema changed since the last sync.
    """
    if empty:
        return "first sync"
    if full_listing:
        return "full_listing requested"
    if schema_changed:
        return "the data source's schema changed"
    return None


def _without_duplicates(lake: DeltaLake, state: RawState, log: logging.Logger) -> RawState:
    """Removes extra copies of pages stored twice (keeping the newest), if there are any."""
    if state.keys is None or pc.count_distinct(state.keys["page_id"]).as_py() >= state.rows:
        return state
    # Pages stored twice (two first syncs at once, before this version): keep the newest copy.
    repaired = lake.dedupe(RAW_TABLE, "page_id", metadata={"operation": "dedupe"})
    log.warning(
        f"raw_notion_leads held {repaired.deleted} extra copies of pages stored twice; "
        "kept each page's newest copy (latest last_edited_time, then synced_at)."
    )
    return read_state(lake)


def _truncatable(columns: tuple[ResolvedColumn, ...]) -> set[str]:
    """Properties whose values a mapped column reads and the listing may truncate."""
    return {
        c.property_id
        for c in columns
        if c.property_id is not None and c.notion_type in _TRUNCATED_TYPES
    }


def _write(
    spool: RawSpool,
    lake: DeltaLake,
    plan: _Plan,
    synced_at: datetime,
    metadata: dict[str, str],
) -> tuple[WriteOutcome, int]:
    """Writes the spooled rows that changed (and the deletions a full listing infers).

    Returns:
        The write's outcome, and how many listed pages changed without a new edit time.
    """
    keep, changed_without_edit = _rows_to_write(spool, lake, plan)
    state = plan.state
    if state.rows == 0:
        return append_raw(lake, spool.batches(keep), metadata), changed_without_edit
    deleted = _deleted_ids(state, spool.keys()["page_id"]) if plan.full else _NO_IDS
    return merge_raw(lake, spool.read(keep), deleted, synced_at, metadata), changed_without_edit


def _deleted_ids(state: RawState, listed: pa.ChunkedArray) -> pa.Array:
    """Live stored pages a full listing did not return: deleted in Notion."""
    return pc.filter(state.live_ids, pc.invert(pc.is_in(state.live_ids, listed)))


def _rows_to_write(spool: RawSpool, lake: DeltaLake, plan: _Plan) -> tuple[pa.Array, int]:
    """Which spooled rows to write, and how many pages changed without a new edit time.

    A full listing compares every listed page's content with the stored copy (values can change
    in Notion without a new edit time); an incremental one skips the re-reads that have settled.
    """
    if plan.full and plan.state.rows > 0:
        comparison = spool.compare(lake.load(RAW_TABLE).to_pyarrow_dataset())
        return comparison.mask, comparison.changed_without_edit
    return spool.select(plan.state.keys, plan.cutoff), 0
