"""The bundled sample source: generated pages served through the same interface as Notion."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from datetime import datetime

from pydantic import Field

from leads_pipeline.sample_data import (
    SAMPLE_DATA_SOURCE_ID,
    SAMPLE_SCHEMA,
    cached_pages,
)
from leads_pipeline.sources.base import LeadsSource, ListingStats

_PAGE_SIZE = 100


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class SampleLeadsSource(LeadsSource):
    """Deterministic sample pages (about two years of leads); never touches the network."""

    pages: int = Field(default=2000, description="Number of generated leads.")
    seed: int = Field(default=42, description="Random seed of the generator.")

    @property
    def source_name(self) -> str:
        return "sample"

    def identity(self) -> str:
        return f"sample:{SAMPLE_DATA_SOURCE_ID}"

    def data_source_schema(self) -> Mapping[str, Mapping]:
        return SAMPLE_SCHEMA

    def list_pages(
        self,
        *,
        edited_on_or_after: datetime | None,
        stats: ListingStats,
        log: logging.Logger | None = None,
    ) -> Iterator[list[dict]]:
        pages = cached_pages(self.pages, self.seed)
        if edited_on_or_after is not None:
            pages = tuple(p for p in pages if _instant(p["last_edited_time"]) >= edited_on_or_after)
        for start in range(0, max(len(pages), 1), _PAGE_SIZE):
            batch = list(pages[start : start + _PAGE_SIZE])
            stats.requests += 1
            stats.pages += len(batch)
            if batch:
                yield batch

    def latest_edit(self, *, after: datetime | None, stats: ListingStats) -> datetime | None:
        stats.requests += 1
        pages = cached_pages(self.pages, self.seed)
        newest = _instant(pages[-1]["last_edited_time"]) if pages else None
        if newest is None or (after is not None and newest <= after):
            return None
        return newest
