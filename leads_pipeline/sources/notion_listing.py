"""The windowed listing of a Notion data source: windows, progress, prefetch, the answer loop.

Listings are sorted by ``last_edited_time`` ascending and split into windows that each stay under
Notion's 10,000 rows per query: when a query comes back ``incomplete`` (or its cursor turns
invalid), the next window starts ``on_or_after`` the last edit time seen, skipping the pages of
that minute already listed. Answers stay undecoded bytes, turned into ``raw_notion_leads`` rows
in bulk (:func:`.notion_answers.answers_to_rows`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Generator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from leads_pipeline.sources.base import ListingStats
from leads_pipeline.sources.notion_answers import Envelope, MalformedAnswerError, answers_to_rows
from leads_pipeline.sources.notion_http import (
    InvalidCursorError,
    NotionAnswerError,
    NotionSyncError,
)

_CAPPED = "the query reached Notion's 10,000-row limit"
_CURSOR_REJECTED = "Notion rejected the pagination cursor"
#: Restarts of a window that bring no new page before the listing gives up.
_MAX_STALLED_RESTARTS = 5
#: Answers decoded together (one DuckDB pass each).
_DECODE_BATCH = 16


def instant(text: str) -> datetime:
    """A Notion timestamp (``2025-06-01T12:00:00.000Z``) as an aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def iso(moment: datetime) -> str:
    """``moment`` as a Notion timestamp in UTC (a naive datetime is taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def edited_filter(operator: str, value: str) -> dict:
    """A query filter on ``last_edited_time`` (``operator``: ``after``, ``on_or_after``...)."""
    return {"timestamp": "last_edited_time", "last_edited_time": {operator: value}}


@dataclass
class Progress:
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
        """Whether a progress line is due (there is a log and ``interval`` has passed)."""
        return self.log is not None and self.clock() - self.last >= self.interval

    def report(self, current_edit: datetime | None) -> None:
        """Logs the counters so far and, when ``current_edit`` allows, an estimate of the rest."""
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
            f"listed up to edits of {iso(current)} out of {iso(newest)} "
            f"({done:.0%} of the edit-time range): roughly {left} pages and "
            f"{left / rate:.0f} s left"
        )


class Pending:
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
        """The request's value once it is done; re-raises its error."""
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value


@dataclass
class Window:
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
            following = iso(instant(self.minute) + timedelta(minutes=1))
            conditions += [
                edited_filter("on_or_after", self.minute),
                edited_filter("before", following),
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
        return instant(stamp) if stamp else None


@dataclass
class RawListing:
    """One listing of a data source as ``raw_notion_leads`` rows, window after window.

    Attributes:
        data_source_id: The data source listed.
        page_size: Pages per query request.
        send_query: Sends one query body; returns the answer's checked, undecoded body and its
            envelope (pacing, retries and errors are its business).
        newest_edit: The newest edit time of the data source (one probe request), for the
            progress estimate; asked at most once, when the first progress line is due.
        finish_rows: Turns accepted rows into ``RAW_SCHEMA`` rows (completing truncated values).
        synced_at: Time of this sync, written in ``synced_at``.
        truncatable_names: Properties whose ``has_more`` flags mark a row as truncated.
        stats: Counters to update.
        progress: Progress reporting (its log also receives the window messages).
    """

    data_source_id: str
    page_size: int
    send_query: Callable[[dict], tuple[bytes, Envelope]]
    newest_edit: Callable[[], datetime | None]
    finish_rows: Callable[[pa.Table], pa.Table]
    synced_at: datetime
    truncatable_names: Collection[str]
    stats: ListingStats
    progress: Progress

    @property
    def log(self) -> logging.Logger | None:
        """The run's log, when there is one."""
        return self.progress.log

    def rows(self, edited_on_or_after: datetime | None) -> Iterator[pa.Table]:
        """Lists the live pages edited at or after ``edited_on_or_after`` (all when None).

        Yields:
            Tables of accepted rows, as ``finish_rows`` returns them.

        Raises:
            NotionSyncError: If the listing cannot progress past an edit (or creation) minute.
            NotionAnswerError: If answers cannot be turned into raw rows.
        """
        window = Window(start=iso(edited_on_or_after) if edited_on_or_after else None)
        yield from self._windows(window)
        if self.log is not None:
            self.progress.report(None)

    def _windows(self, window: Window) -> Iterator[pa.Table]:
        """Lists ``window`` and the windows following it until the data ends."""
        stats, log = self.stats, self.log
        stalled = 0
        while True:
            pages_before = stats.pages
            capped = yield from self._window_rows(window)
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
                within = Window(
                    start=None,
                    key="created_time",
                    minute=minute,
                    skip_ids=frozenset(window.boundary_ids),
                )
                yield from self._windows(within)
                window.start = iso(instant(minute) + timedelta(minutes=1))
                window.boundary, window.boundary_ids = None, set()
                stalled = 0
                continue
            if stalled >= _MAX_STALLED_RESTARTS or stuck:
                raise NotionSyncError(
                    f"Notion listing of data source {self.data_source_id} cannot progress past "
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

    def _answers(self, window: Window) -> Generator[bytes, None, str | None]:
        """Pages through one query window, yielding each undecoded answer; returns None at the
        end of the data, else why it stopped early (the 10,000-row limit, a rejected cursor).

        The next page is requested as soon as the cursor is known, so Notion's answer time
        overlaps with the work on the answer just yielded.
        """

        def request(cursor: str | None) -> Pending:
            body = window.query(self.page_size, cursor)
            return Pending(lambda: self.send_query(body))

        pending = request(None)
        while True:
            try:
                answer, envelope = pending.result()
            except InvalidCursorError as error:
                return f"{_CURSOR_REJECTED} ({error})"
            more = bool(envelope.has_more and envelope.next_cursor) and not envelope.incomplete
            if more:
                pending = request(envelope.next_cursor)
            yield answer
            if envelope.incomplete:
                return _CAPPED
            if not more:
                return None

    def _window_rows(self, window: Window) -> Generator[pa.Table, None, str | None]:
        """One window: raw rows, decoded ``_DECODE_BATCH`` answers at a time."""
        answers = self._answers(window)
        stats, progress = self.stats, self.progress
        bodies: list[bytes] = []
        ended = False
        capped = None
        while not ended:
            try:
                bodies.append(next(answers))
            except StopIteration as stop:
                ended, capped = True, stop.value
            if bodies and (ended or len(bodies) >= _DECODE_BATCH):
                rows = accepted_rows(self._decode(bodies), window)
                bodies = []
                stats.pages += rows.num_rows
                if rows.num_rows and progress.first_edit is None:
                    progress.first_edit = rows["last_edited_time"][0].as_py()
                if rows.num_rows:
                    yield self.finish_rows(rows)
                self._report_progress(window)
        return capped

    def _decode(self, bodies: list[bytes]) -> pa.Table:
        try:
            return answers_to_rows(bodies, self.synced_at, self.truncatable_names)
        except MalformedAnswerError as error:
            raise NotionAnswerError(
                f"Notion's answers to POST /v1/data_sources/{self.data_source_id}/query could "
                f"not be turned into raw rows: {error}. Nothing was written."
            ) from error

    def _report_progress(self, window: Window) -> None:
        progress = self.progress
        if progress.due():
            if not progress.probed:
                progress.probed = True
                progress.newest_edit = self.newest_edit()
            progress.report(window.edit_position())


def accepted_rows(rows: pa.Table, window: Window) -> pa.Table:
    """The live pages of ``rows`` that are new to the listing (see :class:`Window`)."""
    live = rows.filter(pc.and_(pc.equal(rows["object"], "page"), pc.invert(rows["in_trash"])))
    stamps = live["created_text" if window.key == "created_time" else "last_edited_text"]
    accepted = [
        window.accept_id(page_id, stamp)
        for page_id, stamp in zip(live["page_id"].to_pylist(), stamps.to_pylist(), strict=True)
    ]
    return live.filter(pa.array(accepted, pa.bool_()))
