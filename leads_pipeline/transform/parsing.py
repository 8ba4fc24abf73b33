"""Vectorised parsing of raw Notion pages into the typed ``leads`` rows and quality issues.

Each page's ``properties_json`` is parsed once by DuckDB's ``json_transform`` into a typed
struct built from the data source schema; every column is then a SQL expression over that struct.
There is no per-row Python on this path, except for pages stored before a property was renamed
(their JSON is keyed by the old name): those are re-keyed by property id first; and for pages
whose text DuckDB cannot read as JSON, looked for only when a statement fails on one.

Three tables of rules drive it, one record per entry:

- :data:`KINDS`: a column kind (``text``, ``date``, …), the Notion property types it accepts, the
  Arrow type it produces and the SQL that reads it. A new kind is one entry.
- :data:`SIMPLE_VALUES`: for each Notion property type, the SQL of the JSON "simple value" that
  ``extra_properties`` keeps for an unmapped property.
- :data:`JSON_CHECKS`: for each Notion property type, the fields whose JSON type must be checked.

``json_transform`` never fails on a value of the wrong JSON type: it gives NULL, or coerces it (a
number read as text, an object as its JSON text). :data:`JSON_CHECKS` lists, by Notion type, the
fields where that could hide a bad value, with a cheap test over the typed value telling when it
might. A page with such a suspect value (or a value missing, without a type, or of another type
than the schema's) has its JSON types looked up exactly (``json_type`` on its verbatim JSON) by a
second statement, over the suspect pages only: clean pages cost no second parse, and no second
statement is even planned when no page is suspect. A page whose properties are not a JSON object,
or not valid JSON at all, still yields its lead (every mapped column NULL) and an issue: nothing a
raw page holds can fail the parse (see :data:`REASONS`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from leads_pipeline.storage.duck import scratch_connection

if TYPE_CHECKING:
    from leads_pipeline.transform.property_map import ResolvedColumn

#: Bumped whenever a rule below changes what a value parses to: the property map's fingerprint
#: includes it, so ``leads`` is re-derived from raw once after an upgrade.
RULES_VERSION = 3

#: Arrow schema of the ``lead_quality_issues`` table.
ISSUES_SCHEMA = pa.schema(
    [
        pa.field("page_id", pa.string(), nullable=False),
        pa.field("column", pa.string(), nullable=False),
        pa.field("raw_value", pa.string()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detected_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)

#: DuckDB scans an Arrow table in parallel only across its record batches: feed it small ones.
_SCAN_BATCH_ROWS = 2048

# ISO 8601 as Notion writes it: a date, or a datetime to the minute or beyond with an optional
# offset. Hours 00-23, minutes 00-59, seconds 00-60 (60 is a leap second: only the date is kept),
# offsets within -14:00..+14:00; the calendar date itself is checked by a cast (no 2025-02-30).
_DATE_PATTERN = (
    r"\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])"
    r"(T([01]\d|2[0-3]):[0-5]\d(:([0-5]\d|60)(\.\d+)?)?"
    r"(Z|[+-]((0\d|1[0-3]):?[0-5]\d|14:?00))?)?"
)
_EMAIL_PATTERN = r"[^@\s]+@[^@\s]+\.[^@\s.]+"

_TEXT = [{"plain_text": "VARCHAR"}]

# The typed shape of a property value, by Notion type, for json_transform. A type not listed is
# kept as JSON.
_SHAPES: dict[str, dict] = {
    "title": {"title": _TEXT},
    "rich_text": {"rich_text": _TEXT},
    "email": {"email": "VARCHAR"},
    "phone_number": {"phone_number": "VARCHAR"},
    "url": {"url": "VARCHAR"},
    "number": {"number": "DOUBLE"},
    "checkbox": {"checkbox": "BOOLEAN"},
    "select": {"select": {"name": "VARCHAR"}},
    "status": {"status": {"name": "VARCHAR"}},
    "multi_select": {"multi_select": [{"name": "VARCHAR"}]},
    "date": {"date": {"start": "VARCHAR", "end": "VARCHAR"}},
    "people": {"people": [{"id": "VARCHAR"}]},
    "relation": {"relation": [{"id": "VARCHAR"}]},
    "files": {"files": [{"name": "VARCHAR"}]},
    "created_time": {"created_time": "VARCHAR"},
    "last_edited_time": {"last_edited_time": "VARCHAR"},
    "created_by": {"created_by": {"id": "VARCHAR"}},
    "last_edited_by": {"last_edited_by": {"id": "VARCHAR"}},
    "unique_id": {"unique_id": {"prefix": "VARCHAR", "number": "BIGINT"}},
    "verification": {"verification": {"state": "VARCHAR"}},
    "place": {"place": {"name": "VARCHAR", "address": "VARCHAR"}},
    "formula": {
        "formula": {
            "type": "VARCHAR",
            "string": "VARCHAR",
            "number": "DOUBLE",
            "boolean": "BOOLEAN",
            "date": {"start": "VARCHAR"},
        }
    },
    # Each element of a rollup array is a property value of its own (``{"type": "title", …}``),
    # kept as JSON here and typed element by element (see _rollup_array_simple).
    "rollup": {
        "rollup": {
            "type": "VARCHAR",
            "number": "DOUBLE",
            "date": {"start": "VARCHAR"},
            "array": ["JSON"],
        }
    },
}

#: Notion types never kept in ``extra_properties``: they hold no data.
_NOT_DATA = frozenset({"button"})

# -- values json_transform would hide: their JSON types, checked where they might be wrong ------

#: The ``column`` of an issue about a whole page's ``properties_json``.
PROPERTIES_COLUMN = "properties"
NOT_AN_OBJECT = "page properties are not a JSON object"
INVALID_UNICODE = "page properties hold invalid Unicode (replaced by U+FFFD)"
NO_TYPE = "property value has no type"
NOT_A_DATE = "not an ISO 8601 date"

#: Every ``reason`` of ``lead_quality_issues``, as a pattern (``<...>`` varies).
REASONS = (
    f"{NOT_AN_OBJECT} (column {PROPERTIES_COLUMN!r}: invalid JSON text, or a string, array, "
    "number, boolean or null)",
    f"{INVALID_UNICODE} (column {PROPERTIES_COLUMN!r}: a lone surrogate escape or bytes that are "
    "not UTF-8; the page is parsed with U+FFFD in their place)",
    "property value is <a string|a number|a boolean|an array|null>, expected an object",
    NO_TYPE,
    "property has type <type>, expected <type of the schema>",
    "<field> is <a string|a number|a boolean|an object|an array>, expected <a JSON type>",
    "formula result is <type>, expected <string|date>",
    "rollup result is <type>, expected date",
    "rollup result is an array of <type>, expected date",
    "not a valid email address",
    NOT_A_DATE,
)

#: How a reason names each JSON type ``json_type`` gives.
_JSON_NAMES = {
    "VARCHAR": "a string",
    "BIGINT": "a number",
    "UBIGINT": "a number",
    "DOUBLE": "a number",
    "BOOLEAN": "a boolean",
    "OBJECT": "an object",
    "ARRAY": "an array",
    "NULL": "null",
}
_STRING, _OBJECT, _ARRAY = ("VARCHAR",), ("OBJECT",), ("ARRAY",)


def _if_null(v: str, f: str) -> str:
    # json_transform gives NULL for a list of any other JSON type (and for a JSON null).
    return f"{f} IS NULL"


def _if_empty(key: str) -> Callable[[str, str], str]:
    # json_transform gives an object of NULL fields for a value of any other JSON type.
    return lambda v, f: f"{f} IS NOT NULL AND {f}.{key} IS NULL"


def _if_coerced(v: str, f: str) -> str:
    # json_transform turns a number, a boolean, an object or an array into its JSON text: suspect
    # a text that could be one (a phone number of digits alone, say, is looked up and kept).
    # Comparisons only, no regex: this runs on every text of the schema's type.
    return (
        f"({f} IN ('true', 'false') OR prefix({f}, '{{') OR prefix({f}, '[') "
        f"OR ({f} >= '-' AND {f} < ':' AND NOT contains({f}, ' ')))"
    )


@dataclass(frozen=True)
class JsonCheck:
    """A field of a property value whose JSON type ``json_transform`` may hide.

    Attributes:
        field: The field's path below the property value (``status.name``).
        expected: The ``json_type`` names it may have; a JSON null (empty) always may.
        suspect: SQL over (the typed property value, the typed field) true when the typed field
            might hide another JSON type; only then is its JSON type looked up.
        result: Only for the kinds reading a formula or rollup result of this type.
        suspect_read: Like ``suspect``, over (the typed property value, the text the column
            read from it), for a test cheaper on that text; None when ``suspect`` does it all.
    """

    field: str
    expected: tuple[str, ...]
    suspect: Callable[[str, str], str]
    result: str | None = None
    suspect_read: Callable[[str, str], str] | None = None

    @property
    def expected_name(self) -> str:
        """How a reason names the expected type."""
        return _JSON_NAMES[self.expected[0]]


def _string_checks(*fields: str) -> tuple[JsonCheck, ...]:
    return tuple(JsonCheck(f, _STRING, _if_coerced) for f in fields)


def _rich_text_checks(notion_type: str) -> tuple[JsonCheck, ...]:
    """A rich text is a list of segments; the first one tells a list of something else.

    A segment that is not an object reads as nothing, a ``plain_text`` that is not text as
    nothing or as its JSON text: the text read is then empty, or looks like JSON, and is suspect.
    (Testing the text read costs less than taking the segments apart on every page; a bad
    segment after good ones goes unseen.)
    """

    def empty_text(v: str, text: str) -> str:
        return (
            f"len({v}.{notion_type}) > 0 AND (coalesce({text}, '') = '' OR {_if_coerced(v, text)})"
        )

    never = lambda v, f: "FALSE"  # noqa: E731
    return (
        JsonCheck(notion_type, _ARRAY, _if_null),
        JsonCheck(f"{notion_type}[0]", _OBJECT, never, suspect_read=empty_text),
        JsonCheck(f"{notion_type}[0].plain_text", _STRING, never, suspect_read=empty_text),
    )


#: The checks of a property value by Notion type, the fields the kinds read; the checks of a type
#: exclude each other (one value fails one at most). Needing none: a date's ``start`` (any other
#: JSON type fails its ISO 8601 validation), a formula or rollup that is not an object (its
#: result type is then missing: an issue already), a unique_id's prefix and number (Notion writes
#: them), a rich text's segments after the first.
JSON_CHECKS: dict[str, tuple[JsonCheck, ...]] = {
    "title": _rich_text_checks("title"),
    "rich_text": _rich_text_checks("rich_text"),
    "people": (JsonCheck("people", _ARRAY, _if_null),),
    "relation": (JsonCheck("relation", _ARRAY, _if_null),),
    "email": _string_checks("email"),
    "phone_number": _string_checks("phone_number"),
    "url": _string_checks("url"),
    # Typed as their JSON text (Kind.shape): a JSON number starts with - or a digit.
    "number": (
        JsonCheck(
            "number",
            ("BIGINT", "UBIGINT", "DOUBLE"),
            lambda v, f: f"NOT (CAST({f} AS VARCHAR) >= '-' AND CAST({f} AS VARCHAR) < ':')",
        ),
    ),
    "checkbox": (
        JsonCheck(
            "checkbox",
            ("BOOLEAN",),
            lambda v, f: f"CAST({f} AS VARCHAR) NOT IN ('true', 'false')",
        ),
    ),
    "select": (JsonCheck("select", _OBJECT, _if_empty("name")), *_string_checks("select.name")),
    "status": (JsonCheck("status", _OBJECT, _if_empty("name")), *_string_checks("status.name")),
    "date": (JsonCheck("date", _OBJECT, _if_empty("start")),),
    "unique_id": (JsonCheck("unique_id", _OBJECT, _if_empty("number")),),
    "formula": (
        JsonCheck("formula.string", _STRING, _if_coerced, result="string"),
        JsonCheck("formula.date", _OBJECT, _if_empty("start"), result="date"),
    ),
    "rollup": (
        JsonCheck("rollup.date", _OBJECT, _if_empty("start")),
        JsonCheck(
            "rollup.array", _ARRAY, lambda v, f: f"{v}.rollup.type = 'array' AND {f} IS NULL"
        ),
    ),
}


def _json_path(name: str, field: str | None = None) -> str:
    """The JSON path of a property (or of a field below it) in a page's properties."""
    path = "$." + json.dumps(name, ensure_ascii=False)
    return path if field is None else f"{path}.{field}"


def _checks_of(column: ResolvedColumn) -> list[tuple[str, JsonCheck]]:
    """The (Notion type, check) pairs of the types a column's kind accepts."""
    kind = KINDS[column.kind]
    return [
        (notion_type, check)
        for notion_type in kind.accepted
        for check in JSON_CHECKS.get(notion_type, ())
        if check.result in (None, kind.result)
    ]


def _suspect_read(v: str, column: ResolvedColumn, text: str) -> str | None:
    """SQL of the tests of :func:`_suspect` that are over the text read (``text``), or None."""
    tests = {
        check.suspect_read(v, text)
        for t, check in _checks_of(column)
        if t == column.notion_type and check.suspect_read
    }
    return " OR ".join(f"({test})" for test in sorted(tests)) or None


def _suspect(v: str, column: ResolvedColumn) -> str:
    """SQL true when a column's value might not be an object, or hide a field's JSON type.

    Cheap on clean pages: a value of the schema's type is suspect only by that type's tests; any
    other (missing, no type, or the page disagrees with the schema) is suspect. Suspect pages
    have their JSON types looked up exactly afterwards (see :func:`_json_check_statement`).
    """
    tests = [f"{v}.type IS DISTINCT FROM {_lit(column.notion_type)}"] + [
        check.suspect(v, f"{v}.{check.field}")
        for t, check in _checks_of(column)
        if t == column.notion_type
    ]
    return " OR ".join(f"({test})" for test in tests)


def _label(json_type: str) -> str:
    """SQL naming a ``json_type`` result in a reason (``a string``, ``an object``, …)."""
    entries = ", ".join(f"{_lit(t)}: {_lit(label)}" for t, label in _JSON_NAMES.items())
    return f"MAP {{{entries}}}[{json_type}]"


def _json_problem(types: str, notion_type: str, column: ResolvedColumn) -> str:
    """SQL of the reason a suspect page's value has a JSON type the column cannot read, or NULL.

    Args:
        types: SQL of the list of ``json_type`` results of :func:`_json_paths` for the column.
        notion_type: SQL of the value's ``type``.
        column: The column.
    """
    value, value_type = f"{types}[1]", f"{types}[2]"
    whens = [
        f"WHEN {value} IS NULL THEN NULL",  # a missing property: no issue
        f"WHEN {value} <> 'OBJECT' THEN "
        f"'property value is ' || {_label(value)} || ', expected an object'",
        f"WHEN coalesce({value_type}, 'NULL') = 'NULL' THEN {_lit(NO_TYPE)}",
    ]
    for index, (t, check) in enumerate(_checks_of(column), start=3):
        found = f"{types}[{index}]"
        allowed = ", ".join(map(_lit, (*check.expected, "NULL")))
        whens.append(
            f"WHEN {notion_type} = {_lit(t)} AND {found} NOT IN ({allowed}) THEN "
            f"{_lit(check.field + ' is ')} || {_label(found)} || "
            f"{_lit(', expected ' + check.expected_name)}"
        )
    return f"CASE {' '.join(whens)} END"


def _json_paths(column: ResolvedColumn) -> list[str]:
    """The paths whose JSON types :func:`_json_problem` reads, in its order."""
    name = column.property_name
    return [
        _json_path(name),
        _json_path(name, "type"),
        *(_json_path(name, check.field) for _, check in _checks_of(column)),
    ]


def _json_check_statement(columns: tuple[ResolvedColumn, ...]) -> str | None:
    """SQL that corrects the ``parsed`` rows of suspect pages by their JSON types.

    A value whose JSON type the column cannot read becomes NULL, with its reason and its JSON
    verbatim; it runs only when some page is suspect, on those pages only (one ``json_type`` of
    several paths per column and page).
    """
    enabled = [c for c in columns if c.enabled]
    if not enabled:
        return None
    looked_up, sets, found = [], [], []
    for index, column in enumerate(enabled, start=1):  # __suspect.flags holds them in order
        c = column.column
        types, notion_type = _quote_ident("__t_" + c), _quote_ident("__type_" + c)
        reason, raw = _quote_ident("__json_reason_" + c), _quote_ident("__json_raw_" + c)
        paths = ", ".join(map(_lit, _json_paths(column)))
        flag = f"__suspect.flags[{index}]"
        looked_up.append(
            f"CASE WHEN {flag} THEN json_type(__suspect.json, [{paths}]) END AS {types}, "
            f"CASE WHEN {flag} THEN json_extract_string(__suspect.json, "
            f"{_lit(_json_path(column.property_name, 'type'))}) END AS {notion_type}"
        )
        found.append(
            f"{_json_problem(types, notion_type, column)} AS {reason}, CAST(json_extract("
            f"__suspect_json, {_lit(_json_path(column.property_name))}) AS VARCHAR) AS {raw}"
        )
        name = _quote_ident(c)
        sets += [
            f"{name} = CASE WHEN f.{reason} IS NULL THEN parsed.{name} END",
            f"{_quote_ident('__reason_' + c)} = coalesce(f.{reason}, "
            f"parsed.{_quote_ident('__reason_' + c)})",
            f"{_quote_ident('__raw_' + c)} = CASE WHEN f.{reason} IS NULL "
            f"THEN parsed.{_quote_ident('__raw_' + c)} ELSE f.{raw} END",
        ]
    any_found = " OR ".join(
        f"f.{_quote_ident('__json_reason_' + c.column)} IS NOT NULL" for c in enabled
    )
    return f"""
        UPDATE parsed SET {", ".join(sets)}
        FROM (
            SELECT __rid, __suspect_json, {", ".join(found)} FROM (
                SELECT rowid AS __rid, __suspect.json AS __suspect_json, {", ".join(looked_up)}
                FROM parsed WHERE __suspect IS NOT NULL AND __object
            )
        ) AS f
        WHERE parsed.rowid = f.__rid AND ({any_found})
    """


def _lit(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _shape(types: set[str] | frozenset[str]) -> dict:
    shape: dict = {"type": "VARCHAR"}
    for notion_type in sorted(types):
        shape.update(_SHAPES.get(notion_type, {notion_type: "JSON"}))
    return shape


def _joined(segments: str) -> str:
    """SQL joining the ``plain_text`` of every segment of a rich-text list."""
    return f"array_to_string(list_transform({segments}, lambda x: x.plain_text), '')"


def _unique_id_text(v: str) -> str:
    """``PREFIX-N``, or ``N`` when the property has no prefix."""
    u = f"{v}.unique_id"
    return (
        f"CASE WHEN {u}.number IS NOT NULL THEN "
        f"coalesce(nullif({u}.prefix, '') || '-', '') || CAST({u}.number AS VARCHAR) END"
    )


def _rollup_dates(v: str) -> str:
    """SQL of the date elements of a rollup array that hold a date."""
    return (
        f"list_filter({v}.rollup.array, lambda e: json_extract_string(e, '$.type') = 'date' "
        "AND json_extract_string(e, '$.date.start') IS NOT NULL)"
    )


def _rollup_date(v: str) -> str:
    """A rollup's date: its ``date.start``, or that of the first date of its ``array``."""
    r = f"{v}.rollup"
    return (
        f"CASE {r}.type WHEN 'date' THEN {r}.date.start WHEN 'array' THEN "
        f"json_extract_string({_rollup_dates(v)}[1], '$.date.start') END"
    )


#: The string a property value carries, by Notion type, for the text-like kinds.
_STRING_OF: dict[str, Callable[[str], str]] = {
    "title": lambda v: _joined(f"{v}.title"),
    "rich_text": lambda v: _joined(f"{v}.rich_text"),
    "formula": lambda v: f"CASE WHEN {v}.formula.type = 'string' THEN {v}.formula.string END",
    "unique_id": _unique_id_text,
    "url": lambda v: f"{v}.url",
    "email": lambda v: f"{v}.email",
    "phone_number": lambda v: f"{v}.phone_number",
    "status": lambda v: f"{v}.status.name",
    "select": lambda v: f"{v}.select.name",
}

#: The ISO 8601 text of the date a property value carries, by Notion type, for the date kind.
_DATE_OF: dict[str, Callable[[str], str]] = {
    "date": lambda v: f"{v}.date.start",
    "formula": lambda v: f"CASE WHEN {v}.formula.type = 'date' THEN {v}.formula.date.start END",
    "rollup": _rollup_date,
    "created_time": lambda v: f"{v}.created_time",
    "last_edited_time": lambda v: f"{v}.last_edited_time",
}


def _pick(v: str, accepted: tuple[str, ...], sources: Mapping[str, Callable[[str], str]]) -> str:
    """SQL of the value read by the rule of the value's own Notion type (NULL for other types)."""
    branches = " ".join(f"WHEN {_lit(t)} THEN {sources[t](v)}" for t in accepted)
    return f"CASE {v}.type {branches} END"


def _result_problem(v: str, accepted: tuple[str, ...], wanted: str) -> str:
    """SQL of the reason why a formula or rollup value has a result of another type, else NULL.

    The schema does not tell a formula's result type, so this is found at parse time.
    """
    cases = []
    if "formula" in accepted:
        f = f"{v}.formula"
        cases.append(
            f"WHEN {v}.type = 'formula' AND {f}.type IS DISTINCT FROM {_lit(wanted)} THEN "
            f"'formula result is ' || coalesce({f}.type, 'missing') || ', expected {wanted}'"
        )
    if "rollup" in accepted:
        r = f"{v}.rollup"
        cases.append(
            f"WHEN {v}.type = 'rollup' AND {r}.type IS DISTINCT FROM 'date' "
            f"AND {r}.type IS DISTINCT FROM 'array' THEN "
            f"'rollup result is ' || coalesce({r}.type, 'missing') || ', expected {wanted}'"
        )
        elements = f"list_transform({r}.array, lambda e: json_extract_string(e, '$.type'))"
        cases.append(
            f"WHEN {v}.type = 'rollup' AND {r}.type = 'array' "
            f"AND NOT list_contains({elements}, 'date') AND len({r}.array) > 0 THEN "
            f"'rollup result is an array of ' || coalesce({elements}[1], 'missing') || "
            f"', expected {wanted}'"
        )
    return f"CASE {' '.join(cases)} END" if cases else "NULL"


@dataclass(frozen=True)
class ColumnSql:
    """The SQL of one mapped column, in two steps so that nothing is computed twice.

    Attributes:
        raw: Over the typed property value ``v``: the value as its Notion type gives it (the text
            of a date, the string of an email, …), NULL for a type the kind does not read. It is
            the ``raw_value`` of an issue.
        problem: Over ``v``: why a formula or rollup has the wrong result type, or NULL; the
            property's JSON is then reported verbatim.
        value: Over the column holding ``raw``: the typed value, NULL when unreadable.
        reason: Over the column holding ``raw``: why the value is unreadable, or NULL.
        unread: The reason when ``raw`` holds a value but ``value`` is NULL, for a kind whose
            every such value is unreadable: derived from the typed value, the check that typed
            it runs once instead of twice (for ``value`` and for ``reason``).
    """

    raw: str
    problem: str
    value: Callable[[str], str]
    reason: Callable[[str], str] = lambda r: "NULL"
    unread: str | None = None


def _text_sql(v: str, accepted: tuple[str, ...]) -> ColumnSql:
    return ColumnSql(
        _pick(v, accepted, _STRING_OF),
        _result_problem(v, accepted, "string"),
        lambda r: f"nullif({r}, '')",
    )


def _email_sql(v: str, accepted: tuple[str, ...]) -> ColumnSql:
    def valid(r: str) -> str:
        return f"regexp_full_match(trim({r}), {_lit(_EMAIL_PATTERN)})"

    return ColumnSql(
        _pick(v, accepted, _STRING_OF),
        _result_problem(v, accepted, "string"),
        lambda r: f"CASE WHEN {valid(r)} THEN trim({r}) END",
        lambda r: (
            f"CASE WHEN nullif(trim({r}), '') IS NOT NULL AND NOT {valid(r)} "
            "THEN 'not a valid email address' END"
        ),
    )


def _phone_sql(v: str, accepted: tuple[str, ...]) -> ColumnSql:
    return ColumnSql(
        _pick(v, accepted, _STRING_OF),
        _result_problem(v, accepted, "string"),
        lambda r: f"nullif(trim({r}), '')",
    )


def _date_sql(v: str, accepted: tuple[str, ...]) -> ColumnSql:
    # The calendar date as written: a datetime keeps the date of its own offset, never UTC's.
    # The cast refuses a date that is not in the calendar (2025-02-30) with NULL.
    return ColumnSql(
        _pick(v, accepted, _DATE_OF),
        _result_problem(v, accepted, "date"),
        lambda r: (
            f"CASE WHEN regexp_full_match({r}, {_lit(_DATE_PATTERN)}) "
            f"THEN try_cast(substr({r}, 1, 10) AS DATE) END"
        ),
        unread=NOT_A_DATE,
    )


def _references_sql(v: str, accepted: tuple[str, ...]) -> ColumnSql:
    ids = {t: lambda v, t=t: f"list_transform({v}.{t}, lambda x: x.id)" for t in accepted}
    return ColumnSql(
        _pick(v, accepted, ids),
        "NULL",
        lambda r: f"CASE WHEN len({r}) > 0 THEN CAST(to_json({r}) AS VARCHAR) END",
    )


def _field_sql(field: str) -> Callable[[str, tuple[str, ...]], ColumnSql]:
    def build(v: str, accepted: tuple[str, ...]) -> ColumnSql:
        return ColumnSql(f"{v}.{field}", "NULL", lambda r: r)

    return build


# A number or a checkbox is typed as its JSON text (see Kind.shape): json_transform would read
# "3" as 3 and "yes" or 1 as true, and nothing in the result would tell. Its first character
# tells its JSON type; a value of another one is looked up (JSON_CHECKS) and reported.


def _number_sql(v: str, accepted: tuple[str, ...]) -> ColumnSql:
    return ColumnSql(f"CAST({v}.number AS VARCHAR)", "NULL", lambda r: f"TRY_CAST({r} AS DOUBLE)")


def _checkbox_sql(v: str, accepted: tuple[str, ...]) -> ColumnSql:
    return ColumnSql(
        f"CAST({v}.checkbox AS VARCHAR)",
        "NULL",
        lambda r: f"CASE {r} WHEN 'true' THEN TRUE WHEN 'false' THEN FALSE END",
    )


@dataclass(frozen=True)
class Kind:
    """A column kind: what it accepts, what it produces, and how it is read.

    Attributes:
        name: The kind's name in the property map (``kind = "date"``).
        accepted: The Notion property types it accepts.
        arrow_type: The type of its column in ``leads``.
        sql_type: The same type in DuckDB (a disabled column is a NULL of it).
        build: SQL builder: (typed property value, accepted types) → :class:`ColumnSql`.
        result: The result a ``formula`` (or ``rollup``) must have to be read, if accepted.
        note: What the kind produces, for documentation and error messages.
        shape: Fields of the property value typed otherwise for this kind than for
            ``extra_properties`` (``{"number": "JSON"}``: the JSON text, for ``build`` to read).
    """

    name: str
    accepted: tuple[str, ...]
    arrow_type: pa.DataType
    sql_type: str
    build: Callable[[str, tuple[str, ...]], ColumnSql]
    result: str | None = None
    note: str = ""
    shape: Mapping[str, str] | None = None

    def sql(self, v: str) -> ColumnSql:
        """The SQL reading a property value ``v`` (a typed struct) as this kind."""
        return self.build(v, self.accepted)

    def describe(self) -> str:
        """The accepted types, ``formula``/``rollup`` with the result they must have."""
        return ", ".join(
            f"{t} ({self.result} result)" if t in ("formula", "rollup") else t
            for t in self.accepted
        )


_STRING_KIND = {"arrow_type": pa.string(), "sql_type": "VARCHAR"}

#: Column kinds, one record each.
KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind(
            "text",
            ("title", "rich_text", "formula", "unique_id", "url", "email", "phone_number"),
            build=_text_sql,
            result="string",
            note="the text: every segment's plain_text joined; a unique_id as PREFIX-N (N "
            "without prefix)",
            **_STRING_KIND,
        ),
        Kind(
            "email",
            ("email", "rich_text", "formula"),
            build=_email_sql,
            result="string",
            note="the trimmed text when it is an email address (else NULL and an issue)",
            **_STRING_KIND,
        ),
        Kind(
            "phone",
            ("phone_number", "rich_text", "formula"),
            build=_phone_sql,
            result="string",
            note="the trimmed text",
            **_STRING_KIND,
        ),
        Kind(
            "option",
            ("status", "select", "formula"),
            build=_text_sql,
            result="string",
            note="the option's name (a formula's string)",
            **_STRING_KIND,
        ),
        Kind(
            "date",
            ("date", "formula", "rollup", "created_time", "last_edited_time"),
            pa.date32(),
            "DATE",
            _date_sql,
            result="date",
            note="the calendar date of the start as written (a datetime keeps its own offset's "
            "date); a rollup's date or the first date of its array",
        ),
        Kind(
            "number",
            ("number",),
            pa.float64(),
            "DOUBLE",
            _number_sql,
            note="number",
            shape={"number": "JSON"},
        ),
        Kind(
            "checkbox",
            ("checkbox",),
            pa.bool_(),
            "BOOLEAN",
            _checkbox_sql,
            note="bool",
            shape={"checkbox": "JSON"},
        ),
        Kind("url", ("url",), pa.string(), "VARCHAR", _field_sql("url"), note="the url"),
        # The ids of the people or related pages, as a JSON array (truncated values are completed).
        Kind(
            "references",
            ("people", "relation"),
            pa.string(),
            "VARCHAR",
            _references_sql,
            note="the ids, as a JSON array",
        ),
    )
}


# -- extra_properties: the simple value of each unmapped property -----------------------------


def _simple_rollup(v: str) -> str:
    r = f"{v}.rollup"
    return (
        f"CASE {r}.type WHEN 'number' THEN to_json({r}.number) WHEN 'date' "
        f"THEN to_json({r}.date.start) WHEN 'array' THEN {_rollup_array_simple(f'{r}.array')} END"
    )


def _simple_date(v: str) -> str:
    d = f"{v}.date"
    return f"to_json(CASE WHEN {d}.end IS NULL THEN {d}.start ELSE {d}.start || '/' || {d}.end END)"


def _simple_unique_id(v: str) -> str:
    u = f"{v}.unique_id"
    return (
        f"CASE WHEN {u}.number IS NULL THEN NULL WHEN nullif({u}.prefix, '') IS NULL "
        f"THEN to_json({u}.number) ELSE to_json({u}.prefix || '-' || {u}.number) END"
    )


def _simple_formula(v: str) -> str:
    f = f"{v}.formula"
    return (
        f"CASE {f}.type WHEN 'string' THEN to_json({f}.string) WHEN 'number' THEN "
        f"to_json({f}.number) WHEN 'boolean' THEN to_json({f}.boolean) "
        f"WHEN 'date' THEN to_json({f}.date.start) END"
    )


def _simple_field(path: str) -> Callable[[str], str]:
    return lambda v: f"to_json({v}.{path})"


def _simple_list(t: str, field: str) -> Callable[[str], str]:
    return lambda v: f"to_json(list_transform({v}.{t}, lambda x: x.{field}))"


#: The JSON simple value of a property kept in ``extra_properties``, by Notion type. A type not
#: listed keeps its value's JSON as Notion gave it; ``button`` is left out (see _NOT_DATA).
SIMPLE_VALUES: dict[str, Callable[[str], str]] = {
    "title": lambda v: f"to_json({_joined(f'{v}.title')})",
    "rich_text": lambda v: f"to_json({_joined(f'{v}.rich_text')})",
    **{
        t: _simple_field(t)
        for t in (
            "email",
            "phone_number",
            "url",
            "number",
            "checkbox",
            "created_time",
            "last_edited_time",
        )
    },
    "select": _simple_field("select.name"),
    "status": _simple_field("status.name"),
    "multi_select": _simple_list("multi_select", "name"),
    "files": _simple_list("files", "name"),
    "people": _simple_list("people", "id"),
    "relation": _simple_list("relation", "id"),
    "created_by": _simple_field("created_by.id"),
    "last_edited_by": _simple_field("last_edited_by.id"),
    "date": _simple_date,
    "unique_id": _simple_unique_id,
    "formula": _simple_formula,
    "rollup": _simple_rollup,
    "verification": _simple_field("verification.state"),
    "place": lambda v: f"to_json(coalesce(nullif({v}.place.name, ''), {v}.place.address))",
}

#: The shape of one element of a rollup array: any property value but a rollup.
_ELEMENT_SHAPE = json.dumps(_shape(frozenset(SIMPLE_VALUES) - {"rollup"}))


def _rollup_array_simple(array: str) -> str:
    """SQL of the simple values of a rollup array's elements (each a property value), in SQL.

    Each element is typed by ``json_transform`` and read by the rule of its own type; an element
    of a type without a rule keeps its value's JSON.
    """
    branches = " ".join(
        f"WHEN {_lit(t)} THEN {rule('el.v')}" for t, rule in SIMPLE_VALUES.items() if t != "rollup"
    )
    typed = (
        f"list_transform({array}, lambda el: "
        f"struct_pack(raw := el, v := json_transform(el, {_lit(_ELEMENT_SHAPE)})))"
    )
    other = "json_extract(el.raw, '$.' || el.v.type)"
    return (
        f"to_json(list_transform({typed}, lambda el: CASE el.v.type {branches} ELSE {other} END))"
    )


def _simple_value(v: str, notion_type: str) -> str:
    """SQL for the JSON 'simple value' of an unmapped property kept in ``extra_properties``."""
    rule = SIMPLE_VALUES.get(notion_type)
    return rule(v) if rule else f"{v}.{_quote_ident(notion_type)}"


def _rekey_by_id(properties_json: str, names_by_id: Mapping[str, str]) -> str:
    """Re-keys a page's properties by the schema's current names, matching on property id."""
    properties = json.loads(properties_json)
    if not isinstance(properties, dict):
        return properties_json  # reported as not an object, nothing to re-key
    rekeyed = {}
    for name, value in properties.items():
        current = names_by_id.get(value.get("id")) if isinstance(value, dict) else None
        rekeyed[current or name] = value
    return json.dumps(rekeyed, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class ParseResult:
    """Typed rows and the values that could not be parsed."""

    leads: pa.Table
    issues: pa.Table


def leads_schema(columns: tuple[ResolvedColumn, ...]) -> pa.Schema:
    """The Arrow schema of ``leads`` for a resolved property map."""
    fields = [pa.field("id", pa.string(), nullable=False)]
    # A disabled column keeps its kind's type: it is always NULL.
    fields += [pa.field(c.column, KINDS[c.kind].arrow_type) for c in columns]
    fields += [
        pa.field("created_time", pa.timestamp("us", tz="UTC")),
        pa.field("last_edited_time", pa.timestamp("us", tz="UTC")),
        pa.field("url", pa.string()),
        pa.field("extra_properties", pa.string()),
    ]
    return pa.schema(fields)


def parse_pages(
    raw: pa.Table,
    columns: tuple[ResolvedColumn, ...],
    schema: Mapping[str, Mapping],
    detected_at: datetime,
) -> ParseResult:
    """Parses raw pages into ``leads`` rows and ``lead_quality_issues`` rows.

    Every input row yields exactly one lead; a value that cannot be parsed becomes NULL and yields
    an issue row instead. Nothing a page holds makes it fail: properties that are not a JSON
    object (or not JSON at all) give a lead whose mapped columns are all NULL and one issue, and
    invalid Unicode is replaced by U+FFFD (and reported) before the page is parsed.

    Args:
        raw: Rows of ``raw_notion_leads`` (``page_id``, ``created_time``, ``last_edited_time``,
            ``url``, ``properties_json``).
        columns: The property map resolved against ``schema`` (a disabled column is NULL).
        schema: The data source's properties, ``{name: {"id", "name", "type"}}``.
        detected_at: Timestamp written in ``detected_at`` of new issues.

    Returns:
        The typed leads (schema :func:`leads_schema`) and the issues (:data:`ISSUES_SCHEMA`).
    """
    names_by_id = {p["id"]: name for name, p in schema.items()}
    statement = _parse_statement(columns, schema)
    raw = raw.select(["page_id", "created_time", "last_edited_time", "url", "properties_json"])
    con = scratch_connection(dedicated=True)  # closed below: its memory goes back
    try:
        raw, leads, issues, stale = _run_readable(con, statement, raw, columns, detected_at)
        if stale:
            # Pages stored before a property was renamed: re-key them by id, parse them again.
            subset = raw.filter(pc.is_in(raw["page_id"], pa.array(stale, pa.string())))
            texts = subset.column("properties_json").to_pylist()
            subset = subset.set_column(
                subset.schema.get_field_index("properties_json"),
                "properties_json",
                pa.array([_rekey_by_id(t, names_by_id) for t in texts], pa.string()),
            )
            fixed_leads, fixed_issues, _ = _run(con, statement, subset, columns, detected_at)
            keep = pc.invert(pc.is_in(leads["id"], subset["page_id"]))
            leads = pa.concat_tables([leads.filter(keep), fixed_leads])
            keep_issues = pc.invert(pc.is_in(issues["page_id"], subset["page_id"]))
            issues = pa.concat_tables([issues.filter(keep_issues), fixed_issues])
    finally:
        con.close()
    return ParseResult(leads=leads, issues=issues)


def _run_readable(
    con: duckdb.DuckDBPyConnection,
    statement: _Statement,
    raw: pa.Table,
    columns: tuple[ResolvedColumn, ...],
    detected_at: datetime,
) -> tuple[pa.Table, pa.Table, pa.Table, list[str]]:
    """Parses ``raw``, setting aside the pages whose ``properties_json`` is not valid JSON.

    DuckDB fails a whole statement on one malformed JSON text, so the pages are first parsed
    together (no validation pass on the hot path); only when that fails are the malformed ones
    found (``json_valid``), repaired when their only fault is invalid Unicode, or else given
    their lead and issue here, and the others parsed again.

    Returns:
        The rows actually parsed (repaired texts included), their leads and issues (with those of
        the pages set aside), and the ids of the stale pages.
    """
    try:
        leads, issues, stale = _run(con, statement, raw, columns, detected_at)
    except (duckdb.Error, UnicodeDecodeError):
        # (A malformed text that is not UTF-8 fails as UnicodeDecodeError: DuckDB quotes it.)
        aside = _set_aside_malformed(con, raw, columns, detected_at)
        if aside is None:
            raise  # not a page's fault
        raw = aside.readable
        leads, issues, stale = _run(con, statement, raw, columns, detected_at)
        leads = pa.concat_tables([leads, aside.leads])
        issues = pa.concat_tables([issues, aside.issues])
    return raw, leads, issues, stale


@dataclass(frozen=True)
class _SetAside:
    readable: pa.Table  # the rows DuckDB can parse, repaired texts included
    leads: pa.Table  # the leads of the unreadable pages (every mapped column NULL)
    issues: pa.Table  # one issue per unreadable or repaired page


#: A lone UTF-16 surrogate as a JSON escape: a high one not followed by a low one, or a low one
#: not preceded by a high one. (JSON allows the escape; no UTF-8 text can hold what it means.)
_LONE_SURROGATE_ESCAPE = re.compile(
    r"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])"
    r"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)
_SURROGATE = re.compile("[\ud800-\udfff]")
#: Longest ``raw_value`` of an issue about a whole page, in characters.
_SHOWN_CHARS = 200


def _shown(text: str) -> str:
    """A page's text as an issue shows it: its beginning, ``…`` marking a cut."""
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 1] + "…"


def _shown_sql(text: str) -> str:
    """SQL of :func:`_shown`."""
    return (
        f"CASE WHEN length({text}) > {_SHOWN_CHARS} "
        f"THEN left({text}, {_SHOWN_CHARS - 1}) || '…' ELSE {text} END"
    )


def _around(text: str, at: int) -> str:
    """The text around position ``at``, at most :data:`_SHOWN_CHARS` long, ``…`` marking cuts."""
    if len(text) <= _SHOWN_CHARS:
        return text
    start = max(0, at - _SHOWN_CHARS // 4)
    end = start + _SHOWN_CHARS - 2
    return ("…" if start else "") + text[start:end] + ("…" if end < len(text) else "")


def _repair(data: bytes) -> tuple[str | None, str]:
    """Repairs a malformed ``properties_json`` whose only fault is invalid Unicode.

    Args:
        data: The stored text's bytes (not necessarily UTF-8).

    Returns:
        The repaired JSON object's text (U+FFFD for each bad byte sequence or lone surrogate),
        or None when the text is not a JSON object even so; and the text the issue shows (around
        the first bad spot when repaired, else its beginning).
    """
    text = data.decode("utf-8", errors="replace")
    try:
        data.decode("utf-8")
        match = _LONE_SURROGATE_ESCAPE.search(text)
        bad_at = match.start() if match else None
    except UnicodeDecodeError as error:
        bad_at = len(data[: error.start].decode("utf-8", errors="replace"))
    if bad_at is None:
        return None, _shown(text)  # malformed for another reason
    try:
        value = json.loads(text)
    except ValueError:
        return None, _shown(text)
    if not isinstance(value, dict):
        return None, _shown(text)
    repaired = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return _SURROGATE.sub("\ufffd", repaired), _around(text, bad_at)


def _set_aside_malformed(
    con: duckdb.DuckDBPyConnection,
    raw: pa.Table,
    columns: tuple[ResolvedColumn, ...],
    detected_at: datetime,
) -> _SetAside | None:
    """Finds the pages DuckDB cannot read as JSON; repairs or answers them (None if none).

    Per-row Python, on the malformed pages only.
    """
    valid = _json_valid(con, raw["properties_json"])
    if pc.all(valid).as_py():
        return None
    malformed = raw.filter(pc.invert(valid))
    data = pc.cast(malformed["properties_json"], pa.large_binary()).to_pylist()
    repairs = [_repair(d) for d in data]
    repaired = pa.array([text for text, _ in repairs], pa.string())
    fixed = malformed.set_column(
        malformed.schema.get_field_index("properties_json"), "properties_json", repaired
    )
    # Python's JSON reader is no guide to DuckDB's: a repaired text must pass DuckDB's own check.
    fixed_ok = pc.and_(pc.is_valid(repaired), _json_valid(con, repaired))
    shown = pa.array([text for _, text in repairs], pa.string())
    unreadable = malformed.filter(pc.invert(fixed_ok))
    return _SetAside(
        readable=pa.concat_tables([raw.filter(valid), fixed.filter(fixed_ok)]),
        leads=_unreadable_leads(unreadable, columns),
        issues=pa.concat_tables(
            [
                _page_issues(
                    fixed.filter(fixed_ok), shown.filter(fixed_ok), INVALID_UNICODE, detected_at
                ),
                _page_issues(
                    unreadable, shown.filter(pc.invert(fixed_ok)), NOT_AN_OBJECT, detected_at
                ),
            ]
        ),
    )


def _json_valid(con: duckdb.DuckDBPyConnection, texts: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Whether DuckDB reads each text as JSON (a NULL text counts as valid: it parses as NULL)."""
    con.register("__texts", pa.table({"t": texts}))
    try:
        result = con.sql("SELECT coalesce(json_valid(t), TRUE) AS ok FROM __texts").to_arrow_table()
    finally:
        con.unregister("__texts")
    return result["ok"].combine_chunks()


def _unreadable_leads(rows: pa.Table, columns: tuple[ResolvedColumn, ...]) -> pa.Table:
    """The leads of pages whose properties cannot be read: metadata kept, columns NULL."""
    schema = leads_schema(columns)
    n = rows.num_rows
    mapped = [pa.nulls(n, field.type) for field in list(schema)[1 : 1 + len(columns)]]
    arrays = [
        rows["page_id"],
        *mapped,
        rows["created_time"],
        rows["last_edited_time"],
        rows["url"],
        pa.array(["{}"] * n, pa.string()),
    ]
    return pa.Table.from_arrays(
        [
            (a if isinstance(a, pa.ChunkedArray) else pa.chunked_array([a])).cast(field.type)
            for a, field in zip(arrays, schema, strict=True)
        ],
        schema=schema,
    )


def _page_issues(rows: pa.Table, shown: pa.Array, reason: str, detected_at: datetime) -> pa.Table:
    """One issue per page about its whole ``properties_json``."""
    n = rows.num_rows
    return pa.table(
        {
            "page_id": rows["page_id"],
            "column": pa.array([PROPERTIES_COLUMN] * n, pa.string()),
            "raw_value": shown,
            "reason": pa.array([reason] * n, pa.string()),
            "detected_at": pa.array([detected_at] * n, pa.timestamp("us", tz="UTC")),
        },
        schema=ISSUES_SCHEMA,
    )


#: Pages whose properties are not an object: an issue, no property, no re-keying, no extras.
_NOT_OBJECT_CHECK = """
    UPDATE parsed SET __object = FALSE, __stale = FALSE, __extra_properties = '{}'
    WHERE __suspect IS NOT NULL AND json_type(__suspect.json) IS DISTINCT FROM 'OBJECT'
"""
_ANY_SUSPECT = "SELECT count(*) > 0 FROM (SELECT 1 FROM parsed WHERE __suspect IS NOT NULL LIMIT 1)"


@dataclass(frozen=True)
class _Statement:
    parse: str
    checks: tuple[str, ...]  # run when some page is suspect, in order
    leads: str
    issues: str


def _wrong_type(v: str, column: ResolvedColumn) -> str:
    """SQL of the reason when a page's value has a type the column's kind does not read.

    The page then disagrees with the schema the column was resolved against.
    """
    accepted = ", ".join(map(_lit, KINDS[column.kind].accepted))
    return (
        f"CASE WHEN {v}.type IS NOT NULL AND {v}.type NOT IN ({accepted}) THEN "
        f"'property has type ' || {v}.type || ', expected {column.notion_type}' END"
    )


def _parse_statement(
    columns: tuple[ResolvedColumn, ...], schema: Mapping[str, Mapping]
) -> _Statement:
    """Builds the SQL that parses ``raw_pages`` into the temp table ``parsed``, and reads it.

    Three steps: ``typed`` parses each page's JSON once into a struct; ``read`` takes each mapped
    column's value out of it by the rule of the value's Notion type (and the reason when that type
    or a formula's result is wrong), and flags the values whose JSON type may be wrong; ``parsed``
    validates and types it, keeping the JSON of the flagged pages. Then, only if a page is
    flagged, the ``checks`` correct ``parsed``: pages that are not an object, values of a JSON
    type their column cannot read. The parser's own names start with ``__``, which no column of
    the map may (see the property map's validation).
    """
    enabled = [c for c in columns if c.enabled]
    types_by_name: dict[str, set[str]] = {name: {p["type"]} for name, p in schema.items()}
    for column in enabled:
        types_by_name.setdefault(column.property_name, set()).update(KINDS[column.kind].accepted)
    structure = {name: _shape(types) for name, types in types_by_name.items()}
    for column in enabled:  # a mapped property is never in extra_properties: no clash
        structure[column.property_name].update(KINDS[column.kind].shape or {})
    mapped_ids = {c.property_id for c in enabled}
    extras = sorted(
        (name, p["type"])
        for name, p in schema.items()
        if p["id"] not in mapped_ids and p["type"] not in _NOT_DATA
    )

    suspects, reads, selects, issue_selects = [], [], [], []
    for column in columns:
        name = _quote_ident(column.column)
        if not column.enabled:  # always NULL, of the kind's type; never an issue
            selects.append(f"CAST(NULL AS {KINDS[column.kind].sql_type}) AS {name}")
            continue
        v = f"__p[{_lit(column.property_name)}]"
        sql = KINDS[column.kind].sql(v)
        src = _quote_ident("__src_" + column.column)
        problem = _quote_ident("__problem_" + column.column)
        reason = _quote_ident("__reason_" + column.column)
        raw_value = _quote_ident("__raw_" + column.column)
        reads.append(f"{sql.raw} AS {src}")
        suspect = _quote_ident("__suspect_" + column.column)
        reads.append(f"({_suspect(v, column)}) AS {suspect}")
        after_read = _suspect_read(v, column, src)
        suspects.append(f"({suspect} OR {after_read})" if after_read else suspect)
        reads.append(f"coalesce({_wrong_type(v, column)}, {sql.problem}) AS {problem}")
        # A value of the wrong type, or a wrong result, is reported verbatim (its JSON).
        verbatim = (
            f"CAST(json_extract(__json, {_lit(_json_path(column.property_name))}) AS VARCHAR)"
        )
        selects.append(f"CASE WHEN {problem} IS NULL THEN {sql.value(src)} END AS {name}")
        selects.append(f"coalesce({problem}, {sql.reason(src)}) AS {reason}")
        selects.append(
            f"CASE WHEN {problem} IS NOT NULL THEN {verbatim} "
            f"ELSE CAST({src} AS VARCHAR) END AS {raw_value}"
        )
        issue_reason = reason
        if sql.unread is not None:  # a value read but not typed: unreadable
            issue_reason = (
                f"coalesce({reason}, CASE WHEN {raw_value} IS NOT NULL AND {name} IS NULL "
                f"THEN {_lit(sql.unread)} END)"
            )
        issue_selects.append(
            f'SELECT * FROM (SELECT __page_id AS page_id, {_lit(column.column)} AS "column", '
            f"{raw_value} AS raw_value, {issue_reason} AS reason FROM parsed) "
            "WHERE reason IS NOT NULL"
        )
    extra_args = ", ".join(
        f"{_lit(name)}, {_simple_value(f'__p[{_lit(name)}]', t)}" for name, t in extras
    )
    extra_sql = f"CAST(json_object({extra_args}) AS VARCHAR)" if extras else "'{}'"
    # json_transform reads a page that is not an object (a string, an array, null) as one
    # lacking every property: such a page is suspect by any column (or, without any, by all).
    none = " AND ".join(f"__p[{_lit(name)}] IS NULL" for name in structure) or "TRUE"
    suspect = " OR ".join(suspects) or none  # column flags, computed once in read
    # A page lacking a property of the schema was stored under older property names.
    stale = " OR ".join(f"__p[{_lit(name)}].type IS NULL" for name in schema) or "FALSE"
    issue_selects.append(
        f'SELECT __page_id AS page_id, {_lit(PROPERTIES_COLUMN)} AS "column", '
        f"{_shown_sql('__suspect.json')} AS raw_value, {_lit(NOT_AN_OBJECT)} AS reason "
        "FROM parsed WHERE NOT __object"
    )
    parse = f"""
        CREATE OR REPLACE TEMP TABLE parsed AS
        WITH typed AS (
            SELECT page_id AS __page_id, created_time AS __created_time,
                   last_edited_time AS __last_edited_time, url AS __url,
                   properties_json AS __json,
                   json_transform(properties_json, {_lit(json.dumps(structure))}) AS __p
            FROM raw_pages
        ), read AS (
            SELECT *, {", ".join([*reads, f"{extra_sql} AS __extra_properties"])},
                   ({stale}) AS __stale
            FROM typed
        )
        SELECT __page_id, __created_time, __last_edited_time, __url,
               {", ".join(selects)}, __extra_properties, __stale,
               -- Corrected for suspect pages only, by the check statements.
               TRUE AS __object,
               -- The JSON of a suspect page, and which of its columns are suspect.
               CASE WHEN {suspect} THEN struct_pack(
                   json := coalesce(__json, 'null'), flags := [{", ".join(suspects)}]
               ) END AS __suspect
        FROM read
    """
    leads = f"""
        SELECT __page_id AS id, {", ".join(_quote_ident(c.column) for c in columns)},
               __created_time AS created_time, __last_edited_time AS last_edited_time,
               __url AS url, __extra_properties AS extra_properties
        FROM parsed
    """
    issues = (
        "SELECT *, $detected_at::TIMESTAMPTZ AS detected_at FROM ("
        f'{" UNION ALL ".join(issue_selects)}) ORDER BY page_id, "column"'
    )
    checks = (_NOT_OBJECT_CHECK, _json_check_statement(columns))
    return _Statement(parse=parse, checks=tuple(c for c in checks if c), leads=leads, issues=issues)


def _run(
    con: duckdb.DuckDBPyConnection,
    statement: _Statement,
    raw: pa.Table,
    columns: tuple[ResolvedColumn, ...],
    detected_at: datetime,
) -> tuple[pa.Table, pa.Table, list[str]]:
    # DuckDB scans an Arrow table in parallel across its record batches only.
    raw = pa.Table.from_batches(raw.to_batches(max_chunksize=_SCAN_BATCH_ROWS), raw.schema)
    con.register("raw_pages", raw)
    try:
        con.execute(statement.parse)
    finally:
        con.unregister("raw_pages")
    if con.sql(_ANY_SUSPECT).fetchall()[0][0]:
        for check in statement.checks:
            con.execute(check)
    leads = con.sql(statement.leads).to_arrow_table().cast(leads_schema(columns))
    issues = con.sql(statement.issues, params={"detected_at": detected_at}).to_arrow_table()
    issues = issues.cast(ISSUES_SCHEMA)
    stale = con.sql("SELECT list(__page_id) FROM parsed WHERE __stale").fetchall()[0][0]
    return leads, issues, stale or []
