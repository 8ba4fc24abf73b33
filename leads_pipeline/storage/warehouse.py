"""The DuckDB warehouse: event counts computed over the Delta ``leads`` table, published atomically.

Writers never touch the live database file: they copy it, replace their tables inside one
transaction, then atomically rename the copy over the original. Readers open the file read-only
and keep a consistent snapshot for as long as they hold it; they never block a writer, and a
writer never leaves a half-written table for them to see. Writers are serialised by a lock file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import duckdb
import pyarrow as pa

from leads_pipeline.storage.duck import scratch_connection
from leads_pipeline.tables import EVENT_COLUMNS, LINEAGE_TABLE, Grain
from leads_pipeline.tables import grain as grain_named

#: The command that builds every warehouse table (named in "not built yet" messages).
BUILD_COMMAND = "dg launch --job sync_leads"


class WarehouseNotBuiltError(RuntimeError):
    """The warehouse file, or a table in it, does not exist yet."""


class TableNotBuiltError(WarehouseNotBuiltError):
    """The warehouse file exists but not this table in it (yet)."""


def zero_filled_sql(grain: Grain, relation: str, columns: Sequence[str]) -> str:
    """SQL giving one row per period of ``grain``, with zeros where ``relation`` has none.

    Any family of per-period tables can use it: ``relation`` (a table, view or CTE) holds a
    ``period_start DATE`` column (the first day of a period of ``grain``) and ``columns``. The
    result has the grain's label column, its start column, then ``columns`` as ``BIGINT``, for
    every period from the first to the last ``period_start`` of ``relation``, oldest first.

    Args:
        grain: The time grain of the periods.
        relation: Name of the relation holding ``period_start`` and ``columns``.
        columns: The columns to carry, zero where a period is missing from ``relation``.
    """
    periods = (
        f"SELECT unnest(generate_series(min(period_start), max(period_start), "
        f"INTERVAL {grain.step}))::DATE AS period_start FROM {relation}"
    )
    values = "".join(f", coalesce(a.{c}, 0)::BIGINT AS {c}" for c in columns)
    return f"""
        SELECT {grain.label_sql("p.period_start")} AS {grain.label},
               p.period_start AS {grain.start_column}{values}
        FROM ({periods}) p LEFT JOIN {relation} a USING (period_start)
        ORDER BY p.period_start
    """


def event_counts_sql(relation: str, grain: Grain) -> str:
    """SQL counting each event column's non-null dates per period of ``grain``.

    Every period between the first and the last event appears, with zeros where nothing happened.

    Args:
        relation: Name of the relation holding the ``leads`` columns.
        grain: The time grain (e.g. :data:`leads_pipeline.tables.WEEK`).
    """
    # Counting per distinct day first reduces a million dates to a few hundred before truncating.
    per_day = "\n            UNION ALL\n            ".join(
        f"SELECT '{c}' AS event, {c} AS day, count(*) AS n FROM {relation} "
        f"WHERE {c} IS NOT NULL GROUP BY {c}"
        for c in EVENT_COLUMNS
    )
    counts = ",\n               ".join(
        f"sum(n) FILTER (WHERE event = '{c}') AS {c}" for c in EVENT_COLUMNS
    )
    return f"""
        WITH per_day AS (
            {per_day}
        ),
        counted AS (
            SELECT {grain.start_sql("day")} AS period_start,
               {counts}
            FROM per_day GROUP BY 1
        )
        {zero_filled_sql(grain, "counted", EVENT_COLUMNS)}
    """


def compute_event_counts(leads: pa.dataset.Dataset | pa.Table, grain: Grain | str) -> pa.Table:
    """Runs :func:`event_counts_sql` over an Arrow dataset or table of ``leads``.

    Args:
        leads: The ``leads`` rows (at least the event columns).
        grain: A :class:`~leads_pipeline.tables.Grain` or its name (``"week"``).
    """
    if isinstance(grain, str):
        grain = grain_named(grain)
    con = scratch_connection(dedicated=True)
    try:
        con.register("leads", leads)
        return con.sql(event_counts_sql("leads", grain)).to_arrow_table()
    finally:
        con.close()


class Warehouse:
    """The DuckDB file holding the analytics tables.

    Args:
        path: Path of the DuckDB database file.
    """

    def __init__(self, path: str | os.PathLike, *, keep_reader_open: bool = False):
        """
        Args:
            path: Path of the DuckDB database file.
            keep_reader_open: Reuse one read-only connection across :meth:`read` calls while the
                file stays the same one (writers replace it: a new file means a new connection).
                Opening costs tens of milliseconds; call :meth:`close` when done.
        """
        self.path = Path(path)
        self.keep_reader_open = keep_reader_open
        self._reader: tuple[tuple, duckdb.DuckDBPyConnection] | None = None
        self._reader_lock = threading.Lock()

    def close(self) -> None:
        """Closes the read-only connection kept open, if any."""
        with self._reader_lock:
            if self._reader is not None:
                self._reader[1].close()
                self._reader = None

    @contextlib.contextmanager
    def _writer_lock(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(f"{self.path}.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def publish(
        self,
        tables: Mapping[str, pa.Table],
        lineage: Mapping[str, str] | None = None,
        charts: Mapping[str, bytes | None] | None = None,
    ) -> None:
        """Replaces ``tables`` (``schema.name`` → rows) in one transaction, atomically for readers.

        Args:
            tables: The tables to create or replace, keyed by qualified name.
            lineage: Per table, a string naming what it was computed from (see :meth:`lineage`).
                A table of ``tables`` without one loses the lineage it had: its new rows were
                computed from something unknown.
            charts: Per table with a lineage, a rendered chart of its rows (see :meth:`chart`).
        """
        with self._writer_lock():
            # Holding the lock, any staging file left is from a writer that was killed.
            for leftover in self.path.parent.glob(f".{self.path.name}.*.tmp"):
                leftover.unlink(missing_ok=True)
            staging = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.tmp")
            try:
                if self.path.exists():
                    shutil.copyfile(self.path, staging)
                con = duckdb.connect(str(staging))
                try:
                    con.execute("BEGIN TRANSACTION")
                    for name, data in tables.items():
                        schema = name.split(".")[0]
                        con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
                        con.register("incoming", data)
                        con.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM incoming")
                        con.unregister("incoming")
                    unvouched = [name for name in tables if name not in (lineage or {})]
                    if unvouched and self._has_lineage_table(con):
                        # Rows replaced without a lineage were computed from something unknown.
                        con.execute(
                            f"DELETE FROM {LINEAGE_TABLE} WHERE table_name IN "
                            f"({', '.join('?' for _ in unvouched)})",
                            unvouched,
                        )
                    if lineage:
                        con.execute(
                            f"CREATE TABLE IF NOT EXISTS {LINEAGE_TABLE} "
                            "(table_name VARCHAR PRIMARY KEY, computed_from VARCHAR)"
                        )
                        con.execute(
                            f"ALTER TABLE {LINEAGE_TABLE} ADD COLUMN IF NOT EXISTS chart BLOB"
                        )
                    for name, origin in (lineage or {}).items():
                        con.execute(
                            f"INSERT OR REPLACE INTO {LINEAGE_TABLE} "
                            "(table_name, computed_from, chart) VALUES (?, ?, ?)",
                            [name, origin, (charts or {}).get(name)],
                        )
                    con.execute("COMMIT")
                    con.execute("CHECKPOINT")
                finally:
                    con.close()
                os.replace(staging, self.path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    staging.unlink()

    def require_table(self, table: str, order_by: str | None = None) -> pa.Table:
        """All rows of ``table`` (``schema.name``), from the current snapshot.

        Args:
            table: Qualified name of the table.
            order_by: SQL ``ORDER BY`` expression (e.g. a column name); stored order if None.

        Raises:
            WarehouseNotBuiltError: If the warehouse file does not exist yet.
            TableNotBuiltError: If the file exists but holds no ``table`` yet.
        """
        order = f" ORDER BY {order_by}" if order_by else ""
        with self.read() as con:
            try:
                return con.sql(f"SELECT * FROM {table}{order}").to_arrow_table()
            except duckdb.CatalogException as error:
                raise TableNotBuiltError(
                    f"The table {table} is not in the warehouse {self.path} yet. Build it "
                    f"with: {BUILD_COMMAND}"
                ) from error

    def read_table(self, table: str, order_by: str | None = None) -> pa.Table | None:
        """All rows of ``table`` as :meth:`require_table` reads them; None if it is not built."""
        try:
            return self.require_table(table, order_by)
        except WarehouseNotBuiltError:
            return None

    def holds(self, table: str, rows: pa.Table) -> bool:
        """Whether ``table`` is published with exactly ``rows`` (same columns, types, values)."""
        current = self.read_table(table)
        return current is not None and current.schema == rows.schema and current.equals(rows)

    def publish_changed(self, table: str, rows: pa.Table) -> bool:
        """Publishes ``rows`` as ``table`` unless it already holds exactly them.

        An unchanged table (a sync that changed nothing) then costs no new copy of the file.

        Returns:
            Whether ``table`` was published.
        """
        if self.holds(table, rows):
            return False
        self.publish({table: rows})
        return True

    def published_from(
        self, table: str, origin: str, order_by: str | None = None
    ) -> pa.Table | None:
        """The rows of ``table`` if it was last published from ``origin``; None otherwise.

        ``origin`` is the lineage given to :meth:`publish` (what the table was computed from):
        when it is unchanged, the published rows can be reused instead of recomputed.

        Args:
            table: Qualified name of the table.
            origin: What the caller would compute the table from now.
            order_by: As for :meth:`require_table`.
        """
        if self.lineage(table) != origin:
            return None
        return self.read_table(table, order_by)

    def lineage(self, table: str) -> str | None:
        """What ``table`` was last computed from, as given to :meth:`publish`; None if unknown."""
        return self._lineage_row(table, "computed_from")

    def chart(self, table: str) -> bytes | None:
        """The chart published with ``table`` (e.g. a PNG), drawn from its current rows; or None."""
        return self._lineage_row(table, "chart")

    @staticmethod
    def _has_lineage_table(con: duckdb.DuckDBPyConnection) -> bool:
        schema, name = LINEAGE_TABLE.split(".")
        found = con.execute(
            "SELECT count(*) FROM information_schema.tables "
            "WHERE table_schema = ? AND table_name = ?",
            [schema, name],
        ).fetchone()
        return bool(found and found[0])

    def _lineage_row(self, table: str, column: str):
        if not self.path.exists():
            return None
        try:
            with self.read() as con:
                rows = con.execute(
                    f"SELECT {column} FROM {LINEAGE_TABLE} WHERE table_name = ?", [table]
                ).fetchall()
        except (duckdb.CatalogException, duckdb.BinderException):
            return None
        return rows[0][0] if rows else None

    @contextlib.contextmanager
    def read(self, wait_seconds: float = 5.0) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection on the current snapshot of the warehouse.

        Args:
            wait_seconds: How long to retry when the file is locked by a read-write connection.

        Raises:
            WarehouseNotBuiltError: If the file does not exist.
            duckdb.IOException: If another process holds the file in read-write mode past the wait.
        """
        if not self.path.exists():
            raise WarehouseNotBuiltError(
                f"The warehouse {self.path} does not exist yet. Build it with: {BUILD_COMMAND}"
            )
        if self.keep_reader_open:
            with self._reader_lock:
                # Identity taken before connecting: a file replaced in between is reopened later.
                identity = _file_identity(self.path)
                if self._reader is None or self._reader[0] != identity:
                    if self._reader is not None:
                        self._reader[1].close()
                    self._reader = (identity, self._connect(wait_seconds))
                cursor = self._reader[1].cursor()
            try:
                yield cursor
            finally:
                cursor.close()
            return
        con = self._connect(wait_seconds)
        try:
            yield con
        finally:
            con.close()

    def _connect(self, wait_seconds: float) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                con = duckdb.connect(str(self.path), read_only=True)
                break
            except duckdb.IOException as error:
                if time.monotonic() >= deadline:
                    raise duckdb.IOException(
                        f"The warehouse {self.path} is locked by another process that opened it "
                        f"read-write ({error}). Close that connection, or open it with "
                        "read_only=True."
                    ) from error
                time.sleep(0.1)
        return con


def _file_identity(path: Path) -> tuple:
    stat = path.stat()
    wal = path.with_name(path.name + ".wal")
    wal_stat = wal.stat() if wal.exists() else None
    return (
        stat.st_dev,
        stat.st_ino,
        stat.st_size,
        stat.st_mtime_ns,
        wal_stat and (wal_stat.st_size, wal_stat.st_mtime_ns),
    )
