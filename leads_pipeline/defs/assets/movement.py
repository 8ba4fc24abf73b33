"""Movement analytics assets: status entries per period, status durations, cohort conversion.

DuckDB tables in ``analytics`` computed from ``lead_history`` (and ``leads`` for the cohorts) by
:mod:`leads_pipeline.transform.movement`, with the statuses ordered and grouped by the data source's schema
(:mod:`leads_pipeline.transform.status_semantics`). The status-entries assets are generated from
:data:`leads_pipeline.tables.GRAINS`, like the event counts; each has a blocking check that its
entries reconcile with the history they were computed from.
"""

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from leads_pipeline.defs.assets.schemas import duckdb_descriptions
from leads_pipeline.defs.assets.warehouse_assets import (
    lake_source,
    require_delta,
    sql_digest,
    warehouse_asset,
)
from leads_pipeline.defs.check_memory import (
    at_version,
    delta_state,
    recorded_version,
    remembered,
    rows_digest,
)
from leads_pipeline.defs.checks import check_key, missing_table
from leads_pipeline.defs.metadata import (
    duckdb_table_metadata,
    markdown_preview,
    thousands,
    version_text,
)
from leads_pipeline.defs.resources import LakeResource, WarehouseResource
from leads_pipeline.storage.lake import DeltaLake
from leads_pipeline.storage.warehouse import Warehouse
from leads_pipeline.tables import (
    COHORTS_TABLE,
    DURATIONS_TABLE,
    GRAINS,
    HISTORY_TABLE,
    LEADS_TABLE,
    STATUS_ENTRIES,
    Grain,
)
from leads_pipeline.transform.movement import (
    MarkedVersions,
    cohort_conversion_sql,
    compute_cohort_conversion,
    compute_status_durations,
    compute_status_entries,
    mark_versions,
    status_durations_sql,
    status_entries_sql,
    verify_status_entries,
)
from leads_pipeline.transform.status_semantics import lake_statuses

#: Name of the check on each status-entries asset.
ENTRIES_CHECK = "status_entries_reconcile_with_history"
#: Metadata key of a status-entries materialization: the lead_history version it was computed
#: from (what its check reconciles with), as text.
HISTORY_VERSION_KEY = "history_delta_version"
#: Metadata key of a cohorts materialization: the leads version it was computed from, as text.
LEADS_VERSION_KEY = "leads_delta_version"


def _published(warehouse: WarehouseResource, table: str) -> dict[str, dg.MetadataValue]:
    """The standard metadata of the DuckDB ``table`` as published (name, URI, column schema)."""
    return duckdb_table_metadata(warehouse.warehouse(), table, duckdb_descriptions(table))


def _state(recomputed: bool) -> str:
    return "recomputed" if recomputed else "unchanged (reused)"


def _publish_or_reuse(
    warehouse: Warehouse, table: str, origin: str, compute: Callable[[], pa.Table]
) -> tuple[pa.Table, bool]:
    """The rows of ``table``: the published ones when computed from ``origin`` already, else
    ``compute()``'s, published with that lineage. Returns them and whether they were computed."""
    rows = warehouse.published_from(table, origin)
    if rows is not None:
        return rows, False
    rows = compute()
    warehouse.publish({table: rows}, lineage={table: origin})
    return rows, True


_marking_lock = threading.Lock()
_last_marking: tuple[tuple, MarkedVersions] | None = None


def _marked_history(store: DeltaLake, history: DeltaTable) -> MarkedVersions:
    """``history``'s versions marked by :func:`mark_versions`, once per Delta version.

    The status entries of every grain and the status durations of one run share one process
    (the in-process executor): the first of them to run reads and marks the history, the others
    reuse it. A Delta version never changes; the table's id tells a table recreated at the same
    URI. Only the latest marking is kept.
    """
    global _last_marking
    key = (store.table_uri(HISTORY_TABLE), history.metadata().id, history.version())
    with _marking_lock:
        if _last_marking is not None and _last_marking[0] == key:
            return _last_marking[1]
        marked = mark_versions(history.to_pyarrow_dataset())
        _last_marking = (key, marked)
        return marked


def _statuses_origin(statuses: pa.Table) -> str:
    return json.dumps(statuses.to_pylist(), ensure_ascii=False, sort_keys=True)


def _materialize_entries(
    context: dg.AssetExecutionContext,
    lake: LakeResource,
    warehouse: WarehouseResource,
    grain: Grain,
) -> dg.MaterializeResult:
    store = lake.delta_lake()
    history = require_delta(store, HISTORY_TABLE)
    statuses = lake_statuses(store)
    table = grain.table(STATUS_ENTRIES)
    # A pure function of the history version, the statuses and the SQL: reused when unchanged.
    origin = (
        f"{store.table_uri(HISTORY_TABLE)}@{history.version()}#"
        f"{sql_digest(status_entries_sql('history', grain), _statuses_origin(statuses))}"
    )
    entries, recomputed = _publish_or_reuse(
        warehouse.warehouse(),
        table,
        origin,
        lambda: compute_status_entries(_marked_history(store, history), grain, statuses),
    )
    label = entries.column_names[0]
    periods = pc.unique(entries[label]) if entries.num_rows else pa.array([], pa.string())
    per_status = _totals_by_status(entries)
    total = sum(per_status.values())
    context.log.info(
        f"{grain.asset(STATUS_ENTRIES)}: {thousands(len(periods))} {grain.plural}, "
        f"{thousands(total)} status entries over {len(per_status)} statuses, "
        f"{_state(recomputed)} from lead_history version {history.version()}."
    )
    return dg.MaterializeResult(
        metadata={
            "status_entries_total": total,
            "entries_by_status": dg.MetadataValue.json(per_status),
            "dagster/row_count": entries.num_rows,
            "periods": len(periods),
            "first_period": periods[0].as_py() if len(periods) else "",
            "last_period": periods[-1].as_py() if len(periods) else "",
            "recomputed": recomputed,
            "source": lake_source(store),
            HISTORY_VERSION_KEY: version_text(history.version()),
            **_published(warehouse, table),
            "preview": markdown_preview(entries, limit=max(12, 3 * len(per_status)), tail=True),
        }
    )


def _totals_by_status(entries: pa.Table) -> dict[str, int]:
    """Status → total entries, in the table's status order."""
    if entries.num_rows == 0:
        return {}
    grouped = entries.group_by("statut", use_threads=False).aggregate([("entries", "sum")])
    totals = dict(
        zip(grouped["statut"].to_pylist(), grouped["entries_sum"].to_pylist(), strict=True)
    )
    return {s: int(totals[s]) for s in dict.fromkeys(entries["statut"].to_pylist())}


def _entries_asset(grain: Grain) -> dg.AssetsDefinition:
    @warehouse_asset(
        grain.asset(STATUS_ENTRIES),
        [HISTORY_TABLE],
        description=(
            f"How many leads entered each status, {grain.title}: a lead enters a status with its "
            "first version or a version whose status differs from the previous one (a restored "
            "lead enters its status again). Every period from the first to the last entry, with "
            "every status of the data source's schema in Notion's order and its group, zeros "
            "included."
        ),
    )
    def _asset(
        context: dg.AssetExecutionContext, lake: LakeResource, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        return _materialize_entries(context, lake, warehouse, grain)

    return _asset


ENTRIES_ASSETS = [_entries_asset(g) for g in GRAINS]


@warehouse_asset(
    "status_durations",
    [HISTORY_TABLE],
)
def status_durations(
    context: dg.AssetExecutionContext, lake: LakeResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """How long leads stay in each status, from their history.

    Per status (in Notion's order, with its group): the completed stays (from the entry into the
    status to the entry into another one, a status emptied, or the lead's deletion), their median
    and 90th percentile in days; the open stays (leads in it now) and their median age in days.
    Open stays are aged to the start of the current UTC day: the table is a pure function of
    the history version, the statuses and the day, so it is reused within a day (an unchanged
    sync recomputes nothing) and two runs of the same day agree.
    """
    store = lake.delta_lake()
    history = require_delta(store, HISTORY_TABLE)
    statuses = lake_statuses(store)
    measured_at = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    origin = (
        f"{store.table_uri(HISTORY_TABLE)}@{history.version()}@{measured_at.date()}#"
        f"{sql_digest(status_durations_sql('history', measured_at), _statuses_origin(statuses))}"
    )
    durations, recomputed = _publish_or_reuse(
        warehouse.warehouse(),
        DURATIONS_TABLE,
        origin,
        lambda: compute_status_durations(_marked_history(store, history), statuses, measured_at),
    )
    completed = int(pc.sum(durations["completed_stays"]).as_py() or 0)
    open_stays = int(pc.sum(durations["open_stays"]).as_py() or 0)
    context.log.info(
        f"status_durations: {durations.num_rows} statuses, {thousands(completed)} completed "
        f"stays, {thousands(open_stays)} open stays aged to {measured_at.date()}, "
        f"{_state(recomputed)} from lead_history version {history.version()}."
    )
    return dg.MaterializeResult(
        metadata={
            "completed_stays_total": completed,
            "open_stays_total": open_stays,
            "dagster/row_count": durations.num_rows,
            "open_stays_aged_to": measured_at.isoformat(),
            "recomputed": recomputed,
            "source": lake_source(store),
            HISTORY_VERSION_KEY: version_text(history.version()),
            **_published(warehouse, DURATIONS_TABLE),
            "preview": markdown_preview(durations, limit=20),
        }
    )


@warehouse_asset(
    "cohort_conversion",
    [LEADS_TABLE],
)
def cohort_conversion(
    context: dg.AssetExecutionContext, lake: LakeResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Per month of first contact, how far that month's leads went.

    One row per month (``mois``) from the first to the last first contact, months without leads
    included: the cohort's leads, how many have a reply, a call proposed and a call booked date,
    the share of each (NULL for an empty month), and the median days from first contact to call
    booked.
    """
    store = lake.delta_lake()
    leads = require_delta(store, LEADS_TABLE)
    origin = (
        f"{store.table_uri(LEADS_TABLE)}@{leads.version()}#"
        f"{sql_digest(cohort_conversion_sql('leads'))}"
    )
    cohorts, recomputed = _publish_or_reuse(
        warehouse.warehouse(),
        COHORTS_TABLE,
        origin,
        lambda: compute_cohort_conversion(leads.to_pyarrow_dataset()),
    )
    label = cohorts.column_names[0]
    total_leads = int(pc.sum(cohorts["leads"]).as_py() or 0)
    booked = int(pc.sum(cohorts["call_booked"]).as_py() or 0)
    context.log.info(
        f"cohort_conversion: {cohorts.num_rows} monthly cohorts, {thousands(total_leads)} leads "
        f"first contacted, {thousands(booked)} with a call booked, {_state(recomputed)} from "
        f"leads version {leads.version()}."
    )
    return dg.MaterializeResult(
        metadata={
            "leads_total": total_leads,
            "calls_booked_total": booked,
            "dagster/row_count": cohorts.num_rows,
            "periods": cohorts.num_rows,
            "first_period": cohorts[label][0].as_py() if cohorts.num_rows else "",
            "last_period": cohorts[label][-1].as_py() if cohorts.num_rows else "",
            "recomputed": recomputed,
            "source": lake_source(store),
            LEADS_VERSION_KEY: version_text(leads.version()),
            **_published(warehouse, COHORTS_TABLE),
            "preview": markdown_preview(cohorts, limit=12, tail=True),
        }
    )


def _history_at_entries_version(
    context: dg.AssetCheckExecutionContext, store: DeltaLake, asset: str, latest: DeltaTable
) -> DeltaTable:
    """``lead_history`` at the version ``asset`` was last computed from (its log only; else
    ``latest``, the current one: none recorded, vacuumed or unreadable)."""
    version = recorded_version(context.instance, asset, HISTORY_VERSION_KEY)
    return at_version(context, store, HISTORY_TABLE, latest, version)


def reconcile_entries(
    context: dg.AssetCheckExecutionContext,
    lake: LakeResource,
    warehouse: WarehouseResource,
    grain: Grain,
) -> dg.AssetCheckResult:
    """The result of :data:`ENTRIES_CHECK` on ``grain``'s status-entries table.

    ``lead_history`` is read at the version the table was computed from. The input state is
    that version, the newest commit of ``lead_history`` and the digest of the (small) published
    table: when it is the last passing evaluation's, the history is not read again
    (:mod:`leads_pipeline.defs.check_memory`).
    """
    asset, table = grain.asset(STATUS_ENTRIES), grain.table(STATUS_ENTRIES)
    entries = warehouse.warehouse().read_table(table)
    if entries is None:
        return missing_table(table)
    store = lake.delta_lake()
    latest = store.load(HISTORY_TABLE)
    if latest is None:
        return missing_table(HISTORY_TABLE)
    history = _history_at_entries_version(context, store, asset, latest)
    state = {
        **delta_state(store, HISTORY_TABLE, "history", latest, compared=history.version()),
        f"{asset}_sha256": rows_digest(entries),
    }

    def verify() -> dg.AssetCheckResult:
        found = verify_status_entries(history.to_pyarrow_dataset(), entries)
        context.log.info(
            f"{asset}:{ENTRIES_CHECK}: {'passed' if found.passed else 'FAILED'}, "
            f"{thousands(found.table_total)} entries in the table, "
            f"{thousands(found.history_total)} in lead_history version {history.version()}."
        )
        return dg.AssetCheckResult(
            passed=found.passed,
            description=found.describe(),
            metadata={
                "table_exists": True,
                HISTORY_VERSION_KEY: version_text(history.version()),
                "entries_in_table": found.table_total,
                "entries_in_history": found.history_total,
                "mismatches": dg.MetadataValue.json(
                    {s: {"table": t, "history": h} for s, (t, h) in found.mismatches.items()}
                ),
            },
        )

    return remembered(
        context,
        check_key(asset, ENTRIES_CHECK),
        state,
        verify,
        f"{table} and lead_history (Delta version {history.version()})",
    )


def _entries_check(grain: Grain) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=grain.asset(STATUS_ENTRIES),
        name=ENTRIES_CHECK,
        blocking=True,
        additional_deps=[HISTORY_TABLE],
        description="Per status, the entries summed over the periods equal the versions of "
        "lead_history entering that status. Passes without reading lead_history when neither it "
        "nor the table changed since its last passing evaluation.",
    )
    def _check(
        context: dg.AssetCheckExecutionContext, lake: LakeResource, warehouse: WarehouseResource
    ) -> dg.AssetCheckResult:
        return reconcile_entries(context, lake, warehouse, grain)

    return _check


ASSETS = [*ENTRIES_ASSETS, status_durations, cohort_conversion]
CHECKS = [_entries_check(g) for g in GRAINS]
