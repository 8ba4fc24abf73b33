"""The ``raw_notion_leads`` table: every page Notion returned, JSON kept verbatim."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from leads_pipeline.storage.lake import ACTION, DELETE, UPSERT, DeltaLake, WriteOutcome
from leads_pipeline.tables import RAW_TABLE, SCHEMA_TABLE

_TS = pa.timestamp("us", tz="UTC")
RAW_SCHEMA = pa.schema(
    [
        pa.field("page_id", pa.string(), nullable=False),
        pa.field("created_time", _TS),
        pa.field("last_edited_time", _TS),
        pa.field("in_trash", pa.bool_()),
        pa.field("url", pa.string()),
        pa.field("properties_json", pa.string()),
        pa.field("synced_at", _TS),
        pa.field("deleted_at", _TS),
    ]
)

#: Notion rounds ``last_edited_time`` down to the minute: re-read a margin before the watermark.
WATERMARK_MARGIN = timedelta(minutes=2)
#: A stored copy synced this long after its (rounded) edit time has settled: any later edit
#: carries a later edit time. The minute of rounding, the margin the watermark relies on, and
#: two minutes for the skew between this machine's clock (``synced_at``) and Notion's.
SETTLED_AFTER = WATERMARK_MARGIN + timedelta(minutes=3)


class SourceMismatchError(RuntimeError):
    """The lake holds pages from another source than the one configured."""


def is_trashed(page: Mapping) -> bool:
    """Whether a page object is in the trash.

    ``in_trash`` since 2024; ``archived`` alone in older answers and exports, and gone from
    2026-03-11 answers. Either one set means trashed; neither means live.
    """
    return bool(page.get("in_trash")) or bool(page.get("archived"))


def pages_to_raw(pages: Iterable[dict], synced_at: datetime) -> pa.Table:
    """Turns page objects into ``raw_notion_leads`` rows (one per page, nothing dropped).

    Args:
        pages: Page objects as the API returns them.
        synced_at: Time of this sync.

    Returns:
        Rows with ``RAW_SCHEMA``; a trashed page gets ``deleted_at = synced_at``.

    Raises:
        ValueError: If a page lacks its ``id``.
    """
    ids, created, edited, trashed, urls, properties = [], [], [], [], [], []
    dumps = orjson.dumps  # compact UTF-8 JSON, key order kept: the verbatim text, 10x json's speed
    for page in pages:
        page_id = page.get("id")
        if not page_id:
            raise ValueError(f"A Notion page has no id: {json.dumps(page)[:200]}")
        ids.append(page_id)
        created.append(page.get("created_time"))
        edited.append(page.get("last_edited_time"))
        trashed.append(is_trashed(page))
        urls.append(page.get("url"))
        properties.append(dumps(page.get("properties") or {}))
    trash = pa.array(trashed, pa.bool_())
    synced = pa.array([synced_at] * len(ids), _TS)
    return pa.table(
        {
            "page_id": pa.array(ids, pa.string()),
            "created_time": pa.array(created, pa.string()).cast(_TS),
            "last_edited_time": pa.array(edited, pa.string()).cast(_TS),
            "in_trash": trash,
            "url": pa.array(urls, pa.string()),
            "properties_json": pa.array(properties, pa.binary()).cast(pa.string()),
            "synced_at": synced,
            "deleted_at": pc.if_else(trash, synced, pa.scalar(None, _TS)),
        },
        schema=RAW_SCHEMA,
    )


@dataclass(frozen=True)
class RawState:
    """What the raw table says about previous syncs."""

    watermark: datetime | None
    live_ids: pa.Array
    source: str | None
    rows: int
    keys: pa.Table | None  # page_id, last_edited_time, in_trash, deleted_at, synced_at of each row


def read_state(lake: DeltaLake) -> RawState:
    """Reads the watermark (newest ``last_edited_time``), live page ids and recorded source."""
    table = lake.read(
        RAW_TABLE, columns=["page_id", "last_edited_time", "in_trash", "deleted_at", "synced_at"]
    )
    if table is None:
        return RawState(
            watermark=None, live_ids=pa.array([], pa.string()), source=None, rows=0, keys=None
        )
    watermark = pc.max(table["last_edited_time"]).as_py()
    live = table.filter(pc.is_null(table["deleted_at"]))["page_id"].combine_chunks()
    return RawState(
        watermark=watermark,
        live_ids=live,
        source=lake.commit_value(RAW_TABLE, "source_identity"),
        rows=table.num_rows,
        keys=table,
    )


def check_source(state: RawState, identity: str, lake_uri: str) -> None:
    """Refuses to mix pages of two sources (e.g. sample pages into a lake holding Notion data)."""
    if state.source is not None and state.source != identity:
        raise SourceMismatchError(
            f"The lake at {lake_uri} holds pages from {state.source!r}, but the configured source "
            f"is {identity!r}. Point LEADS_LAKE_URI at another lake (or LEADS_SOURCE at the source "
            "that filled this one); sources are never mixed in one lake."
        )


def merge_raw(
    lake: DeltaLake,
    fetched: pa.Table,
    deleted_ids: pa.Array,
    synced_at: datetime,
    metadata: dict[str, str],
) -> WriteOutcome:
    """Upserts fetched pages and soft-deletes ``deleted_ids``, in one commit (or none).

    A fetched page whose stored copy is identical keeps its row untouched (``synced_at`` included),
    so an unchanged re-sync commits nothing.
    """
    upserts = fetched.append_column(ACTION, pa.array([UPSERT] * fetched.num_rows, pa.string()))
    deletions = pa.table(
        {
            "page_id": deleted_ids.cast(pa.string()),
            "created_time": pa.nulls(len(deleted_ids), _TS),
            "last_edited_time": pa.nulls(len(deleted_ids), _TS),
            "in_trash": pa.nulls(len(deleted_ids), pa.bool_()),
            "url": pa.nulls(len(deleted_ids), pa.string()),
            "properties_json": pa.nulls(len(deleted_ids), pa.string()),
            "synced_at": pa.array([synced_at] * len(deleted_ids), _TS),
            "deleted_at": pa.array([synced_at] * len(deleted_ids), _TS),
            ACTION: pa.array([DELETE] * len(deleted_ids), pa.string()),
        },
        schema=upserts.schema,
    )
    source = pa.concat_tables([upserts, deletions])
    outcome = lake.upsert(
        RAW_TABLE,
        source,
        key="page_id",
        metadata=metadata,
        ignore_in_comparison=("synced_at", "deleted_at"),
        # deleted_at only changes state when a page goes from live to deleted or back.
        delete_updates={"deleted_at": "s.deleted_at", "synced_at": "s.synced_at"},
        delete_when="t.deleted_at IS NULL",
        also_update_when="(s.deleted_at IS NULL) <> (t.deleted_at IS NULL)",
        # The change data feed lets leads read only the rows each sync changed.
        configuration={"delta.enableChangeDataFeed": "true"},
    )
    # Soft deletes are updates to Delta; report them as deletions. delete_when guarantees that
    # every id in deleted_ids was live, so each one was marked exactly once.
    marked = len(deleted_ids) if outcome.committed else 0
    return dataclasses.replace(outcome, updated=outcome.updated - marked, deleted=marked)


def append_raw(
    lake: DeltaLake, batches: Iterable[pa.RecordBatch], metadata: dict[str, str]
) -> WriteOutcome:
    """Writes the first pages of an empty raw table as one streamed append (bounded memory)."""
    return lake.append(
        RAW_TABLE,
        RAW_SCHEMA,
        batches,
        metadata=metadata,
        configuration={"delta.enableChangeDataFeed": "true"},
    )


#: The column whose property's options (and status groups) :func:`store_schema` keeps.
OPTIONS_COLUMN = "statut"
_OPTION_TYPES = ("status", "select")


def _options_json(prop: Mapping) -> str | None:
    """A ``status``/``select`` property's configuration object as JSON, or None for other types."""
    kind = prop.get("type")
    if kind not in _OPTION_TYPES or not isinstance(prop.get(kind), Mapping):
        return None
    return json.dumps(prop[kind], ensure_ascii=False, sort_keys=True)


def store_schema(
    lake: DeltaLake,
    schema: dict,
    bound: dict[str, tuple[str, str]],
    metadata: dict[str, str],
) -> WriteOutcome:
    """Keeps the data source's property schema and the map's bindings beside the raw pages.

    Rebuilding ``leads`` needs both, and must not call Notion. The configuration of the
    property bound to :data:`OPTIONS_COLUMN` (its ``status`` or ``select`` object: options, and a
    status's groups) is kept too, as JSON in the ``options`` column (NULL for other properties):
    the status semantics are read from it.

    Args:
        lake: The lake.
        schema: ``{name: {"id", "name", "type", ...}}`` as read from the data source.
        bound: Column → (property as named in the map, property id), from ``property_map.bindings``.
        metadata: Commit metadata.
    """
    names = sorted(schema)
    by_id = {pid: (column, ref) for column, (ref, pid) in bound.items()}
    ids = [schema[n]["id"] for n in names]
    table = pa.table(
        {
            "property_id": pa.array(ids, pa.string()),
            "name": pa.array(names, pa.string()),
            "type": pa.array([schema[n]["type"] for n in names], pa.string()),
            "column": pa.array([by_id.get(i, (None, None))[0] for i in ids], pa.string()),
            "mapped_as": pa.array([by_id.get(i, (None, None))[1] for i in ids], pa.string()),
            "options": pa.array(
                [
                    _options_json(schema[n]) if by_id.get(i, (None,))[0] == OPTIONS_COLUMN else None
                    for n, i in zip(names, ids, strict=True)
                ],
                pa.string(),
            ),
        }
    )
    return lake.replace(SCHEMA_TABLE, table, metadata=metadata)


def schema_changes(
    previous: Mapping[str, Mapping] | None, current: Mapping[str, Mapping]
) -> list[str]:
    """How the data source's properties changed between two schemas, matched by property id.

    Args:
        previous: The schema stored by the last sync (:func:`load_schema`), or None when there
            is none (a first sync: nothing "changed").
        current: The schema read from the data source now.

    Returns:
        Readable changes, e.g. ``"added 'Priority' (select)"``, ``"renamed 'A' → 'B'"``,
        ``"retyped 'X' from number to formula"``, ``"removed 'Y'"``: additions, renames,
        retypes then removals, each sorted by name; empty when nothing changed.
    """
    if previous is None:
        return []

    def by_id(schema: Mapping[str, Mapping]) -> dict[str, tuple[str, str]]:
        return {
            str(prop.get("id") or name): (name, str(prop.get("type")))
            for name, prop in schema.items()
        }

    before, after = by_id(previous), by_id(current)
    added, renamed, retyped, removed = [], [], [], []
    for pid, (name, kind) in sorted(after.items(), key=lambda item: item[1]):
        if pid not in before:
            added.append(f"added '{name}' ({kind})")
            continue
        old_name, old_kind = before[pid]
        if old_name != name:
            renamed.append(f"renamed '{old_name}' → '{name}'")
        if old_kind != kind:
            retyped.append(f"retyped '{name}' from {old_kind} to {kind}")
    for pid, (name, _) in sorted(before.items(), key=lambda item: item[1]):
        if pid not in after:
            removed.append(f"removed '{name}'")
    return [*added, *renamed, *retyped, *removed]


def load_schema(lake: DeltaLake) -> tuple[dict[str, dict], dict[str, tuple[str, str]]] | None:
    """The schema and bindings stored by the last sync (see :func:`store_schema`), or None.

    A property whose configuration was kept (``options``) has it back under its type's key, as
    in Notion's schema (``{"type": "status", "status": {"options": [...], "groups": [...]}}``);
    tables stored before that column existed load without it.
    """
    table = lake.read(SCHEMA_TABLE)
    if table is None:
        return None
    schema, bound = {}, {}
    for row in table.to_pylist():
        schema[row["name"]] = {"id": row["property_id"], "name": row["name"], "type": row["type"]}
        if row.get("options") is not None:
            schema[row["name"]][row["type"]] = json.loads(row["options"])
        if row.get("column"):
            bound[row["column"]] = (row["mapped_as"], row["property_id"])
    return schema, bound
