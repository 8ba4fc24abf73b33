"""Child process for the concurrency and crash tests: one sync, or many concurrent upserts."""

import sys
from pathlib import Path

import pyarrow as pa

from leads_pipeline.storage.lake import ACTION, UPSERT, DeltaLake
from leads_pipeline_tests.lake_helpers import Workspace


def sync(root: str) -> None:
    Workspace(Path(root)).sync()


def upserts(lake_root: str, writer: str, count: int) -> None:
    lake = DeltaLake(lake_root)
    for i in range(count):
        rows = pa.table({"id": [f"{writer}-{i}"], "writer": [writer], ACTION: [UPSERT]})
        lake.upsert("shared", rows, key="id", metadata={"writer": writer})


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "sync":
        sync(*args)
    else:
        upserts(args[0], args[1], int(args[2]))
