"""The fake Notion server itself behaves like the API where the tests rely on it (bare httpx)."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import httpx
import pytest

from leads_pipeline.sources.sample_data import SAMPLE_DATA_SOURCE_ID, SAMPLE_DATABASE_ID
from leads_pipeline_tests.fake_notion import DEFAULT_TOKEN, FakeNotion

HEADERS = {"Authorization": f"Bearer {DEFAULT_TOKEN}", "Notion-Version": "2025-09-03"}


@pytest.fixture
def api(fake_notion):
    with httpx.Client(base_url=fake_notion.url, headers=HEADERS, timeout=10) as client:
        yield client


def query(api, **body) -> dict:
    return api.post(f"/v1/data_sources/{SAMPLE_DATA_SOURCE_ID}/query", json=body).json()


def test_auth_and_version_headers_are_checked(fake_notion, api):
    wrong = httpx.get(
        f"{fake_notion.url}/v1/databases/{SAMPLE_DATABASE_ID}",
        headers={**HEADERS, "Authorization": "Bearer nope"},
    )
    assert wrong.status_code == 401
    body = wrong.json()
    assert body["object"] == "error" and body["code"] == "unauthorized" and body["request_id"]
    missing = httpx.get(
        f"{fake_notion.url}/v1/databases/{SAMPLE_DATABASE_ID}",
        headers={"Authorization": HEADERS["Authorization"]},
    )
    assert missing.status_code == 400 and missing.json()["code"] == "missing_version"
    assert api.get(f"/v1/databases/{uuid.uuid4()}").json()["code"] == "object_not_found"


def test_timestamp_filters_sorts_and_trash(fake_notion, api):
    pages = fake_notion.seed_sample(300)
    middle = pages[150]["last_edited_time"]
    newer = query(
        api,
        filter={"timestamp": "last_edited_time", "last_edited_time": {"after": middle}},
        sorts=[{"timestamp": "last_edited_time", "direction": "descending"}],
    )
    edits = [p["last_edited_time"] for p in newer["results"]]
    assert edits == sorted(edits, reverse=True) and min(edits) > middle
    either = query(
        api,
        filter={
            "or": [
                {"timestamp": "created_time", "created_time": {"before": "2024-02-01"}},
                {"timestamp": "last_edited_time", "last_edited_time": {"on_or_after": middle}},
            ]
        },
        sorts=[{"timestamp": "last_edited_time", "direction": "ascending"}],
        page_size=100,
    )
    assert all(
        p["created_time"] < "2024-02-01" or p["last_edited_time"] >= middle
        for p in either["results"]
    )
    fake_notion.trash(pages[0]["id"])
    listed = query(api, sorts=[{"timestamp": "last_edited_time", "direction": "ascending"}])
    assert pages[0]["id"] not in {p["id"] for p in listed["results"]}
    assert query(api, page_size=101)["code"] == "validation_error"


def test_edits_are_rounded_down_to_the_minute(fake_notion):
    pages = fake_notion.seed_sample(3)
    edited = fake_notion.edit(pages[0]["id"], at=datetime(2026, 3, 1, 9, 41, 59, tzinfo=UTC))
    assert edited["last_edited_time"] == "2026-03-01T09:41:00.000Z"


def test_the_result_cap_is_reported_as_incomplete():
    fake = FakeNotion(result_cap=250)
    fake.add_database()
    fake.seed_sample(400)
    with fake, httpx.Client(base_url=fake.url, headers=HEADERS) as client:
        body, seen = {"page_size": 100}, 0
        while True:
            answer = query(client, **body)
            seen += len(answer["results"])
            if not answer["has_more"]:
                break
            body["start_cursor"] = answer["next_cursor"]
    assert seen == 250
    assert answer["request_status"] == {
        "type": "incomplete",
        "incomplete_reason": "query_result_limit_reached",
    }


def test_a_bare_loop_is_fast(fake_notion, api):
    fake_notion.seed_sample(2000)
    started = time.perf_counter()
    body, pages = {"page_size": 100}, 0
    while True:
        answer = query(api, **body)
        pages += len(answer["results"])
        if not answer["has_more"]:
            break
        body["start_cursor"] = answer["next_cursor"]
    assert pages == 2000
    assert pages / (time.perf_counter() - started) > 1000  # pages/s, even on a busy machine
