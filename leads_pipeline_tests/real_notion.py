"""Pages and schemas recorded from the real Notion API, read from outside the repository.

The corpus (``pages.jsonl.gz``, ``data_sources.jsonl.gz``) lives in the directory named by
``LEADS_TEST_REAL_NOTION_DIR`` (``.ci/run`` points it at ``../shared/real-notion``). It is never
copied into the repository; tests that need it skip, saying why, when it is absent.

A *state* is one recorded schema of a database with the pages recorded under exactly that schema
(the same property names, ids and types), each page at its latest recording: a database as the
real API showed it at one moment.
"""

from __future__ import annotations

import gzip
import json
import os
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

CORPUS_ENV = "LEADS_TEST_REAL_NOTION_DIR"


def corpus_dir() -> Path:
    """The corpus directory, or a skip of the calling test when it is not available."""
    value = os.environ.get(CORPUS_ENV)
    if not value:
        pytest.skip(
            f"{CORPUS_ENV} is not set: these tests read pages recorded from the real Notion API "
            "(../shared/real-notion, which .ci/run sets); a plain clone has no corpus."
        )
    path = Path(value)
    if not (path / "pages.jsonl.gz").is_file() or not (path / "data_sources.jsonl.gz").is_file():
        pytest.skip(f"{CORPUS_ENV}={value} holds no pages.jsonl.gz / data_sources.jsonl.gz.")
    return path


def _lines(name: str) -> list[dict]:
    with gzip.open(corpus_dir() / name, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@cache
def _records() -> tuple[list[dict], list[dict]]:
    return _lines("pages.jsonl.gz"), _lines("data_sources.jsonl.gz")


def recorded_pages() -> list[dict]:
    """Every recorded page row: ``{"page": ..., "provenance": {...}}``."""
    return _records()[0]


def recorded_schemas() -> list[dict]:
    """Every recorded database / data source object row: ``{"object": ..., "provenance": ...}``."""
    return _records()[1]


def parent_of(page: dict) -> str | None:
    """The data source (or, before data sources, database) a page belongs to."""
    parent = page.get("parent") or {}
    return parent.get("data_source_id") or parent.get("database_id")


def signature(properties: dict) -> frozenset[tuple[str, str, str]]:
    """The ``(name, id, type)`` of each property of a schema or a page."""
    return frozenset((name, p.get("id"), p.get("type")) for name, p in properties.items())


def is_trashed(page: dict) -> bool:
    """Trash as every API version marks it: ``in_trash``, or ``archived`` before 2024."""
    return bool(page.get("in_trash") or page.get("archived"))


@dataclass(frozen=True)
class State:
    """One recorded schema and the pages recorded under it (latest recording of each)."""

    parent_id: str
    schema: dict
    pages: tuple[dict, ...]
    notion_versions: frozenset[str]

    def properties_of_type(self, *types: str) -> list[str]:
        """Names of the schema's properties of the given types, in schema order."""
        return [name for name, p in self.schema.items() if p["type"] in types]

    @property
    def title(self) -> str | None:
        names = self.properties_of_type("title")
        return names[0] if names else None

    @property
    def live_pages(self) -> list[dict]:
        return [p for p in self.pages if not is_trashed(p)]


@cache
def states() -> tuple[State, ...]:
    """Every database state of the corpus that has at least one page, in a stable order."""
    schemas: dict[str, dict[frozenset, dict]] = defaultdict(dict)
    for row in recorded_schemas():
        obj = row["object"]
        properties = obj.get("properties") or {}
        if properties:
            schemas[obj["id"]][signature(properties)] = properties
    pages: dict[tuple[str, frozenset], dict[str, tuple[dict, str]]] = defaultdict(dict)
    for row in recorded_pages():
        page = row["page"]
        parent = parent_of(page)
        if parent is None or parent not in schemas:
            continue
        key = (parent, signature(page.get("properties") or {}))
        if key[1] not in schemas[parent]:
            continue
        seen = pages[key].get(page["id"])
        if seen is None or seen[0]["last_edited_time"] <= page["last_edited_time"]:
            pages[key][page["id"]] = (page, row["provenance"].get("notion_version", ""))
    result = []
    for (parent, sig), by_id in sorted(
        pages.items(), key=lambda item: (item[0][0], sorted(item[0][1]))
    ):
        result.append(
            State(
                parent_id=parent,
                schema=schemas[parent][sig],
                pages=tuple(page for page, _ in by_id.values()),
                notion_versions=frozenset(version for _, version in by_id.values()),
            )
        )
    return tuple(result)


def stale_pairs() -> Iterator[tuple[dict, dict]]:
    """Pairs of recordings of one page with the same ``last_edited_time`` but other values."""
    seen: dict[tuple[str | None, str, str], dict] = {}
    for row in recorded_pages():
        page = row["page"]
        key = (parent_of(page), page["id"], page["last_edited_time"])
        earlier = seen.get(key)
        if earlier is not None and earlier["properties"] != page["properties"]:
            yield earlier, page
        seen[key] = page


def plain_text(value: dict) -> str | None:
    """A title or rich_text value's text, every segment's ``plain_text`` joined (None if empty)."""
    segments = value.get(value.get("type")) or []
    text = "".join(segment.get("plain_text") or "" for segment in segments)
    return text or None
