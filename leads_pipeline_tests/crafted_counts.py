"""Crafted count tables published into a warehouse, for the serving and downstream tests."""

from __future__ import annotations

from datetime import date

import pyarrow as pa

from leads_pipeline.storage.warehouse import Warehouse
from leads_pipeline.tables import EVENT_COLUMNS, MONTH, WEEK

#: Counts are given in the warehouse's column order.
COUNT_ORDER = EVENT_COLUMNS


def weekly_table(rows: dict[str, tuple[int, int, int, int, int]]) -> pa.Table:
    """``{"2025-W01": (contact, reply, proposed, booked, follow-up), ...}`` as a weekly table."""
    labels = list(rows)
    return pa.table(
        {
            "semaine": labels,
            "week_start": pa.array([date.fromisoformat(w) for w in labels], pa.date32()),
            **{
                column: pa.array([rows[w][i] for w in labels], pa.int64())
                for i, column in enumerate(COUNT_ORDER)
            },
        }
    )


def monthly_table(rows: dict[str, tuple[int, int, int, int, int]]) -> pa.Table:
    """``{"2025-01": (contact, reply, proposed, booked, follow-up), ...}`` as a monthly table."""
    labels = list(rows)
    return pa.table(
        {
            "mois": labels,
            "month_start": pa.array([date.fromisoformat(f"{m}-01") for m in labels], pa.date32()),
            **{
                column: pa.array([rows[m][i] for m in labels], pa.int64())
                for i, column in enumerate(COUNT_ORDER)
            },
        }
    )


def publish_counts(
    path: str,
    weekly: dict[str, tuple[int, int, int, int, int]] | None = None,
    monthly: dict[str, tuple[int, int, int, int, int]] | None = None,
) -> Warehouse:
    """Publishes the given crafted tables into the warehouse at ``path``."""
    tables = {}
    if weekly is not None:
        tables[WEEK.table()] = weekly_table(weekly)
    if monthly is not None:
        tables[MONTH.table()] = monthly_table(monthly)
    warehouse = Warehouse(path)
    warehouse.publish(tables)
    return warehouse
