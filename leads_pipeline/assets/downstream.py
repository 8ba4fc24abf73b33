"""Downstream analytics assets: funnel conversion and weekly objectives, from the count tables.

Both read the warehouse's count tables, compute in DuckDB, publish their own table through
:meth:`Warehouse.publish` (atomic for readers) and prove their result with checks declared on the
asset. They follow ``leads`` through automation: eager, so a fresh count table refreshes them.
"""

from datetime import date, datetime
from zoneinfo import ZoneInfo

import dagster as dg
import duckdb
import pyarrow as pa
from pydantic import Field
from tabulate import tabulate

from leads_pipeline.assets.analytics import monthly_event_counts, weekly_event_counts
from leads_pipeline.automation import follow_upstream
from leads_pipeline.duck import scratch_connection
from leads_pipeline.funnel import (
    DEFAULT_OBJECTIVE_WEEKS,
    DEFAULT_WEEKLY_TARGETS,
    FUNNEL_MATCHES_COUNTS,
    FUNNEL_RATIOS_WELL_FORMED,
    FUNNEL_STEPS,
    FUNNEL_TABLE,
    OBJECTIVES_MATCH_COUNTS,
    OBJECTIVES_TABLE,
    OBJECTIVES_WINDOW_COMPLETE,
    OBJECTIVES_WINDOW_RECENT,
    check_funnel_matches_counts,
    check_funnel_ratios,
    check_objectives_match_counts,
    check_objectives_window_complete,
    check_objectives_window_recent,
    compute_funnel,
    compute_objectives,
    objectives_window,
)
from leads_pipeline.pools import WAREHOUSE_POOL
from leads_pipeline.property_map import EVENT_COLUMNS
from leads_pipeline.resources import WarehouseResource
from leads_pipeline.warehouse import MONTHLY_TABLE, WEEKLY_TABLE, WarehouseNotBuiltError

GROUP = "analytics"
FUNNEL_ASSET = "monthly_funnel_conversion"
OBJECTIVES_ASSET = "weekly_objectives"
#: Business calendar: "today" for the objectives window.
TIMEZONE = "Europe/Paris"


def _read_counts(warehouse: WarehouseResource, table: str, order_by: str, upstream: str):
    try:
        with warehouse.warehouse().read() as con:
            return con.sql(f"SELECT * FROM {table} ORDER BY {order_by}").to_arrow_table()
    except (WarehouseNotBuiltError, duckdb.CatalogException) as error:
        raise dg.Failure(
            f"{table} is not in the warehouse {warehouse.path} yet: materialize {upstream} first "
            f"(job sync_leads). ({error})"
        ) from error


def _percent(value: float | None) -> str:
    return "∅" if value is None else f"{value:.1%}"


def _funnel_preview(funnel: pa.Table, months: int = 12) -> dg.MarkdownMetadataValue:
    rows = funnel.slice(max(funnel.num_rows - months, 0)).to_pylist()
    if not rows:
        return dg.MetadataValue.md("_(no rows)_")
    display = [
        {
            "mois": row["mois"],
            **{
                step: f"{row[f'{step}_numerator']}/{row[f'{step}_denominator']} = "
                f"{_percent(row[f'{step}_ratio'])}"
                for step, _, _ in FUNNEL_STEPS
            },
        }
        for row in rows
    ]
    return dg.MetadataValue.md(tabulate(display, headers="keys", tablefmt="github"))


@dg.asset(
    deps=[monthly_event_counts],
    group_name=GROUP,
    kinds={"duckdb"},
    pool=WAREHOUSE_POOL,
    automation_condition=follow_upstream(),
    check_specs=[
        dg.AssetCheckSpec(
            FUNNEL_MATCHES_COUNTS,
            asset=FUNNEL_ASSET,
            description="Every month of monthly_event_counts is here, with its counts as the "
            "ratios' numerators and denominators.",
        ),
        dg.AssetCheckSpec(
            FUNNEL_RATIOS_WELL_FORMED,
            asset=FUNNEL_ASSET,
            description="Counts are non-negative; a ratio is empty exactly when its denominator "
            "is zero and equals numerator / denominator otherwise.",
        ),
    ],
)
def monthly_funnel_conversion(warehouse: WarehouseResource) -> dg.MaterializeResult:
    """How well each month turned leads from one funnel step into the next.

    One row per calendar month (``mois``, ``month_start``) with four conversion ratios — first
    contact → reply, reply → call proposed, call proposed → call booked, reply → call booked — each
    with its numerator and denominator (the month's counts of the two events) so they can be summed
    over any range. A ratio is empty when nothing happened at the earlier step that month. Events
    of a month are not a cohort (a reply may answer last month's contact), so a ratio can exceed
    100 %. Table ``analytics.monthly_funnel_conversion``.
    """
    counts = _read_counts(warehouse, MONTHLY_TABLE, "month_start", "monthly_event_counts")
    con = scratch_connection()
    try:
        con.register("monthly_counts", counts)
        funnel = compute_funnel(con, "monthly_counts")
    finally:
        con.close()
    published = warehouse.warehouse()
    # Unchanged (a sync that changed nothing): no new copy of the warehouse file.
    republished = not published.holds(FUNNEL_TABLE, funnel)
    if republished:
        published.publish({FUNNEL_TABLE: funnel})
    latest = funnel.slice(funnel.num_rows - 1).to_pylist()[0] if funnel.num_rows else {}
    return dg.MaterializeResult(
        metadata={
            "table": FUNNEL_TABLE,
            "dagster/row_count": funnel.num_rows,
            "republished": republished,
            "first_month": funnel["mois"][0].as_py() if funnel.num_rows else "",
            "last_month": latest.get("mois", ""),
            **{
                f"last_month_{step}": latest[f"{step}_ratio"]
                for step, _, _ in FUNNEL_STEPS
                if latest.get(f"{step}_ratio") is not None
            },
            "preview": _funnel_preview(funnel),
        },
        check_results=[
            check_funnel_matches_counts(funnel, counts),
            check_funnel_ratios(funnel),
        ],
    )


class WeeklyObjectivesConfig(dg.Config):
    """How many weeks to average and the weekly targets to compare them with."""

    weeks: int = Field(
        default=DEFAULT_OBJECTIVE_WEEKS,
        description="Complete ISO weeks to average (the week in progress never counts).",
    )
    target_date_prise_contact: float = Field(
        default=DEFAULT_WEEKLY_TARGETS["date_prise_contact"],
        description="First contacts per week.",
    )
    target_date_reponse_prospect: float = Field(
        default=DEFAULT_WEEKLY_TARGETS["date_reponse_prospect"],
        description="Prospects' replies per week.",
    )
    target_date_appel_propose: float = Field(
        default=DEFAULT_WEEKLY_TARGETS["date_appel_propose"],
        description="Calls proposed per week.",
    )
    target_date_appel_booke: float = Field(
        default=DEFAULT_WEEKLY_TARGETS["date_appel_booke"],
        description="Calls booked per week.",
    )
    target_date_relance: float = Field(
        default=DEFAULT_WEEKLY_TARGETS["date_relance"],
        description="Follow-ups per week.",
    )
    as_of: str | None = Field(
        default=None,
        description="YYYY-MM-DD: the window ends with the last complete week before this day's "
        f"week. Default: today in {TIMEZONE}.",
    )

    def targets(self) -> dict[str, float]:
        """Weekly target per event column."""
        return {event: getattr(self, f"target_{event}") for event in EVENT_COLUMNS}

    def as_of_date(self) -> date:
        """The reference day (today in the business time zone unless configured)."""
        if self.as_of:
            return date.fromisoformat(self.as_of)
        return datetime.now(ZoneInfo(TIMEZONE)).date()


@dg.asset(
    deps=[weekly_event_counts],
    group_name=GROUP,
    kinds={"duckdb"},
    pool=WAREHOUSE_POOL,
    automation_condition=follow_upstream(),
    check_specs=[
        dg.AssetCheckSpec(
            OBJECTIVES_MATCH_COUNTS,
            asset=OBJECTIVES_ASSET,
            description="One row per event; averages equal the window's weekly counts, "
            "attainment = average / target, met = average ≥ target.",
        ),
        dg.AssetCheckSpec(
            OBJECTIVES_WINDOW_COMPLETE,
            asset=OBJECTIVES_ASSET,
            description="History covers the configured number of weeks (warning otherwise).",
        ),
        dg.AssetCheckSpec(
            OBJECTIVES_WINDOW_RECENT,
            asset=OBJECTIVES_ASSET,
            description="The window ends with last week: no silence or stale counts behind the "
            "averages (warning otherwise).",
        ),
    ],
)
def weekly_objectives(
    config: WeeklyObjectivesConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Are we on pace? Recent weekly activity against the team's weekly targets.

    For each funnel event (first contacts, replies, calls proposed, calls booked, follow-ups): the
    average number per week over the last complete weeks (4 by default; the week in progress is
    left out), the weekly target, the attainment (average / target) and whether the target is met.
    Targets and window come from the run configuration. Table ``analytics.weekly_objectives``.
    """
    if config.weeks < 1:
        raise dg.Failure(f"weeks must be at least 1, not {config.weeks}.")
    targets = config.targets()
    negative = {event: target for event, target in targets.items() if target < 0}
    if negative:
        raise dg.Failure(f"Weekly targets cannot be negative: {negative}.")
    try:
        as_of = config.as_of_date()
    except ValueError as error:
        raise dg.Failure(f"as_of={config.as_of!r} is not a YYYY-MM-DD date.") from error
    counts = _read_counts(warehouse, WEEKLY_TABLE, "week_start", "weekly_event_counts")
    window = objectives_window(counts, config.weeks, as_of)
    objectives = compute_objectives(window, targets)
    published = warehouse.warehouse()
    republished = not published.holds(OBJECTIVES_TABLE, objectives)
    if republished:
        published.publish({OBJECTIVES_TABLE: objectives})
    rows = objectives.to_pylist()
    first = rows[0] if rows else {}
    display = [
        {
            "event": row["event"],
            "average / week": "∅" if row["average"] is None else f"{row['average']:.1f}",
            "target": f"{row['target']:g}",
            "attainment": _percent(row["attainment"]),
            "met": {True: "✅", False: "❌"}.get(row["met"], "∅"),
        }
        for row in rows
    ]
    return dg.MaterializeResult(
        metadata={
            "table": OBJECTIVES_TABLE,
            "dagster/row_count": objectives.num_rows,
            "republished": republished,
            "as_of": str(as_of),
            "weeks_in_window": first.get("weeks", 0),
            "window": f"{first.get('first_week')} → {first.get('last_week')}"
            if first.get("weeks")
            else "(empty)",
            "objectives_met": sum(1 for row in rows if row["met"]),
            **{
                f"attainment_{row['event']}": row["attainment"]
                for row in rows
                if row["attainment"] is not None
            },
            "preview": dg.MetadataValue.md(tabulate(display, headers="keys", tablefmt="github")),
        },
        check_results=[
            check_objectives_match_counts(objectives, window),
            check_objectives_window_complete(window, config.weeks),
            check_objectives_window_recent(window, as_of),
        ],
    )


ASSETS = [monthly_funnel_conversion, weekly_objectives]
