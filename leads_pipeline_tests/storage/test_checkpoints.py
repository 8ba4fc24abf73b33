"""Tables are checkpointed every ``CHECKPOINT_EVERY`` commits, without a commit of their own."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable

from leads_pipeline.storage.lake import ACTION, CHECKPOINT_EVERY, UPSERT, DeltaLake


def _rows(step: int) -> pa.Table:
    ids = [f"id-{i}" for i in range(step + 1)]
    return pa.table({"id": ids, "value": [step] * len(ids), ACTION: [UPSERT] * len(ids)})


def test_every_tenth_commit_writes_a_checkpoint_and_the_rows_stay_the_same(lake_uri):
    lake = DeltaLake(lake_uri)
    log = Path(lake_uri) / "t" / "_delta_log"
    for step in range(CHECKPOINT_EVERY + 3):
        outcome = lake.upsert("t", _rows(step), "id")
        assert outcome.committed
        if outcome.version < CHECKPOINT_EVERY:
            assert not (log / "_last_checkpoint").exists()

    table = DeltaTable(f"{lake_uri}/t")
    # The checkpoint is no commit: the last upsert's version is the table's, one JSON per version.
    assert table.version() == outcome.version > CHECKPOINT_EVERY
    assert len(list(log.glob("*.json"))) == table.version() + 1
    assert json.loads((log / "_last_checkpoint").read_text())["version"] == CHECKPOINT_EVERY
    assert (log / f"{CHECKPOINT_EVERY:020d}.checkpoint.parquet").exists()
    expected = {f"id-{i}": CHECKPOINT_EVERY + 2 for i in range(CHECKPOINT_EVERY + 3)}
    assert (
        dict(
            zip(*table.to_pyarrow_table(columns=["id", "value"]).to_pydict().values(), strict=True)
        )
        == expected
    )
