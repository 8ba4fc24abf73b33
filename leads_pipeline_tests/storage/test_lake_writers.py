"""Several writers on one lake, with no Dagster pool between them: the lake protects itself.

Two first loads racing (threads that both read the table empty before either commits), two first
syncs from two Dagster instances started together (separate ``DAGSTER_HOME``s, the fake Notion over
HTTP holding both listings until both are done), racing merges, and the repair of a lake that an
older version filled twice. On a local lake and on the moto S3 server.
"""

from __future__ import annotations

import collections
import datetime as dt
import os
import subprocess
import sys
import threading
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError

from leads_pipeline.defs.assets import ingestion
from leads_pipeline.sources.sample_data import SAMPLE_DATABASE_ID
from leads_pipeline.storage.lake import ACTION, UPSERT, DeltaLake
from leads_pipeline.storage.raw_store import RAW_SCHEMA, append_raw, load_schema, pages_to_raw
from leads_pipeline.storage.warehouse import Warehouse
from leads_pipeline.tables import LEADS_TABLE, RAW_TABLE, WEEK
from leads_pipeline.transform.leads import derive_leads
from leads_pipeline.transform.property_map import load_property_map, resolve
from leads_pipeline_tests.fake_notion import DEFAULT_TOKEN, FakeNotion
from leads_pipeline_tests.lake_helpers import Workspace, metadata_of
from leads_pipeline_tests.pages import date_value, make_page, rich
from leads_pipeline_tests.storage.test_cloud_storage import s3_endpoint  # noqa: F401 (a fixture)

WEEKLY_TABLE = WEEK.table()

REPO = Path(__file__).resolve().parents[2]
CONTACT = "Date de prise de contact"
BUCKET_LAKE = "s3://leads-lake/writers/lake"
BARRIER_SECONDS = 120


def page(n: int, edited: str = "2025-03-01T10:00:00.000Z", name: str | None = None) -> dict:
    """A lead page whose first contact falls in week ``n % 9`` of 2025."""
    day = dt.date(2025, 1, 6) + dt.timedelta(weeks=n % 9, days=n % 5)
    return make_page(
        f"00000000-0000-4000-8000-{n:012d}",
        nom=rich(name or f"Lead {n}"),
        dates={CONTACT: date_value(day.isoformat())},
        edited=edited,
    )


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path) -> str:
    """A lake root on local disk, or on the moto S3 server (started for the ``s3`` case)."""
    if request.param == "s3":
        request.getfixturevalue("s3_endpoint")
        return BUCKET_LAKE
    return str(tmp_path / "lake")


def rows_of(lake: DeltaLake, name: str) -> list[dict]:
    return lake.load(name).to_pyarrow_dataset().to_table().to_pylist()


def operations(lake: DeltaLake, name: str) -> list[str]:
    """The operations of the table's commits, oldest first."""
    return [c["operation"] for c in reversed(lake.load(name).history())]


def run_together(*targets) -> list:
    """Runs each callable in its own thread, started together; returns results (or raises)."""
    results: list = [None] * len(targets)
    errors: list = []

    def run(i, target):
        try:
            results[i] = target()
        except BaseException as error:  # re-raised below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i, t)) for i, t in enumerate(targets)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=BARRIER_SECONDS + 60)
    if errors:
        raise errors[0]
    return results


def held_until_both_started(table: pa.Table, barrier: threading.Barrier):
    """``table``'s batches; the second waits until the other writer has started streaming too.

    A writer reads the table (empty) before it streams its first batch, and commits after its last:
    holding the second batch makes both read the empty table before either commits.
    """
    batches = table.to_batches(max_chunksize=max(1, table.num_rows // 4))
    yield batches[0]
    barrier.wait(timeout=BARRIER_SECONDS)
    yield from batches[1:]


def without_synced_at(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "synced_at"}


def newest_copies(*copies: list[dict]) -> dict[str, dict]:
    """Per page, the copy with the latest ``last_edited_time``, then the latest ``synced_at``."""
    newest: dict[str, dict] = {}
    for rows in copies:
        for row in rows:
            best = newest.get(row["page_id"])
            if best is None or (row["last_edited_time"], row["synced_at"]) > (
                best["last_edited_time"],
                best["synced_at"],
            ):
                newest[row["page_id"]] = row
    return newest


# -- first loads racing ---------------------------------------------------------------------------


def test_two_first_loads_racing_keep_one_copy_of_each_page(root):
    """Both writers read the raw table empty; one appends, the other merges its newer copies."""
    lake = DeltaLake(root)
    synced = dt.datetime(2025, 3, 2, 8, 0, tzinfo=dt.UTC)
    # Writer a listed pages 0-59; writer b, later, pages 20-79, where 20-39 had been edited since.
    listing_a = [page(n) for n in range(60)]
    listing_b = [page(n) for n in range(40, 80)] + [
        page(n, edited="2025-03-02T09:00:00.000Z", name=f"Lead {n} edited") for n in range(20, 40)
    ]
    raw_a = pages_to_raw(listing_a, synced)
    raw_b = pages_to_raw(listing_b, synced + dt.timedelta(minutes=1))
    barrier = threading.Barrier(2)
    outcomes = run_together(
        lambda: append_raw(lake, held_until_both_started(raw_a, barrier), {"writer": "a"}),
        lambda: append_raw(lake, held_until_both_started(raw_b, barrier), {"writer": "b"}),
    )

    stored = rows_of(lake, RAW_TABLE)
    ids = [r["page_id"] for r in stored]
    assert len(ids) == len(set(ids)) == 80
    # Each page's newest edit; where both copies are equal, either one's synced_at.
    expected = newest_copies(raw_a.to_pylist(), raw_b.to_pylist())
    assert {r["page_id"]: without_synced_at(r) for r in stored} == {
        k: without_synced_at(r) for k, r in expected.items()
    }
    assert {r["synced_at"] for r in stored} <= {synced, synced + dt.timedelta(minutes=1)}
    # One writer's append landed; the other's failed and was merged instead (not appended):
    # a merge of a's pages adds 0-19; one of b's adds 60-79 and updates the edited 20-39.
    assert operations(lake, RAW_TABLE) == ["CREATE TABLE", "WRITE", "MERGE"]
    assert sorted((o.inserted, o.updated) for o in outcomes) in (
        [(20, 0), (60, 0)],
        [(20, 20), (60, 0)],
    )


def test_a_first_load_into_a_table_filled_meanwhile_merges(tmp_path):
    """A writer that read raw empty but writes after another one's first load merges by page."""
    lake = DeltaLake(str(tmp_path / "lake"))
    synced = dt.datetime(2025, 3, 2, 8, 0, tzinfo=dt.UTC)
    first = pages_to_raw([page(n) for n in range(10)], synced + dt.timedelta(minutes=5))
    # The late writer's copies: pages 0-4 older (synced before), 5-9 edited since, 10-14 new.
    late = pages_to_raw(
        [page(n) for n in range(5)]
        + [page(n, edited="2025-03-02T09:00:00.000Z", name="edited") for n in range(5, 15)],
        synced,
    )
    append_raw(lake, first.to_batches(), {"writer": "first"})
    outcome = append_raw(lake, late.to_batches(), {"writer": "late"})

    assert (outcome.inserted, outcome.updated) == (5, 5)
    stored = {r["page_id"]: r for r in rows_of(lake, RAW_TABLE)}
    assert len(rows_of(lake, RAW_TABLE)) == 15
    assert stored == newest_copies(first.to_pylist(), late.to_pylist())
    # Copies equal but for a later synced_at change nothing, and commit nothing.
    again = pages_to_raw([page(n) for n in range(5)], synced + dt.timedelta(hours=1))
    version = lake.load(RAW_TABLE).version()
    assert not append_raw(lake, again.to_batches(), {"writer": "again"}).committed
    assert lake.load(RAW_TABLE).version() == version


class _RendezvousSchema(dict):
    """The data source's schema, whose first read by one derivation waits for the other's.

    ``derive_leads`` reads the schema when it parses its first batch: after it has read ``leads``
    empty, before it commits. Both derivations then read the empty table before either commits.
    (The first two reads wait, whichever threads make them: delta-rs pulls the batches, and so
    parses them, on its own threads.)
    """

    def __init__(self, schema, barrier: threading.Barrier):
        super().__init__(schema)
        self._barrier = barrier
        self._reads = 0
        self._lock = threading.Lock()

    def items(self):
        with self._lock:
            self._reads += 1
            wait = self._reads <= self._barrier.parties
        if wait:
            self._barrier.wait(timeout=BARRIER_SECONDS)
        return super().items()


def test_two_first_derivations_racing_keep_one_lead_per_page(tmp_path):
    """Both derivations read ``leads`` empty; the one whose append fails derives again (merge)."""
    ws = Workspace(tmp_path)
    pages = [page(n) for n in range(300)]
    ws.publish(pages)
    assert dg.materialize([ingestion.raw_notion_leads], resources=ws.resources()).success
    lake = DeltaLake(ws.lake_uri)
    schema, bound = load_schema(lake)
    mapping = load_property_map(None)
    columns = resolve(mapping, schema, bound)
    barrier = threading.Barrier(2)
    shared = _RendezvousSchema(schema, barrier)
    now = dt.datetime.now(dt.UTC)
    outcomes = run_together(
        *[lambda: derive_leads(lake, columns, shared, mapping.fingerprint(), now) for _ in range(2)]
    )

    leads = rows_of(lake, LEADS_TABLE)
    assert sorted(r["id"] for r in leads) == sorted(p["id"] for p in pages)
    assert {r["id"]: r["nom"] for r in leads} == {
        p["id"]: p["properties"]["Nom"]["title"][0]["plain_text"] for p in pages
    }
    assert operations(lake, LEADS_TABLE)[:2] == ["CREATE TABLE", "WRITE"]
    assert "WRITE" not in operations(lake, LEADS_TABLE)[2:]  # the loser merged, never appended
    assert sorted(o.leads.inserted for o in outcomes) == [0, 300]


# -- merges racing --------------------------------------------------------------------------------


def test_delta_rs_rejects_a_merge_whose_table_changed_under_it(tmp_path):
    """The conflict detection the lake's merges rely on: a merge read before another's commit."""
    uri = str(tmp_path / "shared")
    write_deltalake(uri, pa.table({"id": ["seed"], "writer": ["seed"]}))
    stale = DeltaTable(uri)  # both writers read this version
    new_keys = pa.table({"id": ["k1", "k2"], "writer": ["a", "a"]})
    DeltaTable(uri).merge(new_keys, "s.id = t.id", "s", "t").when_not_matched_insert_all().execute()
    with pytest.raises(CommitFailedError, match="concurrent"):
        (
            stale.merge(new_keys, "s.id = t.id", "s", "t")
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute()
        )
    assert sorted(DeltaTable(uri).to_pyarrow_table()["id"].to_pylist()) == ["k1", "k2", "seed"]


def _upserts(root: str, writer: str, keys: int, rounds: int) -> None:
    lake = DeltaLake(root)
    for round_ in range(rounds):
        rows = pa.table(
            {
                "id": [f"k{round_}-{i}" for i in range(keys)],
                "writer": [writer] * keys,
                ACTION: [UPSERT] * keys,
            }
        )
        lake.upsert("shared", rows, key="id", metadata={"writer": writer})


def test_merges_racing_on_the_same_new_keys_end_with_one_row_per_key(root):
    """Each round, both writers insert the same new keys: a merge that lost is redone as an update."""
    DeltaLake(root).upsert(
        "shared", pa.table({"id": ["seed"], "writer": ["seed"], ACTION: [UPSERT]}), key="id"
    )
    run_together(*[lambda w=w: _upserts(root, w, keys=200, rounds=6) for w in "ab"])

    ids = [r["id"] for r in rows_of(DeltaLake(root), "shared")]
    expected = {"seed"} | {f"k{r}-{i}" for r in range(6) for i in range(200)}
    assert collections.Counter(ids) == collections.Counter(expected)


# -- two Dagster instances --------------------------------------------------------------------------


class _ListingRendezvous(FakeNotion):
    """The fake Notion API holding each run's last listing page until both runs asked for theirs.

    A run reads the lake's state before it lists, and writes after its listing: both runs then find
    the lake empty, and both make a first load.
    """

    def __init__(self, runs: int = 2):
        super().__init__()
        self._barrier = threading.Barrier(runs)
        self._held = 0

    def handle(self, method, raw_path, headers, body):
        status, answer_headers, answer = super().handle(method, raw_path, headers, body)
        if raw_path.split("?")[0].endswith("/query") and b'"has_more":false' in answer:
            with self.lock:
                self._held += 1
                hold = self._held <= self._barrier.parties
            if hold:  # outside the fake's lock: the other run's requests go on meanwhile
                self._barrier.wait(timeout=BARRIER_SECONDS)
        return status, answer_headers, answer


def _sync_in_own_instance(home: Path, lake: str, warehouse: Path, fake: FakeNotion):
    """``sync_leads`` run headless by Dagster's CLI under its own ``DAGSTER_HOME``."""
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "DAGSTER_HOME": str(home),
        "NOTION_TOKEN": DEFAULT_TOKEN,
        "NOTION_DATABASE_ID": SAMPLE_DATABASE_ID,
        "NOTION_API_BASE_URL": fake.url,
        "LEADS_LAKE_URI": lake,
        "LEADS_WAREHOUSE_PATH": str(warehouse),
    }
    dagster = Path(sys.executable).with_name("dagster")
    return subprocess.Popen(
        [str(dagster), "job", "execute", "-m", "leads_pipeline.definitions", "-j", "sync_leads"],
        env=env,
        cwd=home,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def weekly_first_contacts(pages: list[dict]) -> dict[str, int]:
    """Reference weekly counts of first contacts, from the pages (ISO weeks, ISO years)."""
    counts: collections.Counter[str] = collections.Counter()
    for p in pages:
        day = dt.date.fromisoformat(p["properties"][CONTACT]["date"]["start"])
        year, week, _ = day.isocalendar()
        counts[f"{year}-W{week:02d}"] += 1
    return dict(counts)


def test_two_first_syncs_from_two_instances_keep_one_copy_of_each_page(root, tmp_path):
    pages = [page(n) for n in range(250)]
    fake = _ListingRendezvous()
    fake.add_database()
    fake.seed(pages)
    with fake:
        runs = [
            _sync_in_own_instance(tmp_path / f"home-{w}", root, tmp_path / f"{w}.duckdb", fake)
            for w in "ab"
        ]
        logs = [run.communicate(timeout=600)[0] for run in runs]
    for run, log in zip(runs, logs, strict=True):
        assert run.returncode == 0, log[-4000:]

    lake = DeltaLake(root)
    expected_ids = sorted(p["id"] for p in pages)
    assert sorted(r["page_id"] for r in rows_of(lake, RAW_TABLE)) == expected_ids
    assert sorted(r["id"] for r in rows_of(lake, "leads")) == expected_ids
    # Both runs made a first load; only one append landed.
    assert operations(lake, RAW_TABLE).count("WRITE") == 1
    reference = weekly_first_contacts(pages)
    for w in "ab":
        with Warehouse(str(tmp_path / f"{w}.duckdb")).read() as con:
            weeks = con.sql(
                f"SELECT semaine, date_prise_contact FROM {WEEKLY_TABLE} "
                "WHERE date_prise_contact > 0"
            ).fetchall()
        assert dict(weeks) == reference


# -- repair ---------------------------------------------------------------------------------------


def _duplicate_like_an_older_version(ws: Workspace, pages: list[dict], edited: dict[int, dict]):
    """Appends a second copy of every raw row and lead, as two racing first syncs used to.

    The second raw copy of the pages in ``edited`` is that newer page; the others are the same
    pages synced a minute later.
    """
    raw = ws.table(RAW_TABLE).to_pyarrow_table()
    synced = raw["synced_at"][0].as_py() + dt.timedelta(minutes=1)
    second = pages_to_raw([edited.get(i, p) for i, p in enumerate(pages)], synced)
    write_deltalake(f"{ws.lake_uri}/{RAW_TABLE}", second.cast(RAW_SCHEMA), mode="append")
    leads = ws.table("leads").to_pyarrow_table()
    write_deltalake(f"{ws.lake_uri}/leads", leads, mode="append")
    return raw.to_pylist(), second.to_pylist()


@pytest.mark.parametrize("rebuild", [True, False], ids=["rebuild", "next-derivation"])
def test_a_lake_holding_duplicates_is_repaired_keeping_the_newest_copy(tmp_path, rebuild):
    ws = Workspace(tmp_path)
    pages = [page(n) for n in range(40)]
    ws.publish(pages)
    ws.sync()
    edited = {i: page(i, edited="2025-03-05T10:00:00.000Z", name=f"Lead {i} v2") for i in (3, 7)}
    first, second = _duplicate_like_an_older_version(ws, pages, edited)
    assert len(ws.table("leads").to_pyarrow_table()) == 80

    result = ws.sync(rebuild=rebuild, assets=[ingestion.leads_and_quality_issues])
    assert metadata_of(result, "leads")["mode"].value == "full"
    leads = ws.table("leads").to_pyarrow_table().to_pylist()
    assert sorted(r["id"] for r in leads) == sorted(p["id"] for p in pages)
    newest = [edited.get(i, p) for i, p in enumerate(pages)]
    assert {r["id"]: r["nom"] for r in leads} == {
        p["id"]: p["properties"]["Nom"]["title"][0]["plain_text"] for p in newest
    }
    assert len(newest_copies(first, second)) == 40

    # The raw repair the sync runs: one row per page, its newest copy, in one commit.
    lake = DeltaLake(ws.lake_uri)
    outcome = lake.dedupe(RAW_TABLE, "page_id")
    assert (outcome.deleted, outcome.committed) == (40, True)
    assert {r["page_id"]: r for r in rows_of(lake, RAW_TABLE)} == newest_copies(first, second)
    assert not lake.dedupe(RAW_TABLE, "page_id").committed

    # The next sync after the repair (Notion now holds the edited pages) changes no lead.
    before = {r["id"]: r for r in leads}
    ws.publish(newest)
    ws.sync()
    assert {r["id"]: r for r in ws.table("leads").to_pyarrow_table().to_pylist()} == before


@pytest.mark.parametrize("full", [False, True], ids=["sync", "refresh"])
def test_a_sync_repairs_raw_holding_duplicates(tmp_path, full):
    ws = Workspace(tmp_path)
    pages = [page(n) for n in range(40)]
    ws.publish(pages)
    ws.sync()
    edited = {i: page(i, edited="2025-03-05T10:00:00.000Z", name=f"Lead {i} v2") for i in (3, 7)}
    _duplicate_like_an_older_version(ws, pages, edited)
    assert len(rows_of(DeltaLake(ws.lake_uri), RAW_TABLE)) == 80

    ws.publish([edited.get(i, p) for i, p in enumerate(pages)])
    ws.sync(full=full)
    raw = rows_of(DeltaLake(ws.lake_uri), RAW_TABLE)
    assert sorted(r["page_id"] for r in raw) == sorted(p["id"] for p in pages)
    leads = ws.table("leads").to_pyarrow_table().to_pylist()
    assert {r["id"]: r["nom"] for r in leads} == {
        p["id"]: (edited.get(i, p))["properties"]["Nom"]["title"][0]["plain_text"]
        for i, p in enumerate(pages)
    }
