"""Asset checks: the data guarantees the pipeline proves on every run.

Each check reads the stored tables (standalone ``@asset_check``), so it can also be run on its own
from the UI. Blocking checks stop the rest of a run, and declarative automation, from building on a
table that fails them. A check whose inputs are exactly those of its last passing evaluation (no
commit, same published rows) passes again without reading them
(:mod:`leads_pipeline.defs.check_memory`): a sync that changed nothing costs no full read. The
freshness of ``leads`` is a Dagster freshness policy (:func:`leads_freshness_policy`), evaluated
by the daemon and shown on the asset in the UI.
"""

from collections.abc import Mapping
from datetime import timedelta

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from leads_pipeline.defs.check_memory import (
    at_version,
    delta_state,
    recorded_version,
    remembered,
    rows_digest,
)
from leads_pipeline.defs.metadata import percent, thousands, version_text
from leads_pipeline.defs.resources import LakeResource, WarehouseResource
from leads_pipeline.settings import Settings, as_settings, variable_of
from leads_pipeline.storage.lake import DeltaLake
from leads_pipeline.tables import (
    EVENT_COLUMNS,
    EVENT_COUNTS,
    GRAINS,
    HISTORY_TABLE,
    ISSUES_TABLE,
    LEADS_TABLE,
    Grain,
)
from leads_pipeline.transform.history import PROBLEMS, verify_history

#: Check names (the asset each one targets is in its decorator).
LEADS_ID_CHECK = "id_unique_and_not_null"
RECONCILE_CHECK = "counts_reconcile_with_leads"
QUALITY_SHARE_CHECK = "share_of_leads_with_issues"
HISTORY_CHECK = "history_matches_leads"
SCHEMA_CHANGE_CHECK = "column_schema_unchanged"

QUALITY_SHARE_VARIABLE = variable_of("quality_max_share")

_COUNTS_VERSION_KEY = "leads_delta_version"


def leads_freshness_policy(
    settings: Settings | Mapping[str, str] | None = None,
) -> dg.FreshnessPolicy:
    """How recent the last materialization of ``leads`` must be.

    The fail window is ``settings.freshness_fail_minutes`` (``LEADS_FRESHNESS_FAIL_MINUTES``,
    default 120), the warn window ``settings.freshness_warn_minutes``
    (``LEADS_FRESHNESS_WARN_MINUTES``, default 60; 0 means no warning).

    Args:
        settings: The configuration, or an environment to load it from (``os.environ`` when
            omitted).

    Raises:
        ConfigurationError: If the configuration is loaded here and a variable is invalid.
    """
    settings = as_settings(settings)
    warn = settings.freshness_warn_minutes
    return dg.FreshnessPolicy.time_window(
        fail_window=timedelta(minutes=settings.freshness_fail_minutes),
        warn_window=timedelta(minutes=warn) if warn else None,
    )


def quality_max_share(settings: Settings | Mapping[str, str] | None = None) -> float:
    """The largest share of leads with quality issues that passes.

    Args:
        settings: The configuration, or an environment to load it from (``os.environ`` when
            omitted).

    Raises:
        ConfigurationError: If the configuration is loaded here and a variable is invalid.
    """
    return as_settings(settings).quality_max_share


def check_key(asset: str, name: str) -> dg.AssetCheckKey:
    """The key of the check ``name`` on ``asset``."""
    return dg.AssetCheckKey(dg.AssetKey(asset), name)


def missing_table(table: str) -> dg.AssetCheckResult:
    """The failed result of a check whose table does not exist yet."""
    return dg.AssetCheckResult(
        passed=False,
        description=f"The {table} table does not exist yet: materialize it first.",
        metadata={"table_exists": False},
    )


@dg.asset_check(
    asset=LEADS_TABLE,
    name=LEADS_ID_CHECK,
    blocking=True,
    description="Every lead has an id, and no id appears twice. Passes without reading when "
    "leads has not committed since its last passing evaluation.",
)
def leads_id_unique_and_not_null(
    context: dg.AssetCheckExecutionContext, lake: LakeResource
) -> dg.AssetCheckResult:
    """Fails when ``leads.id`` holds a null or a duplicate."""
    store = lake.delta_lake()
    leads = store.load(LEADS_TABLE)
    if leads is None:
        return missing_table(LEADS_TABLE)
    return remembered(
        context,
        check_key(LEADS_TABLE, LEADS_ID_CHECK),
        delta_state(store, LEADS_TABLE, "leads", leads),
        lambda: _verify_ids(leads),
        f"leads (Delta version {leads.version()})",
    )


def _verify_ids(leads: DeltaTable) -> dg.AssetCheckResult:
    """Reads ``leads.id`` (at the version loaded) and checks it."""
    ids = leads.to_pyarrow_dataset().to_table(columns=["id"])
    column = ids["id"]
    nulls = column.null_count
    counts = pc.value_counts(column.drop_null())
    duplicated = pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1))
    passed = nulls == 0 and len(duplicated) == 0
    examples = ", ".join(sorted(str(v) for v in duplicated.to_pylist()[:5]))
    dg.get_dagster_logger().info(
        f"{LEADS_TABLE}:{LEADS_ID_CHECK}: {'passed' if passed else 'FAILED'}, "
        f"{thousands(ids.num_rows)} ids, {nulls} null, {len(duplicated)} duplicated."
    )
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


def reconcile(counts: pa.Table, leads: pa.Table) -> dict[str, tuple[int, int]]:
    """Per event column, (sum over the count table's periods, non-null dates in ``leads``)."""
    return {
        column: (int(pc.sum(counts[column]).as_py() or 0), len(leads) - leads[column].null_count)
        for column in EVENT_COLUMNS
    }


def _totals(counts: pa.Table | None) -> dict[str, int] | None:
    """A count table's total per event column (None if not built)."""
    if counts is None:
        return None
    return {c: int(pc.sum(counts[c]).as_py() or 0) for c in EVENT_COLUMNS}


def _reconcile_check(
    context: dg.AssetCheckExecutionContext,
    lake: LakeResource,
    warehouse: WarehouseResource,
    grain: Grain,
) -> dg.AssetCheckResult:
    """``grain``'s counts against ``leads``, with every other grain's totals beside them.

    Each grain equal to ``leads`` makes all grains equal to each other: the other grains are
    reported (``<column>/<other asset>``, -1 when not built) so that one check shows it all.
    ``leads`` is read at the version the count asset was last computed from (recorded in its
    materialization; the current one when none is, or it was vacuumed). The input state is that
    version, the newest commit of ``leads`` and the digest of every grain's (small) count table:
    when it is the last passing evaluation's, nothing is read again.
    """
    asset, counts_table = grain.asset(EVENT_COUNTS), grain.table(EVENT_COUNTS)
    published = warehouse.warehouse()
    tables = {g.asset(EVENT_COUNTS): published.read_table(g.table(EVENT_COUNTS)) for g in GRAINS}
    counts = tables[asset]
    if counts is None:
        return missing_table(counts_table)
    store = lake.delta_lake()
    latest = store.load(LEADS_TABLE)
    if latest is None:
        return missing_table(LEADS_TABLE)
    recorded = recorded_version(context.instance, asset, _COUNTS_VERSION_KEY)
    leads = at_version(context, store, LEADS_TABLE, latest, recorded)
    state = {
        **delta_state(store, LEADS_TABLE, "leads", latest, compared=leads.version()),
        **{f"{name}_sha256": rows_digest(rows) for name, rows in tables.items()},
    }
    others = {name: _totals(rows) for name, rows in tables.items() if name != asset}
    return remembered(
        context,
        check_key(asset, RECONCILE_CHECK),
        state,
        lambda: _verify_counts(context, grain, counts, leads, others),
        f"{counts_table}, the other grains' counts and leads (Delta version {leads.version()})",
    )


def _verify_counts(
    context: dg.AssetCheckExecutionContext,
    grain: Grain,
    counts: pa.Table,
    leads: DeltaTable,
    others: Mapping[str, dict[str, int] | None],
) -> dg.AssetCheckResult:
    """Reads the event columns of ``leads`` (at the version loaded) and reconciles ``counts``."""
    version = leads.version()
    totals = reconcile(counts, leads.to_pyarrow_dataset().to_table(columns=list(EVENT_COLUMNS)))
    mismatched = {c: t for c, t in totals.items() if t[0] != t[1]}
    metadata: dict = {"table_exists": True, _COUNTS_VERSION_KEY: version_text(version)}
    for column, (in_counts, in_leads) in totals.items():
        metadata[f"{column}/counts"] = in_counts
        metadata[f"{column}/leads"] = in_leads
        for other, other_totals in others.items():
            metadata[f"{column}/{other}"] = -1 if other_totals is None else other_totals[column]
    context.log.info(
        f"{grain.asset(EVENT_COUNTS)}:{RECONCILE_CHECK}: "
        f"{'passed' if not mismatched else 'FAILED'}, {len(totals) - len(mismatched)}/"
        f"{len(totals)} event columns equal to leads version {version}."
    )
    return dg.AssetCheckResult(
        passed=not mismatched,
        description=(
            f"Each event column's total over {grain.table(EVENT_COUNTS)} equals its non-null "
            f"dates in leads (version {version})."
            if not mismatched
            else "Totals differ from leads: "
            + "; ".join(f"{c}: {a} counted vs {b} in leads" for c, (a, b) in mismatched.items())
        ),
        metadata=metadata,
    )


def counts_reconcile_check(grain: Grain) -> dg.AssetChecksDefinition:
    """The blocking check that ``grain``'s event counts add up to the dates in ``leads``.

    Args:
        grain: The time grain whose count asset (e.g. ``weekly_event_counts``) it targets.
    """

    @dg.asset_check(
        asset=grain.asset(EVENT_COUNTS),
        name=RECONCILE_CHECK,
        blocking=True,
        description=f"For each event column, the sum over {grain.plural} equals the non-null "
        "dates in leads; the other grains' totals are shown beside it. Passes without reading "
        "leads when neither it nor any count table changed since its last passing evaluation.",
    )
    def _check(
        context: dg.AssetCheckExecutionContext, lake: LakeResource, warehouse: WarehouseResource
    ) -> dg.AssetCheckResult:
        return _reconcile_check(context, lake, warehouse, grain)

    return _check


#: The reconcile check of each grain, by grain name.
RECONCILE_CHECKS: dict[str, dg.AssetChecksDefinition] = {
    grain.name: counts_reconcile_check(grain) for grain in GRAINS
}


def quality_share_check(max_share: float) -> dg.AssetChecksDefinition:
    """The ``share_of_leads_with_issues`` check of ``lead_quality_issues``, which only warns.

    Args:
        max_share: The largest share of leads with an unreadable value that passes (the
            settings' ``quality_max_share``).
    """

    @dg.asset_check(
        asset=ISSUES_TABLE,
        name=QUALITY_SHARE_CHECK,
        additional_deps=[LEADS_TABLE],
        description="The share of leads with at least one unreadable value stays under "
        f"${QUALITY_SHARE_VARIABLE} (5 % by default). Warns only. Passes without reading when "
        "neither table committed since its last passing evaluation (same threshold).",
    )
    def share_of_leads_with_issues(
        context: dg.AssetCheckExecutionContext, lake: LakeResource
    ) -> dg.AssetCheckResult:
        """Warns when too many leads have a value that could not be parsed."""
        store = lake.delta_lake()
        leads, issues = store.load(LEADS_TABLE), store.load(ISSUES_TABLE)
        if leads is None or issues is None:
            return missing_table(LEADS_TABLE if leads is None else ISSUES_TABLE)
        state = {
            **delta_state(store, LEADS_TABLE, "leads", leads),
            **delta_state(store, ISSUES_TABLE, "issues", issues),
            "threshold_share": repr(max_share),
        }
        return remembered(
            context,
            check_key(ISSUES_TABLE, QUALITY_SHARE_CHECK),
            state,
            lambda: _verify_share(leads, issues, max_share),
            f"leads (Delta version {leads.version()}) and lead_quality_issues (Delta version "
            f"{issues.version()})",
        )

    return share_of_leads_with_issues


def _verify_share(leads: DeltaTable, issues: DeltaTable, threshold: float) -> dg.AssetCheckResult:
    """Reads ``leads.id`` and ``lead_quality_issues.page_id`` (at the versions loaded)."""
    ids = leads.to_pyarrow_dataset().to_table(columns=["id"])
    pages = issues.to_pyarrow_dataset().to_table(columns=["page_id"])
    affected = pc.count_distinct(
        pc.filter(pages["page_id"], pc.is_in(pages["page_id"], ids["id"]))
    ).as_py()
    share = affected / ids.num_rows if ids.num_rows else 0.0
    dg.get_dagster_logger().info(
        f"{ISSUES_TABLE}:{QUALITY_SHARE_CHECK}: "
        f"{'passed' if share <= threshold else 'warning'}, {thousands(affected)} of "
        f"{thousands(ids.num_rows)} leads ({share:.1%}) with an unreadable value, "
        f"threshold {threshold:.1%}."
    )
    return dg.AssetCheckResult(
        passed=share <= threshold,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"{affected} of {ids.num_rows} leads ({share:.1%}) have at least one value that "
            f"could not be read; threshold {threshold:.1%} (${QUALITY_SHARE_VARIABLE})."
        ),
        metadata={
            "table_exists": True,
            "leads": ids.num_rows,
            "leads_with_issues": affected,
            "leads_with_issues_percent": percent(share),
            "threshold_percent": percent(threshold),
        },
    )


#: The check with the default threshold (the definitions use the configured one).
share_of_leads_with_issues = quality_share_check(Settings().quality_max_share)


@dg.asset_check(
    asset=HISTORY_TABLE,
    name=HISTORY_CHECK,
    blocking=True,
    additional_deps=[LEADS_TABLE],
    description="Exactly one current version per live lead, equal to its leads row; none for a "
    "deleted lead; each lead's versions numbered 1..n and chained without overlap. Passes without "
    "reading when neither table's Delta version moved since its last passing evaluation.",
)
def history_matches_leads(
    context: dg.AssetCheckExecutionContext, lake: LakeResource
) -> dg.AssetCheckResult:
    """Fails when ``lead_history`` disagrees with ``leads`` or its versions do not chain.

    A full verification reads every current version, all of ``leads`` and the narrow columns of
    every version. When the latest completed evaluation passed and neither table has committed
    since (same URI, Delta version and commit time), nothing can have changed: the check passes
    again without reading them, saying so, with the figures of the verification it relies on.
    The versions are read before verifying, so a commit made meanwhile is verified next time.
    """
    store = lake.delta_lake()
    history, leads = store.load(HISTORY_TABLE), store.load(LEADS_TABLE)
    if history is None or leads is None:
        return missing_table(f"{HISTORY_TABLE} or {LEADS_TABLE}")
    state = {
        **delta_state(store, HISTORY_TABLE, "history", history),
        **delta_state(store, LEADS_TABLE, "leads", leads),
    }
    return remembered(
        context,
        check_key(HISTORY_TABLE, HISTORY_CHECK),
        state,
        lambda: _verify_history(context, store),
        f"lead_history (Delta version {history.version()}) and leads (Delta version "
        f"{leads.version()})",
    )


def _verify_history(
    context: dg.AssetCheckExecutionContext, store: DeltaLake
) -> dg.AssetCheckResult:
    """Verifies ``lead_history`` against ``leads`` in full (:func:`verify_history`)."""
    found = verify_history(store)
    if not found.exists:
        return missing_table(f"{HISTORY_TABLE} or {LEADS_TABLE}")
    context.log.info(
        f"{HISTORY_TABLE}:{HISTORY_CHECK}: {'passed' if found.passed else 'FAILED'}, "
        f"verified in full: {found.rows} versions, {found.live_leads} live leads."
    )
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
            "history_leads_version": version_text(found.history_leads_version),
            "leads_version": version_text(found.leads_version),
        },
    )


def _recorded_columns(record: dg.EventLogRecord) -> dict[str, str] | None:
    """Column → type of the ``dagster/column_schema`` a materialization recorded (None if none)."""
    materialization = record.asset_materialization
    entry = materialization.metadata.get("dagster/column_schema") if materialization else None
    schema = getattr(entry, "schema", None)
    if schema is None:
        return None
    return {column.name: column.type for column in schema.columns}


def schema_changes(before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    """What changed between two column → type mappings, in words, in column order.

    Returns:
        ``added x (type)``, ``removed y (type)``, ``retyped z: old → new``; empty when unchanged.
    """
    added = [f"added {c} ({t})" for c, t in after.items() if c not in before]
    removed = [f"removed {c} ({t})" for c, t in before.items() if c not in after]
    retyped = [
        f"retyped {c}: {before[c]} → {t}"
        for c, t in after.items()
        if c in before and before[c] != t
    ]
    return [*added, *removed, *retyped]


@dg.asset_check(
    asset=LEADS_TABLE,
    name=SCHEMA_CHANGE_CHECK,
    description="The columns of leads (names and types) are those of its previous "
    "materialization; warns (never blocks) naming the columns added, removed or retyped, e.g. "
    "after a change of the property map. Passes on the first materialization.",
)
def leads_column_schema_unchanged(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    """Warns when the column schema of ``leads`` differs from the previous materialization's."""
    records = context.instance.fetch_materializations(dg.AssetKey(LEADS_TABLE), limit=2).records
    schemas = [_recorded_columns(record) for record in records]
    latest = schemas[0] if schemas else None
    previous = schemas[1] if len(schemas) > 1 else None
    if latest is None or previous is None:
        why = (
            "no materialization of leads records a column schema yet"
            if latest is None
            else "first materialization with a column schema: nothing to compare with"
        )
        context.log.info(f"{LEADS_TABLE}:{SCHEMA_CHANGE_CHECK}: passed, {why}.")
        return dg.AssetCheckResult(
            passed=True,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"Passed: {why}.",
            metadata={"columns": len(latest or {}), "compared": False},
        )
    changes = schema_changes(previous, latest)
    context.log.info(
        f"{LEADS_TABLE}:{SCHEMA_CHANGE_CHECK}: "
        f"{'warning, ' + '; '.join(changes) if changes else 'passed, unchanged'} "
        f"({len(latest)} columns)."
    )
    return dg.AssetCheckResult(
        passed=not changes,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"The {len(latest)} columns of leads are those of the previous materialization."
            if not changes
            else "The columns of leads changed since the previous materialization: "
            + "; ".join(changes)
            + ". Readers of leads (queries, exports) may need the change too."
        ),
        metadata={
            "columns": len(latest),
            "compared": True,
            "changes": dg.MetadataValue.json(changes),
        },
    )


CHECKS = [
    leads_id_unique_and_not_null,
    leads_column_schema_unchanged,
    *RECONCILE_CHECKS.values(),
    share_of_leads_with_issues,
    history_matches_leads,
]


def build_checks(settings: Settings) -> list[dg.AssetChecksDefinition]:
    """:data:`CHECKS`, the quality check holding the threshold of ``settings``."""
    quality = quality_share_check(settings.quality_max_share)
    return [quality if check is share_of_leads_with_issues else check for check in CHECKS]
