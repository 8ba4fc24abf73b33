"""The source interface every implementation (Notion API, bundled sample) provides."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime

import dagster as dg
import pyarrow as pa

from leads_pipeline.storage.raw_store import pages_to_raw


@dataclass
class ListingStats:
    """Counters a listing fills in as it goes; shown in the materialization metadata."""

    pages: int = 0
    requests: int = 0
    retries: int = 0
    rate_limit_wait_seconds: float = 0.0
    #: Time spent pacing requests to the configured average rate (not counted as rate-limit wait).
    pacing_wait_seconds: float = 0.0
    #: Truncated ``people``/``relation`` values completed through the page property endpoint.
    values_completed: int = 0
    #: 429 answers by the ``additional_data.rate_limit_reason`` Notion gave (which budget ran
    #: out: the connection's or the workspace's), ``"unspecified"`` when it gave none.
    rate_limit_reasons: dict[str, int] = field(default_factory=dict)
    #: Lone surrogate escapes (invalid Unicode) replaced by U+FFFD in the answers' text.
    invalid_unicode_replaced: int = 0

    def count_rate_limit(self, reason: str) -> None:
        """Counts one 429 answer under ``reason``."""
        self.rate_limit_reasons[reason] = self.rate_limit_reasons.get(reason, 0) + 1


class LeadsSource(dg.ConfigurableResource, ABC):
    """A source of Notion page objects for the Leads database.

    Pages have the shape of API version 2025-09-03 or 2026-03-11 answers (or of older exports:
    trash marked by ``archived`` alone, see :func:`leads_pipeline.storage.raw_store.is_trashed`).
    """

    @property
    @abstractmethod
    def source_name(self) -> str:
        """``"notion"`` or ``"sample"``: recorded with every materialization."""

    @abstractmethod
    def identity(self) -> str:
        """A stable string naming where the pages come from (e.g. the data source id)."""

    @abstractmethod
    def data_source_schema(self, log: logging.Logger | None = None) -> Mapping[str, Mapping]:
        """The data source's properties: ``{name: {"id", "name", "type", ...}}``.

        Args:
            log: Where to report the requests' retries and waits (e.g. the run's log), for
                sources that make requests to find the schema.
        """

    @abstractmethod
    def list_raw(
        self,
        *,
        edited_on_or_after: datetime | None,
        stats: ListingStats,
        synced_at: datetime,
        complete_property_ids: Collection[str] = (),
        log: logging.Logger | None = None,
    ) -> Iterator[pa.Table]:
        """Lists live (non-trashed) pages as ``raw_notion_leads`` rows, batch by batch, sorted by
        ``last_edited_time`` ascending.

        Args:
            edited_on_or_after: Only pages edited at or after this instant; every page when None
                (a full listing, from which deletions are inferred).
            stats: Counters to update while listing.
            synced_at: Time of this sync, written in ``synced_at``.
            complete_property_ids: Ids of the properties whose values must be complete (see
                :meth:`complete_truncated`).
            log: Where to report progress.

        Yields:
            Tables with :data:`leads_pipeline.storage.raw_store.RAW_SCHEMA`.
        """

    def complete_truncated(
        self, pages: list[dict], property_ids: Collection[str], *, stats: ListingStats
    ) -> list[dict]:
        """Completes ``people``/``relation`` values that the listing truncated (``has_more``).

        Only the properties in ``property_ids`` (those a mapped column reads) are completed; the
        others are kept as listed. Sources that never truncate return ``pages`` unchanged.

        Args:
            pages: A batch of listed page objects.
            property_ids: Ids of the properties whose values must be complete.
            stats: Counters to update.

        Returns:
            The pages, with those values complete.
        """
        return pages

    @abstractmethod
    def latest_edit(self, *, after: datetime | None, stats: ListingStats) -> datetime | None:
        """The newest ``last_edited_time`` among live pages edited strictly after ``after``.

        One cheap request (``page_size`` 1, filtered on ``last_edited_time``, sorted descending):
        what a sensor asks to learn whether anything changed.

        Args:
            after: Only consider pages edited after this instant; all pages when None.
            stats: Counters to update.

        Returns:
            The newest edit time, or None when no page qualifies.
        """


class PageListingSource(LeadsSource):
    """A source that lists Python page objects; its raw rows are built from them.

    For sources whose pages are already in memory (the sample, a snapshot file, tests). The
    Notion source builds raw rows from its answers' bytes instead (:meth:`LeadsSource.list_raw`).
    """

    @abstractmethod
    def list_pages(
        self,
        *,
        edited_on_or_after: datetime | None,
        stats: ListingStats,
        log: logging.Logger | None = None,
    ) -> Iterator[list[dict]]:
        """Lists live (non-trashed) pages, in batches, sorted by ``last_edited_time`` ascending.

        Args:
            edited_on_or_after: Only pages edited at or after this instant; every page when None
                (a full listing, from which deletions are inferred).
            stats: Counters to update while listing.
            log: Where to report progress.

        Yields:
            Lists of page objects.
        """

    def list_raw(
        self,
        *,
        edited_on_or_after: datetime | None,
        stats: ListingStats,
        synced_at: datetime,
        complete_property_ids: Collection[str] = (),
        log: logging.Logger | None = None,
    ) -> Iterator[pa.Table]:
        """The listing of :meth:`list_pages` as ``raw_notion_leads`` rows, batch by batch.

        Values of the properties in ``complete_property_ids`` are completed first (see
        :meth:`complete_truncated`).

        Args:
            edited_on_or_after: As for :meth:`list_pages`.
            stats: Counters to update while listing.
            synced_at: Time of this sync, written in ``synced_at``.
            complete_property_ids: Ids of the properties whose values must be complete.
            log: Where to report progress.

        Yields:
            Tables with :data:`leads_pipeline.storage.raw_store.RAW_SCHEMA`.
        """
        for pages in self.list_pages(edited_on_or_after=edited_on_or_after, stats=stats, log=log):
            if complete_property_ids:
                pages = self.complete_truncated(pages, complete_property_ids, stats=stats)
            yield pages_to_raw(pages, synced_at)
