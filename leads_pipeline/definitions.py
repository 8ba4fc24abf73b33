"""The one ``Definitions`` object of the project, assembled here from each module's lists."""

import dagster as dg

from leads_pipeline.assets import analytics, downstream, ingestion
from leads_pipeline.checks import CHECKS
from leads_pipeline.jobs import JOBS
from leads_pipeline.resource_factory import build_resources
from leads_pipeline.run_guard import guarded_in_process_executor
from leads_pipeline.schedules import SCHEDULES
from leads_pipeline.sensors import SENSORS
from leads_pipeline.settings import load_settings

defs = dg.Definitions(
    assets=[*ingestion.ASSETS, *analytics.ASSETS, *downstream.ASSETS],
    asset_checks=CHECKS,
    jobs=JOBS,
    schedules=SCHEDULES,
    sensors=SENSORS,
    resources=build_resources(load_settings()),
    # Steps share one process: starting a process per step cost more than the steps themselves,
    # and the pools still keep writers of the same store apart (slots of dead runs are freed,
    # see leads_pipeline/run_guard.py).
    executor=guarded_in_process_executor,
)
