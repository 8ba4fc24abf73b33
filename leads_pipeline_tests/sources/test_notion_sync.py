"""Real Dagster runs of sync_leads / refresh_leads reading the fake Notion server into real Delta."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
from deltalake import DeltaTable

from leads_pipeline.defs.assets import analytics, ingestion
from leads_pipeline.defs.jobs import refresh_leads, sync_leads
from leads_pipeline.defs.resources import (
    LakeResource,
    PropertyMapResource,
    WarehouseResource,
    build_resources,
)
from leads_pipeline.settings import load_settings
from leads_pipeline.sources.sample_data import SAMPLE_DATA_SOURCE_ID, SAMPLE_SCHEMA, generate_pages
from leads_pipeline.storage.warehouse import Warehouse
from leads_pipeline.tables import MONTH, WEEK
from leads_pipeline_tests.fake_notion import DEFAULT_TOKEN, FakeNotion, Fault
from leads_pipeline_tests.notion_fixtures import notion_source

WEEKLY_TABLE, MONTHLY_TABLE = WEEK.table(), MONTH.table()

ASSETS = [*ingestion.ASSETS, *analytics.ASSETS]
TABLES = ("raw_notion_leads", "leads", "lead_quality_issues")


def run(job: str, resources: dict, instance=None, raise_on_error: bool = True):
    defs = dg.Definitions(assets=ASSETS, jobs=[sync_leads, refresh_leads], resources=resources)
    return defs.resolve_job_def(job).execute_in_process(
        instance=instance, raise_on_error=raise_on_error
    )


def raw_metadata(result) -> dict:
    return {
        key: value.value
        for event in result.get_asset_materialization_events()
        if event.asset_key.to_user_string() == "raw_notion_leads"
        for key, value in event.event_specific_data.materialization.metadata.items()
    }


def table(lake_uri: str, name: str) -> list[dict]:
    rows = DeltaTable(f"{lake_uri}/{name}").to_pyarrow_table().to_pylist()
    return sorted(rows, key=lambda r: (r.get("page_id") or r.get("id"), str(r)))


def snapshot(lake_uri: str, warehouse_path: str) -> dict:
    state = {
        name: (DeltaTable(f"{lake_uri}/{name}").version(), table(lake_uri, name)) for name in TABLES
    }
    with Warehouse(warehouse_path).read() as con:
        for name in (WEEKLY_TABLE, MONTHLY_TABLE):
            state[name] = con.sql(f"SELECT * FROM {name}").fetchall()
    return state


def leads_by_id(lake_uri: str) -> dict[str, dict]:
    return {row["id"]: row for row in table(lake_uri, "leads")}


def test_first_sync_of_1050_pages_then_a_no_change_sync(notion_env, notion_resources, lake_uri):
    fake = notion_env
    pages = fake.seed_sample(1050)
    first = run("sync_leads", notion_resources)
    meta = raw_metadata(first)
    assert meta["mode"] == "full listing" and meta["pages_fetched"] == 1050
    assert meta["watermark"].startswith(pages[-1]["last_edited_time"][:16])
    assert set(leads_by_id(lake_uri)) == {p["id"] for p in pages}
    versions = {name: DeltaTable(f"{lake_uri}/{name}").version() for name in TABLES}

    fake.reset_counts()
    again = run("sync_leads", notion_resources)
    assert fake.counts["query"] == 1
    assert raw_metadata(again)["mode"] == "incremental"
    assert raw_metadata(again)["delta_committed"] is False
    assert {name: DeltaTable(f"{lake_uri}/{name}").version() for name in TABLES} == versions


def test_edits_in_the_watermark_minute_are_not_lost(notion_env, notion_resources, lake_uri):
    fake = notion_env
    pages = fake.seed_sample(300)
    run("sync_leads", notion_resources)
    newest = fake.page(pages[-1]["id"])["last_edited_time"]
    watermark = datetime.fromisoformat(newest.replace("Z", "+00:00"))
    # Edited after the sync, but Notion rounds both edits down to already-seen minutes.
    same_minute, minute_before = pages[10]["id"], pages[20]["id"]
    fake.edit(same_minute, {"Email": {"type": "email", "email": "meme@minute.fr"}}, at=watermark)
    fake.edit(
        minute_before,
        {"Email": {"type": "email", "email": "juste@avant.fr"}},
        at=watermark - timedelta(minutes=1),
    )
    result = run("sync_leads", notion_resources)
    assert raw_metadata(result)["mode"] == "incremental"
    leads = leads_by_id(lake_uri)
    assert leads[same_minute]["email"] == "meme@minute.fr"
    assert leads[minute_before]["email"] == "juste@avant.fr"


def test_12000_pages_beat_the_10000_row_cap(monkeypatch, lake_uri, warehouse_path):
    fake = FakeNotion()
    fake.add_database()
    pages = fake.seed_sample(12_000, seed=11)
    with fake:
        monkeypatch.setenv("NOTION_TOKEN", DEFAULT_TOKEN)
        resources = {
            "source": notion_source(fake),
            "lake": LakeResource(uri=lake_uri),
            "warehouse": WarehouseResource(path=warehouse_path),
            "property_map": PropertyMapResource(),
        }
        result = run("sync_leads", resources)
    assert raw_metadata(result)["pages_fetched"] == 12_000
    assert fake.counts["query"] >= 121  # 100 full pages, then a second window past the cap
    raw_ids = {r["page_id"] for r in table(lake_uri, "raw_notion_leads")}
    assert raw_ids == {p["id"] for p in pages}
    assert len(leads_by_id(lake_uri)) == 12_000


def test_a_trashed_page_leaves_leads_at_the_next_refresh(notion_env, notion_resources, lake_uri):
    fake = notion_env
    pages = fake.seed_sample(200)
    run("sync_leads", notion_resources)
    gone = pages[42]["id"]
    fake.trash(gone)
    run("sync_leads", notion_resources)  # queries never return trashed pages...
    assert gone in leads_by_id(lake_uri)  # ...so an incremental sync cannot see it
    result = run("refresh_leads", notion_resources)
    assert raw_metadata(result)["rows_marked_deleted"] == 1
    assert gone not in leads_by_id(lake_uri) and len(leads_by_id(lake_uri)) == 199
    raw = {r["page_id"]: r for r in table(lake_uri, "raw_notion_leads")}
    assert raw[gone]["deleted_at"] is not None


def test_a_renamed_mapped_property_keeps_feeding_its_column(notion_env, notion_resources, lake_uri):
    fake = notion_env
    pages = fake.seed_sample(200)
    run("sync_leads", notion_resources)
    before = leads_by_id(lake_uri)
    fake.rename_property("Email", "Adresse e-mail")
    edited = pages[7]["id"]
    fake.edit(edited, {"Adresse e-mail": {"type": "email", "email": "renomme@exemple.fr"}})
    result = run("sync_leads", notion_resources)
    assert result.success
    after = leads_by_id(lake_uri)
    assert after[edited]["email"] == "renomme@exemple.fr"
    untouched = pages[8]["id"]
    assert after[untouched]["email"] == before[untouched]["email"]
    assert "Adresse e-mail" not in after[edited]["extra_properties"]


def test_transient_429s_and_5xx_during_a_run_are_retried(notion_env, notion_resources, lake_uri):
    fake = notion_env
    fake.seed_sample(500)
    fake.inject(Fault("status", status=429, retry_after="0", times=4, after=1))
    fake.inject(Fault("status", status=503, times=2, after=2))
    fake.inject(Fault("status", status=502, html=True, times=1, after=3))
    result = run("sync_leads", notion_resources)
    meta = raw_metadata(result)
    assert meta["pages_fetched"] == 500 and meta["retries"] == 7
    assert len(leads_by_id(lake_uri)) == 500


def test_a_failed_sync_leaves_every_table_as_it_was_and_the_next_run_completes(
    notion_env, notion_resources, lake_uri, warehouse_path
):
    fake = notion_env
    pages = fake.seed_sample(600)
    run("sync_leads", notion_resources)
    before = snapshot(lake_uri, warehouse_path)
    # 300 edits: the incremental listing needs 3 queries; the second one fails for good.
    for page in pages[:300]:
        fake.edit(page["id"], {"Email": {"type": "email", "email": f"{page['id'][:8]}@neuf.fr"}})
    fake.inject(Fault("status", status=500, times=None, after=1))
    impatient = {**notion_resources, "source": notion_source(fake, max_retry_seconds=1)}
    failed = run("sync_leads", impatient, raise_on_error=False)
    assert not failed.success
    failure = next(e for e in failed.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.event_specific_data.error.to_string()
    assert f"POST /v1/data_sources/{SAMPLE_DATA_SOURCE_ID}/query" in message
    assert snapshot(lake_uri, warehouse_path) == before

    fake.clear_faults()
    result = run("sync_leads", notion_resources)
    assert raw_metadata(result)["pages_fetched"] >= 300
    leads = leads_by_id(lake_uri)
    assert all(leads[p["id"]]["email"] == f"{p['id'][:8]}@neuf.fr" for p in pages[:300])


def test_a_database_with_two_data_sources_fails_listing_them_until_one_is_chosen(
    notion_env, notion_resources, lake_uri
):
    fake = notion_env
    second = str(uuid.uuid4())
    fake.databases.clear()
    fake.add_database(
        data_sources=[
            (SAMPLE_DATA_SOURCE_ID, "Leads", SAMPLE_SCHEMA),
            (second, "Old", SAMPLE_SCHEMA),
        ]
    )
    fake.seed_sample(50)
    failed = run("sync_leads", notion_resources, raise_on_error=False)
    message = next(
        e.event_specific_data.error.to_string()
        for e in failed.all_events
        if e.event_type_value == "STEP_FAILURE"
    )
    assert SAMPLE_DATA_SOURCE_ID in message and second in message and "'Old'" in message
    chosen = {**notion_resources, "source": notion_source(fake, data_source_id=second)}
    fake.seed(generate_pages(20, seed=5), second)
    result = run("sync_leads", chosen)
    assert raw_metadata(result)["pages_fetched"] == 20


def test_a_mapped_people_column_gets_every_person(notion_env, notion_resources, lake_uri, tmp_path):
    fake = notion_env
    pages = fake.seed_sample(100)
    people = [{"object": "user", "id": str(uuid.UUID(int=i + 1))} for i in range(60)]
    fake.set_references(pages[3]["id"], "Responsable", people)
    map_file = Path(tmp_path) / "map.toml"
    map_file.write_text('[columns.responsable]\nproperty = "Responsable"\nkind = "references"\n')
    resources = {**notion_resources, "property_map": PropertyMapResource(path=str(map_file))}
    result = run("sync_leads", resources)
    assert raw_metadata(result)["truncated_values_completed"] == 1
    leads = leads_by_id(lake_uri)
    assert json.loads(leads[pages[3]["id"]]["responsable"]) == [p["id"] for p in people]


def test_an_unmapped_truncated_value_is_kept_as_listed(notion_env, notion_resources, lake_uri):
    fake = notion_env
    pages = fake.seed_sample(50)
    people = [{"object": "user", "id": str(uuid.UUID(int=i + 1))} for i in range(40)]
    fake.set_references(pages[3]["id"], "Responsable", people)
    result = run("sync_leads", notion_resources)
    assert raw_metadata(result)["truncated_values_completed"] == 0
    assert fake.counts["page_property"] == 0
    extra = json.loads(leads_by_id(lake_uri)[pages[3]["id"]]["extra_properties"])
    assert len(extra["Responsable"]) == 25


def test_the_environment_alone_configures_a_working_sync(notion_env, lake_uri, warehouse_path):
    """NOTION_* variables (set by ``notion_env``) are all a user sets; the token stays an EnvVar."""
    notion_env.seed_sample(120)
    resources = {
        **build_resources(load_settings()),
        "lake": LakeResource(uri=lake_uri),
        "warehouse": WarehouseResource(path=warehouse_path),
    }
    assert DEFAULT_TOKEN not in repr(resources["source"])
    result = run("sync_leads", resources)
    assert raw_metadata(result)["pages_fetched"] == 120
