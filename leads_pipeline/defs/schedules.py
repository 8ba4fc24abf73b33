"""Schedules that keep the assets fresh: incremental sync, nightly full refresh, weekly upkeep.

Every cron runs in ``Europe/Paris`` (the sales team's time zone, daylight saving included) and can
be overridden with an environment variable. Which schedules start running by default depends on
the source, so that the bundled sample run never reaches for the network:

* ``sync_leads_schedule`` and ``refresh_leads_schedule`` start RUNNING only when the source is
  Notion; with the sample source they are declared STOPPED (the sample never changes, and a user
  can still start them in the UI). Their descriptions, shown in the UI's list, say why and how
  to start them (:func:`~leads_pipeline.defs.automation.stopped_on_sample`).
* ``maintain_lake_schedule`` always starts RUNNING: it only touches the local lake.
"""

from __future__ import annotations

import dagster as dg

from leads_pipeline.defs.automation import stopped_on_sample
from leads_pipeline.defs.jobs import maintain_lake, refresh_leads, sync_leads
from leads_pipeline.settings import SOURCE_NOTION, TIMEZONE, Settings, variable_of

SYNC_CRON_VARIABLE = variable_of("sync_cron")
REFRESH_CRON_VARIABLE = variable_of("refresh_cron")
MAINTAIN_CRON_VARIABLE = variable_of("maintain_cron")


def build_schedules(settings: Settings) -> list[dg.ScheduleDefinition]:
    """The three schedules, with the crons of ``settings`` and default statuses for its source.

    Args:
        settings: The configuration (:func:`~leads_pipeline.settings.load_settings`), whose crons
            were validated when it was loaded.
    """
    from_notion = settings.source == SOURCE_NOTION
    network_status = (
        dg.DefaultScheduleStatus.RUNNING if from_notion else dg.DefaultScheduleStatus.STOPPED
    )
    sync_cron = settings.sync_cron
    refresh_cron = settings.refresh_cron
    maintain_cron = settings.maintain_cron
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
