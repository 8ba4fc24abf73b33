"""notion_changes_sensor against the sample source and the fake Notion server."""

import datetime as dt

import dagster as dg
import pytest

from leads_pipeline.defs.assets import analytics, ingestion
from leads_pipeline.defs.resources import LakeResource
from leads_pipeline.defs.sensors import (
    PROBE_RETRY_SECONDS,
    build_notion_changes_sensor,
    build_sensors,
    lake_watermark,
)
from leads_pipeline.settings import (
    DEFAULT_SENSOR_INTERVAL_SECONDS,
    ConfigurationError,
    Settings,
    load_settings,
)
from leads_pipeline.sources.notion_http import NotionAccessError
from leads_pipeline.sources.sample import SampleLeadsSource
from leads_pipeline.tables import RAW_TABLE
from leads_pipeline_tests.fake_notion import Fault
from leads_pipeline_tests.notion_fixtures import notion_source

INGESTION = [*ingestion.ASSETS, *analytics.ASSETS]


def sensor_for(env: dict[str, str]) -> dg.SensorDefinition:
    """The sensor the definitions build in environment ``env``."""
    return build_notion_changes_sensor(load_settings(env))


#: The sensor with the default settings (the sample source, a 60 s interval).
notion_changes_sensor = build_notion_changes_sensor(Settings())


def tick(instance, resources: dict, cursor: str | None = None):
    # The context is closed here, inside the instance's block (see test_schedules.py).
    with dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"source": resources["source"], "lake": resources["lake"]},
    ) as context:
        return notion_changes_sensor.evaluate_tick(context)


def sync(resources: dict, instance) -> None:
    assert dg.materialize(INGESTION, resources=resources, instance=instance).success


# -- definition -------------------------------------------------------------------------------


def test_sensor_targets_sync_leads_and_runs_by_default_only_for_notion():
    assert notion_changes_sensor.job_name == "sync_leads"
    assert sensor_for({}).default_status == dg.DefaultSensorStatus.STOPPED
    notion = sensor_for({"LEADS_SOURCE": "notion", "NOTION_TOKEN": "t", "NOTION_DATABASE_ID": "d"})
    assert notion.default_status == dg.DefaultSensorStatus.RUNNING
    assert notion.minimum_interval_seconds == DEFAULT_SENSOR_INTERVAL_SECONDS == 60
    assert [sensor.name for sensor in build_sensors(Settings())] == [
        "notion_changes_sensor",
        "leads_automation_sensor",
    ]


def test_sensor_description_says_why_it_is_stopped_and_what_it_does():
    stopped = sensor_for({"LEADS_SENSOR_INTERVAL_SECONDS": "90"}).description
    assert stopped.startswith("Stopped by default because the source is the bundled sample")
    assert "LEADS_SOURCE=sample" in stopped and "Start it in the UI" in stopped
    assert "NOTION_TOKEN" in stopped and "NOTION_DATABASE_ID" in stopped
    assert "every 90 s" in stopped and "runs sync_leads only when" in stopped
    running = sensor_for(
        {"LEADS_SOURCE": "notion", "NOTION_TOKEN": "t", "NOTION_DATABASE_ID": "d"}
    ).description
    assert running.startswith("Running by default because the source is Notion.")
    assert "Stopped" not in running and "every 60 s" in running


def test_interval_is_configurable_and_validated():
    assert load_settings({"LEADS_SENSOR_INTERVAL_SECONDS": "5"}).sensor_interval_seconds == 5
    assert sensor_for({"LEADS_SENSOR_INTERVAL_SECONDS": "7"}).minimum_interval_seconds == 7
    for bad in ("0", "-3", "soon"):
        with pytest.raises(ConfigurationError, match="LEADS_SENSOR_INTERVAL_SECONDS"):
            load_settings({"LEADS_SENSOR_INTERVAL_SECONDS": bad})


# -- sample source (no network) ---------------------------------------------------------------


def test_sample_empty_lake_requests_a_sync_then_skips_once_synced(sample_resources):
    with dg.instance_for_test() as instance:
        first = tick(instance, sample_resources)
        assert len(first.run_requests) == 1
        request = first.run_requests[0]
        assert request.run_key.startswith("sample:")
        assert first.cursor is None  # nothing ingested yet: the request does not move it

        again = tick(instance, sample_resources, cursor=first.cursor)
        assert [r.run_key for r in again.run_requests] == [request.run_key]  # one run per edit

        sync(sample_resources, instance)
        watermark = lake_watermark(sample_resources["lake"])
        done = tick(instance, sample_resources, cursor=first.cursor)
        assert done.run_requests == []
        assert "No page edited in sample after" in done.skip_message
        assert done.cursor == watermark.isoformat()
        assert request.run_key.endswith(watermark.isoformat())


class _UnreachableSample(SampleLeadsSource):
    """The sample source whose probe fails as a dropped connection would."""

    def latest_edit(self, *, after, stats):
        import httpx

        raise httpx.ConnectError("connection refused")


def test_transient_error_skips_the_tick_with_its_reason(lake_uri):
    resources = {"source": _UnreachableSample(), "lake": LakeResource(uri=lake_uri)}
    with dg.instance_for_test() as instance:
        data = tick(instance, resources)
    assert data.run_requests == []
    assert "could not be reached" in data.skip_message
    assert "connection refused" in data.skip_message


# -- fake Notion server -----------------------------------------------------------------------


@pytest.fixture
def seeded(notion_resources, notion_env):
    """The fake server with 60 sample pages and resources reading it."""
    notion_env.seed_sample(60)
    return notion_resources, notion_env


def test_notion_one_cheap_request_per_tick_and_cursor_follows_ingested_data(seeded):
    resources, fake = seeded
    with dg.instance_for_test() as instance:
        fake.reset_counts()
        first = tick(instance, resources)
        assert len(first.run_requests) == 1
        assert fake.counts["query"] == 1  # one query (page_size 1), plus discovery of the source
        assert first.cursor is None

        sync(resources, instance)
        watermark = lake_watermark(resources["lake"])
        fake.reset_counts()
        quiet = tick(instance, resources, cursor=first.cursor)
        assert quiet.run_requests == []
        assert quiet.cursor == watermark.isoformat()
        assert fake.counts["query"] == 1

        edited_at = (watermark + dt.timedelta(minutes=5)).replace(second=0, microsecond=0)
        target = resources["lake"].delta_lake().read(RAW_TABLE, columns=["page_id"])["page_id"][0]
        fake.edit(
            target.as_py(), {"Email": {"type": "email", "email": "new@exemple.fr"}}, at=edited_at
        )

        changed = tick(instance, resources, cursor=quiet.cursor)
        assert len(changed.run_requests) == 1
        assert changed.run_requests[0].run_key.endswith(edited_at.isoformat())
        # Requesting a run does not advance the cursor: only ingested data does.
        assert changed.cursor == watermark.isoformat()
        repeat = tick(instance, resources, cursor=changed.cursor)
        assert repeat.run_requests[0].run_key == changed.run_requests[0].run_key

        sync(resources, instance)
        after = tick(instance, resources, cursor=changed.cursor)
        assert after.run_requests == []
        assert after.cursor == edited_at.isoformat()


def test_notion_transient_errors_skip_the_tick(seeded):
    resources, fake = seeded
    resources = {**resources, "source": notion_source(fake, max_retry_seconds=0.5)}
    fake.inject(Fault(kind="status", status=503, times=None))
    with dg.instance_for_test() as instance:
        data = tick(instance, resources)
    assert data.run_requests == []
    assert "notion could not be reached" in data.skip_message


def test_notion_refused_token_fails_the_tick(seeded, monkeypatch):
    resources, _ = seeded
    monkeypatch.setenv("NOTION_TOKEN", "ntn_wrong")
    # Not transient: the tick fails visibly in the UI instead of skipping forever.
    with dg.instance_for_test() as instance, pytest.raises(NotionAccessError, match="401"):
        tick(instance, resources)


def test_the_probe_retry_budget_is_short(seeded):
    resources, _ = seeded
    from leads_pipeline.defs.sensors import _probe

    probe = _probe(resources["source"])
    assert probe.max_retry_seconds == PROBE_RETRY_SECONDS
    assert resources["source"].max_retry_seconds > PROBE_RETRY_SECONDS
