"""The property map: which Notion property feeds which column of ``leads``.

The map names each property by name or by id. It is resolved against the data source's schema
**by property id**, so a property renamed in Notion keeps feeding its column.

A TOML file (``LEADS_PROPERTY_MAP``) replaces or extends the built-in French defaults::

    [columns]
    nom = "Name"                # a property name or a property id, the column's default kind
    telephone = false           # no such property: the column stays in leads, always NULL

    [columns.date_prise_contact]
    property = "Created"        # a created_time property
    kind = "date"

    [columns.entreprise]        # a new column: the leads table gains a nullable column
    property = "Entreprise"
    kind = "text"

Every column but ``nom`` may be disabled. The kinds, the Notion types each accepts and what it
produces are the records of :data:`leads_pipeline.transform.parsing.KINDS`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from leads_pipeline.tables import EVENT_COLUMNS, HISTORY_ONLY_COLUMNS
from leads_pipeline.transform.parsing import KINDS, RULES_VERSION

__all__ = [
    "DEFAULT_COLUMNS",
    "PROPERTY_MAP_VARIABLE",
    "REQUIRED_COLUMNS",
    "RESERVED_COLUMNS",
    "ColumnSpec",
    "PropertyMap",
    "PropertyMapError",
    "ResolvedColumn",
    "accepted_types",
    "bindings",
    "kinds_accepting",
    "load_property_map",
    "resolve",
]

#: The setting naming the map file.
PROPERTY_MAP_VARIABLE = "LEADS_PROPERTY_MAP"

#: Columns that must be mapped (the page id is always there).
REQUIRED_COLUMNS: tuple[str, ...] = ("nom",)

#: Columns of ``leads`` that come from page metadata, not from properties.
RESERVED_COLUMNS = ("id", "created_time", "last_edited_time", "url", "extra_properties")

#: The keys of a column's table in the TOML file, and its top-level tables.
_COLUMN_KEYS = ("property", "kind")
_TOP_LEVEL_KEYS = ("columns",)

_SUGGEST = "`leads-pipeline map suggest` prints a map written for the database"


def accepted_types(kind: str) -> tuple[str, ...]:
    """The Notion property types a kind accepts.

    Raises:
        KeyError: If the kind is unknown.
    """
    return KINDS[kind].accepted


def kinds_accepting(notion_type: str) -> tuple[str, ...]:
    """The kinds that accept a Notion property type, in :data:`KINDS` order (may be empty)."""
    return tuple(name for name, kind in KINDS.items() if notion_type in kind.accepted)


@dataclass(frozen=True)
class ColumnSpec:
    """One column of the map: the property that feeds it (name or id) and its kind.

    ``property is None`` means the column is disabled: it stays in ``leads``, always NULL.
    """

    column: str
    property: str | None
    kind: str

    @property
    def enabled(self) -> bool:
        return self.property is not None


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

_DEFAULTS = {c.column: c for c in DEFAULT_COLUMNS}


class PropertyMapError(ValueError):
    """The property map is invalid or does not fit the data source; the message names the culprit."""


@dataclass(frozen=True)
class PropertyMap:
    """An ordered set of column specifications."""

    columns: tuple[ColumnSpec, ...] = DEFAULT_COLUMNS

    def fingerprint(self) -> str:
        """A short hash that changes whenever the map changes (used to trigger a rebuild).

        Disabling or enabling a column changes it, and so does a new version of the parsing
        rules (:data:`leads_pipeline.transform.parsing.RULES_VERSION`).
        """
        payload = json.dumps(
            {
                "rules": RULES_VERSION,
                "columns": [[c.column, c.property, c.kind] for c in self.columns],
            }
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _close(word: str, candidates) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate, or nothing."""
    match = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _validate_name(column: str, origin: str) -> None:
    if column.startswith("_"):
        raise PropertyMapError(
            f"{origin}: column {column!r} is reserved: names starting with '_' are used by the "
            "parser itself."
        )
    if column in RESERVED_COLUMNS:
        raise PropertyMapError(f"{origin}: column {column!r} is reserved for page metadata.")
    if column in HISTORY_ONLY_COLUMNS:
        raise PropertyMapError(f"{origin}: column {column!r} is reserved by lead_history.")
    if not column.isidentifier() or column != column.lower():
        raise PropertyMapError(
            f"{origin}: column {column!r} must be a lower-case identifier (letters, digits "
            "and '_', not starting with a digit)."
        )


def _validate_kind(spec: ColumnSpec, origin: str) -> None:
    if spec.kind not in KINDS:
        raise PropertyMapError(
            f"{origin}: column {spec.column!r} has unknown kind {spec.kind!r}"
            f"{_close(spec.kind, KINDS)}; use one of {', '.join(KINDS)}."
        )
    default = _DEFAULTS.get(spec.column)
    if spec.column in EVENT_COLUMNS and spec.kind != "date":
        raise PropertyMapError(
            f"{origin}: the event column {spec.column!r} must have kind 'date' (it is "
            f"{spec.kind!r}); map a property of a type kind 'date' accepts "
            f"({KINDS['date'].describe()}), or disable it with `{spec.column} = false`."
        )
    if default is not None and KINDS[spec.kind].arrow_type != KINDS[default.kind].arrow_type:
        fitting = [k for k, v in KINDS.items() if v.arrow_type == KINDS[default.kind].arrow_type]
        raise PropertyMapError(
            f"{origin}: column {spec.column!r} of the leads contract holds "
            f"{KINDS[default.kind].arrow_type} values; kind {spec.kind!r} gives "
            f"{KINDS[spec.kind].arrow_type}. Use one of {', '.join(fitting)}."
        )


def _validate(columns: tuple[ColumnSpec, ...], origin: str) -> PropertyMap:
    seen: set[str] = set()
    for spec in columns:
        _validate_name(spec.column, origin)
        if spec.column in seen:
            raise PropertyMapError(f"{origin}: column {spec.column!r} is mapped twice.")
        seen.add(spec.column)
        _validate_kind(spec, origin)
        if spec.property is None:
            if spec.column in REQUIRED_COLUMNS:
                raise PropertyMapError(
                    f"{origin}: column {spec.column!r} is required and cannot be disabled: map "
                    "it to the database's title property (or another text property)."
                )
        elif not isinstance(spec.property, str) or not spec.property.strip():
            raise PropertyMapError(
                f"{origin}: column {spec.column!r} names no property; to leave it unmapped, "
                f"write `{spec.column} = false` under [columns]."
            )
    missing = [c for c in (*REQUIRED_COLUMNS, *EVENT_COLUMNS) if c not in seen]
    if missing:
        raise PropertyMapError(
            f"{origin}: the columns {', '.join(map(repr, missing))} must be in the map (mapped, "
            "or disabled with `= false` when they are not required)."
        )
    return PropertyMap(columns)


def _read_document(path: str | Path, origin: str) -> dict:
    """The TOML document of a map file, every failure named as a PropertyMapError."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError as error:
        raise PropertyMapError(f"{PROPERTY_MAP_VARIABLE}: file {path} does not exist.") from error
    except OSError as error:
        raise PropertyMapError(f"{origin} cannot be read: {error}") from error
    bom = b"\xef\xbb\xbf" if data.startswith(b"\xef\xbb\xbf") else b""
    try:
        text = data[len(bom) :].decode("utf-8")
    except UnicodeDecodeError as error:
        position = error.start + len(bom)
        line = data[:position].count(b"\n") + 1
        raise PropertyMapError(
            f"{origin} is not UTF-8 text: byte {position} (0x{data[position]:02x}, line {line}) "
            "cannot be decoded. Save the file as UTF-8."
        ) from error
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise PropertyMapError(f"{origin} is not valid TOML: {error}") from error


def _spec_from_file(column: str, value: object, origin: str) -> ColumnSpec:
    """One ``[columns]`` entry: a property (string), ``false``, or a table."""
    default = _DEFAULTS.get(column)
    if isinstance(value, Mapping):
        unknown = [key for key in value if key not in _COLUMN_KEYS]
        if unknown:
            key = unknown[0]
            raise PropertyMapError(
                f"{origin}: column {column!r} has unknown key {key!r}{_close(key, _COLUMN_KEYS)}; "
                f"a column's table takes {' and '.join(map(repr, _COLUMN_KEYS))}."
            )
        prop = value.get("property", default.property if default else None)
        kind = value.get("kind", default.kind if default else None)
        if default is None and ("property" not in value or "kind" not in value):
            raise PropertyMapError(
                f"{origin}: new column {column!r} needs both 'property' and 'kind'."
            )
        if not isinstance(kind, str) or not (isinstance(prop, str) or prop is False):
            raise PropertyMapError(
                f"{origin}: column {column!r} needs string 'property' and 'kind' values "
                "('property = false' disables it)."
            )
        value = prop
    else:
        kind = default.kind if default else None
    if value is False:
        if default is None:
            raise PropertyMapError(
                f"{origin}: {column!r} is not a column of the leads contract"
                f"{_close(column, _DEFAULTS)}; only those can be disabled (remove the entry of "
                "a column of your own instead)."
            )
        return ColumnSpec(column, None, kind)
    if isinstance(value, str):
        if kind is None:
            raise PropertyMapError(
                f"{origin}: new column {column!r}{_close(column, _DEFAULTS)} needs a table with "
                "'property' and 'kind'."
            )
        return ColumnSpec(column, value, kind)
    raise PropertyMapError(
        f"{origin}: column {column!r} must be a property name (string), false (disabled) or a "
        f"table with 'property' and 'kind'; got {value!r}."
    )


def load_property_map(path: str | Path | None = None) -> PropertyMap:
    """Loads the property map.

    Args:
        path: A TOML file (UTF-8); the built-in defaults when ``None``. Columns in the file replace
            the default of the same name; new columns are appended; a contract column set to
            ``false`` is disabled.

    Returns:
        The validated map.

    Raises:
        PropertyMapError: If the file cannot be read or decoded, has an unknown table or key, or a
            column is invalid. The message names ``LEADS_PROPERTY_MAP`` and the file.
    """
    if path is None:
        return _validate(DEFAULT_COLUMNS, "default property map")
    origin = f"property map {path} ({PROPERTY_MAP_VARIABLE})"
    document = _read_document(path, origin)
    for key in document:
        if key not in _TOP_LEVEL_KEYS:
            raise PropertyMapError(
                f"{origin}: unknown table or key {key!r}{_close(key, _TOP_LEVEL_KEYS)}; the file "
                "takes a [columns] table only."
            )
    table = document.get("columns")
    if not isinstance(table, Mapping):
        raise PropertyMapError(f"{origin} needs a [columns] table.")
    columns = dict(_DEFAULTS)
    for column, value in table.items():
        _validate_name(column, origin)
        columns[column] = _spec_from_file(column, value, origin)
    return _validate(tuple(columns.values()), origin)


@dataclass(frozen=True)
class ResolvedColumn:
    """A column bound to a property of the data source's schema.

    A disabled column has ``property_id = property_name = notion_type = None``.
    """

    column: str
    kind: str
    property_id: str | None
    property_name: str | None
    notion_type: str | None

    @property
    def enabled(self) -> bool:
        return self.property_id is not None

    @property
    def arrow_type(self) -> pa.DataType:
        return KINDS[self.kind].arrow_type


def _describe_schema(schema: Mapping[str, Mapping]) -> str:
    return ", ".join(f"{n!r} ({p.get('type')})" for n, p in sorted(schema.items())) or "none"


def _way_out(column: str) -> str:
    if column in REQUIRED_COLUMNS:
        return (
            f"{_SUGGEST}. Fix the entry of {column!r} in {PROPERTY_MAP_VARIABLE} (column "
            f"{column!r} is required and cannot be disabled)."
        )
    return (
        f"{_SUGGEST}. Fix the entry of {column!r} in {PROPERTY_MAP_VARIABLE}, or leave the column "
        f"out with `{column} = false` under [columns]."
    )


def _missing_message(spec: ColumnSpec, schema: Mapping[str, Mapping]) -> str:
    kind = KINDS[spec.kind]
    fitting = [n for n, p in sorted(schema.items()) if p.get("type") in kind.accepted]
    parts = [
        f"Column {spec.column!r} maps property {spec.property!r}, which the data source does not "
        f"have (by name or id){_close(spec.property, schema)}. Its properties are: "
        f"{_describe_schema(schema)}."
    ]
    if spec.column in REQUIRED_COLUMNS:
        titles = [n for n, p in sorted(schema.items()) if p.get("type") == "title"]
        if titles:
            parts.append(
                f"Its title property is {titles[0]!r}: map it with `{spec.column} = "
                f"{json.dumps(titles[0], ensure_ascii=False)}`."
            )
        else:
            parts.append(
                f"The data source has no title property at all, so {spec.column!r} cannot be "
                "resolved to it: map it to another property of a type kind "
                f"{spec.kind!r} accepts ({kind.describe()})."
            )
    if fitting:
        parts.append(
            f"Properties of a type kind {spec.kind!r} accepts ({kind.describe()}): "
            f"{', '.join(map(repr, fitting))}."
        )
    parts.append(_way_out(spec.column))
    return " ".join(parts)


def _wrong_type_message(spec: ColumnSpec, prop: Mapping) -> str:
    kind = KINDS[spec.kind]
    notion_type = prop.get("type")
    name = prop.get("name", spec.property)
    accepting = kinds_accepting(notion_type)
    parts = [
        f"Column {spec.column!r} maps property {name!r}, of type {notion_type!r}; kind "
        f"{spec.kind!r} accepts {kind.describe()}."
    ]
    if accepting:
        parts.append(
            f"Type {notion_type!r} is accepted by kind{'s' if len(accepting) > 1 else ''} "
            f"{', '.join(map(repr, accepting))}."
        )
    else:
        parts.append(f"No kind accepts type {notion_type!r}.")
    default = _DEFAULTS.get(spec.column)
    usable = [
        k
        for k in accepting
        if default is None or KINDS[k].arrow_type == KINDS[default.kind].arrow_type
    ]
    if spec.column in EVENT_COLUMNS:
        parts.append(f"{spec.column!r} is an event column: it needs kind 'date'.")
    elif usable:
        parts.append(
            f"To read it anyway, set `kind = {json.dumps(usable[0])}` under "
            f"[columns.{spec.column}]."
        )
    parts.append(_way_out(spec.column))
    return " ".join(parts)


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
        One resolved column per column of the map, in map order; a disabled column has
        ``property_id = property_name = notion_type = None``.

    Raises:
        PropertyMapError: If a mapped property is missing or of a type its kind does not accept;
            the message names the column, the property, its type and the kinds accepting it.
    """
    by_id = {p["id"]: p for p in schema.values()}
    by_name = dict(schema)
    resolved = []
    previous = previous or {}
    for spec in property_map.columns:
        if not spec.enabled:
            resolved.append(ResolvedColumn(spec.column, spec.kind, None, None, None))
            continue
        prop = None
        bound = previous.get(spec.column)
        if bound is not None and bound[0] == spec.property:
            prop = by_id.get(bound[1])
        prop = prop or by_id.get(spec.property) or by_name.get(spec.property)
        if prop is None:
            raise PropertyMapError(_missing_message(spec, schema))
        if prop.get("type") not in KINDS[spec.kind].accepted:
            raise PropertyMapError(_wrong_type_message(spec, prop))
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
    """The bindings to remember for :func:`resolve`'s ``previous``: column → (map entry, id).

    Disabled columns have no binding.
    """
    specs = {c.column: c.property for c in property_map.columns}
    return {c.column: (specs[c.column], c.property_id) for c in columns if c.enabled}
