"""A source that replays a JSON snapshot of a data source (schema and pages) without Notion."""

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import Field

from leads_pipeline.sources.memory import InMemoryLeadsSource
from leads_pipeline.storage.raw_store import is_trashed


def write_snapshot(
    path: str | Path, data_source_id: str, schema: Mapping, pages: list[dict]
) -> None:
    """Writes a snapshot file that :class:`SnapshotLeadsSource` replays."""
    document = {"data_source_id": data_source_id, "schema": schema, "pages": pages}
    Path(path).write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")


class SnapshotLeadsSource(InMemoryLeadsSource):
    """Pages read from a JSON file ``{"data_source_id", "schema", "pages"}``.

    Behaves like a Notion query: trashed pages (``in_trash``, or ``archived`` alone as in exports
    from before 2024) are left out, pages are sorted by
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

    def data_source_schema(self, log: logging.Logger | None = None) -> Mapping[str, Mapping]:
        return self._document()["schema"]

    def live_pages(self) -> Sequence[dict]:
        pages = [p for p in self._document()["pages"] if not is_trashed(p)]
        return sorted(pages, key=lambda p: (p["last_edited_time"], p["id"]))
