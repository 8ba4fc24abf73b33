"""Declarative automation: assets downstream of ``leads`` follow it on their own.

The count assets (and the downstream assets built on them) carry :func:`follow_upstream`: they are
requested as soon as an upstream asset has a new materialization, unless an upstream asset is
missing or in progress, and never while a blocking check of an upstream asset has failed — a
``leads`` table with duplicate ids never reaches the counts. ``leads_automation_sensor`` evaluates
these conditions; it is declared RUNNING so automation works out of the box under ``dagster dev``
(Dagster's implicit default automation sensor starts stopped).
"""

import dagster as dg


def follow_upstream() -> dg.AutomationCondition:
    """Eager automation gated on the upstream blocking checks.

    True when an upstream asset updated since the last time this asset was handled, no upstream
    asset is missing or in progress, and every blocking check of every upstream asset passed (or is
    requested in the same tick, in which case the run itself stops before this asset if it fails).
    """
    return (
        dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()
    ).with_label("eager, upstream blocking checks passed")


leads_automation_sensor = dg.AutomationConditionSensorDefinition(
    "leads_automation_sensor",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Evaluates the assets' automation conditions: the counts and the downstream "
    "assets follow leads once its blocking checks pass.",
)
