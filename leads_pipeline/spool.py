"""Spooling of a listing's raw rows to local disk, so a sync's memory does not grow with Notion.

A first sync of a million pages holds gigabytes of JSON; the spool keeps only the keys in memory
(page id, last edit, trash flag) and streams the rows back when they are written to Delta.
"""

import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from leads_pipeline.duck import scratch_connection
from leads_pipeline.raw_store import RAW_SCHEMA, SETTLED_AFTER

_KEYS = ["page_id", "last_edited_time", "in_trash"]


class RawSpool:
    """Raw rows appended batch by batch to an Arrow IPC file in a temporary directory.

    Use as a context manager; the file is removed on exit.
    """

    def __init__(self, directory: str | None = None):
        self._tmp = tempfile.TemporaryDirectory(prefix="leads_spool_", dir=directory)
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
        :data:`~leads_pipeline.raw_store.SETTLED_AFTER` or more after that edit. Notion rounds
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
