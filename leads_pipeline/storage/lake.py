"""Delta Lake access: open tables, upsert by key in one commit, replace whole tables.

Every write is a single Delta commit (atomic), carries ``leads_pipeline.*`` custom metadata, and is
skipped entirely when it would change nothing, so re-running a sync writes no empty commit.

Concurrent writers (two Dagster instances, a notebook, the CLI) are kept correct by Delta's own
optimistic concurrency, never by Dagster's pools:

- a commit is a put-if-absent of the next log entry (a no-replace rename locally, a conditional
  write on object stores: :func:`lake_storage_options`), so two writers never both commit a version;
- merges read the whole target, so delta-rs rejects one that a concurrent commit added or removed
  rows under; it is then run again from the table's new state (:func:`_retry_on_conflict`);
- appends never conflict with each other in Delta, so the only append, a table's first load
  (:meth:`DeltaLake.append`), commits without any retry: it lands only on the empty version it
  read, and a writer that loses the race merges its rows by key instead;
- overwrites (:meth:`DeltaLake.replace`) likewise commit only on the version they read, and are
  recomputed from the new state otherwise.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable, WriterProperties, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

from leads_pipeline.settings import conditional_put_in_environment
from leads_pipeline.storage.duck import scratch_connection

METADATA_PREFIX = "leads_pipeline."
ACTION = "_action"
UPSERT = "upsert"
DELETE = "delete"

_COMMIT_ATTEMPTS = 8
_RETRY_DELAY_SECONDS = 0.25
_RETRY_DELAY_CAP_SECONDS = 4.0

#: Columns that order two copies of one row from oldest to newest, where a table has them:
#: Notion's edit time, then when the copy was synced. A first load that lost its race keeps, per
#: key, the newest copy by these; so does :meth:`DeltaLake.dedupe`.
NEWEST_ORDER = ("last_edited_time", "synced_at")

#: Storage options a ``s3://`` lake gets unless the user sets ``conditional_put`` (as a storage
#: option or ``AWS_CONDITIONAL_PUT``): every commit is a conditional write (``If-None-Match: *``),
#: so of two writers committing the same version, one fails and retries. deltalake 1.x already does
#: this by default; the explicit option keeps it so if a library default changes.
S3_SAFE_COMMIT_OPTIONS = {"conditional_put": "etag"}
_CONDITIONAL_PUT_KEYS = {"conditional_put", "aws_conditional_put"}
_S3_SCHEMES = {"s3", "s3a"}

#: Row groups of at most 64k rows: a reader of raw pages (a megabyte of JSON per 600 pages) then
#: holds about 100 MB at a time instead of a whole file's worth.
WRITER_PROPERTIES = WriterProperties(max_row_group_size=65_536, compression="ZSTD")
#: Files of about 64 MB: a writer buffers a file's rows before it closes it.
TARGET_FILE_SIZE = 64 * 1024 * 1024
#: A checkpoint every this many commits (Delta's default is 100): opening a table then reads one
#: Parquet checkpoint and at most nine commits, where it read every commit since the table began
#: (a sync opens each table several times; 14 ms against 5 ms at 30 commits).
CHECKPOINT_EVERY = 10
#: Delta operations that change no row of an existing table (compaction, vacuum, properties).
ROW_KEEPING_OPERATIONS = frozenset(
    {
        "OPTIMIZE",
        "VACUUM START",
        "VACUUM END",
        "SET TBLPROPERTIES",
        "UPGRADE PROTOCOL",
        "ADD CONSTRAINT",
        "DROP CONSTRAINT",
        "ADD FEATURE",
        "UPDATE TABLE METADATA",
    }
)


@dataclass(frozen=True)
class WriteOutcome:
    """What one write did to a table."""

    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    version: int | None = None
    committed: bool = False


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class ConcurrentFirstLoadError(RuntimeError):
    """A first load lost its race: another writer committed to the table since it was read empty."""


def lake_storage_options(root: str, options: Mapping[str, str] | None) -> dict[str, str] | None:
    """The storage options the lake uses: ``options`` plus safe-commit defaults for S3.

    Local paths commit by a rename that never replaces an existing log entry, and Google Cloud
    Storage and Azure by their native create-if-absent writes. On S3 deltalake 1.x commits with a
    conditional write (``If-None-Match: *``, supported by AWS S3 since 2024, MinIO, Cloudflare R2
    and moto); :data:`S3_SAFE_COMMIT_OPTIONS` requests it explicitly. A store without conditional
    writes then fails every commit instead of letting two writers overwrite each other's.

    Args:
        root: The lake root (local path or URI).
        options: The user's storage options (they win over the defaults).
    """
    merged = dict(options or {})
    if urlsplit(root).scheme.lower() in _S3_SCHEMES:
        given = {k.lower() for k in merged}
        if not given & _CONDITIONAL_PUT_KEYS and not conditional_put_in_environment():
            merged.update(S3_SAFE_COMMIT_OPTIONS)
    return merged or None


def commit_properties(
    metadata: Mapping[str, str] | None, *, retry: bool = True
) -> CommitProperties:
    """Commit properties carrying ``metadata``; ``retry=False`` commits only on the version read.

    delta-rs retries a commit on the next version when its conflict checker finds no conflict; it
    finds none between two appends, nor between two overwrites of a table without files, nor (in
    deltalake 1.6) between two creations of one table. Such commits are made without retry.
    """
    return CommitProperties(
        custom_metadata={METADATA_PREFIX + k: str(v) for k, v in (metadata or {}).items()},
        max_commit_retries=None if retry else 0,
    )


def _retry_on_conflict(operation):
    """Runs ``operation`` again when a concurrent writer committed first (optimistic concurrency).

    ``operation`` must read the table afresh each time: a retry redoes the whole read-modify-write.
    The delay grows, capped, with jitter so that two writers do not retry in lockstep.
    """
    for attempt in range(1, _COMMIT_ATTEMPTS + 1):
        try:
            return operation()
        except CommitFailedError:
            if attempt == _COMMIT_ATTEMPTS:
                raise
            delay = min(_RETRY_DELAY_SECONDS * 2 ** (attempt - 1), _RETRY_DELAY_CAP_SECONDS)
            time.sleep(delay * random.uniform(0.5, 1.5))
    raise AssertionError("unreachable")  # pragma: no cover


def _newer_sql(order_by: Sequence[str]) -> str:
    """SQL true when source row ``s`` is newer than target row ``t`` (lexicographic, NULL oldest)."""
    condition = "FALSE"
    for column in reversed(order_by):
        s, t = f"s.{_ident(column)}", f"t.{_ident(column)}"
        condition = (
            f"(({s} IS NOT NULL AND {t} IS NULL) OR {s} > {t}"
            f" OR (({s} IS NOT DISTINCT FROM {t}) AND {condition}))"
        )
    return condition


def _is_empty(table: DeltaTable) -> bool:
    return table.to_pyarrow_dataset().count_rows() == 0


class _Recorder:
    """Passes batches through, counting them and copying them to a :class:`_Spill` if given.

    A plain iterator (no ``close``): whatever consumes it cannot end the source early, so what was
    not consumed can still be drained into the spill.
    """

    def __init__(
        self, source: Iterable[pa.RecordBatch], writer: ipc.RecordBatchFileWriter | None = None
    ):
        self._source = iter(source)
        self._writer = writer
        self.rows = 0

    def __iter__(self) -> _Recorder:
        return self

    def __next__(self) -> pa.RecordBatch:
        batch = next(self._source)
        if self._writer is not None:
            self._writer.write_batch(batch)
        self.rows += batch.num_rows
        return batch

    def drain(self) -> None:
        """Consumes (and copies) every batch not consumed yet."""
        for _ in self:
            pass


class _Spill:
    """A copy of a one-shot stream of batches on local disk, to read it again (a lost first load).

    Use as a context manager; the file is removed on exit.
    """

    def __init__(self, schema: pa.Schema):
        self.schema = schema
        self._tmp = tempfile.TemporaryDirectory(prefix="leads_lake_spill_")
        self._path = Path(self._tmp.name) / "rows.arrow"
        self._sink = pa.OSFile(str(self._path), "wb")
        options = ipc.IpcWriteOptions(compression="zstd")
        self._writer = ipc.new_file(self._sink, schema, options=options)
        self._open = True

    def __enter__(self) -> _Spill:
        return self

    def __exit__(self, *exc) -> None:
        self._close_writer()
        self._tmp.cleanup()

    def record(self, batches: Iterable[pa.RecordBatch]) -> _Recorder:
        """An iterator over ``batches`` that copies each one to the file as it passes."""
        return _Recorder(batches, self._writer)

    def _close_writer(self) -> None:
        if self._open:
            self._writer.close()
            self._sink.close()
            self._open = False

    def reader(self) -> pa.RecordBatchReader:
        """A new stream over everything recorded (call once recording is over)."""
        self._close_writer()

        def batches() -> Iterator[pa.RecordBatch]:
            with pa.OSFile(str(self._path)) as source:
                reader = ipc.open_file(source)
                for index in range(reader.num_record_batches):
                    yield reader.get_batch(index)

        return pa.RecordBatchReader.from_batches(self.schema, batches())


class DeltaLake:
    """A lake root holding the pipeline's Delta tables.

    Args:
        root: Local path or object-store URI (``s3://``, ``gs://``, ``az://``).
        storage_options: Options passed to deltalake's object store (credentials, endpoint).
    """

    def __init__(self, root: str, storage_options: Mapping[str, str] | None = None):
        self.root = root.rstrip("/")
        self.storage_options = lake_storage_options(self.root, storage_options)

    def table_uri(self, name: str) -> str:
        """The URI of table ``name`` under the lake root."""
        return f"{self.root}/{name}"

    def load(self, name: str, version: int | str | None = None) -> DeltaTable | None:
        """Opens a table, at a version (int) or timestamp (ISO string) if given; None if absent."""
        try:
            table = DeltaTable(self.table_uri(name), storage_options=self.storage_options)
        except TableNotFoundError:
            return None
        if version is not None:
            table.load_as_version(version)
        return table

    def read(self, name: str, columns: list[str] | None = None) -> pa.Table | None:
        """Reads a table into Arrow (optionally only some columns); None if it does not exist."""
        table = self.load(name)
        if table is None:
            return None
        return table.to_pyarrow_dataset().to_table(columns=columns)

    def commit_value(self, name: str, key: str, search: int = 200) -> str | None:
        """The value of custom metadata ``key`` in the newest commit that carries it.

        Args:
            name: Table name.
            key: Key without the ``leads_pipeline.`` prefix.
            search: How many recent commits to look through.
        """
        table = self.load(name)
        commit = None if table is None else newest_commit_with(table, key, search)
        return None if commit is None else commit[METADATA_PREFIX + key]

    def ensure(
        self,
        name: str,
        schema: pa.Schema,
        metadata: Mapping[str, str] | None = None,
        configuration: Mapping[str, str] | None = None,
    ):
        """Creates the table with ``schema`` (and Delta ``configuration``) if it does not exist.

        Of two writers creating it at once, one creates it and the other finds it created.
        """
        if self.load(name) is not None:
            return
        try:
            DeltaTable.create(
                self.table_uri(name),
                schema,
                mode="ignore",
                name=name,
                configuration=dict(configuration) if configuration else None,
                storage_options=self.storage_options,
                # Without retry: delta-rs would otherwise commit a second creation on version 1.
                commit_properties=commit_properties(metadata, retry=False),
            )
        except DeltaError:  # a CommitFailedError when the other writer's creation came first
            if self.load(name) is None:
                raise

    def changes(
        self, name: str, after_version: int, up_to_version: int, columns: list[str]
    ) -> pa.Table | None:
        """Rows inserted or updated in versions ``after_version + 1 .. up_to_version``.

        Reads Delta's change data feed, so only the changed rows are read, never the whole table.
        When a row changed several times, only its latest state is returned.

        Returns:
            The rows, or None when the feed cannot answer (not enabled, or vacuumed away).
        """
        table = self.load(name)
        if table is None:
            return None
        table_schema = pa.schema(table.schema().to_arrow())
        if after_version >= up_to_version:
            return pa.schema([table_schema.field(c) for c in columns]).empty_table()
        try:
            feed = table.load_cdf(
                starting_version=after_version + 1,
                ending_version=up_to_version,
                columns=[*columns, "_change_type", "_commit_version"],
            )
            rows = pa.table(feed.read_all())
        except Exception:  # the feed is an optimisation: any failure means "read it all"
            return None
        wanted = pa.schema(
            [table_schema.field(c) for c in columns]
            + [pa.field("_change_type", pa.string()), pa.field("_commit_version", pa.int64())]
        )
        rows = rows.select(wanted.names).cast(wanted)  # the feed may use string views
        kept = rows.filter(pc.is_in(rows["_change_type"], pa.array(["insert", "update_postimage"])))
        key = columns[0]
        latest = kept.group_by(key).aggregate([("_commit_version", "max")])
        newest = kept.join(
            latest,
            keys=[key, "_commit_version"],
            right_keys=[key, "_commit_version_max"],
            join_type="inner",
        )
        return newest.select(columns)

    def upsert(
        self,
        name: str,
        source: pa.Table,
        key: str,
        *,
        metadata: Mapping[str, str] | None = None,
        ignore_in_comparison: Iterable[str] = (),
        delete_updates: Mapping[str, str] | None = None,
        also_update_when: str | None = None,
        delete_when: str | None = None,
        configuration: Mapping[str, str] | None = None,
    ) -> WriteOutcome:
        """Merges ``source`` into table ``name`` by ``key`` in one commit.

        ``source`` has the table's columns plus an ``_action`` column: ``"upsert"`` rows are
        inserted when new and updated when any compared column differs; ``"delete"`` rows delete
        the matching row, or, when ``delete_updates`` is given, update it with those SQL
        expressions instead (a soft delete). New columns in ``source`` are added to the table
        (schema evolution). Nothing is committed when nothing would change.

        Args:
            name: Table name; created from ``source``'s schema if missing.
            source: Rows to merge.
            key: Column identifying a row.
            metadata: Custom commit metadata.
            ignore_in_comparison: Columns whose change alone does not update a row.
            delete_updates: Column → SQL expression for soft deletes.
            also_update_when: Extra SQL condition (``s``/``t`` aliases) that makes a row differ.
            delete_when: Extra SQL condition a ``"delete"`` row must meet to act.
            configuration: Delta table configuration used if the table is created.

        Returns:
            Counts of inserted, updated and deleted rows, and the new version if a commit was made.
        """
        data_schema = source.schema.remove(source.schema.get_field_index(ACTION))
        self.ensure(name, data_schema, metadata, configuration)
        if source.num_rows == 0:
            return WriteOutcome(version=self.load(name).version())
        ignored = set(ignore_in_comparison) | {key, ACTION}

        def merge() -> WriteOutcome:
            table = self.load(name)
            target_columns = set(table.schema().to_arrow().names)
            differs = (
                " OR ".join(
                    f"(s.{_ident(c)} IS DISTINCT FROM t.{_ident(c)})"
                    if c in target_columns
                    else f"(s.{_ident(c)} IS NOT NULL)"
                    for c in source.column_names
                    if c not in ignored
                )
                or "FALSE"
            )
            if also_update_when:
                differs = f"{differs} OR ({also_update_when})"
            on_delete = f"s.{ACTION} = '{DELETE}'" + (
                f" AND ({delete_when})" if delete_when else ""
            )
            merger = table.merge(
                source,
                writer_properties=WRITER_PROPERTIES,
                predicate=f"s.{_ident(key)} = t.{_ident(key)}",
                source_alias="s",
                target_alias="t",
                merge_schema=True,
                commit_properties=commit_properties(metadata),
            )
            if delete_updates:
                merger = merger.when_matched_update(
                    updates=dict(delete_updates), predicate=on_delete
                )
            else:
                merger = merger.when_matched_delete(predicate=on_delete)
            metrics = (
                merger.when_matched_update_all(
                    predicate=f"s.{ACTION} = '{UPSERT}' AND ({differs})", except_cols=[ACTION]
                )
                .when_not_matched_insert_all(
                    predicate=f"s.{ACTION} = '{UPSERT}'", except_cols=[ACTION]
                )
                .execute()
            )
            inserted = metrics["num_target_rows_inserted"]
            updated = metrics["num_target_rows_updated"]
            deleted = metrics["num_target_rows_deleted"]
            changed = inserted + updated + deleted > 0
            return WriteOutcome(
                inserted=inserted,
                updated=updated,
                deleted=deleted,
                version=self.load(name).version(),
                committed=changed,
            )

        return self._checkpointed(name, _retry_on_conflict(merge))

    def append(
        self,
        name: str,
        schema: pa.Schema,
        batches: Iterable[pa.RecordBatch],
        *,
        key: str | None = None,
        order_by: Sequence[str] | None = None,
        on_conflict: str = "merge",
        metadata: Mapping[str, str] | None = None,
        configuration: Mapping[str, str] | None = None,
    ) -> WriteOutcome:
        """Writes the first rows of an empty table as one streamed commit (creating it if needed).

        A first load is all inserts, so it is streamed into a single append: memory stays bounded
        by a batch. Delta appends never conflict with each other, so this one commits only on the
        empty version it read (no commit retry): if another writer filled the table first, the
        commit fails rather than both landing, and this writer then merges its rows by ``key``
        instead: inserted when new, and replacing a stored row only when newer by ``order_by``
        and different in a column other than ``order_by``'s tie-breakers (``order_by[1:]``).
        Each key then has one row, the newest copy either writer had.

        Args:
            name: Table name.
            schema: Schema of the batches (and of the table if it is created).
            batches: The rows, read once.
            key: Column identifying a row; the first column of ``schema`` by default.
            order_by: Columns ordering two copies of a row from oldest to newest, compared in
                order; by default those of :data:`NEWEST_ORDER` that ``schema`` has. Empty: a
                stored row is never replaced.
            on_conflict: ``"merge"`` as above, or ``"raise"``: raise
                :class:`ConcurrentFirstLoadError` so the caller derives its rows again.
            metadata: Custom commit metadata.
            configuration: Delta table configuration used if the table is created.

        Returns:
            Counts of inserted (and, after a lost race, updated) rows and the new version.

        Raises:
            ConcurrentFirstLoadError: With ``on_conflict="raise"``, when the table is not empty or
                another writer committed to it before this append.
        """
        if on_conflict not in ("merge", "raise"):
            raise ValueError(f"on_conflict must be 'merge' or 'raise', not {on_conflict!r}.")
        key = key or schema.names[0]
        if order_by is None:
            order_by = tuple(c for c in NEWEST_ORDER if c in schema.names)
        self.ensure(name, schema, metadata, configuration)
        table = self.load(name)
        lost = f"{self.table_uri(name)} was written by another writer during this first load."
        if not _is_empty(table):
            if on_conflict == "raise":
                raise ConcurrentFirstLoadError(lost)
            with _Spill(schema) as spill:
                spill.record(batches).drain()
                return self._merge_newest(name, spill, key, order_by, metadata)
        if on_conflict == "raise":
            stream = _Recorder(batches)
            try:
                self._append_on(table, schema, stream, metadata)
            except CommitFailedError as error:
                raise ConcurrentFirstLoadError(lost) from error
            return self._checkpointed(
                name,
                WriteOutcome(
                    inserted=stream.rows, version=self.load(name).version(), committed=True
                ),
            )
        with _Spill(schema) as spill:
            stream = spill.record(batches)
            try:
                self._append_on(table, schema, stream, metadata)
            except CommitFailedError:
                stream.drain()  # the writer may have stopped reading before the end
                return self._merge_newest(name, spill, key, order_by, metadata)
            return self._checkpointed(
                name,
                WriteOutcome(
                    inserted=stream.rows, version=self.load(name).version(), committed=True
                ),
            )

    @staticmethod
    def _append_on(
        table: DeltaTable,
        schema: pa.Schema,
        batches: Iterator[pa.RecordBatch],
        metadata: Mapping[str, str] | None,
    ) -> None:
        """Appends ``batches`` in one commit that must directly follow ``table``'s version."""
        write_deltalake(
            table,  # its loaded version is the commit's read version
            pa.RecordBatchReader.from_batches(schema, batches),
            mode="append",
            writer_properties=WRITER_PROPERTIES,
            target_file_size=TARGET_FILE_SIZE,
            commit_properties=commit_properties(metadata, retry=False),
        )

    def _merge_newest(
        self,
        name: str,
        spill: _Spill,
        key: str,
        order_by: Sequence[str],
        metadata: Mapping[str, str] | None,
    ) -> WriteOutcome:
        """Merges the spilled rows by ``key``: new keys inserted, newer copies (``order_by``) kept."""

        def merge() -> WriteOutcome:
            table = self.load(name)
            merger = table.merge(
                spill.reader(),
                predicate=f"s.{_ident(key)} = t.{_ident(key)}",
                source_alias="s",
                target_alias="t",
                merge_schema=True,
                writer_properties=WRITER_PROPERTIES,
                commit_properties=commit_properties(metadata),
            )
            if order_by:
                # Newer, and not only by a tie-breaker: a copy that differs from the stored one
                # by its synced_at alone changes nothing (and commits nothing).
                compared = [c for c in spill.schema.names if c not in (key, *order_by[1:])]
                differs = " OR ".join(
                    f"(s.{_ident(c)} IS DISTINCT FROM t.{_ident(c)})" for c in compared
                )
                merger = merger.when_matched_update_all(
                    predicate=f"({_newer_sql(order_by)}) AND ({differs or 'FALSE'})"
                )
            metrics = merger.when_not_matched_insert_all().execute()
            inserted = metrics["num_target_rows_inserted"]
            updated = metrics["num_target_rows_updated"]
            return WriteOutcome(
                inserted=inserted,
                updated=updated,
                version=self.load(name).version(),
                committed=inserted + updated > 0,
            )

        return self._checkpointed(name, _retry_on_conflict(merge))

    def dedupe(
        self,
        name: str,
        key: str,
        order_by: Sequence[str] = NEWEST_ORDER,
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> WriteOutcome:
        """Keeps one row per ``key``, the newest by ``order_by``, in one commit (none if unique).

        Repairs a table holding several rows for one key (two first loads at once by a version
        before this one). Only the rows of repeated keys are read in full and rewritten: one merge
        deletes every copy and inserts the kept one. Ties keep any one of the equal copies.

        Args:
            name: Table name.
            key: Column that must be unique.
            order_by: Columns ordering copies from oldest to newest, compared in order; NULL is
                oldest.
            metadata: Custom commit metadata.

        Returns:
            ``deleted``: rows removed (copies beyond the kept one); the version, committed or not.

        Raises:
            ValueError: If ``key`` or a column of ``order_by`` is not a column of the table.
        """

        def repair() -> WriteOutcome:
            table = self.load(name)
            if table is None:
                return WriteOutcome()
            names = pa.schema(table.schema().to_arrow()).names
            missing = [c for c in (key, *order_by) if c not in names]
            if missing:
                raise ValueError(
                    f"Cannot dedupe {self.table_uri(name)}: no column {', '.join(missing)} "
                    f"(columns: {', '.join(names)})."
                )
            dataset = table.to_pyarrow_dataset()
            counts = pc.value_counts(dataset.to_table(columns=[key])[key].drop_null())
            repeated = pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1))
            if len(repeated) == 0:
                return WriteOutcome(version=table.version())
            copies = dataset.to_table(filter=key_in(key, repeated))
            kept = newest_per_key(copies, key, order_by)
            source = pa.concat_tables(
                [
                    kept.append_column(ACTION, pa.array(["insert"] * kept.num_rows)),
                    kept.append_column(ACTION, pa.array([DELETE] * kept.num_rows)),
                ]
            )
            metrics = (
                table.merge(
                    source,
                    predicate=f"s.{_ident(key)} = t.{_ident(key)} AND s.{ACTION} = '{DELETE}'",
                    source_alias="s",
                    target_alias="t",
                    writer_properties=WRITER_PROPERTIES,
                    commit_properties=commit_properties(metadata),
                )
                .when_matched_delete()
                .when_not_matched_insert_all(
                    predicate=f"s.{ACTION} = 'insert'", except_cols=[ACTION]
                )
                .execute()
            )
            removed = metrics["num_target_rows_deleted"] - metrics["num_target_rows_inserted"]
            return WriteOutcome(deleted=removed, version=self.load(name).version(), committed=True)

        return self._checkpointed(name, _retry_on_conflict(repair))

    def replace(
        self,
        name: str,
        data: pa.Table | Callable[[pa.Table | None], pa.Table],
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> WriteOutcome:
        """Overwrites table ``name`` in one commit, unless its content would stay the same.

        The overwrite commits only on the version it read; when another writer committed first, it
        is redone from the new state.

        Args:
            name: Table name; created if missing.
            data: The new content, or a function computing it from the current content (None when
                the table does not exist), called again after a lost race.
            metadata: Custom commit metadata.
        """

        def overwrite() -> WriteOutcome:
            table = self.load(name)
            current = None if table is None else table.to_pyarrow_dataset().to_table()
            rows = data(current) if callable(data) else data
            if current is not None and _same_rows(current, rows):
                return WriteOutcome(version=table.version())
            if table is None:
                self._create_with(name, rows, metadata)
            else:
                write_deltalake(
                    table,  # its loaded version is the commit's read version
                    rows,
                    mode="overwrite",
                    schema_mode="overwrite",
                    commit_properties=commit_properties(metadata, retry=False),
                )
            return WriteOutcome(
                inserted=rows.num_rows,
                deleted=0 if current is None else current.num_rows,
                version=self.load(name).version(),
                committed=True,
            )

        return self._checkpointed(name, _retry_on_conflict(overwrite))

    def checkpoint_if_due(
        self, name: str, version: int | None, table: DeltaTable | None = None
    ) -> None:
        """Writes a checkpoint of table ``name`` when ``version`` (just committed) is a multiple
        of :data:`CHECKPOINT_EVERY`.

        A checkpoint is no commit: it changes no version and no row. One that cannot be written
        is left for the next multiple (it only makes opening the table faster).

        Args:
            name: Table name.
            version: The version just committed.
            table: The table already loaded at ``version``, if the caller has it.
        """
        if not version or version % CHECKPOINT_EVERY:
            return
        try:
            if table is None or table.version() != version:
                table = self.load(name)
            if table is not None:
                table.create_checkpoint()
        except (DeltaError, OSError):
            pass

    def _checkpointed(self, name: str, outcome: WriteOutcome) -> WriteOutcome:
        if outcome.committed:
            self.checkpoint_if_due(name, outcome.version)
        return outcome

    def _create_with(self, name: str, rows: pa.Table, metadata: Mapping[str, str] | None) -> None:
        """Creates table ``name`` holding ``rows``; a conflict if another writer created it first."""
        try:
            write_deltalake(
                self.table_uri(name),
                rows,
                mode="error",
                storage_options=self.storage_options,
                commit_properties=commit_properties(metadata, retry=False),
            )
        except CommitFailedError:
            raise
        except DeltaError as error:
            if self.load(name) is None:
                raise
            raise CommitFailedError(f"{self.table_uri(name)} was created concurrently.") from error


def newest_commit_with(table: DeltaTable, key: str, search: int = 200) -> dict | None:
    """The newest of ``table``'s last ``search`` commits whose custom metadata has ``key``.

    The newest commits usually carry it: 10 of them are read first (each is one file of the log,
    a request on an object store), then the rest of the search.

    Args:
        table: The table.
        key: Key without the ``leads_pipeline.`` prefix.
        search: How many recent commits to look through.
    """
    for limit in dict.fromkeys((min(10, search), search)):
        for commit in table.history(limit):
            if commit.get(METADATA_PREFIX + key) is not None:
                return commit
    return None


def first_rows(table: DeltaTable, count: int, *, exclude: Sequence[str] = ()) -> pa.Table:
    """Up to ``count`` rows of an unpartitioned ``table``, from its first files, for a preview.

    A dataset's ``head()`` decodes whole row groups (64k rows) for ten rows; a Parquet file read
    batch by batch decodes only its first pages. Columns a file lacks (added since) read NULL.

    Args:
        table: The table, at the version to preview.
        count: Rows wanted.
        exclude: Columns left out (wide ones a preview does not show).
    """
    dataset = table.to_pyarrow_dataset()
    schema = pa.schema([f for f in dataset.schema if f.name not in exclude])
    parts: list[pa.Table] = []
    found = 0
    for fragment in dataset.get_fragments():
        if found >= count:
            break
        with fragment.filesystem.open_input_file(fragment.path) as source:
            file = pq.ParquetFile(source, pre_buffer=False)
            names = [n for n in schema.names if n in file.schema_arrow.names]
            batch = next(
                file.iter_batches(batch_size=count - found, columns=names, use_threads=False), None
            )
        if batch is None or batch.num_rows == 0:
            continue
        rows = pa.Table.from_batches([batch])
        arrays = [
            rows[f.name].cast(f.type) if f.name in names else pa.nulls(rows.num_rows, f.type)
            for f in schema
        ]
        parts.append(pa.Table.from_arrays(arrays, schema=schema))
        found += rows.num_rows
    return pa.concat_tables(parts) if parts else schema.empty_table()


def key_in(column: str, values: pa.Array | pa.ChunkedArray) -> pc.Expression:
    """A dataset filter: the string ``column`` is one of ``values``.

    The column is compared cast to string: delta-rs writes strings as ``string_view`` in the files
    of merges and compactions, and Arrow cannot compare those (nor their statistics) with plain
    strings.
    """
    plain = pc.cast(values, pa.string())
    if isinstance(plain, pa.ChunkedArray):
        plain = plain.combine_chunks()
    return pc.field(column).cast(pa.string()).isin(plain)


def newest_per_key(rows: pa.Table, key: str, order_by: Sequence[str] = NEWEST_ORDER) -> pa.Table:
    """One row per ``key`` of ``rows``: the newest by ``order_by`` (compared in order, NULL oldest).

    Ties keep any one of the equal rows.
    """
    order = ", ".join(f"{_ident(c)} DESC NULLS LAST" for c in order_by) or "1"
    con = scratch_connection()
    try:
        con.register("copies", rows)
        kept = con.sql(
            f"""
            SELECT * EXCLUDE (_rank) FROM (
                SELECT *, row_number() OVER (PARTITION BY {_ident(key)} ORDER BY {order}) AS _rank
                FROM copies
            ) WHERE _rank = 1
            """
        ).to_arrow_table()
    finally:
        con.close()
    return kept.cast(rows.schema)


def _same_rows(left: pa.Table, right: pa.Table) -> bool:
    if left.schema.names != right.schema.names or left.num_rows != right.num_rows:
        return False
    if left.num_rows == 0:
        return True
    keys = [(name, "ascending") for name in left.schema.names]
    try:
        return left.sort_by(keys).equals(right.cast(left.schema).sort_by(keys))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
