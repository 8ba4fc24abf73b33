"""Builds the resources from the environment configuration (DESIGN.md's variables)."""

from __future__ import annotations

from typing import Any

import dagster as dg

from leads_pipeline.resources import LakeResource, PropertyMapResource, WarehouseResource
from leads_pipeline.serving import LeadsAnalytics
from leads_pipeline.settings import SOURCE_SAMPLE, Settings
from leads_pipeline.sources.sample import SampleLeadsSource


def build_source(settings: Settings) -> Any:
    """The source resource for ``settings.source``; secrets are passed as ``EnvVar``."""
    if settings.source == SOURCE_SAMPLE:
        return SampleLeadsSource()
    from leads_pipeline.sources.notion import NotionLeadsSource

    return NotionLeadsSource(
        token=dg.EnvVar("NOTION_TOKEN"),
        database_id=settings.notion_database_id,
        data_source_id=settings.notion_data_source_id,
        api_base_url=settings.notion_api_base_url,
        api_version=settings.notion_api_version,
    )


def build_resources(settings: Settings) -> dict[str, Any]:
    """All resources, keyed as the assets expect them."""
    return {
        "source": build_source(settings),
        "lake": LakeResource(uri=settings.lake_uri),
        "warehouse": WarehouseResource(path=settings.warehouse_path),
        "property_map": PropertyMapResource(path=settings.property_map_path),
        "analytics": LeadsAnalytics(
            warehouse_path=settings.warehouse_path, lake_uri=settings.lake_uri
        ),
    }
