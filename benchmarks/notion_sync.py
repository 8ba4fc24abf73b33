"""Benchmarks of the Notion sync against the fake Notion server in a separate process.

Three measurements, each printed as one JSON line and a summary:

``paced``      full ``sync_leads`` of 30,000 pages through a server limited to 3 requests/s:
               pages/s as a fraction of the 300 pages/s ceiling (100 pages per request).
``unlimited``  limit off, 100,000 pages: pages/s of the whole ``sync_leads`` job (HTTP to committed
               Delta and refreshed counts) over pages/s of a bare fetch loop (httpx + json decode).
``no-change``  a no-change incremental sync of that 100,000-page lake with
               ``dagster job execute -m leads_pipeline.definitions -j sync_leads``: query requests
               and seconds, next to an empty job of the same shape launched the same way.

Usage::

    .venv/bin/python benchmarks/notion_sync.py paced
    .venv/bin/python benchmarks/notion_sync.py unlimited no-change
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
import httpx

# The script's own folder is on sys.path when it runs, as for any script.
from notion_empty_job import job_shape

from leads_pipeline.defs.assets import analytics, ingestion
from leads_pipeline.defs.jobs import sync_leads
from leads_pipeline.defs.resources import (
    LakeResource,
    PropertyMapResource,
    WarehouseResource,
)
from leads_pipeline.sources.notion import NotionLeadsSource

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def real_definitions() -> dg.Definitions:
    """``leads_pipeline.definitions:defs`` as the CLI loads it (imported late: it reads env)."""
    from leads_pipeline.definitions import defs

    return defs


DAGSTER = str(Path(PYTHON).with_name("dagster"))


@contextlib.contextmanager
def fake_server(pages: int, rate_limit: float | None = None, spread_tail: bool = False):
    """Starts ``leads_pipeline_tests.fake_notion`` in its own process; yields its description."""
    command = [PYTHON, "-m", "leads_pipeline_tests.fake_notion", "--pages", str(pages)]
    if spread_tail:
        command.append("--spread-tail")
    if rate_limit:
        command += ["--rate-limit", str(rate_limit)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        info = json.loads(process.stdout.readline())
        yield info
    finally:
        process.terminate()
        process.wait(timeout=30)


def server_counts(info: dict, reset: bool = False) -> dict:
    path = "/_fake/reset" if reset else "/_fake/stats"
    return httpx.get(info["url"] + path).json()["counts"]


def resources(info: dict, workdir: Path, requests_per_second: float) -> dict:
    return {
        "source": NotionLeadsSource(
            token=info["token"],
            database_id=info["database_id"],
            api_base_url=info["url"],
            requests_per_second=requests_per_second,
        ),
        "lake": LakeResource(uri=str(workdir / "lake")),
        "warehouse": WarehouseResource(path=str(workdir / "warehouse.duckdb")),
        "property_map": PropertyMapResource(),
    }


def run_sync_in_process(info: dict, workdir: Path, requests_per_second: float) -> dict:
    """Runs the sync_leads job (ingestion + counts) in process; returns seconds and metadata."""
    defs = dg.Definitions(
        assets=[*ingestion.ASSETS, *analytics.ASSETS],
        jobs=[sync_leads],
        resources=resources(info, workdir, requests_per_second),
    )
    job = defs.resolve_job_def("sync_leads")
    with dg.instance_for_test() as instance:
        started = time.perf_counter()
        result = job.execute_in_process(instance=instance)
        seconds = time.perf_counter() - started
    meta = {
        key: value.value
        for event in result.get_asset_materialization_events()
        if event.asset_key.to_user_string() == "raw_notion_leads"
        for key, value in event.event_specific_data.materialization.metadata.items()
        if key in ("pages_fetched", "requests", "retries", "rate_limit_wait_seconds")
    }
    return {"seconds": round(seconds, 2), **meta}


def bare_fetch(info: dict) -> dict:
    """Every page through httpx + json decode only (windows past the 10,000-row cap included)."""
    headers = {"Authorization": f"Bearer {info['token']}", "Notion-Version": "2025-09-03"}
    url = f"{info['url']}/v1/data_sources/{info['data_source_id']}/query"
    sorts = [{"timestamp": "last_edited_time", "direction": "ascending"}]
    seen: set[str] = set()
    pages = requests = 0
    started = time.perf_counter()
    with httpx.Client(headers=headers, timeout=60) as client:
        start, cursor = None, None
        while True:
            body: dict = {"sorts": sorts, "page_size": 100}
            if start:
                body["filter"] = {
                    "timestamp": "last_edited_time",
                    "last_edited_time": {"on_or_after": start},
                }
            if cursor:
                body["start_cursor"] = cursor
            data = json.loads(client.post(url, json=body).content)
            requests += 1
            for page in data["results"]:
                if page["id"] not in seen:
                    seen.add(page["id"])
                    pages += 1
            if data.get("request_status", {}).get("type") == "incomplete":
                start, cursor = data["results"][-1]["last_edited_time"], None
                continue
            if not data["has_more"]:
                break
            cursor = data["next_cursor"]
    seconds = time.perf_counter() - started
    return {"pages": pages, "requests": requests, "seconds": round(seconds, 2)}


def bench_paced(pages: int) -> dict:
    with fake_server(pages, rate_limit=3) as info, tempfile.TemporaryDirectory() as tmp:
        run = run_sync_in_process(info, Path(tmp), requests_per_second=3)
        counts = server_counts(info)
    rate = run["pages_fetched"] / run["seconds"]
    return {
        "benchmark": "paced",
        "pages": pages,
        **run,
        "server_requests": counts,
        "pages_per_second": round(rate, 1),
        "fraction_of_300": round(rate / 300, 3),
    }


def _cli_env(info: dict, workdir: Path, home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEADS_", "NOTION_"))}
    env.update(
        {
            "LEADS_SOURCE": "notion",
            "NOTION_TOKEN": info["token"],
            "NOTION_DATABASE_ID": info["database_id"],
            "NOTION_API_BASE_URL": info["url"],
            "LEADS_LAKE_URI": str(workdir / "lake"),
            "LEADS_WAREHOUSE_PATH": str(workdir / "warehouse.duckdb"),
            "DAGSTER_HOME": str(home),
        }
    )
    return env


def _cli(args: list[str], env: dict) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [DAGSTER, "job", "execute", *args],
        cwd=ROOT,
        env=env,
        check=False,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"dagster job execute {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return round(time.perf_counter() - started, 2)


def bench_unlimited_and_no_change(pages: int, which: set[str], spread_tail: bool, repeats: int = 5):
    """Yields the ``unlimited`` and ``no-change`` results (both on one 100,000-page server)."""
    with fake_server(pages, spread_tail=spread_tail) as info, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        bare = bare_fetch(info) if "unlimited" in which else None
        run = run_sync_in_process(info, workdir, requests_per_second=0)
        if "unlimited" in which:
            bare_rate = bare["pages"] / bare["seconds"]
            job_rate = run["pages_fetched"] / run["seconds"]
            yield (
                {
                    "benchmark": "unlimited",
                    "pages": pages,
                    "bare_fetch": bare,
                    "bare_pages_per_second": round(bare_rate, 1),
                    "job": run,
                    "job_pages_per_second": round(job_rate, 1),
                    "ratio": round(job_rate / bare_rate, 3),
                }
            )
        if "no-change" in which:
            home = workdir / "dagster_home"
            home.mkdir()
            env = _cli_env(info, workdir, home)
            # The empty job writes materializations and check evaluations under the real keys: on
            # the real job's instance they would become the latest ones the real job reads back
            # (its checks' last passes, lead_history's hint), so it runs on an instance of its own.
            empty_home = workdir / "dagster_home_empty"
            empty_home.mkdir()
            shape = workdir / "shape.json"
            shape.write_text(json.dumps(job_shape(real_definitions())))
            env["NOTION_BENCH_SHAPE"] = str(shape)
            empty_env = {**env, "DAGSTER_HOME": str(empty_home)}
            server_counts(info, reset=True)
            real_runs, empty_runs = [], []
            for _ in range(repeats):
                real_runs.append(
                    _cli(["-m", "leads_pipeline.definitions", "-j", "sync_leads"], env)
                )
                empty_runs.append(
                    _cli(
                        [
                            "-f",
                            str(ROOT / "benchmarks" / "notion_empty_job.py"),
                            "-j",
                            "sync_leads",
                        ],
                        empty_env,
                    )
                )
            counts = server_counts(info)
            real, empty = statistics.median(real_runs), statistics.median(empty_runs)
            yield (
                {
                    "benchmark": "no-change",
                    "pages": pages,
                    "spread_tail": spread_tail,
                    "repeats": repeats,
                    "query_requests_per_sync": counts.get("query", 0) / repeats,
                    "server_requests": counts,
                    "sync_leads_seconds": real_runs,
                    "empty_job_seconds": empty_runs,
                    "median_sync_leads_seconds": real,
                    "median_empty_job_seconds": empty,
                    "median_difference_seconds": round(real - empty, 2),
                }
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Notion sync benchmarks.")
    parser.add_argument("which", nargs="+", choices=["paced", "unlimited", "no-change"])
    parser.add_argument("--paced-pages", type=int, default=30_000)
    parser.add_argument("--pages", type=int, default=100_000)
    parser.add_argument(
        "--spread-tail",
        action="store_true",
        help="Spread the pages the generator stamps with its end date one minute apart.",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="No-change syncs (each followed by an empty job) to take the medians of.",
    )
    options = parser.parse_args(argv)
    which = set(options.which)
    results = []
    if "paced" in which:
        results.append(bench_paced(options.paced_pages))
        print(json.dumps(results[-1]), flush=True)
    if which & {"unlimited", "no-change"}:
        for result in bench_unlimited_and_no_change(
            options.pages, which, options.spread_tail, options.repeats
        ):
            results.append(result)
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
