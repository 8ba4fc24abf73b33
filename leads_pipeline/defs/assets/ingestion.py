"""Ingestion layer: Notion pages → ``raw_notion_leads`` → ``leads`` and ``lead_quality_issues``,
and ``leads`` → ``lead_history``."""

import dagster as dg
from pydantic import Field

from leads_pipeline.defs.assets import INGESTION_GROUP, INGESTION_LAYER
from leads_pipeline.defs.assets.schemas import (
    ISSUES_DESCRIPTIONS,
    RAW_DESCRIPTIONS,
    definition_metadata,
    history_descriptions,
    leads_descriptions,
)
from leads_pipeline.defs.automation import follow_upstream
from leads_pipeline.defs.metadata import (
    delta_table_metadata,
    markdown_preview,
    mask_pii_columns,
    page_urls,
    quality_issue_metadata,
    recorded_int,
    thousands,
    version_text,
)
from leads_pipeline.defs.pools import LAKE_POOL
from leads_pipeline.defs.resources import LakeResource, PropertyMapResource
from leads_pipeline.sources.base import LeadsSource
from leads_pipeline.sources.raw_sync import RawSyncOutcome, sync_raw
from leads_pipeline.storage.lake import first_rows
from leads_pipeline.tables import HISTORY_TABLE, ISSUES_TABLE, LEADS_TABLE, RAW_TABLE
from leads_pipeline.transform.history import (
    ExaminedThrough,
    derive_history,
    enable_leads_change_feed,
)
from leads_pipeline.transform.leads import RawSchemaMissingError, derive_leads_from_raw


class RawLeadsConfig(dg.Config):
    """Run configuration of ``raw_notion_leads``."""

    full_listing: bool = Field(
        default=False,
        description="List every page instead of only those edited since the watermark, and "
        "compare each page's content with the stored copy (values Notion changes without a new "
        "edit time, such as formulas and rollups, are caught); pages no longer listed are marked "
        "deleted. The refresh_leads job sets it; a change of the data source's schema does too.",
    )


class LeadsConfig(dg.Config):
    """Run configuration of ``leads`` / ``lead_quality_issues``."""

    rebuild: bool = Field(
        default=False,
        description="Re-derive both tables from every row of raw_notion_leads (no Notion call), "
        "e.g. after editing the property map.",
    )


@dg.asset(
    name=RAW_TABLE,
    group_name=INGESTION_GROUP,
    kinds={"notion", "deltalake", "python"},
    tags=INGESTION_LAYER,
    metadata=definition_metadata(RAW_TABLE),
    pool=LAKE_POOL,
)
def raw_notion_leads(
    context: dg.AssetExecutionContext,
    config: RawLeadsConfig,
    source: LeadsSource,
    lake: LakeResource,
    property_map: PropertyMapResource,
) -> dg.MaterializeResult:
    """Every lead page of the Notion Leads database, exactly as Notion returned it.

    One row per page ever seen, with its properties kept verbatim as JSON, the time it was last
    synced and, for pages trashed in Notion or gone from a full listing, when it was deleted. It is
    the pipeline's memory of Notion: everything downstream can be rebuilt from it without calling
    Notion again.

    An incremental sync lists the pages edited since the last one. A full listing (refresh_leads,
    or any sync that finds the data source's schema changed) lists every page and writes those
    whose content differs from the stored copy, edit time or not.
    """
    store = lake.delta_lake()
    outcome = sync_raw(
        source,
        store,
        mapping=property_map.load(),
        full_listing=config.full_listing,
        log=context.log,
    )
    context.log.info(
        f"{RAW_TABLE}: {thousands(outcome.pages_fetched)} pages fetched from {outcome.source} "
        f"({outcome.mode}), {thousands(outcome.write.inserted)} inserted, "
        f"{thousands(outcome.write.updated)} updated, {thousands(outcome.write.deleted)} marked "
        f"deleted, {thousands(outcome.row_count)} rows, Delta version {outcome.delta_version}."
    )
    table = store.load(RAW_TABLE)
    standard = (
        delta_table_metadata(table, RAW_TABLE, store.table_uri(RAW_TABLE), RAW_DESCRIPTIONS)
        if table is not None
        else {}
    )
    return dg.MaterializeResult(
        metadata={**standard, **_raw_metadata(outcome, full_previews=lake.full_previews)}
    )


def _raw_metadata(outcome: RawSyncOutcome, *, full_previews: bool) -> dict:
    """The metadata of a ``raw_notion_leads`` materialization (besides the standard entries)."""
    stats = outcome.stats
    return {
        "source": outcome.source,
        "mode": outcome.mode,
        "full_listing_reason": outcome.full_listing_reason or "",
        "dagster/row_count": outcome.row_count,
        "pages_fetched": outcome.pages_fetched,
        "pages_written": outcome.pages_written,
        "pages_changed_without_edit": outcome.changed_without_edit,
        "schema_changes": dg.MetadataValue.json(list(outcome.schema_changes)),
        "requests": stats.requests,
        "retries": stats.retries,
        "rate_limit_wait_seconds": round(stats.rate_limit_wait_seconds, 3),
        "rate_limit_reasons": dg.MetadataValue.json(dict(stats.rate_limit_reasons)),
        "pacing_wait_seconds": round(stats.pacing_wait_seconds, 3),
        "truncated_values_completed": stats.values_completed,
        "invalid_unicode_replaced": stats.invalid_unicode_replaced,
        "rows_inserted": outcome.write.inserted,
        "rows_updated": outcome.write.updated,
        "rows_marked_deleted": outcome.write.deleted,
        "delta_version": version_text(outcome.delta_version),
        "delta_committed": outcome.write.committed,
        "watermark": outcome.watermark.isoformat() if outcome.watermark else "",
        # Keys only (never properties_json); LEADS_FULL_PREVIEWS leaves it as it is.
        "preview": markdown_preview(mask_pii_columns(outcome.tail, full_previews)),
    }


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            LEADS_TABLE,
            deps=[RAW_TABLE],
            group_name=INGESTION_GROUP,
            kinds={"deltalake", "python"},
            tags=INGESTION_LAYER,
            metadata=definition_metadata(LEADS_TABLE),
            description=(
                "The sales team's leads, one row per live lead: name, email, phone, status and "
                "the five event dates of the funnel (first contact, prospect's reply, call "
                "proposed, call booked, follow-up) as calendar dates as written in Notion. "
                "Leads trashed or deleted in Notion are gone from it."
            ),
        ),
        dg.AssetSpec(
            ISSUES_TABLE,
            deps=[RAW_TABLE],
            group_name=INGESTION_GROUP,
            kinds={"deltalake", "python"},
            tags=INGESTION_LAYER,
            metadata=definition_metadata(ISSUES_TABLE),
            description=(
                "Every value in Notion that could not be read (an invalid email, a malformed "
                "date, a property of the wrong type): which lead, which column, the raw value and "
                "why. The lead itself is kept in leads with that one value empty."
            ),
        ),
    ],
    pool=LAKE_POOL,
)
def leads_and_quality_issues(
    context: dg.AssetExecutionContext,
    config: LeadsConfig,
    lake: LakeResource,
    property_map: PropertyMapResource,
):
    """Parses raw pages into the typed leads table and the quality issues found on the way."""
    store = lake.delta_lake()
    mapping = property_map.load()
    try:
        derived = derive_leads_from_raw(store, mapping, rebuild=config.rebuild)
    except RawSchemaMissingError as error:
        raise dg.Failure(str(error)) from error
    outcome, columns, source = derived.outcome, derived.columns, derived.source
    context.log.info(
        f"{LEADS_TABLE}: {thousands(outcome.leads_rows)} leads ({outcome.mode}) from "
        f"{thousands(outcome.raw_rows_processed)} raw rows, {thousands(outcome.leads.inserted)} "
        f"inserted, {thousands(outcome.leads.updated)} updated, "
        f"{thousands(outcome.leads.deleted)} deleted; {ISSUES_TABLE}: "
        f"{thousands(outcome.issue_rows)} values that could not be read."
    )
    # Once per lake: lead_history then reads only the rows each sync changed.
    if enable_leads_change_feed(store):
        context.log.info("Turned on the change data feed of leads (read by lead_history).")
    leads_table = store.load(LEADS_TABLE)
    preview = first_rows(leads_table, 10, exclude=["extra_properties"])
    issues_table = store.load(ISSUES_TABLE)
    yield dg.MaterializeResult(
        asset_key=LEADS_TABLE,
        metadata={
            **delta_table_metadata(
                leads_table, LEADS_TABLE, store.table_uri(LEADS_TABLE), leads_descriptions(columns)
            ),
            "source": source,
            "mode": outcome.mode,
            "dagster/row_count": outcome.leads_rows,
            "raw_rows_processed": outcome.raw_rows_processed,
            "rows_inserted": outcome.leads.inserted,
            "rows_updated": outcome.leads.updated,
            "rows_deleted": outcome.leads.deleted,
            "duplicates_removed": outcome.duplicates_removed,
            "delta_committed": outcome.leads.committed,
            "property_map": mapping.fingerprint(),
            # Names, emails and phones masked unless LEADS_FULL_PREVIEWS is on.
            "preview": markdown_preview(mask_pii_columns(preview, lake.full_previews)),
        },
    )
    yield dg.MaterializeResult(
        asset_key=ISSUES_TABLE,
        metadata={
            **(
                delta_table_metadata(
                    issues_table, ISSUES_TABLE, store.table_uri(ISSUES_TABLE), ISSUES_DESCRIPTIONS
                )
                if issues_table is not None
                else {}
            ),
            "source": source,
            "dagster/row_count": outcome.issue_rows,
            "delta_version": version_text(outcome.issues.version),
            "delta_committed": outcome.issues.committed,
            # Counts per column and reason, and the latest issues with each lead's Notion link.
            **quality_issue_metadata(
                outcome.issues_table,
                lambda ids: page_urls(leads_table, ids),
                full=lake.full_previews,
            ),
        },
    )


#: Metadata of a ``lead_history`` materialization that the next one reads back as a hint.
_HISTORY_VERSION = "delta_version"
_LEADS_VERSION = "leads_delta_version"
_LEADS_COMMIT = "leads_commit_timestamp"


def _examined_through(context: dg.AssetExecutionContext) -> ExaminedThrough | None:
    """What the last materialization of ``lead_history`` examined (a hint, see ExaminedThrough)."""
    event = context.instance.get_latest_materialization_event(dg.AssetKey(HISTORY_TABLE))
    if event is None or event.asset_materialization is None:
        return None
    metadata = event.asset_materialization.metadata
    values = [recorded_int(metadata, k) for k in (_HISTORY_VERSION, _LEADS_VERSION, _LEADS_COMMIT)]
    if any(v is None for v in values):
        return None
    return ExaminedThrough(*values)


@dg.asset(
    name=HISTORY_TABLE,
    deps=[LEADS_TABLE],
    group_name=INGESTION_GROUP,
    kinds={"deltalake", "python"},
    tags=INGESTION_LAYER,
    metadata=definition_metadata(HISTORY_TABLE),
    pool=LAKE_POOL,
    automation_condition=follow_upstream(),
)
def lead_history(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    """Every version of every lead the pipeline has seen: what Notion forgets, the pipeline keeps.

    One row per version: the lead's values (every column of leads), when the version began
    (``valid_from``, Notion's edit time) and ended (``valid_to``; empty while current), how it
    came about (``change``: created, updated, deleted or restored) and which columns changed. A
    new version only when a column other than ``last_edited_time`` changed; a deleted lead keeps
    its history and a tombstone version. Written from the versions of leads since the last run,
    so a run killed after leads is completed by the next one; the first run replays every version
    of leads still in its Delta history.
    """
    store = lake.delta_lake()
    source = store.commit_value(LEADS_TABLE, "source") or "unknown"
    outcome = derive_history(
        store, examined=_examined_through(context), metadata={"source": source}
    )
    context.log.info(
        f"{HISTORY_TABLE}: {thousands(outcome.rows)} versions ({outcome.mode}), "
        f"{thousands(outcome.versions_added)} added for {thousands(outcome.leads_changed)} leads, "
        f"{thousands(outcome.versions_closed)} closed, from leads versions "
        f"{list(outcome.leads_versions_read) or 'none'}."
    )
    if outcome.leads_versions_unreadable:
        context.log.warning(
            f"leads versions {list(outcome.leads_versions_unreadable)} can no longer be read "
            "(vacuumed): changes they alone held are not in the history."
        )
    preview_columns = [
        c
        for c in ("id", "version", "change", "valid_from", "statut", "changed_columns")
        if c in outcome.added.column_names
    ]
    history = outcome.table or store.load(HISTORY_TABLE)
    descriptions = history_descriptions()
    return dg.MaterializeResult(
        metadata={
            **(
                delta_table_metadata(
                    history, HISTORY_TABLE, store.table_uri(HISTORY_TABLE), descriptions
                )
                if history is not None
                else {}
            ),
            "source": source,
            "mode": outcome.mode,
            "dagster/row_count": outcome.rows,
            "versions_added": outcome.versions_added,
            "versions_closed": outcome.versions_closed,
            "leads_changed": outcome.leads_changed,
            "changes": dg.MetadataValue.json(dict(outcome.changes)),
            "leads_versions_read": dg.MetadataValue.json(list(outcome.leads_versions_read)),
            "leads_versions_unreadable": dg.MetadataValue.json(
                list(outcome.leads_versions_unreadable)
            ),
            _LEADS_VERSION: version_text(outcome.leads_version),
            **(
                {_LEADS_COMMIT: version_text(outcome.leads_commit_timestamp)}
                if outcome.leads_commit_timestamp is not None
                else {}
            ),
            _HISTORY_VERSION: version_text(outcome.version),
            "delta_committed": outcome.committed,
            "preview": markdown_preview(outcome.added.select(preview_columns)),
        }
    )


ASSETS = [raw_notion_leads, leads_and_quality_issues, lead_history]
