"""The Notion source: a data source of the Leads database, read with the official notion-client.

Discovery turns ``NOTION_DATABASE_ID`` (an id or a URL) into one data source. Listings are sorted
by ``last_edited_time`` ascending and split into windows that each stay under Notion's 10,000 rows
per query: when a query comes back ``incomplete`` (or its cursor turns invalid), the next window
starts ``on_or_after`` the last edit time seen, skipping the pages of that minute already listed.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Collection, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import dagster as dg
import httpx
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from notion_client import Client
from notion_client.errors import RequestTimeoutError
from pydantic import Field, PrivateAttr, field_validator

from leads_pipeline.raw_store import RAW_SCHEMA, is_trashed
from leads_pipeline.settings import (
    DEFAULT_NOTION_API_BASE_URL,
    DEFAULT_NOTION_API_VERSION,
    NOTION_API_VERSIONS,
    NonNegativeSeconds,
    NotionTuning,
    PositiveSeconds,
    QueryPageSize,
    RequestRate,
    check_notion_api_base_url,
    check_notion_api_version,
)
from leads_pipeline.sources.base import LeadsSource, ListingStats
from leads_pipeline.sources.notion_answers import (
    CheckedAnswer,
    Envelope,
    MalformedAnswerError,
    answers_to_rows,
    read_answer,
)
from leads_pipeline.sources.notion_http import (
    CallPolicy,
    InvalidCursorError,
    NotionAnswerError,
    NotionCaller,
    NotionSyncError,
)

TRUNCATABLE_TYPES = ("people", "relation")
_DESCENDING = [{"timestamp": "last_edited_time", "direction": "descending"}]
_HEX_ID = re.compile(r"([0-9a-fA-F]{32}|[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12})")
_CAPPED = "the query reached Notion's 10,000-row limit"
_CURSOR_REJECTED = "Notion rejected the pagination cursor"
#: Restarts of a window that bring no new page before the listing gives up.
_MAX_STALLED_RESTARTS = 5
#: Answers decoded together by :meth:`NotionLeadsSource.list_raw` (one DuckDB pass each).
_DECODE_BATCH = 16


def _with_envelope(response: dict) -> tuple[dict, Envelope]:
    return response, Envelope.of(response)


class NotionDiscoveryError(NotionSyncError):
    """The database id, URL or data source choice does not designate exactly one data source."""


def normalize_id(text: str) -> str:
    """A Notion id in its dashed form (``8-4-4-4-12``) from a bare id, a dashed id or a URL.

    Args:
        text: ``1f3e2a4b5c6d...``, ``1f3e2a4b-5c6d-...`` or ``https://www.notion.so/ws/Leads-1f3e...?v=...``.

    Returns:
        The dashed, lower-case id.

    Raises:
        NotionDiscoveryError: If no id can be found in ``text``.
    """
    path = text.strip().split("?", 1)[0].split("#", 1)[0]
    found = _HEX_ID.findall(path)
    if not found:
        raise NotionDiscoveryError(
            f"NOTION_DATABASE_ID={text!r} holds no Notion id: give the database id (32 hex "
            "digits) or the database's URL."
        )
    bare = found[-1].replace("-", "").lower()
    return f"{bare[:8]}-{bare[8:12]}-{bare[12:16]}-{bare[16:20]}-{bare[20:]}"


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _iso(instant: datetime) -> str:
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _edited_filter(operator: str, value: str) -> dict:
    return {"timestamp": "last_edited_time", "last_edited_time": {operator: value}}


@dataclass
class _Progress:
    """Reports a long listing in the run log, at most every ``interval`` seconds."""

    log: logging.Logger | None
    stats: ListingStats
    interval: float
    clock: Callable[[], float] = time.monotonic
    started: float = 0.0
    last: float = 0.0
    first_edit: datetime | None = None
    newest_edit: datetime | None = None
    probed: bool = False

    def __post_init__(self):
        self.started = self.last = self.clock()

    def due(self) -> bool:
        return self.log is not None and self.clock() - self.last >= self.interval

    def report(self, current_edit: datetime | None) -> None:
        now = self.clock()
        self.last = now
        elapsed = max(now - self.started, 1e-9)
        rate = self.stats.pages / elapsed
        text = (
            f"Notion listing: {self.stats.pages} pages in {elapsed:.0f} s ({rate:.0f} pages/s), "
            f"{self.stats.requests} requests, {self.stats.retries} retries, "
            f"{self.stats.rate_limit_wait_seconds:.0f} s waiting on rate limits (429) and "
            f"{self.stats.pacing_wait_seconds:.0f} s pacing to the request rate"
        )
        estimate = self._estimate(current_edit, rate)
        self.log.info(text + (f"; {estimate}." if estimate else "."))

    def _estimate(self, current: datetime | None, rate: float) -> str:
        first, newest = self.first_edit, self.newest_edit
        if None in (first, newest, current) or newest <= first or rate <= 0:
            return ""
        done = (current - first) / (newest - first)
        if done <= 0:
            return ""
        done = min(done, 1.0)
        left = round(self.stats.pages * (1 - done) / done)
        return (
            f"listed up to edits of {_iso(current)} out of {_iso(newest)} "
            f"({done:.0%} of the edit-time range): roughly {left} pages and "
            f"{left / rate:.0f} s left"
        )


class _Pending:
    """One request running in a daemon thread (it never keeps the process alive)."""

    def __init__(self, send):
        self._done = threading.Event()
        self._value = None
        self._error: BaseException | None = None
        threading.Thread(target=self._run, args=(send,), daemon=True).start()

    def _run(self, send) -> None:
        try:
            self._value = send()
        except BaseException as error:  # handed to the consumer by result()
            self._error = error
        finally:
            self._done.set()

    def result(self):
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value


@dataclass
class _Window:
    """One query window: where it starts, and which pages of its boundary were already listed.

    A window is sorted and cut on ``key``: ``last_edited_time`` normally; ``created_time`` to
    list one edit minute (``minute``) holding more pages than a query returns, where
    ``skip_ids`` are the pages of that minute the enclosing listing already had.
    """

    start: str | None
    key: str = "last_edited_time"
    minute: str | None = None
    skip_ids: frozenset[str] = frozenset()
    boundary: str | None = None
    boundary_ids: set[str] = field(default_factory=set)

    def accept(self, page: dict) -> bool:
        return self.accept_id(page["id"], page[self.key])

    def accept_id(self, page_id: str, stamp: str) -> bool:
        """Whether a page listed with this key value is new to the listing (and records it)."""
        if page_id in self.skip_ids:
            return False
        if stamp == self.boundary:
            if page_id in self.boundary_ids:
                return False
            self.boundary_ids.add(page_id)
        elif self.boundary is None or stamp > self.boundary:
            self.boundary = stamp
            self.boundary_ids = {page_id}
        return True

    def query(self, page_size: int, cursor: str | None) -> dict:
        """The body of this window's query."""
        conditions = []
        if self.minute is not None:
            following = _iso(_instant(self.minute) + timedelta(minutes=1))
            conditions += [
                _edited_filter("on_or_after", self.minute),
                _edited_filter("before", following),
            ]
        if self.start is not None:
            conditions.append({"timestamp": self.key, self.key: {"on_or_after": self.start}})
        body: dict = {
            "sorts": [{"timestamp": self.key, "direction": "ascending"}],
            "page_size": page_size,
        }
        if len(conditions) == 1:
            body["filter"] = conditions[0]
        elif conditions:
            body["filter"] = {"and": conditions}
        if cursor is not None:
            body["start_cursor"] = cursor
        return body

    def edit_position(self) -> datetime | None:
        """How far the listing got in edit time, for progress estimates."""
        stamp = self.minute if self.minute is not None else self.boundary
        return _instant(stamp) if stamp else None


class NotionLeadsSource(LeadsSource):
    """Lead pages of one data source of a Notion database, read through the official API.

    Requests are paced to ``requests_per_second``; 429 answers wait their ``Retry-After``;
    server errors, timeouts and connection errors back off exponentially; a request still failing
    after ``max_retry_seconds`` fails the run with an error naming it. The token is only ever
    sent in the ``Authorization`` header.
    """

    token: str = Field(
        description="Integration secret. Pass dg.EnvVar('NOTION_TOKEN'): never a literal value.",
        repr=False,
    )
    database_id: str | None = Field(default=None, description="Database id or URL.")
    data_source_id: str | None = Field(
        default=None, description="Data source to read when the database has several."
    )
    api_base_url: str = Field(default=DEFAULT_NOTION_API_BASE_URL, description="API root.")
    api_version: str = Field(
        default=DEFAULT_NOTION_API_VERSION,
        description="Notion-Version sent with every request: one of "
        + ", ".join(NOTION_API_VERSIONS)
        + " (NOTION_API_VERSION).",
    )
    # The tuning knobs: types, ranges and defaults shared with their NOTION_* variables.
    page_size: QueryPageSize = Field(
        default=NotionTuning.page_size,
        description="Pages per query request, 1 to 100 (NOTION_PAGE_SIZE).",
    )
    requests_per_second: RequestRate = Field(
        default=NotionTuning.requests_per_second,
        description="Average request rate (Notion allows 3); 0 turns pacing off "
        "(NOTION_REQUESTS_PER_SECOND).",
    )
    max_retry_seconds: NonNegativeSeconds = Field(
        default=NotionTuning.max_retry_seconds,
        description="Give up on a request still failing (429, 5xx, timeouts) after this long; "
        "0 gives up at the first failure (NOTION_MAX_RETRY_SECONDS).",
    )
    max_backoff_seconds: PositiveSeconds = Field(
        default=NotionTuning.max_backoff_seconds,
        description="Cap of the exponential backoff between retries (NOTION_MAX_BACKOFF_SECONDS).",
    )
    timeout_seconds: PositiveSeconds = Field(
        default=NotionTuning.timeout_seconds,
        description="Timeout of one HTTP request (NOTION_TIMEOUT_SECONDS).",
    )
    progress_interval_seconds: NonNegativeSeconds = Field(
        default=NotionTuning.progress_interval_seconds,
        description="Minimum seconds between two progress lines in the run log; 0 reports "
        "after every batch of answers (NOTION_PROGRESS_INTERVAL_SECONDS).",
    )

    _notion_client: Client | None = PrivateAttr(default=None)
    _notion_caller: NotionCaller | None = PrivateAttr(default=None)
    _notion_data_source_id: str | None = PrivateAttr(default=None)
    _notion_schema: dict | None = PrivateAttr(default=None)

    # "before" validators: they see an ``EnvVar`` as such (it names a variable, not a value) and
    # leave it to the check made when Dagster builds the resource from the resolved value.
    @field_validator("api_version", mode="before")
    @classmethod
    def _supported_version(cls, value: object) -> object:
        if not isinstance(value, str) or isinstance(value, dg.EnvVar):
            return value
        return check_notion_api_version(value, "api_version (NOTION_API_VERSION)")

    @field_validator("api_base_url", mode="before")
    @classmethod
    def _usable_base_url(cls, value: object) -> object:
        if not isinstance(value, str) or isinstance(value, dg.EnvVar):
            return value
        return check_notion_api_base_url(value, "api_base_url (NOTION_API_BASE_URL)")

    @property
    def source_name(self) -> str:
        return "notion"

    def identity(self) -> str:
        return f"notion:{self._data_source()}"

    # -- plumbing ------------------------------------------------------------------------------

    def caller(self) -> NotionCaller:
        """The paced, retrying caller shared by every request of this resource instance."""
        if self._notion_caller is None:
            self._notion_caller = NotionCaller(
                CallPolicy(
                    requests_per_second=self.requests_per_second,
                    max_retry_seconds=self.max_retry_seconds,
                    max_backoff_seconds=self.max_backoff_seconds,
                ),
                secret=self.token,
                log=logging.getLogger(__name__),
            )
        return self._notion_caller

    def client(self) -> Client:
        """The notion-client ``Client`` (its own retries off, its logger silenced)."""
        if self._notion_client is None:
            sdk_logger = logging.getLogger("leads_pipeline.sources.notion_sdk")
            sdk_logger.propagate = False  # it may log bodies at DEBUG; our caller reports instead
            sdk_logger.addHandler(logging.NullHandler())
            self._notion_client = Client(
                auth=self.token,
                base_url=self.api_base_url.rstrip("/"),
                notion_version=self.api_version,
                timeout_ms=int(self.timeout_seconds * 1000),
                retry=False,
                logger=sdk_logger,
                log_level=logging.CRITICAL,
            )
        return self._notion_client

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        # Close the HTTP connections notion-client keeps open, instead of leaving the sockets to
        # the garbage collector at the end of a run.
        if self._notion_client is not None:
            self._notion_client.close()
            self._notion_client = None

    def _get(
        self,
        path: str,
        send,
        stats: ListingStats,
        subject: str,
        log: logging.Logger | None = None,
    ) -> dict:
        return self.caller().call("GET", path, send, stats, subject=subject, log=log)

    # -- discovery -----------------------------------------------------------------------------

    def _data_source(
        self, stats: ListingStats | None = None, log: logging.Logger | None = None
    ) -> str:
        if self._notion_data_source_id is None:
            self._notion_data_source_id = self._discover(stats or ListingStats(), log)
        return self._notion_data_source_id

    def _discover(self, stats: ListingStats, log: logging.Logger | None = None) -> str:
        if not self.database_id:
            raise NotionDiscoveryError(
                "NOTION_DATABASE_ID is not set: give the database id or URL."
            )
        database_id = normalize_id(self.database_id)
        client = self.client()
        database = self._get(
            f"/v1/databases/{database_id}",
            lambda: client.databases.retrieve(database_id=database_id),
            stats,
            f"database {database_id} (NOTION_DATABASE_ID)",
            log,
        )
        sources = database.get("data_sources") or []
        listing = "; ".join(f"{s.get('name') or '(untitled)'!r} (id {s['id']})" for s in sources)
        if self.data_source_id:
            wanted = normalize_id(self.data_source_id)
            for candidate in sources:
                if normalize_id(candidate["id"]) == wanted:
                    return candidate["id"]
            raise NotionDiscoveryError(
                f"NOTION_DATA_SOURCE_ID={self.data_source_id} is not a data source of database "
                f"{database_id}. Its data sources are: {listing or 'none'}."
            )
        if len(sources) == 1:
            return sources[0]["id"]
        if not sources:
            raise NotionDiscoveryError(
                f"Database {database_id} has no data source the integration can read."
            )
        raise NotionDiscoveryError(
            f"Database {database_id} has {len(sources)} data sources: {listing}. Set "
            "NOTION_DATA_SOURCE_ID to the id of the one holding the leads."
        )

    def data_source_schema(self, log: logging.Logger | None = None) -> Mapping[str, Mapping]:
        if self._notion_schema is None:
            stats = ListingStats()
            data_source_id = self._data_source(stats, log)
            client = self.client()
            body = self._get(
                f"/v1/data_sources/{data_source_id}",
                lambda: client.data_sources.retrieve(data_source_id=data_source_id),
                stats,
                f"data source {data_source_id}",
                log,
            )
            self._notion_schema = dict(body.get("properties") or {})
        return self._notion_schema

    # -- listing -------------------------------------------------------------------------------

    def _query(
        self, data_source_id: str, body: dict, stats: ListingStats, log: logging.Logger | None
    ) -> dict:
        client = self.client()
        return self.caller().call(
            "POST",
            f"/v1/data_sources/{data_source_id}/query",
            lambda: client.data_sources.query(data_source_id=data_source_id, **body),
            stats,
            subject=f"data source {data_source_id}",
            log=log,
        )

    def _query_answer(
        self, data_source_id: str, body: dict, stats: ListingStats, log: logging.Logger | None
    ) -> tuple[bytes, Envelope]:
        """One query, its answer's body left undecoded (see :mod:`.notion_answers`).

        The request is built and sent by notion-client (its headers, version, base URL and
        timeout), and a failed answer raises notion-client's own errors, as ``request`` would.
        The body is checked as it arrives (:func:`.notion_answers.read_answer`): lone surrogate
        escapes are replaced and reported here, an undecodable body fails the call at once.
        """
        client = self.client()
        path = f"data_sources/{data_source_id}/query"

        def send() -> tuple[bytes, Envelope]:
            # notion-client's request() minus decoding the body into Python objects.
            request = client._build_request("POST", path, None, body)
            try:
                response = client.client.send(request)
            except httpx.TimeoutException as error:
                raise RequestTimeoutError() from error
            if not response.is_success:
                client._parse_response(response)  # raises the error notion-client would
            answer = read_answer(response.content)
            if answer.replaced:
                self._report_replaced(answer, f"POST /v1/{path}", stats, log)
            return answer.body, answer.envelope

        return self.caller().call(
            "POST", f"/v1/{path}", send, stats, subject=f"data source {data_source_id}", log=log
        )

    @staticmethod
    def _report_replaced(
        answer: CheckedAnswer, request: str, stats: ListingStats, log: logging.Logger | None
    ) -> None:
        """Counts and logs the lone surrogates :func:`.notion_answers.read_answer` replaced."""
        stats.invalid_unicode_replaced += answer.replaced
        where = ", ".join(
            f"{page_id} ({count})" for page_id, count in sorted(answer.replaced_by_page.items())
        )
        (log or logging.getLogger(__name__)).warning(
            f"Notion {request}: {answer.replaced} lone surrogate escape(s) (invalid Unicode, such "
            "as half of an emoji) replaced by U+FFFD in "
            + (f"page(s) {where}" if where else "the answer, outside its pages")
            + "; the pages are kept and raw_notion_leads holds the replaced text. Retype the "
            "text in Notion to repair it."
        )

    def list_pages(
        self,
        *,
        edited_on_or_after: datetime | None,
        stats: ListingStats,
        log: logging.Logger | None = None,
    ) -> Iterator[list[dict]]:
        return self._listing(edited_on_or_after, stats, log, self._window_pages)

    def list_raw(
        self,
        *,
        edited_on_or_after: datetime | None,
        stats: ListingStats,
        synced_at: datetime,
        complete_property_ids: Collection[str] = (),
        log: logging.Logger | None = None,
    ) -> Iterator[pa.Table]:
        """Lists live pages as ``raw_notion_leads`` rows, decoding answers in bulk with DuckDB.

        Same listing as :meth:`list_pages` (windows, pacing, retries, progress); the answers are
        never turned into Python objects, except pages with a truncated value to complete.
        """
        wanted = set(complete_property_ids)
        names = (
            {
                name
                for name, prop in self.data_source_schema(log).items()
                if prop.get("id") in wanted and prop.get("type") in TRUNCATABLE_TYPES
            }
            if wanted
            else set()
        )

        def window_rows(data_source_id, window, stats, progress):
            return self._window_rows(
                data_source_id, window, stats, progress, synced_at, names, complete_property_ids
            )

        return self._listing(edited_on_or_after, stats, log, window_rows)

    def _listing(self, edited_on_or_after, stats, log, list_window) -> Iterator:
        """The window loop shared by :meth:`list_pages` and :meth:`list_raw`."""
        data_source_id = self._data_source(stats, log)
        window = _Window(start=_iso(edited_on_or_after) if edited_on_or_after else None)
        progress = _Progress(log, stats, self.progress_interval_seconds)
        yield from self._windows(data_source_id, window, stats, progress, list_window, log)
        if log is not None:
            progress.report(None)

    def _windows(self, data_source_id, window, stats, progress, list_window, log) -> Iterator:
        """Lists ``window`` and the windows following it until the data ends."""
        stalled = 0
        while True:
            pages_before = stats.pages
            capped = yield from list_window(data_source_id, window, stats, progress)
            if capped is None:
                return
            # Capped at 10,000 rows, or the cursor turned invalid: a new window from the last
            # key value seen. A window that brings nothing new cannot make progress.
            stalled = stalled + 1 if stats.pages == pages_before else 0
            stuck = capped == _CAPPED and window.boundary == window.start
            if stuck and window.key == "last_edited_time":
                # More pages edited in one minute than a query returns: list that minute by
                # creation time, then go on from the next minute.
                minute = window.boundary
                if log is not None:
                    log.info(
                        f"Notion listing: {capped} within the edit minute {minute}; listing "
                        "that minute's pages by creation time."
                    )
                within = _Window(
                    start=None,
                    key="created_time",
                    minute=minute,
                    skip_ids=frozenset(window.boundary_ids),
                )
                yield from self._windows(data_source_id, within, stats, progress, list_window, log)
                window.start = _iso(_instant(minute) + timedelta(minutes=1))
                window.boundary, window.boundary_ids = None, set()
                stalled = 0
                continue
            if stalled >= _MAX_STALLED_RESTARTS or stuck:
                raise NotionSyncError(
                    f"Notion listing of data source {data_source_id} cannot progress past "
                    f"{window.key} {window.boundary}"
                    + (f" within the edit minute {window.minute}" if window.minute else "")
                    + ": "
                    + (
                        "more than 10,000 pages were edited in the same minute and created in "
                        "the same minute."
                        if stuck
                        else f"{stalled} windows in a row brought no new page ({capped})."
                    )
                    + " Nothing was written."
                )
            if log is not None:
                log.info(
                    f"Notion listing: {capped}; continuing with pages whose {window.key} is on "
                    f"or after {window.boundary}."
                )
            window.start = window.boundary

    def _answers(
        self,
        data_source_id: str,
        window: _Window,
        stats: ListingStats,
        progress: _Progress,
        decode: bool,
    ) -> Generator[tuple[object, Envelope], None, str | None]:
        """Pages through one query window, yielding each answer with its envelope; returns None
        at the end of the data, else why it stopped early (the 10,000-row limit, a rejected
        cursor).

        The next page is requested as soon as the cursor is known, so Notion's answer time
        overlaps with the caller's work on the answer just yielded. With ``decode``, answers are
        Python objects (decoded in the request's thread), else undecoded bodies.
        """

        def request(cursor: str | None) -> _Pending:
            body = window.query(self.page_size, cursor)
            if decode:
                return _Pending(
                    lambda: _with_envelope(self._query(data_source_id, body, stats, progress.log))
                )
            return _Pending(lambda: self._query_answer(data_source_id, body, stats, progress.log))

        pending = request(None)
        while True:
            try:
                answer, envelope = pending.result()
            except InvalidCursorError as error:
                return f"{_CURSOR_REJECTED} ({error})"
            more = bool(envelope.has_more and envelope.next_cursor) and not envelope.incomplete
            if more:
                pending = request(envelope.next_cursor)
            yield answer, envelope
            if envelope.incomplete:
                return _CAPPED
            if not more:
                return None

    def _report_progress(self, window: _Window, stats: ListingStats, progress: _Progress) -> None:
        if progress.due():
            if not progress.probed:
                progress.probed = True
                progress.newest_edit = self.latest_edit(after=None, stats=stats)
            progress.report(window.edit_position())

    def _window_pages(
        self, data_source_id: str, window: _Window, stats: ListingStats, progress: _Progress
    ) -> Generator[list[dict], None, str | None]:
        """One window of :meth:`list_pages`: batches of page objects."""
        answers = self._answers(data_source_id, window, stats, progress, decode=True)
        while True:
            try:
                response, _ = next(answers)
            except StopIteration as stop:
                return stop.value
            batch = [
                page
                for page in response.get("results", ())
                if page.get("object") == "page" and not is_trashed(page) and window.accept(page)
            ]
            stats.pages += len(batch)
            if batch and progress.first_edit is None:
                progress.first_edit = _instant(batch[0]["last_edited_time"])
            if batch:
                yield batch
            self._report_progress(window, stats, progress)

    def _window_rows(
        self,
        data_source_id: str,
        window: _Window,
        stats: ListingStats,
        progress: _Progress,
        synced_at: datetime,
        truncatable_names: Collection[str],
        complete_property_ids: Collection[str],
    ) -> Generator[pa.Table, None, str | None]:
        """One window of :meth:`list_raw`: raw rows, decoded ``_DECODE_BATCH`` answers at a time."""
        answers = self._answers(data_source_id, window, stats, progress, decode=False)
        bodies: list[bytes] = []
        ended = False
        capped = None
        while not ended:
            try:
                body, _ = next(answers)
                bodies.append(body)
            except StopIteration as stop:
                ended, capped = True, stop.value
            if bodies and (ended or len(bodies) >= _DECODE_BATCH):
                try:
                    decoded = answers_to_rows(bodies, synced_at, truncatable_names)
                except MalformedAnswerError as error:
                    raise NotionAnswerError(
                        f"Notion's answers to POST /v1/data_sources/{data_source_id}/query could "
                        f"not be turned into raw rows: {error}. Nothing was written."
                    ) from error
                rows = self._accepted_rows(decoded, window)
                bodies = []
                stats.pages += rows.num_rows
                if rows.num_rows and progress.first_edit is None:
                    progress.first_edit = rows["last_edited_time"][0].as_py()
                if rows.num_rows:
                    yield self._complete_rows(rows, complete_property_ids, stats)
                self._report_progress(window, stats, progress)
        return capped

    @staticmethod
    def _accepted_rows(rows: pa.Table, window: _Window) -> pa.Table:
        """The live pages of ``rows`` that are new to the listing (see :class:`_Window`)."""
        live = rows.filter(pc.and_(pc.equal(rows["object"], "page"), pc.invert(rows["in_trash"])))
        stamps = live["created_text" if window.key == "created_time" else "last_edited_text"]
        accepted = [
            window.accept_id(page_id, stamp)
            for page_id, stamp in zip(live["page_id"].to_pylist(), stamps.to_pylist(), strict=True)
        ]
        return live.filter(pa.array(accepted, pa.bool_()))

    def _complete_rows(
        self, rows: pa.Table, complete_property_ids: Collection[str], stats: ListingStats
    ) -> pa.Table:
        """``rows`` as ``RAW_SCHEMA``, truncated values completed (those pages only decoded)."""
        flagged = rows["truncated"].to_pylist()
        rows = rows.select(RAW_SCHEMA.names)
        if not any(flagged):
            return rows
        texts = rows["properties_json"].to_pylist()
        ids = rows["page_id"].to_pylist()
        for index, truncated in enumerate(flagged):
            if truncated:
                page = {"id": ids[index], "properties": json.loads(texts[index])}
                self.complete_truncated([page], complete_property_ids, stats=stats)
                texts[index] = orjson.dumps(page["properties"]).decode()
        position = RAW_SCHEMA.get_field_index("properties_json")
        return rows.set_column(position, RAW_SCHEMA.field(position), pa.array(texts, pa.string()))

    # -- sensor probe and truncated values ------------------------------------------------------

    def latest_edit(self, *, after: datetime | None, stats: ListingStats) -> datetime | None:
        data_source_id = self._data_source(stats)
        body: dict = {"sorts": _DESCENDING, "page_size": 1}
        if after is not None:
            body["filter"] = _edited_filter("after", _iso(after))
        response = self._query(data_source_id, body, stats, None)
        results = [p for p in response.get("results", ()) if p.get("object") == "page"]
        if not results:
            return None
        newest = _instant(results[0]["last_edited_time"])
        return None if after is not None and newest <= after else newest

    def complete_truncated(
        self, pages: list[dict], property_ids: Collection[str], *, stats: ListingStats
    ) -> list[dict]:
        wanted = set(property_ids)
        for page in pages:
            for value in (page.get("properties") or {}).values():
                if (
                    value.get("id") in wanted
                    and value.get("type") in TRUNCATABLE_TYPES
                    and value.get("has_more")
                ):
                    value[value["type"]] = self._property_items(page["id"], value, stats)
                    value["has_more"] = False
                    stats.values_completed += 1
        return pages

    def _property_items(self, page_id: str, value: dict, stats: ListingStats) -> list[dict]:
        kind, property_id = value["type"], value["id"]
        client = self.client()
        items: list[dict] = []
        cursor = None
        while True:
            kwargs = {"page_size": 100, **({"start_cursor": cursor} if cursor else {})}
            response = self._get(
                f"/v1/pages/{page_id}/properties/{property_id}",
                lambda kwargs=kwargs: client.pages.properties.retrieve(
                    page_id=page_id, property_id=property_id, **kwargs
                ),
                stats,
                f"property {property_id} of page {page_id}",
            )
            items.extend(item[kind] for item in response.get("results", ()) if kind in item)
            cursor = response.get("next_cursor")
            if not response.get("has_more") or not cursor:
                return items
