"""Where pages come from: one abstract resource, a Notion and a sample implementation."""

from leads_pipeline.sources.base import LeadsSource, ListingStats
from leads_pipeline.sources.sample import SampleLeadsSource

__all__ = ["LeadsSource", "ListingStats", "SampleLeadsSource"]
