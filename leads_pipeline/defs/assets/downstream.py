"""Downstream analytics assets: funnel conversion and weekly objectives, from the count tables.

Both read the warehouse's count tables, compute in DuckDB, publish their own table through
:meth:`Warehouse.publish` (atomic for readers) and prove their result with checks declared on the
asset. They follow ``leads`` through automation: eager, so a fresh count table refreshes them.

The objectives are judged against a reference day: today in ``Europe/Paris`` when the lake holds
Notion pages, and the day of the last edit when it holds the bundled sample (whose pages stop on
2026-01-02): a sample run then averages the sample's own last complete weeks instead of reporting
it months behind the wall clock. See :func:`reference_day`.
"""

from dataclasses import dataclass
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import dagster as dg
import pyarrow as pa
from pydantic import Field
from tabulate import tabulate

from leads_pipeline.defs.assets.downstream_checks import (
    FUNNEL_MATCHES_COUNTS,
    FUNNEL_RATIOS_WELL_FORMED,
    OBJECTIVES_MATCH_COUNTS,
    OBJECTIVES_WINDOW_COMPLETE,
    OBJECTIVES_WINDOW_RECENT,
    check_funnel_matches_counts,
    check_funnel_ratios,
    check_objectives_match_counts,
    check_objectives_window_complete,
    check_objectives_window_recent,
)
from leads_pipeline.defs.assets.schemas import duckdb_descriptions
from leads_pipeline.defs.assets.warehouse_assets import warehouse_asset
from leads_pipeline.defs.metadata import duckdb_table_metadata, percent
from leads_pipeline.defs.resources import LakeResource, WarehouseResource
from leads_pipeline.settings import SOURCE_SAMPLE, TIMEZONE
from leads_pipeline.storage.duck import scratch_connection
from leads_pipeline.storage.lake import DeltaLake
from leads_pipeline.storage.raw_store import read_state
from leads_pipeline.storage.warehouse import WarehouseNotBuiltError
from leads_pipeline.tables import (
    EVENT_COLUMNS,
    EVENT_COUNTS,
    FUNNEL_TABLE,
    MONTH,
    OBJECTIVES_TABLE,
    RAW_TABLE,
    WEEK,
    Grain,
)
from leads_pipeline.transform.funnel import (
    DEFAULT_OBJECTIVE_WEEKS,
    DEFAULT_WEEKLY_TARGETS,
    FUNNEL_STEPS,
    compute_funnel,
    compute_objectives,
    objectives_window,
)

FUNNEL_ASSET = "monthly_funnel_conversion"
OBJECTIVES_ASSET = "weekly_objectives"
#: Business calendar: "today" for the objectives window.
#: Readable names of the event columns in previews.
EVENT_LABELS = {
    "date_prise_contact": "first contacts",
    "date_reponse_prospect": "replies",
    "date_appel_propose": "calls proposed",
    "date_appel_booke": "calls booked",
    "date_relance": "follow-ups",
}
#: The English name of each event column in metadata names (``calls_booked_attainment_percent``).
EVENT_NAMES = {
    event: label.replace(" ", "_").replace("-", "_") for event, label in EVENT_LABELS.items()
}


def _read_counts(warehouse: WarehouseResource, grain: Grain) -> pa.Table:
    """``grain``'s event counts, oldest first; a failure naming the asset to build if missing."""
    table = grain.table(EVENT_COUNTS)
    try:
        return warehouse.warehouse().require_table(table, order_by=grain.start_column)
    except WarehouseNotBuiltError as error:
        raise dg.Failure(
            f"{table} is not in the warehouse {warehouse.path} yet: materialize "
            f"{grain.asset(EVENT_COUNTS)} first (job sync_leads). ({error})"
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


@warehouse_asset(
    FUNNEL_ASSET,
    [MONTH.asset(EVENT_COUNTS)],
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
def monthly_funnel_conversion(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """How well each month turned leads from one funnel step into the next.

    One row per calendar month (``mois``, ``month_start``) with four conversion ratios — first
    contact → reply, reply → call proposed, call proposed → call booked, reply → call booked — each
    with its numerator and denominator (the month's counts of the two events) so they can be summed
    over any range. A ratio is empty when nothing happened at the earlier step that month. Events
    of a month are not a cohort (a reply may answer last month's contact), so a ratio can exceed
    100 %. Table ``analytics.monthly_funnel_conversion``.
    """
    counts = _read_counts(warehouse, MONTH)
    con = scratch_connection()
    try:
        con.register("monthly_counts", counts)
        funnel = compute_funnel(con, "monthly_counts")
    finally:
        con.close()
    # Unchanged (a sync that changed nothing): no new copy of the warehouse file.
    republished = warehouse.warehouse().publish_changed(FUNNEL_TABLE, funnel)
    latest = funnel.slice(funnel.num_rows - 1).to_pylist()[0] if funnel.num_rows else {}
    checks = [check_funnel_matches_counts(funnel, counts), check_funnel_ratios(funnel)]
    context.log.info(
        f"{FUNNEL_ASSET}: {funnel.num_rows} months, last {latest.get('mois') or '(none)'} with "
        f"contact to reply {_percent(latest.get('contact_to_reply_ratio'))}, "
        f"{'republished' if republished else 'unchanged'}; checks: {_passed(checks)}."
    )
    return dg.MaterializeResult(
        metadata={
            **{
                f"last_month_{step}_percent": percent(latest[f"{step}_ratio"])
                for step, _, _ in FUNNEL_STEPS
                if latest.get(f"{step}_ratio") is not None
            },
            "dagster/row_count": funnel.num_rows,
            "first_month": funnel["mois"][0].as_py() if funnel.num_rows else "",
            "last_month": latest.get("mois", ""),
            "republished": republished,
            **duckdb_table_metadata(
                warehouse.warehouse(), FUNNEL_TABLE, duckdb_descriptions(FUNNEL_TABLE)
            ),
            "preview": _funnel_preview(funnel),
        },
        check_results=checks,
    )


def _passed(results: list[dg.AssetCheckResult]) -> str:
    """``2/3 passed`` and the names of those that did not (``… (objectives_window_recent)``)."""
    failed = [r.check_name for r in results if not r.passed]
    shown = f"{len(results) - len(failed)}/{len(results)} passed"
    return f"{shown} (not: {', '.join(str(name) for name in failed)})" if failed else shown


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
        f"week. Default: today in {TIMEZONE}; on the bundled sample (LEADS_SOURCE=sample), the "
        "day of its last edit, since the sample never moves.",
    )

    def targets(self) -> dict[str, float]:
        """Weekly target per event column."""
        return {event: getattr(self, f"target_{event}") for event in EVENT_COLUMNS}

    def configured_as_of(self) -> date | None:
        """The configured reference day, or ``None`` when the default applies.

        Raises:
            ValueError: If ``as_of`` is not a ``YYYY-MM-DD`` date.
        """
        return date.fromisoformat(self.as_of) if self.as_of else None


@dataclass(frozen=True)
class ReferenceDay:
    """The day the objectives are judged against, and where it comes from (shown in the UI)."""

    day: date
    reason: str


def reference_day(
    configured: date | None, lake: DeltaLake, now: datetime | None = None
) -> ReferenceDay:
    """The day whose week is "in progress" for the objectives window and its recency check.

    In order: the run configuration's ``as_of``; when ``raw_notion_leads`` was filled by the
    bundled sample, the day (in ``Europe/Paris``) of its newest ``last_edited_time`` — the lake's
    watermark, i.e. the sample's own "now", so its last complete week is the one before its last
    edit rather than the wall clock's; otherwise (Notion) today in ``Europe/Paris``.

    Args:
        configured: ``as_of`` from the run configuration, if any.
        lake: The lake whose raw table tells which source filled it.
        now: The wall clock (tests); the current time when omitted.
    """
    if configured is not None:
        return ReferenceDay(configured, "as_of in the run configuration")
    if lake.commit_value(RAW_TABLE, "source") == SOURCE_SAMPLE:
        watermark = read_state(lake).watermark
        if watermark is not None:
            last_edit = watermark.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
            return ReferenceDay(
                watermark.astimezone(ZoneInfo(TIMEZONE)).date(),
                f"the bundled sample's last edit, {last_edit}: the sample never moves, so its "
                "weeks are judged against its own clock, not today",
            )
    today = (now or datetime.now(UTC)).astimezone(ZoneInfo(TIMEZONE)).date()
    return ReferenceDay(today, f"today in {TIMEZONE}")


@warehouse_asset(
    OBJECTIVES_ASSET,
    [WEEK.asset(EVENT_COUNTS)],
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
            description="The window ends with the last complete week before the reference day: "
            "no silence or stale counts behind the averages (warning otherwise). The reference "
            f"day is today in {TIMEZONE} with Notion; with the bundled sample "
            "(LEADS_SOURCE=sample), which never moves, it is the day of the sample's last edit "
            "(the newest last_edited_time in raw_notion_leads), so the sample is judged against "
            "its own last complete week. as_of in the run configuration overrides both.",
        ),
    ],
)
def weekly_objectives(
    context: dg.AssetExecutionContext,
    config: WeeklyObjectivesConfig,
    warehouse: WarehouseResource,
    lake: LakeResource,
) -> dg.MaterializeResult:
    """Are we on pace? Recent weekly activity against the team's weekly targets.

    For each funnel event (first contacts, replies, calls proposed, calls booked, follow-ups): the
    average number per week over the last complete weeks (4 by default; the week in progress is
    left out), the weekly target, the attainment (average / target) and whether the target is met.
    Targets and window come from the run configuration; the default targets (20 first contacts,
    12 replies, 9 calls proposed, 6 booked, 10 follow-ups a week) sit just above the bundled
    sample's median week. Weeks are complete relative to today in Europe/Paris, or, on the
    bundled sample, to the day of its last edit. Table ``analytics.weekly_objectives``.
    """
    if config.weeks < 1:
        raise dg.Failure(f"weeks must be at least 1, not {config.weeks}.")
    targets = config.targets()
    negative = {event: target for event, target in targets.items() if target < 0}
    if negative:
        raise dg.Failure(f"Weekly targets cannot be negative: {negative}.")
    try:
        configured = config.configured_as_of()
    except ValueError as error:
        raise dg.Failure(f"as_of={config.as_of!r} is not a YYYY-MM-DD date.") from error
    reference = reference_day(configured, lake.delta_lake())
    as_of = reference.day
    counts = _read_counts(warehouse, WEEK)
    window = objectives_window(counts, config.weeks, as_of)
    objectives = compute_objectives(window, targets)
    republished = warehouse.warehouse().publish_changed(OBJECTIVES_TABLE, objectives)
    rows = objectives.to_pylist()
    first = rows[0] if rows else {}
    display = [
        {
            "event": row["event"],
            "average / week": "∅" if row["average"] is None else f"{row['average']:.1f}",
            "target": f"{row['target']:g}",
            "attainment": _percent(row["attainment"]),
            "met": _mark(row["met"]),
            "weeks at target": f"{_weeks_at_target(window, row['event'], row['target'])}"
            f"/{window.num_rows}",
        }
        for row in rows
    ]
    met = sum(1 for row in rows if row["met"])
    window_text = (
        f"{first.get('first_week')} → {first.get('last_week')}" if first.get("weeks") else "(empty)"
    )
    checks = [
        check_objectives_match_counts(objectives, window),
        check_objectives_window_complete(window, config.weeks),
        check_objectives_window_recent(window, as_of, reference.reason),
    ]
    context.log.info(
        f"{OBJECTIVES_ASSET}: {met}/{len(rows)} objectives met over {first.get('weeks', 0)} "
        f"weeks ({window_text}, as of {as_of}), "
        f"{'republished' if republished else 'unchanged'}; checks: {_passed(checks)}."
    )
    return dg.MaterializeResult(
        metadata={
            "objectives_met": met,
            **{
                f"{EVENT_NAMES[row['event']]}_attainment_percent": percent(row["attainment"])
                for row in rows
                if row["attainment"] is not None
            },
            "dagster/row_count": objectives.num_rows,
            "as_of": str(as_of),
            "reference": reference.reason,
            "weeks_in_window": first.get("weeks", 0),
            "window": window_text,
            "republished": republished,
            **duckdb_table_metadata(
                warehouse.warehouse(), OBJECTIVES_TABLE, duckdb_descriptions(OBJECTIVES_TABLE)
            ),
            "preview": dg.MetadataValue.md(
                tabulate(display, headers="keys", tablefmt="github")
                + "\n\n"
                + _weeks_preview(window, targets)
            ),
        },
        check_results=checks,
    )


def _mark(met: bool | None) -> str:
    return {True: "✅", False: "❌"}.get(met, "∅")


def _weeks_at_target(window: pa.Table, event: str, target: float) -> int:
    return sum(1 for count in window[event].to_pylist() if count >= target)


def _weeks_preview(window: pa.Table, targets: dict[str, float]) -> str:
    """Each week of the window with its counts, ✅ where the count reached the weekly target."""
    if not window.num_rows:
        return "_(no complete week in the window)_"
    weeks = [
        {
            "week": row["semaine"],
            **{
                f"{EVENT_LABELS[event]} (≥ {targets[event]:g})": f"{row[event]} "
                f"{_mark(row[event] >= targets[event])}"
                for event in EVENT_COLUMNS
            },
        }
        for row in window.to_pylist()
    ]
    return "Weeks of the window:\n\n" + tabulate(weeks, headers="keys", tablefmt="github")


ASSETS = [monthly_funnel_conversion, weekly_objectives]
