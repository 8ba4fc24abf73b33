"""Asset checks: the data guarantees the pipeline proves on every run.

Each check reads the stored tables (standalone ``@asset_check``), so it can also be run on its own
from the UI. Blocking checks stop the rest of a run, and declarative automation, from building on a
table that fails them. The freshness of ``leads`` is a Dagster freshness policy
(:func:`leads_freshness_policy`), evaluated by the daemon and shown on the asset in the UI.
"""

import os
from collections.abc import Mapping
from datetime import timedelta

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from deltalake.exceptions import DeltaError

from leads_pipeline.history import HISTORY_TABLE, PROBLEMS, verify_history
from leads_pipeline.property_map import EVENT_COLUMNS
from leads_pipeline.resources import LakeResource, WarehouseResource
from leads_pipeline.settings import ConfigurationError
from leads_pipeline.transform import ISSUES_TABLE, LEADS_TABLE
from leads_pipeline.warehouse import MONTHLY_TABLE, WEEKLY_TABLE, WarehouseNotBuiltError

#: Check names (the asset each one targets is in its decorator).
LEADS_ID_CHECK = "id_unique_and_not_null"
RECONCILE_CHECK = "counts_reconcile_with_leads"
QUALITY_SHARE_CHECK = "share_of_leads_with_issues"
HISTORY_CHECK = "history_matches_leads"

FRESHNESS_FAIL_VARIABLE = "LEADS_FRESHNESS_FAIL_MINUTES"
FRESHNESS_WARN_VARIABLE = "LEADS_FRESHNESS_WARN_MINUTES"
QUALITY_SHARE_VARIABLE = "LEADS_QUALITY_ISSUES_MAX_SHARE"

#: ``leads`` fails its freshness policy when not materialized for 2 hours (8 missed syncs) …
DEFAULT_FRESHNESS_FAIL_MINUTES = 120
#: … and warns after 1 hour.
DEFAULT_FRESHNESS_WARN_MINUTES = 60
#: At most 5 % of leads may have a value that could not be read.
DEFAULT_QUALITY_MAX_SHARE = 0.05

_COUNTS_VERSION_KEY = "leads_delta_version"


def _env_number(env: Mapping[str, str], variable: str, default: float, minimum: float) -> float:
    value = (env.get(variable) or "").strip()
    if not value:
        return default
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not number >= minimum:
        raise ConfigurationError(f"{variable}={value!r} must be a number ≥ {minimum:g}.")
    return number


def leads_freshness_policy(env: Mapping[str, str] | None = None) -> dg.FreshnessPolicy:
    """How recent the last materialization of ``leads`` must be.

    The fail window comes from ``LEADS_FRESHNESS_FAIL_MINUTES`` (default 120), the warn window from
    ``LEADS_FRESHNESS_WARN_MINUTES`` (default 60; 0 means no warning). Both at least 1 minute.

    Raises:
        ConfigurationError: If a window is not a number of minutes ≥ 1, or warn ≥ fail.
    """
    env = os.environ if env is None else env
    fail = _env_number(env, FRESHNESS_FAIL_VARIABLE, DEFAULT_FRESHNESS_FAIL_MINUTES, 1)
    default_warn = DEFAULT_FRESHNESS_WARN_MINUTES if fail > DEFAULT_FRESHNESS_WARN_MINUTES else 0
    warn = _env_number(env, FRESHNESS_WARN_VARIABLE, default_warn, 0)
    if warn and not 1 <= warn < fail:
        raise ConfigurationError(
            f"{FRESHNESS_WARN_VARIABLE}={warn:g} must be 0 (no warning) or at least 1 and less "
            f"than {FRESHNESS_FAIL_VARIABLE}={fail:g} minutes."
        )
    return dg.FreshnessPolicy.time_window(
        fail_window=timedelta(minutes=fail),
        warn_window=timedelta(minutes=warn) if warn else None,
    )


def quality_max_share(env: Mapping[str, str] | None = None) -> float:
    """The largest share of leads with quality issues that passes, from the environment.

    Raises:
        ConfigurationError: If ``LEADS_QUALITY_ISSUES_MAX_SHARE`` is not a number in [0, 1].
    """
    env = os.environ if env is None else env
    share = _env_number(env, QUALITY_SHARE_VARIABLE, DEFAULT_QUALITY_MAX_SHARE, 0)
    if share > 1:
        raise ConfigurationError(f"{QUALITY_SHARE_VARIABLE}={share:g} must be between 0 and 1.")
    return share


def _missing(table: str) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=False,
        description=f"The {table} table does not exist yet: materialize it first.",
        metadata={"table_exists": False},
    )


@dg.asset_check(
    asset=LEADS_TABLE,
    name=LEADS_ID_CHECK,
    blocking=True,
    description="Every lead has an id, and no id appears twice.",
)
def leads_id_unique_and_not_null(lake: LakeResource) -> dg.AssetCheckResult:
    """Fails when ``leads.id`` holds a null or a duplicate."""
    ids = lake.lake().read(LEADS_TABLE, columns=["id"])
    if ids is None:
        return _missing(LEADS_TABLE)
    column = ids["id"]
    nulls = column.null_count
    counts = pc.value_counts(column.drop_null())
    duplicated = pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1))
    passed = nulls == 0 and len(duplicated) == 0
    examples = ", ".join(sorted(str(v) for v in duplicated.to_pylist()[:5]))
    return dg.AssetCheckResult(
        passed=passed,
        description=(
            f"{ids.num_rows} leads, ids unique and present."
            if passed
            else f"{nulls} lead(s) without id, {len(duplicated)} duplicated id(s)"
            + (f", e.g. {examples}" if examples else "")
            + "."
            + (
                " Two writers filled the lake at once (a version before this one): run "
                "sync_leads or refresh_leads once, or materialize leads with the run config "
                "rebuild: true, to repair it (each page keeps its newest copy)."
                if len(duplicated)
                else ""
            )
        ),
        metadata={
            "table_exists": True,
            "rows": ids.num_rows,
            "null_ids": nulls,
            "duplicated_ids": len(duplicated),
        },
    )


def _leads_at_counts_version(
    context: dg.AssetCheckExecutionContext, lake: LakeResource, counts_asset: str
) -> tuple[pa.Table | None, int | None]:
    """The ``leads`` event columns at the version the count asset was last computed from.

    Falls back to the current version when no materialization records one (or it was vacuumed).
    """
    store = lake.lake()
    version = None
    event = context.instance.get_latest_materialization_event(dg.AssetKey(counts_asset))
    if event is not None and event.asset_materialization is not None:
        recorded = event.asset_materialization.metadata.get(_COUNTS_VERSION_KEY)
        version = getattr(recorded, "value", None)
    table = None
    if version is not None:
        try:
            table = store.load(LEADS_TABLE, version=int(version))
        except (DeltaError, OSError):  # vacuumed or unreadable: compare with the current one
            context.log.warning(f"leads version {version} cannot be read; using the current one.")
            table = None
    if table is None:
        table = store.load(LEADS_TABLE)
    if table is None:
        return None, None
    return table.to_pyarrow_dataset().to_table(columns=list(EVENT_COLUMNS)), table.version()


def reconcile(counts: pa.Table, leads: pa.Table) -> dict[str, tuple[int, int]]:
    """Per event column, (sum over the count table's periods, non-null dates in ``leads``)."""
    return {
        column: (int(pc.sum(counts[column]).as_py() or 0), len(leads) - leads[column].null_count)
        for column in EVENT_COLUMNS
    }


def _read_counts(warehouse: WarehouseResource, table: str) -> pa.Table | None:
    try:
        with warehouse.warehouse().read() as con:
            return con.sql(f"SELECT * FROM {table}").to_arrow_table()
    except WarehouseNotBuiltError:
        return None
    except duckdb.CatalogException:  # the file exists but not this table yet
        return None


def _reconcile_check(
    context: dg.AssetCheckExecutionContext,
    lake: LakeResource,
    warehouse: WarehouseResource,
    counts_asset: str,
    counts_table: str,
    other_table: str,
) -> dg.AssetCheckResult:
    counts = _read_counts(warehouse, counts_table)
    if counts is None:
        return _missing(counts_table)
    leads, version = _leads_at_counts_version(context, lake, counts_asset)
    if leads is None:
        return _missing(LEADS_TABLE)
    totals = reconcile(counts, leads)
    other = _read_counts(warehouse, other_table)
    mismatched = {c: t for c, t in totals.items() if t[0] != t[1]}
    metadata: dict = {"table_exists": True, "leads_delta_version": version}
    for column, (in_counts, in_leads) in totals.items():
        metadata[f"{column}/counts"] = in_counts
        metadata[f"{column}/leads"] = in_leads
        metadata[f"{column}/{other_table.split('.')[-1]}"] = (
            int(pc.sum(other[column]).as_py() or 0) if other is not None else -1
        )
    return dg.AssetCheckResult(
        passed=not mismatched,
        description=(
            f"Each event column's total over {counts_table} equals its non-null dates in leads "
            f"(version {version})."
            if not mismatched
            else "Totals differ from leads: "
            + "; ".join(f"{c}: {a} counted vs {b} in leads" for c, (a, b) in mismatched.items())
        ),
        metadata=metadata,
    )


@dg.asset_check(
    asset="weekly_event_counts",
    name=RECONCILE_CHECK,
    blocking=True,
    description="For each event column, the sum over weeks equals the non-null dates in leads.",
)
def weekly_counts_reconcile(
    context: dg.AssetCheckExecutionContext, lake: LakeResource, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    """Sum over weeks == non-null dates in ``leads``, per event column (with the monthly check,
    weeks == months == leads)."""
    return _reconcile_check(
        context, lake, warehouse, "weekly_event_counts", WEEKLY_TABLE, MONTHLY_TABLE
    )


@dg.asset_check(
    asset="monthly_event_counts",
    name=RECONCILE_CHECK,
    blocking=True,
    description="For each event column, the sum over months equals the non-null dates in leads.",
)
def monthly_counts_reconcile(
    context: dg.AssetCheckExecutionContext, lake: LakeResource, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    """Sum over months == non-null dates in ``leads``, per event column."""
    return _reconcile_check(
        context, lake, warehouse, "monthly_event_counts", MONTHLY_TABLE, WEEKLY_TABLE
    )


@dg.asset_check(
    asset=ISSUES_TABLE,
    name=QUALITY_SHARE_CHECK,
    additional_deps=[LEADS_TABLE],
    description="The share of leads with at least one unreadable value stays under "
    f"${QUALITY_SHARE_VARIABLE} (5 % by default). Warns only.",
)
def share_of_leads_with_issues(lake: LakeResource) -> dg.AssetCheckResult:
    """Warns when too many leads have a value that could not be parsed."""
    store = lake.lake()
    leads = store.read(LEADS_TABLE, columns=["id"])
    issues = store.read(ISSUES_TABLE, columns=["page_id"])
    if leads is None or issues is None:
        return _missing(LEADS_TABLE if leads is None else ISSUES_TABLE)
    threshold = quality_max_share()
    affected = pc.count_distinct(
        pc.filter(issues["page_id"], pc.is_in(issues["page_id"], leads["id"]))
    ).as_py()
    share = affected / leads.num_rows if leads.num_rows else 0.0
    return dg.AssetCheckResult(
        passed=share <= threshold,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"{affected} of {leads.num_rows} leads ({share:.1%}) have at least one value that "
            f"could not be read; threshold {threshold:.1%} (${QUALITY_SHARE_VARIABLE})."
        ),
        metadata={
            "table_exists": True,
            "leads": leads.num_rows,
            "leads_with_issues": affected,
            "share": round(share, 6),
            "threshold": threshold,
        },
    )


@dg.asset_check(
    asset=HISTORY_TABLE,
    name=HISTORY_CHECK,
    blocking=True,
    additional_deps=[LEADS_TABLE],
    description="Exactly one current version per live lead, equal to its leads row; none for a "
    "deleted lead; each lead's versions numbered 1..n and chained without overlap.",
)
def history_matches_leads(lake: LakeResource) -> dg.AssetCheckResult:
    """Fails when ``lead_history`` disagrees with ``leads`` or its versions do not chain."""
    found = verify_history(lake.lake())
    if not found.exists:
        return _missing(f"{HISTORY_TABLE} or {LEADS_TABLE}")
    return dg.AssetCheckResult(
        passed=found.passed,
        description=found.describe(),
        metadata={
            "table_exists": True,
            "rows": found.rows,
            "live_leads": found.live_leads,
            "current_versions": found.current_versions,
            **{name: found.problems.get(name, 0) for name in PROBLEMS},
            "differing_columns": dg.MetadataValue.json(dict(found.differing_columns)),
            "history_leads_version": (
                found.history_leads_version if found.history_leads_version is not None else -1
            ),
            "leads_version": found.leads_version,
        },
    )


CHECKS = [
    leads_id_unique_and_not_null,
    weekly_counts_reconcile,
    monthly_counts_reconcile,
    share_of_leads_with_issues,
    history_matches_leads,
]
