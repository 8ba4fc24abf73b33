"""Status semantics from Notion's schema: the order of the statuses and the group of each.

A Notion ``status`` property declares its options and three groups (``To-do``, ``In progress``,
``Complete``), each listing its options in the order Notion shows them; a ``select`` declares
only its options, in order. So "still open" and "won/lost" come from Notion, never from
hard-coded status names:

- ``position``: for a ``status``, groups in their order, then each group's options in theirs
  (options in no group follow, in option order); for a ``select``, option order. Statuses seen in
  the data but absent from the schema (an option renamed or removed since) come after the known
  ones, alphabetically, with no group.
- ``group``: the Notion group name, NULL for a ``select`` or a status the schema does not know.
- ``stage``: ``closed`` for the statuses of the ``Complete`` group, ``open`` for every other.

The property's configuration is kept by the sync beside the raw pages
(:func:`leads_pipeline.storage.raw_store.store_schema`), so this never calls Notion.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import pyarrow as pa

from leads_pipeline.storage.raw_store import load_schema

if TYPE_CHECKING:
    from leads_pipeline.storage.lake import DeltaLake

#: The ``leads`` column holding the status.
STATUS_COLUMN = "statut"
#: The Notion group whose statuses end a lead's journey (won or lost).
COMPLETE_GROUP = "Complete"
OPEN, CLOSED = "open", "closed"

STATUSES_SCHEMA = pa.schema(
    [
        pa.field("status", pa.string(), nullable=False),
        pa.field("position", pa.int64(), nullable=False),
        pa.field("group", pa.string()),
        pa.field("stage", pa.string(), nullable=False),
    ]
)


class StatusSchemaError(ValueError):
    """A property's configuration is not shaped as Notion describes a status or a select."""


def _names(options: object, where: str) -> list[str]:
    """The option names of an ``options`` list, in order, each once."""
    if not isinstance(options, list):
        raise StatusSchemaError(f"{where}: 'options' must be a list, not {type(options).__name__}")
    names: list[str] = []
    for index, option in enumerate(options):
        name = option.get("name") if isinstance(option, Mapping) else None
        if not isinstance(name, str):
            raise StatusSchemaError(f"{where}: option {index} has no name: {option!r}")
        if name not in names:
            names.append(name)
    return names


def _status_order(config: Mapping, where: str) -> list[tuple[str, str | None]]:
    """``(option name, group name)`` of a ``status`` configuration, in Notion's display order."""
    options = config.get("options") or []
    _names(options, where)  # validates the shape
    by_id = {o.get("id"): o["name"] for o in options if o.get("id") is not None}
    ordered: list[tuple[str, str | None]] = []
    placed: set[str] = set()
    groups = config.get("groups") or []
    if not isinstance(groups, list):
        raise StatusSchemaError(f"{where}: 'groups' must be a list, not {type(groups).__name__}")
    for group in groups:
        if not isinstance(group, Mapping) or not isinstance(group.get("name"), str):
            raise StatusSchemaError(f"{where}: a group has no name: {group!r}")
        for option_id in group.get("option_ids") or []:
            name = by_id.get(option_id)
            if name is not None and name not in placed:
                ordered.append((name, group["name"]))
                placed.add(name)
    for option in options:
        if option["name"] not in placed:
            ordered.append((option["name"], None))
            placed.add(option["name"])
    return ordered


def schema_order(prop: Mapping | None) -> list[tuple[str, str | None]]:
    """The statuses a property declares, in order, each with its group (None for a select).

    Args:
        prop: The property's schema entry, as Notion returns it in a data source's
            ``properties`` (``{"type": "status", "status": {"options": [...], "groups": [...]}}``
            or ``{"type": "select", "select": {"options": [...]}}``), or None (no property).
            An entry without its configuration (stored before it was kept) declares nothing.

    Raises:
        StatusSchemaError: If the property is of another type, or its configuration is malformed
            (the message names the property).
    """
    if prop is None:
        return []
    kind = prop.get("type")
    where = f"property {prop.get('name') or prop.get('id')!r}"
    if kind not in ("status", "select"):
        raise StatusSchemaError(f"{where} is a {kind!r} property, not a status or a select")
    config = prop.get(kind)
    if config is None:
        return []
    if not isinstance(config, Mapping):
        raise StatusSchemaError(f"{where}: its {kind!r} object is a {type(config).__name__}")
    if kind == "select":
        return [(name, None) for name in _names(config.get("options") or [], where)]
    return _status_order(config, where)


def ordered_statuses(prop: Mapping | None, seen: Iterable[str | None] = ()) -> pa.Table:
    """The statuses of ``prop`` then those only ``seen`` in the data, as a table.

    Args:
        prop: The status property's schema entry (see :func:`schema_order`), or None.
        seen: Status values found in the data (NULLs ignored); those the schema lacks are
            appended alphabetically, with no group.

    Returns:
        ``status, position, group, stage`` (:data:`STATUSES_SCHEMA`), ordered by ``position``
        (0, 1, … n-1).
    """
    order = schema_order(prop)
    known = {name for name, _ in order}
    extra = sorted({s for s in seen if s is not None and s not in known})
    rows = [*order, *((name, None) for name in extra)]
    return pa.table(
        {
            "status": pa.array([name for name, _ in rows], pa.string()),
            "position": pa.array(range(len(rows)), pa.int64()),
            "group": pa.array([group for _, group in rows], pa.string()),
            "stage": pa.array([stage_of(group) for _, group in rows], pa.string()),
        },
        schema=STATUSES_SCHEMA,
    )


def stage_of(group: str | None) -> str:
    """``closed`` for Notion's ``Complete`` group, ``open`` for any other group or none."""
    return CLOSED if group is not None and group.casefold() == COMPLETE_GROUP.casefold() else OPEN


def status_property(
    schema: Mapping[str, Mapping],
    bound: Mapping[str, tuple[str, str]],
    column: str = STATUS_COLUMN,
) -> Mapping | None:
    """The schema entry of the property bound to ``column``, or None when it is unmapped.

    Args:
        schema: The data source's properties by name (as :func:`raw_store.load_schema` gives).
        bound: Column → (map entry, property id), as :func:`raw_store.load_schema` gives.
        column: The ``leads`` column.
    """
    if column not in bound:
        return None
    _, property_id = bound[column]
    for prop in schema.values():
        if prop.get("id") == property_id:
            return prop
    return None


def lake_statuses(lake: DeltaLake, seen: Iterable[str | None] = ()) -> pa.Table:
    """The statuses of the lake's stored schema (see :func:`ordered_statuses`).

    Args:
        lake: The lake whose ``_data_source_schema`` the last sync stored.
        seen: Status values found in the data.

    Returns:
        The statuses table; only the ``seen`` ones (no group) when no schema is stored yet or
        the status column is unmapped.
    """
    stored = load_schema(lake)
    prop = status_property(*stored) if stored is not None else None
    return ordered_statuses(prop, seen)
