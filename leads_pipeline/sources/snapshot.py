"""A source that replays a JSON snapshot of a data source (schema and pages) without Notion."""

import json
import logging
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path

from pydantic import Field

from leads_pipeline.sources.base import LeadsSource, ListingStats

_PAGE_SIZE = 100


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def write_snapshot(
    path: str | Path, data_source_id: str, schema: Mapping, pages: list[dict]
) -> None:
    """Writes a snapshot file that :class:`SnapshotLeadsSource` replays."""
    document = {"data_source_id": data_source_id, "schema": schema, "pages": pages}
    Path(path).write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")


class SnapshotLeadsSource(LeadsSource):
    """Pages read from a JSON file ``{"data_source_id", "schema", "pages"}``.

    Behaves like a Notion query: trashed pages are left out, pages are sorted by
    ``last_edited_time`` ascending and filtered on it. Handy to replay a captured export, and in
    tests to make the source change between two syncs.
    """

    path: str = Field(description="The snapshot file.")

    def _document(self) -> dict:
        return json.loads(Path(self.path).read_text(encoding="utf-8"))

    @property
    def source_name(self) -> str:
        return "snapshot"

    def identity(self) -> str:
        return f"snapshot:{self._document()['data_source_id']}"

    def data_source_schema(self) -> Mapping[str, Mapping]:
        return self._document()["schema"]

    def _live_pages(self) -> list[dict]:
        pages = [p for p in self._document()["pages"] if not p.get("in_trash")]
        return sorted(pages, key=lambda p: (p["last_edited_time"], p["id"]))

    def list_pages(
        self,
        *,
        edited_on_or_after: datetime | None,
        stats: ListingStats,
        log: logging.Logger | None = None,
    ) -> Iterator[list[dict]]:
        pages = self._live_pages()
        if edited_on_or_after is not None:
            pages = [p for p in pages if _instant(p["last_edited_time"]) >= edited_on_or_after]
        for start in range(0, len(pages), _PAGE_SIZE):
            batch = pages[start : start + _PAGE_SIZE]
            stats.requests += 1
            stats.pages += len(batch)
            yield batch

    def latest_edit(self, *, after: datetime | None, stats: ListingStats) -> datetime | None:
        stats.requests += 1
        pages = self._live_pages()
        if not pages:
            return None
        newest = _instant(pages[-1]["last_edited_time"])
        return None if after is not None and newest <= after else newest
