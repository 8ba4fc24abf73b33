"""maintain_lake: compaction and vacuum on real Delta tables, time travel kept within retention."""

import dagster as dg
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from leads_pipeline.definitions import defs
from leads_pipeline.defs.assets import analytics, ingestion
from leads_pipeline.defs.maintenance import (
    DEFAULT_RETENTION_HOURS,
    compact_and_vacuum_lake,
    maintain_lake,
)
from leads_pipeline.defs.pools import LAKE_POOL
from leads_pipeline.defs.resources import LakeResource

COMMITS = 25


@pytest.fixture
def fragmented(lake_uri) -> str:
    """A ``leads`` table built by many small commits, one file each."""
    uri = f"{lake_uri}/leads"
    for i in range(COMMITS):
        write_deltalake(uri, pa.table({"id": [f"lead-{i}"], "n": [i]}), mode="append")
    return uri


def maintain(lake_uri: str, **config) -> dg.ExecuteInProcessResult:
    return maintain_lake.execute_in_process(
        resources={"lake": LakeResource(uri=lake_uri)},
        run_config={"ops": {"compact_and_vacuum_lake": {"config": config}}},
        raise_on_error=False,
    )


def test_job_is_registered_runs_in_the_lake_pool_and_keeps_a_week_by_default():
    assert defs.resolve_job_def("maintain_lake").name == "maintain_lake"
    assert compact_and_vacuum_lake.pool == LAKE_POOL
    assert DEFAULT_RETENTION_HOURS >= 168
    # Never part of a sync: the sync jobs hold assets only.
    for job in ("sync_leads", "refresh_leads"):
        ops = {node.name for node in defs.resolve_job_def(job).nodes}
        assert "compact_and_vacuum_lake" not in ops


def test_compaction_merges_small_files_and_time_travel_still_works(fragmented, lake_uri):
    assert len(DeltaTable(fragmented).file_uris()) == COMMITS
    result = maintain(lake_uri)
    assert result.success
    totals = result.output_for_node("compact_and_vacuum_lake")
    assert totals["files_compacted"] == COMMITS
    assert totals["files_added"] == 1
    assert totals["files_vacuumed"] == 0  # everything replaced is younger than 7 days

    table = DeltaTable(fragmented)
    assert len(table.file_uris()) == 1
    assert table.to_pyarrow_table().num_rows == COMMITS
    assert table.version() == COMMITS  # one commit: versions 0..COMMITS-1 were the appends
    old = DeltaTable(fragmented, version=4).to_pyarrow_table()
    assert sorted(old["n"].to_pylist()) == [0, 1, 2, 3, 4]

    # What the UI shows on the run.
    outputs = [e for e in result.all_node_events if e.event_type_value == "STEP_OUTPUT"]
    shown = outputs[0].event_specific_data.metadata
    assert shown["files_compacted"].value == COMMITS
    assert shown["leads/files_after"].value == 1
    assert shown["retention_hours"].value == DEFAULT_RETENTION_HOURS


def test_a_retention_below_the_table_minimum_is_refused(fragmented, lake_uri):
    result = maintain(lake_uri, retention_hours=0)
    assert not result.success
    assert len(DeltaTable(fragmented, version=3).to_pyarrow_table()) == 4


def test_vacuum_deletes_unreferenced_files_when_allowed(fragmented, lake_uri):
    result = maintain(lake_uri, retention_hours=0, enforce_retention_duration=False)
    assert result.success
    assert result.output_for_node("compact_and_vacuum_lake")["files_vacuumed"] == COMMITS
    assert DeltaTable(fragmented).to_pyarrow_table().num_rows == COMMITS
    with pytest.raises(Exception):  # noqa: B017 — the old files are gone: time travel fails
        DeltaTable(fragmented, version=3).to_pyarrow_table()


def test_dry_run_lists_without_deleting(fragmented, lake_uri):
    result = maintain(lake_uri, retention_hours=0, enforce_retention_duration=False, dry_run=True)
    assert result.output_for_node("compact_and_vacuum_lake")["files_vacuumed"] == COMMITS
    assert len(DeltaTable(fragmented, version=3).to_pyarrow_table()) == 4


def test_missing_tables_are_skipped(lake_uri):
    result = maintain(lake_uri)
    assert result.success
    assert result.output_for_node("compact_and_vacuum_lake")["tables_maintained"] == 0


def test_pipeline_keeps_working_after_maintenance(sample_resources, lake_uri):
    assets = [*ingestion.ASSETS, *analytics.ASSETS]
    with dg.instance_for_test() as instance:
        assert dg.materialize(assets, resources=sample_resources, instance=instance).success
        assert maintain(lake_uri).success
        versions = {
            n: DeltaTable(f"{lake_uri}/{n}").version() for n in ("raw_notion_leads", "leads")
        }
        again = dg.materialize(assets, resources=sample_resources, instance=instance)
    assert again.success
    # The incremental state survived compaction: an unchanged re-sync commits nothing.
    assert {n: DeltaTable(f"{lake_uri}/{n}").version() for n in versions} == versions
    leads = again.asset_materializations_for_node("leads_and_quality_issues")[0]
    assert leads.metadata["rows_inserted"].value == 0
