"""The raw sync as a plain function: the fake Notion server over HTTP into real Delta, no Dagster run.

Every expectation is computed from the pages fed to the fake server (or read back from it), never
from the pipeline's own output.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from deltalake import DeltaTable

from leads_pipeline.sources.raw_sync import sync_raw
from leads_pipeline.sources.sample import SampleLeadsSource
from leads_pipeline.sources.sample_data import SAMPLE_DATA_SOURCE_ID
from leads_pipeline.storage.lake import DeltaLake
from leads_pipeline.storage.raw_store import SourceMismatchError, load_schema
from leads_pipeline.tables import RAW_TABLE, SCHEMA_TABLE
from leads_pipeline.transform.property_map import PropertyMapError, load_property_map
from leads_pipeline_tests.fake_notion import FakeNotion
from leads_pipeline_tests.notion_fixtures import notion_source
from leads_pipeline_tests.pages import make_page

LOG = logging.getLogger("test_raw_sync")
#: Notion rounds edit times down to the minute; the sync re-reads this margin before its mark.
MARGIN = timedelta(minutes=2)


@pytest.fixture
def lake(lake_uri) -> DeltaLake:
    return DeltaLake(lake_uri)


def sync(fake: FakeNotion, lake: DeltaLake, full_listing: bool = False, **options):
    """One raw sync from ``fake``, through a fresh Notion source initialised as a run does."""
    with notion_source(fake).process_config_and_initialize_cm() as source:
        return sync_raw(
            options.pop("source", source),
            lake,
            mapping=load_property_map(options.pop("map_path", None)),
            full_listing=full_listing,
            log=LOG,
            **options,
        )


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def raw_rows(lake_uri: str) -> dict[str, dict]:
    rows = DeltaTable(f"{lake_uri}/{RAW_TABLE}").to_pyarrow_table().to_pylist()
    return {row["page_id"]: row for row in rows}


def raw_version(lake_uri: str) -> int:
    return DeltaTable(f"{lake_uri}/{RAW_TABLE}").version()


def served(fake: FakeNotion, ids) -> list[dict]:
    """The pages as the fake server holds them now."""
    return [fake.page(page_id) for page_id in ids]


def listed_since(pages: list[dict], mark: datetime) -> list[dict]:
    """Live pages an incremental listing from ``mark`` returns (edited at or after it)."""
    return [p for p in pages if not p["in_trash"] and instant(p["last_edited_time"]) >= mark]


def test_a_first_sync_stores_every_page_verbatim(notion_env, lake, lake_uri, caplog):
    pages = notion_env.seed_sample(120)
    synced_at = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    with caplog.at_level(logging.INFO, LOG.name):
        outcome = sync(notion_env, lake, synced_at=synced_at)

    assert outcome.full_listing_reason == "first sync" and outcome.mode == "full listing"
    assert outcome.source == "notion" and outcome.schema_changes == ()
    assert outcome.pages_fetched == outcome.row_count == 120
    assert (outcome.write.inserted, outcome.write.updated, outcome.write.deleted) == (120, 0, 0)
    assert outcome.pages_written == 120 and outcome.write.committed
    assert outcome.watermark == max(instant(p["last_edited_time"]) for p in pages)
    assert outcome.delta_version == raw_version(lake_uri)
    assert "Listing every page (first sync) from notion." in caplog.messages

    rows = raw_rows(lake_uri)
    assert set(rows) == {p["id"] for p in pages}
    for page in pages:
        row = rows[page["id"]]
        assert json.loads(row["properties_json"]) == page["properties"]
        assert row["last_edited_time"] == instant(page["last_edited_time"])
        assert row["url"] == page["url"] and row["synced_at"] == synced_at
        assert row["deleted_at"] is None
    # The preview's tail: the last rows of a listing sorted by edit time.
    newest = sorted(instant(p["last_edited_time"]) for p in pages)[-10:]
    assert sorted(outcome.tail["last_edited_time"].to_pylist()) == newest
    assert outcome.tail.column_names == ["page_id", "last_edited_time", "in_trash"]
    # The data source's schema is stored beside the pages.
    stored_schema, _ = load_schema(lake)
    expected = notion_env.data_sources[SAMPLE_DATA_SOURCE_ID].schema
    assert {name: (p["id"], p["type"]) for name, p in stored_schema.items()} == {
        name: (p["id"], p["type"]) for name, p in expected.items()
    }


def test_an_incremental_sync_lists_recent_edits_and_writes_only_what_changed(
    notion_env, lake, lake_uri, caplog
):
    pages = notion_env.seed_sample(150)
    sync(notion_env, lake)
    mark = max(instant(p["last_edited_time"]) for p in pages)
    edited = [pages[5]["id"], pages[60]["id"], pages[149]["id"]]
    for page_id in edited:
        notion_env.edit(page_id, {"Email": {"type": "email", "email": f"{page_id[:6]}@neuf.fr"}})
    new_page = make_page(edited=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:00.000Z"))
    notion_env.add_page(new_page)
    ids = [p["id"] for p in pages] + [new_page["id"]]
    expected_listed = listed_since(served(notion_env, ids), mark - MARGIN)

    with caplog.at_level(logging.INFO, LOG.name):
        outcome = sync(notion_env, lake)

    assert outcome.full_listing_reason is None and outcome.mode == "incremental"
    assert f"Listing pages edited on or after {(mark - MARGIN).isoformat()} from notion." in (
        caplog.messages
    )
    assert outcome.pages_fetched == len(expected_listed)
    assert (outcome.write.inserted, outcome.write.updated, outcome.write.deleted) == (1, 3, 0)
    assert outcome.row_count == 151 and outcome.write.committed
    assert outcome.watermark == max(instant(p["last_edited_time"]) for p in expected_listed)
    rows = raw_rows(lake_uri)
    assert {
        page_id: json.loads(rows[page_id]["properties_json"])["Email"]["email"]
        for page_id in edited
    } == {page_id: f"{page_id[:6]}@neuf.fr" for page_id in edited}
    assert json.loads(rows[new_page["id"]]["properties_json"]) == new_page["properties"]


def test_a_full_listing_marks_the_pages_it_no_longer_sees_deleted(notion_env, lake, lake_uri):
    pages = notion_env.seed_sample(80)
    sync(notion_env, lake)
    gone = {pages[3]["id"], pages[41]["id"]}
    for page_id in gone:
        notion_env.trash(page_id)
    incremental = sync(notion_env, lake)  # queries never return trashed pages: nothing to infer
    assert incremental.write.deleted == 0
    assert all(raw_rows(lake_uri)[page_id]["deleted_at"] is None for page_id in gone)

    synced_at = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    outcome = sync(notion_env, lake, full_listing=True, synced_at=synced_at)

    assert outcome.full_listing_reason == "full_listing requested"
    assert outcome.pages_fetched == 80 - len(gone)
    assert (outcome.write.inserted, outcome.write.updated, outcome.write.deleted) == (0, 0, 2)
    rows = raw_rows(lake_uri)
    assert {page_id for page_id, row in rows.items() if row["deleted_at"] is not None} == gone
    assert all(rows[page_id]["deleted_at"] == synced_at for page_id in gone)
    assert outcome.row_count == 80  # soft deletes: the rows stay


def test_a_schema_change_forces_a_full_listing_that_catches_silent_changes(
    notion_env, lake, lake_uri, caplog
):
    pages = notion_env.seed_sample(60)
    sync(notion_env, lake)
    version = raw_version(lake_uri)
    # A new property: every page gains a value, no edit time moves.
    notion_env.add_property(
        "Priorité",
        {"type": "select", "select": {"options": []}},
        {"type": "select", "select": None},
    )
    with caplog.at_level(logging.INFO, LOG.name):
        outcome = sync(notion_env, lake)

    assert outcome.full_listing_reason == "the data source's schema changed"
    assert outcome.schema_changes == ("added 'Priorité' (select)",)
    assert any(
        r.levelno == logging.WARNING and "added 'Priorité' (select)" in r.getMessage()
        for r in caplog.records
    )
    assert outcome.pages_fetched == 60
    assert outcome.changed_without_edit == 60 and outcome.write.updated == 60
    assert outcome.write.inserted == outcome.write.deleted == 0
    assert raw_version(lake_uri) == version + 1  # one commit
    rows = raw_rows(lake_uri)
    for page in served(notion_env, [p["id"] for p in pages]):
        assert json.loads(rows[page["id"]]["properties_json"]) == page["properties"]
    assert "Priorité" in load_schema(lake)[0]
    # The schema is stored: the next sync is incremental again.
    assert sync(notion_env, lake).full_listing_reason is None


@pytest.mark.parametrize("full_listing", [False, True])
def test_an_unchanged_sync_writes_no_commit(notion_env, lake, lake_uri, full_listing):
    pages = notion_env.seed_sample(90)
    first = sync(notion_env, lake)
    versions = (raw_version(lake_uri), DeltaTable(f"{lake_uri}/{SCHEMA_TABLE}").version())
    before = raw_rows(lake_uri)

    outcome = sync(notion_env, lake, full_listing=full_listing)

    mark = max(instant(p["last_edited_time"]) for p in pages)
    expected = len(pages) if full_listing else len(listed_since(pages, mark - MARGIN))
    assert outcome.pages_fetched == expected
    assert outcome.write.committed is False and outcome.pages_written == 0
    assert outcome.changed_without_edit == 0 and outcome.write.deleted == 0
    assert outcome.delta_version == first.delta_version
    assert (raw_version(lake_uri), DeltaTable(f"{lake_uri}/{SCHEMA_TABLE}").version()) == (versions)
    assert raw_rows(lake_uri) == before
    assert outcome.watermark == first.watermark == mark


def test_a_missing_mapped_property_fails_before_any_listing(notion_env, lake, tmp_path):
    notion_env.seed_sample(10)
    map_file = Path(tmp_path) / "map.toml"
    map_file.write_text('[columns.priorite]\nproperty = "Priorité"\nkind = "text"\n')
    notion_env.reset_counts()
    with pytest.raises(PropertyMapError, match="Priorité"):
        sync(notion_env, lake, map_path=str(map_file))
    assert notion_env.counts["query"] == 0
    assert lake.load(RAW_TABLE) is None


def test_pages_of_another_source_are_refused(notion_env, lake, lake_uri):
    notion_env.seed_sample(10)
    sync(notion_env, lake)
    version = raw_version(lake_uri)
    with pytest.raises(SourceMismatchError, match="sources are never mixed"):
        sync(notion_env, lake, source=SampleLeadsSource())
    assert raw_version(lake_uri) == version
