"""The column schema every asset declares (``dagster/column_schema``) and where its table lives.

Delta tables are declared from the static Arrow schemas their writers use (``RAW_SCHEMA``,
``ISSUES_SCHEMA``, the ``leads`` schema of the default property map and the ``lead_history``
schema built from it); DuckDB tables from the column lists below, which the SQL that computes them
produces. Descriptions follow DESIGN.md's contract; a column of ``leads`` fed by a Notion property
names it (``Notion property 'Statut' (status or select)``); ``nom``, ``email`` and ``telephone``
are tagged as customer data (:data:`~leads_pipeline.defs.metadata.PII_TAGS`).

Each materialization reports the schema of the table as actually written
(:func:`~leads_pipeline.defs.metadata.delta_table_metadata`,
:func:`~leads_pipeline.defs.metadata.duckdb_table_metadata`) with these descriptions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import dagster as dg

from leads_pipeline.defs.metadata import (
    absolute_uri,
    delta_column_schema,
    duckdb_column_schema,
    duckdb_uri,
)
from leads_pipeline.storage.raw_store import RAW_SCHEMA
from leads_pipeline.tables import (
    COHORTS_TABLE,
    DURATIONS_TABLE,
    EVENT_COLUMNS,
    EVENT_COUNTS,
    FUNNEL_TABLE,
    GRAINS,
    HISTORY_TABLE,
    ISSUES_TABLE,
    LEADS_TABLE,
    OBJECTIVES_TABLE,
    RAW_TABLE,
    STATUS_ENTRIES,
)
from leads_pipeline.transform.funnel import FUNNEL_STEPS
from leads_pipeline.transform.history import history_schema
from leads_pipeline.transform.parsing import ISSUES_SCHEMA, leads_schema
from leads_pipeline.transform.property_map import (
    DEFAULT_COLUMNS,
    ResolvedColumn,
    accepted_types,
)

#: What each event column counts, in words (funnel order).
EVENT_MEANINGS: dict[str, str] = {
    "date_prise_contact": "first contact",
    "date_reponse_prospect": "prospect's reply",
    "date_appel_propose": "call proposed",
    "date_appel_booke": "call booked",
    "date_relance": "follow-up",
}

RAW_DESCRIPTIONS: dict[str, str] = {
    "page_id": "Notion page id (one row per page ever seen).",
    "created_time": "When the page was created in Notion (UTC).",
    "last_edited_time": "When the page was last edited in Notion (UTC, rounded to the minute).",
    "in_trash": "Whether Notion returned the page as trashed.",
    "url": "The page's Notion URL.",
    "properties_json": "The page's properties exactly as Notion returned them (JSON).",
    "synced_at": "When the pipeline last wrote this copy of the page (UTC).",
    "deleted_at": "When the page was trashed or found missing from a full listing; empty while "
    "it lives.",
}

#: ``leads`` columns' meanings (DESIGN.md), before the Notion property that feeds them.
_LEADS_MEANINGS: dict[str, str] = {
    "id": "Notion page id, unique.",
    "nom": "The lead's name.",
    "email": "The lead's email address.",
    "telephone": "The lead's phone number.",
    "statut": "The lead's status (option name).",
    **{
        column: f"Date of the {meaning}, as written in Notion."
        for column, meaning in EVENT_MEANINGS.items()
    },
    "created_time": "Page metadata: when the page was created (UTC).",
    "last_edited_time": "Page metadata: when the page was last edited (UTC).",
    "url": "Page metadata: the page's Notion URL.",
    "extra_properties": "Every unmapped property, as simple values (JSON object).",
}

ISSUES_DESCRIPTIONS: dict[str, str] = {
    "page_id": "The lead's Notion page id.",
    "column": "The column of leads left empty because its value could not be read.",
    "raw_value": "The value as Notion holds it.",
    "reason": "Why the value could not be read.",
    "detected_at": "When the value was first seen (UTC).",
}

_HISTORY_DESCRIPTIONS: dict[str, str] = {
    "id": "Notion page id of the lead.",
    "version": "The version's number: 1, 2, … per lead.",
    "valid_from": "When the version began: its last_edited_time (UTC).",
    "valid_to": "When the version ended: the next version's valid_from or the deletion time; "
    "empty while current.",
    "is_current": "Whether this is the lead's current version.",
    "change": "How the version came about: created, updated, deleted or restored.",
    "changed_columns": "The columns of leads that changed in this version.",
    "synced_at": "When the pipeline wrote the version (UTC).",
}


def mapped_description(column: str, prop: str | None, notion_types: Iterable[str]) -> str:
    """The description of a ``leads`` column fed by a Notion property (or left unmapped).

    Args:
        column: The column of ``leads``.
        prop: The Notion property feeding it; ``None`` when it is unmapped (always empty).
        notion_types: The property's type, or the types the column's kind accepts.
    """
    meaning = _LEADS_MEANINGS.get(column, f"The {column} column of the property map.")
    if prop is None:
        return f"{meaning} Unmapped in the property map: always empty."
    types = list(notion_types)
    accepted = " or ".join(types) if len(types) < 3 else f"{', '.join(types[:-1])} or {types[-1]}"
    return f"{meaning} Notion property '{prop}' ({accepted})."


def leads_descriptions(columns: Iterable[ResolvedColumn] | None = None) -> dict[str, str]:
    """Descriptions of the columns of ``leads`` for a resolved property map.

    Args:
        columns: The resolved map (its property names and types); the default map, with the
            property types each kind accepts, when omitted.
    """
    descriptions = dict(_LEADS_MEANINGS)
    if columns is None:
        for spec in DEFAULT_COLUMNS:
            descriptions[spec.column] = mapped_description(
                spec.column, spec.property, accepted_types(spec.kind)
            )
        return descriptions
    for resolved in columns:
        types = [resolved.notion_type] if resolved.notion_type else accepted_types(resolved.kind)
        descriptions[resolved.column] = mapped_description(
            resolved.column, resolved.property_name, types
        )
    return descriptions


def history_descriptions(leads: Mapping[str, str] | None = None) -> dict[str, str]:
    """Descriptions of ``lead_history``'s columns: its own and those of ``leads``."""
    return {**(leads or leads_descriptions()), **_HISTORY_DESCRIPTIONS}


#: The columns of ``leads`` with the default property map (no data source needed).
DEFAULT_LEADS_SCHEMA = leads_schema(
    tuple(ResolvedColumn(spec.column, spec.kind, None, None, None) for spec in DEFAULT_COLUMNS)
)


@dataclass(frozen=True)
class DuckColumn:
    """One column of a DuckDB table: name, DuckDB type, meaning."""

    name: str
    type: str
    description: str


def _event_columns(what: str) -> list[DuckColumn]:
    return [
        DuckColumn(column, "BIGINT", f"{what} {EVENT_MEANINGS[column]} dates.")
        for column in EVENT_COLUMNS
    ]


def _period_columns(grain) -> list[DuckColumn]:
    return [
        DuckColumn(grain.label, "VARCHAR", f"The {grain.period}, like {grain.example}."),
        DuckColumn(grain.start_column, "DATE", f"The first day of the {grain.name}."),
    ]


def _ratio(step: str, numerator: str, denominator: str) -> list[DuckColumn]:
    top, bottom = EVENT_MEANINGS[numerator], EVENT_MEANINGS[denominator]
    return [
        DuckColumn(f"{step}_numerator", "BIGINT", f"The month's {top} dates."),
        DuckColumn(f"{step}_denominator", "BIGINT", f"The month's {bottom} dates."),
        DuckColumn(
            f"{step}_ratio",
            "DOUBLE",
            f"{top} / {bottom} (a share; empty when nothing happened at the earlier step).",
        ),
    ]


_STATUS = DuckColumn("statut", "VARCHAR", "The status (Notion's option name).")
_GROUP = DuckColumn("status_group", "VARCHAR", "The status's group in Notion (to do, …).")

#: The columns of every DuckDB table, by qualified table name.
DUCKDB_COLUMNS: dict[str, list[DuckColumn]] = {
    **{
        grain.table(EVENT_COUNTS): [*_period_columns(grain), *_event_columns("Leads with")]
        for grain in GRAINS
    },
    **{
        grain.table(STATUS_ENTRIES): [
            *_period_columns(grain),
            _STATUS,
            _GROUP,
            DuckColumn("entries", "BIGINT", "Leads that entered the status in the period."),
        ]
        for grain in GRAINS
    },
    DURATIONS_TABLE: [
        _STATUS,
        _GROUP,
        DuckColumn("position", "BIGINT", "The status's position in Notion's order."),
        DuckColumn("completed_stays", "BIGINT", "Stays in the status that ended."),
        DuckColumn("median_days", "DOUBLE", "Median length of the completed stays, in days."),
        DuckColumn("p90_days", "DOUBLE", "90th percentile of the completed stays, in days."),
        DuckColumn("open_stays", "BIGINT", "Leads in the status now."),
        DuckColumn("median_open_days", "DOUBLE", "Median age of the open stays, in days."),
    ],
    COHORTS_TABLE: [
        DuckColumn("mois", "VARCHAR", "The month of first contact, like 2025-01."),
        DuckColumn("month_start", "DATE", "The first day of the month."),
        DuckColumn("leads", "BIGINT", "Leads first contacted that month (the cohort)."),
        DuckColumn("replied", "BIGINT", "Leads of the cohort with a reply date."),
        DuckColumn("call_proposed", "BIGINT", "Leads of the cohort with a call proposed date."),
        DuckColumn("call_booked", "BIGINT", "Leads of the cohort with a call booked date."),
        DuckColumn("reply_rate", "DOUBLE", "replied / leads (empty for an empty month)."),
        DuckColumn("call_proposed_rate", "DOUBLE", "call_proposed / leads."),
        DuckColumn("call_booked_rate", "DOUBLE", "call_booked / leads."),
        DuckColumn(
            "median_days_to_call_booked", "DOUBLE", "Median days from first contact to call booked."
        ),
    ],
    FUNNEL_TABLE: [
        DuckColumn("mois", "VARCHAR", "The calendar month, like 2025-01."),
        DuckColumn("month_start", "DATE", "The first day of the month."),
        *(column for step in FUNNEL_STEPS for column in _ratio(*step)),
    ],
    OBJECTIVES_TABLE: [
        DuckColumn("event", "VARCHAR", "The event column (funnel step)."),
        DuckColumn("weeks", "INTEGER", "Complete weeks in the window."),
        DuckColumn("first_week", "VARCHAR", "The window's first ISO week."),
        DuckColumn("last_week", "VARCHAR", "The window's last ISO week."),
        DuckColumn("window_start", "DATE", "Monday of the first week."),
        DuckColumn("window_end", "DATE", "Sunday of the last week."),
        DuckColumn("average", "DOUBLE", "Average number of events per week over the window."),
        DuckColumn("target", "DOUBLE", "The weekly target."),
        DuckColumn("attainment", "DOUBLE", "average / target (empty when the target is 0)."),
        DuckColumn("met", "BOOLEAN", "Whether the average reaches the target."),
    ],
}


def duckdb_descriptions(table: str) -> dict[str, str]:
    """Column → description of the DuckDB table ``table`` (qualified name)."""
    return {column.name: column.description for column in DUCKDB_COLUMNS[table]}


#: The Delta table of each Delta asset, with its declared schema and descriptions.
_DELTA_ASSETS = {
    RAW_TABLE: (RAW_SCHEMA, RAW_DESCRIPTIONS),
    LEADS_TABLE: (DEFAULT_LEADS_SCHEMA, leads_descriptions()),
    ISSUES_TABLE: (ISSUES_SCHEMA, ISSUES_DESCRIPTIONS),
    HISTORY_TABLE: (history_schema(DEFAULT_LEADS_SCHEMA), history_descriptions()),
}
#: The DuckDB table of each DuckDB asset.
DUCKDB_ASSETS: dict[str, str] = {table.split(".", 1)[1]: table for table in DUCKDB_COLUMNS}


def declared_column_schema(asset: str) -> dg.TableSchema:
    """The column schema asset ``asset`` declares (``dagster/column_schema``).

    Raises:
        KeyError: If ``asset`` names no table of the catalog.
    """
    if asset in _DELTA_ASSETS:
        schema, descriptions = _DELTA_ASSETS[asset]
        return delta_column_schema(schema, descriptions)
    table = DUCKDB_ASSETS[asset]
    return duckdb_column_schema(
        [(c.name, c.type) for c in DUCKDB_COLUMNS[table]], duckdb_descriptions(table)
    )


def definition_metadata(asset: str) -> dict[str, object]:
    """The definition metadata of ``asset``: its declared column schema and table name."""
    return {
        "dagster/column_schema": declared_column_schema(asset),
        "dagster/table_name": asset if asset in _DELTA_ASSETS else DUCKDB_ASSETS[asset],
    }


def location_metadata(asset: str, lake_uri: str, warehouse_path: str) -> dict[str, str]:
    """``dagster/uri`` of ``asset``'s table for a lake root and a warehouse file.

    Args:
        asset: The asset (a table of the catalog).
        lake_uri: The Delta lake root (``LEADS_LAKE_URI``).
        warehouse_path: The DuckDB file (``LEADS_WAREHOUSE_PATH``).
    """
    if asset in _DELTA_ASSETS:
        return {"dagster/uri": absolute_uri(f"{lake_uri.rstrip('/')}/{asset}")}
    return {"dagster/uri": duckdb_uri(warehouse_path, DUCKDB_ASSETS[asset])}
