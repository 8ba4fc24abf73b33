"""The one ``Definitions`` object of the project, assembled from the settings, loaded once here."""

import warnings
from pathlib import Path

import dagster as dg

from leads_pipeline.defs.assets import analytics, downstream, ingestion, movement
from leads_pipeline.defs.assets.schemas import location_metadata
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


#: The repository's root: code references are paths relative to it on the git remote.
REPOSITORY_ROOT = Path(__file__).resolve().parents[1]


def with_standard_attributes(
    assets: list[dg.AssetsDefinition], settings: Settings
) -> list[dg.AssetsDefinition]:
    """``assets`` owned by ``settings.owners``, with the absolute URI of their table.

    Args:
        assets: The assets (each one's table is in the catalog).
        settings: Gives the owners (``LEADS_OWNERS``), the lake root and the warehouse file.
    """

    def standard(spec: dg.AssetSpec) -> dg.AssetSpec:
        uri = location_metadata(spec.key.path[-1], settings.lake_uri, settings.warehouse_path)
        return spec.replace_attributes(
            owners=list(settings.owners), metadata={**spec.metadata, **uri}
        )

    return list(dg.map_asset_specs(standard, assets))


def with_code_references(
    assets: list[dg.AssetsDefinition], settings: Settings
) -> list[dg.AssetsDefinition]:
    """``assets`` with references to their source files, linked to the git remote
    (``LEADS_GIT_URL``, branch ``LEADS_GIT_BRANCH``) when one is configured.

    Args:
        assets: The assets.
        settings: Gives the remote and its branch.
    """
    # Dagster's own: code references are a beta API of Dagster 1.13, which warns (BetaWarning)
    # each time a reference is built. Only that category, only while building them, is silenced.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        referenced = dg.with_source_code_references(assets)
        if settings.git_url is None:
            return list(referenced)
        return list(
            dg.link_code_references_to_git(
                referenced,
                git_url=settings.git_url,
                git_branch=settings.git_branch,
                file_path_mapping=dg.AnchorBasedFilePathMapping(
                    local_file_anchor=REPOSITORY_ROOT, file_anchor_path_in_repository=""
                ),
            )
        )


def build_definitions(settings: Settings) -> dg.Definitions:
    """The project's definitions for ``settings``.

    Args:
        settings: The configuration (:func:`~leads_pipeline.settings.load_settings`).
    """
    return dg.Definitions(
        assets=with_code_references(
            with_standard_attributes(with_freshness_policy(ASSETS, settings), settings), settings
        ),
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
