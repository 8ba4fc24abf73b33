"""The Notion source on its own: discovery, complete listings, errors, progress, truncated values."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from leads_pipeline.sources.base import ListingStats
from leads_pipeline.sources.notion import NotionLeadsSource
from leads_pipeline.sources.notion_discovery import NotionDiscoveryError, normalize_id
from leads_pipeline.sources.notion_http import (
    NotionAccessError,
    NotionRequestError,
    NotionRetriesExhaustedError,
    NotionSyncError,
)
from leads_pipeline.sources.sample_data import (
    SAMPLE_DATA_SOURCE_ID,
    SAMPLE_DATABASE_ID,
    SAMPLE_SCHEMA,
)
from leads_pipeline.storage.raw_store import RAW_SCHEMA, is_trashed, pages_to_raw
from leads_pipeline_tests.fake_notion import DEFAULT_TOKEN, FakeNotion, Fault, iso_minute
from leads_pipeline_tests.pages import make_page

SECOND_SOURCE = "3b5c7d9e-1f2a-4b4c-8d6e-8f0a2b4c6d8e"


def source_for(fake: FakeNotion, **overrides) -> NotionLeadsSource:
    options = {
        "token": DEFAULT_TOKEN,
        "database_id": SAMPLE_DATABASE_ID,
        "api_base_url": fake.url,
        "requests_per_second": 0,
        "max_retry_seconds": 5,
        "max_backoff_seconds": 0.05,
        "timeout_seconds": 2,
    }
    options.update(overrides)
    return NotionLeadsSource(**options)


def listed(source: NotionLeadsSource, since=None, log=None) -> tuple[list[dict], ListingStats]:
    """What a listing returns, through ``list_raw`` (the one listing path), in listing order:
    each row as a page ``{"id", "last_edited_time", "properties"}`` (the time a datetime)."""
    rows, stats = raw_listed(source, since, log=log)
    pages = [
        {
            "id": row["page_id"],
            "last_edited_time": row["last_edited_time"],
            "properties": json.loads(row["properties_json"]),
        }
        for row in rows.to_pylist()
    ]
    return pages, stats


def test_ids_are_read_from_urls_and_bare_or_dashed_ids():
    dashed = "1f3e2a4b-5c6d-4e7f-8a9b-0c1d2e3f4a5b"
    assert normalize_id(dashed) == dashed
    assert normalize_id(dashed.replace("-", "").upper()) == dashed
    url = "https://www.notion.so/acme/Leads-1f3e2a4b5c6d4e7f8a9b0c1d2e3f4a5b?v=0123456789abcdef0123456789abcdef"
    assert normalize_id(url) == dashed
    with pytest.raises(NotionDiscoveryError, match="NOTION_DATABASE_ID"):
        normalize_id("https://www.notion.so/acme/Leads")


def test_database_url_is_resolved_to_its_only_data_source(fake_notion):
    url = f"https://www.notion.so/acme/Leads-{SAMPLE_DATABASE_ID.replace('-', '')}?v=abc"
    source = source_for(fake_notion, database_id=url)
    assert source.identity() == f"notion:{SAMPLE_DATA_SOURCE_ID}"
    assert source.data_source_schema()["Email"]["id"] == SAMPLE_SCHEMA["Email"]["id"]
    assert fake_notion.counts["database"] == 1 and fake_notion.counts["data_source"] == 1


def test_a_database_with_two_data_sources_needs_a_choice(fake_notion):
    fake_notion.databases.clear()
    fake_notion.add_database(
        data_sources=[
            (SAMPLE_DATA_SOURCE_ID, "Leads 2025", SAMPLE_SCHEMA),
            (SECOND_SOURCE, "Leads archive", SAMPLE_SCHEMA),
        ]
    )
    with pytest.raises(NotionDiscoveryError) as caught:
        source_for(fake_notion).identity()
    message = str(caught.value)
    for text in ("2 data sources", "Leads 2025", SAMPLE_DATA_SOURCE_ID, "Leads archive"):
        assert text in message
    assert SECOND_SOURCE in message and "NOTION_DATA_SOURCE_ID" in message

    fake_notion.seed([{**p} for p in fake_notion_pages(3)], SECOND_SOURCE)
    chosen = source_for(fake_notion, data_source_id=SECOND_SOURCE.replace("-", ""))
    assert chosen.identity() == f"notion:{SECOND_SOURCE}"
    assert len(listed(chosen)[0]) == 3

    with pytest.raises(NotionDiscoveryError, match="is not a data source of database"):
        source_for(fake_notion, data_source_id=str(uuid.uuid4())).identity()


def fake_notion_pages(count: int, seed: int = 3) -> list[dict]:
    from leads_pipeline.sources.sample_data import generate_pages

    return generate_pages(count, seed)


def test_1050_pages_are_listed_completely_in_ascending_edit_order(fake_notion):
    pages = fake_notion.seed_sample(1050)
    source = source_for(fake_notion)
    source.identity()  # discovery: its request is not part of the listing below
    got, stats = listed(source)
    assert [p["id"] for p in got] == [p["id"] for p in pages]
    edits = [p["last_edited_time"] for p in got]
    assert edits == sorted(edits)
    assert stats.pages == 1050 and stats.requests == 11 == fake_notion.counts["query"]


def test_an_incremental_listing_asks_notion_for_recent_edits_only(fake_notion):
    pages = fake_notion.seed_sample(1050)
    since = datetime.fromisoformat(pages[1000]["last_edited_time"].replace("Z", "+00:00"))
    got, _ = listed(source_for(fake_notion), since=since)
    expected = [p["id"] for p in pages if p["last_edited_time"] >= pages[1000]["last_edited_time"]]
    assert [p["id"] for p in got] == expected
    assert fake_notion.counts["query"] == 1


def test_windows_beat_the_result_cap_without_duplicates():
    """A cap of 100 rows per query (the real one is 10,000) forces eleven windows."""
    fake = FakeNotion(result_cap=100)
    fake.add_database()
    pages = fake.seed_sample(1050)
    # Many pages in the minute where a window ends: they must be neither lost nor repeated.
    minute = datetime.fromisoformat(pages[95]["last_edited_time"].replace("Z", "+00:00"))
    for page in pages[90:140]:
        fake.edit(page["id"], at=minute)
    with fake:
        got, _ = listed(source_for(fake, page_size=30))
    ids = [p["id"] for p in got]
    assert len(ids) == len(set(ids)) == 1050
    edits = [p["last_edited_time"] for p in got]
    assert edits == sorted(edits)


def test_more_pages_in_one_minute_than_the_cap_are_listed_by_creation_time(caplog):
    # A bulk edit: 180 pages stamped with the same minute, 3 times the per-query cap of 60, among
    # pages edited before and after it; the listing must return every page exactly once.
    fake = FakeNotion(result_cap=60)
    fake.add_database()
    pages = fake.seed_sample(300)
    minute = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    for page in pages[50:230]:
        fake.edit(page["id"], at=minute)
    for page in pages[230:]:
        fake.edit(page["id"], at=minute + timedelta(minutes=3))
    log = logging.getLogger("test.bulk")
    with fake, caplog.at_level(logging.INFO, logger="test.bulk"):
        got, _ = listed(source_for(fake, page_size=25), log=log)
    ids = [p["id"] for p in got]
    assert len(ids) == len(set(ids)) == 300
    assert set(ids) == {p["id"] for p in pages}
    edits = [p["last_edited_time"] for p in got]
    assert edits == sorted(edits)
    assert any("by creation time" in r.getMessage() for r in caplog.records)


def test_more_pages_than_the_cap_in_one_edit_and_creation_minute_fail_clearly():
    fake = FakeNotion(result_cap=50)
    fake.add_database()
    created = "2025-05-01T08:00:00.000Z"
    for n in range(80):
        fake.add_page(make_page(str(uuid.UUID(int=n + 1)), created=created, edited=created))
    with fake, pytest.raises(NotionSyncError, match="created in the same minute"):
        listed(source_for(fake))


def test_an_invalid_cursor_restarts_the_window_instead_of_ending_the_listing(fake_notion):
    pages = fake_notion.seed_sample(1050)
    fault = fake_notion.inject(Fault("invalid_cursor", times=2, after=3))
    got, _ = listed(source_for(fake_notion))
    assert fault.hits == 2
    assert sorted(p["id"] for p in got) == sorted(p["id"] for p in pages)
    assert len(got) == 1050


def test_even_if_every_cursor_is_rejected_windows_complete_the_listing(fake_notion):
    pages = fake_notion.seed_sample(300)
    fake_notion.inject(Fault("invalid_cursor", times=None))
    got, _ = listed(source_for(fake_notion))
    assert sorted(p["id"] for p in got) == sorted(p["id"] for p in pages)


def test_a_wrong_token_says_to_check_it_and_to_share_the_database(fake_notion):
    source = source_for(fake_notion, token="ntn_wrong_token_value_123")
    with pytest.raises(NotionAccessError) as caught:
        source.identity()
    message = str(caught.value)
    assert "401" in message and "NOTION_TOKEN" in message and "Connections" in message
    assert f"GET /v1/databases/{SAMPLE_DATABASE_ID}" in message
    assert "ntn_wrong_token_value_123" not in message


def test_an_unknown_database_names_the_id_and_sharing(fake_notion):
    missing = str(uuid.uuid4())
    with pytest.raises(NotionAccessError) as caught:
        source_for(fake_notion, database_id=missing).identity()
    message = str(caught.value)
    assert "404" in message and f"database {missing}" in message and "shared" in message


def test_a_403_asks_for_sharing_and_capabilities(fake_notion):
    fake_notion.inject(Fault("status", route="data_source", status=403))
    with pytest.raises(NotionAccessError, match="share the database"):
        source_for(fake_notion).data_source_schema()


def test_a_400_carries_notions_own_message(fake_notion):
    fake_notion.inject(Fault("status", route="query", status=400))
    with pytest.raises(NotionRequestError, match=r"400 validation_error\): Injected 400\."):
        listed(source_for(fake_notion))


def test_a_permanent_server_error_gives_up_in_bounded_time_naming_the_request(fake_notion):
    fake_notion.seed_sample(10)
    fake_notion.inject(Fault("status", status=500, times=None))
    source = source_for(fake_notion, max_retry_seconds=0.5)
    with pytest.raises(NotionRetriesExhaustedError) as caught:
        listed(source)
    assert f"POST /v1/data_sources/{SAMPLE_DATA_SOURCE_ID}/query" in str(caught.value)


def test_a_429_storm_is_ridden_out_and_counted():
    fake = FakeNotion(rate_limit=10, burst=3)
    fake.add_database()
    pages = fake.seed_sample(1050)
    with fake:
        got, stats = listed(source_for(fake, max_retry_seconds=60))
    assert len(got) == 1050 == len({p["id"] for p in pages})
    assert stats.retries >= 1 and stats.rate_limit_wait_seconds >= 1
    assert fake.counts["query"] == 11 + stats.retries


def test_paced_requests_stay_under_the_servers_limit():
    fake = FakeNotion(rate_limit=20, burst=3)
    fake.add_database()
    fake.seed_sample(1050)
    with fake:
        got, stats = listed(source_for(fake, requests_per_second=20))
    assert len(got) == 1050
    assert stats.retries == 0 and stats.pacing_wait_seconds > 0


def test_progress_is_reported_with_an_estimate(fake_notion, caplog):
    fake_notion.seed_sample(2050)
    log = logging.getLogger("test.progress")
    source = source_for(fake_notion, progress_interval_seconds=0)
    with caplog.at_level(logging.INFO, logger="test.progress"):
        stats = ListingStats()
        for _ in source.list_raw(
            edited_on_or_after=None, stats=stats, synced_at=datetime.now(UTC), log=log
        ):
            pass
    lines = [r.getMessage() for r in caplog.records if r.name == "test.progress"]
    assert any("pages left" in line or "pages and" in line for line in lines), lines
    final = lines[-1]
    assert "2050 pages" in final and "requests" in final and "rate limits" in final


def test_truncated_references_are_completed_only_when_asked(fake_notion):
    pages = fake_notion.seed_sample(20)
    people = [{"object": "user", "id": str(uuid.UUID(int=i))} for i in range(130)]
    fake_notion.set_references(pages[5]["id"], "Responsable", people)
    source = source_for(fake_notion)
    got, stats = listed(source)
    truncated = next(p for p in got if p["id"] == pages[5]["id"])
    value = truncated["properties"]["Responsable"]
    assert len(value["people"]) == 25 and value["has_more"] is True

    property_id = SAMPLE_SCHEMA["Responsable"]["id"]
    source.complete_truncated(got, {property_id}, stats=stats)
    assert value["people"] == people and value["has_more"] is False
    assert stats.values_completed == 1
    assert fake_notion.counts["page_property"] == 2  # 130 people, 100 per request


def test_the_sensor_probe_is_one_request(fake_notion):
    pages = fake_notion.seed_sample(50)
    source = source_for(fake_notion)
    newest = datetime.fromisoformat(pages[-1]["last_edited_time"].replace("Z", "+00:00"))
    stats = ListingStats()
    assert source.latest_edit(after=None, stats=stats) == newest
    assert source.latest_edit(after=newest, stats=stats) is None
    later = newest + timedelta(minutes=5)
    fake_notion.edit(pages[0]["id"], at=later)
    assert source.latest_edit(after=newest, stats=stats) == later
    assert fake_notion.counts["query"] == 3
    assert iso_minute(later).endswith(":00.000Z")


def raw_listed(
    source: NotionLeadsSource, since=None, complete=(), log=None
) -> tuple[pa.Table, ListingStats]:
    stats = ListingStats()
    synced_at = datetime(2026, 1, 1, tzinfo=UTC)
    batches = list(
        source.list_raw(
            edited_on_or_after=since,
            stats=stats,
            synced_at=synced_at,
            complete_property_ids=complete,
            log=log,
        )
    )
    return pa.concat_tables(batches) if batches else RAW_SCHEMA.empty_table(), stats


def test_raw_rows_equal_the_pages_listed_across_capped_windows():
    # A cap of 250 rows per query: the listing spans several windows, with a trashed page and
    # pages sharing edit minutes at the window boundaries.
    fake = FakeNotion(result_cap=250)
    pages = fake.seed_sample(1_050)
    fake.edit(pages[10]["id"], at=datetime(2026, 1, 5, 9, 0, tzinfo=UTC))
    fake.trash(pages[20]["id"])
    with fake:
        rows, raw_stats = raw_listed(source_for(fake))
    assert rows.schema == RAW_SCHEMA
    # What Notion holds, live pages in the order of the query's sort (edit time, then id).
    stored = [fake.page(page["id"]) for page in pages]
    live = sorted(
        (page for page in stored if not is_trashed(page)),
        key=lambda page: (page["last_edited_time"], page["id"]),
    )
    expected = pages_to_raw(live, datetime(2026, 1, 1, tzinfo=UTC))
    assert rows.num_rows == expected.num_rows == 1_049
    assert rows.equals(expected)  # same rows, same order, properties byte for byte
    assert raw_stats.pages == 1_049
    assert raw_stats.requests == fake.counts["query"] + fake.counts["database"] > 1_050 / 100


def test_raw_listing_completes_only_the_truncated_values_asked_for(fake_notion):
    pages = fake_notion.seed_sample(20)
    people = [{"object": "user", "id": str(uuid.UUID(int=i))} for i in range(130)]
    fake_notion.set_references(pages[5]["id"], "Responsable", people)
    property_id = SAMPLE_SCHEMA["Responsable"]["id"]

    rows, stats = raw_listed(source_for(fake_notion))
    kept = json.loads(
        rows.filter(pc.equal(rows["page_id"], pages[5]["id"]))["properties_json"][0].as_py()
    )
    assert len(kept["Responsable"]["people"]) == 25 and kept["Responsable"]["has_more"] is True
    assert stats.values_completed == 0

    rows, stats = raw_listed(source_for(fake_notion), complete={property_id})
    by_id = {r["page_id"]: json.loads(r["properties_json"]) for r in rows.to_pylist()}
    assert by_id[pages[5]["id"]]["Responsable"]["people"] == people
    assert by_id[pages[5]["id"]]["Responsable"]["has_more"] is False
    assert stats.values_completed == 1
    assert rows.num_rows == 20


def test_a_garbled_answer_is_retried_then_fails_naming_the_request(fake_notion):
    fake_notion.seed_sample(5)
    # A 200 that is not JSON (a misbehaving proxy): transient once, then for good.
    fake_notion.faults.append(Fault("status", route="query", status=200, html=True, times=1))
    rows, stats = raw_listed(source_for(fake_notion))
    assert rows.num_rows == 5 and stats.retries == 1
    fake_notion.faults.append(Fault("status", route="query", status=200, html=True, times=None))
    with pytest.raises(NotionRetriesExhaustedError, match=r"POST /v1/data_sources/.*/query.*JSON"):
        raw_listed(source_for(fake_notion, max_retry_seconds=0.3))
