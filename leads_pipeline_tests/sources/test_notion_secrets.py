"""The Notion token never shows up in logs, events, run records, stored files or the lake."""

from __future__ import annotations

import logging
from pathlib import Path

import dagster as dg
from dagster._serdes import serialize_value

from leads_pipeline_tests.fake_notion import DEFAULT_TOKEN, Fault
from leads_pipeline_tests.notion_fixtures import notion_source
from leads_pipeline_tests.sources.test_notion_sync import run


def _files_containing(root: Path, needle: bytes) -> list[str]:
    return [str(path) for path in root.rglob("*") if path.is_file() and needle in path.read_bytes()]


def test_the_token_never_leaks(notion_env, notion_resources, lake_uri, tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)  # every logger at DEBUG, notion-client's and httpx's included
    fake = notion_env
    pages = fake.seed_sample(300)
    dagster_dir = tmp_path / "dagster"
    dagster_dir.mkdir()
    with dg.instance_for_test(temp_dir=str(dagster_dir)) as instance:
        runs = [run("sync_leads", notion_resources, instance)]
        # Retries log warnings; a permanent failure logs an error with its traceback.
        fake.edit(pages[0]["id"], {"Email": {"type": "email", "email": "neuf@exemple.fr"}})
        fake.inject(Fault("status", status=429, retry_after="0", times=2))
        fake.inject(Fault("status", status=503, times=1))
        runs.append(run("sync_leads", notion_resources, instance))
        fake.inject(Fault("status", status=500, times=None))
        impatient = {**notion_resources, "source": notion_source(fake, max_retry_seconds=0.5)}
        runs.append(run("refresh_leads", impatient, instance, raise_on_error=False))
        assert [r.success for r in runs] == [True, True, False]

        records = []
        for result in runs:
            records += [serialize_value(entry) for entry in instance.all_logs(result.run_id)]
            records.append(serialize_value(instance.get_run_by_id(result.run_id)))
        text = "\n".join(records)
        assert "Retrying" in text or "retrying" in text  # the retries were logged...
        assert "POST /v1/data_sources/" in text  # ...and the failure names the request
        assert DEFAULT_TOKEN not in text
        assert "Bearer" not in text
    # The token was really in use: every request carried it.
    assert all(h.get("Authorization") == f"Bearer {DEFAULT_TOKEN}" for h in fake.headers_seen)
    assert _files_containing(dagster_dir, DEFAULT_TOKEN.encode()) == []
    assert _files_containing(Path(lake_uri), DEFAULT_TOKEN.encode()) == []
    assert caplog.records and DEFAULT_TOKEN not in caplog.text
    out, err = capfd.readouterr()
    assert DEFAULT_TOKEN not in out + err


def test_the_token_is_not_in_the_resource_repr(notion_env):
    with notion_source(notion_env).process_config_and_initialize_cm() as source:
        assert source.token == DEFAULT_TOKEN
        assert DEFAULT_TOKEN not in repr(source) and DEFAULT_TOKEN not in str(source)
