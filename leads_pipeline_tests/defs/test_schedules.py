"""Schedules: names, crons in Paris time, environment overrides and default statuses."""

import datetime as dt
import importlib
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from leads_pipeline import definitions
from leads_pipeline.definitions import defs
from leads_pipeline.defs.schedules import build_schedules
from leads_pipeline.settings import (
    DEFAULT_MAINTAIN_CRON,
    DEFAULT_REFRESH_CRON,
    DEFAULT_SYNC_CRON,
    TIMEZONE,
    ConfigurationError,
    load_settings,
)

NOTION_ENV = {"LEADS_SOURCE": "notion", "NOTION_TOKEN": "secret", "NOTION_DATABASE_ID": "db"}
PARIS = ZoneInfo("Europe/Paris")


def by_name(schedules) -> dict[str, dg.ScheduleDefinition]:
    return {s.name: s for s in schedules}


def schedules_for(env: dict[str, str]) -> list[dg.ScheduleDefinition]:
    """The schedules the definitions build in environment ``env``."""
    return build_schedules(load_settings(env))


def test_definitions_hold_the_three_schedules_in_paris_time():
    schedules = {s.name: s for s in defs.schedules}
    assert set(schedules) == {
        "sync_leads_schedule",
        "refresh_leads_schedule",
        "maintain_lake_schedule",
    }
    assert {s.execution_timezone for s in schedules.values()} == {TIMEZONE}
    assert schedules["sync_leads_schedule"].job_name == "sync_leads"
    assert schedules["refresh_leads_schedule"].job_name == "refresh_leads"
    assert schedules["maintain_lake_schedule"].job_name == "maintain_lake"
    dg.Definitions.validate_loadable(defs)


def test_default_crons():
    schedules = by_name(schedules_for({}))
    assert schedules["sync_leads_schedule"].cron_schedule == DEFAULT_SYNC_CRON == "*/15 * * * *"
    assert schedules["refresh_leads_schedule"].cron_schedule == DEFAULT_REFRESH_CRON
    assert schedules["maintain_lake_schedule"].cron_schedule == DEFAULT_MAINTAIN_CRON


def test_sample_source_never_schedules_network_runs_by_default():
    schedules = by_name(schedules_for({}))
    assert schedules["sync_leads_schedule"].default_status == dg.DefaultScheduleStatus.STOPPED
    assert schedules["refresh_leads_schedule"].default_status == dg.DefaultScheduleStatus.STOPPED
    assert schedules["maintain_lake_schedule"].default_status == dg.DefaultScheduleStatus.RUNNING


def test_notion_source_runs_every_schedule_by_default():
    schedules = schedules_for(NOTION_ENV)
    assert {s.default_status for s in schedules} == {dg.DefaultScheduleStatus.RUNNING}


def test_stopped_schedules_say_why_and_how_to_start_them():
    schedules = by_name(schedules_for({}))
    for name, job in (
        ("sync_leads_schedule", "sync_leads"),
        ("refresh_leads_schedule", "refresh_leads"),
    ):
        description = schedules[name].description
        # The reason comes first: the UI's list shows the start of the description.
        assert description.startswith("Stopped by default because the source is the bundled sample")
        assert "LEADS_SOURCE=sample" in description
        assert "Start it in the UI" in description
        assert "NOTION_TOKEN" in description and "NOTION_DATABASE_ID" in description
        # … and what it does once started.
        assert f"Runs {job} on cron '{schedules[name].cron_schedule}'" in description
    maintain = schedules["maintain_lake_schedule"].description
    assert "Stopped" not in maintain
    assert maintain.startswith("Always running by default")
    assert "Runs maintain_lake on cron '0 4 * * 0'" in maintain


def test_running_schedules_say_what_they_do_without_a_stop_note():
    schedules = by_name(schedules_for({**NOTION_ENV, "LEADS_SYNC_CRON": "*/5 * * * *"}))
    for schedule in schedules.values():
        assert "Stopped" not in schedule.description
        assert "bundled sample" not in schedule.description
        assert f"on cron '{schedule.cron_schedule}' (Europe/Paris" in schedule.description
    assert schedules["sync_leads_schedule"].description.startswith(
        "Running by default because the source is Notion."
    )
    assert "*/5 * * * *" in schedules["sync_leads_schedule"].description
    assert "deleted pages" in schedules["refresh_leads_schedule"].description


def test_crons_are_overridable_by_environment():
    schedules = by_name(
        schedules_for(
            {
                "LEADS_SYNC_CRON": "*/5 * * * *",
                "LEADS_REFRESH_CRON": " 0 3 * * * ",
                "LEADS_MAINTAIN_CRON": "0 5 * * 6",
            }
        )
    )
    assert schedules["sync_leads_schedule"].cron_schedule == "*/5 * * * *"
    assert schedules["refresh_leads_schedule"].cron_schedule == "0 3 * * *"
    assert schedules["maintain_lake_schedule"].cron_schedule == "0 5 * * 6"


@pytest.mark.parametrize(
    "variable", ["LEADS_SYNC_CRON", "LEADS_REFRESH_CRON", "LEADS_MAINTAIN_CRON"]
)
@pytest.mark.parametrize("value", ["every minute", "61 * * * *", "* * *"])
def test_an_invalid_cron_names_its_variable(variable, value):
    with pytest.raises(ConfigurationError, match=variable):
        schedules_for({variable: value})


def test_the_definitions_take_their_crons_from_the_environment(monkeypatch):
    monkeypatch.setenv("LEADS_SYNC_CRON", "*/5 * * * *")
    monkeypatch.setenv("LEADS_MAINTAIN_CRON", "0 5 * * 6")
    defs = importlib.reload(definitions).defs
    crons = {s.name: s.cron_schedule for s in defs.schedules}
    assert crons == {
        "sync_leads_schedule": "*/5 * * * *",
        "refresh_leads_schedule": DEFAULT_REFRESH_CRON,
        "maintain_lake_schedule": "0 5 * * 6",
    }
    monkeypatch.setenv("LEADS_REFRESH_CRON", "every night")
    with pytest.raises(ConfigurationError, match="LEADS_REFRESH_CRON='every night'"):
        importlib.reload(definitions)
    for name in ("LEADS_SYNC_CRON", "LEADS_MAINTAIN_CRON", "LEADS_REFRESH_CRON"):
        monkeypatch.delenv(name)
    importlib.reload(definitions)  # as the other tests expect it


def _ticks(schedule: dg.ScheduleDefinition, start: dt.datetime, count: int) -> list[dt.datetime]:
    # The iterator the scheduler daemon itself uses to place ticks (no public equivalent).
    from dagster._utils.schedules import cron_string_iterator

    ticks = cron_string_iterator(
        start.timestamp(), schedule.cron_schedule, schedule.execution_timezone
    )
    return [next(ticks) for _ in range(count)]


def test_ticks_follow_paris_wall_clock_across_daylight_saving():
    schedules = by_name(schedules_for({}))
    # The night of 2025-03-30 loses an hour in Paris: the refresh stays at 02:30 local time… or
    # the first valid instant after it, never drifting to UTC.
    refresh = _ticks(
        schedules["refresh_leads_schedule"], dt.datetime(2025, 3, 28, 12, tzinfo=PARIS), 4
    )
    assert [t.astimezone(PARIS).strftime("%m-%d %H:%M") for t in refresh] == [
        "03-29 02:30",
        "03-30 03:00",
        "03-31 02:30",
        "04-01 02:30",
    ]
    weekly = _ticks(schedules["maintain_lake_schedule"], dt.datetime(2025, 6, 2, tzinfo=PARIS), 2)
    assert [t.astimezone(PARIS).strftime("%a %H:%M") for t in weekly] == ["Sun 04:00"] * 2
    assert weekly[1] - weekly[0] == dt.timedelta(days=7)
    sync = _ticks(schedules["sync_leads_schedule"], dt.datetime(2025, 6, 2, 9, 1, tzinfo=PARIS), 3)
    assert [t.astimezone(PARIS).strftime("%H:%M") for t in sync] == ["09:15", "09:30", "09:45"]


@pytest.mark.parametrize(
    ("name", "job"),
    [
        ("sync_leads_schedule", "sync_leads"),
        ("refresh_leads_schedule", "refresh_leads"),
        ("maintain_lake_schedule", "maintain_lake"),
    ],
)
def test_each_schedule_evaluates_to_a_run_of_its_job(name, job):
    schedule = by_name(schedules_for(NOTION_ENV))[name]
    # The context is entered and left inside the instance's block: one left to the garbage
    # collector would later restore a closed instance as Dagster's current one.
    paris_night = dt.datetime(2025, 6, 2, 2, 30, tzinfo=PARIS)
    with (
        dg.instance_for_test() as instance,
        dg.build_schedule_context(
            instance=instance, scheduled_execution_time=paris_night
        ) as context,
    ):
        data = schedule.evaluate_tick(context)
    assert data.skip_message is None
    assert len(data.run_requests) == 1
    assert schedule.job_name == job
    # The full listing comes from the job's own config, not from the schedule.
    assert data.run_requests[0].run_config == {}
    assert defs.resolve_job_def(job).name == job
