"""Latency of ``LeadsAnalytics.count_date_by_week()`` on a warehouse built from 1,000,000 leads.

Builds the ``leads`` columns in memory (random event dates over two years, realistic null shares),
computes the count tables with the pipeline's own SQL, publishes them with ``Warehouse.publish``,
then measures:

* cold: a fresh Python process imports ``leads_pipeline.serving`` and times its first call
  (median over several processes; import time is excluded, DuckDB's start-up is not);
* warm: one object called many times (median), with the result cache on (the default) and off.

Targets: cold ≤ 50 ms, warm ≤ 5 ms. Usage::

    .venv/bin/python benchmarks/serving_latency.py [--leads 1000000] [--cold-runs 15]
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


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def main(argv: list[str] | None = None) -> None:
    """Builds the warehouse, runs the measurements, prints a markdown summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=1_000_000)
    parser.add_argument("--cold-runs", type=int, default=15)
    parser.add_argument("--warm-calls", type=int, default=2000)
    parser.add_argument("--workdir", help="where to write the warehouse (default: a temp dir)")
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

    print(f"leads: {args.leads:,}; weeks: {weekly.num_rows}; months: {monthly.num_rows}")
    print(f"generate leads: {generated:.2f} s; counts + publish: {built:.2f} s")
    print()
    print("| measurement | median | p90 | min | max | target |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, samples, target in (
        (f"cold: first call in a fresh process (n={len(cold)})", cold, "≤ 50 ms"),
        (f"warm, cached (n={len(cached)})", cached, "≤ 5 ms"),
        (f"warm, cache=False: DuckDB each call (n={len(uncached)})", uncached, "—"),
    ):
        ordered = sorted(samples)
        p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
        print(
            f"| {label} | {_median_ms(samples):.3f} ms | {p90 * 1000:.3f} ms "
            f"| {ordered[0] * 1000:.3f} ms | {ordered[-1] * 1000:.3f} ms | {target} |"
        )


if __name__ == "__main__":
    main()
