"""The pydantic models the serving layer returns: the old API's shapes and the history's."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, create_model

from leads_pipeline.tables import GRAINS, STATUS_ENTRIES, Grain

#: Event columns in the order the old API returned them.
API_EVENT_FIELDS: tuple[str, ...] = (
    "date_prise_contact",
    "date_reponse_prospect",
    "date_appel_booke",
    "date_appel_propose",
    "date_relance",
)

#: What each event column counts, for the models' field descriptions.
_EVENT_DESCRIPTIONS = {
    "date_prise_contact": "First contacts",
    "date_reponse_prospect": "Prospects' replies",
    "date_appel_booke": "Calls booked",
    "date_appel_propose": "Calls proposed",
    "date_relance": "Follow-ups",
}


def _event_count_model(of: Grain) -> type[BaseModel]:
    """The model of one period of ``of``: its label, then the events in the old API's order."""
    period = of.period[0].upper() + of.period[1:]
    return create_model(
        f"{of.adjective.capitalize()}EventCount",
        __config__=ConfigDict(frozen=True),
        __doc__=f"One {of.name} of the old ``GET /api/v1/transformation/count_date_by_{of.name}``.",
        __module__=__name__,
        **{of.label: (str, Field(description=f"{period}, e.g. {of.example}."))},
        **{
            column: (
                int,
                Field(description=f"{_EVENT_DESCRIPTIONS[column]} dated in the {of.name}."),
            )
            for column in API_EVENT_FIELDS
        },
    )


#: The model of one period, per grain name (``"week"`` → :class:`WeeklyEventCount`).
EVENT_COUNT_MODELS: dict[str, type[BaseModel]] = {g.name: _event_count_model(g) for g in GRAINS}
#: One week of ``count_date_by_week``: ``semaine`` then the five counts.
WeeklyEventCount = EVENT_COUNT_MODELS["week"]
#: One month of ``count_date_by_month``: ``mois`` then the five counts.
MonthlyEventCount = EVENT_COUNT_MODELS["month"]


def _status_entry_model(of: Grain) -> type[BaseModel]:
    """The model of one (period, status) row of ``of``'s status-entries table."""
    period = of.period[0].upper() + of.period[1:]
    return create_model(
        f"{of.adjective.capitalize()}StatusEntry",
        __config__=ConfigDict(frozen=True),
        __doc__=f"How many leads entered one status in one {of.name} (``{of.table(STATUS_ENTRIES)}``).",
        __module__=__name__,
        **{of.label: (str, Field(description=f"{period}, e.g. {of.example}."))},
        statut=(str, Field(description="The status, as Notion names it.")),
        status_group=(
            str | None,
            Field(
                description="Its group in Notion (To-do, In progress, Complete); None if unknown."
            ),
        ),
        entries=(
            int,
            Field(description=f"Versions of leads entering the status in the {of.name}."),
        ),
    )


#: The model of one row of the status-entries table, per grain name.
STATUS_ENTRY_MODELS: dict[str, type[BaseModel]] = {g.name: _status_entry_model(g) for g in GRAINS}
#: One (week, status) of ``status_entries(by="week")``: ``semaine, statut, status_group, entries``.
WeeklyStatusEntry = STATUS_ENTRY_MODELS["week"]
#: One (month, status) of ``status_entries(by="month")``: ``mois, statut, status_group, entries``.
MonthlyStatusEntry = STATUS_ENTRY_MODELS["month"]


class StatusDuration(BaseModel):
    """How long leads stay in one status (a row of ``analytics.status_durations``)."""

    model_config = ConfigDict(frozen=True)

    statut: str = Field(description="The status, as Notion names it.")
    status_group: str | None = Field(description="Its group in Notion; None if unknown.")
    completed_stays: int = Field(description="Stays in the status that have ended.")
    median_days: float | None = Field(description="Median length of the completed stays, in days.")
    p90_days: float | None = Field(description="90th percentile of the completed stays, in days.")
    open_stays: int = Field(description="Leads in the status now.")
    median_open_days: float | None = Field(
        description="Median age of the open stays, in days (to the start of the UTC day)."
    )


class CohortConversion(BaseModel):
    """How far one month's first contacts went (a row of ``analytics.cohort_conversion``)."""

    model_config = ConfigDict(frozen=True)

    mois: str = Field(description="Month of first contact, e.g. 2025-01.")
    leads: int = Field(description="Leads whose date_prise_contact is in the month.")
    replied: int = Field(description="Of them, leads with a date_reponse_prospect.")
    call_proposed: int = Field(description="Of them, leads with a date_appel_propose.")
    call_booked: int = Field(description="Of them, leads with a date_appel_booke.")
    reply_rate: float | None = Field(description="replied / leads (0..1); None without leads.")
    call_proposed_rate: float | None = Field(description="call_proposed / leads (0..1).")
    call_booked_rate: float | None = Field(description="call_booked / leads (0..1).")
    median_days_to_call_booked: float | None = Field(
        description="Median days from first contact to call booked, over the leads holding both."
    )


class LeadVersion(BaseModel):
    """One version of a lead in ``lead_history``; the lead's columns follow as extra fields.

    ``model_dump(mode="json")`` gives the version fields, then every column of ``leads`` (``nom``,
    ``statut``, the dates, ``url``…, as the property map makes them) as they were in that version.
    """

    model_config = ConfigDict(frozen=True, extra="allow")

    id: str = Field(description="The lead's Notion page id.")
    version: int = Field(description="1, 2, … in order.")
    valid_from: datetime | None = Field(
        description="When the version began: its last_edited_time (Notion's, to the minute)."
    )
    valid_to: datetime | None = Field(
        description="When it ended: the next version's valid_from; None while current."
    )
    is_current: bool = Field(description="Whether this is the lead's version now.")
    change: str = Field(description="created, updated, deleted or restored.")
    changed_columns: list[str] = Field(description="The columns that differ from the previous one.")
    synced_at: datetime | None = Field(description="When the pipeline first saw the version.")


#: The fields of :class:`LeadVersion` that are not columns of ``leads``.
VERSION_FIELDS: tuple[str, ...] = tuple(LeadVersion.model_fields)


class IngestionStatus(BaseModel):
    """Where the pipeline stands: what was synced, from where, and what it produced."""

    model_config = ConfigDict(frozen=True)

    source: str | None = Field(description="`notion` or `sample`: who produced the raw pages.")
    source_identity: str | None = Field(description="Which Notion data source (or sample set).")
    last_sync_at: datetime | None = Field(
        description="When the last sync that changed something ran (newest `synced_at` in raw)."
    )
    watermark: datetime | None = Field(
        description="Newest Notion `last_edited_time` synced: the next sync resumes from here."
    )
    raw_rows: int = Field(description="Rows of raw_notion_leads, deleted pages included.")
    raw_delta_version: int = Field(description="Delta version of raw_notion_leads.")
    leads_rows: int | None = Field(description="Live leads; None if leads is not built yet.")
    leads_delta_version: int | None = Field(description="Delta version of leads.")
    open_quality_issues: int | None = Field(
        description="Values that could not be parsed (rows of lead_quality_issues)."
    )
    counts_published_at: datetime | None = Field(
        description="When the warehouse's count tables were last published; None if never."
    )


class QualityIssue(BaseModel):
    """One row of ``lead_quality_issues``, with the lead's Notion URL to fix it."""

    model_config = ConfigDict(frozen=True)

    page_id: str = Field(description="The lead's Notion page id.")
    column: str = Field(description="The column of leads left empty (or `properties`).")
    raw_value: str | None = Field(description="The value as Notion holds it (its beginning).")
    reason: str = Field(description="Why the value could not be read.")
    detected_at: datetime = Field(description="When the pipeline first saw the value.")
    url: str | None = Field(description="The lead's Notion page (from leads; None if gone).")
