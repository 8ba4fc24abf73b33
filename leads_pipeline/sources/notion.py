"""The Notion source: a data source of the Leads database, read with the official notion-client.

The resource composes the concerns that live in their own modules: discovery of the data source
and its schema (:mod:`.notion_discovery`), the windowed listing (:mod:`.notion_listing`), HTTP
policy, pacing, retries and errors (:mod:`.notion_http`) and answer decoding
(:mod:`.notion_answers`). It lists through one path, :meth:`NotionLeadsSource.list_raw`: answers
stay bytes, decoded in bulk into ``raw_notion_leads`` rows.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Iterator, Mapping
from datetime import datetime

import dagster as dg
import orjson
import pyarrow as pa
from notion_client import Client
from pydantic import Field, PrivateAttr, field_validator

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
from leads_pipeline.sources.notion_answers import CheckedAnswer, Envelope, read_answer
from leads_pipeline.sources.notion_discovery import discover_data_source, read_schema
from leads_pipeline.sources.notion_http import CallPolicy, NotionCaller, send_undecoded
from leads_pipeline.sources.notion_listing import (
    Progress,
    RawListing,
    edited_filter,
    instant,
    iso,
)
from leads_pipeline.storage.raw_store import RAW_SCHEMA

TRUNCATABLE_TYPES = ("people", "relation")
_DESCENDING = [{"timestamp": "last_edited_time", "direction": "descending"}]


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

    def _getter(self, stats: ListingStats, log: logging.Logger | None):
        """:meth:`_get` with ``stats`` and ``log`` bound (a :data:`.notion_discovery.Getter`)."""
        return lambda path, send, subject: self._get(path, send, stats, subject, log)

    # -- discovery -----------------------------------------------------------------------------

    def _data_source(
        self, stats: ListingStats | None = None, log: logging.Logger | None = None
    ) -> str:
        if self._notion_data_source_id is None:
            self._notion_data_source_id = discover_data_source(
                self.client(),
                self._getter(stats or ListingStats(), log),
                self.database_id,
                self.data_source_id,
            )
        return self._notion_data_source_id

    def data_source_schema(self, log: logging.Logger | None = None) -> Mapping[str, Mapping]:
        if self._notion_schema is None:
            stats = ListingStats()
            data_source_id = self._data_source(stats, log)
            self._notion_schema = read_schema(
                self.client(), self._getter(stats, log), data_source_id
            )
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

        The request is sent by :func:`.notion_http.send_undecoded`. The body is checked as it
        arrives (:func:`.notion_answers.read_answer`): lone surrogate escapes are replaced and
        reported here, an undecodable body fails the call at once.
        """
        client = self.client()
        path = f"data_sources/{data_source_id}/query"

        def send() -> tuple[bytes, Envelope]:
            answer = read_answer(send_undecoded(client, "POST", path, body))
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

        Windows, pacing, retries and progress as described in :mod:`.notion_listing`; the
        answers are never turned into Python objects, except pages with a truncated value to
        complete.
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
        return self._listing(edited_on_or_after, stats, log, synced_at, names, wanted)

    def _listing(
        self,
        edited_on_or_after: datetime | None,
        stats: ListingStats,
        log: logging.Logger | None,
        synced_at: datetime,
        truncatable_names: Collection[str],
        complete_property_ids: Collection[str],
    ) -> Iterator[pa.Table]:
        data_source_id = self._data_source(stats, log)
        listing = RawListing(
            data_source_id=data_source_id,
            page_size=self.page_size,
            send_query=lambda body: self._query_answer(data_source_id, body, stats, log),
            newest_edit=lambda: self.latest_edit(after=None, stats=stats),
            finish_rows=lambda rows: self._complete_rows(rows, complete_property_ids, stats),
            synced_at=synced_at,
            truncatable_names=truncatable_names,
            stats=stats,
            progress=Progress(log, stats, self.progress_interval_seconds),
        )
        yield from listing.rows(edited_on_or_after)

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
            body["filter"] = edited_filter("after", iso(after))
        response = self._query(data_source_id, body, stats, None)
        results = [p for p in response.get("results", ()) if p.get("object") == "page"]
        if not results:
            return None
        newest = instant(results[0]["last_edited_time"])
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
