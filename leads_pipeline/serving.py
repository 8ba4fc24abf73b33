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
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
from deltalake import DeltaTable
from pydantic import BaseModel, ConfigDict, Field, create_model

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
    EVENT_COLUMNS,
    EVENT_COUNTS,
    GRAINS,
    HISTORY_TABLE,
    ISSUES_TABLE,
    LEADS_TABLE,
    RAW_TABLE,
    STATUS_ENTRIES,
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


class PipelineNotRunError(WarehouseNotBuiltError):
    """The results asked for have not been materialized yet; the message names the command."""


class InvalidLeadIdError(ValueError):
    """A text that is neither a Notion page id (with or without dashes) nor a page URL."""


class LeadNotFoundError(LookupError):
    """No version of this lead is in ``lead_history``; the message names the id."""


class HistoryRangeError(ValueError):
    """A moment ``lead_history`` cannot answer for: before it begins (the message says when)."""


_NOTION_ID = re.compile(r"([0-9a-fA-F]{32})$")


def parse_lead_id(text: str) -> str:
    """The page id (dashed, lower case) of a page id or a Notion page URL.

    Accepts ``37cf03bc16934b77b9186686475222cc``, its dashed form, and URLs such as
    ``https://www.notion.so/Nicolas-Da-Silva-37cf03bc16934b77b9186686475222cc`` (a workspace
    path, ``?v=``/``?pvs=`` queries and ``#`` fragments are ignored). A database URL with a page
    open on top (``notion.so/<database>?v=<view>&p=<page>``) names the page of ``p``.

    Raises:
        InvalidLeadIdError: If ``text`` holds no page id.
    """
    value = text.strip()
    is_url = "/" in value or "?" in value
    if is_url:
        parts = urlsplit(value if "://" in value else f"https://{value}")
        candidates = parse_qs(parts.query).get("p", [])[:1]
        candidates.append(unquote(parts.path).rstrip("/").rsplit("/", 1)[-1])
    else:
        candidates = [value]
    for candidate in candidates:
        bare = candidate.replace("-", "")
        match = _NOTION_ID.search(bare)
        if match and (is_url or len(bare) == 32):
            hex_id = match[1].lower()
            return f"{hex_id[:8]}-{hex_id[8:12]}-{hex_id[12:16]}-{hex_id[16:20]}-{hex_id[20:]}"
    raise InvalidLeadIdError(
        f"{text!r} is not a Notion page id (32 hexadecimal digits, dashes optional) nor a "
        "Notion page URL (https://www.notion.so/<title>-<id>)."
    )


def _as_moment(value: str | date | datetime, name: str = "as_of") -> datetime:
    """A timezone-aware instant: a naive datetime is UTC, a date its midnight UTC."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = (
                date.fromisoformat(text)
                if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text)
                else datetime.fromisoformat(text)
            )
        except ValueError as error:
            raise ValueError(
                f"{name}={value!r} is not a date or datetime (expected YYYY-MM-DD or "
                "YYYY-MM-DDTHH:MM[:SS][+HH:MM])."
            ) from error
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, date):
        return datetime.combine(value, time(0), UTC)
    raise ValueError(f"{name}={value!r} is not a Delta version (int), a date or a datetime.")


_cache: dict[tuple[str, str], tuple[tuple, tuple]] = {}
_cache_lock = threading.Lock()


#: Rows per compressed batch of the per-lead copy: a lookup decompresses one or two batches.
_ROWS_PER_BATCH = 512
#: The event columns of ``lead_history`` the counts ``as_of`` a moment read, with the bounds.
_MOMENT_COLUMNS = ("valid_from", "valid_to", *EVENT_COLUMNS)
_TS = pa.timestamp("us", tz="UTC")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Results of counts as of a moment kept, at most (each a few hundred rows).
_MOMENT_CACHE_ENTRIES = 64


@dataclass(frozen=True)
class _VersionsByLead:
    """Every row of one Delta version of ``lead_history``, sorted by ``(id, version)``, held as
    zstd-compressed Arrow IPC batches, with where each lead's rows start and how many there are."""

    version: int
    buffer: pa.Buffer
    positions: dict[str, tuple[int, int]]

    @classmethod
    def build(cls, history: DeltaTable) -> _VersionsByLead:
        con = scratch_connection(dedicated=True)
        try:
            con.register("history", history.to_pyarrow_dataset())
            rows = con.sql("SELECT * FROM history ORDER BY id, version").to_arrow_table()
        finally:
            con.close()
        sink = pa.BufferOutputStream()
        options = ipc.IpcWriteOptions(compression="zstd")
        with ipc.new_file(sink, rows.schema, options=options) as writer:
            for batch in rows.to_batches(max_chunksize=_ROWS_PER_BATCH):
                writer.write_batch(batch)
        # Batches of exactly _ROWS_PER_BATCH rows (but the last): row n is in batch n // size.
        counts = pc.value_counts(rows["id"])  # in order of first appearance: sorted
        lengths = counts.field("counts").to_numpy()
        ends = np.cumsum(lengths)
        positions = {
            lead: (int(end - length), int(length))
            for lead, length, end in zip(
                counts.field("values").to_pylist(), lengths, ends, strict=True
            )
        }
        return cls(version=history.version(), buffer=sink.getvalue(), positions=positions)

    def of(self, lead_id: str) -> pa.Table | None:
        """The lead's rows, oldest version first; None if it has none."""
        found = self.positions.get(lead_id)
        if found is None:
            return None
        start, length = found
        first, last = start // _ROWS_PER_BATCH, (start + length - 1) // _ROWS_PER_BATCH
        reader = ipc.open_file(pa.BufferReader(self.buffer))  # cheap; one per call: thread-safe
        batches = [reader.get_batch(i) for i in range(first, last + 1)]
        return pa.Table.from_batches(batches).slice(start - first * _ROWS_PER_BATCH, length)


@dataclass(frozen=True)
class _VersionsByTime:
    """The event columns of the versions of one Delta version of ``lead_history`` (tombstones
    left out), sorted by ``valid_from``, and when the history begins (the oldest ``valid_from``)."""

    version: int
    rows: pa.Table
    starts: np.ndarray
    begins: datetime | None

    @classmethod
    def build(cls, history: DeltaTable) -> _VersionsByTime:
        dataset = history.to_pyarrow_dataset()
        missing = [c for c in (*_MOMENT_COLUMNS, "change") if c not in dataset.schema.names]
        if missing:
            raise ValueError(f"lead_history lacks column(s) {', '.join(missing)}")
        live = pc.field("change").cast(pa.string()) != "deleted"
        rows = dataset.to_table(columns=list(_MOMENT_COLUMNS), filter=live)
        for name in ("valid_from", "valid_to"):
            rows = rows.set_column(rows.schema.get_field_index(name), name, rows[name].cast(_TS))
        rows = rows.sort_by("valid_from").combine_chunks()
        # sort_by puts NULLs last: a version without valid_from is never valid.
        starts = pc.fill_null(rows["valid_from"].cast(pa.int64()), 2**62).to_numpy()
        begins = rows["valid_from"][0].as_py() if rows.num_rows else None
        return cls(version=history.version(), rows=rows, starts=starts, begins=begins)

    def valid_at(self, moment: datetime) -> pa.Table:
        """The versions valid at ``moment``: ``valid_from <= moment < coalesce(valid_to, ∞)``."""
        instant = (moment - _EPOCH) // timedelta(microseconds=1)
        prefix = self.rows.slice(0, int(np.searchsorted(self.starts, instant, side="right")))
        at = pa.scalar(moment, _TS)
        return prefix.filter(pc.fill_null(pc.greater(prefix["valid_to"], at), True))


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


def _bounds(start: date | str | None, end: date | str | None) -> tuple[date | None, date | None]:
    start, end = _as_date(start, "start"), _as_date(end, "end")
    if start is not None and end is not None and start > end:
        raise ValueError(f"start ({start}) is after end ({end}).")
    return start, end


def _in_range(rows: tuple, of: Grain, start: date | None, end: date | None) -> list:
    """The items of ``(period start, item)`` rows whose period contains or follows ``start``
    and contains or precedes ``end``."""
    first = of.period_start(start) if start is not None else None
    return [
        item
        for begins, item in rows
        if (first is None or begins >= first) and (end is None or begins <= end)
    ]


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
        start, end = _bounds(start, end)
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
            moment = _as_moment(as_of)
            rows = tuple(build(row) for row in self._counts_at(of, moment).to_pylist())
        return _in_range(rows, of, start, end)

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
        versions = self._cached(history, _VersionsByTime)
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
        return self._cached(self._history(), _VersionsByTime).begins

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
            rows = self._cached(history, _VersionsByLead).of(lead_id)
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
        start, end = _bounds(start, end)
        model = STATUS_ENTRY_MODELS[of.name]
        names = [n for n in model.model_fields if n != of.label]

        def build(row: dict) -> tuple:
            return row[of.start_column], model(
                **{of.label: row[of.label], **{n: row[n] for n in names}}
            )

        return _in_range(self._read_table(of.table(STATUS_ENTRIES), build), of, start, end)

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
        start, end = _bounds(start, end)
        of = grain("month")
        names = list(CohortConversion.model_fields)

        def build(row: dict) -> tuple:
            return row[of.start_column], CohortConversion(**{n: row[n] for n in names})

        rows = self._read_table(COHORTS_TABLE, build, of.start_column)
        return _in_range(rows, of, start, end)

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
