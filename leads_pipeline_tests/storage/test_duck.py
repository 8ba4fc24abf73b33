"""Scratch DuckDB connections: cheap cursors of one database, each with its own session."""

import pyarrow as pa

from leads_pipeline.storage.duck import scratch_connection


def test_scratch_connections_do_not_see_each_others_tables():
    first, second = scratch_connection(), scratch_connection()
    try:
        first.register("rows", pa.table({"v": [1, 2]}))
        second.register("rows", pa.table({"v": [10]}))
        first.execute("CREATE TEMP TABLE kept AS SELECT 1 AS x")
        assert first.sql("SELECT sum(v) FROM rows").fetchall() == [(3,)]
        assert second.sql("SELECT sum(v) FROM rows").fetchall() == [(10,)]
        tables = second.sql("SELECT table_name FROM duckdb_tables() WHERE temporary").fetchall()
        assert ("kept",) not in tables
    finally:
        first.close()
        second.close()


def test_every_scratch_connection_works_in_utc():
    for dedicated in (False, True):
        con = scratch_connection(dedicated=dedicated)
        try:
            assert con.sql("SELECT current_setting('TimeZone')").fetchall() == [("UTC",)]
            assert (
                con.sql("SELECT CAST(TIMESTAMPTZ '2025-01-05 23:30:00-05:00' AS DATE)")
                .fetchall()[0][0]
                .isoformat()
                == "2025-01-06"
            )
        finally:
            con.close()
