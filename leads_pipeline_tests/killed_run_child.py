"""Code location for the dead-run tests: the project's jobs on a sample source that can stall.

Loaded by ``dagster job execute -m leads_pipeline_tests.killed_run_child`` (headless) and by
``dagster dev -m leads_pipeline_tests.killed_run_child`` (daemon). When the environment variable
``LEADS_TEST_STALL_MARKER`` names a file that does not exist yet, the first listing writes its
process id there and then sleeps inside the ``raw_notion_leads`` step, which holds the
``leads_lake`` pool slot, until the test kills it. Every later listing (the marker exists) runs
normally, so the next run syncs the same sample pages as an uninterrupted run.
"""

import os
import time
from pathlib import Path

import dagster as dg

from leads_pipeline.definitions import ASSETS
from leads_pipeline.defs.assets import movement
from leads_pipeline.defs.checks import CHECKS
from leads_pipeline.defs.jobs import JOBS
from leads_pipeline.defs.resources import build_resources
from leads_pipeline.defs.run_guard import guarded_in_process_executor
from leads_pipeline.settings import load_settings
from leads_pipeline.sources.sample import SampleLeadsSource

STALL_MARKER_ENV = "LEADS_TEST_STALL_MARKER"


class StallingSampleSource(SampleLeadsSource):
    """The sample source, stalling in its first listing (see the module docstring)."""

    def list_pages(self, **kwargs):
        marker = os.environ.get(STALL_MARKER_ENV)
        if marker and not Path(marker).exists():
            partial = Path(f"{marker}.partial")
            partial.write_text(str(os.getpid()))
            partial.rename(marker)
            time.sleep(600)
        yield from super().list_pages(**kwargs)


defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=[*CHECKS, *movement.CHECKS],
    jobs=JOBS,
    resources={**build_resources(load_settings()), "source": StallingSampleSource()},
    executor=guarded_in_process_executor,
)
