"""Values that change in Notion without a new ``last_edited_time`` (issue 10, "No stale values").

Real Dagster runs of the jobs (``sync_leads``, ``refresh_leads``) reading the fake Notion server
over HTTP into real Delta tables. Expectations come from the pages put in the fake.
"""

from __future__ import annotations

import json

import dagster as dg
import pytest
from deltalake import DeltaTable

from leads_pipeline.defs.assets import analytics, ingestion
from leads_pipeline.defs.jobs import refresh_leads, sync_leads
from leads_pipeline.sources.sample_data import SAMPLE_SCHEMA
from leads_pipeline.storage.raw_store import schema_changes
from leads_pipeline.tables import SCHEMA_TABLE
from leads_pipeline_tests.fake_notion import Fault
from leads_pipeline_tests.notion_fixtures import notion_source

ASSETS = [*ingestion.ASSETS, *analytics.ASSETS]
LAKE_TABLES = ("raw_notion_leads", "leads", "lead_quality_issues", SCHEMA_TABLE)


def run(job: str, resources: dict, raise_on_error: bool = True):
    defs = dg.Definitions(assets=ASSETS, jobs=[sync_leads, refresh_leads], resources=resources)
    return defs.resolve_job_def(job).execute_in_process(raise_on_error=raise_on_error)


def metadata(result, asset: str = "raw_notion_leads") -> dict:
    return {
        key: value.value
        for event in result.get_asset_materialization_events()
        if event.asset_key.to_user_string() == asset
        for key, value in event.event_specific_data.materialization.metadata.items()
    }


def rows(lake_uri: str, name: str) -> list[dict]:
    return DeltaTable(f"{lake_uri}/{name}").to_pyarrow_table().to_pylist()


def leads_by_id(lake_uri: str) -> dict[str, dict]:
    return {row["id"]: row for row in rows(lake_uri, "leads")}


def raw_by_id(lake_uri: str) -> dict[str, dict]:
    return {row["page_id"]: row for row in rows(lake_uri, "raw_notion_leads")}


def versions(lake_uri: str) -> dict[str, int]:
    return {name: DeltaTable(f"{lake_uri}/{name}").version() for name in LAKE_TABLES}


def plain_text(value: dict) -> str:
    return "".join(segment["plain_text"] for segment in value[value["type"]])


def extras(lead: dict) -> dict:
    return json.loads(lead["extra_properties"])


# -- the comparison of schemas -------------------------------------------------------------------


def test_schema_changes_name_every_kind_of_change_by_property_id():
    before = {
        "Nom": {"id": "title", "type": "title"},
        "A": {"id": "a1", "type": "rich_text"},
        "X": {"id": "x1", "type": "number"},
        "Y": {"id": "y1", "type": "date"},
        "Both": {"id": "b1", "type": "number"},
    }
    after = {
        "Nom": {"id": "title", "type": "title"},
        "B": {"id": "a1", "type": "rich_text"},
        "X": {"id": "x1", "type": "formula"},
        "Priority": {"id": "p1", "type": "select"},
        "Y": {"id": "y2", "type": "date"},  # deleted, then a new property of the same name
        "Both!": {"id": "b1", "type": "formula"},
    }
    assert schema_changes(before, after) == [
        "added 'Priority' (select)",
        "added 'Y' (date)",
        "renamed 'A' → 'B'",
        "renamed 'Both' → 'Both!'",
        "retyped 'Both!' from number to formula",
        "retyped 'X' from number to formula",
        "removed 'Y'",
    ]
    assert schema_changes(before, before) == []
    assert schema_changes(None, after) == []  # a first sync has nothing to compare with


# -- values changed without an edit time ---------------------------------------------------------


def test_a_value_changed_without_an_edit_reaches_leads_after_a_full_listing_only(
    notion_env, notion_resources, lake_uri
):
    fake = notion_env
    pages = fake.seed_sample(200)
    first = run("sync_leads", notion_resources)
    assert metadata(first)["pages_changed_without_edit"] == 0
    # An old page (far before the watermark): an incremental listing does not return it.
    page_id = pages[5]["id"]
    old_status = pages[5]["properties"]["Statut"]["status"]["name"]
    new_status = "Perdu" if old_status != "Perdu" else "Gagné"
    before = fake.page(page_id)
    changed = fake.set_value_silently(
        page_id,
        "Statut",
        {"type": "status", "status": {"id": "stX", "name": new_status, "color": "red"}},
    )
    assert changed["last_edited_time"] == before["last_edited_time"]

    incremental = run("sync_leads", notion_resources)
    meta = metadata(incremental)
    assert meta["mode"] == "incremental"
    assert meta["pages_changed_without_edit"] == 0
    assert leads_by_id(lake_uri)[page_id]["statut"] == old_status

    leads_before = leads_by_id(lake_uri)
    refresh = run("refresh_leads", notion_resources)
    meta = metadata(refresh)
    assert meta["mode"] == "full listing"
    assert meta["pages_fetched"] == 200
    assert meta["pages_changed_without_edit"] == 1
    assert meta["rows_updated"] == 1 and meta["rows_inserted"] == 0
    assert meta["schema_changes"] == []
    raw = raw_by_id(lake_uri)[page_id]
    assert json.loads(raw["properties_json"]) == changed["properties"]
    leads = leads_by_id(lake_uri)
    assert leads[page_id]["statut"] == new_status
    assert metadata(refresh, "leads")["rows_updated"] == 1
    assert {k: v for k, v in leads.items() if k != page_id} == {
        k: v for k, v in leads_before.items() if k != page_id
    }

    again = run("refresh_leads", notion_resources)
    assert metadata(again)["pages_changed_without_edit"] == 0
    assert metadata(again)["delta_committed"] is False


def test_a_refresh_of_an_unchanged_database_writes_no_delta_version(
    notion_env, notion_resources, lake_uri
):
    fake = notion_env
    pages = fake.seed_sample(300)
    run("sync_leads", notion_resources)
    fake.edit(pages[3]["id"], {"Email": {"type": "email", "email": "edite@exemple.fr"}})
    run("sync_leads", notion_resources)  # raw now holds rows of two syncs
    before = versions(lake_uri)
    raw_before = rows(lake_uri, "raw_notion_leads")

    result = run("refresh_leads", notion_resources)
    meta = metadata(result)
    assert meta["mode"] == "full listing" and meta["pages_fetched"] == 300
    assert meta["pages_changed_without_edit"] == 0
    assert meta["pages_written"] == 0 and meta["rows_marked_deleted"] == 0
    assert meta["delta_committed"] is False
    assert metadata(result, "leads")["delta_committed"] is False
    assert versions(lake_uri) == before
    assert rows(lake_uri, "raw_notion_leads") == raw_before  # synced_at untouched too


# -- schema changes ------------------------------------------------------------------------------


def priority_of(page: dict) -> dict:
    """The value the new property takes on ``page``: a function of the page, None for some."""
    digit = int(page["id"].replace("-", "")[-1], 16) % 3
    name = {0: "Haute", 1: "Basse", 2: None}[digit]
    option = {"id": f"pr{digit}", "name": name, "color": "blue"} if name else None
    return {"type": "select", "select": option}


def test_a_property_added_in_notion_reaches_every_lead_in_the_next_incremental_sync(
    notion_env, notion_resources, lake_uri
):
    fake = notion_env
    pages = fake.seed_sample(150)
    run("sync_leads", notion_resources)
    edit_times = {p["id"]: fake.page(p["id"])["last_edited_time"] for p in pages}
    fake.add_property("Priorité", {"type": "select", "select": {"options": []}}, priority_of)
    assert {p["id"]: fake.page(p["id"])["last_edited_time"] for p in pages} == edit_times

    result = run("sync_leads", notion_resources)
    meta = metadata(result)
    assert meta["schema_changes"] == ["added 'Priorité' (select)"]
    assert meta["mode"] == "full listing"
    assert meta["full_listing_reason"] == "the data source's schema changed"
    assert meta["pages_changed_without_edit"] == 150
    assert meta["rows_updated"] == 150
    leads = leads_by_id(lake_uri)
    assert len(leads) == 150
    for page in pages:
        expected = priority_of(page)["select"]
        extra = extras(leads[page["id"]])
        assert "Priorité" in extra, page["id"]
        assert extra["Priorité"] == (expected["name"] if expected else None), page["id"]
    commit = DeltaTable(f"{lake_uri}/{SCHEMA_TABLE}").history(1)[0]
    assert json.loads(commit["leads_pipeline.schema_changes"]) == ["added 'Priorité' (select)"]

    after = run("sync_leads", notion_resources)
    assert metadata(after)["mode"] == "incremental"
    assert metadata(after)["schema_changes"] == []
    assert metadata(after)["delta_committed"] is False


def test_a_schema_change_seen_by_a_failed_sync_is_not_forgotten(
    notion_env, notion_resources, lake_uri
):
    fake = notion_env
    pages = fake.seed_sample(120)
    run("sync_leads", notion_resources)
    fake.add_property("Priorité", {"type": "select", "select": {"options": []}}, priority_of)
    fake.inject(Fault("status", status=500, times=None))
    impatient = {**notion_resources, "source": notion_source(fake, max_retry_seconds=1)}
    assert not run("sync_leads", impatient, raise_on_error=False).success

    fake.clear_faults()
    result = run("sync_leads", notion_resources)
    assert metadata(result)["schema_changes"] == ["added 'Priorité' (select)"]
    leads = leads_by_id(lake_uri)
    assert all("Priorité" in extras(leads[p["id"]]) for p in pages)


def test_a_renamed_property_is_recorded_and_the_map_still_binds_by_id(
    notion_env, notion_resources, lake_uri
):
    fake = notion_env
    pages = fake.seed_sample(120)
    run("sync_leads", notion_resources)
    emails = {lead_id: lead["email"] for lead_id, lead in leads_by_id(lake_uri).items()}
    assert sum(email is not None for email in emails.values()) > 60
    fake.rename_property("Email", "Adresse e-mail")  # mapped (column email)
    fake.rename_property("Entreprise", "Société")  # unmapped: kept in extra_properties

    result = run("sync_leads", notion_resources)
    meta = metadata(result)
    assert meta["schema_changes"] == [
        "renamed 'Email' → 'Adresse e-mail'",
        "renamed 'Entreprise' → 'Société'",
    ]
    assert meta["mode"] == "full listing"
    leads = leads_by_id(lake_uri)
    assert {lead_id: lead["email"] for lead_id, lead in leads.items()} == emails
    for page in pages:
        extra = extras(leads[page["id"]])
        assert "Entreprise" not in extra and "Adresse e-mail" not in extra
        assert extra["Société"] == plain_text(page["properties"]["Entreprise"])
    stored = {row["name"]: row for row in rows(lake_uri, SCHEMA_TABLE)}
    assert stored["Adresse e-mail"]["column"] == "email"
    assert stored["Adresse e-mail"]["property_id"] == SAMPLE_SCHEMA["Email"]["id"]
    assert "Email" not in stored


@pytest.mark.parametrize("change", ["removed", "retyped"])
def test_a_removed_or_retyped_property_reaches_every_lead(
    change, notion_env, notion_resources, lake_uri
):
    fake = notion_env
    pages = fake.seed_sample(100)
    run("sync_leads", notion_resources)
    score = {p["id"]: p["properties"]["Score"]["number"] for p in pages}
    if change == "removed":
        fake.remove_property("Score")
        expected_changes = ["removed 'Score'"]
    else:

        def doubled(page: dict) -> dict:
            number = page["properties"]["Score"]["number"]
            result = None if number is None else number * 2
            return {"type": "formula", "formula": {"type": "number", "number": result}}

        fake.retype_property("Score", {"type": "formula", "formula": {"expression": ""}}, doubled)
        expected_changes = ["retyped 'Score' from number to formula"]

    result = run("sync_leads", notion_resources)
    assert metadata(result)["schema_changes"] == expected_changes
    leads = leads_by_id(lake_uri)
    for page in pages:
        extra = extras(leads[page["id"]])
        if change == "removed":
            assert "Score" not in extra
        else:
            number = score[page["id"]]
            assert extra["Score"] == (None if number is None else number * 2)
