"""Lake upkeep: compact the small files frequent syncs leave behind, then vacuum old ones.

Every incremental sync adds a few small Parquet files to each Delta table; reads slow down as they
pile up. Compaction rewrites them into fewer, larger files in one commit that changes no row.
Vacuum then deletes files no version within the retention period needs, so Delta time travel keeps
working for at least that period (7 days by default, the floor DESIGN.md promises).

This runs as its own job (``maintain_lake``), never inside a sync, in the lake's concurrency pool
so it never overlaps a writer of the same tables.

``lead_history`` is maintained like the others: compaction rewrites its files without changing a
row, and vacuum deletes only files no version within the retention references. Its versions are
rows of the table, not Delta versions, so neither ever removes one: the history is never shortened.
"""

from collections.abc import Iterable
from dataclasses import dataclass

import dagster as dg
from deltalake import CommitProperties
from pydantic import Field

from leads_pipeline.defs.pools import LAKE_POOL
from leads_pipeline.defs.resources import LakeResource
from leads_pipeline.storage.lake import METADATA_PREFIX, DeltaLake
from leads_pipeline.tables import HISTORY_TABLE, ISSUES_TABLE, LEADS_TABLE, RAW_TABLE, SCHEMA_TABLE

#: The Delta tables the pipeline writes, in the order they are maintained.
LAKE_TABLES = (RAW_TABLE, LEADS_TABLE, ISSUES_TABLE, HISTORY_TABLE, SCHEMA_TABLE)

#: Seven days: the Delta default, and DESIGN.md's minimum history.
DEFAULT_RETENTION_HOURS = 168


@dataclass(frozen=True)
class TableMaintenance:
    """What maintenance did to one table."""

    table: str
    files_before: int
    files_after: int
    files_compacted: int
    files_added: int
    files_vacuumed: int
    version: int


def maintain_table(
    lake: DeltaLake,
    name: str,
    *,
    retention_hours: int = DEFAULT_RETENTION_HOURS,
    enforce_retention_duration: bool = True,
    dry_run: bool = False,
) -> TableMaintenance | None:
    """Compacts table ``name`` and vacuums files older than the retention.

    Args:
        lake: The lake holding the table.
        name: Table name.
        retention_hours: Files no longer referenced by any version newer than this many hours are
            deleted; time travel to versions within that window keeps working.
        enforce_retention_duration: Refuse a retention shorter than the table's own
            ``delta.deletedFileRetentionDuration`` (7 days unless set on the table).
        dry_run: Report what vacuum would delete without deleting it (compaction still runs).

    Returns:
        Counts of files compacted and removed, or None when the table does not exist.
    """
    table = lake.load(name)
    if table is None:
        return None
    files_before = len(table.file_uris())
    metrics = table.optimize.compact(
        commit_properties=CommitProperties(
            custom_metadata={f"{METADATA_PREFIX}operation": "maintain_lake"}
        )
    )
    table = lake.load(name)
    removed = table.vacuum(
        retention_hours=retention_hours,
        dry_run=dry_run,
        enforce_retention_duration=enforce_retention_duration,
    )
    table = lake.load(name)
    return TableMaintenance(
        table=name,
        files_before=files_before,
        files_after=len(table.file_uris()),
        files_compacted=int(metrics.get("numFilesRemoved", 0)),
        files_added=int(metrics.get("numFilesAdded", 0)),
        files_vacuumed=len(removed),
        version=table.version(),
    )


class MaintainLakeConfig(dg.Config):
    """Run configuration of the ``maintain_lake`` job."""

    retention_hours: int = Field(
        default=DEFAULT_RETENTION_HOURS,
        ge=0,
        description="Vacuum deletes files no version newer than this needs (time travel keeps "
        "working within it). At least 168 (7 days) unless enforce_retention_duration is false.",
    )
    enforce_retention_duration: bool = Field(
        default=True,
        description="Refuse a retention shorter than the table's deletedFileRetentionDuration.",
    )
    dry_run: bool = Field(
        default=False, description="Only list the files vacuum would delete; compaction still runs."
    )
    tables: list[str] = Field(
        default_factory=lambda: list(LAKE_TABLES),
        description="Tables to maintain; missing ones are skipped.",
    )


@dg.op(pool=LAKE_POOL)
def compact_and_vacuum_lake(
    context: dg.OpExecutionContext, config: MaintainLakeConfig, lake: LakeResource
) -> dg.Output[dict]:
    """Compacts every Delta table of the lake, then vacuums files older than the retention."""
    store = lake.delta_lake()
    results = _maintain(context, store, config, config.tables)
    totals = {
        "tables_maintained": len(results),
        "files_compacted": sum(r.files_compacted for r in results),
        "files_added": sum(r.files_added for r in results),
        "files_vacuumed": sum(r.files_vacuumed for r in results),
    }
    return dg.Output(
        totals,
        metadata={
            **totals,
            "retention_hours": config.retention_hours,
            "dry_run": config.dry_run,
            **{f"{r.table}/files_after": r.files_after for r in results},
            **{f"{r.table}/delta_version": r.version for r in results},
        },
    )


def _maintain(
    context: dg.OpExecutionContext,
    store: DeltaLake,
    config: MaintainLakeConfig,
    tables: Iterable[str],
) -> list[TableMaintenance]:
    results = []
    for name in tables:
        outcome = maintain_table(
            store,
            name,
            retention_hours=config.retention_hours,
            enforce_retention_duration=config.enforce_retention_duration,
            dry_run=config.dry_run,
        )
        if outcome is None:
            context.log.info(f"{name}: no such table in {store.root}, skipped.")
            continue
        context.log.info(
            f"{name}: compacted {outcome.files_compacted} files into {outcome.files_added}, "
            f"{'would vacuum' if config.dry_run else 'vacuumed'} {outcome.files_vacuumed} files "
            f"older than {config.retention_hours} h; {outcome.files_before} → "
            f"{outcome.files_after} live files, version {outcome.version}."
        )
        results.append(outcome)
    return results


@dg.job(
    name="maintain_lake",
    description="Delta upkeep: compacts small files and vacuums files older than the retention "
    "(168 h by default). Runs in the lake pool, so never alongside a sync.",
)
def maintain_lake():
    """Compacts and vacuums every Delta table of the lake."""
    compact_and_vacuum_lake()
