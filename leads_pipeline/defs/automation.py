"""Declarative automation: assets downstream of ``leads`` follow it on their own.

The count assets (and the downstream assets built on them) carry :func:`follow_upstream`: they are
requested as soon as an upstream asset has a new materialization, unless an upstream asset is
missing or in progress, and never while a blocking check of an upstream asset has failed — a
``leads`` table with duplicate ids never reaches the counts. ``leads_automation_sensor`` evaluates
these conditions; it is declared RUNNING so automation works out of the box under ``dagster dev``
(Dagster's implicit default automation sensor starts stopped).
"""

import dagster as dg

#: Why a schedule or sensor that talks to Notion is declared stopped on the sample, and how to
#: start it: the first words of its description, so the UI's list of schedules and sensors says it.
SAMPLE_STOPPED_NOTE = (
    "Stopped by default because the source is the bundled sample (LEADS_SOURCE=sample, the "
    "default when no NOTION_* variable is set): its pages never change, so there is nothing to "
    "sync. Start it in the UI (Automation → toggle it on), or set NOTION_TOKEN and "
    "NOTION_DATABASE_ID (and unset LEADS_SOURCE or set it to notion) to sync Notion: it then "
    "starts running by default."
)


def stopped_on_sample(from_notion: bool, what_it_does: str) -> str:
    """The description of a schedule or sensor that runs by default only with Notion.

    Args:
        from_notion: Whether the source is Notion (then it runs by default).
        what_it_does: One or two sentences saying what it does when running.

    Returns:
        ``what_it_does`` with the source, preceded on the sample by :data:`SAMPLE_STOPPED_NOTE`.
    """
    if from_notion:
        return f"Running by default because the source is Notion. {what_it_does}"
    return f"{SAMPLE_STOPPED_NOTE} {what_it_does}"


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
    description="Always running by default, whatever the source. Evaluates the assets' automation "
    "conditions: the counts and the downstream assets follow leads once its blocking checks pass.",
)
