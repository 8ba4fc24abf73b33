"""The FastAPI-free serving layer: the pipeline's results as pydantic models.

``LeadsAnalytics`` is a Dagster resource and a plain object at once::

    from leads_pipeline.serving import LeadsAnalytics

    analytics = LeadsAnalytics.from_env()
    [week.model_dump(mode="json") for week in analytics.count_date_by_week()]

The count methods return exactly what the old ``GET /api/v1/transformation/count_date_by_week``
and ``count_date_by_month`` endpoints returned (same keys, same order). Reads go through
:meth:`Warehouse.read` (a short read-only connection on the current snapshot) and Delta snapshots,
so they never block the pipeline's writers. Results are cached per warehouse file: writers replace
the file atomically, so a file whose identity (inode, size, mtime) is unchanged holds the same data.

``lead_history`` answers :meth:`LeadsAnalytics.lead_history` (every version of one lead) and the
counts ``as_of`` a moment. Both are served from an in-memory copy of the Delta table's current
version, built on the first call after each history commit: the versions sorted by lead in
compressed Arrow batches (a lookup decompresses one or two of them), and the event columns of the
versions sorted by ``valid_from`` (a moment selects a prefix). A Delta version never changes, so
the copy is valid until the table's version moves.

Modules: ``analytics`` (the resource), ``models`` (what it returns), ``arguments`` (lead ids,
moments, periods), ``history_index`` (the in-memory copies of ``lead_history``), ``errors``.
"""

from leads_pipeline.serving.analytics import LeadsAnalytics
from leads_pipeline.serving.arguments import parse_lead_id, period_start
from leads_pipeline.serving.errors import (
    HistoryRangeError,
    InvalidLeadIdError,
    LeadNotFoundError,
    PipelineNotRunError,
)
from leads_pipeline.serving.models import (
    API_EVENT_FIELDS,
    EVENT_COUNT_MODELS,
    STATUS_ENTRY_MODELS,
    VERSION_FIELDS,
    CohortConversion,
    IngestionStatus,
    LeadVersion,
    MonthlyEventCount,
    MonthlyStatusEntry,
    QualityIssue,
    StatusDuration,
    WeeklyEventCount,
    WeeklyStatusEntry,
)
from leads_pipeline.storage.warehouse import BUILD_COMMAND

__all__ = [
    "API_EVENT_FIELDS",
    "BUILD_COMMAND",
    "EVENT_COUNT_MODELS",
    "STATUS_ENTRY_MODELS",
    "VERSION_FIELDS",
    "CohortConversion",
    "HistoryRangeError",
    "IngestionStatus",
    "InvalidLeadIdError",
    "LeadNotFoundError",
    "LeadVersion",
    "LeadsAnalytics",
    "MonthlyEventCount",
    "MonthlyStatusEntry",
    "PipelineNotRunError",
    "QualityIssue",
    "StatusDuration",
    "WeeklyEventCount",
    "WeeklyStatusEntry",
    "parse_lead_id",
    "period_start",
]
