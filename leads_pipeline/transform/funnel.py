"""Funnel conversion and weekly objectives: the analytics the old dashboard computed in the browser.

Pure functions over the warehouse's count tables (DuckDB SQL), kept apart from the Dagster
assets so they can be tested and reused on their own; the checks that prove their results are in
``leads_pipeline.defs.assets.downstream_checks``.

Events in a month are not cohorts: a reply counted in March may answer a contact made in February,
so a month's contact→reply ratio can exceed 1. The checks therefore prove what is guaranteed —
numerators and denominators equal the source counts, ratios are NULL exactly when the denominator
is zero and equal numerator / denominator otherwise — not that ratios stay below 1.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta

import duckdb
import pyarrow as pa

from leads_pipeline.storage.duck import scratch_connection
from leads_pipeline.tables import EVENT_COLUMNS

#: Funnel steps: name, numerator event (the later step), denominator event (the earlier step).
FUNNEL_STEPS: tuple[tuple[str, str, str], ...] = (
    ("contact_to_reply", "date_reponse_prospect", "date_prise_contact"),
    ("reply_to_call_proposed", "date_appel_propose", "date_reponse_prospect"),
    ("proposed_to_booked", "date_appel_booke", "date_appel_propose"),
    ("reply_to_booked", "date_appel_booke", "date_reponse_prospect"),
)

#: Weekly targets used when the run configuration gives none: a little above the bundled sample's
#: median week (19 first contacts, 11 replies, 8 calls proposed, 5 booked, 9.5 follow-ups), so
#: each is reached in 42-50 % of its weeks and a sample run shows objectives both met and missed.
#: A 20 → 12 → 9 → 6 funnel (60 % reply, 75 % proposed, 67 % booked) plus 10 follow-ups.
DEFAULT_WEEKLY_TARGETS: dict[str, float] = {
    "date_prise_contact": 20.0,
    "date_reponse_prospect": 12.0,
    "date_appel_propose": 9.0,
    "date_appel_booke": 6.0,
    "date_relance": 10.0,
}
DEFAULT_OBJECTIVE_WEEKS = 4


def funnel_sql(counts_relation: str) -> str:
    """SQL turning monthly event counts into one funnel row per month.

    For each step: ``<step>_numerator`` and ``<step>_denominator`` (the month's counts of the later
    and the earlier event) and ``<step>_ratio`` (DOUBLE; NULL when the denominator is zero).

    Args:
        counts_relation: A relation shaped like ``analytics.monthly_event_counts``.
    """
    columns = []
    for step, numerator, denominator in FUNNEL_STEPS:
        columns += [
            f"{numerator} AS {step}_numerator",
            f"{denominator} AS {step}_denominator",
            f"CASE WHEN {denominator} = 0 THEN NULL "
            f"ELSE {numerator}::DOUBLE / {denominator} END AS {step}_ratio",
        ]
    selected = ",\n               ".join(columns)
    return f"""
        SELECT mois, month_start,
               {selected}
        FROM {counts_relation}
        ORDER BY month_start
    """


def compute_funnel(con: duckdb.DuckDBPyConnection, counts_relation: str) -> pa.Table:
    """Runs :func:`funnel_sql` on ``con`` (e.g. a read-only warehouse connection)."""
    return con.sql(funnel_sql(counts_relation)).to_arrow_table()


def objectives_window(weekly_counts: pa.Table, weeks: int, as_of: date) -> pa.Table:
    """The last ``weeks`` complete weeks of ``weekly_counts``, oldest first.

    The week holding ``as_of`` is in progress and left out; so is anything after it. The count
    table has no gaps, so the window is ``weeks`` consecutive ISO weeks (fewer if history is
    shorter), ending with the last week that had events or the last week before ``as_of``.
    """
    current = as_of - timedelta(days=as_of.weekday())
    con = scratch_connection()
    try:
        con.register("weekly", weekly_counts)
        return con.sql(
            "SELECT * FROM (SELECT * FROM weekly WHERE week_start < $current "
            "ORDER BY week_start DESC LIMIT $weeks) ORDER BY week_start",
            params={"current": current, "weeks": weeks},
        ).to_arrow_table()
    finally:
        con.close()


def compute_objectives(window: pa.Table, targets: Mapping[str, float]) -> pa.Table:
    """Average weekly count of each event over ``window`` against its weekly target.

    Returns one row per event column (funnel order): ``event``, ``weeks``, ``first_week``,
    ``last_week``, ``window_start`` (Monday), ``window_end`` (Sunday), ``average``, ``target``,
    ``attainment`` (average / target; NULL when the target is 0 or the window empty) and ``met``
    (average >= target; NULL when the window is empty).
    """
    target_table = pa.table(
        {
            "position": pa.array(range(len(EVENT_COLUMNS)), pa.int32()),
            "event": list(EVENT_COLUMNS),
            "target": pa.array([float(targets[e]) for e in EVENT_COLUMNS], pa.float64()),
        }
    )
    averages = ", ".join(f"avg({c})::DOUBLE AS {c}" for c in EVENT_COLUMNS)
    con = scratch_connection()
    try:
        con.register("window_weeks", window)
        con.register("targets", target_table)
        return con.sql(
            f"""
            WITH stats AS (
                SELECT count(*)::INTEGER AS weeks, min(semaine) AS first_week,
                       max(semaine) AS last_week, min(week_start) AS window_start,
                       (max(week_start) + INTERVAL 6 DAY)::DATE AS window_end, {averages}
                FROM window_weeks
            ),
            averages AS (
                SELECT * FROM stats
                UNPIVOT INCLUDE NULLS (average FOR event IN ({", ".join(EVENT_COLUMNS)}))
            )
            SELECT t.event, a.weeks, a.first_week, a.last_week, a.window_start, a.window_end,
                   a.average, t.target,
                   CASE WHEN t.target = 0 THEN NULL ELSE a.average / t.target END AS attainment,
                   a.average >= t.target AS met
            FROM targets t JOIN averages a USING (event)
            ORDER BY t.position
            """
        ).to_arrow_table()
    finally:
        con.close()


def last_complete_week_start(as_of: date) -> date:
    """The Monday of the last ISO week that ended before ``as_of``'s week began."""
    return as_of - timedelta(days=as_of.weekday() + 7)
