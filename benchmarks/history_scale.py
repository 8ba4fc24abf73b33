"""History at scale: what ``lead_history`` costs per sync, and the movement tables over it.

Two phases, each printing one JSON line per measurement, then a summary table:

``syncs``     A lake of N leads (default 100,000; pages from ``generate_pages`` templates, new ids)
              filled by a first sync, then S syncs (default 30) that each move 1 % of the leads
              one status further (random leads, a lead may move several times). Each sync is a
              run of the ``sync_leads`` job's selection in process, on one Dagster instance, as
              a deployment runs it: ``raw_notion_leads`` → ``leads`` → ``lead_history`` and
              everything downstream (counts, movement tables, downstream assets, every check).
              Per sync: the wall time of the run, the step time of ``lead_history`` and its
              share of the run (target ≤ 10 %); also its share of the ingestion steps alone
              (raw, leads, lead_history and its check), the strictest way to read it. Then
              ``lead_history``'s rows, files and bytes on disk.
``movement``  A ``lead_history`` of R rows (default 1,000,000: 250,000 leads with 1 to 7
              versions; statuses moving forward, some versions that keep their status, some
              deletions and restorations), written as a Delta table partitioned like the real
              one, in edit-time order over ``--history-commits`` appends (default 40, as syncs
              append it; 1: one commit sorted by lead), and the ``leads`` table of its current
              versions. Times each movement table as
              the analytics assets compute it, from the Delta datasets (best of ``--repeats``;
              target ≤ 1 s each): weekly and monthly status entries, status durations, cohorts.

Usage::

    .venv/bin/python benchmarks/history_scale.py
    .venv/bin/python benchmarks/history_scale.py --phases syncs --leads 100000 --syncs 30
    .venv/bin/python benchmarks/history_scale.py --phases movement --history-rows 1000000
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import logging
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable, write_deltalake
from pydantic import Field

from leads_pipeline.definitions import ASSETS
from leads_pipeline.defs.checks import HISTORY_CHECK, build_checks
from leads_pipeline.defs.jobs import sync_leads
from leads_pipeline.defs.resources import build_resources
from leads_pipeline.settings import load_settings
from leads_pipeline.sources.base import ListingStats, PageListingSource
from leads_pipeline.sources.sample_data import SAMPLE_SCHEMA, generate_pages
from leads_pipeline.tables import HISTORY_TABLE, LEADS_TABLE, RAW_TABLE

TEMPLATES = 20_000
CHANGED_SHARE = 0.01
SEED = 13
#: Edit time of the first changing sync's pages (the generated pages end on 2026-01-02).
FIRST_CHANGE = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
SYNC_SPACING = dt.timedelta(minutes=10)
STATUS_OPTIONS = [o["name"] for o in SAMPLE_SCHEMA["Statut"]["status"]["options"]]


# -- the source: generated pages, 1 % of them moved one status further per sync -------------------


@functools.cache
def templates() -> list[dict]:
    return generate_pages(TEMPLATES, 11)


def page_id(index: int) -> str:
    return str(uuid.UUID(int=index + 1, version=4))


def base_page(index: int) -> dict:
    template = templates()[index % TEMPLATES]
    pid = page_id(index)
    return {**template, "id": pid, "url": f"https://www.notion.so/{pid.replace('-', '')}"}


@functools.cache
def moved_sets(leads: int, syncs: int) -> tuple[tuple[int, ...], ...]:
    """The leads each changing sync moves (1 % of them, at random, the same for a seed)."""
    rng = random.Random(SEED)
    count = max(1, round(leads * CHANGED_SHARE))
    return tuple(tuple(sorted(rng.sample(range(leads), count))) for _ in range(syncs))


def status_after(page: dict, moves: int) -> str:
    value = page["properties"]["Statut"]["status"]
    start = STATUS_OPTIONS.index(value["name"]) if value else -1
    return STATUS_OPTIONS[(start + moves) % len(STATUS_OPTIONS)]


def changed_pages(leads: int, sync: int) -> list[dict]:
    """The pages changing sync ``sync`` (1-based) lists: their status moved once more."""
    sets = moved_sets(leads, sync)
    moves: dict[int, int] = {}
    for chosen in sets:
        for index in chosen:
            moves[index] = moves.get(index, 0) + 1
    edited = (FIRST_CHANGE + (sync - 1) * SYNC_SPACING).isoformat().replace("+00:00", "Z")
    pages = []
    for index in sets[-1]:
        page = base_page(index)
        properties = dict(page["properties"])
        statut = properties["Statut"]
        name = status_after(page, moves[index])
        option = next(o for o in SAMPLE_SCHEMA["Statut"]["status"]["options"] if o["name"] == name)
        properties["Statut"] = {**statut, "status": dict(option)}
        pages.append({**page, "properties": properties, "last_edited_time": edited})
    return pages


class MovingSource(PageListingSource):
    """N generated leads; sync ``sync`` > 0 lists only the pages that sync changed."""

    leads: int = Field(default=100_000)
    sync: int = Field(default=0)

    @property
    def source_name(self) -> str:
        return "sample"

    def identity(self) -> str:
        return "history-bench"

    def data_source_schema(self, log=None) -> Mapping[str, Mapping]:
        return SAMPLE_SCHEMA

    def list_pages(self, *, edited_on_or_after, stats: ListingStats, log=None) -> Iterator:
        if edited_on_or_after is None or self.sync == 0:
            for start in range(0, self.leads, 1000):
                pages = [base_page(i) for i in range(start, min(start + 1000, self.leads))]
                stats.requests += 10
                stats.pages += len(pages)
                yield pages
            return
        pages = changed_pages(self.leads, self.sync)
        stats.requests += -(-len(pages) // 100)
        stats.pages += len(pages)
        yield pages

    def latest_edit(self, *, after, stats):
        return None


def step_seconds(result: dg.ExecuteInProcessResult) -> dict[str, float]:
    return {
        e.step_key: e.event_specific_data.duration_ms / 1000
        for e in result.all_events
        if e.event_type_value == "STEP_SUCCESS"
    }


def history_step(steps: Mapping[str, float], name: str) -> float:
    return next(v for k, v in steps.items() if k == name)


def check_step(steps: Mapping[str, float]) -> float:
    return next((v for k, v in steps.items() if HISTORY_CHECK in k), 0.0)


#: The steps of the ingestion slice: the raw sync, leads (with its quality issues), the history.
INGESTION_STEPS = (RAW_TABLE, "leads_and_quality_issues", HISTORY_TABLE)


def ingestion_seconds(steps: Mapping[str, float]) -> float:
    return sum(steps.get(name, 0.0) for name in INGESTION_STEPS) + check_step(steps)


def directory_bytes(path: Path) -> tuple[int, int]:
    """(Parquet files, bytes of every file) under ``path``, the Delta log included."""
    files = [p for p in path.rglob("*") if p.is_file()]
    return sum(p.suffix == ".parquet" for p in files), sum(p.stat().st_size for p in files)


#: Dagster's console logger at WARNING: its DEBUG events would be most of the output.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def phase_syncs(workdir: Path, leads: int, syncs: int) -> list[dict]:
    settings = load_settings(
        {
            "LEADS_LAKE_URI": str(workdir / "lake"),
            "LEADS_WAREHOUSE_PATH": str(workdir / "warehouse.duckdb"),
            "LEADS_SOURCE": "sample",
        }
    )
    definitions = [*ASSETS, *build_checks(settings)]
    instance = dg.DagsterInstance.ephemeral()
    moved_sets(leads, syncs)  # drawn before timing: it stands for what users did in Notion
    templates()
    lines = []
    for sync in range(0, syncs + 1):
        if sync:
            changed_pages(leads, sync)  # built before timing: it stands for Notion's answer
        resources = {**build_resources(settings), "source": MovingSource(leads=leads, sync=sync)}
        started = time.perf_counter()
        result = dg.materialize(
            definitions,
            selection=sync_leads.selection,
            resources=resources,
            instance=instance,
            run_config=QUIET,
        )
        seconds = time.perf_counter() - started
        assert result.success
        evaluations = result.get_asset_check_evaluations()
        failed = [e.check_name for e in evaluations if not e.passed]
        assert not failed, failed
        [check] = [e for e in evaluations if e.check_name == HISTORY_CHECK]
        steps = step_seconds(result)
        history = history_step(steps, HISTORY_TABLE)
        ingestion = ingestion_seconds(steps)
        line = {
            "phase": "sync",
            "sync": sync,
            "kind": "initial" if sync == 0 else "1% moved",
            "sync_seconds": round(seconds, 3),
            "lead_history_seconds": round(history, 3),
            "lead_history_share": round(history / seconds, 4),
            "ingestion_seconds": round(ingestion, 3),
            "lead_history_share_of_ingestion": round(history / ingestion, 4),
            "check_seconds": round(check_step(steps), 3),
            "check_verified_fully": not bool(
                check.metadata.get("unchanged_since_last_pass", dg.MetadataValue.bool(False)).value
            ),
            "steps_seconds": {k: round(v, 3) for k, v in steps.items()},
        }
        print(json.dumps(line), flush=True)
        lines.append(line)
    table = DeltaTable(str(workdir / "lake" / HISTORY_TABLE))
    files, size = directory_bytes(workdir / "lake" / HISTORY_TABLE)
    leads_files, leads_size = directory_bytes(workdir / "lake" / LEADS_TABLE)
    summary = {
        "phase": "history_after_syncs",
        "leads": leads,
        "syncs": syncs,
        "lead_history_rows": table.to_pyarrow_dataset().count_rows(),
        "lead_history_current_rows": table.to_pyarrow_dataset()
        .filter(pc.field("is_current"))
        .count_rows(),
        "lead_history_delta_version": table.version(),
        "lead_history_parquet_files": files,
        "lead_history_bytes": size,
        "leads_parquet_files": leads_files,
        "leads_bytes": leads_size,
    }
    print(json.dumps(summary), flush=True)
    return [*lines, summary]


# -- movement tables over a generated history -----------------------------------------------------

MOVEMENT_LEADS_PER_ROW = 0.25  # 1 to 7 versions a lead: 4 on average


def generated_history(rows: int, seed: int = SEED) -> tuple[pa.Table, pa.Table]:
    """A ``lead_history`` of exactly ``rows`` versions and the ``leads`` of its current versions.

    Each lead starts in a random status at a random time of 2024–2025; each next version comes
    0–20 days later and moves one status further (70 %) or keeps it (another column changed). 3 %
    of the leads end with a tombstone, 1 % of those with at least 3 versions are deleted and
    restored at their last two versions; 1 % of versions have no status.
    """
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 8, int(rows * MOVEMENT_LEADS_PER_ROW * 1.1) + 10)
    ends = np.cumsum(counts)
    n_leads = int(np.searchsorted(ends, rows)) + 1
    counts = counts[:n_leads].copy()
    counts[-1] -= int(ends[n_leads - 1] - rows)
    lead_of = np.repeat(np.arange(n_leads), counts)
    starts = np.cumsum(counts) - counts
    version = np.arange(rows) - np.repeat(starts, counts) + 1
    is_last = version == np.repeat(counts, counts)
    moves = (rng.random(rows) < 0.7) & (version > 1)
    running = np.cumsum(moves)
    moves_so_far = running - np.repeat(running[starts], counts)
    first_status = rng.integers(0, len(STATUS_OPTIONS), n_leads)
    status_index = (np.repeat(first_status, counts) + moves_so_far) % len(STATUS_OPTIONS)
    statut = pa.array(np.array(STATUS_OPTIONS, dtype=object)[status_index], pa.string())
    statut = pc.if_else(pa.array(rng.random(rows) < 0.01), pa.scalar(None, pa.string()), statut)
    day_us = 86_400 * 1_000_000
    origin = int(dt.datetime(2024, 1, 1, tzinfo=dt.UTC).timestamp() * 1_000_000)
    lead_start = origin + rng.integers(0, 730 * day_us, n_leads)
    gaps = np.where(version > 1, rng.integers(0, 20 * day_us, rows), 0)
    gap_sum = np.cumsum(gaps)
    valid_from = np.repeat(lead_start, counts) + gap_sum - np.repeat(gap_sum[starts], counts)
    deleted_lead = rng.random(n_leads) < 0.03
    restored_lead = (rng.random(n_leads) < 0.01) & (counts >= 3)
    change = np.full(rows, "updated", dtype=object)
    change[version == 1] = "created"
    tomb = is_last & np.repeat(deleted_lead & ~restored_lead, counts)
    change[tomb] = "deleted"
    restored_rows = is_last & np.repeat(restored_lead, counts)
    change[restored_rows] = "restored"
    change[np.flatnonzero(restored_rows) - 1] = "deleted"
    is_current = is_last & (change != "deleted")
    next_from = np.append(valid_from[1:], 0)
    valid_to = np.where(is_last, 0, next_from)
    valid_to = np.where(change == "deleted", valid_from, valid_to)
    ids = pa.array([page_id(i) for i in range(n_leads)], pa.string()).take(pa.array(lead_of))
    ts = pa.timestamp("us", tz="UTC")
    history = pa.table(
        {
            "id": ids,
            "version": pa.array(version, pa.int64()),
            "valid_from": pa.array(valid_from, pa.int64()).cast(ts),
            "valid_to": pa.array(valid_to, pa.int64(), mask=valid_to == 0).cast(ts),
            "is_current": pa.array(is_current),
            "change": pa.array(change, pa.string()),
            "statut": statut,
            "date_prise_contact": pa.array(np.repeat(lead_start, counts), pa.int64()).cast(ts),
        }
    )
    current = history.filter(history["is_current"])
    contact = current["date_prise_contact"]
    reached = pc.index_in(current["statut"], pa.array(STATUS_OPTIONS))
    leads = pa.table(
        {
            "id": current["id"],
            "statut": current["statut"],
            "date_prise_contact": contact,
            **{
                column: pc.if_else(
                    pc.greater_equal(pc.fill_null(reached, -1), step),
                    pc.add(contact, pa.scalar(dt.timedelta(days=3 * step))),
                    pa.scalar(None, ts),
                )
                for step, column in (
                    (2, "date_reponse_prospect"),
                    (3, "date_appel_propose"),
                    (4, "date_appel_booke"),
                )
            },
        }
    )
    return history, leads


def leads_date_types(leads: pa.Table, like: pa.Schema | None) -> pa.Table:
    """``leads`` with its date columns in the types the pipeline's ``leads`` gives them."""
    if like is None:  # no real leads table: its date columns are date32 (property kind "date")
        return leads.cast(
            pa.schema(
                pa.field(f.name, pa.date32()) if f.name.startswith("date_") else f
                for f in leads.schema
            )
        )
    fields = [
        like.field(n) if n in like.names else leads.schema.field(n) for n in leads.schema.names
    ]
    return leads.cast(pa.schema(f.with_nullable(True) for f in fields))


def timed(function, repeats: int) -> tuple[float, float, int]:
    seconds, rows = [], 0
    for _ in range(repeats):
        started = time.perf_counter()
        rows = function().num_rows
        seconds.append(time.perf_counter() - started)
    return min(seconds), statistics.median(seconds), rows


def write_history(uri: str, history: pa.Table, commits: int) -> None:
    """Writes ``history`` as the syncs write it: in edit-time order, one append per commit
    (``commits`` > 1), or sorted by lead in one commit (``commits`` = 1)."""
    if commits <= 1:
        write_deltalake(uri, history, mode="overwrite", partition_by=["is_current"])
        return
    ordered = history.sort_by("valid_from")
    size = -(-ordered.num_rows // commits)
    for index, start in enumerate(range(0, ordered.num_rows, size)):
        part = ordered.slice(start, size)
        mode = "overwrite" if index == 0 else "append"
        write_deltalake(uri, part, mode=mode, partition_by=["is_current"])


def phase_movement(workdir: Path, rows: int, repeats: int, commits: int) -> list[dict]:
    from leads_pipeline.transform.movement import (
        compute_cohort_conversion,
        compute_status_durations,
        compute_status_entries,
    )
    from leads_pipeline.transform.status_semantics import ordered_statuses

    history, leads = generated_history(rows)
    real_leads = workdir / "lake" / LEADS_TABLE
    like = (
        pa.schema(DeltaTable(str(real_leads)).schema().to_arrow()) if real_leads.exists() else None
    )
    leads = leads_date_types(leads, like)
    history_uri = str(workdir / "movement" / HISTORY_TABLE)
    leads_uri = str(workdir / "movement" / LEADS_TABLE)
    write_history(history_uri, history, commits)
    write_deltalake(leads_uri, leads, mode="overwrite")
    statuses = ordered_statuses(SAMPLE_SCHEMA["Statut"])
    now = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    tables = {
        "weekly_status_entries": lambda: compute_status_entries(
            DeltaTable(history_uri).to_pyarrow_dataset(), "week", statuses
        ),
        "monthly_status_entries": lambda: compute_status_entries(
            DeltaTable(history_uri).to_pyarrow_dataset(), "month", statuses
        ),
        "status_durations": lambda: compute_status_durations(
            DeltaTable(history_uri).to_pyarrow_dataset(), statuses, now
        ),
        "cohort_conversion": lambda: compute_cohort_conversion(
            DeltaTable(leads_uri).to_pyarrow_dataset()
        ),
    }
    lines = []
    for name, function in tables.items():
        best, median, out_rows = timed(function, repeats)
        line = {
            "phase": "movement",
            "table": name,
            "history_rows": history.num_rows,
            "history_commits": commits,
            "leads_rows": leads.num_rows,
            "seconds_best": round(best, 3),
            "seconds_median": round(median, 3),
            "repeats": repeats,
            "result_rows": out_rows,
        }
        print(json.dumps(line), flush=True)
        lines.append(line)
    return lines


# -- summary --------------------------------------------------------------------------------------


def summary(lines: list[dict]) -> str:
    out = []
    syncs = [x for x in lines if x["phase"] == "sync" and x["sync"] > 0]
    if syncs:
        shares = [x["lead_history_share"] for x in syncs]
        ingestion_shares = [x["lead_history_share_of_ingestion"] for x in syncs]
        seconds = [x["sync_seconds"] for x in syncs]
        history = [x["lead_history_seconds"] for x in syncs]
        checks = [x["check_seconds"] for x in syncs]
        initial = next(x for x in lines if x["phase"] == "sync" and x["sync"] == 0)
        after = next(x for x in lines if x["phase"] == "history_after_syncs")
        out += [
            "| measurement | median | max | target |",
            "| --- | --- | --- | --- |",
            f"| sync (1 % moved), the whole `sync_leads` run, s | {statistics.median(seconds):.2f} | "
            f"{max(seconds):.2f} | — |",
            f"| lead_history step, s | {statistics.median(history):.3f} | {max(history):.3f} | — |",
            f"| lead_history share of the sync | {statistics.median(shares):.1%} | "
            f"{max(shares):.1%} | ≤ 10 % |",
            f"| lead_history share of the ingestion steps alone | "
            f"{statistics.median(ingestion_shares):.1%} | {max(ingestion_shares):.1%} | — |",
            f"| history_matches_leads step, s | {statistics.median(checks):.3f} | "
            f"{max(checks):.3f} | — |",
            "",
            f"Initial sync of {after['leads']:,} leads: {initial['sync_seconds']:.2f} s "
            f"(lead_history {initial['lead_history_seconds']:.2f} s). After {after['syncs']} "
            f"syncs: lead_history {after['lead_history_rows']:,} rows "
            f"({after['lead_history_current_rows']:,} current), "
            f"{after['lead_history_bytes'] / 1e6:.1f} MB in {after['lead_history_parquet_files']} "
            f"Parquet files (leads: {after['leads_bytes'] / 1e6:.1f} MB).",
            "",
        ]
    movement = [x for x in lines if x["phase"] == "movement"]
    if movement:
        first = movement[0]
        out += [
            f"Movement tables from {first['history_rows']:,} history rows "
            f"({first['leads_rows']:,} leads, written in {first['history_commits']} commits):",
            "",
            "| table | best, s | median, s | target |",
            "| --- | --- | --- | --- |",
            *(
                f"| {x['table']} | {x['seconds_best']:.3f} | {x['seconds_median']:.3f} | ≤ 1 s |"
                for x in movement
            ),
        ]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phases", default="syncs,movement")
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--syncs", type=int, default=30)
    parser.add_argument("--history-rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--history-commits",
        type=int,
        default=40,
        help="appends the generated history is written in, in edit-time order as syncs write "
        "it (1: one commit sorted by lead)",
    )
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    logging.getLogger("dagster").setLevel(logging.WARNING)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="history_scale_"))
    print(f"workdir: {workdir}", flush=True)
    lines: list[dict] = []
    phases = args.phases.split(",")
    if "syncs" in phases:
        lines += phase_syncs(workdir, args.leads, args.syncs)
    if "movement" in phases:
        lines += phase_movement(workdir, args.history_rows, args.repeats, args.history_commits)
    print()
    print(summary(lines))


if __name__ == "__main__":
    main()
