"""Answers Notion should not send, and an unusable API URL, through the real path.

The real notion-client over HTTP against the fake server, real Delta tables, real Dagster runs:
a lone surrogate escape is replaced and reported, never retried; an answer that is not UTF-8 or
not JSON fails at once naming the request and the first bad byte; ``NOTION_API_BASE_URL="not a
url"`` fails when the settings load.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from datetime import UTC, datetime

import dagster as dg
import httpx
import pytest
from deltalake import DeltaTable

from leads_pipeline.defs.assets import ingestion
from leads_pipeline.settings import ConfigurationError, load_settings
from leads_pipeline.sources.base import ListingStats
from leads_pipeline.sources.notion import NotionLeadsSource
from leads_pipeline.sources.notion_answers import answers_to_rows, read_answer
from leads_pipeline.sources.notion_http import NotionAnswerError
from leads_pipeline.sources.sample_data import SAMPLE_DATA_SOURCE_ID, SAMPLE_DATABASE_ID
from leads_pipeline.storage.raw_store import RAW_SCHEMA, pages_to_raw
from leads_pipeline_tests.fake_notion import DEFAULT_TOKEN, NOTION_VERSION, FakeNotion
from leads_pipeline_tests.notion_fixtures import notion_source
from leads_pipeline_tests.real_notion import recorded_pages

QUERY = f"POST /v1/data_sources/{SAMPLE_DATA_SOURCE_ID}/query"
#: Stands for the bad text in a page, then is swapped for raw bytes in the served JSON.
MARK = "@@BAD@@"
#: JSON text of a name holding a lone high surrogate, and a valid pair (an emoji) after it.
LONE_HIGH_JSON = rb"Ana \ud83d Lopez \ud83d\ude00"
LONE_HIGH_TEXT = "Ana \ufffd Lopez \U0001f600"
#: JSON text of a company name holding a lone low surrogate.
LONE_LOW_JSON = rb"Cabinet \uDE00"
LONE_LOW_TEXT = "Cabinet \ufffd"


def serve_with(fake: FakeNotion, page: dict, prop: str, raw_text: bytes) -> None:
    """Serves ``page`` with its ``prop`` text replaced by ``raw_text``, written verbatim."""
    marked = json.loads(json.dumps(page))
    for segment in marked["properties"][prop][marked["properties"][prop]["type"]]:
        segment["text"]["content"] = segment["plain_text"] = MARK
    blob = json.dumps(marked, ensure_ascii=False, separators=(",", ":")).encode()
    assert blob.count(MARK.encode()) == 2
    fake.serve_raw(page["id"], blob.replace(MARK.encode(), raw_text))


def source_on(fake: FakeNotion, **overrides) -> NotionLeadsSource:
    """A source reading ``fake`` directly (outside Dagster), unpaced."""
    options = {
        "token": DEFAULT_TOKEN,
        "database_id": SAMPLE_DATABASE_ID,
        "api_base_url": fake.url,
        "requests_per_second": 0,
        "max_backoff_seconds": 0.05,
        **overrides,
    }
    return NotionLeadsSource(**options)


def raw_rows(source: NotionLeadsSource, stats: ListingStats) -> list[dict]:
    synced_at = datetime(2026, 1, 1, tzinfo=UTC)
    tables = source.list_raw(edited_on_or_after=None, stats=stats, synced_at=synced_at)
    return [row for table in tables for row in table.to_pylist()]


def first_answer(fake: FakeNotion) -> bytes:
    """The first answer of a full listing, fetched on its own (to find its bad byte)."""
    return httpx.post(
        f"{fake.url}/v1/data_sources/{SAMPLE_DATA_SOURCE_ID}/query",
        headers={"Authorization": f"Bearer {DEFAULT_TOKEN}", "Notion-Version": NOTION_VERSION},
        json={"sorts": [{"timestamp": "last_edited_time", "direction": "ascending"}]},
    ).content


def ingest(resources: dict, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        ingestion.ASSETS, resources=resources, instance=instance, raise_on_error=False
    )


def failure_message(result) -> str:
    return next(
        e.event_specific_data.error.to_string()
        for e in result.all_events
        if e.event_type_value == "STEP_FAILURE"
    )


def rows_by_id(lake_uri: str, name: str, key: str) -> dict[str, dict]:
    return {r[key]: r for r in DeltaTable(f"{lake_uri}/{name}").to_pyarrow_table().to_pylist()}


def text_of(properties_json: str, prop: str) -> str:
    value = json.loads(properties_json)[prop]
    return "".join(segment["plain_text"] for segment in value[value["type"]])


def test_lone_surrogates_are_replaced_and_reported_without_a_retry(
    notion_env, notion_resources, lake_uri
):
    fake = notion_env
    pages = fake.seed_sample(150)  # two answers of 100 and 50 pages
    high, low = pages[10], pages[120]
    serve_with(fake, high, "Nom", LONE_HIGH_JSON)
    serve_with(fake, low, "Entreprise", LONE_LOW_JSON)
    with dg.instance_for_test() as instance:
        result = ingest(notion_resources, instance)
        assert result.success
        warnings = [
            entry.user_message
            for entry in instance.all_logs(result.run_id)
            if entry.level == logging.WARNING and "lone surrogate" in entry.user_message
        ]
    assert fake.counts["query"] == 2  # one request per answer: nothing was retried
    raw = rows_by_id(lake_uri, "raw_notion_leads", "page_id")
    assert set(raw) == {p["id"] for p in pages}
    assert text_of(raw[high["id"]]["properties_json"], "Nom") == LONE_HIGH_TEXT
    assert text_of(raw[low["id"]]["properties_json"], "Entreprise") == LONE_LOW_TEXT
    # The other values of those pages, and the other pages, are as Notion holds them.
    assert text_of(raw[low["id"]]["properties_json"], "Nom") == text_of(
        json.dumps(low["properties"]), "Nom"
    )
    untouched = pages[11]
    assert json.loads(raw[untouched["id"]]["properties_json"]) == untouched["properties"]
    leads = rows_by_id(lake_uri, "leads", "id")
    assert len(leads) == 150 and leads[high["id"]]["nom"] == LONE_HIGH_TEXT
    # One warning per answer holding one, naming its page and counting (text.content and
    # plain_text hold the same text: 2 replacements each).
    assert len(warnings) == 2 and all(QUERY in w and "U+FFFD" in w for w in warnings)
    assert f"page(s) {high['id']} (2);" in warnings[0]
    assert f"page(s) {low['id']} (2);" in warnings[1]


def test_the_listing_counts_the_replaced_surrogates(fake_notion):
    pages = fake_notion.seed_sample(30)
    serve_with(fake_notion, pages[3], "Nom", rb"\udbff\ud800\udc00\udfff x")  # 2 lone, 1 pair
    serve_with(fake_notion, pages[4], "Entreprise", LONE_LOW_JSON)
    stats = ListingStats()
    by_id = {r["page_id"]: r for r in raw_rows(source_on(fake_notion), stats)}
    # Each text is there twice (text.content and plain_text): 2 x (2 + 1) lone surrogates.
    assert stats.invalid_unicode_replaced == 6
    assert stats.retries == 0 and fake_notion.counts["query"] == 1
    assert text_of(by_id[pages[3]["id"]]["properties_json"], "Nom") == "\ufffd\U00010000\ufffd x"


def test_an_answer_that_is_not_utf8_fails_at_once_naming_the_request_and_the_byte(
    notion_env, lake_uri, notion_resources
):
    fake = notion_env
    pages = fake.seed_sample(150)
    serve_with(fake, pages[10], "Nom", "Ana Lopez café".encode("latin-1"))  # é as one byte
    position = first_answer(fake).index(b"caf\xe9") + len(b"caf")
    fake.reset_counts()
    patient = {**notion_resources, "source": notion_source(fake, max_retry_seconds=600)}
    started = time.monotonic()
    with dg.instance_for_test() as instance:
        result = ingest(patient, instance)
    elapsed = time.monotonic() - started
    assert not result.success
    message = failure_message(result)
    assert QUERY in message and "not UTF-8" in message
    assert f"byte {position} " in message and r"caf\xe9" in message
    assert f"in page {pages[10]['id']}" in message
    assert DEFAULT_TOKEN not in message
    assert fake.counts["query"] == 1  # sent once: not retried for max_retry_seconds
    assert elapsed < 60
    assert not DeltaTable.is_deltatable(f"{lake_uri}/raw_notion_leads")  # nothing written


def test_a_complete_answer_that_is_not_json_fails_at_once_naming_the_byte(fake_notion):
    pages = fake_notion.seed_sample(20)
    blob = json.dumps(pages[5], ensure_ascii=False, separators=(",", ":")).encode()
    broken = b'"in_trash" false'  # no colon: complete, and not JSON
    fake_notion.serve_raw(pages[5]["id"], blob.replace(b'"in_trash":false', broken, 1))
    position = first_answer(fake_notion).index(broken) + len(b'"in_trash" ')
    fake_notion.reset_counts()
    with pytest.raises(NotionAnswerError) as caught:
        raw_rows(source_on(fake_notion, max_retry_seconds=600), ListingStats())
    message = str(caught.value)
    assert QUERY in message and "not valid JSON (Expecting ':' delimiter)" in message
    assert f"byte {position} " in message and f"in page {pages[5]['id']}" in message
    assert broken.decode() in message  # the excerpt around it
    assert fake_notion.counts["query"] == 1


def test_an_answer_notion_client_decodes_fails_at_once_too(fake_notion):
    """Requests decoded by notion-client itself (discovery, page reads) get the same rule."""
    pages = fake_notion.seed_sample(3)
    page_id = pages[1]["id"]
    serve_with(fake_notion, pages[1], "Nom", b"Ana caf\xe9")
    source = source_on(fake_notion, max_retry_seconds=600)
    client = source.client()
    with pytest.raises(NotionAnswerError) as caught:
        source.caller().call(
            "GET",
            f"/v1/pages/{page_id}",
            lambda: client.pages.retrieve(page_id=page_id),
            ListingStats(),
        )
    assert f"GET /v1/pages/{page_id}" in str(caught.value) and "not UTF-8" in str(caught.value)
    assert fake_notion.counts["page"] == 1


def test_an_api_url_that_is_not_a_url_fails_at_load(tmp_path):
    env = {
        "NOTION_TOKEN": DEFAULT_TOKEN,
        "NOTION_DATABASE_ID": "db",
        "NOTION_API_BASE_URL": "not a url",
    }
    with pytest.raises(
        ConfigurationError, match=r"^NOTION_API_BASE_URL='not a url' is not a usable"
    ):
        load_settings(env)
    # As an operator meets it: loading the definitions (what `dg launch` does) fails at once,
    # before any request, naming the variable.
    loaded = subprocess.run(
        [sys.executable, "-c", "import leads_pipeline.definitions"],
        env={**os.environ, **env, "DAGSTER_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert loaded.returncode != 0
    assert "NOTION_API_BASE_URL='not a url' is not a usable Notion API URL" in loaded.stderr
    assert DEFAULT_TOKEN not in loaded.stderr + loaded.stdout


def _first_astral_replaced(value):
    """``value`` with its first character outside the BMP (in JSON text order) replaced by
    U+FFFD, and whether there was one."""
    if isinstance(value, str):
        for index, character in enumerate(value):
            if ord(character) > 0xFFFF:
                return value[:index] + "\ufffd" + value[index + 1 :], True
        return value, False
    if isinstance(value, list):
        for index, item in enumerate(value):
            new, done = _first_astral_replaced(item)
            if done:
                return [*value[:index], new, *value[index + 1 :]], True
        return value, False
    if isinstance(value, dict):
        items = list(value.items())
        for index, (key, item) in enumerate(items):
            for position, part in ((0, key), (1, item)):
                new, done = _first_astral_replaced(part)
                if done:
                    pair = (new, item) if position == 0 else (key, new)
                    return dict([*items[:index], pair, *items[index + 1 :]]), True
        return value, False
    return value, False


def test_real_pages_with_half_an_emoji_keep_everything_else():
    """Recorded pages holding emoji, written with every non-ASCII character escaped (pairs for
    emoji): read as they are, untouched; with each page's first emoji cut to its high half,
    that character alone becomes U+FFFD and each page is named."""
    pages = [
        row["page"]
        for row in recorded_pages()
        if any(ord(c) > 0xFFFF for c in json.dumps(row["page"], ensure_ascii=False))
    ]
    assert len(pages) > 100
    synced_at = datetime(2026, 1, 1, tzinfo=UTC)
    for start in range(0, len(pages), 100):
        chunk = pages[start : start + 100]
        body = json.dumps({"object": "list", "results": chunk, "has_more": False}).encode()
        sound = read_answer(body)
        assert sound.body is body and sound.replaced == 0
        expected = pages_to_raw(chunk, synced_at)
        assert answers_to_rows([sound.body], synced_at).select(RAW_SCHEMA.names).equals(expected)

        cut_texts, cut_pages = [], []
        for page in chunk:
            text = json.dumps(page)
            at = text.index("\\ud")  # the high half of the first pair escape
            cut_texts.append(text[: at + 6] + text[at + 12 :])
            cut_pages.append(_first_astral_replaced(page)[0])
        body = b'{"object":"list","results":[' + ",".join(cut_texts).encode() + b"]}"
        checked = read_answer(body)
        assert checked.replaced == len(chunk)
        assert set(checked.replaced_by_page) == {page["id"] for page in chunk}
        rows = answers_to_rows([checked.body], synced_at).select(RAW_SCHEMA.names)
        assert rows.equals(pages_to_raw(cut_pages, synced_at))
