"""Helpers that turn results into Dagster metadata the UI can show.

Materialization metadata is stored in the Dagster instance and shown to anyone with access to the
UI, so previews never carry customer data unless full previews are turned on
(``LEADS_FULL_PREVIEWS``): names, emails and phones are masked (:func:`mask_pii_columns`), Notion
links lose the title slug Notion puts in them (:func:`notion_link`), and page contents
(``properties_json``) are never previewed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import deltalake
import pyarrow as pa
from deltalake import DeltaTable
from tabulate import tabulate

from leads_pipeline.storage.lake import key_in
from leads_pipeline.storage.warehouse import Warehouse

#: How many quality issues the ``lead_quality_issues`` materialization lists, newest first.
LATEST_ISSUES_LIMIT = 20
#: Characters of an issue's raw value shown in the metadata (an ellipsis marks a cut).
RAW_VALUE_PREVIEW_CHARS = 60
#: The column of an issue about a page's whole ``properties_json`` (see ``parsing``).
_PROPERTIES_COLUMN = "properties"

#: Page ids → their Notion URL (the ids it does not know are left out).
UrlLookup = Callable[[list[str]], dict[str, str]]

_NOTION_ID = re.compile(r"([0-9a-fA-F]{32})$")
_ORIGIN = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://[^/?#]+)")


def markdown_preview(
    table: pa.Table, limit: int = 10, tail: bool = False
) -> dg.MarkdownMetadataValue:
    """A markdown table of the first (or last) ``limit`` rows."""
    if table.num_rows == 0:
        return dg.MetadataValue.md("_(no rows)_")
    rows = table.slice(max(table.num_rows - limit, 0)) if tail else table.slice(0, limit)
    text = tabulate(rows.to_pylist(), headers="keys", tablefmt="github", missingval="∅")
    return dg.MetadataValue.md(text)


def mask_email(value: str | None) -> str | None:
    """``jean.dupont@exemple.fr`` → ``j***@exemple.fr``; a text without ``@`` → ``j***``."""
    if not value:
        return value
    local, at, domain = value.partition("@")
    return f"{local[:1]}***{at}{domain}"


def mask_phone(value: str | None) -> str | None:
    """``+33 6 12 34 56 78`` → ``+33 6 ** ** ** 78``: country and operator prefix, last 2 digits.

    Separators are kept; a number of fewer than 8 digits keeps only its last 2 (or none below 4).
    """
    if not value:
        return value
    digits = sum(character.isdigit() for character in value)
    head = 3 if digits >= 8 else 0
    tail = 2 if digits >= 4 else 0
    shown, seen = [], 0
    for character in value:
        if character.isdigit():
            seen += 1
            keep = seen <= head or seen > digits - tail
            shown.append(character if keep else "*")
        else:
            shown.append(character)
    return "".join(shown)


def mask_name(value: str | None) -> str | None:
    """``Jean Dupont`` → ``J. D.``: the initial of each word."""
    if not value:
        return value
    return " ".join(f"{word[0]}." for word in value.split())


def mask_text(value: str | None) -> str | None:
    """Any other customer text (a page's properties JSON): only its length."""
    if value is None:
        return None
    return f"(hidden, {len(value)} characters)"


#: How each column holding customer data is masked in previews.
PII_MASKS: dict[str, Callable[[str | None], str | None]] = {
    "nom": mask_name,
    "email": mask_email,
    "telephone": mask_phone,
}


def notion_link(url: str | None) -> str | None:
    """A page's Notion URL without the title slug: ``https://www.notion.so/<32 hex id>``.

    Notion builds page URLs from the title (``https://www.notion.so/Jean-Dupont-<id>``); the id
    alone opens the same page and names nobody. A URL without a trailing id is returned as is.
    """
    if not url:
        return url
    path = url.split("?", 1)[0].split("#", 1)[0].rstrip("/")
    identifier = _NOTION_ID.search(path)
    origin = _ORIGIN.match(url)
    if identifier is None or origin is None:
        return url
    return f"{origin[1]}/{identifier[1].lower()}"


def _mapped(table: pa.Table, column: str, transform: Callable) -> pa.Table:
    index = table.schema.get_field_index(column)
    values = [transform(value) for value in table.column(column).to_pylist()]
    return table.set_column(index, pa.field(column, pa.string()), pa.array(values, pa.string()))


def mask_pii_columns(table: pa.Table, full: bool = False) -> pa.Table:
    """A preview of ``table`` without customer data: ``nom``, ``email`` and ``telephone`` masked,
    ``url`` reduced to :func:`notion_link`, ``properties_json`` dropped.

    Args:
        table: A few rows of ``leads`` or ``raw_notion_leads`` (any subset of their columns).
        full: Return the rows unchanged (``LEADS_FULL_PREVIEWS``, for a development lake).

    Returns:
        The rows to preview.
    """
    if full:
        return table
    if "properties_json" in table.column_names:
        table = table.drop_columns(["properties_json"])
    for column, mask in PII_MASKS.items():
        if column in table.column_names:
            table = _mapped(table, column, mask)
    if "url" in table.column_names:
        table = _mapped(table, "url", notion_link)
    return table


def page_urls(leads: DeltaTable, page_ids: list[str]) -> dict[str, str]:
    """The Notion URL of each of ``page_ids`` that is a lead, read from ``leads``.

    Args:
        leads: The ``leads`` table.
        page_ids: Page ids (a few: the latest issues').

    Returns:
        Page id → its ``url``; ids that are not leads (any more) are left out.
    """
    found = leads.to_pyarrow_dataset().to_table(
        columns=["id", "url"], filter=key_in("id", pa.array(page_ids, pa.string()))
    )
    return {
        page: url
        for page, url in zip(found["id"].to_pylist(), found["url"].to_pylist(), strict=True)
        if url
    }


def _shown_raw_value(column: str, value: str | None, full: bool) -> str | None:
    """An issue's raw value as the metadata shows it: masked when it is customer data, cut."""
    if value is None:
        return None
    if not full:
        if column in PII_MASKS:
            value = PII_MASKS[column](value)
        elif column == _PROPERTIES_COLUMN:
            value = mask_text(value)
    if len(value) > RAW_VALUE_PREVIEW_CHARS:
        value = value[: RAW_VALUE_PREVIEW_CHARS - 1] + "…"
    return value


def _count_table(rows: list[dict], keys: tuple[str, ...]) -> dg.TableMetadataValue:
    columns = [dg.TableColumn(key, "string") for key in keys]
    columns.append(dg.TableColumn("issues", "int", description="Values that could not be read."))
    return dg.MetadataValue.table(
        records=[dg.TableRecord(row) for row in rows], schema=dg.TableSchema(columns=columns)
    )


def _counts(issues: pa.Table, keys: list[str]) -> list[dict]:
    """Issues per ``keys``, most frequent first (ties in key order)."""
    if issues.num_rows == 0:
        return []
    grouped = issues.group_by(keys).aggregate([(keys[0], "count")]).to_pylist()
    rows = [{**{k: g[k] for k in keys}, "issues": g[f"{keys[0]}_count"]} for g in grouped]
    return sorted(rows, key=lambda row: (-row["issues"], *(row[k] for k in keys)))


LATEST_ISSUES_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("detected_at", "string", description="When the value was first seen."),
        dg.TableColumn("page_id", "string", description="The lead's Notion page id."),
        dg.TableColumn("notion_url", "string", description="Open the lead in Notion to fix it."),
        dg.TableColumn("column", "string", description="The column of leads left empty."),
        dg.TableColumn("reason", "string", description="Why the value could not be read."),
        dg.TableColumn(
            "raw_value",
            "string",
            description=f"The value as Notion holds it, cut at {RAW_VALUE_PREVIEW_CHARS} "
            "characters; names, emails, phones and page contents are masked.",
        ),
    ]
)


def latest_issues(
    issues: pa.Table, urls: UrlLookup, limit: int = LATEST_ISSUES_LIMIT, full: bool = False
) -> list[dict]:
    """The ``limit`` most recent quality issues, as the metadata lists them.

    Args:
        issues: Rows of ``lead_quality_issues``.
        urls: Gives the Notion URL of each page id asked for (from ``leads``); a page it
            misses gets a link built from its id.
        limit: How many issues.
        full: Show raw values and URLs unmasked (``LEADS_FULL_PREVIEWS``).

    Returns:
        Records with the columns of :data:`LATEST_ISSUES_SCHEMA`, newest first (then by page id
        and column).
    """
    order = [("detected_at", "descending"), ("page_id", "ascending"), ("column", "ascending")]
    rows = issues.sort_by(order).slice(0, limit).to_pylist()
    found = urls(sorted({row["page_id"] for row in rows})) if rows else {}
    shown = []
    for row in rows:
        url = (
            found.get(row["page_id"]) or f"https://www.notion.so/{row['page_id'].replace('-', '')}"
        )
        shown.append(
            {
                "detected_at": row["detected_at"].isoformat(),
                "page_id": row["page_id"],
                "notion_url": url if full else notion_link(url),
                "column": row["column"],
                "reason": row["reason"],
                "raw_value": _shown_raw_value(row["column"], row["raw_value"], full),
            }
        )
    return shown


def quality_issue_metadata(
    issues: pa.Table, urls: UrlLookup, full: bool = False
) -> dict[str, dg.MetadataValue]:
    """The metadata of a ``lead_quality_issues`` materialization.

    Args:
        issues: Every row of ``lead_quality_issues``.
        urls: Gives the Notion URL of each page id asked for (see :func:`latest_issues`).
        full: Show raw values and URLs unmasked (``LEADS_FULL_PREVIEWS``).

    Returns:
        ``issues_per_column``, ``issues_per_reason`` and ``issues_per_column_and_reason`` (count
        tables, most frequent first), ``latest_issues`` (a table of the
        :data:`LATEST_ISSUES_LIMIT` newest, with each lead's Notion link) and ``preview`` (the
        same as markdown, for a quick look).
    """
    latest = latest_issues(issues, urls, full=full)
    if latest:
        preview = dg.MetadataValue.md(
            tabulate(latest, headers="keys", tablefmt="github", missingval="∅")
        )
    else:
        preview = dg.MetadataValue.md("_(no quality issues)_")
    return {
        "issues_per_column": _count_table(_counts(issues, ["column"]), ("column",)),
        "issues_per_reason": _count_table(_counts(issues, ["reason"]), ("reason",)),
        "issues_per_column_and_reason": _count_table(
            _counts(issues, ["column", "reason"]), ("column", "reason")
        ),
        "latest_issues": dg.MetadataValue.table(
            records=[dg.TableRecord(row) for row in latest], schema=LATEST_ISSUES_SCHEMA
        ),
        "preview": preview,
    }


# -- standard metadata: column schemas, table names, URIs, versions, percentages -------------

#: The tags of a column holding customer data, shown on the column in the UI.
PII_TAGS: dict[str, str] = {"pii": ""}
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def delta_type(dtype: Any) -> str:
    """A Delta column type as Delta names it: ``string``, ``long``, ``timestamp``,
    ``array<string>``, ``struct<a: long>``, ``map<string, long>``."""
    if hasattr(dtype, "element_type"):
        return f"array<{delta_type(dtype.element_type)}>"
    if hasattr(dtype, "key_type"):
        return f"map<{delta_type(dtype.key_type)}, {delta_type(dtype.value_type)}>"
    if hasattr(dtype, "fields"):
        inner = ", ".join(f"{f.name}: {delta_type(f.type)}" for f in dtype.fields)
        return f"struct<{inner}>"
    return str(dtype.type)


def _column(name: str, type_name: str, descriptions: Mapping[str, str], nullable: bool = True):
    return dg.TableColumn(
        name,
        type_name,
        description=descriptions.get(name),
        constraints=None if nullable else dg.TableColumnConstraints(nullable=False),
        tags=PII_TAGS if name in PII_MASKS else None,
    )


def delta_column_schema(
    schema: pa.Schema | deltalake.Schema, descriptions: Mapping[str, str]
) -> dg.TableSchema:
    """The ``dagster/column_schema`` of a Delta table, with Delta's type names.

    Args:
        schema: The table's schema: a Delta schema (read back from the table) or the Arrow
            schema its writer uses (converted as deltalake converts it on write).
        descriptions: Column → description; ``nom``, ``email`` and ``telephone`` are tagged
            :data:`PII_TAGS`.
    """
    if isinstance(schema, pa.Schema):
        schema = deltalake.Schema.from_arrow(schema)
    return dg.TableSchema(
        columns=[
            _column(f.name, delta_type(f.type), descriptions, f.nullable) for f in schema.fields
        ]
    )


def duckdb_column_schema(
    columns: Sequence[tuple[str, str]], descriptions: Mapping[str, str]
) -> dg.TableSchema:
    """The ``dagster/column_schema`` of a DuckDB table, with DuckDB's type names.

    Args:
        columns: ``(name, DuckDB type)`` in table order.
        descriptions: Column → description.
    """
    return dg.TableSchema(columns=[_column(name, kind, descriptions) for name, kind in columns])


def duckdb_columns(warehouse: Warehouse, table: str) -> list[tuple[str, str]]:
    """``(name, DuckDB type)`` of each column of ``table`` (``schema.name``) as published."""
    schema, name = table.split(".", 1)
    with warehouse.read() as con:
        return con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
            [schema, name],
        ).fetchall()


def absolute_uri(location: str) -> str:
    """A table location as an absolute URI: ``s3://…`` as is, a local path as ``file:///…``."""
    if _SCHEME.match(location):
        return location
    return Path(location).resolve().as_uri()


def duckdb_uri(path: str | Path, table: str) -> str:
    """``duckdb:///abs/warehouse.duckdb?table=analytics.x``: a DuckDB table's absolute URI."""
    return f"duckdb://{Path(path).resolve().as_posix()}?table={table}"


def delta_table_metadata(
    table: DeltaTable, name: str, uri: str, descriptions: Mapping[str, str]
) -> dict[str, dg.MetadataValue]:
    """The standard metadata of a Delta table as written: name, absolute URI, column schema and
    version (as text: the UI does not plot it).

    Args:
        table: The table, at the version just written.
        name: Its name (``leads``).
        uri: Its location (the lake's ``table_uri``; relative paths are resolved).
        descriptions: Column → description.
    """
    return {
        "dagster/table_name": dg.MetadataValue.text(name),
        "dagster/uri": dg.MetadataValue.text(absolute_uri(uri)),
        "dagster/column_schema": dg.MetadataValue.table_schema(
            delta_column_schema(table.schema(), descriptions)
        ),
        "delta_version": version_text(table.version()),
    }


def duckdb_table_metadata(
    warehouse: Warehouse, table: str, descriptions: Mapping[str, str]
) -> dict[str, dg.MetadataValue]:
    """The standard metadata of a published DuckDB table: qualified name, absolute URI and the
    column schema read back from the warehouse.

    Args:
        warehouse: The warehouse holding it.
        table: Its qualified name (``analytics.weekly_event_counts``).
        descriptions: Column → description.
    """
    return {
        "dagster/table_name": dg.MetadataValue.text(table),
        "dagster/uri": dg.MetadataValue.text(duckdb_uri(warehouse.path, table)),
        "dagster/column_schema": dg.MetadataValue.table_schema(
            duckdb_column_schema(duckdb_columns(warehouse, table), descriptions)
        ),
    }


def version_text(version: int | None) -> dg.TextMetadataValue:
    """A version or id as text, so the UI lists it instead of plotting it (``""`` for none)."""
    return dg.MetadataValue.text("" if version is None else str(version))


def recorded_int(metadata: Mapping[str, Any], key: str) -> int | None:
    """An integer recorded in materialization metadata as text (:func:`version_text`) or as an
    int (materializations written before it); None when absent or not a whole number."""
    value = getattr(metadata.get(key), "value", None)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def percent(share: float | None) -> float | None:
    """A share (0.4166…) as a percentage rounded to 0.1 (41.7), for ``*_percent`` metadata."""
    return None if share is None else round(share * 100, 1)


def thousands(number: int | float) -> str:
    """``1234`` → ``1,234``, for the run log's summary lines."""
    return f"{number:,}"
