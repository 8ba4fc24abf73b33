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
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable
from pydantic import BaseModel, ConfigDict, Field, create_model

from leads_pipeline.settings import (
    DEFAULT_LAKE_URI,
    DEFAULT_WAREHOUSE_PATH,
    Settings,
    load_settings,
)
from leads_pipeline.storage.lake import DeltaLake, key_in
from leads_pipeline.storage.warehouse import (
    BUILD_COMMAND,
    TableNotBuiltError,
    Warehouse,
    WarehouseNotBuiltError,
    compute_event_counts,
)
from leads_pipeline.tables import (
    EVENT_COUNTS,
    GRAINS,
    ISSUES_TABLE,
    LEADS_TABLE,
    RAW_TABLE,
    Grain,
    grain,
)

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
_CACHE_MAX_ENTRIES = 32


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


class PipelineNotRunError(WarehouseNotBuiltError):
    """The results asked for have not been materialized yet; the message names the command."""


_cache: dict[tuple[str, str], tuple[tuple, tuple]] = {}
_cache_lock = threading.Lock()


def _file_identity(path: str) -> tuple | None:
    """What changes whenever the file's content may have: inode, size, mtime (and the WAL's)."""
    identity = []
    for name in (path, f"{path}.wal"):
        try:
            stat = os.stat(name)
        except FileNotFoundError:
            identity.append(None)
            continue
        identity.append((stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns))
    return None if identity[0] is None else tuple(identity)


def period_start(day: date, by: str) -> date:
    """The first day of the period of grain ``by`` (``"week"``: Monday) holding ``day``.

    Raises:
        ValueError: If no grain is called ``by``.
    """
    return grain(by).period_start(day)


def _as_date(value: date | str | None, name: str) -> date | None:
    if value is None or (isinstance(value, date) and not isinstance(value, datetime)):
        return value
    if isinstance(value, datetime):
        return value.date()
    try:
        return date.fromisoformat(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name}={value!r} is not a date (expected YYYY-MM-DD).") from error


class LeadsAnalytics(dg.ConfigurableResource):
    """Read-only access to the pipeline's results, inside Dagster or in any Python code.

    As a resource, declare ``analytics: LeadsAnalytics`` in an asset; as a plain object, build it
    with :meth:`from_env` or with explicit paths. It holds no secret and no ``EnvVar``.

    Attributes:
        warehouse_path: The DuckDB file written by the count assets.
        lake_uri: The Delta lake root.
        cache: Reuse results while the warehouse file is unchanged (safe: writers replace it).
    """

    warehouse_path: str = Field(default=DEFAULT_WAREHOUSE_PATH, description="DuckDB file.")
    lake_uri: str = Field(default=DEFAULT_LAKE_URI, description="Delta lake root.")
    cache: bool = Field(default=True, description="Reuse results while the file is unchanged.")

    @classmethod
    def from_env(cls, settings: Settings | None = None) -> LeadsAnalytics:
        """An instance on the warehouse and lake of the settings.

        Args:
            settings: The configuration; loaded from the environment when omitted
                (``LEADS_WAREHOUSE_PATH``, ``LEADS_LAKE_URI``...).

        Raises:
            ConfigurationError: If the settings are loaded here and a variable is invalid.
        """
        settings = load_settings() if settings is None else settings
        return cls(warehouse_path=settings.warehouse_path, lake_uri=settings.lake_uri)

    def _not_run(self, what: str) -> PipelineNotRunError:
        return PipelineNotRunError(
            f"{what} does not exist yet: the pipeline has not run. Build it with: {BUILD_COMMAND}"
        )

    def _read_table(self, table: str, build: Callable[[dict], Any], order_by: str) -> tuple:
        """All rows of ``table`` as ``build(row)``, from the cache when the file is unchanged."""
        path = os.path.abspath(self.warehouse_path)
        key = (path, table)
        before = _file_identity(path)
        if before is None:
            raise self._not_run(f"The warehouse {self.warehouse_path}")
        if self.cache:
            cached = _cache.get(key)
            if cached is not None and cached[0] == before:
                return cached[1]
        rows = self._require(Warehouse(path), table, order_by)
        built = tuple(build(row) for row in rows.to_pylist())
        # A writer may have replaced the file meanwhile: only cache what is known to match.
        if self.cache and _file_identity(path) == before:
            with _cache_lock:
                if len(_cache) >= _CACHE_MAX_ENTRIES:
                    _cache.clear()
                _cache[key] = (before, built)
        return built

    def _require(self, warehouse: Warehouse, table: str, order_by: str | None = None) -> pa.Table:
        """``table``'s rows, or the error naming what is not built and the command to build it."""
        try:
            return warehouse.require_table(table, order_by)
        except TableNotBuiltError as error:
            raise self._not_run(f"The table {table} in {self.warehouse_path}") from error
        except WarehouseNotBuiltError as error:
            raise self._not_run(f"The warehouse {self.warehouse_path}") from error

    def counts(
        self,
        by: str,
        start: date | str | None = None,
        end: date | str | None = None,
        as_of: int | str | datetime | None = None,
    ) -> list[BaseModel]:
        """Event counts per period of grain ``by``, oldest first, in the old API's shape.

        Args:
            by: The grain's name: ``"week"`` or ``"month"`` (see :data:`tables.GRAINS`).
            start: Keep periods from the one containing this date (inclusive).
            end: Keep periods up to the one containing this date (inclusive).
            as_of: Answer as of a Delta version (int) or timestamp (ISO string or datetime) of
                ``leads``, recomputed from the lake's history instead of read from the warehouse.

        Returns:
            One :data:`EVENT_COUNT_MODELS` ``[by]`` per period; ``model_dump(mode="json")`` is
            the old API's JSON object (the period's label, then the five counts).

        Raises:
            PipelineNotRunError: If the counts have not been built yet.
            ValueError: If ``by`` is no grain, ``start`` is after ``end`` or a string is not an
                ISO date.
        """
        of = grain(by)
        start, end = _as_date(start, "start"), _as_date(end, "end")
        if start is not None and end is not None and start > end:
            raise ValueError(f"start ({start}) is after end ({end}).")
        model = EVENT_COUNT_MODELS[of.name]

        def build(row: dict) -> tuple:
            return (
                row[of.start_column],
                model(**{of.label: row[of.label], **{c: row[c] for c in API_EVENT_FIELDS}}),
            )

        if as_of is None:
            rows = self._read_table(of.table(EVENT_COUNTS), build, of.start_column)
        else:
            rows = tuple(build(row) for row in self._counts_as_of(of, as_of).to_pylist())
        first = of.period_start(start) if start is not None else None
        return [
            item
            for begins, item in rows
            if (first is None or begins >= first) and (end is None or begins <= end)
        ]

    def _counts_as_of(self, of: Grain, as_of: int | str | datetime) -> pa.Table:
        """The counts as they were at a Delta version or timestamp of ``leads`` (time travel)."""
        lake = DeltaLake(self.lake_uri)
        if lake.load(LEADS_TABLE) is None:
            raise self._not_run(f"The table {LEADS_TABLE} in {self.lake_uri}")
        try:
            leads = lake.load(LEADS_TABLE, version=as_of)
        except Exception as error:
            raise ValueError(
                f"as_of={as_of!r}: {LEADS_TABLE} has no such version or timestamp in its history "
                f"(it may be older than the vacuum retention): {error}"
            ) from error
        return compute_event_counts(leads.to_pyarrow_dataset(), of)

    def count_date_by_week(
        self,
        start: date | str | None = None,
        end: date | str | None = None,
        as_of: int | str | datetime | None = None,
    ) -> list[WeeklyEventCount]:
        """Event counts per ISO week, oldest first, in the old API's shape.

        Args:
            start: Keep weeks from the one containing this date (inclusive).
            end: Keep weeks up to the one containing this date (inclusive).
            as_of: Answer as of a Delta version (int) or timestamp (ISO string or datetime) of
                ``leads``, recomputed from the lake's history instead of read from the warehouse.

        Returns:
            One model per week; ``model_dump(mode="json")`` is the old API's JSON object.

        Raises:
            PipelineNotRunError: If the counts have not been built yet.
            ValueError: If ``start`` is after ``end`` or a string is not an ISO date.

        Example:
            >>> analytics.count_date_by_week(start=date(2025, 1, 1), end=date(2025, 1, 31))[0].semaine
            '2025-W01'
        """
        return self.counts("week", start, end, as_of)

    def count_date_by_month(
        self,
        start: date | str | None = None,
        end: date | str | None = None,
        as_of: int | str | datetime | None = None,
    ) -> list[MonthlyEventCount]:
        """Event counts per calendar month, oldest first, in the old API's shape.

        Args:
            start: Keep months from the one containing this date (inclusive).
            end: Keep months up to the one containing this date (inclusive).
            as_of: Answer as of a Delta version (int) or timestamp (ISO string or datetime) of
                ``leads`` (time travel), instead of the current warehouse.

        Returns:
            One model per month; ``model_dump(mode="json")`` is the old API's JSON object.

        Raises:
            PipelineNotRunError: If the counts have not been built yet.
            ValueError: If ``start`` is after ``end`` or a string is not an ISO date.
        """
        return self.counts("month", start, end, as_of)

    def table(self, name: str) -> pa.Table:
        """Any table of the warehouse (e.g. ``analytics.monthly_funnel_conversion``) as Arrow.

        Raises:
            PipelineNotRunError: If the warehouse or the table does not exist yet.
        """
        return self._require(Warehouse(self.warehouse_path), name)

    def quality_issues(self, column: str | None = None) -> list[QualityIssue]:
        """The values Notion holds that could not be read, newest first, read from the lake.

        Args:
            column: Keep only the issues of this column of ``leads``.

        Returns:
            One model per issue, by ``detected_at`` descending, then page id and column.

        Raises:
            PipelineNotRunError: If ``lead_quality_issues`` has not been built yet.
        """
        lake = DeltaLake(self.lake_uri)
        issues = lake.load(ISSUES_TABLE)
        if issues is None:
            raise self._not_run(f"The table {ISSUES_TABLE} in {self.lake_uri}")
        wanted = None if column is None else pc.field("column") == column
        rows = issues.to_pyarrow_dataset().to_table(filter=wanted)
        order = [("detected_at", "descending"), ("page_id", "ascending"), ("column", "ascending")]
        rows = rows.sort_by(order)
        urls: dict[str, str] = {}
        leads = lake.load(LEADS_TABLE)
        if leads is not None and rows.num_rows:
            found = leads.to_pyarrow_dataset().to_table(
                columns=["id", "url"], filter=key_in("id", pc.unique(rows["page_id"]))
            )
            urls = dict(zip(found["id"].to_pylist(), found["url"].to_pylist(), strict=True))
        return [
            QualityIssue(**{**row, "url": urls.get(row["page_id"])}) for row in rows.to_pylist()
        ]

    def ingestion_status(self) -> IngestionStatus:
        """Where ingestion stands, read from Delta logs and file statistics (no data scan).

        Raises:
            PipelineNotRunError: If nothing has been synced into the lake yet.
        """
        lake = DeltaLake(self.lake_uri)
        raw = lake.load(RAW_TABLE)
        if raw is None:
            raise self._not_run(f"The table {RAW_TABLE} in {self.lake_uri}")
        leads = lake.load(LEADS_TABLE)
        issues = lake.load(ISSUES_TABLE)
        raw_files = _file_stats(raw)
        last_sync = _column_max(raw, raw_files, "synced_at")
        if last_sync is None:
            last_sync = datetime.fromtimestamp(raw.history(1)[0]["timestamp"] / 1000, UTC)
        identity = _file_identity(os.path.abspath(self.warehouse_path))
        return IngestionStatus(
            source=lake.commit_value(RAW_TABLE, "source"),
            source_identity=lake.commit_value(RAW_TABLE, "source_identity"),
            last_sync_at=last_sync,
            watermark=_column_max(raw, raw_files, "last_edited_time"),
            raw_rows=_row_count(raw, raw_files),
            raw_delta_version=raw.version(),
            leads_rows=None if leads is None else _row_count(leads, _file_stats(leads)),
            leads_delta_version=None if leads is None else leads.version(),
            open_quality_issues=None if issues is None else _row_count(issues, _file_stats(issues)),
            counts_published_at=None
            if identity is None
            else datetime.fromtimestamp(identity[0][3] / 1e9, UTC),
        )


def _file_stats(table: DeltaTable) -> pa.Table:
    """The Delta log's per-file statistics (row counts, min/max), read without opening data."""
    return pa.table(table.get_add_actions(flatten=True))


def _row_count(table: DeltaTable, files: pa.Table) -> int:
    if files.num_rows == 0:
        return 0
    if "num_records" in files.column_names and files["num_records"].null_count == 0:
        return pc.sum(files["num_records"]).as_py()
    return table.to_pyarrow_dataset().count_rows()


def _column_max(table: DeltaTable, files: pa.Table, column: str) -> Any:
    """The maximum of ``column``, from file statistics when every file has them, else scanned."""
    if files.num_rows == 0:
        return None
    stats = f"max.{column}"
    nulls = f"null_count.{column}"
    if stats in files.column_names:
        # A file whose column is all null has no max: complete when null_count == num_records.
        present = files[stats]
        all_null = (
            pc.equal(files[nulls], files["num_records"]) if nulls in files.column_names else None
        )
        missing = pc.is_null(present)
        if all_null is not None:
            missing = pc.and_(missing, pc.invert(pc.fill_null(all_null, False)))
        if not pc.any(missing).as_py():
            return pc.max(present).as_py()
    return pc.max(table.to_pyarrow_dataset().to_table(columns=[column])[column]).as_py()
