"""Vectorised parsing of raw Notion pages into the typed ``leads`` rows and quality issues.

Each page's ``properties_json`` is parsed once by DuckDB's ``json_transform`` into a typed
struct built from the data source schema; every column is then a SQL expression over that struct.
There is no per-row Python on this path, except for pages stored before a property was renamed
(their JSON is keyed by the old name): those are re-keyed by property id first.

Two tables of rules drive it, one record per entry:

- :data:`KINDS`: a column kind (``text``, ``date``, …), the Notion property types it accepts, the
  Arrow type it produces and the SQL that reads it. A new kind is one entry.
- :data:`SIMPLE_VALUES`: for each Notion property type, the SQL of the JSON "simple value" that
  ``extra_properties`` keeps for an unmapped property.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from leads_pipeline.duck import scratch_connection

if TYPE_CHECKING:
    from leads_pipeline.property_map import ResolvedColumn

#: Bumped whenever a rule below changes what a value parses to: the property map's fingerprint
#: includes it, so ``leads`` is re-derived from raw once after an upgrade.
RULES_VERSION = 2

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

_DATE_PATTERN = r"\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?"
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
    """

    raw: str
    problem: str
    value: Callable[[str], str]
    reason: Callable[[str], str] = lambda r: "NULL"


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
    def valid(r: str) -> str:
        return (
            f"(regexp_full_match({r}, {_lit(_DATE_PATTERN)}) "
            f"AND try_cast(substr({r}, 1, 10) AS DATE) IS NOT NULL)"
        )

    return ColumnSql(
        _pick(v, accepted, _DATE_OF),
        _result_problem(v, accepted, "date"),
        lambda r: f"CASE WHEN {valid(r)} THEN CAST(substr({r}, 1, 10) AS DATE) END",
        lambda r: f"CASE WHEN {r} IS NOT NULL AND NOT {valid(r)} THEN 'not an ISO 8601 date' END",
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
    """

    name: str
    accepted: tuple[str, ...]
    arrow_type: pa.DataType
    sql_type: str
    build: Callable[[str, tuple[str, ...]], ColumnSql]
    result: str | None = None
    note: str = ""

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
        Kind("number", ("number",), pa.float64(), "DOUBLE", _field_sql("number"), note="number"),
        Kind("checkbox", ("checkbox",), pa.bool_(), "BOOLEAN", _field_sql("checkbox"), note="bool"),
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
    an issue row instead.

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
    raw = pa.Table.from_batches(raw.to_batches(max_chunksize=_SCAN_BATCH_ROWS), raw.schema)
    con = scratch_connection(dedicated=True)  # closed below: its memory goes back
    try:
        leads, issues, stale = _run(con, statement, raw, columns, detected_at)
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


@dataclass(frozen=True)
class _Statement:
    parse: str
    leads: str
    issues: str | None


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
    or a formula's result is wrong); ``parsed`` validates and types it. The parser's own names
    start with ``__``, which no column of the map may (see the property map's validation).
    """
    enabled = [c for c in columns if c.enabled]
    types_by_name: dict[str, set[str]] = {name: {p["type"]} for name, p in schema.items()}
    for column in enabled:
        types_by_name.setdefault(column.property_name, set()).update(KINDS[column.kind].accepted)
    structure = {name: _shape(types) for name, types in types_by_name.items()}
    mapped_ids = {c.property_id for c in enabled}
    extras = sorted(
        (name, p["type"])
        for name, p in schema.items()
        if p["id"] not in mapped_ids and p["type"] not in _NOT_DATA
    )

    reads, selects, issue_selects = [], [], []
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
        reads.append(f"coalesce({_wrong_type(v, column)}, {sql.problem}) AS {problem}")
        # A value of the wrong type, or a wrong result, is reported verbatim (its JSON).
        verbatim = (
            "CAST(json_extract(__json, "
            f"{_lit('$.' + json.dumps(column.property_name, ensure_ascii=False))}) AS VARCHAR)"
        )
        selects.append(f"CASE WHEN {problem} IS NULL THEN {sql.value(src)} END AS {name}")
        selects.append(f"coalesce({problem}, {sql.reason(src)}) AS {reason}")
        selects.append(
            f"CASE WHEN {problem} IS NOT NULL THEN {verbatim} "
            f"ELSE CAST({src} AS VARCHAR) END AS {raw_value}"
        )
        issue_selects.append(
            f'SELECT __page_id AS page_id, {_lit(column.column)} AS "column", '
            f"{raw_value} AS raw_value, {reason} AS reason FROM parsed WHERE {reason} IS NOT NULL"
        )
    extra_args = ", ".join(
        f"{_lit(name)}, {_simple_value(f'__p[{_lit(name)}]', t)}" for name, t in extras
    )
    extra_sql = f"CAST(json_object({extra_args}) AS VARCHAR)" if extras else "'{}'"
    # A page lacking a property of the schema was stored under older property names.
    stale = " OR ".join(f"__p[{_lit(name)}].type IS NULL" for name in schema) or "FALSE"
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
               {", ".join([*selects, "__extra_properties", "__stale"])}
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
        if issue_selects
        else None
    )
    return _Statement(parse=parse, leads=leads, issues=issues)


def _run(
    con: duckdb.DuckDBPyConnection,
    statement: _Statement,
    raw: pa.Table,
    columns: tuple[ResolvedColumn, ...],
    detected_at: datetime,
) -> tuple[pa.Table, pa.Table, list[str]]:
    con.register("raw_pages", raw)
    try:
        con.execute(statement.parse)
    finally:
        con.unregister("raw_pages")
    leads = con.sql(statement.leads).to_arrow_table().cast(leads_schema(columns))
    if statement.issues:
        issues = con.sql(statement.issues, params={"detected_at": detected_at}).to_arrow_table()
        issues = issues.cast(ISSUES_SCHEMA)
    else:
        issues = ISSUES_SCHEMA.empty_table()
    stale = con.sql("SELECT list(__page_id) FROM parsed WHERE __stale").fetchall()[0][0]
    return leads, issues, stale or []
