"""Polite, bounded calls to the Notion API: pacing, retries, and errors a user can act on.

``notion-client`` retries only 429 (capping ``Retry-After`` at 60 s) and, for GET, 500/503. Its
retries are switched off and :class:`NotionCaller` does its own: every request is paced to an
average rate, a 429 waits the full ``Retry-After`` however long (and its
``additional_data.rate_limit_reason`` is logged and counted), 500/502/503/504/529, timeouts and
connection errors back off exponentially, and the whole thing gives up after a bounded time with an
error naming the request (method and path; never the token). An answer that cannot be decoded
(not UTF-8, or complete and not JSON) fails at once: asking again would bring the same bytes.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from notion_client import Client
from notion_client.errors import HTTPResponseError, RequestTimeoutError

from leads_pipeline.sources.base import ListingStats
from leads_pipeline.sources.notion_answers import MalformedAnswerError, UndecodableAnswerError

#: HTTP statuses worth retrying: server errors, gateway errors, overload, and write conflicts.
RETRYABLE_STATUSES = frozenset({409, 500, 502, 503, 504, 529})
RATE_LIMITED = 429
#: Counted in :attr:`ListingStats.rate_limit_reasons` for a 429 that names no reason.
UNSPECIFIED_REASON = "unspecified"
REDACTED = "[redacted]"


class NotionSyncError(RuntimeError):
    """A Notion call failed for good; the message says which request and what to do."""


class NotionAccessError(NotionSyncError):
    """The token is refused or the object is not shared with the integration (401/403/404)."""


class NotionRequestError(NotionSyncError):
    """Notion rejected the request itself (400 and other non-retryable answers)."""


class InvalidCursorError(NotionRequestError):
    """A pagination cursor Notion no longer accepts: the listing restarts its window."""


class NotionAnswerError(NotionSyncError):
    """Notion's answer to a request cannot be decoded (not UTF-8, or not JSON); not retried."""


class NotionRetriesExhaustedError(NotionSyncError):
    """A request kept failing (rate limits, 5xx, timeouts) past the configured retry time."""


@dataclass(frozen=True)
class CallPolicy:
    """How hard to push Notion and how long to keep trying.

    Attributes:
        requests_per_second: Average request rate; 0 or less turns pacing off.
        burst: Requests that may start back to back before the average applies (Notion allows
            "some bursts beyond the average rate"). Kept below Notion's own allowance so the
            steady pace leaves a request of slack for network jitter, instead of drawing 429s.
        max_retry_seconds: Give up on a request that has kept failing for this long.
        initial_backoff_seconds: First wait after a 5xx, timeout or connection error.
        max_backoff_seconds: Cap of the exponential backoff (not of ``Retry-After``).
    """

    requests_per_second: float = 3.0
    burst: int = 2
    max_retry_seconds: float = 1800.0
    initial_backoff_seconds: float = 1.0
    max_backoff_seconds: float = 60.0


class Pacer:
    """A token bucket on request starts: ``burst`` at once, then ``rate`` per second; thread-safe.

    Implemented as the generic cell rate algorithm: over any span of ``t`` seconds at most
    ``burst + rate * t`` requests start, as Notion's own limiter allows.
    """

    def __init__(
        self,
        requests_per_second: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        burst: int = 1,
    ):
        self.interval = 1.0 / requests_per_second if requests_per_second > 0 else 0.0
        self.tolerance = max(burst - 1, 0) * self.interval
        self.clock = clock
        self.sleep = sleep
        self._theoretical_arrival = float("-inf")
        self._lock = threading.Lock()

    def wait(self) -> float:
        """Blocks until the next request may start; returns the seconds slept."""
        if self.interval == 0.0:
            return 0.0
        with self._lock:
            now = self.clock()
            arrival = max(self._theoretical_arrival, now)
            start = max(now, arrival - self.tolerance)
            self._theoretical_arrival = arrival + self.interval
        delay = start - now
        if delay > 0:
            self.sleep(delay)
        return delay


def retry_after_seconds(headers: httpx.Headers | None, now: float | None = None) -> float | None:
    """The ``Retry-After`` header in seconds (delta-seconds or HTTP date), or None if absent."""
    value = (headers or httpx.Headers()).get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        instant = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(instant - (time.time() if now is None else now), 0.0)


def _error_body(error: HTTPResponseError) -> dict | None:
    try:
        body = json.loads(error.body)
    except (TypeError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def rate_limit_reason(error: HTTPResponseError) -> str:
    """Which budget a 429 answer says ran out: its ``additional_data.rate_limit_reason``.

    Notion enforces a per-connection and a per-workspace limit (the latter shared by every
    connection of the workspace, with ``Retry-After`` waits that may exceed a minute) and names
    the one exceeded there; other values may appear.

    Returns:
        The reason as Notion gave it, or ``"unspecified"`` when the answer names none.
    """
    data = getattr(error, "additional_data", None)
    if not isinstance(data, dict):
        data = (_error_body(error) or {}).get("additional_data")
    reason = data.get("rate_limit_reason") if isinstance(data, dict) else None
    if isinstance(reason, str) and reason.strip():
        return reason.strip()[:100]
    return UNSPECIFIED_REASON


def _notion_message(error: HTTPResponseError) -> tuple[str, str]:
    """Notion's error code and message (from the body when notion-client did not parse it)."""
    code = getattr(error.code, "value", error.code)
    message = str(error)
    body = _error_body(error)
    if body is not None:
        code = body.get("code", code)
        message = body.get("message", message)
    return str(code), message


def send_undecoded(client: Client, method: str, path: str, body: dict | None) -> bytes:
    """Sends one request through notion-client and returns the answer's body undecoded.

    notion-client's ``request()`` minus decoding the body into Python objects: the request is
    built by notion-client (its headers, ``Notion-Version``, base URL and timeout) and a failed
    answer raises notion-client's own errors. This is the only place that calls notion-client's
    private ``Client._build_request`` and ``Client._parse_response`` (their use is checked by
    ``test_notion_http.py``, which fails naming them should an upgrade change them).

    Args:
        client: The notion-client ``Client``.
        method: HTTP method.
        path: API path relative to ``/v1/`` (``data_sources/<id>/query``).
        body: The JSON body, or None.

    Returns:
        The body of the successful answer, as received.

    Raises:
        RequestTimeoutError: When the request times out.
        HTTPResponseError: When Notion answers an error status (as notion-client raises it).
    """
    request = client._build_request(method, path, None, body)
    try:
        response = client.client.send(request)
    except httpx.TimeoutException as error:
        raise RequestTimeoutError() from error
    if not response.is_success:
        client._parse_response(response)  # raises the error notion-client would
    return response.content


class NotionCaller:
    """Runs Notion API calls with pacing, retries and translated errors, updating the stats.

    Args:
        policy: Rate and retry bounds.
        secret: The token, only to scrub it from any message (defence in depth).
        clock: Monotonic clock (injectable for tests).
        sleep: Sleep function (injectable for tests).
        log: Where retries are reported.
        jitter: Returns a float in [0, 1) to spread backoffs.
    """

    def __init__(
        self,
        policy: CallPolicy,
        *,
        secret: str = "",
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        log: logging.Logger | None = None,
        jitter: Callable[[], float] = random.random,
    ):
        self.policy = policy
        self.clock = clock
        self.sleep = sleep
        self.log = log or logging.getLogger(__name__)
        self.jitter = jitter
        self.pacer = Pacer(policy.requests_per_second, clock, sleep, burst=policy.burst)
        self._secret = secret

    def redact(self, text: str) -> str:
        """``text`` with the token replaced, should it ever appear."""
        return text.replace(self._secret, REDACTED) if self._secret else text

    def call(
        self,
        method: str,
        path: str,
        send: Callable[[], Any],
        stats: ListingStats,
        *,
        subject: str = "",
        log: logging.Logger | None = None,
    ) -> Any:
        """Sends one request (``send``), retrying until it succeeds or the retry time runs out.

        Args:
            method: HTTP method, for messages.
            path: API path (``/v1/...``), for messages.
            send: Performs the request once through notion-client and returns the decoded body.
            stats: Counters to update (requests, retries, waits).
            subject: What the path names (``"database <id>"``), for 404 messages.
            log: Where to report retries (e.g. the run log); the caller's logger otherwise.

        Returns:
            The decoded response body.

        Raises:
            NotionAccessError: On 401, 403 or 404.
            InvalidCursorError: When Notion rejects the ``start_cursor``.
            NotionRequestError: On other non-retryable answers (400...).
            NotionAnswerError: When a successful answer cannot be decoded (not UTF-8, or a
                complete body that is not JSON): at once, naming the first bad byte.
            NotionRetriesExhaustedError: When the request kept failing past ``max_retry_seconds``.
        """
        request = f"{method} {path}"
        started = self.clock()
        attempt = 0
        while True:
            stats.pacing_wait_seconds += self.pacer.wait()
            stats.requests += 1
            attempt += 1
            try:
                return send()
            except HTTPResponseError as error:
                reason = f"{error.status} {_notion_message(error)[0]}"
                if error.status == RATE_LIMITED:
                    delay = retry_after_seconds(error.headers)
                    rate_limited = True
                    if delay is None:
                        delay = self._backoff(attempt)
                    budget = rate_limit_reason(error)
                    stats.count_rate_limit(budget)
                    reason += f" (rate_limit_reason: {budget})"
                elif error.status in RETRYABLE_STATUSES:
                    delay, rate_limited = self._backoff(attempt), False
                else:
                    raise self._translate(error, request, subject) from error
            except (UndecodableAnswerError, UnicodeDecodeError) as error:
                raise self._undecodable(error, request) from error
            except RequestTimeoutError as error:
                delay, rate_limited = self._backoff(attempt), False
                reason = f"timeout ({error})"
            except (httpx.TransportError, json.JSONDecodeError, MalformedAnswerError) as error:
                delay, rate_limited = self._backoff(attempt), False
                reason = f"{type(error).__name__}: {error}"
            elapsed = self.clock() - started
            if elapsed + delay > self.policy.max_retry_seconds:
                raise NotionRetriesExhaustedError(
                    self.redact(
                        f"Notion request {request} still failing after {attempt} attempt(s) over "
                        f"{elapsed:.1f} s (last: {reason}; next wait {delay:.1f} s would pass "
                        f"max_retry_seconds={self.policy.max_retry_seconds:g}). Nothing was "
                        "written; the next run starts over from the same point."
                    )
                ) from None
            (log or self.log).warning(
                self.redact(
                    f"Notion {request}: {reason}; retrying in {delay:.1f} s (attempt {attempt})."
                )
            )
            self.sleep(delay)
            stats.retries += 1
            if rate_limited:
                stats.rate_limit_wait_seconds += delay

    def _undecodable(self, error: ValueError, request: str) -> NotionAnswerError:
        if isinstance(error, UnicodeDecodeError):  # an answer decoded by notion-client
            detail = f"the answer is not UTF-8 text: byte {error.start} is invalid ({error.reason})"
        else:
            detail = str(error)
        return NotionAnswerError(
            self.redact(
                f"Notion answered {request} with a body that cannot be decoded: {detail}. Not "
                "retried, since asking again would bring the same bytes; nothing was written. "
                "Check what sits between the pipeline and Notion (NOTION_API_BASE_URL, a proxy), "
                "or report the answer to Notion."
            )
        )

    def _backoff(self, attempt: int) -> float:
        base = min(
            self.policy.initial_backoff_seconds * 2 ** (attempt - 1),
            self.policy.max_backoff_seconds,
        )
        return base * (0.5 + self.jitter() / 2)

    def _translate(self, error: HTTPResponseError, request: str, subject: str) -> NotionSyncError:
        code, message = _notion_message(error)
        status = error.status
        what = subject or "the requested object"
        if status == 401:
            text = (
                f"Notion refused the token (401 {code}) on {request}. Check NOTION_TOKEN (the "
                "integration's internal secret) and share the Leads database with the integration "
                "(in Notion: the database's ⋯ menu → Connections → add the integration)."
            )
            cls: type[NotionSyncError] = NotionAccessError
        elif status == 403:
            text = (
                f"Notion denied access to {what} (403 {code}) on {request}: {message} Check "
                "NOTION_TOKEN and the integration's capabilities (it needs 'Read content'), and "
                "share the database with the integration (⋯ menu → Connections)."
            )
            cls = NotionAccessError
        elif status == 404:
            text = (
                f"Notion found no {what} (404 {code}) on {request}. Check the id; the object may "
                "also exist but not be shared with the integration (in Notion: the database's ⋯ "
                "menu → Connections → add the integration)."
            )
            cls = NotionAccessError
        elif status == 400 and "start_cursor" in message:
            text = f"Notion rejected the pagination cursor on {request}: {message}"
            cls = InvalidCursorError
        else:
            text = f"Notion rejected {request} ({status} {code}): {message}"
            cls = NotionRequestError
        return cls(self.redact(text))
