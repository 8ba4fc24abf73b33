"""The bundled sample source: generated pages served through the same interface as Notion."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from pydantic import Field

from leads_pipeline.sources.memory import InMemoryLeadsSource
from leads_pipeline.sources.sample_data import (
    DAILY_MOVE_SHARE,
    DAILY_TRASHED,
    RESTORE_DAY,
    SAMPLE_DATA_SOURCE_ID,
    SAMPLE_SCHEMA,
    pages_on_day,
)


class SampleLeadsSource(InMemoryLeadsSource):
    """Deterministic sample pages (about two years of leads); never touches the network.

    With ``day``, the sample as it is after that many simulated days of a deterministic
    evolution (:func:`~leads_pipeline.sources.sample_data.pages_on_day`): syncing days 0, 1, 2, … into
    one lake builds a lead history (status moves, trashed leads, one restored).
    """

    pages: int = Field(default=2000, description="Number of generated leads.")
    seed: int = Field(default=42, description="Random seed of the generator.")
    day: int | None = Field(
        default=None,
        ge=0,
        description=(
            "Simulated day of the sample's deterministic evolution (LEADS_SAMPLE_DAY). Unset or "
            "0: the sample as generated. N: after N days, each moving "
            f"{DAILY_MOVE_SHARE:.0%} of the open leads one status forward (with that status's "
            f"date) and trashing {DAILY_TRASHED} leads; on day {RESTORE_DAY} one of the day "
            "before's trashed leads is restored. Edits of day N are dated 2026-01-02 + N days."
        ),
    )

    @property
    def source_name(self) -> str:
        return "sample"

    def identity(self) -> str:
        return f"sample:{SAMPLE_DATA_SOURCE_ID}"

    def data_source_schema(self, log: logging.Logger | None = None) -> Mapping[str, Mapping]:
        return SAMPLE_SCHEMA

    def live_pages(self) -> Sequence[dict]:
        return pages_on_day(self.pages, self.seed, self.day or 0)
