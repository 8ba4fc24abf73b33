"""The one ``Definitions`` object of the project, assembled from the settings, loaded once here."""

import dagster as dg

from leads_pipeline.defs.assets import analytics, downstream, ingestion, movement
from leads_pipeline.defs.checks import build_checks, leads_freshness_policy
from leads_pipeline.defs.jobs import JOBS
from leads_pipeline.defs.resources import build_resources
from leads_pipeline.defs.run_guard import guarded_in_process_executor
from leads_pipeline.defs.schedules import build_schedules
from leads_pipeline.defs.sensors import build_sensors
from leads_pipeline.settings import Settings, load_settings
from leads_pipeline.tables import LEADS_TABLE

#: Every asset of the project, in layer order (ingestion, analytics, movement, downstream).
ASSETS: list[dg.AssetsDefinition] = [
    *ingestion.ASSETS,
    *analytics.ASSETS,
    *movement.ASSETS,
    *downstream.ASSETS,
]


def with_freshness_policy(
    assets: list[dg.AssetsDefinition], settings: Settings
) -> list[dg.AssetsDefinition]:
    """``assets`` with the freshness policy of ``settings`` on ``leads``."""
    policy = leads_freshness_policy(settings)
    key = dg.AssetKey(LEADS_TABLE)
    return dg.map_asset_specs(
        lambda spec: spec.replace_attributes(freshness_policy=policy) if spec.key == key else spec,
        assets,
    )


def build_definitions(settings: Settings) -> dg.Definitions:
    """The project's definitions for ``settings``.

    Args:
        settings: The configuration (:func:`~leads_pipeline.settings.load_settings`).
    """
    return dg.Definitions(
        assets=with_freshness_policy(ASSETS, settings),
        asset_checks=[*build_checks(settings), *movement.CHECKS],
        jobs=JOBS,
        schedules=build_schedules(settings),
        sensors=build_sensors(settings),
        resources=build_resources(settings),
        # The one executor of every job. Steps share one process: starting a process per step
        # cost more than the steps themselves, and the pools still keep writers of the same
        # store apart (slots of dead runs are freed, see leads_pipeline/defs/run_guard.py).
        executor=guarded_in_process_executor,
    )


defs = build_definitions(load_settings())
