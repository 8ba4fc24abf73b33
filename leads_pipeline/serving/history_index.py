"""In-memory copies of one Delta version of ``lead_history``, for the serving layer.

``VersionsByLead`` answers every version of one lead; ``VersionsByTime`` the versions valid at a
moment (the counts ``as_of``). Both are built from one Delta version and valid until it moves.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
from deltalake import DeltaTable

from leads_pipeline.storage.duck import scratch_connection
from leads_pipeline.tables import EVENT_COLUMNS

#: Rows per compressed batch of the per-lead copy: a lookup decompresses one or two batches.
_ROWS_PER_BATCH = 512
#: The event columns of ``lead_history`` the counts ``as_of`` a moment read, with the bounds.
_MOMENT_COLUMNS = ("valid_from", "valid_to", *EVENT_COLUMNS)
_TS = pa.timestamp("us", tz="UTC")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Results of counts as of a moment kept, at most (each a few hundred rows).


@dataclass(frozen=True)
class VersionsByLead:
    """Every row of one Delta version of ``lead_history``, sorted by ``(id, version)``, held as
    zstd-compressed Arrow IPC batches, with where each lead's rows start and how many there are."""

    version: int
    buffer: pa.Buffer
    positions: dict[str, tuple[int, int]]

    @classmethod
    def build(cls, history: DeltaTable) -> VersionsByLead:
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
class VersionsByTime:
    """The event columns of the versions of one Delta version of ``lead_history`` (tombstones
    left out), sorted by ``valid_from``, and when the history begins (the oldest ``valid_from``)."""

    version: int
    rows: pa.Table
    starts: np.ndarray
    begins: datetime | None

    @classmethod
    def build(cls, history: DeltaTable) -> VersionsByTime:
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
