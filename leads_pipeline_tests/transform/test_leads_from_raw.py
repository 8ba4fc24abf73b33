"""``derive_leads_from_raw`` as a plain function: raw synced from the fake Notion server over HTTP,
then leads derived from what raw stored, with no Dagster run. Expectations come from the pages."""

from __future__ import annotations

import pytest
from deltalake import DeltaTable

from leads_pipeline.storage.lake import DeltaLake
from leads_pipeline.tables import ISSUES_TABLE, LEADS_TABLE
from leads_pipeline.transform.leads import RawSchemaMissingError, derive_leads_from_raw
from leads_pipeline.transform.property_map import load_property_map
from leads_pipeline_tests.sources.test_raw_sync import sync


def _title(page: dict) -> str | None:
    parts = page["properties"]["Nom"]["title"]
    return "".join(p["plain_text"] for p in parts) or None


def _status(page: dict) -> str | None:
    value = page["properties"]["Statut"]["status"]
    return value["name"] if value else None


def test_leads_are_derived_from_raw_through_the_stored_schema(notion_env, lake_uri):
    pages = notion_env.seed_sample(60)
    lake = DeltaLake(lake_uri)
    sync(notion_env, lake)

    derived = derive_leads_from_raw(lake, load_property_map(None))

    assert derived.source == "notion"
    assert derived.outcome.raw_rows_processed == len(pages)
    assert {c.column for c in derived.columns} >= {"nom", "statut", "date_prise_contact"}
    rows = {
        r["id"]: r for r in DeltaTable(f"{lake_uri}/{LEADS_TABLE}").to_pyarrow_table().to_pylist()
    }
    assert set(rows) == {p["id"] for p in pages}
    for page in pages:
        assert (rows[page["id"]]["nom"], rows[page["id"]]["statut"]) == (
            _title(page),
            _status(page),
        )
    commit = DeltaTable(f"{lake_uri}/{LEADS_TABLE}").history(1)[0]
    assert commit["leads_pipeline.source"] == "notion"


def test_a_second_derivation_with_nothing_new_reads_nothing_and_commits_nothing(
    notion_env, lake_uri
):
    notion_env.seed_sample(30)
    lake = DeltaLake(lake_uri)
    sync(notion_env, lake)
    derive_leads_from_raw(lake, load_property_map(None))
    versions = [DeltaTable(f"{lake_uri}/{t}").version() for t in (LEADS_TABLE, ISSUES_TABLE)]

    again = derive_leads_from_raw(lake, load_property_map(None))

    assert again.outcome.raw_rows_processed == 0
    assert not again.outcome.leads.committed and not again.outcome.issues.committed
    assert [
        DeltaTable(f"{lake_uri}/{t}").version() for t in (LEADS_TABLE, ISSUES_TABLE)
    ] == versions


def test_a_lake_without_raw_says_what_to_materialize_first(lake_uri):
    with pytest.raises(RawSchemaMissingError, match="materialize raw_notion_leads first"):
        derive_leads_from_raw(DeltaLake(lake_uri), load_property_map(None))
