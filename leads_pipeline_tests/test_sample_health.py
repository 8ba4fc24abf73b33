"""A first run on the bundled sample looks healthy (issue 14, "A sample run that looks healthy").

The project's own ``Definitions``, loaded as ``dagster dev`` loads them with no ``NOTION_*``
variable (so on the sample) and pointed at a temporary lake and warehouse, run ``sync_leads``:
every asset and every check of the definitions runs, and each check passes or is a warning that
says it is informational. The objectives are judged against the sample's own clock (its last
edit), with default targets some of its weeks reach and others miss; expectations are computed
here from the generated pages. Stopped schedules and sensors say why and how to start them.
"""

from __future__ import annotations

import collections
import datetime as dt
import importlib
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from leads_pipeline.sources.sample_data import generate_pages

#: The documented default weekly targets (README), per event column.
TARGETS = {
    "date_prise_contact": 20,
    "date_reponse_prospect": 12,
    "date_appel_propose": 9,
    "date_appel_booke": 6,
    "date_relance": 10,
}
#: The Notion date property behind each event column (DESIGN.md's default map).
PROPERTIES = {
    "date_prise_contact": "Date de prise de contact",
    "date_reponse_prospect": "Date de réponse du prospect",
    "date_appel_propose": "Date d'appel proposé",
    "date_appel_booke": "Date d'appel booké",
    "date_relance": "Date de relance",
}
WINDOW_WEEKS = 4
PARIS = ZoneInfo("Europe/Paris")


def monday(day: dt.date) -> dt.date:
    return day - dt.timedelta(days=day.weekday())


def iso_week(day: dt.date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def weekly_counts(pages: list[dict]) -> dict[str, collections.Counter]:
    """Per event column, the number of dates in each week (keyed by Monday), from the page JSON."""
    counts = {column: collections.Counter() for column in PROPERTIES}
    for page in pages:
        for column, prop in PROPERTIES.items():
            value = page["properties"][prop]["date"]
            if value:  # the date as written: the start's calendar date, never shifted to UTC
                counts[column][monday(dt.date.fromisoformat(value["start"][:10]))] += 1
    return counts


def sample_reference_day(pages: list[dict]) -> dt.date:
    """The sample's "today": the day of its newest edit, in Paris."""
    newest = max(dt.datetime.fromisoformat(page["last_edited_time"]) for page in pages)
    return newest.astimezone(PARIS).date()


@pytest.fixture
def sample_defs(monkeypatch, tmp_path) -> dg.Definitions:
    """``leads_pipeline.definitions:defs`` as loaded with a temporary lake and warehouse."""
    monkeypatch.setenv("LEADS_LAKE_URI", str(tmp_path / "lake"))
    monkeypatch.setenv("LEADS_WAREHOUSE_PATH", str(tmp_path / "warehouse.duckdb"))
    import leads_pipeline.definitions as module

    defs = importlib.reload(module).defs
    assert defs.resources["source"].source_name == "sample"
    return defs


def unhealthy(evaluation: dg.AssetCheckEvaluation) -> bool:
    """Neither passed nor an informational warning."""
    if evaluation.passed:
        return False
    informational = "informational" in (evaluation.description or "").lower()
    return not (evaluation.severity == dg.AssetCheckSeverity.WARN and informational)


def check_report(evaluations) -> str:
    return "\n".join(
        f"{e.asset_key.to_user_string()}:{e.check_name} passed={e.passed} "
        f"severity={e.severity.value}: {e.description}"
        for e in evaluations
    )


def objectives_metadata(result: dg.ExecuteInProcessResult) -> dict:
    [event] = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == "weekly_objectives"
    ]
    return {k: v.value for k, v in event.event_specific_data.materialization.metadata.items()}


def preview_rows(markdown: str) -> dict[str, list[str]]:
    """The objectives preview's first table: event → its cells."""
    table = markdown.split("\n\n")[0].splitlines()
    header = [cell.strip() for cell in table[0].strip("|").split("|")]
    rows = {}
    for line in table[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(header, cells, strict=True))
    return rows


def test_a_sample_run_of_the_definitions_is_healthy(sample_defs):
    graph = sample_defs.resolve_asset_graph()
    with dg.instance_for_test() as instance:
        results = [
            sample_defs.resolve_job_def("sync_leads").execute_in_process(instance=instance)
            for _ in range(2)  # the first run, and the next one that finds nothing new
        ]
    for result in results:
        assert result.success
        materialized = {e.asset_key for e in result.get_asset_materialization_events()}
        assert materialized == set(graph.get_all_asset_keys()), "sync_leads skipped an asset"
        evaluations = result.get_asset_check_evaluations()
        evaluated = {e.asset_check_key for e in evaluations}
        assert evaluated == set(graph.asset_check_keys), "a check of the definitions did not run"
        bad = [e for e in evaluations if unhealthy(e)]
        assert not bad, "checks neither passed nor informational:\n" + check_report(bad)

    first = results[0]
    checks = {e.check_name: e for e in first.get_asset_check_evaluations()}
    pages = generate_pages(2000, 42)
    reference = sample_reference_day(pages)
    last_complete = monday(reference) - dt.timedelta(days=7)
    window = [last_complete - dt.timedelta(weeks=n) for n in reversed(range(WINDOW_WEEKS))]
    labels = [iso_week(week) for week in window]

    recent = checks["objectives_window_recent"]
    assert recent.passed
    assert recent.metadata["reference_day"].value == str(reference)
    assert recent.metadata["last_complete_week_start"].value == str(last_complete)
    assert labels[-1] in recent.description and "sample" in recent.description
    assert checks["objectives_window_complete"].passed

    counts = weekly_counts(pages)
    metadata = objectives_metadata(first)
    assert metadata["as_of"] == str(reference)
    assert metadata["window"] == f"{labels[0]} → {labels[-1]}"
    previewed = preview_rows(metadata["preview"])
    expected_met = {}
    for event, target in TARGETS.items():
        in_window = [counts[event][week] for week in window]
        average = sum(in_window) / WINDOW_WEEKS
        expected_met[event] = average >= target
        row = previewed[event]
        assert row["average / week"] == f"{average:.1f}", event
        assert row["target"] == f"{target:g}", event
        assert row["met"] == ("✅" if expected_met[event] else "❌"), event
        reached = sum(count >= target for count in in_window)
        assert row["weeks at target"] == f"{reached}/{WINDOW_WEEKS}", event
    assert metadata["objectives_met"] == sum(expected_met.values())
    # The defaults mean something on the sample: some objectives met, some missed.
    assert 0 < sum(expected_met.values()) < len(TARGETS), expected_met


def test_default_targets_are_reached_in_some_sample_weeks_and_missed_in_others():
    pages = generate_pages(2000, 42)
    counts = weekly_counts(pages)
    # The sample's complete weeks of steady activity: from the 5th week of first contacts (replies
    # and calls follow them) to the last complete week before its last edit.
    start = monday(min(week for week in counts["date_prise_contact"])) + dt.timedelta(weeks=4)
    end = monday(sample_reference_day(pages)) - dt.timedelta(days=7)
    weeks = [start + dt.timedelta(weeks=n) for n in range((end - start).days // 7 + 1)]
    assert len(weeks) > 90
    for event, target in TARGETS.items():
        share = sum(counts[event][week] >= target for week in weeks) / len(weeks)
        assert 0.3 <= share <= 0.7, (event, target, share)


def test_stopped_schedules_and_sensors_say_why_and_how_to_start_them(sample_defs):
    stopped_kinds = (dg.DefaultScheduleStatus.STOPPED, dg.DefaultSensorStatus.STOPPED)
    automation = [*sample_defs.schedules, *sample_defs.sensors]
    stopped = {a.name: a.description for a in automation if a.default_status in stopped_kinds}
    running = {a.name: a.description for a in automation if a.default_status not in stopped_kinds}
    assert set(stopped) == {
        "sync_leads_schedule",
        "refresh_leads_schedule",
        "notion_changes_sensor",
    }
    for name, description in stopped.items():
        assert description.startswith("Stopped by default because the source is the bundled "), name
        assert "LEADS_SOURCE=sample" in description, name
        assert "Start it in the UI" in description, name
        assert "NOTION_TOKEN" in description and "NOTION_DATABASE_ID" in description, name
        assert "sync_leads" in description or "refresh_leads" in description, name
    assert set(running) == {"maintain_lake_schedule", "leads_automation_sensor"}
    for name, description in running.items():
        assert description.startswith("Always running by default"), name
        assert "Stopped" not in description, name


@pytest.mark.parametrize(
    ("passed", "severity", "description", "healthy"),
    [
        (True, dg.AssetCheckSeverity.ERROR, None, True),
        (False, dg.AssetCheckSeverity.WARN, "Informational: 3 leads have no email.", True),
        (False, dg.AssetCheckSeverity.WARN, "The window ends 44 week(s) before last week.", False),
        (False, dg.AssetCheckSeverity.ERROR, "Informational, but an error.", False),
    ],
)
def test_the_health_rule_accepts_only_passes_and_informational_warnings(
    passed, severity, description, healthy
):
    evaluation = dg.AssetCheckEvaluation(
        asset_key=dg.AssetKey("weekly_objectives"),
        check_name="probe",
        passed=passed,
        severity=severity,
        description=description,
    )
    assert unhealthy(evaluation) is not healthy
