"""``LeadsAnalytics``: the serving layer's resource (see the package's docstring)."""

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
from pydantic import BaseModel, Field

from leads_pipeline.serving.arguments import as_moment, date_bounds, in_range, parse_lead_id
from leads_pipeline.serving.errors import HistoryRangeError, LeadNotFoundError, PipelineNotRunError
from leads_pipeline.serving.history_index import VersionsByLead, VersionsByTime
from leads_pipeline.serving.models import (
    API_EVENT_FIELDS,
    EVENT_COUNT_MODELS,
    STATUS_ENTRY_MODELS,
    VERSION_FIELDS,
    CohortConversion,
    IngestionStatus,
    LeadVersion,
    MonthlyEventCount,
    QualityIssue,
    StatusDuration,
    WeeklyEventCount,
)
from leads_pipeline.settings import (
    DEFAULT_LAKE_URI,
    DEFAULT_WAREHOUSE_PATH,
    Settings,
    load_settings,
)
from leads_pipeline.storage.duck import scratch_connection
from leads_pipeline.storage.lake import DeltaLake, key_in
from leads_pipeline.storage.warehouse import (
    BUILD_COMMAND,
    TableNotBuiltError,
    Warehouse,
    WarehouseNotBuiltError,
    compute_event_counts,
    event_counts_sql,
)
from leads_pipeline.tables import (
    COHORTS_TABLE,
    DURATIONS_TABLE,
    EVENT_COUNTS,
    HISTORY_TABLE,
    ISSUES_TABLE,
    LEADS_TABLE,
    RAW_TABLE,
    STATUS_ENTRIES,
    Grain,
    grain,
)

_CACHE_MAX_ENTRIES = 32
_MOMENT_CACHE_ENTRIES = 64

_cache: dict[tuple[str, str], tuple[tuple, tuple]] = {}
_cache_lock = threading.Lock()
_history_cache: dict[tuple[str, str], Any] = {}
_moment_counts: dict[tuple[str, int, str, datetime], pa.Table] = {}


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

    def _read_table(
        self, table: str, build: Callable[[dict], Any], order_by: str | None = None
    ) -> tuple:
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
            as_of: Answer for the leads as they were at a moment (a ``datetime``, naive = UTC;
                a ``date``, its midnight UTC; or an ISO string of either), computed from
                ``lead_history`` (any moment since the history began, whatever the vacuum
                retention); or as of a Delta version (int) of ``leads`` (time travel).

        Returns:
            One :data:`EVENT_COUNT_MODELS` ``[by]`` per period; ``model_dump(mode="json")`` is
            the old API's JSON object (the period's label, then the five counts).

        Raises:
            PipelineNotRunError: If the counts (or, for a moment ``as_of``, ``lead_history``)
                have not been built yet.
            HistoryRangeError: If ``as_of`` is a moment before the history begins (the message
                says when it begins).
            ValueError: If ``by`` is no grain, ``start`` is after ``end``, a string is not an
                ISO date, or ``leads`` has no Delta version ``as_of``.
        """
        of = grain(by)
        start, end = date_bounds(start, end)
        model = EVENT_COUNT_MODELS[of.name]

        def build(row: dict) -> tuple:
            return (
                row[of.start_column],
                model(**{of.label: row[of.label], **{c: row[c] for c in API_EVENT_FIELDS}}),
            )

        if as_of is None:
            rows = self._read_table(of.table(EVENT_COUNTS), build, of.start_column)
        elif isinstance(as_of, int) and not isinstance(as_of, bool):
            rows = tuple(build(row) for row in self._counts_as_of(of, as_of).to_pylist())
        else:
            moment = as_moment(as_of)
            rows = tuple(build(row) for row in self._counts_at(of, moment).to_pylist())
        return in_range(rows, of, start, end)

    def _counts_as_of(self, of: Grain, as_of: int) -> pa.Table:
        """The counts as they were at a Delta version of ``leads`` (time travel)."""
        lake = DeltaLake(self.lake_uri)
        if lake.load(LEADS_TABLE) is None:
            raise self._not_run(f"The table {LEADS_TABLE} in {self.lake_uri}")
        try:
            # Its log entry may outlive its files (vacuumed): reading them fails then.
            leads = lake.load(LEADS_TABLE, version=as_of)
            return compute_event_counts(leads.to_pyarrow_dataset(), of)
        except Exception as error:
            raise ValueError(
                f"as_of={as_of!r}: {LEADS_TABLE} has no such Delta version in its history, or "
                f"its files were vacuumed (older than the vacuum retention; a date or datetime "
                f"as_of answers from {HISTORY_TABLE} instead): {error}"
            ) from error

    def _history(self) -> DeltaTable:
        """The current version of ``lead_history``, or the error saying it is not built."""
        history = DeltaLake(self.lake_uri).load(HISTORY_TABLE)
        if history is None:
            raise self._not_run(f"The table {HISTORY_TABLE} in {self.lake_uri}")
        return history

    def _cached(self, history: DeltaTable, kind: type) -> Any:
        """``kind.build(history)``, reused while ``history``'s Delta version is the same."""
        if not self.cache:
            return kind.build(history)
        key = (history.table_uri, kind.__name__)
        held = _history_cache.get(key)
        if held is None or held.version != history.version():
            held = kind.build(history)
            with _cache_lock:
                _history_cache[key] = held  # one version per table: the previous one is freed
        return held

    def _counts_at(self, of: Grain, moment: datetime) -> pa.Table:
        """The counts over the leads as ``lead_history`` says they were at ``moment``."""
        history = self._history()
        versions = self._cached(history, VersionsByTime)
        if versions.begins is None:
            raise HistoryRangeError(
                f"as_of={moment.isoformat()}: {HISTORY_TABLE} holds no version yet."
            )
        if moment < versions.begins:
            raise HistoryRangeError(
                f"as_of={moment.isoformat()} is before {HISTORY_TABLE} begins: its oldest "
                f"version starts at {versions.begins.isoformat()}; nothing is known of the "
                "leads before."
            )
        key = (history.table_uri, history.version(), of.name, moment)
        counts = _moment_counts.get(key) if self.cache else None
        if counts is None:
            con = scratch_connection()
            try:
                con.register("valid", versions.valid_at(moment))
                counts = con.sql(event_counts_sql("valid", of)).to_arrow_table()
            finally:
                con.close()
            if self.cache:
                with _cache_lock:
                    if len(_moment_counts) >= _MOMENT_CACHE_ENTRIES:
                        _moment_counts.clear()
                    _moment_counts[key] = counts
        return counts

    def history_begins(self) -> datetime | None:
        """The first moment ``counts(as_of=...)`` answers for: the oldest ``valid_from`` of
        ``lead_history`` (None while it holds no version).

        A version starts at its lead's Notion edit time, which may precede the first sync: at a
        moment before a lead's first observed version, the lead is not counted (its state then
        was never observed).

        Raises:
            PipelineNotRunError: If ``lead_history`` has not been built yet.
        """
        return self._cached(self._history(), VersionsByTime).begins

    def lead_history(self, lead_id_or_url: str) -> list[LeadVersion]:
        """Every version of one lead in ``lead_history``, oldest first.

        Args:
            lead_id_or_url: The lead's Notion page id, with or without dashes, or its Notion URL
                (``https://www.notion.so/<title>-<id>``, queries such as ``?v=``/``?p=`` allowed).

        Returns:
            One :class:`LeadVersion` per version: the version fields, then the lead's columns as
            extra fields in ``lead_history``'s order.

        Raises:
            InvalidLeadIdError: If ``lead_id_or_url`` holds no page id.
            LeadNotFoundError: If ``lead_history`` holds no version of the lead.
            PipelineNotRunError: If ``lead_history`` has not been built yet.
        """
        lead_id = parse_lead_id(lead_id_or_url)
        history = self._history()
        if self.cache:
            rows = self._cached(history, VersionsByLead).of(lead_id)
        else:
            found = history.to_pyarrow_dataset().to_table(filter=key_in("id", pa.array([lead_id])))
            rows = found.sort_by("version") if found.num_rows else None
        if rows is None:
            raise LeadNotFoundError(
                f"No lead {lead_id} in {HISTORY_TABLE} at {self.lake_uri} (version "
                f"{history.version()}): the id is not one the pipeline has synced."
            )
        fields = [name for name in VERSION_FIELDS if name in rows.column_names]
        others = [name for name in rows.column_names if name not in fields]
        return [LeadVersion(**row) for row in rows.select([*fields, *others]).to_pylist()]

    def status_entries(
        self, by: str = "week", start: date | str | None = None, end: date | str | None = None
    ) -> list[BaseModel]:
        """How many leads entered each status per period of grain ``by``, oldest first.

        Rows of ``analytics.weekly_status_entries`` / ``monthly_status_entries``: every period
        from the first to the last entry × every status in Notion's order, zeros included.

        Args:
            by: ``"week"`` or ``"month"``.
            start: Keep periods from the one containing this date (inclusive).
            end: Keep periods up to the one containing this date (inclusive).

        Returns:
            One :data:`STATUS_ENTRY_MODELS` ``[by]`` per (period, status).

        Raises:
            PipelineNotRunError: If the table has not been built yet.
            ValueError: If ``by`` is no grain, ``start`` is after ``end`` or a string is no date.
        """
        of = grain(by)
        start, end = date_bounds(start, end)
        model = STATUS_ENTRY_MODELS[of.name]
        names = [n for n in model.model_fields if n != of.label]

        def build(row: dict) -> tuple:
            return row[of.start_column], model(
                **{of.label: row[of.label], **{n: row[n] for n in names}}
            )

        return in_range(self._read_table(of.table(STATUS_ENTRIES), build), of, start, end)

    def status_durations(self) -> list[StatusDuration]:
        """How long leads stay in each status, in Notion's order (``analytics.status_durations``).

        Raises:
            PipelineNotRunError: If the table has not been built yet.
        """
        names = list(StatusDuration.model_fields)
        return list(
            self._read_table(
                DURATIONS_TABLE,
                lambda row: StatusDuration(**{n: row[n] for n in names}),
                "position",
            )
        )

    def cohorts(
        self, start: date | str | None = None, end: date | str | None = None
    ) -> list[CohortConversion]:
        """Per month of first contact, how far that month's leads went, oldest first.

        Args:
            start: Keep months from the one containing this date (inclusive).
            end: Keep months up to the one containing this date (inclusive).

        Raises:
            PipelineNotRunError: If ``analytics.cohort_conversion`` has not been built yet.
            ValueError: If ``start`` is after ``end`` or a string is not an ISO date.
        """
        start, end = date_bounds(start, end)
        of = grain("month")
        names = list(CohortConversion.model_fields)

        def build(row: dict) -> tuple:
            return row[of.start_column], CohortConversion(**{n: row[n] for n in names})

        rows = self._read_table(COHORTS_TABLE, build, of.start_column)
        return in_range(rows, of, start, end)

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
            as_of: Answer for the leads as they were at a moment (a ``datetime``, naive = UTC;
                a ``date``, its midnight UTC; or an ISO string of either), computed from
                ``lead_history`` (any moment since the history began, whatever the vacuum
                retention); or as of a Delta version (int) of ``leads`` (time travel).

        Returns:
            One model per week; ``model_dump(mode="json")`` is the old API's JSON object.

        Raises:
            PipelineNotRunError: If the counts (or ``lead_history``) have not been built yet.
            HistoryRangeError: If ``as_of`` is a moment before the history begins.
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
            as_of: Answer for the leads as they were at a moment (a ``datetime``, naive = UTC;
                a ``date``, its midnight UTC; or an ISO string of either), computed from
                ``lead_history`` (any moment since the history began, whatever the vacuum
                retention); or as of a Delta version (int) of ``leads`` (time travel).

        Returns:
            One model per month; ``model_dump(mode="json")`` is the old API's JSON object.

        Raises:
            PipelineNotRunError: If the counts (or ``lead_history``) have not been built yet.
            HistoryRangeError: If ``as_of`` is a moment before the history begins.
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
