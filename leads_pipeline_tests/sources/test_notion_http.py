"""Pacing, retries and error messages of Notion calls, against the fake server over real HTTP."""

from __future__ import annotations

import importlib.metadata
import inspect
import itertools
import json
import logging
import time
from email.utils import format_datetime

import httpx
import pytest
from notion_client import Client
from notion_client.errors import APIResponseError, RequestTimeoutError

from leads_pipeline.sources.base import ListingStats
from leads_pipeline.sources.notion_http import (
    CallPolicy,
    NotionCaller,
    NotionRetriesExhaustedError,
    Pacer,
    retry_after_seconds,
    send_undecoded,
)
from leads_pipeline.sources.sample_data import SAMPLE_DATA_SOURCE_ID
from leads_pipeline_tests.fake_notion import DEFAULT_TOKEN, Fault

QUERY_PATH = f"/v1/data_sources/{SAMPLE_DATA_SOURCE_ID}/query"


class FakeClock:
    """A clock that only moves when something sleeps: waits are measured, never spent."""

    def __init__(self):
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _client(fake) -> Client:
    return Client(auth=DEFAULT_TOKEN, base_url=fake.url, retry=False, timeout_ms=2000)


def _query(client: Client):
    return lambda: client.data_sources.query(data_source_id=SAMPLE_DATA_SOURCE_ID, page_size=5)


def test_a_long_retry_after_is_waited_in_full(fake_notion):
    """notion-client would cap a 5-minute Retry-After at 60 s; we wait all of it, then go on."""
    fake_notion.seed_sample(10)
    fake_notion.inject(Fault("status", status=429, retry_after="300"))
    clock = FakeClock()
    caller = NotionCaller(CallPolicy(requests_per_second=0), clock=clock, sleep=clock.sleep)
    stats = ListingStats()
    body = caller.call("POST", QUERY_PATH, _query(_client(fake_notion)), stats)
    assert len(body["results"]) == 5
    assert clock.sleeps == [300.0]
    assert stats.requests == 2 and stats.retries == 1
    assert stats.rate_limit_wait_seconds == 300.0


class Lines(logging.Handler):
    """Collects the messages logged to it."""

    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_rate_limit_reasons_are_counted_and_logged_and_long_waits_honoured(fake_notion):
    """A workspace-budget 429 may ask for more than notion-client's 60 s cap: all of it is
    waited; each 429 is counted by the reason Notion gave, ``unspecified`` when it gave none."""
    fake_notion.seed_sample(10)
    fake_notion.inject(
        Fault("status", status=429, retry_after="150", rate_limit_reason="workspace_limit")
    )
    fake_notion.inject(Fault("status", status=429, retry_after="2"))
    fake_notion.inject(
        Fault("status", status=429, retry_after="30", rate_limit_reason="connection_limit")
    )
    clock = FakeClock()
    handler = Lines()
    log = logging.getLogger("test_notion_http.reasons")
    log.addHandler(handler)
    caller = NotionCaller(CallPolicy(requests_per_second=0), clock=clock, sleep=clock.sleep)
    stats = ListingStats()
    body = caller.call("POST", QUERY_PATH, _query(_client(fake_notion)), stats, log=log)
    log.removeHandler(handler)
    assert len(body["results"]) == 5
    assert clock.sleeps == [150.0, 2.0, 30.0]
    assert stats.rate_limit_reasons == {
        "workspace_limit": 1,
        "unspecified": 1,
        "connection_limit": 1,
    }
    assert stats.rate_limit_wait_seconds == 182.0
    assert handler.lines == [
        f"Notion POST {QUERY_PATH}: 429 rate_limited (rate_limit_reason: workspace_limit); "
        "retrying in 150.0 s (attempt 1).",
        f"Notion POST {QUERY_PATH}: 429 rate_limited (rate_limit_reason: unspecified); "
        "retrying in 2.0 s (attempt 2).",
        f"Notion POST {QUERY_PATH}: 429 rate_limited (rate_limit_reason: connection_limit); "
        "retrying in 30.0 s (attempt 3).",
    ]


def test_a_retry_after_beyond_the_retry_budget_gives_up_at_once_naming_the_request(fake_notion):
    fake_notion.inject(Fault("status", status=429, retry_after="3600", times=None))
    clock = FakeClock()
    caller = NotionCaller(
        CallPolicy(requests_per_second=0, max_retry_seconds=600), clock=clock, sleep=clock.sleep
    )
    with pytest.raises(NotionRetriesExhaustedError) as caught:
        caller.call("POST", QUERY_PATH, _query(_client(fake_notion)), ListingStats())
    assert f"POST {QUERY_PATH}" in str(caught.value)
    assert "429" in str(caught.value) and "max_retry_seconds=600" in str(caught.value)
    assert clock.sleeps == []
    assert DEFAULT_TOKEN not in str(caught.value)


def test_server_errors_back_off_exponentially_and_are_bounded(fake_notion):
    fake_notion.inject(Fault("status", status=503, times=None))
    clock = FakeClock()
    policy = CallPolicy(
        requests_per_second=0,
        max_retry_seconds=100,
        initial_backoff_seconds=1,
        max_backoff_seconds=16,
    )
    caller = NotionCaller(policy, clock=clock, sleep=clock.sleep, jitter=lambda: 1.0)
    stats = ListingStats()
    with pytest.raises(NotionRetriesExhaustedError, match="503"):
        caller.call("POST", QUERY_PATH, _query(_client(fake_notion)), stats)
    assert clock.sleeps == [1, 2, 4, 8, 16, 16, 16, 16, 16]
    assert sum(clock.sleeps) <= 100
    assert stats.rate_limit_wait_seconds == 0 and stats.retries == len(clock.sleeps)


@pytest.mark.parametrize(
    "fault",
    [
        Fault("status", status=500, times=2),
        Fault("status", status=502, html=True, times=2),
        Fault("status", status=504, times=1),
        Fault("status", status=529, times=1),
        Fault("disconnect", times=2),
        Fault("slow", delay=2.5, times=1),  # longer than the client's 2 s timeout
    ],
    ids=["500", "502-html", "504", "529", "connection-dropped", "timeout"],
)
def test_transient_failures_are_retried_until_success(fake_notion, fault):
    fake_notion.seed_sample(10)
    fake_notion.inject(fault)
    caller = NotionCaller(CallPolicy(requests_per_second=0, initial_backoff_seconds=0.01))
    stats = ListingStats()
    body = caller.call("POST", QUERY_PATH, _query(_client(fake_notion)), stats)
    assert len(body["results"]) == 5
    assert stats.retries == fault.times


def test_a_connection_refused_is_retried_then_reported(fake_notion):
    url = fake_notion.url
    fake_notion.stop()
    client = Client(auth=DEFAULT_TOKEN, base_url=url, retry=False)
    caller = NotionCaller(
        CallPolicy(requests_per_second=0, max_retry_seconds=0.3, initial_backoff_seconds=0.05)
    )
    with pytest.raises(NotionRetriesExhaustedError, match="ConnectError"):
        caller.call("POST", QUERY_PATH, _query(client), ListingStats())


def test_pacing_spaces_requests_to_the_average_rate():
    clock = FakeClock()
    pacer = Pacer(3.0, clock=clock, sleep=clock.sleep)
    starts = []
    for _ in range(7):
        pacer.wait()
        starts.append(clock.now)
        clock.now += 0.05  # the request itself
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(gap == pytest.approx(1 / 3) for gap in gaps)
    assert Pacer(0).wait() == 0.0


def test_pacing_allows_a_burst_then_holds_the_average():
    clock = FakeClock()
    pacer = Pacer(3.0, clock=clock, sleep=clock.sleep, burst=3)
    starts, waits = [], []
    for _ in range(12):
        waits.append(pacer.wait())
        starts.append(clock.now)
        clock.now += 0.01
    assert waits[:3] == pytest.approx([0.0, 0.0, 0.0], abs=1e-9)
    assert all(w > 0 for w in waits[3:])
    # Never more than burst + rate * t starts in any span of t seconds.
    for i, j in itertools.combinations(range(len(starts)), 2):
        assert j - i + 1 <= 3 + 3 * (starts[j] - starts[i]) + 1e-9
    gaps = [b - a for a, b in itertools.pairwise(starts[3:])]
    assert all(gap == pytest.approx(1 / 3) for gap in gaps)
    # After a pause, the bucket refills to the burst, not beyond.
    clock.now += 10
    assert [pacer.wait() for _ in range(3)] == pytest.approx([0.0, 0.0, 0.0], abs=1e-9)
    assert pacer.wait() > 0.1


def test_pacing_against_a_live_server(fake_notion):
    fake_notion.seed_sample(10)
    caller = NotionCaller(CallPolicy(requests_per_second=20, burst=1))
    stats = ListingStats()
    query = _query(_client(fake_notion))
    started = time.monotonic()
    for _ in range(11):
        caller.call("POST", QUERY_PATH, query, stats)
    assert time.monotonic() - started >= 10 / 20 * 0.95
    assert stats.pacing_wait_seconds > 0.3


def test_retry_after_header_forms():
    assert retry_after_seconds(httpx.Headers({"Retry-After": "120"})) == 120
    assert retry_after_seconds(httpx.Headers({})) is None
    assert retry_after_seconds(httpx.Headers({"Retry-After": "soon"})) is None
    future = time.time() + 90
    header = format_datetime(
        __import__("datetime").datetime.fromtimestamp(future, __import__("datetime").UTC),
        usegmt=True,
    )
    assert retry_after_seconds(httpx.Headers({"Retry-After": header})) == pytest.approx(90, abs=2)


# -- the private notion-client calls behind send_undecoded --------------------------------------

#: What :func:`send_undecoded` relies on: name → the leading parameters it passes, in order.
PRIVATE_CALLS = {
    "_build_request": ["self", "method", "path", "query", "body"],
    "_parse_response": ["self", "response"],
}


def _changed(what: str) -> str:
    version = importlib.metadata.version("notion-client")
    return (
        f"notion-client {version} changed {what}, a private part of it that "
        "leads_pipeline.sources.notion_http.send_undecoded relies on to read query answers "
        "undecoded. Adapt send_undecoded (and this test) to the new notion-client, or pin the "
        "previous version."
    )


@pytest.mark.parametrize("name", sorted(PRIVATE_CALLS))
def test_the_private_notion_client_calls_keep_their_signature(name):
    method = getattr(Client, name, None)
    if method is None:
        pytest.fail(_changed(f"Client.{name}: it is gone"))
    found = list(inspect.signature(method).parameters)
    expected = PRIVATE_CALLS[name]
    if found[: len(expected)] != expected:
        pytest.fail(_changed(f"Client.{name}: parameters {expected} are now {found}"))
    if not isinstance(getattr(_client_without_server(), "client", None), httpx.Client):
        pytest.fail(_changed("Client.client: it is no longer the httpx.Client sending requests"))


def _client_without_server() -> Client:
    return Client(auth=DEFAULT_TOKEN, base_url="http://127.0.0.1:9", retry=False)


def test_send_undecoded_answers_bytes_and_notion_clients_own_errors(fake_notion):
    """A real call through the wrapped private calls: the bytes Notion sent, notion-client's
    headers, and the errors notion-client raises (an error status, a timeout)."""
    pages = fake_notion.seed_sample(5)
    client = _client(fake_notion)
    path = f"data_sources/{SAMPLE_DATA_SOURCE_ID}/query"
    body = {"page_size": 2, "sorts": [{"timestamp": "last_edited_time", "direction": "ascending"}]}
    try:
        answer = send_undecoded(client, "POST", path, body)
    except (AttributeError, TypeError) as error:
        pytest.fail(_changed(f"how Client._build_request or _parse_response is called ({error})"))
    assert isinstance(answer, bytes)
    decoded = json.loads(answer)
    first_two = sorted(pages, key=lambda p: (p["last_edited_time"], p["id"]))[:2]
    assert [p["id"] for p in decoded["results"]] == [p["id"] for p in first_two]
    assert decoded["has_more"] is True and decoded["next_cursor"]
    sent = {key.lower(): value for key, value in fake_notion.headers_seen[-1].items()}
    assert sent["authorization"] == f"Bearer {DEFAULT_TOKEN}"
    assert sent["notion-version"] == client.options.notion_version

    missing = "0" * 8 + "-0000-4000-8000-" + "0" * 12
    with pytest.raises(APIResponseError) as caught:
        send_undecoded(client, "POST", f"data_sources/{missing}/query", {})
    assert caught.value.status == 404 and caught.value.code == "object_not_found"

    fake_notion.inject(Fault("slow", delay=2.5))  # longer than the client's 2 s timeout
    with pytest.raises(RequestTimeoutError):
        send_undecoded(client, "POST", path, body)
