"""Concurrency and crash safety: concurrent writers, SIGKILL mid-merge, readers during writes."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pyarrow as pa
from deltalake import DeltaTable

from leads_pipeline.defs.assets import analytics, ingestion
from leads_pipeline.defs.pools import LAKE_POOL, WAREHOUSE_POOL
from leads_pipeline.sources.sample_data import generate_pages
from leads_pipeline.storage.lake import ACTION, UPSERT, DeltaLake
from leads_pipeline.storage.warehouse import Warehouse
from leads_pipeline.tables import WEEK
from leads_pipeline_tests.lake_helpers import Workspace

WEEKLY_TABLE = WEEK.table()

REPO = Path(__file__).resolve().parents[1]
TABLES = ("raw_notion_leads", "leads", "lead_quality_issues")


def child(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "leads_pipeline_tests.crash_child", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def contents(ws: Workspace) -> dict:
    keys = {"raw_notion_leads": "page_id", "lead_quality_issues": "page_id"}
    result = {}
    for name in TABLES:
        rows = ws.table(name).to_pyarrow_table().to_pylist()
        for row in rows:
            row.pop("synced_at", None)
            row.pop("deleted_at", None)
            row.pop("detected_at", None)
        result[name] = sorted(rows, key=lambda r: (r[keys.get(name, "id")], str(r)))
    with Warehouse(ws.warehouse_path).read() as con:
        result["weekly"] = con.sql(f"SELECT * FROM {WEEKLY_TABLE}").fetchall()
    return result


def test_writing_assets_share_pools_limited_by_the_project_instance(tmp_path, monkeypatch):
    pools = {
        key.to_user_string(): a.op.pool
        for a in [*ingestion.ASSETS, *analytics.ASSETS]
        for key in a.keys
    }
    for name in TABLES:
        assert pools[name] == LAKE_POOL
    assert pools["weekly_event_counts"] == pools["monthly_event_counts"] == WAREHOUSE_POOL
    (tmp_path / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with dg.DagsterInstance.get() as instance:
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
        assert instance.event_log_storage.supports_global_concurrency_limits


def test_two_concurrent_writers_both_land(tmp_path):
    lake_root = str(tmp_path / "lake")
    DeltaLake(lake_root).upsert(
        "shared", pa.table({"id": ["seed"], "writer": ["seed"], ACTION: [UPSERT]}), key="id"
    )
    writers = [child("upserts", lake_root, name, "12") for name in ("a", "b")]
    for process in writers:
        _, err = process.communicate(timeout=240)
        assert process.returncode == 0, err
    ids = set(DeltaTable(f"{lake_root}/shared").to_pyarrow_table()["id"].to_pylist())
    assert ids == {"seed"} | {f"{w}-{i}" for w in "ab" for i in range(12)}
    # One commit per upsert: the table's creation, the seed, then 24 merges.
    assert DeltaTable(f"{lake_root}/shared").version() == 1 + 24


def _uncommitted_files(table_dir: Path, committed: set[str]) -> list[Path]:
    """Data files written (or being staged, ``name#n``) that no commit references yet."""
    if not table_dir.exists():
        return []
    return [p for p in table_dir.iterdir() if p.is_file() and p.name not in committed]


def test_sigkill_mid_merge_keeps_the_previous_version_and_the_next_run_completes(tmp_path):
    crashed = Workspace(tmp_path / "crashed")
    crashed.root.mkdir()
    pages = generate_pages(6_000, 3)
    crashed.publish(pages[:3000])
    crashed.sync()
    before = contents(crashed)
    versions = {t: crashed.table(t).version() for t in TABLES}
    committed = {Path(f).name for f in crashed.table("raw_notion_leads").file_uris()}
    crashed.publish(pages)

    process = child("sync", str(crashed.root))
    raw_dir = crashed.root / "lake" / "raw_notion_leads"
    deadline = time.monotonic() + 120
    while not _uncommitted_files(raw_dir, committed):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the child never started writing"
        time.sleep(0.001)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL

    # The previous versions are intact and readable.
    assert {t: crashed.table(t).version() for t in TABLES} == versions
    assert contents(crashed) == before

    crashed.sync()
    reference = Workspace(tmp_path / "reference")
    reference.root.mkdir()
    reference.publish(pages[:3000])
    reference.sync()
    reference.publish(pages)
    reference.sync()
    assert contents(crashed) == contents(reference)
    assert len(contents(crashed)["leads"]) == 6_000


def test_a_reader_holding_the_warehouse_open_never_blocks_a_run(tmp_path):
    ws = Workspace(tmp_path)
    pages = generate_pages(300, 5)
    ws.publish(pages[:100])
    ws.sync()
    reader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time\n"
            "con = duckdb.connect(sys.argv[1], read_only=True)\n"
            f"q = 'SELECT sum(date_prise_contact) FROM {WEEKLY_TABLE}'\n"
            "print(con.sql(q).fetchall()[0][0], flush=True)\n"
            "sys.stdin.readline()\n"
            "print(con.sql(q).fetchall()[0][0], flush=True)\n",
            ws.warehouse_path,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert int(reader.stdout.readline()) == 100
        ws.publish(pages)
        started = time.monotonic()
        ws.sync()  # writes the warehouse while the reader holds it open
        assert time.monotonic() - started < 60
        reader.stdin.write("\n")
        reader.stdin.flush()
        assert int(reader.stdout.readline()) == 100  # its snapshot, never a half-written table
    finally:
        reader.kill()
        reader.wait()
    with Warehouse(ws.warehouse_path).read() as con:
        assert con.sql(f"SELECT sum(date_prise_contact) FROM {WEEKLY_TABLE}").fetchall() == [(300,)]
