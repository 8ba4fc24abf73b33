"""Lake and warehouse at scale: 1,000,000 leads, generated in-process (no HTTP).

Prints, for each phase run in a fresh subprocess, the wall time and the peak RSS:

* ``initial``: the first sync of N pages (raw → leads → weekly and monthly counts);
* ``changes``: a sync of 10,000 changed and 1,000 trashed pages into that lake;
* ``aggregate``: weekly + monthly aggregation of ``leads``, and the old service's UNPIVOT/PIVOT SQL;
* ``parse``: N page objects → typed leads rows, our path (JSON kept verbatim, parsed in DuckDB),
  timed as two steps: pages → raw rows, then raw rows → typed rows;
* ``naive``: the naive path on the same pages — per-row pydantic models (of the whole Notion page,
  and of the flat lead only), ``polars.from_dicts``, a full table rewrite and the old SQL.

Usage::

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python benchmarks/lake_scale.py --leads 1000000
"""

import argparse
import datetime as dt
import functools
import json
import logging
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

TEMPLATES = 20_000
CHANGED = 10_000
TRASHED = 1_000
CHANGE_TIME = "2026-02-01T09:00:00.000Z"


def page_stream(count: int, batch: int = 1000) -> Iterator[list[dict]]:
    """``count`` distinct pages built from 20,000 generated templates (same JSON, new ids)."""
    from leads_pipeline.sources.sample_data import generate_pages

    templates = generate_pages(min(count, TEMPLATES), 11)
    for start in range(0, count, batch):
        pages = []
        for i in range(start, min(start + batch, count)):
            page_id = str(uuid.UUID(int=i + 1, version=4))
            template = templates[i % len(templates)]
            pages.append({**template, "id": page_id, "url": f"https://www.notion.so/{page_id}"})
        yield pages


@functools.cache
def changed_pages(count: int) -> list[dict]:
    """10,000 edited pages and 1,000 trashed ones, spread over the whole table."""
    step = count // (CHANGED + TRASHED)
    wanted = {i * step for i in range(CHANGED + TRASHED)}
    out = []
    index = -1
    for pages in page_stream(count):
        for page in pages:
            index += 1
            if index not in wanted:
                continue
            page = json.loads(json.dumps(page))
            page["last_edited_time"] = CHANGE_TIME
            if len(out) < CHANGED:
                page["properties"]["Statut"]["status"] = {
                    "id": "w",
                    "name": "Gagné",
                    "color": "green",
                }
                page["properties"]["Date de relance"]["date"] = {
                    "start": "2026-01-30",
                    "end": None,
                    "time_zone": None,
                }
            else:
                page["in_trash"] = True
            out.append(page)
    return out


def bench_source_class():
    from pydantic import Field

    from leads_pipeline.sources.base import ListingStats, PageListingSource
    from leads_pipeline.sources.sample_data import SAMPLE_SCHEMA

    class BenchSource(PageListingSource):
        leads: int = Field(default=1_000_000)

        @property
        def source_name(self) -> str:
            return "sample"

        def identity(self) -> str:
            return "bench"

        def data_source_schema(self, log=None) -> Mapping[str, Mapping]:
            return SAMPLE_SCHEMA

        def list_pages(self, *, edited_on_or_after, stats: ListingStats, log=None):
            if edited_on_or_after is None:
                for pages in page_stream(self.leads):
                    stats.requests += 10
                    stats.pages += len(pages)
                    yield pages
            else:
                pages = changed_pages(self.leads)
                stats.pages += len(pages)
                yield pages

        def latest_edit(self, *, after, stats):
            return None

    return BenchSource


def run_sync(workdir: Path, leads: int) -> dict:
    import dagster as dg

    from leads_pipeline.defs.assets import analytics, ingestion
    from leads_pipeline.defs.resources import LakeResource, PropertyMapResource, WarehouseResource

    resources = {
        "source": bench_source_class()(leads=leads),
        "lake": LakeResource(uri=str(workdir / "lake")),
        "warehouse": WarehouseResource(path=str(workdir / "warehouse.duckdb")),
        "property_map": PropertyMapResource(),
    }
    logging.getLogger("dagster").setLevel(logging.WARNING)
    started = time.perf_counter()
    result = dg.materialize([*ingestion.ASSETS, *analytics.ASSETS], resources=resources)
    seconds = time.perf_counter() - started
    assert result.success
    steps = {
        e.step_key: round(e.event_specific_data.duration_ms / 1000, 2)
        for e in result.all_events
        if e.event_type_value == "STEP_SUCCESS"
    }
    return {"seconds": round(seconds, 2), "steps": steps}


def phase_initial(workdir: Path, leads: int) -> dict:
    return run_sync(workdir, leads)


def phase_changes(workdir: Path, leads: int) -> dict:
    changes = changed_pages(leads)  # built before timing: it stands for Notion's answer
    assert len(changes) == CHANGED + TRASHED
    result = run_sync(workdir, leads)
    from deltalake import DeltaTable

    result["leads_rows_after"] = (
        DeltaTable(str(workdir / "lake" / "leads")).to_pyarrow_dataset().count_rows()
    )
    return result


OLD_SQL = """
WITH unpivoted_and_monthly AS (
  SELECT DATE_TRUNC('{unit}', date) AS periode, type_evenement, date
  FROM (UNPIVOT leads ON date_appel_booke, date_appel_propose, date_prise_contact, date_relance,
        date_reponse_prospect INTO NAME type_evenement VALUE date)
  WHERE date IS NOT NULL
)
PIVOT unpivoted_and_monthly ON type_evenement USING COUNT(date) GROUP BY periode ORDER BY periode
"""


def phase_aggregate(workdir: Path, leads: int) -> dict:
    import duckdb
    from deltalake import DeltaTable

    from leads_pipeline.storage.warehouse import compute_event_counts

    dataset = DeltaTable(str(workdir / "lake" / "leads")).to_pyarrow_dataset()
    ours, old = [], []
    for _ in range(5):
        started = time.perf_counter()
        compute_event_counts(dataset, "week")
        compute_event_counts(dataset, "month")
        ours.append(time.perf_counter() - started)
        con = duckdb.connect()
        con.register("leads", dataset)
        started = time.perf_counter()
        con.sql(OLD_SQL.format(unit="week")).fetchall()
        con.sql(OLD_SQL.format(unit="month")).fetchall()
        old.append(time.perf_counter() - started)
        con.close()
    return {
        "ours_seconds": round(min(ours), 3),
        "old_sql_seconds": round(min(old), 3),
        "rows": dataset.count_rows(),
    }


def phase_parse(workdir: Path, leads: int) -> dict:
    """Our path: pages → ``raw_notion_leads`` rows (JSON kept verbatim) → typed ``leads`` rows."""
    from leads_pipeline.sources.sample_data import SAMPLE_SCHEMA
    from leads_pipeline.storage.raw_store import pages_to_raw
    from leads_pipeline.transform.parsing import parse_pages
    from leads_pipeline.transform.property_map import load_property_map, resolve

    now = dt.datetime.now(dt.UTC)
    columns = resolve(load_property_map(), SAMPLE_SCHEMA)
    batches = list(page_stream(leads, batch=100_000))
    started = time.perf_counter()
    raw = [pages_to_raw(pages, now) for pages in batches]
    to_raw = time.perf_counter() - started
    del batches
    started = time.perf_counter()
    rows = sum(parse_pages(r, columns, SAMPLE_SCHEMA, now).leads.num_rows for r in raw)
    parse = time.perf_counter() - started
    assert rows == leads
    return {
        "raw_rows_to_typed_seconds": round(parse, 2),
        "pages_to_raw_seconds": round(to_raw, 2),
        "pages_to_typed_seconds": round(to_raw + parse, 2),
    }


def _page_models():
    """Pydantic models of a Notion page, as a naive ingestion would declare them."""
    from typing import Annotated, Literal

    from pydantic import BaseModel, Field

    class RichText(BaseModel):
        type: str
        plain_text: str
        href: str | None = None

    class Option(BaseModel):
        id: str | None = None
        name: str
        color: str | None = None

    class DateValue(BaseModel):
        start: str
        end: str | None = None
        time_zone: str | None = None

    class User(BaseModel):
        object: str
        id: str

    class Title(BaseModel):
        id: str
        type: Literal["title"]
        title: list[RichText]

    class Text(BaseModel):
        id: str
        type: Literal["rich_text"]
        rich_text: list[RichText]

    class Email(BaseModel):
        id: str
        type: Literal["email"]
        email: str | None

    class Phone(BaseModel):
        id: str
        type: Literal["phone_number"]
        phone_number: str | None

    class Status(BaseModel):
        id: str
        type: Literal["status"]
        status: Option | None

    class Select(BaseModel):
        id: str
        type: Literal["select"]
        select: Option | None

    class MultiSelect(BaseModel):
        id: str
        type: Literal["multi_select"]
        multi_select: list[Option]

    class Date(BaseModel):
        id: str
        type: Literal["date"]
        date: DateValue | None

    class Number(BaseModel):
        id: str
        type: Literal["number"]
        number: float | None

    class People(BaseModel):
        id: str
        type: Literal["people"]
        people: list[User]

    Property = Annotated[
        Title | Text | Email | Phone | Status | Select | MultiSelect | Date | Number | People,
        Field(discriminator="type"),
    ]

    class Page(BaseModel):
        id: str
        created_time: dt.datetime
        last_edited_time: dt.datetime
        in_trash: bool
        url: str
        properties: dict[str, Property]

    return Page


def phase_naive(workdir: Path, leads: int) -> dict:
    """The naive path: per-row pydantic models, normalising, ``polars.from_dicts``, a rewrite.

    Two variants of the per-row step are timed: ``page_models`` validates each raw page with
    pydantic models of the Notion page (what "per-row pydantic models of the raw pages" means,
    the naive approach whose 78 s per million pages the targets compare to), then builds the flat ``Lead`` model;
    ``flat_models`` extracts the values by hand and validates only the flat ``Lead``.
    """
    import duckdb
    import polars as pl
    from deltalake import DeltaTable, write_deltalake
    from pydantic import BaseModel

    class Lead(BaseModel):
        id: str
        nom: str
        email: str | None
        telephone: str | None
        date_prise_contact: dt.datetime | None
        date_appel_booke: dt.datetime | None
        date_appel_propose: dt.datetime | None
        date_relance: dt.datetime | None
        date_reponse_prospect: dt.datetime | None
        statut: str

    def date_of(prop):
        value = prop.get("date")
        return value["start"] if value else None

    def transform_notion_data(page: dict) -> dict:
        p = page["properties"]
        return {
            "id": page["id"],
            "nom": "".join(t["plain_text"] for t in p["Nom"]["title"]),
            "email": p["Email"]["email"],
            "telephone": p["Téléphone"]["phone_number"],
            "date_prise_contact": date_of(p["Date de prise de contact"]),
            "date_appel_booke": date_of(p["Date d'appel booké"]),
            "date_appel_propose": date_of(p["Date d'appel proposé"]),
            "date_relance": date_of(p["Date de relance"]),
            "date_reponse_prospect": date_of(p["Date de réponse du prospect"]),
            "statut": (p["Statut"]["status"] or {}).get("name", ""),
        }

    page_model = _page_models()

    def from_page_model(page) -> Lead:
        p = page.properties

        def start(name):
            value = p[name].date
            return value.start if value else None

        return Lead(
            id=page.id,
            nom="".join(t.plain_text for t in p["Nom"].title),
            email=p["Email"].email,
            telephone=p["Téléphone"].phone_number,
            date_prise_contact=start("Date de prise de contact"),
            date_appel_booke=start("Date d'appel booké"),
            date_appel_propose=start("Date d'appel proposé"),
            date_relance=start("Date de relance"),
            date_reponse_prospect=start("Date de réponse du prospect"),
            statut=p["Statut"].status.name if p["Statut"].status else "",
        )

    batches = list(page_stream(leads, batch=100_000))
    started = time.perf_counter()
    models = [from_page_model(page_model(**page)) for pages in batches for page in pages]
    page_models_seconds = time.perf_counter() - started
    del models
    started = time.perf_counter()
    models = [Lead(**transform_notion_data(page)) for pages in batches for page in pages]
    pydantic_seconds = time.perf_counter() - started
    started = time.perf_counter()
    # Normalising: naive and offset datetimes mixed would make polars fail.
    records = [
        {
            k: v.replace(tzinfo=None) if isinstance(v, dt.datetime) else v
            for k, v in m.model_dump().items()
        }
        for m in models
    ]
    normalise_seconds = time.perf_counter() - started
    started = time.perf_counter()
    frame = pl.from_dicts(records, infer_schema_length=None)
    polars_seconds = time.perf_counter() - started
    table = frame.to_arrow()
    target = str(workdir / "naive_leads")
    started = time.perf_counter()
    write_deltalake(target, table, mode="overwrite")
    write_seconds = time.perf_counter() - started
    con = duckdb.connect()
    con.register("leads", DeltaTable(target).to_pyarrow_dataset())
    s = time.perf_counter()
    con.sql(OLD_SQL.format(unit="week")).fetchall()
    con.sql(OLD_SQL.format(unit="month")).fetchall()
    rest = normalise_seconds + polars_seconds
    return {
        "parse_seconds_page_models": round(page_models_seconds + rest, 2),
        "parse_seconds_flat_models": round(pydantic_seconds + rest, 2),
        "pydantic_page_models_seconds": round(page_models_seconds, 2),
        "pydantic_flat_models_seconds": round(pydantic_seconds, 2),
        "normalise_seconds": round(normalise_seconds, 2),
        "polars_seconds": round(polars_seconds, 2),
        "full_rewrite_seconds": round(write_seconds, 2),
        "old_sql_seconds": round(time.perf_counter() - s, 3),
    }


PHASES = {
    "initial": phase_initial,
    "changes": phase_changes,
    "aggregate": phase_aggregate,
    "parse": phase_parse,
    "naive": phase_naive,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=1_000_000)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--phase", choices=PHASES)
    parser.add_argument("--phases", default=",".join(PHASES))
    args = parser.parse_args()
    if args.phase:
        figures = PHASES[args.phase](args.workdir, args.leads)
        figures["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        print(json.dumps(figures))
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="lake_scale_"))
    print(f"leads: {args.leads:,}  workdir: {workdir}")
    for phase in args.phases.split(","):
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--phase",
                phase,
                "--workdir",
                str(workdir),
                "--leads",
                str(args.leads),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode:
            print(f"{phase}: FAILED\n{out.stderr[-3000:]}")
            sys.exit(1)
        print(f"{phase}: {out.stdout.strip().splitlines()[-1]}", flush=True)


if __name__ == "__main__":
    main()
