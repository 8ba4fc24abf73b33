"""Dagster resources for the external systems: the Delta lake, the DuckDB warehouse, the map."""

from __future__ import annotations

import dagster as dg
from pydantic import Field, PrivateAttr

from leads_pipeline.settings import DEFAULT_LAKE_URI, DEFAULT_WAREHOUSE_PATH
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

    def lake(self) -> DeltaLake:
        """The lake as a plain object."""
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
