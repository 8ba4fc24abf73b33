"""The catalog of tables: every table's name and where it lives, and one record per time grain.

Every layer imports table names from here, never from the module that happens to write the
table. Delta tables live under the lake root (``LEADS_LAKE_URI``), one folder per name; DuckDB
tables live in the ``analytics`` schema of the warehouse file (``LEADS_WAREHOUSE_PATH``).

A time grain is one :class:`Grain` record in :data:`GRAINS`: the count tables, their assets,
reconcile checks, serving methods and the CLI's ``--by`` choices are generated from that list.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta

import pyarrow as pa

# Delta tables (folders under the lake root).
RAW_TABLE = "raw_notion_leads"
#: The data source's schema as last seen, kept beside the raw table.
SCHEMA_TABLE = "_data_source_schema"
LEADS_TABLE = "leads"
ISSUES_TABLE = "lead_quality_issues"
HISTORY_TABLE = "lead_history"

#: The five event columns of ``leads`` that the counts are made of, in contract order.
EVENT_COLUMNS: tuple[str, ...] = (
    "date_prise_contact",
    "date_reponse_prospect",
    "date_appel_propose",
    "date_appel_booke",
    "date_relance",
)

_TS = pa.timestamp("us", tz="UTC")
#: The columns ``lead_history`` adds before every column of ``leads`` …
HISTORY_VERSION_FIELDS: tuple[pa.Field, ...] = (
    pa.field("version", pa.int64(), nullable=False),
    pa.field("valid_from", _TS),
    pa.field("valid_to", _TS),
    pa.field("is_current", pa.bool_()),
    pa.field("change", pa.string()),
    pa.field("changed_columns", pa.list_(pa.string())),
)
#: … and after them.
HISTORY_SYNCED_AT = pa.field("synced_at", _TS)
#: Names a property map cannot give a column of ``leads``: ``lead_history`` uses them.
HISTORY_ONLY_COLUMNS: tuple[str, ...] = tuple(
    f.name for f in (*HISTORY_VERSION_FIELDS, HISTORY_SYNCED_AT)
)

# DuckDB tables (in the warehouse file).
ANALYTICS_SCHEMA = "analytics"
#: What each published table was computed from, so an unchanged input is not recomputed.
LINEAGE_TABLE = f"{ANALYTICS_SCHEMA}._lineage"
FUNNEL_TABLE = f"{ANALYTICS_SCHEMA}.monthly_funnel_conversion"
OBJECTIVES_TABLE = f"{ANALYTICS_SCHEMA}.weekly_objectives"

#: How long leads stay in each status (from ``lead_history``).
DURATIONS_TABLE = f"{ANALYTICS_SCHEMA}.status_durations"
#: How far each month's first contacts went (from ``leads``).
COHORTS_TABLE = f"{ANALYTICS_SCHEMA}.cohort_conversion"

#: Families of per-grain tables: ``analytics.<grain.adjective>_<family>``.
EVENT_COUNTS = "event_counts"
STATUS_ENTRIES = "status_entries"


@dataclass(frozen=True)
class Grain:
    """One time grain of the per-period tables.

    Attributes:
        name: The grain as users type it (``--by week``, ``by="week"``).
        adjective: Prefix of its tables and assets (``weekly`` → ``weekly_event_counts``).
        label: Name of the period label column (``semaine``), as in the contract.
        start_column: Name of the period start column (``week_start``).
        unit: DuckDB ``date_trunc`` unit of a period.
        step: DuckDB interval between two period starts (``7 DAY``).
        label_format: ``strftime`` format of the label (``%G-W%V``: ISO year and week), the same
            in Python and DuckDB; ``%q`` stands for the quarter (1-4), which neither knows.
        title: How a chart of this grain is titled (``Leads per week, …``).
        period: What one period is, for descriptions (``ISO 8601 week with its ISO year``).
        truncate: The first day of the period holding a date (same rule as ``unit``).
    """

    name: str
    adjective: str
    label: str
    start_column: str
    unit: str
    step: str
    label_format: str
    title: str
    period: str
    truncate: Callable[[date], date]

    def table(self, family: str = EVENT_COUNTS) -> str:
        """The qualified DuckDB name of this grain's table of ``family``."""
        return f"{ANALYTICS_SCHEMA}.{self.asset(family)}"

    def asset(self, family: str = EVENT_COUNTS) -> str:
        """The asset key (one part) of this grain's table of ``family``."""
        return f"{self.adjective}_{family}"

    def period_start(self, day: date) -> date:
        """The first day of the period holding ``day``."""
        return self.truncate(day)

    def label_of(self, day: date) -> str:
        """The label of the period holding ``day`` (``2025-W01``, ``2025-01``)."""
        start = self.truncate(day)
        quarter = str((start.month - 1) // 3 + 1)
        return quarter.join(start.strftime(part) for part in self.label_format.split("%q"))

    @property
    def example(self) -> str:
        """The label of the period holding 1 January 2025, for descriptions (``2025-W01``)."""
        return self.label_of(date(2025, 1, 1))

    @property
    def plural(self) -> str:
        """The grain's name in the plural, for descriptions (``weeks``)."""
        return f"{self.name}s"

    def start_sql(self, day: str) -> str:
        """DuckDB expression: the first day of the period holding the date expression ``day``."""
        return f"date_trunc('{self.unit}', {day})::DATE"

    def label_sql(self, start: str) -> str:
        """DuckDB expression: the label of the period starting on the date expression ``start``."""
        parts = [
            f"strftime({start}, '{part}')" if part else "''"  # DuckDB refuses an empty format
            for part in self.label_format.split("%q")
        ]
        return f" || quarter({start})::VARCHAR || ".join(parts)


WEEK = Grain(
    name="week",
    adjective="weekly",
    label="semaine",
    start_column="week_start",
    unit="week",
    step="7 DAY",
    label_format="%G-W%V",
    title="per week",
    period="ISO 8601 week with its ISO year",
    truncate=lambda day: day - timedelta(days=day.weekday()),
)
MONTH = Grain(
    name="month",
    adjective="monthly",
    label="mois",
    start_column="month_start",
    unit="month",
    step="1 MONTH",
    label_format="%Y-%m",
    title="per month",
    period="calendar month",
    truncate=lambda day: day.replace(day=1),
)

#: Every grain, finest first.
GRAINS: tuple[Grain, ...] = (WEEK, MONTH)
GRAINS_BY_NAME: dict[str, Grain] = {grain.name: grain for grain in GRAINS}


def grain(name: str) -> Grain:
    """The grain called ``name``.

    Raises:
        ValueError: If no grain has that name (the message lists those that exist).
    """
    try:
        return GRAINS_BY_NAME[name]
    except KeyError:
        choices = ", ".join(repr(g.name) for g in GRAINS)
        raise ValueError(f"grain must be one of {choices}, not {name!r}") from None
