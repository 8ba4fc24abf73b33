"""Spooling of a listing's raw rows to local disk, so a sync's memory does not grow with Notion.

A first sync of a million pages holds gigabytes of JSON; the spool keeps only the keys in memory
(page id, last edit, trash flag) and streams the rows back when they are written to Delta.

A full listing also compares each listed page's content with the stored copy (see
:meth:`RawSpool.compare`): Notion changes some values without moving ``last_edited_time``. Both
sides are reduced to a 64-bit content hash by DuckDB, streaming: neither the spooled nor the stored
JSON is ever held in memory as a whole.
"""

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.ipc as ipc

from leads_pipeline.storage.duck import scratch_connection
from leads_pipeline.storage.raw_store import RAW_SCHEMA, SETTLED_AFTER

_KEYS = ["page_id", "last_edited_time", "in_trash"]
_PREFIX = "leads_spool_"
#: A spool directory is named after the process that writes it: ``leads_spool_<pid>_<random>``.
_OWNED = re.compile(rf"{_PREFIX}(\d+)_")
_log = logging.getLogger(__name__)
#: The columns a page's content hash covers (with ``last_edited_time`` and ``in_trash``, compared
#: as they are, that is every column the raw merge compares).
CONTENT_COLUMNS = ("properties_json", "url", "created_time")
#: DuckDB's 64-bit hash of a raw row's content: NULL-aware and order-sensitive over its arguments,
#: computed the same way over spooled and stored rows. A page is only ever compared with its own
#: stored copy, so a change goes unseen with a probability of 2^-64.
CONTENT_HASH_SQL = "hash(properties_json, url, CAST(created_time AS TIMESTAMPTZ))"
#: Rows per batch of the stored table's scan (about 13 MB of JSON).
_SCAN_BATCH_ROWS = 8_192


@dataclass(frozen=True)
class Comparison:
    """What a full listing's content comparison found (see :meth:`RawSpool.compare`).

    Attributes:
        mask: Which spooled rows to write, in spool order.
        changed_without_edit: Listed pages whose edit time (and trash flag) equal the stored
            live copy's but whose content differs: values Notion changed without an edit.
    """

    mask: pa.Array
    changed_without_edit: int


def _live_rows(stored_rows: ds.Dataset) -> pa.RecordBatchReader:
    """The stored table's live rows, key and content columns only, as a stream of small batches.

    No read-ahead: at most about one row group (64k pages) is decoded at a time, whatever the
    table's size.
    """
    return stored_rows.scanner(
        columns=[*_KEYS, *CONTENT_COLUMNS],
        filter=pc.field("deleted_at").is_null(),
        batch_size=_SCAN_BATCH_ROWS,
        batch_readahead=0,
        fragment_readahead=0,
    ).to_reader()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_dead_spools(directory: str | None = None) -> list[Path]:
    """Removes the spool directories left behind by runs whose process is gone (e.g. SIGKILL).

    A run removes its own spool on exit, but a killed one cannot; the next spool removes it. Only
    directories named after a process id that no longer exists on this machine are removed.

    Args:
        directory: Where spools are made; the system's temporary directory when None.

    Returns:
        The directories removed.
    """
    root = Path(directory or tempfile.gettempdir())
    removed = []
    for path in root.glob(f"{_PREFIX}*"):
        match = _OWNED.match(path.name)
        if match is None or not path.is_dir() or _alive(int(match.group(1))):
            continue
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            _log.info(f"Removed the spool {path} of a run whose process is gone.")
            removed.append(path)
    return removed


class RawSpool:
    """Raw rows appended batch by batch to an Arrow IPC file in a temporary directory.

    Use as a context manager; the file is removed on exit. The directory is named after this
    process, so a spool left behind by a killed run is removed by the next one
    (:func:`remove_dead_spools`).
    """

    def __init__(self, directory: str | None = None):
        remove_dead_spools(directory)
        self._tmp = tempfile.TemporaryDirectory(prefix=f"{_PREFIX}{os.getpid()}_", dir=directory)
        self.path = Path(self._tmp.name) / "rows.arrow"
        self._sink = pa.OSFile(str(self.path), "wb")
        self._writer = ipc.new_file(self._sink, RAW_SCHEMA)
        self._keys: list[pa.Table] = []
        self.rows = 0
        self._closed = False

    def __enter__(self) -> "RawSpool":
        return self

    def __exit__(self, *exc) -> None:
        self._finish()
        self._tmp.cleanup()

    def append(self, rows: pa.Table) -> None:
        """Adds raw rows (``RAW_SCHEMA``)."""
        if rows.num_rows == 0:
            return
        self._writer.write_table(rows.cast(RAW_SCHEMA))
        self._keys.append(rows.select(_KEYS))
        self.rows += rows.num_rows

    def _finish(self) -> None:
        if not self._closed:
            self._writer.close()
            self._sink.close()
            self._closed = True

    def keys(self) -> pa.Table:
        """Page id, last edit and trash flag of every spooled row, in spool order."""
        if not self._keys:
            return RAW_SCHEMA.empty_table().select(_KEYS)
        return pa.concat_tables(self._keys)

    def select(self, stored: pa.Table | None, unchanged_before: datetime | None) -> pa.Array:
        """Which spooled rows to write: a boolean mask in spool order.

        Keeps one row per page (its latest edit; a page can be listed twice) and drops rows that
        certainly equal the stored ones: same ``last_edited_time`` and trash flag, page still
        live, and either edited before ``unchanged_before`` or stored by a sync that ran
        :data:`~leads_pipeline.storage.raw_store.SETTLED_AFTER` or more after that edit. Notion rounds
        edit times down to the minute, so an edit in the same minute as the stored copy's sync
        keeps its time: such rows are kept and compared in full by the merge.

        Args:
            stored: ``page_id``, ``last_edited_time``, ``in_trash``, ``deleted_at`` and
                ``synced_at`` of the table.
            unchanged_before: The watermark minus the margin, or None to keep every latest row.
        """
        con = scratch_connection(dedicated=True)  # the keys of a whole listing
        try:
            keys = self.keys()
            con.register(
                "spooled", keys.append_column("seq", pa.array(range(keys.num_rows), pa.int64()))
            )
            skip, join, params = "FALSE", "", {}
            if stored is not None and unchanged_before is not None:
                con.register("stored", stored)
                skip = """(s.page_id IS NOT NULL AND s.deleted_at IS NULL
                          AND s.last_edited_time = k.last_edited_time
                          AND s.in_trash IS NOT DISTINCT FROM k.in_trash
                          AND (k.last_edited_time < $cutoff
                               OR s.synced_at >= k.last_edited_time + $settled))"""
                join = "LEFT JOIN stored s USING (page_id)"
                params = {"cutoff": unchanged_before, "settled": SETTLED_AFTER}
            mask = con.sql(
                f"""
                WITH k AS (SELECT * FROM spooled), ranked AS (
                    SELECT k.seq, NOT {skip} AND row_number() OVER (
                        PARTITION BY k.page_id ORDER BY k.last_edited_time DESC, k.seq DESC) = 1
                        AS keep
                    FROM k {join}
                )
                SELECT keep FROM ranked ORDER BY seq
                """,
                params=params,
            ).to_arrow_table()["keep"]
        finally:
            con.close()
        return mask.combine_chunks() if mask.num_chunks else pa.array([], pa.bool_())

    def content_hashes(self) -> pa.Array:
        """The content hash (:data:`CONTENT_HASH_SQL`) of every spooled row, in spool order.

        Streams the spool file batch by batch: only the hashes are kept.
        """
        con = scratch_connection()
        parts = []
        try:
            for batch in self.batches():
                con.register("spooled_batch", batch.select(list(CONTENT_COLUMNS)))
                parts.append(
                    con.sql(f"SELECT {CONTENT_HASH_SQL} AS h FROM spooled_batch")
                    .to_arrow_table()["h"]
                    .combine_chunks()
                )
                con.unregister("spooled_batch")
        finally:
            con.close()
        return pa.concat_arrays(parts) if parts else pa.array([], pa.uint64())

    def compare(self, stored_rows: ds.Dataset) -> Comparison:
        """Which spooled rows of a full listing to write, comparing content with the stored rows.

        Keeps one row per page (its latest edit) and drops those whose stored live copy has the
        same ``last_edited_time``, trash flag and content hash: the merge would find them equal.
        Unlike :meth:`select`, a row is never skipped on its edit time alone, so a value changed
        in Notion without a new edit time (a formula over ``now()``, a relation emptied from the
        other side, a property added to the database) is written.

        Args:
            stored_rows: The raw table as a dataset; its live rows are scanned by DuckDB (only
                the key and content columns, streaming), never read into memory whole.

        Returns:
            The mask and how many pages changed without a new edit time.
        """
        hashes = self.content_hashes()
        con = scratch_connection(dedicated=True)  # the keys of a whole listing
        try:
            keys = self.keys()
            keys = keys.append_column("content_hash", hashes).append_column(
                "seq", pa.array(range(keys.num_rows), pa.int64())
            )
            con.register("spooled", keys)
            con.register("stored_rows", _live_rows(stored_rows))
            result = con.sql(
                f"""
                WITH s AS (
                    SELECT page_id, last_edited_time, in_trash, {CONTENT_HASH_SQL} AS content_hash
                    FROM stored_rows
                ), ranked AS (
                    SELECT k.seq,
                           row_number() OVER (PARTITION BY k.page_id
                               ORDER BY k.last_edited_time DESC, k.seq DESC) = 1 AS latest,
                           coalesce(s.page_id IS NOT NULL
                               AND s.last_edited_time IS NOT DISTINCT FROM k.last_edited_time
                               AND s.in_trash IS NOT DISTINCT FROM k.in_trash, FALSE) AS same_edit,
                           s.content_hash IS NOT DISTINCT FROM k.content_hash AS same_content
                    FROM spooled k LEFT JOIN s USING (page_id)
                )
                SELECT latest AND NOT (same_edit AND same_content) AS keep,
                       latest AND same_edit AND NOT same_content AS changed_without_edit
                FROM ranked
                ORDER BY seq
                """
            ).to_arrow_table()
        finally:
            con.close()
        mask = result["keep"].combine_chunks() if result.num_rows else pa.array([], pa.bool_())
        changed = pc.sum(result["changed_without_edit"]).as_py() or 0
        return Comparison(mask=mask, changed_without_edit=changed)

    def batches(self, mask: pa.Array | None = None) -> Iterator[pa.RecordBatch]:
        """The spooled rows, batch by batch, keeping only those ``mask`` selects."""
        self._finish()
        # Read, not memory-mapped: mapped pages would count in the RSS as the whole file is read.
        with pa.OSFile(str(self.path)) as source:
            reader = ipc.open_file(source)
            offset = 0
            for index in range(reader.num_record_batches):
                batch = reader.get_batch(index)
                size = batch.num_rows
                if mask is not None:
                    batch = batch.filter(mask.slice(offset, size))
                offset += size
                if batch.num_rows:
                    yield batch

    def read(self, mask: pa.Array | None = None) -> pa.Table:
        """The spooled rows ``mask`` selects, as one table."""
        return pa.Table.from_batches(list(self.batches(mask)), schema=RAW_SCHEMA)

    def count(self, mask: pa.Array) -> int:
        """How many rows ``mask`` selects."""
        return pc.sum(mask).as_py() or 0
