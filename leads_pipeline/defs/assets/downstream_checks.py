"""The checks of the funnel and objectives assets: what their results guarantee.

Events in a month are not cohorts (see ``leads_pipeline.transform.funnel``), so the checks prove
what is guaranteed — numerators and denominators equal the source counts, ratios are NULL exactly
when the denominator is zero and equal numerator / denominator otherwise — not that ratios stay
below 1.
"""

from __future__ import annotations

import math
from datetime import date

import dagster as dg
import pyarrow as pa

from leads_pipeline.tables import EVENT_COLUMNS
from leads_pipeline.transform.funnel import FUNNEL_STEPS, last_complete_week_start

#: Check names (contract: they show in the UI and in alerts).
FUNNEL_MATCHES_COUNTS = "funnel_matches_monthly_counts"
FUNNEL_RATIOS_WELL_FORMED = "funnel_ratios_well_formed"
OBJECTIVES_MATCH_COUNTS = "objectives_match_weekly_counts"
OBJECTIVES_WINDOW_COMPLETE = "objectives_window_complete"
OBJECTIVES_WINDOW_RECENT = "objectives_window_recent"

_TOLERANCE = 1e-9


def check_funnel_matches_counts(funnel: pa.Table, counts: pa.Table) -> dg.AssetCheckResult:
    """Every month of the counts is in the funnel, in order, with its counts as terms."""
    problems = []
    funnel_rows, count_rows = funnel.to_pylist(), counts.to_pylist()
    if [r["mois"] for r in funnel_rows] != [r["mois"] for r in count_rows]:
        problems.append(
            f"months differ: funnel has {len(funnel_rows)}, monthly_event_counts has "
            f"{len(count_rows)}"
        )
    else:
        for row, source in zip(funnel_rows, count_rows, strict=True):
            for step, numerator, denominator in FUNNEL_STEPS:
                for term, event in (("numerator", numerator), ("denominator", denominator)):
                    if row[f"{step}_{term}"] != source[event]:
                        problems.append(
                            f"{row['mois']} {step}_{term}={row[f'{step}_{term}']} but "
                            f"{event}={source[event]}"
                        )
    return dg.AssetCheckResult(
        check_name=FUNNEL_MATCHES_COUNTS,
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR,
        description=None if not problems else "; ".join(problems[:10]),
        metadata={"months": len(funnel_rows), "mismatches": len(problems)},
    )


def check_funnel_ratios(funnel: pa.Table) -> dg.AssetCheckResult:
    """Terms are non-negative; a ratio is NULL iff its denominator is 0, else numerator/denominator."""
    problems = []
    for row in funnel.to_pylist():
        for step, _, _ in FUNNEL_STEPS:
            numerator = row[f"{step}_numerator"]
            denominator = row[f"{step}_denominator"]
            ratio = row[f"{step}_ratio"]
            where = f"{row['mois']} {step}"
            if numerator is None or denominator is None or numerator < 0 or denominator < 0:
                problems.append(f"{where}: terms {numerator}/{denominator} not both >= 0")
            elif denominator == 0:
                if ratio is not None:
                    problems.append(f"{where}: denominator 0 but ratio {ratio}")
            elif ratio is None or not math.isclose(
                ratio, numerator / denominator, rel_tol=_TOLERANCE
            ):
                problems.append(f"{where}: ratio {ratio} != {numerator}/{denominator}")
    return dg.AssetCheckResult(
        check_name=FUNNEL_RATIOS_WELL_FORMED,
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR,
        description=None if not problems else "; ".join(problems[:10]),
        metadata={"violations": len(problems)},
    )


def check_objectives_match_counts(objectives: pa.Table, window: pa.Table) -> dg.AssetCheckResult:
    """One row per event; averages, attainment and met flags agree with the window's counts."""
    problems = []
    rows = objectives.to_pylist()
    if [r["event"] for r in rows] != list(EVENT_COLUMNS):
        problems.append(f"events {[r['event'] for r in rows]} != {list(EVENT_COLUMNS)}")
    for row in rows:
        event, average, target = row["event"], row["average"], row["target"]
        values = window[event].to_pylist() if event in window.column_names else []
        expected = sum(values) / len(values) if values else None
        if row["weeks"] != len(values):
            problems.append(f"{event}: weeks={row['weeks']} but the window has {len(values)}")
        if (average is None) != (expected is None) or (
            expected is not None and not math.isclose(average, expected, rel_tol=_TOLERANCE)
        ):
            problems.append(f"{event}: average {average} != {expected} from weekly counts")
        if average is not None and average < 0:
            problems.append(f"{event}: negative average {average}")
        attainment = row["attainment"]
        if target == 0 or average is None:
            if attainment is not None:
                problems.append(f"{event}: attainment {attainment} without a ratio to compute")
        elif attainment is None or not math.isclose(attainment, average / target, rel_tol=1e-9):
            problems.append(f"{event}: attainment {attainment} != {average}/{target}")
        if average is not None and row["met"] != (average >= target):
            problems.append(f"{event}: met={row['met']} but average {average}, target {target}")
    return dg.AssetCheckResult(
        check_name=OBJECTIVES_MATCH_COUNTS,
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR,
        description=None if not problems else "; ".join(problems[:10]),
        metadata={"violations": len(problems)},
    )


def check_objectives_window_complete(window: pa.Table, weeks: int) -> dg.AssetCheckResult:
    """Warns when history is shorter than the configured window (averages over fewer weeks)."""
    passed = window.num_rows == weeks
    return dg.AssetCheckResult(
        check_name=OBJECTIVES_WINDOW_COMPLETE,
        passed=passed,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"{weeks} complete week(s) averaged: {_window_label(window)}."
        if passed
        else f"Only {window.num_rows} complete week(s) of history for a {weeks}-week window.",
        metadata={"weeks_configured": weeks, "weeks_in_window": window.num_rows},
    )


def _window_label(window: pa.Table) -> str:
    if not window.num_rows:
        return "(none)"
    return f"{window['semaine'][0].as_py()} → {window['semaine'][-1].as_py()}"


def check_objectives_window_recent(
    window: pa.Table, as_of: date, reference: str = "the reference day"
) -> dg.AssetCheckResult:
    """Warns when the window does not end with the last complete week before ``as_of``.

    Args:
        window: The window of weekly counts (:func:`objectives_window`).
        as_of: The reference day: today in the business time zone with Notion; for the bundled
            sample, the day of its last edit (its clock stops there; see
            ``leads_pipeline.defs.assets.downstream.reference_day``).
        reference: Where ``as_of`` comes from, in words, quoted in the description.
    """
    last_complete = last_complete_week_start(as_of)
    window_last = window["week_start"][-1].as_py() if window.num_rows else None
    passed = window_last == last_complete
    lag = None if window_last is None else (last_complete - window_last).days // 7
    if passed:
        description = (
            f"The window ends with {window['semaine'][-1].as_py()}, the last complete week "
            f"before {as_of} ({reference})."
        )
    elif window_last is None:
        description = f"No complete week of counts before {as_of} ({reference})."
    else:
        description = (
            f"The window ends {lag} week(s) before the last complete week ({window_last} vs "
            f"{last_complete}, judged against {as_of}: {reference}): no events since, or the "
            "counts are stale."
        )
    return dg.AssetCheckResult(
        check_name=OBJECTIVES_WINDOW_RECENT,
        passed=passed,
        severity=dg.AssetCheckSeverity.WARN,
        description=description,
        metadata={
            "reference_day": str(as_of),
            "reference": reference,
            "last_complete_week_start": str(last_complete),
            "window_last_week_start": str(window_last) if window_last else "",
            "weeks_behind": -1 if lag is None else lag,
        },
    )
