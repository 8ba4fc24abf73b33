"""Tables are checkpointed every ``CHECKPOINT_EVERY`` commits (no commit of their own), and a
preview reads only the first rows it shows."""

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


def test_first_rows_reads_a_few_rows_across_files_and_fills_columns_a_file_lacks(lake_uri):
    from deltalake import write_deltalake

    from leads_pipeline.storage.lake import first_rows

    uri = f"{lake_uri}/p"
    write_deltalake(uri, pa.table({"id": ["a", "b"], "wide": ["x" * 50, "y" * 50]}))
    write_deltalake(
        uri,
        pa.table({"id": ["c", "d"], "wide": ["z", "w"], "added": [1, 2]}),
        mode="append",
        schema_mode="merge",
    )
    table = DeltaTable(uri)

    three = first_rows(table, 3, exclude=["wide"])
    assert three.column_names == ["id", "added"]
    rows = {r["id"]: r["added"] for r in three.to_pylist()}
    assert len(rows) == 3 and set(rows) <= {"a", "b", "c", "d"}
    # A row of the first file has no "added": NULL; one of the second has its value.
    assert all(rows[i] is None for i in rows if i in "ab")
    assert all(rows[i] == {"c": 1, "d": 2}[i] for i in rows if i in "cd")
    assert first_rows(table, 10).num_rows == 4
    assert first_rows(table, 0).num_rows == 0


def test_a_checkpoint_is_written_from_the_table_given_or_from_a_fresh_load(lake_uri):
    lake = DeltaLake(lake_uri)
    log = Path(lake_uri) / "t" / "_delta_log"
    step = 0
    while lake.upsert("t", _rows(step), "id").version < CHECKPOINT_EVERY - 1:
        step += 1
    stale = DeltaTable(f"{lake_uri}/t")
    assert stale.version() == CHECKPOINT_EVERY - 1
    assert lake.upsert("t", _rows(step + 1), "id").version == CHECKPOINT_EVERY  # checkpointed
    (log / f"{CHECKPOINT_EVERY:020d}.checkpoint.parquet").unlink()
    (log / "_last_checkpoint").unlink()

    # A table loaded at another version is not trusted: the checkpoint is of the version given.
    lake.checkpoint_if_due("t", CHECKPOINT_EVERY, stale)
    assert json.loads((log / "_last_checkpoint").read_text())["version"] == CHECKPOINT_EVERY
    (log / f"{CHECKPOINT_EVERY:020d}.checkpoint.parquet").unlink()
    (log / "_last_checkpoint").unlink()

    lake.checkpoint_if_due("t", CHECKPOINT_EVERY, DeltaTable(f"{lake_uri}/t"))
    assert (log / f"{CHECKPOINT_EVERY:020d}.checkpoint.parquet").exists()
    lake.checkpoint_if_due("t", CHECKPOINT_EVERY + 1, stale)  # not due: nothing written
    assert not (log / f"{CHECKPOINT_EVERY + 1:020d}.checkpoint.parquet").exists()


def test_commit_value_finds_the_newest_value_within_the_search(lake_uri):
    from deltalake import write_deltalake

    from leads_pipeline.storage.lake import commit_properties

    lake = DeltaLake(lake_uri)
    uri = lake.table_uri("m")
    rows = pa.table({"id": ["a"]})
    for version in range(15):
        metadata = {"source": f"s{version}"} if version in (2, 4) else {}
        write_deltalake(
            uri, rows, mode="append", commit_properties=commit_properties(metadata, retry=False)
        )
    # The newest value is 10 commits back: found past the first ten read.
    assert lake.commit_value("m", "source") == "s4"
    assert lake.commit_value("m", "source", search=11) == "s4"
    assert lake.commit_value("m", "source", search=10) is None
    assert lake.commit_value("m", "absent") is None
    assert lake.commit_value("missing_table", "source") is None
    write_deltalake(
        uri,
        rows,
        mode="append",
        commit_properties=commit_properties({"source": "new"}, retry=False),
    )
    assert lake.commit_value("m", "source", search=1) == "new"
