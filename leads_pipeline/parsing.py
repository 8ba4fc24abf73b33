"""Vectorised parsing of raw Notion pages into the typed ``leads`` rows and quality issues.

Each page's ``properties_json`` is parsed once by DuckDB's ``json_transform`` into a typed
struct built from the data source schema; every column is then a SQL expression over that struct.
There is no per-row Python on this path, except for pages stored before a property was renamed
(their JSON is keyed by the old name): those are re-keyed by property id first.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from leads_pipeline.duck import scratch_connection
from leads_pipeline.property_map import KINDS, ResolvedColumn

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

# The typed shape of a property value, by Notion type, for json_transform.
_SHAPES: dict[str, dict] = {
    "title": {"title": [{"plain_text": "VARCHAR"}]},
    "rich_text": {"rich_text": [{"plain_text": "VARCHAR"}]},
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
    "formula": {
        "formula": {
            "type": "VARCHAR",
            "string": "VARCHAR",
            "number": "DOUBLE",
            "boolean": "BOOLEAN",
            "date": {"start": "VARCHAR"},
        }
    },
    "rollup": {
        "rollup": {
            "type": "VARCHAR",
            "number": "DOUBLE",
            "date": {"start": "VARCHAR"},
            "array": "JSON",
        }
    },
}


def _lit(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _shape(types: set[str]) -> dict:
    shape: dict = {"type": "VARCHAR"}
    for notion_type in sorted(types):
        shape.update(_SHAPES.get(notion_type, {notion_type: "JSON"}))
    return shape


def _text(v: str) -> str:
    return f"array_to_string(list_transform(coalesce({v}.title, {v}.rich_text), lambda x: x.plain_text), '')"


def _simple_value(v: str, notion_type: str) -> str:
    """SQL for the JSON 'simple value' of an unmapped property kept in ``extra_properties``."""
    t = notion_type
    if t in ("title", "rich_text"):
        return f"to_json(array_to_string(list_transform({v}.{t}, lambda x: x.plain_text), ''))"
    if t in (
        "email",
        "phone_number",
        "url",
        "number",
        "checkbox",
        "created_time",
        "last_edited_time",
    ):
        return f"to_json({v}.{t})"
    if t in ("select", "status"):
        return f"to_json({v}.{t}.name)"
    if t in ("multi_select", "files"):
        return f"to_json(list_transform({v}.{t}, lambda x: x.name))"
    if t in ("people", "relation"):
        return f"to_json(list_transform({v}.{t}, lambda x: x.id))"
    if t in ("created_by", "last_edited_by"):
        return f"to_json({v}.{t}.id)"
    if t == "date":
        return (
            f"to_json(CASE WHEN {v}.date.end IS NULL THEN {v}.date.start "
            f"ELSE {v}.date.start || '/' || {v}.date.end END)"
        )
    if t == "unique_id":
        return (
            f"to_json(CASE WHEN {v}.unique_id.number IS NOT NULL THEN "
            f"coalesce({v}.unique_id.prefix || '-', '') || {v}.unique_id.number END)"
        )
    if t == "formula":
        f = f"{v}.formula"
        return (
            f"CASE {f}.type WHEN 'string' THEN to_json({f}.string) WHEN 'number' THEN "
            f"to_json({f}.number) WHEN 'boolean' THEN to_json({f}.boolean) "
            f"WHEN 'date' THEN to_json({f}.date.start) END"
        )
    if t == "rollup":
        r = f"{v}.rollup"
        return (
            f"CASE {r}.type WHEN 'number' THEN to_json({r}.number) WHEN 'date' "
            f"THEN to_json({r}.date.start) WHEN 'array' THEN {r}.array END"
        )
    return f"{v}.{_quote_ident(t)}"


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class _ColumnSql:
    value: str
    raw: str
    reason: str


def _column_sql(v: str, column: ResolvedColumn, verbatim: str) -> _ColumnSql:
    accepted = KINDS[column.kind][0]
    wrong_type = f"({v}.type IS NOT NULL AND {v}.type NOT IN ({', '.join(map(_lit, accepted))}))"
    type_reason = (
        f"CASE WHEN {wrong_type} THEN 'property has type ' || {v}.type || ', expected "
        f"{' or '.join(accepted)}' END"
    )
    sql = _kind_sql(v, column.kind, type_reason)
    # A value of the wrong type is reported verbatim (its JSON), whatever the kind expected.
    return _ColumnSql(
        sql.value, f"CASE WHEN {wrong_type} THEN {verbatim} ELSE {sql.raw} END", sql.reason
    )


def _kind_sql(v: str, kind: str, type_reason: str) -> _ColumnSql:
    if kind == "text":
        raw = _text(v)
        return _ColumnSql(f"nullif({raw}, '')", f"{v}.type", type_reason)
    if kind == "email":
        raw = f"{v}.email"
        valid = f"regexp_full_match(trim({raw}), {_lit(_EMAIL_PATTERN)})"
        return _ColumnSql(
            f"CASE WHEN {valid} THEN trim({raw}) END",
            raw,
            f"coalesce({type_reason}, CASE WHEN nullif(trim({raw}), '') IS NOT NULL AND NOT {valid} "
            "THEN 'not a valid email address' END)",
        )
    if kind == "phone":
        return _ColumnSql(f"nullif(trim({v}.phone_number), '')", f"{v}.phone_number", type_reason)
    if kind == "option":
        return _ColumnSql(f"coalesce({v}.status.name, {v}.select.name)", f"{v}.type", type_reason)
    if kind == "date":
        raw = f"{v}.date.start"
        valid = (
            f"(regexp_full_match({raw}, {_lit(_DATE_PATTERN)}) "
            f"AND try_cast(substr({raw}, 1, 10) AS DATE) IS NOT NULL)"
        )
        return _ColumnSql(
            f"CASE WHEN {valid} THEN CAST(substr({raw}, 1, 10) AS DATE) END",
            raw,
            f"coalesce({type_reason}, CASE WHEN {raw} IS NOT NULL AND NOT {valid} "
            "THEN 'not an ISO 8601 date' END)",
        )
    if kind == "references":
        ids = f"list_transform(coalesce({v}.people, {v}.relation), lambda x: x.id)"
        return _ColumnSql(
            f"CASE WHEN len({ids}) > 0 THEN CAST(to_json({ids}) AS VARCHAR) END",
            f"{v}.type",
            type_reason,
        )
    if kind in ("number", "checkbox", "url"):
        field = {"number": "number", "checkbox": "checkbox", "url": "url"}[kind]
        return _ColumnSql(f"{v}.{field}", f"CAST({v}.{field} AS VARCHAR)", type_reason)
    raise ValueError(f"unknown kind {kind!r}")  # pragma: no cover - guarded by the property map


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
    fields += [pa.field(c.column, c.arrow_type) for c in columns]
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
        columns: The property map resolved against ``schema``.
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


def _parse_statement(
    columns: tuple[ResolvedColumn, ...], schema: Mapping[str, Mapping]
) -> _Statement:
    """Builds the SQL that parses ``raw_pages`` into the temp table ``parsed``, and reads it."""
    types_by_name: dict[str, set[str]] = {name: {p["type"]} for name, p in schema.items()}
    for column in columns:
        types_by_name.setdefault(column.property_name, set()).update(KINDS[column.kind][0])
    structure = {name: _shape(types) for name, types in types_by_name.items()}
    mapped_ids = {c.property_id for c in columns}
    extras = sorted((name, p["type"]) for name, p in schema.items() if p["id"] not in mapped_ids)

    selects, issue_selects = [], []
    for column in columns:
        v = f"p[{_lit(column.property_name)}]"
        verbatim = (
            "CAST(json_extract(properties_json, "
            f"{_lit('$.' + json.dumps(column.property_name, ensure_ascii=False))}) AS VARCHAR)"
        )
        sql = _column_sql(v, column, verbatim)
        reason = _quote_ident("__reason_" + column.column)
        raw_value = _quote_ident("__raw_" + column.column)
        selects.append(f"{sql.value} AS {_quote_ident(column.column)}")
        selects.append(f"{sql.reason} AS {reason}")
        selects.append(f"CAST({sql.raw} AS VARCHAR) AS {raw_value}")
        issue_selects.append(
            f'SELECT page_id, {_lit(column.column)} AS "column", {raw_value} AS raw_value, '
            f"{reason} AS reason FROM parsed WHERE {reason} IS NOT NULL"
        )
    extra_args = ", ".join(
        f"{_lit(name)}, {_simple_value(f'p[{_lit(name)}]', t)}" for name, t in extras
    )
    extra_sql = f"CAST(json_object({extra_args}) AS VARCHAR)" if extras else "'{}'"
    # A page lacking a property of the schema was stored under older property names.
    stale = " OR ".join(f"p[{_lit(name)}].type IS NULL" for name in schema) or "FALSE"
    parse = f"""
        CREATE OR REPLACE TEMP TABLE parsed AS
        WITH typed AS (
            SELECT *, json_transform(properties_json, {_lit(json.dumps(structure))}) AS p
            FROM raw_pages
        )
        SELECT page_id, created_time, last_edited_time, url,
               {", ".join(selects)},
               {extra_sql} AS extra_properties,
               ({stale}) AS __stale
        FROM typed
    """
    leads = f"""
        SELECT page_id AS id, {", ".join(_quote_ident(c.column) for c in columns)},
               created_time, last_edited_time, url, extra_properties
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
    stale = con.sql("SELECT list(page_id) FROM parsed WHERE __stale").fetchall()[0][0]
    return leads, issues, stale or []
