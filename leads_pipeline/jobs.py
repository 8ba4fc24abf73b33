"""Jobs: what a data engineer launches from the UI, a schedule or the command line."""

from __future__ import annotations

import dagster as dg

from leads_pipeline.maintenance import maintain_lake
from leads_pipeline.raw_store import RAW_TABLE
from leads_pipeline.run_guard import guarded_in_process_executor

_EVERYTHING_FROM_RAW = dg.AssetSelection.assets(RAW_TABLE).downstream()

# A sync is a handful of small steps that mostly run one after the other anyway (the lake and
# warehouse pools admit one writer each): running them in the run's own process saves starting a
# Python process per step, which is most of a sync's wall time. Guarded: pool slots left by a
# killed run are freed before a step waits on them (leads_pipeline/run_guard.py).
_EXECUTOR = guarded_in_process_executor

sync_leads = dg.define_asset_job(
    "sync_leads",
    selection=_EVERYTHING_FROM_RAW,
    executor_def=_EXECUTOR,
    description="Incremental sync: pages edited since the last sync, then everything downstream.",
)

refresh_leads = dg.define_asset_job(
    "refresh_leads",
    selection=_EVERYTHING_FROM_RAW,
    executor_def=_EXECUTOR,
    description="Full listing of Notion: catches deleted pages, then everything downstream.",
    config={"ops": {RAW_TABLE: {"config": {"full_listing": True}}}},
)

JOBS = [sync_leads, refresh_leads, maintain_lake]
