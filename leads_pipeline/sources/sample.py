"""The bundled sample source: generated pages served through the same interface as Notion."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from pydantic import Field

from leads_pipeline.sample_data import (
    SAMPLE_DATA_SOURCE_ID,
    SAMPLE_SCHEMA,
    cached_pages,
)
from leads_pipeline.sources.memory import InMemoryLeadsSource


class SampleLeadsSource(InMemoryLeadsSource):
    """Deterministic sample pages (about two years of leads); never touches the network."""

    pages: int = Field(default=2000, description="Number of generated leads.")
    seed: int = Field(default=42, description="Random seed of the generator.")

    @property
    def source_name(self) -> str:
        return "sample"

    def identity(self) -> str:
        return f"sample:{SAMPLE_DATA_SOURCE_ID}"

    def data_source_schema(self, log: logging.Logger | None = None) -> Mapping[str, Mapping]:
        return SAMPLE_SCHEMA

    def live_pages(self) -> Sequence[dict]:
        return cached_pages(self.pages, self.seed)
