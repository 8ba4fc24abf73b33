"""Delta Lake access: open tables, upsert by key in one commit, replace whole tables.

Every write is a single Delta commit (atomic), carries ``leads_pipeline.*`` custom metadata, and is
skipped entirely when it would change nothing, so re-running a sync writes no empty commit.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, WriterProperties, write_deltalake
from deltalake.exceptions import CommitFailedError, TableNotFoundError

METADATA_PREFIX = "leads_pipeline."
ACTION = "_action"
UPSERT = "upsert"
DELETE = "delete"

_COMMIT_ATTEMPTS = 5

#: Row groups of at most 64k rows: a reader of raw pages (a megabyte of JSON per 600 pages) then
#: holds about 100 MB at a time instead of a whole file's worth.
WRITER_PROPERTIES = WriterProperties(max_row_group_size=65_536, compression="ZSTD")
#: Files of about 64 MB: a writer buffers a file's rows before it closes it.
TARGET_FILE_SIZE = 64 * 1024 * 1024


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


def _commit_properties(metadata: Mapping[str, str] | None) -> CommitProperties:
    return CommitProperties(
        custom_metadata={METADATA_PREFIX + k: str(v) for k, v in (metadata or {}).items()}
    )


def _retry_on_conflict(operation):
    """Runs ``operation`` again when a concurrent writer committed first (optimistic concurrency)."""
    for attempt in range(1, _COMMIT_ATTEMPTS + 1):
        try:
            return operation()
        except CommitFailedError:
            if attempt == _COMMIT_ATTEMPTS:
                raise
            time.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")  # pragma: no cover


class DeltaLake:
    """A lake root holding the pipeline's Delta tables.

    Args:
        root: Local path or object-store URI (``s3://``, ``gs://``, ``az://``).
        storage_options: Options passed to deltalake's object store (credentials, endpoint).
    """

    def __init__(self, root: str, storage_options: Mapping[str, str] | None = None):
        self.root = root.rstrip("/")
        self.storage_options = dict(storage_options or {}) or None

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
        if table is None:
            return None
        for commit in table.history(search):
            value = commit.get(METADATA_PREFIX + key)
            if value is not None:
                return value
        return None

    def ensure(
        self,
        name: str,
        schema: pa.Schema,
        metadata: Mapping[str, str] | None = None,
        configuration: Mapping[str, str] | None = None,
    ):
        """Creates the table with ``schema`` (and Delta ``configuration``) if it does not exist."""
        if self.load(name) is None:
            DeltaTable.create(
                self.table_uri(name),
                schema,
                mode="ignore",
                name=name,
                configuration=dict(configuration) if configuration else None,
                storage_options=self.storage_options,
                commit_properties=_commit_properties(metadata),
            )

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
                commit_properties=_commit_properties(metadata),
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

        return _retry_on_conflict(merge)

    def append(
        self,
        name: str,
        schema: pa.Schema,
        batches: Iterable[pa.RecordBatch],
        *,
        metadata: Mapping[str, str] | None = None,
        configuration: Mapping[str, str] | None = None,
    ) -> WriteOutcome:
        """Appends a stream of rows in one commit (creating the table if needed).

        Appends never conflict with each other in Delta, so the stream is consumed once.
        """
        self.ensure(name, schema, metadata, configuration)
        counted = 0

        def counting() -> Iterable[pa.RecordBatch]:
            nonlocal counted
            for batch in batches:
                counted += batch.num_rows
                yield batch

        write_deltalake(
            self.table_uri(name),
            pa.RecordBatchReader.from_batches(schema, counting()),
            mode="append",
            writer_properties=WRITER_PROPERTIES,
            target_file_size=TARGET_FILE_SIZE,
            storage_options=self.storage_options,
            commit_properties=_commit_properties(metadata),
        )
        return WriteOutcome(inserted=counted, version=self.load(name).version(), committed=True)

    def replace(
        self, name: str, data: pa.Table, *, metadata: Mapping[str, str] | None = None
    ) -> WriteOutcome:
        """Overwrites table ``name`` with ``data`` in one commit, unless its content is the same."""
        current = self.read(name)
        if current is not None and _same_rows(current, data):
            return WriteOutcome(version=self.load(name).version())

        def overwrite() -> WriteOutcome:
            write_deltalake(
                self.table_uri(name),
                data,
                mode="overwrite",
                schema_mode="overwrite",
                storage_options=self.storage_options,
                commit_properties=_commit_properties(metadata),
            )
            before = 0 if current is None else current.num_rows
            return WriteOutcome(
                inserted=data.num_rows,
                deleted=before,
                version=self.load(name).version(),
                committed=True,
            )

        return _retry_on_conflict(overwrite)


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
