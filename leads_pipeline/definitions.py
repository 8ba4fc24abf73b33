"""The one ``Definitions`` object of the project: assets, jobs and resources, assembled here."""

from __future__ import annotations

import dagster as dg

from leads_pipeline.assets import analytics, ingestion
from leads_pipeline.jobs import JOBS
from leads_pipeline.resource_factory import build_resources
from leads_pipeline.settings import load_settings

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([ingestion, analytics]),
    jobs=JOBS,
    resources=build_resources(load_settings()),
)
