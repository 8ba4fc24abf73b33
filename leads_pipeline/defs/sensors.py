"""Sensors: react to changes in Notion, and run declarative automation.

``notion_changes_sensor`` asks the source one cheap question per tick (the newest edit after the
lake's watermark, one page of one result) and requests a ``sync_leads`` run only when the answer
is newer than what the lake holds. Its cursor is the watermark read from the lake on each tick,
i.e. what successful runs actually ingested; requesting a run never moves it, so a run that fails
leaves the change to be noticed again (the ``run_key`` keeps one run per edit time).
"""

from datetime import datetime

import dagster as dg
import httpx
import pyarrow.compute as pc

from leads_pipeline.defs.automation import leads_automation_sensor, stopped_on_sample
from leads_pipeline.defs.jobs import sync_leads
from leads_pipeline.defs.resources import LakeResource
from leads_pipeline.settings import SOURCE_NOTION, Settings, variable_of
from leads_pipeline.sources.base import LeadsSource, ListingStats
from leads_pipeline.sources.notion_http import NotionRetriesExhaustedError
from leads_pipeline.tables import RAW_TABLE

INTERVAL_VARIABLE = variable_of("sensor_interval_seconds")


#: Errors meaning "the source cannot be reached right now, ask again later": the tick is skipped
#: with the reason. Anything else (a refused token, a misconfiguration) fails the tick visibly.
TRANSIENT_SOURCE_ERRORS: tuple[type[BaseException], ...] = (
    NotionRetriesExhaustedError,
    httpx.TransportError,
)

#: Retry budget of the sensor's one request: a tick must end well within Dagster's sensor timeout
#: (60 s), so it gives up early and skips instead of retrying for as long as a sync would.
PROBE_RETRY_SECONDS = 15.0


def _probe(source: LeadsSource) -> LeadsSource:
    """The source with a short retry budget, when it has one (the Notion source)."""
    budget = getattr(source, "max_retry_seconds", None)
    if budget is None or budget <= PROBE_RETRY_SECONDS:
        return source
    return source.model_copy(update={"max_retry_seconds": PROBE_RETRY_SECONDS})


def lake_watermark(lake: LakeResource) -> datetime | None:
    """The newest ``last_edited_time`` in ``raw_notion_leads``: what syncs have ingested so far."""
    table = lake.delta_lake().read(RAW_TABLE, columns=["last_edited_time"])
    if table is None or table.num_rows == 0:
        return None
    return pc.max(table["last_edited_time"]).as_py()


def build_notion_changes_sensor(settings: Settings) -> dg.SensorDefinition:
    """The sensor, RUNNING by default only when the source is Notion (the sample never changes).

    Its description says so: on the sample it starts with why it is stopped and how to start it.

    Args:
        settings: The configuration: its source and ``sensor_interval_seconds``.
    """
    from_notion = settings.source == SOURCE_NOTION
    interval = settings.sensor_interval_seconds

    @dg.sensor(
        name="notion_changes_sensor",
        job=sync_leads,
        minimum_interval_seconds=interval,
        default_status=(
            dg.DefaultSensorStatus.RUNNING if from_notion else dg.DefaultSensorStatus.STOPPED
        ),
        description=stopped_on_sample(
            from_notion,
            f"Asks Notion every {interval} s (${INTERVAL_VARIABLE}) for the newest edit after "
            "the lake's watermark (one request of one page) and runs sync_leads only when there "
            "is one.",
        ),
    )
    def notion_changes_sensor(
        context: dg.SensorEvaluationContext, source: LeadsSource, lake: LakeResource
    ):
        watermark = lake_watermark(lake)
        cursor = watermark.isoformat() if watermark else None
        if cursor != context.cursor:
            context.update_cursor(cursor)
        stats = ListingStats()
        try:
            newest = _probe(source).latest_edit(after=watermark, stats=stats)
        except TRANSIENT_SOURCE_ERRORS as error:
            return dg.SkipReason(
                f"{source.source_name} could not be reached ({type(error).__name__}: {error}); "
                "asking again on the next tick."
            )
        since = f"after {cursor}" if cursor else "(the lake is empty)"
        if newest is None or (watermark is not None and newest <= watermark):
            return dg.SkipReason(f"No page edited in {source.source_name} {since}.")
        context.log.info(f"Newest edit in {source.source_name}: {newest.isoformat()} {since}.")
        return dg.RunRequest(
            run_key=f"{source.identity()}@{newest.isoformat()}",
            tags={"leads_pipeline/trigger": "notion_changes_sensor"},
        )

    return notion_changes_sensor


def build_sensors(settings: Settings) -> list[dg.SensorDefinition]:
    """Every sensor: ``notion_changes_sensor`` for ``settings``, and declarative automation's."""
    return [build_notion_changes_sensor(settings), leads_automation_sensor]
