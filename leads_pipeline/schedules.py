"""Schedules that keep the assets fresh: incremental sync, nightly full refresh, weekly upkeep.

Every cron runs in ``Europe/Paris`` (the sales team's time zone, daylight saving included) and can
be overridden with an environment variable. Which schedules start running by default depends on
the source, so that the bundled sample run never reaches for the network:

* ``sync_leads_schedule`` and ``refresh_leads_schedule`` start RUNNING only when the source is
  Notion; with the sample source they are declared STOPPED (the sample never changes, and a user
  can still start them in the UI). Their descriptions, shown in the UI's list, say why and how
  to start them (:func:`~leads_pipeline.automation.stopped_on_sample`).
* ``maintain_lake_schedule`` always starts RUNNING: it only touches the local lake.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import dagster as dg

from leads_pipeline.automation import stopped_on_sample
from leads_pipeline.jobs import maintain_lake, refresh_leads, sync_leads
from leads_pipeline.settings import SOURCE_NOTION, ConfigurationError, load_settings

TIMEZONE = "Europe/Paris"

SYNC_CRON_VARIABLE = "LEADS_SYNC_CRON"
REFRESH_CRON_VARIABLE = "LEADS_REFRESH_CRON"
MAINTAIN_CRON_VARIABLE = "LEADS_MAINTAIN_CRON"

#: Every 15 minutes.
DEFAULT_SYNC_CRON = "*/15 * * * *"
#: Every night at 02:30, out of office hours and away from the daylight-saving switch at 02:00.
DEFAULT_REFRESH_CRON = "30 2 * * *"
#: Sundays at 04:00, after the nightly refresh.
DEFAULT_MAINTAIN_CRON = "0 4 * * 0"


def cron_from_env(variable: str, default: str, env: Mapping[str, str] | None = None) -> str:
    """The cron expression in ``variable``, or ``default`` when it is unset or blank.

    Args:
        variable: Name of the environment variable.
        default: Cron expression used when the variable is not set.
        env: Environment to read; ``os.environ`` when omitted.

    Raises:
        ConfigurationError: If the variable holds something that is not a cron expression.
    """
    env = os.environ if env is None else env
    value = (env.get(variable) or "").strip()
    if not value:
        return default
    try:
        dg.ScheduleDefinition(name="cron_probe", cron_schedule=value, job_name="cron_probe")
    except dg.DagsterInvalidDefinitionError as error:
        raise ConfigurationError(
            f"{variable}={value!r} is not a valid cron expression (five fields, e.g. "
            f"{default!r}). Fix it or unset {variable} to use the default."
        ) from error
    return value


def build_schedules(env: Mapping[str, str] | None = None) -> list[dg.ScheduleDefinition]:
    """The three schedules, with crons and default statuses resolved from ``env``.

    Args:
        env: Environment to read; ``os.environ`` when omitted.
    """
    env = os.environ if env is None else env
    from_notion = load_settings(env).source == SOURCE_NOTION
    network_status = (
        dg.DefaultScheduleStatus.RUNNING if from_notion else dg.DefaultScheduleStatus.STOPPED
    )
    sync_cron = cron_from_env(SYNC_CRON_VARIABLE, DEFAULT_SYNC_CRON, env)
    refresh_cron = cron_from_env(REFRESH_CRON_VARIABLE, DEFAULT_REFRESH_CRON, env)
    maintain_cron = cron_from_env(MAINTAIN_CRON_VARIABLE, DEFAULT_MAINTAIN_CRON, env)
    return [
        dg.ScheduleDefinition(
            name="sync_leads_schedule",
            job=sync_leads,
            cron_schedule=sync_cron,
            execution_timezone=TIMEZONE,
            default_status=network_status,
            description=stopped_on_sample(
                from_notion,
                f"Runs sync_leads on cron '{sync_cron}' ({TIMEZONE}; ${SYNC_CRON_VARIABLE}): "
                "fetches the pages edited in Notion since the last sync, then refreshes "
                "everything downstream.",
            ),
        ),
        dg.ScheduleDefinition(
            name="refresh_leads_schedule",
            job=refresh_leads,
            cron_schedule=refresh_cron,
            execution_timezone=TIMEZONE,
            default_status=network_status,
            description=stopped_on_sample(
                from_notion,
                f"Runs refresh_leads on cron '{refresh_cron}' ({TIMEZONE}; "
                f"${REFRESH_CRON_VARIABLE}): lists every page of Notion, which catches deleted "
                "pages and values changed without an edit, then refreshes everything downstream.",
            ),
        ),
        dg.ScheduleDefinition(
            name="maintain_lake_schedule",
            job=maintain_lake,
            cron_schedule=maintain_cron,
            execution_timezone=TIMEZONE,
            default_status=dg.DefaultScheduleStatus.RUNNING,
            description="Always running by default: it only touches the local lake. Runs "
            f"maintain_lake on cron '{maintain_cron}' ({TIMEZONE}; ${MAINTAIN_CRON_VARIABLE}): "
            "compacts the small Delta files syncs leave behind and vacuums files older than the "
            "retention (7 days by default).",
        ),
    ]


SCHEDULES = build_schedules()
