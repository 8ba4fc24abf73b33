"""The property map: which Notion property feeds which column of ``leads``.

The map names each property by name or by id. It is resolved against the data source's schema
**by property id**, so a property renamed in Notion keeps feeding its column.

A TOML file (``LEADS_PROPERTY_MAP``) replaces or extends the built-in French defaults::

    [columns.nom]
    property = "Nom"            # a property name or a property id
    kind = "text"

    [columns.entreprise]        # a new column: the leads table gains a nullable column
    property = "Entreprise"
    kind = "text"
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

#: Column kinds: the Notion property types each accepts, and the Arrow type it produces.
KINDS: dict[str, tuple[tuple[str, ...], pa.DataType]] = {
    "text": (("title", "rich_text"), pa.string()),
    "email": (("email",), pa.string()),
    "phone": (("phone_number",), pa.string()),
    "option": (("status", "select"), pa.string()),
    "date": (("date",), pa.date32()),
    "number": (("number",), pa.float64()),
    "checkbox": (("checkbox",), pa.bool_()),
    "url": (("url",), pa.string()),
    # The ids of the people or related pages, as a JSON array (truncated values are completed).
    "references": (("people", "relation"), pa.string()),
}

#: The five event columns that the weekly and monthly counts are made of, in contract order.
EVENT_COLUMNS: tuple[str, ...] = (
    "date_prise_contact",
    "date_reponse_prospect",
    "date_appel_propose",
    "date_appel_booke",
    "date_relance",
)

#: Columns of ``leads`` that come from page metadata, not from properties.
RESERVED_COLUMNS = ("id", "created_time", "last_edited_time", "url", "extra_properties")


@dataclass(frozen=True)
class ColumnSpec:
    """One column of the map: the property that feeds it (name or id) and its kind."""

    column: str
    property: str
    kind: str


DEFAULT_COLUMNS: tuple[ColumnSpec, ...] = (
    ColumnSpec("nom", "Nom", "text"),
    ColumnSpec("email", "Email", "email"),
    ColumnSpec("telephone", "Téléphone", "phone"),
    ColumnSpec("statut", "Statut", "option"),
    ColumnSpec("date_prise_contact", "Date de prise de contact", "date"),
    ColumnSpec("date_reponse_prospect", "Date de réponse du prospect", "date"),
    ColumnSpec("date_appel_propose", "Date d'appel proposé", "date"),
    ColumnSpec("date_appel_booke", "Date d'appel booké", "date"),
    ColumnSpec("date_relance", "Date de relance", "date"),
)


class PropertyMapError(ValueError):
    """The property map is invalid or does not fit the data source; the message names the culprit."""


@dataclass(frozen=True)
class PropertyMap:
    """An ordered set of column specifications."""

    columns: tuple[ColumnSpec, ...] = DEFAULT_COLUMNS

    def fingerprint(self) -> str:
        """A short hash that changes whenever the map changes (used to trigger a rebuild)."""
        payload = json.dumps([[c.column, c.property, c.kind] for c in self.columns])
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _validate(columns: tuple[ColumnSpec, ...], origin: str) -> PropertyMap:
    seen: set[str] = set()
    for spec in columns:
        if not spec.column.isidentifier() or spec.column != spec.column.lower():
            raise PropertyMapError(
                f"{origin}: column {spec.column!r} must be a lower-case identifier."
            )
        if spec.column in RESERVED_COLUMNS:
            raise PropertyMapError(
                f"{origin}: column {spec.column!r} is reserved for page metadata."
            )
        if spec.column in seen:
            raise PropertyMapError(f"{origin}: column {spec.column!r} is mapped twice.")
        if spec.kind not in KINDS:
            raise PropertyMapError(
                f"{origin}: column {spec.column!r} has unknown kind {spec.kind!r}; "
                f"use one of {', '.join(KINDS)}."
            )
        if not spec.property:
            raise PropertyMapError(f"{origin}: column {spec.column!r} names no property.")
        seen.add(spec.column)
    for event in EVENT_COLUMNS:
        spec = next((c for c in columns if c.column == event), None)
        if spec is None:
            raise PropertyMapError(f"{origin}: the event column {event!r} must be mapped.")
        if spec.kind != "date":
            raise PropertyMapError(f"{origin}: the event column {event!r} must have kind 'date'.")
    return PropertyMap(columns)


def load_property_map(path: str | Path | None = None) -> PropertyMap:
    """Loads the property map.

    Args:
        path: A TOML file; the built-in defaults when ``None``. Columns in the file replace the
            default of the same name; new columns are appended.

    Returns:
        The validated map.

    Raises:
        PropertyMapError: If the file cannot be read or a column is invalid.
    """
    if path is None:
        return _validate(DEFAULT_COLUMNS, "default property map")
    origin = f"property map {path}"
    try:
        document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise PropertyMapError(f"LEADS_PROPERTY_MAP: file {path} does not exist.") from error
    except tomllib.TOMLDecodeError as error:
        raise PropertyMapError(f"{origin} is not valid TOML: {error}") from error
    table = document.get("columns")
    if not isinstance(table, Mapping):
        raise PropertyMapError(f"{origin} needs a [columns] table.")
    columns = {c.column: c for c in DEFAULT_COLUMNS}
    for column, value in table.items():
        if isinstance(value, str):
            default = columns.get(column)
            if default is None:
                raise PropertyMapError(
                    f"{origin}: new column {column!r} needs a table with 'property' and 'kind'."
                )
            columns[column] = ColumnSpec(column, value, default.kind)
        elif isinstance(value, Mapping):
            default = columns.get(column)
            kind = value.get("kind", default.kind if default else None)
            prop = value.get("property")
            if not isinstance(prop, str) or not isinstance(kind, str):
                raise PropertyMapError(
                    f"{origin}: column {column!r} needs string 'property' and 'kind' values."
                )
            columns[column] = ColumnSpec(column, prop, kind)
        else:
            raise PropertyMapError(f"{origin}: column {column!r} must be a string or a table.")
    return _validate(tuple(columns.values()), origin)


@dataclass(frozen=True)
class ResolvedColumn:
    """A column bound to a property of the data source's schema."""

    column: str
    kind: str
    property_id: str
    property_name: str
    notion_type: str

    @property
    def arrow_type(self) -> pa.DataType:
        return KINDS[self.kind][1]


def resolve(
    property_map: PropertyMap,
    schema: Mapping[str, Mapping],
    previous: Mapping[str, tuple[str, str]] | None = None,
) -> tuple[ResolvedColumn, ...]:
    """Binds every mapped column to a property of the data source, by id.

    A column keeps the property id it was bound to by an earlier sync (``previous``) as long as
    its entry in the map is unchanged and the data source still has that id: a property renamed
    in Notion therefore keeps feeding its column even when the map names it by its old name.

    Args:
        property_map: The map to resolve.
        schema: The data source's ``properties`` object: ``{name: {"id", "name", "type"}}``.
        previous: Earlier bindings, column → (property as named in the map, property id).

    Returns:
        One resolved column per mapped column, in map order.

    Raises:
        PropertyMapError: If a mapped property is missing or of an incompatible type.
    """
    by_id = {p["id"]: p for p in schema.values()}
    by_name = {name: p for name, p in schema.items()}
    resolved = []
    previous = previous or {}
    for spec in property_map.columns:
        prop = None
        bound = previous.get(spec.column)
        if bound is not None and bound[0] == spec.property:
            prop = by_id.get(bound[1])
        prop = prop or by_id.get(spec.property) or by_name.get(spec.property)
        if prop is None:
            available = ", ".join(f"{n!r} ({p['type']})" for n, p in sorted(by_name.items()))
            raise PropertyMapError(
                f"Column {spec.column!r} maps property {spec.property!r}, which the data source "
                f"does not have (by name or id). Its properties are: {available}."
            )
        accepted = KINDS[spec.kind][0]
        if prop["type"] not in accepted:
            raise PropertyMapError(
                f"Column {spec.column!r} maps property {prop.get('name', spec.property)!r}, of type "
                f"{prop['type']!r}; kind {spec.kind!r} accepts {', '.join(accepted)}."
            )
        resolved.append(
            ResolvedColumn(
                column=spec.column,
                kind=spec.kind,
                property_id=prop["id"],
                property_name=prop.get("name", spec.property),
                notion_type=prop["type"],
            )
        )
    return tuple(resolved)


def bindings(
    property_map: PropertyMap, columns: tuple[ResolvedColumn, ...]
) -> dict[str, tuple[str, str]]:
    """The bindings to remember for :func:`resolve`'s ``previous``: column → (map entry, id)."""
    specs = {c.column: c.property for c in property_map.columns}
    return {c.column: (specs[c.column], c.property_id) for c in columns}
