"""Listing behaviour shared by the sources whose pages are already in memory."""

import logging
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from datetime import datetime

from leads_pipeline.sources.base import ListingStats, PageListingSource
from leads_pipeline.storage.raw_store import is_trashed

PAGE_SIZE = 100


def edit_time(page: dict) -> datetime:
    """A page's ``last_edited_time`` as an aware datetime."""
    return datetime.fromisoformat(page["last_edited_time"].replace("Z", "+00:00"))


class InMemoryLeadsSource(PageListingSource):
    """A source that answers like a Notion query over a list of pages it holds.

    Subclasses provide the live pages sorted by ``last_edited_time``; listing filters and pages
    through them 100 at a time, counting one request per page of results. A trashed page
    (``in_trash`` or ``archived``, see :func:`~leads_pipeline.storage.raw_store.is_trashed`) is never
    listed, as Notion's queries leave trashed pages out.
    """

    @abstractmethod
    def live_pages(self) -> Sequence[dict]:
        """Live pages, sorted by ``last_edited_time`` ascending."""

    def _listed(self) -> Sequence[dict]:
        """:meth:`live_pages` without any trashed page a subclass let through."""
        pages = self.live_pages()
        if any(is_trashed(page) for page in pages):
            return [page for page in pages if not is_trashed(page)]
        return pages

    def list_pages(
        self,
        *,
        edited_on_or_after: datetime | None,
        stats: ListingStats,
        log: logging.Logger | None = None,
    ) -> Iterator[list[dict]]:
        pages = self._listed()
        if edited_on_or_after is not None:
            pages = [p for p in pages if edit_time(p) >= edited_on_or_after]
        stats.requests += 1 if not pages else 0
        for start in range(0, len(pages), PAGE_SIZE):
            batch = list(pages[start : start + PAGE_SIZE])
            stats.requests += 1
            stats.pages += len(batch)
            yield batch

    def latest_edit(self, *, after: datetime | None, stats: ListingStats) -> datetime | None:
        stats.requests += 1
        pages = self._listed()
        newest = edit_time(pages[-1]) if pages else None
        if newest is None or (after is not None and newest <= after):
            return None
        return newest
