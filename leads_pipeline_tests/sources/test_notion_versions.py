"""Both Notion API versions end to end, trash in either form, and the reasons of 429 answers."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import dagster as dg
import httpx
import pytest
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
from leads_pipeline.sources.base import ListingStats
from leads_pipeline.sources.memory import InMemoryLeadsSource
from leads_pipeline.sources.notion_answers import answers_to_rows
from leads_pipeline.sources.notion_http import send_undecoded
from leads_pipeline.sources.sample_data import (
    SAMPLE_DATA_SOURCE_ID,
    SAMPLE_DATABASE_ID,
    SAMPLE_SCHEMA,
    generate_pages,
)
from leads_pipeline.sources.snapshot import SnapshotLeadsSource, write_snapshot
from leads_pipeline.storage.raw_store import is_trashed
from leads_pipeline_tests.fake_notion import DEFAULT_TOKEN, FakeNotion, Fault
from leads_pipeline_tests.notion_fixtures import notion_source

ASSETS = [*ingestion.ASSETS, *analytics.ASSETS]
VERSIONS = ["2025-09-03", "2026-03-11"]
SYNCED_AT = datetime(2026, 6, 1, tzinfo=UTC)


def run(job: str, resources: dict, instance=None):
    defs = dg.Definitions(assets=ASSETS, jobs=[sync_leads, refresh_leads], resources=resources)
    return defs.resolve_job_def(job).execute_in_process(instance=instance)


def lake_rows(lake_uri: str, name: str, key: str) -> dict[str, dict]:
    rows = DeltaTable(f"{lake_uri}/{name}").to_pyarrow_table().to_pylist()
    return {row[key]: row for row in rows}


def versions_sent(fake: FakeNotion) -> set[str | None]:
    return {
        next((v for k, v in headers.items() if k.lower() == "notion-version"), None)
        for headers in fake.headers_seen
    }


def trashed_copy(page: dict, keys: tuple[str, ...], at: datetime) -> dict:
    """``page`` moved to the trash, marked by ``keys`` only (the other trash key removed)."""
    page = {k: v for k, v in page.items() if k not in ("in_trash", "archived")}
    page.update({key: True for key in keys})
    page["last_edited_time"] = at.strftime("%Y-%m-%dT%H:%M:00.000Z")
    return page


def direct(fake: FakeNotion, **overrides):
    """A Notion source on ``fake`` used outside Dagster (the token given as a value)."""
    return notion_source(fake, token=DEFAULT_TOKEN, **overrides)


def answer_body(results: list[dict]) -> bytes:
    """A query answer holding ``results``, as Notion sends it."""
    body = {"object": "list", "results": results, "next_cursor": None, "has_more": False}
    return json.dumps(body).encode()


def answer(fake: FakeNotion, method: str, path: str, version: str, **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {DEFAULT_TOKEN}", "Notion-Version": version}
    return httpx.request(method, f"{fake.url}{path}", headers=headers, timeout=5, **kwargs)


# -- whole syncs under each version -------------------------------------------------------------


@pytest.mark.parametrize("version", [None, *VERSIONS], ids=["default", *VERSIONS])
def test_a_whole_sync_and_refresh_under_each_api_version(
    version, notion_env, monkeypatch, lake_uri, warehouse_path
):
    """Configured from the environment alone; pages trashed by ``archived`` or by ``in_trash``
    alone leave ``leads``, whichever version Notion answers with."""
    fake = notion_env
    if version is not None:
        monkeypatch.setenv("NOTION_API_VERSION", version)
    expected_version = version or "2025-09-03"
    pages = fake.seed_sample(250, seed=3)
    resources = {
        **build_resources(load_settings()),
        "lake": LakeResource(uri=lake_uri),
        "warehouse": WarehouseResource(path=warehouse_path),
    }
    assert resources["source"].api_version == expected_version

    run("sync_leads", resources)
    assert versions_sent(fake) == {expected_version}
    assert set(lake_rows(lake_uri, "leads", "id")) == {p["id"] for p in pages}

    now = datetime.now(UTC)
    old_export, new_answer = pages[10], pages[20]  # trash as before 2024, as from 2024 on
    fake.seed([trashed_copy(old_export, ("archived",), now)])
    fake.seed([trashed_copy(new_answer, ("in_trash",), now)])
    fake.headers_seen.clear()
    run("sync_leads", resources)
    run("refresh_leads", resources)
    assert versions_sent(fake) == {expected_version}

    gone = {old_export["id"], new_answer["id"]}
    assert set(lake_rows(lake_uri, "leads", "id")) == {p["id"] for p in pages} - gone
    raw = lake_rows(lake_uri, "raw_notion_leads", "page_id")
    assert {pid for pid, row in raw.items() if row["deleted_at"] is not None} == gone


@pytest.mark.parametrize("version", VERSIONS)
def test_the_listing_leaves_out_pages_trashed_either_way(fake_notion, version):
    """``list_raw`` leaves out pages trashed by ``archived`` or ``in_trash`` alone, whichever
    shape the configured version's answers have."""
    pages = fake_notion.seed_sample(120, seed=5)
    now = datetime.now(UTC)
    fake_notion.seed([trashed_copy(pages[0], ("archived",), now)])
    fake_notion.seed([trashed_copy(pages[1], ("in_trash",), now)])
    live = {p["id"] for p in pages[2:]}

    source = direct(fake_notion, api_version=version)
    # The answers the source's client receives: with ``archived`` only under 2025-09-03.
    path = f"data_sources/{SAMPLE_DATA_SOURCE_ID}/query"
    answered = json.loads(send_undecoded(source.client(), "POST", path, {"page_size": 100}))
    assert answered["results"]
    assert all(("archived" in p) == (version == "2025-09-03") for p in answered["results"])
    rows = [
        row
        for table in source.list_raw(
            edited_on_or_after=None, stats=ListingStats(), synced_at=SYNCED_AT
        )
        for row in table.to_pylist()
    ]
    assert {r["page_id"] for r in rows} == live
    assert not any(r["in_trash"] or r["deleted_at"] for r in rows)
    assert versions_sent(fake_notion) == {version}


# -- the fake speaks both versions --------------------------------------------------------------


def test_the_fake_answers_2026_03_11_without_archived_and_refuses_unknown_versions(fake_notion):
    pages = fake_notion.seed_sample(5)
    query = f"/v1/data_sources/{SAMPLE_DATA_SOURCE_ID}/query"
    page_path = f"/v1/pages/{pages[0]['id']}"

    old = answer(fake_notion, "POST", query, "2025-09-03", json={}).json()["results"]
    assert all(p["archived"] is False and p["in_trash"] is False for p in old)
    assert answer(fake_notion, "GET", page_path, "2025-09-03").json()["archived"] is False

    new = answer(fake_notion, "POST", query, "2026-03-11", json={}).json()["results"]
    assert len(new) == 5 and all("archived" not in p and p["in_trash"] is False for p in new)
    page = answer(fake_notion, "GET", page_path, "2026-03-11").json()
    assert "archived" not in page and page["in_trash"] is False

    # The 2026 copy follows edits of the stored page.
    fake_notion.edit(pages[0]["id"], {"Email": {"type": "email", "email": "neuf@exemple.fr"}})
    page = answer(fake_notion, "GET", page_path, "2026-03-11").json()
    assert page["properties"]["Email"]["email"] == "neuf@exemple.fr" and "archived" not in page

    for refused in ("2026-12-01", "2022-06-28"):
        error = answer(fake_notion, "POST", query, refused, json={})
        assert error.status_code == 400
        assert error.json()["code"] == "validation_error" and refused in error.json()["message"]


def test_an_archived_only_page_is_answered_trashed_under_2026_03_11(fake_notion):
    pages = fake_notion.seed_sample(3)
    fake_notion.seed([trashed_copy(pages[0], ("archived",), datetime.now(UTC))])
    page = answer(fake_notion, "GET", f"/v1/pages/{pages[0]['id']}", "2026-03-11").json()
    assert page["in_trash"] is True and "archived" not in page


def test_a_source_refuses_an_api_version_it_does_not_speak(fake_notion):
    with pytest.raises(ValueError, match=r"api_version.*2026-12-01.*2025-09-03 or 2026-03-11"):
        notion_source(fake_notion, api_version="2026-12-01")


# -- 429 reasons --------------------------------------------------------------------------------


class Lines(logging.Handler):
    """Collects the messages logged to it."""

    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def run_log(request):
    """A logger standing for the run's log, and the lines it received."""
    log = logging.getLogger(f"test_notion_versions.{request.node.name}")
    handler = Lines()
    log.addHandler(handler)
    yield log, handler
    log.removeHandler(handler)


def test_rate_limit_reasons_are_counted_and_logged_during_a_listing(fake_notion, run_log):
    fake_notion.seed_sample(350)
    fake_notion.inject(
        Fault("status", status=429, retry_after="0", times=2, rate_limit_reason="workspace_limit")
    )
    # Faults are tried in order, each counting only the requests it is asked about: the first
    # two query requests meet the 429s above, the fourth a 429 without reason, the sixth a 503.
    fake_notion.inject(Fault("status", status=429, retry_after="0", times=1, after=1))
    fake_notion.inject(
        Fault("status", status=503, times=1, after=2, rate_limit_reason="not-a-rate-limit")
    )
    log, handler = run_log
    stats = ListingStats()
    source = direct(fake_notion)
    listed = sum(
        len(t)
        for t in source.list_raw(edited_on_or_after=None, stats=stats, synced_at=SYNCED_AT, log=log)
    )
    assert listed == 350
    # Two 429s naming the workspace budget, one naming none; the 503 is no rate limit.
    assert stats.rate_limit_reasons == {"workspace_limit": 2, "unspecified": 1}
    assert stats.retries == 4
    warnings = [line for line in handler.lines if "retrying" in line]
    assert sum("429 rate_limited (rate_limit_reason: workspace_limit)" in w for w in warnings) == 2
    assert sum("429 rate_limited (rate_limit_reason: unspecified)" in w for w in warnings) == 1
    assert sum("503" in w and "rate_limit_reason" not in w for w in warnings) == 1


def test_the_fake_rate_limiter_names_the_connection_budget():
    fake = FakeNotion(rate_limit=5, burst=1)
    fake.add_database()
    fake.seed_sample(10)
    with fake:
        body = answer(fake, "GET", f"/v1/data_sources/{SAMPLE_DATA_SOURCE_ID}", "2025-09-03")
        limited = answer(fake, "GET", f"/v1/data_sources/{SAMPLE_DATA_SOURCE_ID}", "2025-09-03")
        assert body.status_code == 200 and limited.status_code == 429
        assert limited.json()["additional_data"] == {"rate_limit_reason": "connection_rate_limit"}
        source = direct(fake, max_retry_seconds=30)
        assert source.data_source_schema()["Email"]["id"] == SAMPLE_SCHEMA["Email"]["id"]
        answer(fake, "GET", f"/v1/data_sources/{SAMPLE_DATA_SOURCE_ID}", "2025-09-03")  # drain
        stats = ListingStats()
        listed = [
            row["page_id"]
            for table in source.list_raw(edited_on_or_after=None, stats=stats, synced_at=SYNCED_AT)
            for row in table.to_pylist()
        ]
    assert len(listed) == 10
    assert stats.rate_limit_reasons.get("connection_rate_limit", 0) >= 1
    assert set(stats.rate_limit_reasons) == {"connection_rate_limit"}
    assert sum(stats.rate_limit_reasons.values()) == stats.retries


def test_discovery_retries_are_reported_to_the_given_log(fake_notion, run_log):
    """Retries of the database and data-source GETs reach the run's log, not stderr only."""
    fake_notion.seed_sample(5)
    fake_notion.inject(
        Fault("status", route="database", status=429, retry_after="0", rate_limit_reason="ws")
    )
    fake_notion.inject(Fault("status", route="data_source", status=503))
    log, handler = run_log
    source = direct(fake_notion)
    assert source.data_source_schema(log=log)["Email"]["type"] == "email"
    assert any(
        f"GET /v1/databases/{SAMPLE_DATABASE_ID}: 429 rate_limited (rate_limit_reason: ws)" in line
        for line in handler.lines
    )
    assert any(
        f"GET /v1/data_sources/{SAMPLE_DATA_SOURCE_ID}: 503" in line for line in handler.lines
    )

    # A listing that discovers the data source itself reports there too.
    fake_notion.inject(Fault("status", route="database", status=500))
    handler.lines.clear()
    fresh = direct(fake_notion)
    for _ in fresh.list_raw(
        edited_on_or_after=None, stats=ListingStats(), synced_at=SYNCED_AT, log=log
    ):
        pass
    assert any("GET /v1/databases/" in line and "500" in line for line in handler.lines)


def test_a_materialization_logs_the_rate_limit_reason_in_the_run_log(
    notion_env, notion_resources, lake_uri
):
    notion_env.seed_sample(250)
    notion_env.inject(
        Fault("status", status=429, retry_after="0", times=1, after=1, rate_limit_reason="ws_limit")
    )
    instance = dg.DagsterInstance.ephemeral()
    result = run("sync_leads", notion_resources, instance=instance)
    assert result.success
    messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any("429 rate_limited (rate_limit_reason: ws_limit)" in m for m in messages)
    assert len(lake_rows(lake_uri, "leads", "id")) == 250


# -- trash in the in-memory sources -------------------------------------------------------------


def stamped(page: dict, minutes: int) -> dict:
    edited = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes)
    return {**page, "last_edited_time": edited.strftime("%Y-%m-%dT%H:%M:00.000Z")}


def test_is_trashed_reads_either_key():
    assert is_trashed({"archived": True})  # an export from before 2024
    assert is_trashed({"in_trash": True})  # a 2026-03-11 answer
    assert is_trashed({"in_trash": True, "archived": True})
    assert is_trashed({"in_trash": False, "archived": True})
    assert not is_trashed({})
    assert not is_trashed({"in_trash": False, "archived": False})
    assert not is_trashed({"in_trash": None})


def test_the_snapshot_source_leaves_out_pages_trashed_by_archived_alone(tmp_path):
    pages = [stamped(p, i) for i, p in enumerate(generate_pages(6, seed=9))]
    for index in (1, 5):  # 5 is the newest edit: the sensor probe must not report it
        pages[index] = {k: v for k, v in pages[index].items() if k != "in_trash"}
        pages[index]["archived"] = True
    pages[2] = {k: v for k, v in pages[2].items() if k != "archived"}  # 2026-03-11 shape, live
    pages[3] = {k: v for k, v in pages[3].items() if k != "archived"}
    pages[3]["in_trash"] = True
    path = tmp_path / "snapshot.json"
    write_snapshot(path, "ds", SAMPLE_SCHEMA, pages)
    source = SnapshotLeadsSource(path=str(path))
    listed = [
        p["id"]
        for batch in source.list_pages(edited_on_or_after=None, stats=ListingStats())
        for p in batch
    ]
    assert listed == [pages[i]["id"] for i in (0, 2, 4)]
    newest = source.latest_edit(after=None, stats=ListingStats())
    assert newest == datetime.fromisoformat(pages[4]["last_edited_time"].replace("Z", "+00:00"))


def test_a_sync_from_an_old_export_leaves_its_archived_pages_out_of_leads(tmp_path):
    pages = generate_pages(40, seed=13)
    archived = {pages[3]["id"], pages[17]["id"]}
    export = []
    for page in pages:  # pre-2024 shape: no in_trash at all
        page = {k: v for k, v in page.items() if k != "in_trash"}
        page["archived"] = page["id"] in archived
        export.append(page)
    path = tmp_path / "export.json"
    write_snapshot(path, "old-export", SAMPLE_SCHEMA, export)
    lake_uri = str(tmp_path / "lake")
    resources = {
        "source": SnapshotLeadsSource(path=str(path)),
        "lake": LakeResource(uri=lake_uri),
        "warehouse": WarehouseResource(path=str(tmp_path / "warehouse.duckdb")),
        "property_map": PropertyMapResource(),
    }
    run("sync_leads", resources)
    assert set(lake_rows(lake_uri, "leads", "id")) == {p["id"] for p in pages} - archived


def test_an_in_memory_source_never_lists_a_trashed_page_it_holds():
    pages = [stamped(p, i) for i, p in enumerate(generate_pages(4, seed=2))]
    pages[3] = {**pages[3], "archived": True, "in_trash": False}

    class Held(InMemoryLeadsSource):
        @property
        def source_name(self) -> str:
            return "held"

        def identity(self) -> str:
            return "held"

        def data_source_schema(self, log=None):
            return SAMPLE_SCHEMA

        def live_pages(self):
            return pages

    source = Held()
    listed = [
        p["id"]
        for batch in source.list_pages(edited_on_or_after=None, stats=ListingStats())
        for p in batch
    ]
    assert listed == [p["id"] for p in pages[:3]]
    newest = source.latest_edit(after=None, stats=ListingStats())
    assert newest == datetime.fromisoformat(pages[2]["last_edited_time"].replace("Z", "+00:00"))


# -- real recorded answers ----------------------------------------------------------------------


def real_pages_by_id() -> dict[str, dict]:
    """Every recorded page, its latest recording per id (skips when the corpus is absent)."""
    from leads_pipeline_tests.real_notion import recorded_pages

    return {row["page"]["id"]: row["page"] for row in recorded_pages()}


def trashed_in_json(page: dict) -> bool:
    return page.get("in_trash") is True or page.get("archived") is True


def test_real_pages_of_every_era_are_read_trashed_or_live_alike_in_both_decoders():
    pages = list(real_pages_by_id().values())
    # The corpus holds both shapes this is about: archived alone (pre-2024), in_trash alone (2026).
    assert any("in_trash" not in p and p.get("archived") is True for p in pages)
    assert any("archived" not in p and "in_trash" in p for p in pages)
    rows = answers_to_rows([answer_body(pages)], SYNCED_AT)
    expected = [trashed_in_json(p) for p in pages]
    assert rows["in_trash"].to_pylist() == expected
    assert [is_trashed(p) for p in pages] == expected


@pytest.mark.parametrize("version", VERSIONS)
def test_real_pages_listed_through_the_fake_under_each_version(fake_notion, version):
    pages = real_pages_by_id()
    fake_notion.seed(list(pages.values()))
    listed = {
        row["page_id"]
        for table in direct(fake_notion, api_version=version).list_raw(
            edited_on_or_after=None, stats=ListingStats(), synced_at=SYNCED_AT
        )
        for row in table.to_pylist()
    }
    assert listed == {pid for pid, page in pages.items() if not trashed_in_json(page)}
    assert versions_sent(fake_notion) == {version}
