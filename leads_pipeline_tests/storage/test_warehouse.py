"""Weekly and monthly counts: ISO weeks at year boundaries, calendar months, zero-filled gaps."""

import datetime as dt
import subprocess
import sys
import time

import duckdb
import pyarrow as pa
import pytest

from leads_pipeline.storage.warehouse import (
    TableNotBuiltError,
    Warehouse,
    WarehouseNotBuiltError,
    compute_event_counts,
)
from leads_pipeline.tables import EVENT_COLUMNS, GRAINS, WEEK, Grain

WEEKLY_TABLE = WEEK.table()


def leads_with(**columns: list) -> pa.Table:
    length = max(len(v) for v in columns.values())
    data = {c: pa.array(columns.get(c, [None] * length), pa.date32()) for c in EVENT_COLUMNS}
    return pa.table(data)


def as_rows(table: pa.Table) -> list[dict]:
    return table.to_pylist()


@pytest.mark.parametrize(
    ("day", "label", "monday"),
    [
        (dt.date(2024, 12, 30), "2025-W01", dt.date(2024, 12, 30)),
        (dt.date(2021, 1, 3), "2020-W53", dt.date(2020, 12, 28)),
        (dt.date(2026, 12, 31), "2026-W53", dt.date(2026, 12, 28)),
        (dt.date(2027, 1, 1), "2026-W53", dt.date(2026, 12, 28)),
        (dt.date(2025, 1, 5), "2025-W01", dt.date(2024, 12, 30)),
    ],
)
def test_iso_week_labels_use_the_iso_year(day, label, monday):
    rows = as_rows(compute_event_counts(leads_with(date_prise_contact=[day]), "week"))
    assert rows == [
        {
            "semaine": label,
            "week_start": monday,
            "date_prise_contact": 1,
            "date_reponse_prospect": 0,
            "date_appel_propose": 0,
            "date_appel_booke": 0,
            "date_relance": 0,
        }
    ]
    assert label == f"{day.isocalendar().year}-W{day.isocalendar().week:02d}"


def test_weeks_between_events_are_zero_filled_and_ordered():
    leads = leads_with(
        date_prise_contact=[dt.date(2024, 12, 23), dt.date(2025, 1, 13), None],
        date_relance=[None, dt.date(2025, 1, 14), dt.date(2025, 1, 15)],
    )
    rows = as_rows(compute_event_counts(leads, "week"))
    assert [r["semaine"] for r in rows] == ["2024-W52", "2025-W01", "2025-W02", "2025-W03"]
    assert [r["date_prise_contact"] for r in rows] == [1, 0, 0, 1]
    assert [r["date_relance"] for r in rows] == [0, 0, 0, 2]
    assert all(r["date_appel_booke"] == 0 for r in rows)


def test_months_are_calendar_months_zero_filled():
    leads = leads_with(
        date_appel_booke=[dt.date(2024, 11, 30), dt.date(2025, 2, 1), dt.date(2025, 2, 28)]
    )
    rows = as_rows(compute_event_counts(leads, "month"))
    assert [(r["mois"], r["month_start"], r["date_appel_booke"]) for r in rows] == [
        ("2024-11", dt.date(2024, 11, 1), 1),
        ("2024-12", dt.date(2024, 12, 1), 0),
        ("2025-01", dt.date(2025, 1, 1), 0),
        ("2025-02", dt.date(2025, 2, 1), 2),
    ]


def test_no_events_gives_no_rows():
    assert compute_event_counts(leads_with(date_relance=[None, None]), "week").num_rows == 0


def test_publish_replaces_tables_and_readers_keep_their_snapshot(tmp_path):
    warehouse = Warehouse(tmp_path / "w.duckdb")
    first = compute_event_counts(leads_with(date_prise_contact=[dt.date(2025, 1, 1)]), "week")
    warehouse.publish({WEEKLY_TABLE: first})
    with warehouse.read() as reader:
        second = compute_event_counts(
            leads_with(date_prise_contact=[dt.date(2025, 1, 1), dt.date(2025, 1, 2)]), "week"
        )
        warehouse.publish({WEEKLY_TABLE: second})  # never blocked by the open reader
        assert reader.sql(f"SELECT date_prise_contact FROM {WEEKLY_TABLE}").fetchall() == [(1,)]
    with warehouse.read() as reader:
        assert reader.sql(f"SELECT date_prise_contact FROM {WEEKLY_TABLE}").fetchall() == [(2,)]
        types = dict(reader.sql(f"DESCRIBE {WEEKLY_TABLE}").fetchall()[i][:2] for i in range(7))
    assert types["semaine"] == "VARCHAR" and types["week_start"] == "DATE"
    assert all(types[c] == "BIGINT" for c in EVENT_COLUMNS)


def test_reading_a_missing_warehouse_names_the_command(tmp_path):
    missing = Warehouse(tmp_path / "missing.duckdb")
    with pytest.raises(WarehouseNotBuiltError, match="dg launch --job sync_leads"), missing.read():
        pass


def test_reader_blocked_by_a_read_write_holder_waits_then_says_so(tmp_path):
    path = tmp_path / "w.duckdb"
    duckdb.connect(str(path)).close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('ready', flush=True); "
            "time.sleep(30)",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        started = time.monotonic()
        locked = pytest.raises(duckdb.IOException, match="locked by another process")
        with locked, Warehouse(path).read(wait_seconds=0.5):
            pass
        assert time.monotonic() - started >= 0.5
    finally:
        holder.kill()
        holder.wait()


def test_a_kept_reader_sees_every_publication_of_other_writers(tmp_path):
    path = tmp_path / "warehouse.duckdb"
    reader = Warehouse(path, keep_reader_open=True)
    writer = Warehouse(path)
    try:
        for version in range(3):
            writer.publish({"analytics.t": pa.table({"v": [version]})})
            for _ in range(2):  # the second read reuses the connection
                with reader.read() as con:
                    assert con.sql("SELECT v FROM analytics.t").fetchall() == [(version,)]
        # The reader's own publications too.
        reader.publish({"analytics.t": pa.table({"v": [99]})})
        with reader.read() as con:
            assert con.sql("SELECT v FROM analytics.t").fetchall() == [(99,)]
    finally:
        reader.close()
    # Closed, it reopens on demand.
    with reader.read() as con:
        assert con.sql("SELECT v FROM analytics.t").fetchall() == [(99,)]
    reader.close()


@pytest.mark.parametrize("grain", GRAINS, ids=lambda g: g.name)
def test_python_and_duckdb_agree_on_period_starts_and_labels(grain):
    days = [dt.date(2020, 12, 27) + dt.timedelta(days=n) for n in range(0, 2300, 3)]
    con = duckdb.connect()
    con.register("days", pa.table({"day": pa.array(days, pa.date32())}))
    start = grain.start_sql("day")
    rows = con.sql(f"SELECT day, {start}, {grain.label_sql(start)} FROM days").fetchall()
    assert rows == [(d, grain.period_start(d), grain.label_of(d)) for d in days]


def test_a_quarter_directive_in_the_label_format_is_the_quarter():
    quarter = Grain(
        name="quarter",
        adjective="quarterly",
        label="trimestre",
        start_column="quarter_start",
        unit="quarter",
        step="3 MONTH",
        label_format="%Y-Q%q",
        title="per quarter",
        period="calendar quarter",
        truncate=lambda day: day.replace(month=(day.month - 1) // 3 * 3 + 1, day=1),
    )
    assert quarter.label_of(dt.date(2025, 8, 14)) == "2025-Q3"
    sql = quarter.label_sql("DATE '2025-08-14'")
    assert duckdb.sql(f"SELECT {sql}").fetchall() == [("2025-Q3",)]


def test_read_table_tells_a_missing_file_or_table_from_an_empty_one(tmp_path):
    warehouse = Warehouse(tmp_path / "w.duckdb")
    assert warehouse.read_table(WEEKLY_TABLE) is None
    with pytest.raises(WarehouseNotBuiltError, match="does not exist yet"):
        warehouse.require_table(WEEKLY_TABLE)
    warehouse.publish({"analytics.other": pa.table({"x": [2, 1]})})
    assert warehouse.read_table(WEEKLY_TABLE) is None
    with pytest.raises(TableNotBuiltError, match=WEEKLY_TABLE):
        warehouse.require_table(WEEKLY_TABLE)
    assert warehouse.require_table("analytics.other", order_by="x")["x"].to_pylist() == [1, 2]
    empty = pa.table({"x": pa.array([], pa.int64())})
    warehouse.publish({"analytics.other": empty})
    assert warehouse.read_table("analytics.other").num_rows == 0


def test_publish_changed_copies_the_file_only_for_new_rows(tmp_path):
    warehouse = Warehouse(tmp_path / "w.duckdb")
    rows = pa.table({"x": pa.array([1, 2], pa.int64())})
    assert warehouse.publish_changed("analytics.t", rows)
    identity = (warehouse.path.stat().st_ino, warehouse.path.stat().st_mtime_ns)
    assert not warehouse.publish_changed("analytics.t", rows)
    assert (warehouse.path.stat().st_ino, warehouse.path.stat().st_mtime_ns) == identity
    changed = pa.table({"x": pa.array([1, 3], pa.int64())})
    assert warehouse.publish_changed("analytics.t", changed)
    assert warehouse.read_table("analytics.t").equals(changed)


def test_published_from_reuses_rows_only_for_the_same_origin(tmp_path):
    warehouse = Warehouse(tmp_path / "w.duckdb")
    rows = pa.table({"x": pa.array([2, 1], pa.int64())})
    assert warehouse.published_from("analytics.t", "leads@1") is None  # nothing yet
    warehouse.publish({"analytics.t": rows}, lineage={"analytics.t": "leads@1"})
    assert warehouse.published_from("analytics.t", "leads@1", order_by="x")["x"].to_pylist() == [
        1,
        2,
    ]
    assert warehouse.published_from("analytics.t", "leads@2") is None


def test_rows_published_without_a_lineage_lose_the_old_one(tmp_path):
    warehouse = Warehouse(tmp_path / "w.duckdb")
    rows = pa.table({"x": pa.array([1], pa.int64())})
    other = pa.table({"y": pa.array([7], pa.int64())})
    warehouse.publish(
        {"analytics.t": rows, "analytics.u": other},
        lineage={"analytics.t": "leads@1", "analytics.u": "leads@1"},
    )
    replaced = pa.table({"x": pa.array([5], pa.int64())})
    warehouse.publish({"analytics.t": replaced})  # computed from something unknown
    assert warehouse.lineage("analytics.t") is None
    assert warehouse.published_from("analytics.t", "leads@1") is None
    assert warehouse.read_table("analytics.t").equals(replaced)
    assert warehouse.lineage("analytics.u") == "leads@1"  # untouched tables keep theirs
