"""A fake Notion API (versions 2025-09-03 and 2026-03-11) served over real HTTP on 127.0.0.1.

It behaves like the parts of the real API the pipeline uses: ``GET /v1/databases/{id}``,
``GET /v1/data_sources/{id}``, ``POST /v1/data_sources/{id}/query`` (timestamp filters with
``and``/``or``, timestamp sorts, ``page_size`` ≤ 100, cursors, the 10,000-row cap reported by
``request_status: incomplete``, trashed pages hidden), ``GET /v1/pages/{id}`` and
``GET /v1/pages/{id}/properties/{property_id}`` (paginated ``people``/``relation``). It checks the
``Authorization: Bearer`` and ``Notion-Version`` headers (2026-03-11 answers carry ``in_trash``
but no ``archived``), answers Notion-shaped errors, rounds timestamps down to the minute, can
rate-limit (token bucket, 429 + ``Retry-After`` + ``additional_data.rate_limit_reason``) and takes
injected faults (error statuses N times or forever, slow answers, dropped connections, invalid
cursors). Pages are serialised once, so a query costs a slice and a ``join``.

Run standalone (benchmarks)::

    python -m leads_pipeline_tests.fake_notion --pages 30000 --rate-limit 3
"""

from __future__ import annotations

import argparse
import base64
import bisect
import hashlib
import json
import math
import sys
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from leads_pipeline.sources.sample_data import (
    SAMPLE_DATA_SOURCE_ID,
    SAMPLE_DATABASE_ID,
    SAMPLE_SCHEMA,
    generate_pages,
)

DEFAULT_TOKEN = "ntn_FAKE0secret0token0for0tests0only0do0not0leak0123456789"
NOTION_VERSION = "2025-09-03"
#: ``Notion-Version`` values the fake answers; any other gets 400 ``validation_error``.
NOTION_VERSIONS = ("2025-09-03", "2026-03-11")
#: From this version on, page objects carry ``in_trash`` only (no ``archived``).
NO_ARCHIVED_FROM = "2026-03-11"
#: ``additional_data.rate_limit_reason`` of the fake's own rate limiter (the per-connection
#: budget; a real 429 names the per-connection or the per-workspace limit, or another reason).
CONNECTION_RATE_LIMIT = "connection_rate_limit"
RESULT_CAP = 10_000
REFERENCE_LIMIT = 25
_TIMESTAMPS = ("created_time", "last_edited_time")
_MAX_BODY = 1 << 20

_ERROR_CODES = {
    400: "validation_error",
    401: "unauthorized",
    403: "restricted_resource",
    404: "object_not_found",
    409: "conflict_error",
    429: "rate_limited",
    500: "internal_server_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
    529: "service_overload",
}


def dashed(text: str) -> str:
    """A Notion id in dashed lower-case form (ids are accepted with or without dashes)."""
    bare = text.replace("-", "").lower()
    if len(bare) != 32:
        return text
    return f"{bare[:8]}-{bare[8:12]}-{bare[12:16]}-{bare[16:20]}-{bare[20:]}"


def iso_minute(instant: datetime) -> str:
    """Notion's timestamp format, rounded down to the minute."""
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:00.000Z")


def _epoch(text: str) -> float:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def _dumps(value) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


class FakeError(Exception):
    """An error answer: status, Notion code and message, optional headers."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers=None,
        additional_data: dict | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.code = code or _ERROR_CODES.get(status, "internal_server_error")
        self.message = message
        self.headers = headers or {}
        self.additional_data = additional_data


@dataclass
class Fault:
    """An injected fault on requests to ``route`` (``query``, ``database``, ``data_source``,
    ``page``, ``page_property`` or ``*``).

    Attributes:
        kind: ``status`` (answer ``status``), ``slow`` (sleep ``delay`` then answer normally),
            ``disconnect`` (close the connection without answering) or ``invalid_cursor``
            (reject requests that carry a ``start_cursor``).
        times: How many requests it hits; None for every one (a permanent fault).
        status: HTTP status of a ``status`` fault.
        retry_after: ``Retry-After`` header value of a ``status`` fault (e.g. for 429).
        delay: Seconds of a ``slow`` fault.
        html: Answer an HTML body (as a gateway would) instead of Notion's JSON error.
        after: Matching requests let through before the fault starts.
        rate_limit_reason: ``additional_data.rate_limit_reason`` of the error body (for 429);
            None leaves ``additional_data`` out, as older answers do.
    """

    kind: str
    route: str = "query"
    times: int | None = 1
    status: int = 500
    retry_after: str | None = None
    delay: float = 0.0
    html: bool = False
    after: int = 0
    rate_limit_reason: str | None = None
    hits: int = 0
    seen: int = 0


class _TokenBucket:
    def __init__(self, rate: float, burst: float):
        self.rate, self.burst = rate, burst
        self.tokens, self.stamp = burst, time.monotonic()

    def take(self) -> float:
        """Takes a token; returns 0 when allowed, else the seconds until one is available."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


@dataclass
class DataSource:
    """One data source: its schema and pages, with sorted indexes kept up to date lazily."""

    id: str
    name: str
    database_id: str
    schema: dict[str, dict]
    pages: dict[str, dict] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    references: dict[tuple[str, str], list[dict]] = field(default_factory=dict)
    _index: dict[str, tuple[list, list]] = field(default_factory=dict)

    def store(self, page: dict) -> None:
        self.pages[page["id"]] = page
        self.blobs[page["id"]] = _dumps(page)
        self._index.clear()

    def ordered(self, timestamp: str) -> tuple[list[tuple[float, str]], list[float]]:
        """Live pages as sorted ``(time, id)`` pairs, and the times alone (for bisection)."""
        if timestamp not in self._index:
            pairs = sorted(
                (_epoch(p[timestamp]), pid)
                for pid, p in self.pages.items()
                if not p.get("in_trash")
            )
            self._index[timestamp] = (pairs, [t for t, _ in pairs])
        return self._index[timestamp]


class FakeNotion:
    """State and behaviour of the fake API; serve it with :meth:`start`.

    Args:
        token: The only bearer token accepted.
        rate_limit: Requests per second allowed on average (token bucket); None for no limit.
        burst: Bucket size of the rate limit.
        result_cap: Rows one query returns at most before ``request_status: incomplete``.
        versions: ``Notion-Version`` values accepted. Pages are served as stored for 2025-09-03
            and, from 2026-03-11, with ``in_trash`` (from ``archived`` when missing) and without
            ``archived``.
        rate_limit_reason: ``additional_data.rate_limit_reason`` of the rate limiter's 429s.
    """

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        *,
        rate_limit: float | None = None,
        burst: float = 3.0,
        result_cap: int = RESULT_CAP,
        versions: tuple[str, ...] = NOTION_VERSIONS,
        rate_limit_reason: str = CONNECTION_RATE_LIMIT,
    ):
        self.token = token
        self.result_cap = result_cap
        self.versions = tuple(versions)
        self.rate_limit_reason = rate_limit_reason
        #: Page id → (stored blob, the same page without ``archived``), built on first use and
        #: rebuilt when the stored blob is replaced.
        self._unarchived: dict[str, tuple[bytes, bytes]] = {}
        self.databases: dict[str, dict] = {}
        self.data_sources: dict[str, DataSource] = {}
        self.faults: list[Fault] = []
        self.counts: Counter[str] = Counter()
        self.log: deque[tuple[str, str, int]] = deque(maxlen=200_000)
        self.headers_seen: deque[dict] = deque(maxlen=1000)
        self.lock = threading.RLock()
        self._bucket = _TokenBucket(rate_limit, burst) if rate_limit else None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- setup helpers -----------------------------------------------------------------------

    def add_database(
        self,
        database_id: str = SAMPLE_DATABASE_ID,
        title: str = "Leads",
        data_sources: list[tuple[str, str, dict]] | None = None,
    ) -> dict:
        """Adds a database with its data sources ``(id, name, schema)`` (default: the sample one)."""
        if data_sources is None:
            data_sources = [(SAMPLE_DATA_SOURCE_ID, "Leads", SAMPLE_SCHEMA)]
        with self.lock:
            database = {
                "object": "database",
                "id": dashed(database_id),
                "title": [{"type": "text", "plain_text": title, "text": {"content": title}}],
                "data_sources": [{"id": dashed(i), "name": n} for i, n, _ in data_sources],
                "in_trash": False,
            }
            self.databases[dashed(database_id)] = database
            for ds_id, name, schema in data_sources:
                self.data_sources[dashed(ds_id)] = DataSource(
                    id=dashed(ds_id),
                    name=name,
                    database_id=dashed(database_id),
                    schema=json.loads(json.dumps(schema)),
                )
        return database

    def seed(self, pages: list[dict], data_source_id: str = SAMPLE_DATA_SOURCE_ID) -> None:
        """Stores pages (copied; timestamps rounded down to the minute) in a data source."""
        source = self.data_sources[dashed(data_source_id)]
        with self.lock:
            for page in pages:
                page = json.loads(json.dumps(page))
                for key in _TIMESTAMPS:
                    page[key] = iso_minute(datetime.fromisoformat(page[key].replace("Z", "+00:00")))
                source.store(page)

    def seed_sample(self, count: int, seed: int = 7) -> list[dict]:
        """Adds the sample database (if missing) and ``count`` generated pages; returns them."""
        if dashed(SAMPLE_DATABASE_ID) not in self.databases:
            self.add_database()
        pages = generate_pages(count, seed)
        source = self.data_sources[dashed(SAMPLE_DATA_SOURCE_ID)]
        with self.lock:
            for page in pages:
                source.store(page)  # generated pages are already minute-rounded; not mutated
        return pages

    def source_of(self, page_id: str) -> DataSource:
        for source in self.data_sources.values():
            if page_id in source.pages:
                return source
        raise KeyError(page_id)

    def page(self, page_id: str) -> dict:
        """The stored page (a copy)."""
        with self.lock:
            return json.loads(json.dumps(self.source_of(page_id).pages[page_id]))

    def edit(
        self, page_id: str, values: dict[str, dict] | None = None, at: datetime | None = None
    ) -> dict:
        """Edits a page: replaces property values (by property name) and stamps the edit time.

        Args:
            page_id: The page.
            values: Property name → value object without ``id`` (e.g. ``{"type": "email",
                "email": "x@y.fr"}``).
            at: Edit instant (rounded down to the minute); now when omitted.

        Returns:
            The edited page.
        """
        with self.lock:
            source = self.source_of(page_id)
            page = json.loads(json.dumps(source.pages[page_id]))
            for name, value in (values or {}).items():
                page["properties"][name] = {"id": source.schema[name]["id"], **value}
            page["last_edited_time"] = iso_minute(at or datetime.now(UTC))
            source.store(page)
            return page

    def trash(self, page_id: str, at: datetime | None = None) -> None:
        """Moves a page to the trash: queries stop returning it."""
        with self.lock:
            source = self.source_of(page_id)
            page = dict(source.pages[page_id])
            page["in_trash"] = page["archived"] = True
            page["last_edited_time"] = iso_minute(at or datetime.now(UTC))
            source.store(page)

    def add_page(self, page: dict, data_source_id: str = SAMPLE_DATA_SOURCE_ID) -> None:
        """Adds one page (timestamps rounded down to the minute)."""
        self.seed([page], data_source_id)

    def rename_property(
        self, old: str, new: str, data_source_id: str = SAMPLE_DATA_SOURCE_ID
    ) -> None:
        """Renames a property: its id stays, pages are keyed by the new name from now on."""
        with self.lock:
            source = self.data_sources[dashed(data_source_id)]
            prop = source.schema.pop(old)
            prop["name"] = new
            source.schema[new] = prop
            for page in list(source.pages.values()):
                page = dict(page)
                page["properties"] = {
                    (new if name == old else name): value
                    for name, value in page["properties"].items()
                }
                source.store(page)

    def add_property(
        self,
        name: str,
        prop_schema: dict,
        value_for_page,
        data_source_id: str = SAMPLE_DATA_SOURCE_ID,
    ) -> dict:
        """Adds a property to the schema; every page gains a value and no edit time moves.

        Args:
            name: The new property's name.
            prop_schema: Its schema entry, e.g. ``{"type": "select", "select": {"options": []}}``
                (an ``id`` is made up when absent).
            value_for_page: The value object without ``id`` every page gets (e.g.
                ``{"type": "select", "select": None}``), or a callable page (a copy) → value.
            data_source_id: The data source.

        Returns:
            The schema entry added.
        """
        with self.lock:
            source = self.data_sources[dashed(data_source_id)]
            if name in source.schema:
                raise ValueError(f"data source {source.id} already has a property {name!r}")
            prop = {"id": uuid.uuid4().hex[:8], **json.loads(json.dumps(prop_schema))}
            prop["name"] = name
            self._set_everywhere(source, name, prop, value_for_page)
            return prop

    def retype_property(
        self,
        name: str,
        prop_schema: dict,
        value_for_page,
        data_source_id: str = SAMPLE_DATA_SOURCE_ID,
    ) -> None:
        """Changes a property's type (its id and name stay); every page gets a value of the new
        type, no edit time moves. Arguments as for :meth:`add_property`."""
        with self.lock:
            source = self.data_sources[dashed(data_source_id)]
            prop = {**json.loads(json.dumps(prop_schema)), "id": source.schema[name]["id"]}
            prop["name"] = name
            self._set_everywhere(source, name, prop, value_for_page)

    def remove_property(self, name: str, data_source_id: str = SAMPLE_DATA_SOURCE_ID) -> None:
        """Deletes a property from the schema and from every page; no edit time moves."""
        with self.lock:
            source = self.data_sources[dashed(data_source_id)]
            del source.schema[name]
            for page in list(source.pages.values()):
                page = json.loads(json.dumps(page))
                page["properties"].pop(name, None)
                source.store(page)

    def set_value_silently(self, page_id: str, name: str, value: dict) -> dict:
        """Changes one property value without touching ``last_edited_time`` (a formula over
        ``now()``, a relation emptied from the other side). ``value`` as for :meth:`edit`."""
        with self.lock:
            source = self.source_of(page_id)
            page = json.loads(json.dumps(source.pages[page_id]))
            page["properties"][name] = {"id": source.schema[name]["id"], **value}
            source.store(page)
            return page

    @staticmethod
    def _set_everywhere(source: DataSource, name: str, prop: dict, value_for_page) -> None:
        source.schema[name] = prop
        for page in list(source.pages.values()):
            page = json.loads(json.dumps(page))
            value = value_for_page(page) if callable(value_for_page) else value_for_page
            page["properties"][name] = {"id": prop["id"], **json.loads(json.dumps(value))}
            source.store(page)

    def set_references(self, page_id: str, name: str, items: list[dict]) -> None:
        """Gives a ``people``/``relation`` property ``items``; pages show the first 25 + has_more."""
        with self.lock:
            source = self.source_of(page_id)
            page = json.loads(json.dumps(source.pages[page_id]))
            value = page["properties"][name]
            source.references[(page_id, value["id"])] = items
            value[value["type"]] = items[:REFERENCE_LIMIT]
            value["has_more"] = len(items) > REFERENCE_LIMIT
            source.store(page)

    def serve_raw(self, page_id: str, blob: bytes) -> None:
        """Serves ``blob`` verbatim as the page in 2025-09-03 query answers: bytes ``json`` would
        never write (a lone surrogate escape, bytes that are not UTF-8). Filters and sorts still
        see the page as stored."""
        with self.lock:
            self.source_of(page_id).blobs[page_id] = blob

    def inject(self, fault: Fault) -> Fault:
        """Adds a fault; returns it (its ``hits`` count what it did)."""
        with self.lock:
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def reset_counts(self) -> None:
        with self.lock:
            self.counts.clear()
            self.log.clear()

    # -- serving -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self, port: int = 0) -> FakeNotion:
        """Serves on 127.0.0.1 (an ephemeral port by default) in a daemon thread."""
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeNotion:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- request handling --------------------------------------------------------------------

    def handle(self, method: str, raw_path: str, headers, body: bytes) -> tuple[int, dict, bytes]:
        """Answers one request: ``(status, headers, body)``; ``status`` 0 drops the connection."""
        split = urlsplit(raw_path)
        parts = [p for p in split.path.split("/") if p]
        if parts[:1] == ["_fake"]:
            return self._admin(parts[1:])
        route, args = _route(method, parts)
        with self.lock:
            self.counts[route] += 1
            self.headers_seen.append(dict(headers.items()))
        try:
            self._check(route, headers)
            fault = self._fault(route, body)
            if fault is not None:
                if fault.kind == "disconnect":
                    return 0, {}, b""
                if fault.kind == "slow":
                    time.sleep(fault.delay)
                elif fault.kind == "status":
                    if fault.html:
                        return fault.status, {"Content-Type": "text/html"}, b"<html>502</html>"
                    extra = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                    reason = fault.rate_limit_reason
                    raise FakeError(
                        fault.status,
                        f"Injected {fault.status}.",
                        headers=extra,
                        additional_data={"rate_limit_reason": reason} if reason else None,
                    )
            query = parse_qs(split.query)
            version = headers.get("Notion-Version")
            status, payload = 200, self._dispatch(route, args, body, query, version)
        except FakeError as error:
            status = error.status
            answer = {
                "object": "error",
                "status": error.status,
                "code": error.code,
                "message": error.message,
            }
            if error.additional_data is not None:
                answer["additional_data"] = error.additional_data
            payload = _dumps({**answer, "request_id": str(uuid.uuid4())})
            with self.lock:
                self.log.append((method, split.path, status))
            return status, {"Content-Type": "application/json", **error.headers}, payload
        with self.lock:
            self.log.append((method, split.path, status))
        return status, {"Content-Type": "application/json"}, payload

    def _admin(self, parts: list[str]) -> tuple[int, dict, bytes]:
        if parts == ["reset"]:
            self.reset_counts()
        with self.lock:
            payload = _dumps({"counts": dict(self.counts)})
        return 200, {"Content-Type": "application/json"}, payload

    def _check(self, route: str, headers) -> None:
        if headers.get("Authorization") != f"Bearer {self.token}":
            raise FakeError(401, "API token is invalid.")
        version = headers.get("Notion-Version")
        if not version:
            raise FakeError(400, "Notion-Version header failed validation.", "missing_version")
        if version not in self.versions:
            raise FakeError(
                400,
                f"Notion-Version header failed validation: {version!r} is not a supported API "
                f"version (the fake speaks {', '.join(self.versions)}).",
                "validation_error",
            )
        if self._bucket is not None:
            with self.lock:
                wait = self._bucket.take()
            if wait > 0:
                raise FakeError(
                    429,
                    "You have been rate limited. Please try again in a few minutes.",
                    headers={"Retry-After": str(max(1, math.ceil(wait)))},
                    additional_data={"rate_limit_reason": self.rate_limit_reason},
                )
        if route == "unknown":
            raise FakeError(400, "Invalid request URL.", "invalid_request_url")

    def _fault(self, route: str, body: bytes) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.route not in ("*", route):
                    continue
                if fault.times is not None and fault.hits >= fault.times:
                    continue
                if fault.kind == "invalid_cursor" and b'"start_cursor"' not in body:
                    continue
                fault.seen += 1
                if fault.seen <= fault.after:
                    continue
                fault.hits += 1
                if fault.kind == "invalid_cursor":
                    raise FakeError(400, "The start_cursor provided is invalid: (injected).")
                return fault
        return None

    def _dispatch(
        self, route: str, args: list[str], body: bytes, query: dict, version: str = NOTION_VERSION
    ) -> bytes:
        if route == "database":
            database = self.databases.get(dashed(args[0]))
            if database is None:
                raise FakeError(
                    404,
                    f"Could not find database with ID: {args[0]}. Make sure the relevant pages "
                    "and databases are shared with your integration.",
                )
            return _dumps(database)
        source = None
        if route in ("data_source", "query"):
            source = self.data_sources.get(dashed(args[0]))
            if source is None:
                raise FakeError(
                    404,
                    f"Could not find data_source with ID: {args[0]}. Make sure the relevant "
                    "pages and databases are shared with your integration.",
                )
        if route == "data_source":
            return _dumps(
                {
                    "object": "data_source",
                    "id": source.id,
                    "name": source.name,
                    "title": [{"type": "text", "plain_text": source.name}],
                    "parent": {"type": "database_id", "database_id": source.database_id},
                    "properties": source.schema,
                }
            )
        if route == "query":
            try:
                request = json.loads(body or b"{}")
            except ValueError as error:
                raise FakeError(400, "Error parsing JSON body.", "invalid_json") from error
            with self.lock:
                return self._query(source, request, version)
        if route == "page":
            with self.lock:
                try:
                    source = self.source_of(dashed(args[0]))
                except KeyError:
                    raise FakeError(404, f"Could not find page with ID: {args[0]}.") from None
                return self._page_blob(source, dashed(args[0]), version)
        if route == "page_property":
            with self.lock:
                return self._property(dashed(args[0]), args[1], query)
        raise FakeError(400, "Invalid request URL.", "invalid_request_url")  # pragma: no cover

    def _page_blob(self, source: DataSource, page_id: str, version: str) -> bytes:
        """A stored page as answered under ``version`` (see the class's ``versions``)."""
        blob = source.blobs[page_id]
        if version < NO_ARCHIVED_FROM:
            return blob
        cached = self._unarchived.get(page_id)
        if cached is None or cached[0] is not blob:
            page = dict(source.pages[page_id])
            page["in_trash"] = bool(page.get("in_trash")) or bool(page.get("archived"))
            page.pop("archived", None)
            cached = (blob, _dumps(page))
            self._unarchived[page_id] = cached
        return cached[1]

    def _query(self, source: DataSource, request: dict, version: str = NOTION_VERSION) -> bytes:
        page_size = request.get("page_size", 100)
        if not isinstance(page_size, int) or not 1 <= page_size <= 100:
            raise FakeError(
                400,
                f"body failed validation: body.page_size should be ≤ `100`, instead was "
                f"`{page_size}`.",
            )
        sorts = request.get("sorts") or [{"timestamp": "created_time", "direction": "descending"}]
        if len(sorts) != 1 or sorts[0].get("timestamp") not in _TIMESTAMPS:
            raise FakeError(400, "The fake Notion sorts by one timestamp only.")
        timestamp = sorts[0]["timestamp"]
        descending = sorts[0].get("direction") == "descending"
        condition = request.get("filter")
        fingerprint = hashlib.sha1(
            json.dumps([condition, sorts], sort_keys=True).encode()
        ).hexdigest()[:16]
        pairs, times = source.ordered(timestamp)
        low, high = 0, len(pairs)
        bounds = _simple_bounds(condition, timestamp)
        if bounds is not None:
            for operator, value in bounds:
                low, high = _narrow(times, operator, value, low, high)
        else:
            pairs = [pair for pair in pairs if _matches(condition, source.pages[pair[1]])]
            low, high = 0, len(pairs)

        seen = 0
        cursor = request.get("start_cursor")
        if cursor is not None:
            state = _decode_cursor(cursor)
            if state is None or state["q"] != fingerprint:
                raise FakeError(400, f"The start_cursor provided is invalid: {cursor}")
            key, seen = (state["t"], state["i"]), state["n"]
            if descending:
                high = max(low, min(high, bisect.bisect_left(pairs, key, low, high)))
            else:
                low = min(high, max(low, bisect.bisect_right(pairs, key, low, high)))
        take = min(page_size, self.result_cap - seen)
        if descending:
            chunk = pairs[max(low, high - take) : high][::-1]
            left = max(low, high - take) - low
        else:
            chunk = pairs[low : low + take]
            left = high - (low + take)
        left = max(left, 0)
        seen += len(chunk)
        incomplete = left > 0 and seen >= self.result_cap
        next_cursor = None
        if left > 0 and not incomplete:
            last_time, last_id = chunk[-1]
            next_cursor = _encode_cursor(
                {"q": fingerprint, "t": last_time, "i": last_id, "n": seen}
            )
        tail = {
            "next_cursor": next_cursor,
            "has_more": next_cursor is not None,
            "type": "page_or_data_source",
            "page_or_data_source": {},
            "request_id": str(uuid.uuid4()),
        }
        if incomplete:
            tail["request_status"] = {
                "type": "incomplete",
                "incomplete_reason": "query_result_limit_reached",
            }
        if version < NO_ARCHIVED_FROM:
            blobs = source.blobs
            results = b",".join(blobs[pid] for _, pid in chunk)
        else:
            results = b",".join(self._page_blob(source, pid, version) for _, pid in chunk)
        return b'{"object":"list","results":[' + results + b"]," + _dumps(tail)[1:]

    def _property(self, page_id: str, property_id: str, query: dict) -> bytes:
        try:
            source = self.source_of(page_id)
        except KeyError:
            raise FakeError(404, f"Could not find page with ID: {page_id}.") from None
        page = source.pages[page_id]
        value = next(
            (v for v in page["properties"].values() if unquote(v["id"]) == unquote(property_id)),
            None,
        )
        if value is None:
            raise FakeError(404, f"Could not find property with ID: {property_id}.")
        kind = value["type"]
        item = {"object": "property_item", "id": value["id"], "type": kind}
        if kind not in ("people", "relation", "title", "rich_text"):
            return _dumps({**item, kind: value[kind]})
        items = source.references.get((page_id, value["id"]), value[kind])
        start = int((query.get("start_cursor") or ["0"])[0])
        size = min(int((query.get("page_size") or ["25"])[0]), 100)
        chunk = items[start : start + size]
        more = start + size < len(items)
        return _dumps(
            {
                "object": "list",
                "results": [{**item, kind: entry} for entry in chunk],
                "next_cursor": str(start + size) if more else None,
                "has_more": more,
                "type": "property_item",
                "property_item": {"id": value["id"], "next_url": None, "type": kind, kind: {}},
                "request_id": str(uuid.uuid4()),
            }
        )


def _route(method: str, parts: list[str]) -> tuple[str, list[str]]:
    if len(parts) < 2 or parts[0] != "v1":
        return "unknown", []
    rest = parts[1:]
    if method == "GET" and len(rest) == 2 and rest[0] == "databases":
        return "database", rest[1:]
    if method == "GET" and len(rest) == 2 and rest[0] == "data_sources":
        return "data_source", rest[1:]
    if method == "POST" and len(rest) == 3 and rest[0] == "data_sources" and rest[2] == "query":
        return "query", rest[1:2]
    if method == "GET" and len(rest) == 2 and rest[0] == "pages":
        return "page", rest[1:]
    if method == "GET" and len(rest) == 4 and rest[0] == "pages" and rest[2] == "properties":
        return "page_property", [rest[1], rest[3]]
    return "unknown", []


def _encode_cursor(state: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(state).encode()).decode()


def _decode_cursor(cursor: str) -> dict | None:
    try:
        state = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return state if {"q", "t", "i", "n"} <= set(state) else None
    except (ValueError, TypeError):
        return None


def _simple_bounds(condition: dict | None, timestamp: str) -> list[tuple[str, float]] | None:
    """The filter as range bounds on the sort timestamp, or None when it is anything else."""
    if condition is None:
        return []
    leaves = condition.get("and") if "and" in condition else [condition]
    bounds = []
    for leaf in leaves:
        if leaf.get("timestamp") != timestamp or "and" in leaf or "or" in leaf:
            return None
        ((operator, value),) = leaf[timestamp].items()
        if operator not in ("on_or_after", "after", "before", "on_or_before", "equals"):
            return None
        bounds.append((operator, _epoch(value)))
    return bounds


def _narrow(times: list[float], operator: str, value: float, low: int, high: int):
    if operator in ("on_or_after", "equals"):
        low = max(low, bisect.bisect_left(times, value))
    if operator == "after":
        low = max(low, bisect.bisect_right(times, value))
    if operator == "before":
        high = min(high, bisect.bisect_left(times, value))
    if operator in ("on_or_before", "equals"):
        high = min(high, bisect.bisect_right(times, value))
    return low, max(low, high)


def _matches(condition: dict | None, page: dict) -> bool:
    if condition is None:
        return True
    if "and" in condition:
        return all(_matches(c, page) for c in condition["and"])
    if "or" in condition:
        return any(_matches(c, page) for c in condition["or"])
    timestamp = condition.get("timestamp")
    if timestamp not in _TIMESTAMPS:
        raise FakeError(400, "The fake Notion filters on created_time/last_edited_time only.")
    ((operator, value),) = condition[timestamp].items()
    mine, theirs = _epoch(page[timestamp]), _epoch(value)
    tests = {
        "on_or_after": mine >= theirs,
        "after": mine > theirs,
        "before": mine < theirs,
        "on_or_before": mine <= theirs,
        "equals": mine == theirs,
    }
    if operator not in tests:
        raise FakeError(400, f"Unsupported timestamp filter {operator!r}.")
    return tests[operator]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30  # an idle keep-alive connection is closed after this
    fake: FakeNotion

    def log_message(self, format, *args):
        pass

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY:
            self.send_error(413)
            return
        body = self.rfile.read(length) if length else b""
        status, headers, payload = self.fake.handle(method, self.path, self.headers, body)
        if status == 0:
            self.close_connection = True
            return
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self):
        self._serve("GET")

    def do_POST(self):
        self._serve("POST")


def main(argv: list[str] | None = None) -> None:
    """Serves a seeded fake until killed; prints one JSON line with its url, token and ids."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rate-limit", type=float, default=None)
    parser.add_argument("--burst", type=float, default=3.0)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--spread-tail",
        action="store_true",
        help="Re-stamp the pages that share the newest edit minute (the generator clamps edits to "
        "its end date) one minute apart, as a live database would have them.",
    )
    options = parser.parse_args(argv)
    fake = FakeNotion(rate_limit=options.rate_limit, burst=options.burst)
    pages = fake.seed_sample(options.pages, options.seed)
    if options.spread_tail:
        newest = pages[-1]["last_edited_time"]
        tail = [p for p in pages if p["last_edited_time"] == newest]
        end = datetime.fromisoformat(newest.replace("Z", "+00:00"))
        for minutes, page in enumerate(reversed(tail)):
            fake.edit(page["id"], at=end - timedelta(minutes=minutes))
    fake.data_sources[dashed(SAMPLE_DATA_SOURCE_ID)].ordered("last_edited_time")
    fake.start(options.port)
    print(
        json.dumps(
            {
                "url": fake.url,
                "token": fake.token,
                "database_id": SAMPLE_DATABASE_ID,
                "data_source_id": SAMPLE_DATA_SOURCE_ID,
                "pages": options.pages,
            }
        ),
        flush=True,
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        fake.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()
