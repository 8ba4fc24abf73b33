"""Helpers to run the pipeline against a snapshot source whose pages change between syncs."""

import dagster as dg
from deltalake import DeltaTable

from leads_pipeline.defs.assets import analytics, ingestion
from leads_pipeline.defs.resources import LakeResource, PropertyMapResource, WarehouseResource
from leads_pipeline.sources.sample_data import SAMPLE_SCHEMA
from leads_pipeline.sources.snapshot import SnapshotLeadsSource, write_snapshot

ASSETS = [*ingestion.ASSETS, *analytics.ASSETS]
DATA_SOURCE_ID = "5e1a7a3c-0000-4000-8000-000000000001"


class Workspace:
    """A snapshot file, a lake and a warehouse in a temporary directory."""

    def __init__(self, root, schema=None, property_map=None):
        self.root = root
        self.snapshot = root / "snapshot.json"
        self.lake_uri = str(root / "lake")
        self.warehouse_path = str(root / "warehouse.duckdb")
        self.schema = schema or SAMPLE_SCHEMA
        self.property_map = property_map

    def publish(self, pages, schema=None):
        write_snapshot(self.snapshot, DATA_SOURCE_ID, schema or self.schema, pages)

    def resources(self, lake_uri=None, storage_options=None):
        return {
            "source": SnapshotLeadsSource(path=str(self.snapshot)),
            "lake": LakeResource(
                uri=lake_uri or self.lake_uri, storage_options=storage_options or {}
            ),
            "warehouse": WarehouseResource(path=self.warehouse_path),
            "property_map": PropertyMapResource(path=self.property_map),
        }

    def sync(self, *, full=False, rebuild=False, assets=ASSETS, **kwargs):
        config = {"ops": {}}
        if any(k.to_user_string() == "raw_notion_leads" for a in assets for k in a.keys):
            config["ops"]["raw_notion_leads"] = {"config": {"full_listing": full}}
        config["ops"]["leads_and_quality_issues"] = {"config": {"rebuild": rebuild}}
        result = dg.materialize(assets, resources=self.resources(**kwargs), run_config=config)
        assert result.success
        return result

    def table(self, name, version=None):
        table = DeltaTable(f"{self.lake_uri}/{name}")
        if version is not None:
            table.load_as_version(version)
        return table

    def rows(self, name, key="id"):
        return {r[key]: r for r in self.table(name).to_pyarrow_table().to_pylist()}


def metadata_of(result, asset):
    return next(
        e.event_specific_data.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == asset
    )
