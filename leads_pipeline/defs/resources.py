"""Dagster resources for the external systems (the Delta lake, the DuckDB warehouse, the map),
and :func:`build_resources`, which builds every resource of the project from the settings.

The source resources are in :mod:`leads_pipeline.sources`; the serving layer's resource is
:class:`leads_pipeline.serving.LeadsAnalytics`.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, TypeVar

import dagster as dg
from pydantic import Field, PrivateAttr, create_model

from leads_pipeline.serving import LeadsAnalytics
from leads_pipeline.settings import (
    DEFAULT_LAKE_URI,
    DEFAULT_WAREHOUSE_PATH,
    SOURCE_SAMPLE,
    Settings,
)
from leads_pipeline.sources.sample import SampleLeadsSource
from leads_pipeline.storage.lake import DeltaLake
from leads_pipeline.storage.warehouse import Warehouse
from leads_pipeline.transform.property_map import PropertyMap, load_property_map


class LakeResource(dg.ConfigurableResource):
    """The Delta lake root holding ``raw_notion_leads``, ``leads`` and ``lead_quality_issues``.

    Object-store credentials come from each cloud's standard environment variables, read by
    deltalake itself; ``storage_options`` adds or overrides options (never put secrets in run
    config: use ``EnvVar``).
    """

    uri: str = Field(default=DEFAULT_LAKE_URI, description="Local path or s3://, gs://, az:// URI.")
    storage_options: dict[str, str] = Field(
        default_factory=dict, description="deltalake object-store options."
    )
    full_previews: bool = Field(
        default=False,
        description="Show names, emails and phones in the previews of materializations "
        "(LEADS_FULL_PREVIEWS; for a development lake only).",
    )

    def delta_lake(self) -> DeltaLake:
        """The lake as a plain :class:`~leads_pipeline.storage.lake.DeltaLake` object."""
        return DeltaLake(self.uri, self.storage_options)


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB file holding the ``analytics`` tables."""

    path: str = Field(default=DEFAULT_WAREHOUSE_PATH, description="DuckDB database file.")
    _open: Warehouse | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # One read-only connection serves every read of the run while the file is unchanged.
        self._open = Warehouse(self.path, keep_reader_open=True)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._open is not None:
            self._open.close()
            self._open = None

    def warehouse(self) -> Warehouse:
        """The warehouse as a plain object (sharing the run's reader during a run)."""
        return self._open if self._open is not None else Warehouse(self.path)


class PropertyMapResource(dg.ConfigurableResource):
    """Which Notion property feeds which ``leads`` column (``LEADS_PROPERTY_MAP``)."""

    path: str | None = Field(default=None, description="TOML file; built-in defaults when unset.")

    def load(self) -> PropertyMap:
        """The validated map."""
        return load_property_map(self.path)


# -- building them from the settings ---------------------------------------------------------

ResourceT = TypeVar("ResourceT", bound=dg.ConfigurableResource)


def with_launchpad_defaults(cls: type[ResourceT], **values: Any) -> ResourceT:
    """A ``cls`` resource holding ``values``, which are also its fields' defaults.

    Run config (the launchpad, ``dg launch --config-json``) replaces a resource's whole
    configuration, and each field it leaves out falls back to the field's *class* default, not
    to the value the resource was built with: setting only ``page_size`` would drop the token
    and the database id. Built by this function, the resource's config schema has every value
    here as the default of its field, so run config naming one field keeps all the others. An
    ``EnvVar`` stays an ``EnvVar``: the schema's default is ``{env: NAME}``, resolved when a run
    starts, never the variable's value.

    The instance belongs to a subclass of ``cls`` of the same name, module and docstring, with
    the same field types, constraints and validators.

    Args:
        cls: The resource class.
        **values: Field values (literals or ``dg.EnvVar``).

    Returns:
        The resource.
    """
    fields = {}
    for name, value in values.items():
        info = cls.model_fields[name]
        kind = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
        fields[name] = (kind, Field(default=value, description=info.description, repr=info.repr))
    defaults = create_model(
        cls.__name__, __base__=cls, __module__=cls.__module__, __doc__=cls.__doc__, **fields
    )
    defaults.__qualname__ = cls.__qualname__
    return defaults(**values)


def build_source(settings: Settings) -> Any:
    """The source resource for ``settings.source``; secrets are passed as ``EnvVar``.

    The sample source gets ``settings.sample_day`` when it is set (``LEADS_SAMPLE_DAY``). The
    Notion source's values (token, database, API, tuning knobs) are its fields' defaults (see
    :func:`with_launchpad_defaults`), so the launchpad can change any one of them alone.
    """
    if settings.source == SOURCE_SAMPLE:
        day = {} if settings.sample_day is None else {"day": settings.sample_day}
        return SampleLeadsSource(**day)
    from leads_pipeline.sources.notion import NotionLeadsSource

    return with_launchpad_defaults(
        NotionLeadsSource,
        token=dg.EnvVar("NOTION_TOKEN"),
        database_id=settings.notion_database_id,
        data_source_id=settings.notion_data_source_id,
        api_base_url=settings.notion_api_base_url,
        api_version=settings.notion_api_version,
        **asdict(settings.notion_tuning),
    )


def build_resources(settings: Settings) -> dict[str, Any]:
    """All resources, keyed as the assets expect them."""
    return {
        "source": build_source(settings),
        "lake": LakeResource(uri=settings.lake_uri, full_previews=settings.full_previews),
        "warehouse": WarehouseResource(path=settings.warehouse_path),
        "property_map": PropertyMapResource(path=settings.property_map_path),
        "analytics": LeadsAnalytics.from_env(settings),
    }
