"""Latency of ``LeadsAnalytics.count_date_by_week()`` on a warehouse built from 1,000,000 leads.

Builds the ``leads`` columns in memory (random event dates over two years, realistic null shares),
computes the count tables with the pipeline's own SQL, publishes them with ``Warehouse.publish``,
then measures:

* cold: a fresh Python process imports ``leads_pipeline.serving`` and times its first call
  (median over several processes; import time is excluded, DuckDB's start-up is not);
* warm: one object called many times (median), with the result cache on (the default) and off.

Targets: cold ≤ 50 ms, warm ≤ 5 ms.

Then, over a ``lead_history`` Delta table of ``--history-rows`` rows (100,000 leads × 10 versions
by default, partitioned by ``is_current`` like the real one), ``lead_history(id)`` for random
leads and ``count_date_by_week(as_of=...)`` for random moments: the first call (which builds the
in-memory copy of that table version) and warm calls (median, p90). Target: warm ≤ 50 ms. Usage::

    .venv/bin/python benchmarks/serving_latency.py [--leads 1000000] [--cold-runs 15]
        [--history-rows 1000000]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from deltalake import WriterProperties, write_deltalake

from leads_pipeline.serving import LeadsAnalytics
from leads_pipeline.storage.warehouse import Warehouse, compute_event_counts
from leads_pipeline.tables import EVENT_COLUMNS, MONTH, WEEK

WEEKLY_TABLE, MONTHLY_TABLE = WEEK.table(), MONTH.table()

#: Share of leads without each event (a funnel: fewer leads reach the later steps).
NULL_SHARE = {
    "date_prise_contact": 0.02,
    "date_reponse_prospect": 0.40,
    "date_appel_propose": 0.60,
    "date_appel_booke": 0.75,
    "date_relance": 0.50,
}
FIRST_DAY = np.datetime64("2024-01-01")
DAYS = 731

_COLD_PROBE = """
import sys, time
from deltalake import WriterProperties, write_deltalake

from leads_pipeline.serving import LeadsAnalytics
analytics = LeadsAnalytics(warehouse_path=sys.argv[1])
started = time.perf_counter()
weeks = analytics.count_date_by_week()
print(time.perf_counter() - started, len(weeks))
"""


def build_leads(n: int, seed: int = 6) -> pa.Table:
    """``n`` leads with the five event columns (date32, some NULL)."""
    rng = np.random.default_rng(seed)
    columns = {}
    for column in EVENT_COLUMNS:
        days = FIRST_DAY + rng.integers(0, DAYS, n).astype("timedelta64[D]")
        missing = rng.random(n) < NULL_SHARE[column]
        columns[column] = pa.array(days, pa.date32(), mask=missing)
    return pa.table(columns)


STATUSES = ["Nouveau", "Contacté", "Répondu", "Appel proposé", "Appel booké", "Gagné", "Perdu"]
_TS = pa.timestamp("us", tz="UTC")


def build_history(rows: int, versions: int = 10, seed: int = 7) -> tuple[pa.Table, list[str]]:
    """``rows`` versions of ``rows // versions`` leads, in the order syncs would write them."""
    rng = np.random.default_rng(seed)
    leads = rows // versions
    hexes = [f"{rng.integers(0, 2**32):08x}{i:024x}" for i in range(leads)]
    ids = [f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}" for h in hexes]
    lead = np.repeat(np.array(ids), versions)
    version = np.tile(np.arange(1, versions + 1), leads)
    minutes = np.sort(rng.integers(0, 700 * 24 * 60, (leads, versions)), axis=1).reshape(-1)
    starts = np.datetime64("2024-01-01T00:00", "us") + (minutes * 60_000_000).astype(
        "timedelta64[us]"
    )
    current = version == versions
    n = leads * versions
    columns = {
        "id": lead,
        "version": version,
        "valid_from": pa.array(starts, _TS),
        "valid_to": pa.array(np.roll(starts, -1), _TS, mask=current),
        "is_current": current,
        "change": np.where(version == 1, "created", "updated"),
        "changed_columns": pa.array([["statut"]] * n, pa.list_(pa.string())),
        "nom": pa.array([f"Lead {i % 9973}" for i in range(n)]),
        "statut": rng.choice(STATUSES, n),
        "email": pa.array([f"lead{i % 9973}@exemple.fr" for i in range(n)]),
    }
    for column in EVENT_COLUMNS:
        days = FIRST_DAY + rng.integers(0, DAYS, n).astype("timedelta64[D]")
        columns[column] = pa.array(days, pa.date32(), mask=rng.random(n) < NULL_SHARE[column])
    columns["url"] = pa.array([f"https://www.notion.so/{i}" for i in lead])
    columns["extra_properties"] = pa.array(['{"Source":"LinkedIn"}'] * n)
    columns["synced_at"] = pa.array(starts, _TS)
    table = pa.table(columns)
    return table.take(np.argsort(minutes, kind="stable")), ids


def _history_figures(args, scratch: str) -> list[tuple[str, list[float], str]]:
    lake = str(Path(scratch) / "lake")
    started = time.perf_counter()
    history, ids = build_history(args.history_rows)
    write_deltalake(
        f"{lake}/lead_history",
        history,
        partition_by=["is_current"],
        writer_properties=WriterProperties(max_row_group_size=65_536, compression="ZSTD"),
    )
    print(
        f"lead_history: {history.num_rows:,} rows of {len(ids):,} leads, written in "
        f"{time.perf_counter() - started:.1f} s"
    )
    analytics = LeadsAnalytics(lake_uri=lake, warehouse_path=str(Path(scratch) / "none.duckdb"))
    rng = np.random.default_rng(3)

    def timed(call) -> float:
        started = time.perf_counter()
        call()
        return time.perf_counter() - started

    def moment() -> str:
        day = FIRST_DAY + np.timedelta64(int(rng.integers(30, DAYS)), "D")
        return f"{day}T{int(rng.integers(0, 24)):02d}:{int(rng.integers(0, 60)):02d}:00+00:00"

    first_lead = [timed(lambda: analytics.lead_history(ids[0]))]
    leads = [
        timed(lambda: analytics.lead_history(ids[int(rng.integers(len(ids)))]))
        for _ in range(args.history_calls)
    ]
    first_as_of = [timed(lambda: analytics.count_date_by_week(as_of=moment()))]
    moments = [
        timed(lambda: analytics.count_date_by_week(as_of=moment()))
        for _ in range(args.history_calls // 4)
    ]
    fixed = moment()
    analytics.count_date_by_week(as_of=fixed)
    repeated = [
        timed(lambda: analytics.count_date_by_week(as_of=fixed)) for _ in range(args.history_calls)
    ]
    uncached = LeadsAnalytics(lake_uri=lake, cache=False)
    scan = [
        timed(lambda: uncached.lead_history(ids[int(rng.integers(len(ids)))])) for _ in range(5)
    ]
    return [
        ("lead_history(id): first call, builds the copy", first_lead, "—"),
        (f"lead_history(id), warm, random leads (n={len(leads)})", leads, "≤ 50 ms"),
        ("lead_history(id), cache=False: filtered Delta scan (n=5)", scan, "—"),
        ("count_date_by_week(as_of): first call, builds the copy", first_as_of, "—"),
        (f"count_date_by_week(as_of), warm, random moments (n={len(moments)})", moments, "≤ 50 ms"),
        (f"count_date_by_week(as_of), warm, same moment (n={len(repeated)})", repeated, "—"),
    ]


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def main(argv: list[str] | None = None) -> None:
    """Builds the warehouse, runs the measurements, prints a markdown summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=1_000_000)
    parser.add_argument("--cold-runs", type=int, default=15)
    parser.add_argument("--warm-calls", type=int, default=2000)
    parser.add_argument("--workdir", help="where to write the warehouse (default: a temp dir)")
    parser.add_argument("--history-rows", type=int, default=1_000_000)
    parser.add_argument("--history-calls", type=int, default=400)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as scratch:
        path = str(Path(args.workdir or scratch) / "warehouse.duckdb")
        started = time.perf_counter()
        leads = build_leads(args.leads)
        generated = time.perf_counter() - started
        started = time.perf_counter()
        weekly = compute_event_counts(leads, "week")
        monthly = compute_event_counts(leads, "month")
        Warehouse(path).publish({WEEKLY_TABLE: weekly, MONTHLY_TABLE: monthly})
        built = time.perf_counter() - started

        cold = []
        for _ in range(args.cold_runs):
            probe = subprocess.run(
                [sys.executable, "-c", _COLD_PROBE, path],
                capture_output=True,
                text=True,
                check=True,
            )
            seconds, weeks = probe.stdout.split()
            assert int(weeks) == weekly.num_rows
            cold.append(float(seconds))

        def warm(analytics: LeadsAnalytics, calls: int) -> list[float]:
            analytics.count_date_by_week()
            samples = []
            for _ in range(calls):
                started = time.perf_counter()
                analytics.count_date_by_week()
                samples.append(time.perf_counter() - started)
            return samples

        cached = warm(LeadsAnalytics(warehouse_path=path), args.warm_calls)
        uncached = warm(LeadsAnalytics(warehouse_path=path, cache=False), args.warm_calls // 10)
        history = _history_figures(args, args.workdir or scratch) if args.history_rows else []

    print(f"leads: {args.leads:,}; weeks: {weekly.num_rows}; months: {monthly.num_rows}")
    print(f"generate leads: {generated:.2f} s; counts + publish: {built:.2f} s")
    print()
    print("| measurement | median | p90 | min | max | target |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, samples, target in (
        (f"cold: first call in a fresh process (n={len(cold)})", cold, "≤ 50 ms"),
        (f"warm, cached (n={len(cached)})", cached, "≤ 5 ms"),
        (f"warm, cache=False: DuckDB each call (n={len(uncached)})", uncached, "—"),
        *history,
    ):
        ordered = sorted(samples)
        p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
        print(
            f"| {label} | {_median_ms(samples):.3f} ms | {p90 * 1000:.3f} ms "
            f"| {ordered[0] * 1000:.3f} ms | {ordered[-1] * 1000:.3f} ms | {target} |"
        )


if __name__ == "__main__":
    main()
