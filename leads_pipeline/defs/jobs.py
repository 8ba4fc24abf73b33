"""Jobs: what a data engineer launches from the UI, a schedule or the command line."""

from __future__ import annotations

import dagster as dg

from leads_pipeline.defs.maintenance import maintain_lake
from leads_pipeline.tables import RAW_TABLE

_EVERYTHING_FROM_RAW = dg.AssetSelection.assets(RAW_TABLE).downstream()

# Every job runs on the executor the Definitions declare (definitions.py).

sync_leads = dg.define_asset_job(
    "sync_leads",
    selection=_EVERYTHING_FROM_RAW,
    description="Incremental sync: pages edited since the last sync, then everything downstream.",
)

refresh_leads = dg.define_asset_job(
    "refresh_leads",
    selection=_EVERYTHING_FROM_RAW,
    description="Full listing of Notion: catches deleted pages, then everything downstream.",
    config={"ops": {RAW_TABLE: {"config": {"full_listing": True}}}},
)

JOBS = [sync_leads, refresh_leads, maintain_lake]
