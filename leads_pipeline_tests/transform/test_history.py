"""``lead_history`` (issue 13): the type-2 history of ``leads``, its backfill, repairs and check.

Two halves. The first writes successive versions of a real ``leads`` Delta table the way the
pipeline does (a first append, then merges, an overwrite for a rebuild), derives the history, and
compares it with an expectation a small model computes from the sequence of states (per row, in
Python: the oracle, not the code under test). Both ways of reading ``leads`` are run: its change
data feed, and full comparisons of versions. The second half runs the real jobs against the fake
Notion server over HTTP, editing, trashing and restoring pages between syncs.
"""

from __future__ import annotations

import json
import shutil
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from leads_pipeline.defs.assets import analytics, ingestion
from leads_pipeline.defs.checks import CHECKS, HISTORY_CHECK
from leads_pipeline.defs.jobs import refresh_leads, sync_leads
from leads_pipeline.defs.maintenance import maintain_table
from leads_pipeline.defs.resources import LakeResource, PropertyMapResource, WarehouseResource
from leads_pipeline.storage.lake import ACTION, DELETE, UPSERT, DeltaLake
from leads_pipeline.tables import HISTORY_TABLE, LEADS_TABLE, RAW_TABLE
from leads_pipeline.transform.history import (
    HISTORY_ONLY_COLUMNS,
    LEADS_VERSION_KEY,
    PROBLEMS,
    derive_history,
    enable_leads_change_feed,
    verify_history,
)
from leads_pipeline_tests.fake_notion import iso_minute
from leads_pipeline_tests.notion_fixtures import notion_source
from leads_pipeline_tests.storage.test_cloud_storage import s3_endpoint  # noqa: F401 (a fixture)

TS = pa.timestamp("us", tz="UTC")
LEADS_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("nom", pa.string()),
        pa.field("statut", pa.string()),
        pa.field("email", pa.string()),
        pa.field("created_time", TS),
        pa.field("last_edited_time", TS),
        pa.field("extra_properties", pa.string()),
    ]
)
T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
VERSION_COLUMNS = ("version", "valid_from", "valid_to", "is_current", "change", "changed_columns")


def at(minute: int) -> datetime:
    return T0 + timedelta(minutes=minute)


def lead(key: str, statut: str = "Nouveau", minute: int = 0, **values) -> dict:
    """A ``leads`` row: ``key`` names it, ``minute`` is its last_edited_time after T0."""
    return {
        "id": f"lead-{key}",
        "nom": f"Nom {key}",
        "statut": statut,
        "email": f"{key}@exemple.fr",
        "created_time": T0,
        "last_edited_time": at(minute),
        "extra_properties": json.dumps({"Source": "LinkedIn"}),
        **values,
    }


# -- writing leads versions, and the model of their history ---------------------------------------


@dataclass
class State:
    """One committed version of ``leads``: its rows, when it was committed, deletion times."""

    version: int
    committed_at: datetime
    rows: dict[str, dict]
    deleted_at: dict[str, datetime] = field(default_factory=dict)
    columns: tuple[str, ...] = ()


class LeadsWriter:
    """Writes states of ``leads`` as the pipeline does, and remembers each committed version.

    The first state is a first load (an append), later ones merges that upsert changed rows and
    delete gone ones (``overwrite=True``: a rebuild that replaces the table). Deletion times are
    written to a small ``raw_notion_leads`` whose version each ``leads`` commit records, as the
    pipeline's commits do.
    """

    def __init__(self, root: Path | str, feed: bool):
        self.lake = DeltaLake(str(root))
        self.feed = feed
        self.states: list[State] = []
        self.rows: dict[str, dict] = {}
        self.deleted_at: dict[str, datetime] = {}

    def _raw_version(self) -> int:
        ids = sorted(self.deleted_at)
        table = pa.table(
            {
                "page_id": pa.array(ids, pa.string()),
                "deleted_at": pa.array([self.deleted_at[i] for i in ids], TS),
            }
        )
        write_deltalake(self.lake.table_uri(RAW_TABLE), table, mode="overwrite")
        return DeltaTable(self.lake.table_uri(RAW_TABLE)).version()

    def write(
        self,
        rows: list[dict],
        *,
        deleted_at: dict[str, datetime] | None = None,
        schema: pa.Schema = LEADS_SCHEMA,
        overwrite: bool = False,
    ) -> State | None:
        """Makes ``rows`` the content of leads; returns the state if a version was committed."""
        new = {r["id"]: r for r in rows}
        for key, when in (deleted_at or {}).items():
            self.deleted_at[key] = when
        for key in new:
            self.deleted_at.pop(key, None)  # restored
        metadata = {"raw_version": str(self._raw_version())}
        table = pa.Table.from_pylist([new[k] for k in sorted(new)], schema=schema)
        before = self.lake.load(LEADS_TABLE)
        if before is None:
            self.lake.append(LEADS_TABLE, schema, table.to_batches(), metadata=metadata)
        elif overwrite:
            self.lake.replace(LEADS_TABLE, table, metadata=metadata)
        else:
            gone = sorted(set(self.rows) - set(new))
            upserts = table.append_column(ACTION, pa.array([UPSERT] * table.num_rows, pa.string()))
            deletions = pa.Table.from_pylist(
                [{"id": g} for g in gone], schema=pa.schema([schema.field("id")])
            )
            for name in schema.names[1:]:
                deletions = deletions.append_column(
                    schema.field(name), pa.nulls(len(gone), schema.field(name).type)
                )
            deletions = deletions.append_column(ACTION, pa.array([DELETE] * len(gone), pa.string()))
            self.lake.upsert(
                LEADS_TABLE, pa.concat_tables([upserts, deletions]), key="id", metadata=metadata
            )
        after = self.lake.load(LEADS_TABLE)
        self.rows = new
        if before is not None and after.version() == before.version():
            return None
        [commit] = after.history(1)
        state = State(
            version=after.version(),
            committed_at=datetime.fromtimestamp(commit["timestamp"] / 1000, UTC),
            rows=dict(new),
            deleted_at=dict(self.deleted_at),
            columns=tuple(schema.names),
        )
        self.states.append(state)
        if before is None and self.feed:
            enable_leads_change_feed(self.lake)  # as the leads asset does after a first load
        return state


def expected_history(states: list[State]) -> list[dict]:
    """The history the issue describes for these committed versions of leads (the oracle).

    A version per change of a column other than last_edited_time; a tombstone at the deletion
    time; valid_from never before the previous version's; valid_to the next valid_from.
    """
    columns: list[str] = []
    for state in states:
        columns += [c for c in state.columns if c != "id" and c not in columns]
    compared = [c for c in columns if c != "last_edited_time"]
    chains: dict[str, list[dict]] = {}
    previous: dict[str, dict] = {}
    for state in states:
        for key in sorted(set(previous) | set(state.rows)):
            before, after = previous.get(key), state.rows.get(key)
            chain = chains.setdefault(key, [])
            last = chain[-1] if chain else None
            if after is not None:
                values = {c: after.get(c) for c in columns}
                if last is None:
                    change = "created"
                    changed = [c for c in compared if values[c] is not None]
                else:
                    changed = [c for c in compared if values[c] != last[c]]
                    if last["change"] == "deleted":
                        change = "restored"
                    elif changed:
                        change = "updated"
                    else:
                        continue
                start = values["last_edited_time"]
            elif before is not None:
                values = {c: before.get(c) for c in columns}
                change, changed = "deleted", []
                start = state.deleted_at.get(key, state.committed_at)
            else:
                continue
            if last is not None:
                start = max(start, last["valid_from"])
            chain.append(
                {
                    "id": key,
                    "version": len(chain) + 1,
                    "valid_from": start,
                    "change": change,
                    "changed_columns": changed,
                    **values,
                    "synced_at": state.committed_at,
                }
            )
        previous = state.rows
    rows = []
    for chain in chains.values():
        for i, row in enumerate(chain):
            following = chain[i + 1] if i + 1 < len(chain) else None
            if row["change"] == "deleted":
                row["valid_to"] = row["valid_from"]
            else:
                row["valid_to"] = following["valid_from"] if following else None
            row["is_current"] = following is None and row["change"] != "deleted"
            rows.append(row)
    return sorted(rows, key=lambda r: (r["id"], r["version"]))


def history_rows(root: Path | str) -> list[dict]:
    rows = DeltaTable(f"{root}/{HISTORY_TABLE}").to_pyarrow_table().to_pylist()
    return sorted(rows, key=lambda r: (r["id"], r["version"]))


def history_version(root: Path | str) -> int:
    return DeltaTable(f"{root}/{HISTORY_TABLE}").version()


def assert_history(root: Path | str, states: list[State]) -> None:
    actual, expected = history_rows(root), expected_history(states)
    assert [(r["id"], r["version"], r["change"]) for r in actual] == [
        (r["id"], r["version"], r["change"]) for r in expected
    ]
    for got, want in zip(actual, expected, strict=True):
        assert got == want, {k: (got.get(k), want.get(k)) for k in want if got.get(k) != want[k]}
    assert verify_history(DeltaLake(str(root))).passed


def scenario(writer: LeadsWriter, derive_between: bool) -> None:
    """Creations, an edit, two edits in one minute, an edit of last_edited_time alone, an edit
    of an unmapped property, a deletion, a restoration and a new lead."""
    lake = writer.lake

    def step(rows, **kwargs):
        writer.write(rows, **kwargs)
        if derive_between:
            derive_history(lake)

    a, b, c = "a", "b", "c"
    step([lead(a), lead(b), lead(c)])
    step([lead(a, "Contacté", 5), lead(b), lead(c)])
    step([lead(a, "Répondu", 7), lead(b), lead(c)])  # the same minute as the next one
    step([lead(a, "Appel proposé", 7), lead(b), lead(c)])
    step([lead(a, "Appel proposé", 9), lead(b), lead(c)])  # last_edited_time alone
    extra = json.dumps({"Source": "Salon"})
    step([lead(a, "Appel proposé", 9), lead(b, minute=11, extra_properties=extra), lead(c)])
    gone = at(30)
    step(
        [lead(a, "Appel proposé", 9), lead(b, minute=11, extra_properties=extra)],
        deleted_at={"lead-c": gone},
    )
    # Restored in the same minute it was noticed deleted: valid_from stays at the deletion.
    step(
        [
            lead(a, "Appel proposé", 9),
            lead(b, minute=11, extra_properties=extra),
            lead(c, "Perdu", 29),
            lead("d", minute=31),
        ]
    )


# -- derivation on crafted leads tables ----------------------------------------------------------


@pytest.fixture(params=[True, False], ids=["change-feed", "full-comparison"])
def writer(request, tmp_path) -> LeadsWriter:
    return LeadsWriter(tmp_path / "lake", feed=request.param)


def test_each_derivation_adds_exactly_the_versions_the_edits_made(writer, tmp_path):
    scenario(writer, derive_between=True)
    assert_history(tmp_path / "lake", writer.states)
    rows = {(r["id"], r["version"]): r for r in history_rows(tmp_path / "lake")}
    # Two edits in one minute, seen by two syncs: two versions sharing valid_from.
    assert rows[("lead-a", 3)]["valid_from"] == rows[("lead-a", 4)]["valid_from"] == at(7)
    assert rows[("lead-a", 3)]["valid_to"] == at(7)
    # An edit of last_edited_time alone added nothing; an unmapped property did.
    assert max(v for i, v in rows if i == "lead-a") == 4
    assert rows[("lead-b", 2)]["changed_columns"] == ["extra_properties"]
    # The deleted lead: closed at the deletion, a tombstone holding its last values, restored.
    assert rows[("lead-c", 1)]["valid_to"] == at(30)
    tombstone = rows[("lead-c", 2)]
    assert (tombstone["change"], tombstone["is_current"]) == ("deleted", False)
    assert tombstone["valid_from"] == tombstone["valid_to"] == at(30)
    assert tombstone["statut"] == "Nouveau"
    restored = rows[("lead-c", 3)]
    assert (restored["change"], restored["statut"], restored["is_current"]) == (
        "restored",
        "Perdu",
        True,
    )
    assert restored["valid_from"] == at(30)  # its edit time (29) is before the deletion
    assert restored["changed_columns"] == ["statut"]


def test_the_backfill_replays_every_version_of_leads(writer, tmp_path):
    scenario(writer, derive_between=False)
    outcome = derive_history(writer.lake)
    assert outcome.mode == "backfill"
    # Every version with rows (version 0 is the empty table the first load is appended to).
    assert outcome.leads_versions_read == tuple(s.version for s in writer.states)
    assert_history(tmp_path / "lake", writer.states)
    # The same history as when every version was derived as it came.
    other = LeadsWriter(tmp_path / "twin", feed=writer.feed)
    scenario(other, derive_between=True)
    strip = [
        {k: v for k, v in r.items() if k != "synced_at"} for r in history_rows(tmp_path / "lake")
    ]
    assert strip == [
        {k: v for k, v in r.items() if k != "synced_at"} for r in history_rows(tmp_path / "twin")
    ]


def test_a_derivation_that_finds_nothing_commits_nothing(writer, tmp_path):
    writer.write([lead("a"), lead("b")])
    first = derive_history(writer.lake)
    assert first.committed and first.versions_added == 2
    version = history_version(tmp_path / "lake")
    again = derive_history(writer.lake)
    assert (again.mode, again.committed, again.leads_versions_read) == ("unchanged", False, ())
    # An edit that changes nothing but last_edited_time: leads commits, the history does not.
    assert writer.write([lead("a", minute=3), lead("b")]) is not None
    quiet = derive_history(writer.lake)
    assert not quiet.committed and quiet.leads_versions_read == (writer.states[-1].version,)
    assert history_version(tmp_path / "lake") == version
    # The next change starts from the recorded mark: the quiet version is compared again.
    writer.write([lead("a", "Contacté", 4), lead("b")])
    outcome = derive_history(writer.lake)
    assert outcome.leads_versions_read == tuple(s.version for s in writer.states[-2:])
    assert history_version(tmp_path / "lake") == version + 1
    assert_history(tmp_path / "lake", writer.states)


def test_a_run_killed_between_the_leads_and_the_history_commits_is_repaired(writer, tmp_path):
    writer.write([lead("a"), lead("b")])
    derive_history(writer.lake)
    writer.write([lead("a", "Contacté", 2), lead("b")])  # the killed run: leads only
    writer.write([lead("a", "Répondu", 3), lead("b", "Perdu", 3)])  # the next run
    outcome = derive_history(writer.lake)
    assert outcome.leads_versions_read == tuple(s.version for s in writer.states[1:])
    assert_history(tmp_path / "lake", writer.states)
    statuses = [r["statut"] for r in history_rows(tmp_path / "lake") if r["id"] == "lead-a"]
    assert statuses == ["Nouveau", "Contacté", "Répondu"]  # not collapsed into one version


def test_a_hint_skips_versions_known_to_add_nothing_and_only_those(writer):
    writer.write([lead("a")])
    derive_history(writer.lake)
    writer.write([lead("a", minute=1)])
    quiet = derive_history(writer.lake)
    from leads_pipeline.transform.history import ExaminedThrough

    hint = ExaminedThrough(quiet.version, quiet.leads_version, quiet.leads_commit_timestamp)
    writer.write([lead("a", "Contacté", 2)])
    outcome = derive_history(writer.lake, examined=hint)
    assert outcome.leads_versions_read == (writer.states[-1].version,)
    assert_history(writer.lake.root, writer.states)
    # A hint about another history version is ignored.
    writer.write([lead("a", minute=3)])
    writer.write([lead("a", "Répondu", 4)])
    stale = derive_history(writer.lake, examined=hint)
    assert stale.leads_versions_read == tuple(s.version for s in writer.states[-2:])


def test_a_rebuild_of_leads_with_the_same_values_adds_no_version(writer, tmp_path):
    rows = [lead("a", "Contacté", 1), lead("b")]
    writer.write(rows)
    derive_history(writer.lake)
    version = history_version(tmp_path / "lake")
    # A full re-derivation replaces leads with the same rows (another column order even).
    reordered = pa.schema([LEADS_SCHEMA.field(n) for n in reversed(LEADS_SCHEMA.names)])
    assert writer.write(rows, schema=reordered, overwrite=True) is not None
    outcome = derive_history(writer.lake)
    assert not outcome.committed and history_version(tmp_path / "lake") == version


def test_a_new_column_is_added_null_in_old_versions_and_a_change_where_filled(writer, tmp_path):
    writer.write([lead("a"), lead("b")])
    derive_history(writer.lake)
    wider = LEADS_SCHEMA.append(pa.field("entreprise", pa.string()))
    writer.write([lead("a", entreprise="ACME"), lead("b", entreprise=None)], schema=wider)
    outcome = derive_history(writer.lake)
    assert outcome.versions_added == 1  # b's new column is empty: nothing changed for b
    names = DeltaTable(f"{tmp_path / 'lake'}/{HISTORY_TABLE}").schema().to_arrow().names
    assert "entreprise" in names
    rows = history_rows(tmp_path / "lake")
    assert [(r["id"], r["version"], r["entreprise"]) for r in rows] == [
        ("lead-a", 1, None),
        ("lead-a", 2, "ACME"),
        ("lead-b", 1, None),
    ]
    assert rows[1]["changed_columns"] == ["entreprise"]
    writer.write(
        [lead("a", "Contacté", 2, entreprise="ACME"), lead("b", entreprise="Initech")], schema=wider
    )
    derive_history(writer.lake)
    assert_history(tmp_path / "lake", writer.states)


def test_a_recreated_leads_table_is_replayed_onto_the_history(writer, tmp_path):
    writer.write([lead("a"), lead("b")])
    derive_history(writer.lake)
    shutil.rmtree(tmp_path / "lake" / LEADS_TABLE)  # e.g. deleted by hand, then rebuilt
    writer.rows = {}
    writer.write([lead("a", "Contacté", 4), lead("b")])
    outcome = derive_history(writer.lake)
    assert outcome.mode == "replay"
    rows = history_rows(tmp_path / "lake")
    assert [(r["id"], r["version"], r["change"], r["is_current"]) for r in rows] == [
        ("lead-a", 1, "created", False),
        ("lead-a", 2, "updated", True),
        ("lead-b", 1, "created", True),
    ]
    assert verify_history(writer.lake).passed
    assert derive_history(writer.lake).mode == "unchanged"


def test_a_version_no_longer_readable_is_skipped(writer, tmp_path):
    writer.write([lead("a"), lead("b")])
    derive_history(writer.lake)
    writer.write([lead("a", "Contacté", 1), lead("b")])
    lost = writer.states[-1].version
    writer.write([lead("a", "Répondu", 2), lead("b", "Perdu", 2)])
    # Vacuum removed the files of the middle version (simulated: its files and change data).
    table = DeltaTable(f"{tmp_path / 'lake'}/{LEADS_TABLE}", version=lost)
    for uri in table.file_uris():
        current = set(DeltaTable(f"{tmp_path / 'lake'}/{LEADS_TABLE}").file_uris())
        if uri not in current:
            Path(uri.removeprefix("file://")).unlink()
    for cdc in (tmp_path / "lake" / LEADS_TABLE).glob("_change_data/*"):
        cdc.unlink()
    outcome = derive_history(writer.lake)
    assert lost in outcome.leads_versions_unreadable
    assert outcome.leads_versions_read == (writer.states[-1].version,)
    statuses = [r["statut"] for r in history_rows(tmp_path / "lake") if r["id"] == "lead-a"]
    assert statuses == ["Nouveau", "Répondu"]
    assert verify_history(writer.lake).passed


def test_compaction_keeps_every_version_and_derivations_go_on(writer, tmp_path):
    scenario(writer, derive_between=True)
    before = history_rows(tmp_path / "lake")
    outcome = maintain_table(
        writer.lake, HISTORY_TABLE, retention_hours=0, enforce_retention_duration=False
    )
    assert outcome.files_compacted > 0
    assert history_rows(tmp_path / "lake") == before
    writer.write(
        [
            lead("a", "Appel booké", 40),
            lead("b", minute=11, extra_properties=json.dumps({"Source": "Salon"})),
        ],
    )
    derive_history(writer.lake)
    assert_history(tmp_path / "lake", writer.states)


def test_two_derivations_at_once_add_each_version_once(writer, tmp_path):
    writer.write([lead(str(i)) for i in range(50)])
    derive_history(writer.lake)
    writer.write([lead(str(i), "Contacté" if i % 2 else "Nouveau", 1) for i in range(50)])
    barrier = threading.Barrier(2)
    results, errors = [], []

    def derive():
        try:
            barrier.wait(timeout=30)
            results.append(derive_history(DeltaLake(writer.lake.root)))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=derive) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    assert sorted(r.versions_added for r in results) == [0, 25]
    assert_history(tmp_path / "lake", writer.states)


def test_the_history_is_written_the_same_way_on_s3(s3_endpoint):  # noqa: F811
    root = "s3://leads-lake/history/lake"
    writer = LeadsWriter(root, feed=True)
    scenario(writer, derive_between=True)
    assert_history(root, writer.states)


# -- the check ----------------------------------------------------------------------------------


def crafted(tmp_path: Path) -> tuple[DeltaLake, list[dict]]:
    writer = LeadsWriter(tmp_path / "crafted", feed=False)
    writer.write([lead("a"), lead("b"), lead("c")])
    writer.write([lead("a", "Contacté", 5), lead("b")], deleted_at={"lead-c": at(9)})
    derive_history(writer.lake)
    assert verify_history(writer.lake).passed
    return writer.lake, history_rows(tmp_path / "crafted")


def rewrite(lake: DeltaLake, rows: list[dict]) -> None:
    uri = lake.table_uri(HISTORY_TABLE)
    schema = pa.schema(DeltaTable(uri).schema().to_arrow())
    write_deltalake(
        uri,
        pa.Table.from_pylist(rows, schema=schema),
        mode="overwrite",
        partition_by=["is_current"],
    )


def failing(lake: DeltaLake) -> dict[str, int]:
    found = verify_history(lake)
    assert not found.passed
    return {name: count for name, count in found.problems.items() if count}


def test_the_check_fails_on_a_second_current_version(tmp_path):
    lake, rows = crafted(tmp_path)
    current = next(r for r in rows if r["id"] == "lead-b")
    rewrite(lake, [*rows, {**current, "version": 2, "change": "updated"}])
    problems = failing(lake)
    assert problems["leads_with_several_current_versions"] == 1
    assert "lead-b" in verify_history(lake).describe()


def test_the_check_fails_on_a_value_differing_from_leads(tmp_path):
    lake, rows = crafted(tmp_path)
    rows = [{**r, "email": "autre@exemple.fr"} if r["id"] == "lead-b" else r for r in rows]
    rewrite(lake, rows)
    found = verify_history(lake)
    assert failing(lake) == {"current_versions_differing_from_leads": 1}
    assert found.differing_columns == {"email": 1}


def test_the_check_fails_on_overlapping_versions(tmp_path):
    lake, rows = crafted(tmp_path)
    rows = [
        {**r, "valid_to": at(6)} if (r["id"], r["version"]) == ("lead-a", 1) else r for r in rows
    ]
    rewrite(lake, rows)
    assert failing(lake) == {"overlapping_or_gapped_versions": 1}


def test_the_check_fails_on_missing_and_stray_current_versions_and_bad_numbering(tmp_path):
    lake, rows = crafted(tmp_path)
    tombstone = next(r for r in rows if r["id"] == "lead-c" and r["change"] == "deleted")
    rows = [r for r in rows if r["id"] != "lead-b"]  # a live lead without any version
    rows = [{**r, "version": 3} if r is tombstone else r for r in rows]  # numbered 1, 3
    rows.append(
        {
            **rows[0],
            "id": "lead-z",
            "version": 1,
            "change": "created",
            "valid_to": None,
            "is_current": True,
        }
    )
    rewrite(lake, rows)
    problems = failing(lake)
    assert problems["live_leads_without_current_version"] == 1
    assert problems["current_versions_of_deleted_leads"] == 1
    assert problems["versions_not_numbered_1_to_n"] == 1
    assert set(problems) <= set(PROBLEMS)


def test_the_check_runs_blocking_on_lead_history():
    [check] = [c for c in CHECKS if HISTORY_CHECK in {k.name for k in c.check_keys}]
    [spec] = check.check_specs
    assert spec.asset_key == dg.AssetKey(HISTORY_TABLE) and spec.blocking


# -- the real jobs against the fake Notion server -------------------------------------------------

ASSETS = [*ingestion.ASSETS, *analytics.ASSETS]
INGESTION = [dg.AssetKey(k) for k in (RAW_TABLE, LEADS_TABLE, "lead_quality_issues")]


def run(resources: dict, job: str = "sync_leads", *, only=None, rebuild: bool = False):
    """Runs a job of the project (with every check) in process; ``only``: a subset of assets."""
    defs = dg.Definitions(
        assets=ASSETS, asset_checks=CHECKS, jobs=[sync_leads, refresh_leads], resources=resources
    )
    config = {"ops": {"leads_and_quality_issues": {"config": {"rebuild": rebuild}}}}
    result = defs.resolve_job_def(job).execute_in_process(
        asset_selection=only, run_config=config if rebuild else None
    )
    assert result.success
    if only is None:
        [check] = [e for e in result.get_asset_check_evaluations() if e.check_name == HISTORY_CHECK]
        assert check.passed, check.description
    return result


def history_metadata(result) -> dict:
    [event] = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey(HISTORY_TABLE)
    ]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def resources_for(fake, root: Path, property_map: str | None = None) -> dict:
    return {
        "source": notion_source(fake),
        "lake": LakeResource(uri=str(root / "lake")),
        "warehouse": WarehouseResource(path=str(root / "warehouse.duckdb")),
        "property_map": PropertyMapResource(path=property_map),
    }


def notion_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def status_of(page: dict) -> str | None:
    value = page["properties"]["Statut"]["status"]
    return value["name"] if value else None


def set_status(fake, page_id: str, status: str, when: datetime | None = None) -> dict:
    return fake.edit(page_id, {"Statut": {"type": "status", "status": {"name": status}}}, at=when)


def restore(fake, page_id: str) -> dict:
    """Takes a page out of the trash (Notion stamps the edit time)."""
    with fake.lock:
        source = fake.source_of(page_id)
        page = json.loads(json.dumps(source.pages[page_id]))
        page["in_trash"] = False
        page.pop("archived", None)
        page["last_edited_time"] = iso_minute(datetime.now(UTC))
        source.store(page)
    return fake.page(page_id)


class Expected:
    """The versions each lead should have, from the pages put in the fake and when they changed.

    Only the status changes here, so each version is (change, statut, valid_from), and a version
    starts at its page's edit time (or the deletion time, and never before the previous one).
    """

    def __init__(self, pages: list[dict]):
        self.versions = {
            p["id"]: [("created", status_of(p), notion_time(p["last_edited_time"]))] for p in pages
        }

    def saw(self, page: dict, change: str = "updated") -> None:
        chain = self.versions[page["id"]]
        start = max(notion_time(page["last_edited_time"]), chain[-1][2])
        chain.append((change, status_of(page), start))

    def deleted(self, page_id: str, when: datetime) -> None:
        chain = self.versions[page_id]
        chain.append(("deleted", chain[-1][1], max(when, chain[-1][2])))

    def check(self, root: Path) -> None:
        rows = history_rows(root / "lake")
        actual: dict[str, list] = {}
        for r in rows:
            actual.setdefault(r["id"], []).append((r["change"], r["statut"], r["valid_from"]))
        assert actual == self.versions
        by_lead: dict[str, list[dict]] = {}
        for r in rows:
            by_lead.setdefault(r["id"], []).append(r)
        for chain in by_lead.values():
            for row, following in zip(chain, [*chain[1:], None], strict=True):
                if row["change"] == "deleted":
                    assert row["valid_to"] == row["valid_from"] and not row["is_current"]
                elif following is None:
                    assert row["valid_to"] is None and row["is_current"]
                else:
                    assert row["valid_to"] == following["valid_from"] and not row["is_current"]


def test_syncs_record_each_status_change_a_deletion_and_a_restoration(notion_env, tmp_path):
    fake = notion_env
    pages = fake.seed_sample(40)
    resources = resources_for(fake, tmp_path)
    first = run(resources)
    assert history_metadata(first)["mode"] == "backfill"
    expected = Expected(pages)
    expected.check(tmp_path)

    moved, gone = pages[3]["id"], pages[7]["id"]
    edit = set_status(fake, moved, "Appel booké")
    run(resources)
    expected.saw(edit)
    # Edited again within the same minute, seen by the next sync: same valid_from, next version.
    edit = set_status(fake, moved, "Gagné", notion_time(edit["last_edited_time"]))
    result = run(resources)
    expected.saw(edit)
    expected.check(tmp_path)
    assert history_metadata(result)["versions_added"] == 1
    [a2, a3] = [r for r in history_rows(tmp_path / "lake") if r["id"] == moved][1:]
    assert a2["valid_from"] == a3["valid_from"] and (a2["version"], a3["version"]) == (2, 3)
    assert a3["changed_columns"] == ["statut"]

    version = history_version(tmp_path / "lake")
    quiet = run(resources)
    assert history_metadata(quiet)["delta_committed"] is False
    assert history_version(tmp_path / "lake") == version

    fake.trash(gone)
    run(resources)  # an incremental listing cannot see it
    assert history_version(tmp_path / "lake") == version
    before = datetime.now(UTC)
    run(resources, "refresh_leads")
    after = datetime.now(UTC)
    [deletion] = [r for r in history_rows(tmp_path / "lake") if r["change"] == "deleted"]
    assert before <= deletion["valid_from"] <= after
    raw = DeltaTable(f"{tmp_path}/lake/{RAW_TABLE}").to_pyarrow_table().to_pylist()
    assert deletion["valid_from"] == next(r["deleted_at"] for r in raw if r["page_id"] == gone)
    expected.deleted(gone, deletion["valid_from"])
    expected.check(tmp_path)

    back = restore(fake, gone)
    result = run(resources)
    expected.saw(back, "restored")
    expected.check(tmp_path)
    assert history_metadata(result)["changes"] == {
        "created": 0,
        "updated": 0,
        "deleted": 0,
        "restored": 1,
    }


def history_without_sync_times(root: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "synced_at"} for r in history_rows(root / "lake")]


def test_a_killed_run_and_a_rebuild_end_with_the_history_of_uninterrupted_syncs(
    notion_env, tmp_path
):
    fake = notion_env
    pages = fake.seed_sample(30)
    killed, steady, rebuilt = (
        resources_for(fake, tmp_path / name) for name in ("killed", "steady", "rebuilt")
    )
    for resources in (killed, steady, rebuilt):
        run(resources)
    first = set_status(fake, pages[1]["id"], "Contacté")
    fake.edit(pages[2]["id"], {"Email": {"type": "email", "email": "neuf@exemple.fr"}})
    # Killed between the leads commit and the history commit: leads and raw only.
    run(killed, only=INGESTION)
    run(steady)
    run(rebuilt, rebuild=True)
    second = set_status(
        fake,
        pages[1]["id"],
        "Répondu",
        notion_time(first["last_edited_time"]) + timedelta(minutes=1),
    )
    for resources in (killed, steady, rebuilt):
        run(resources)
    version = history_version(tmp_path / "rebuilt" / "lake")
    run(rebuilt, rebuild=True)  # a rebuild that changes no value adds nothing
    assert history_version(tmp_path / "rebuilt" / "lake") == version

    reference = history_without_sync_times(tmp_path / "steady")
    assert history_without_sync_times(tmp_path / "killed") == reference
    assert history_without_sync_times(tmp_path / "rebuilt") == reference
    statuses = [(r["statut"], r["valid_from"]) for r in reference if r["id"] == pages[1]["id"]]
    assert statuses == [
        (status_of(pages[1]), notion_time(pages[1]["last_edited_time"])),
        ("Contacté", notion_time(first["last_edited_time"])),
        ("Répondu", notion_time(second["last_edited_time"])),
    ]
    emails = [r["email"] for r in reference if r["id"] == pages[2]["id"]]
    assert emails[-1] == "neuf@exemple.fr" and len(emails) == 2


def test_the_first_materialization_backfills_every_version_leads_still_has(notion_env, tmp_path):
    fake = notion_env
    pages = fake.seed_sample(20)
    resources = resources_for(fake, tmp_path)
    run(resources, only=INGESTION)  # an existing lake, from before lead_history
    expected = Expected(pages)
    edit = set_status(fake, pages[0]["id"], "Contacté")
    run(resources, only=INGESTION)
    expected.saw(edit)
    later = notion_time(edit["last_edited_time"]) + timedelta(minutes=1)
    edit = set_status(fake, pages[0]["id"], "Appel proposé", later)
    other = set_status(fake, pages[5]["id"], "Perdu", later)
    run(resources, only=INGESTION)
    expected.saw(edit)
    expected.saw(other)
    assert DeltaTable(f"{tmp_path}/lake/{LEADS_TABLE}").version() >= 3
    result = run(resources)
    meta = history_metadata(result)
    assert meta["mode"] == "backfill" and meta["versions_added"] == 23
    expected.check(tmp_path)


def test_a_property_map_change_adds_the_column_filled_from_then_on(notion_env, tmp_path):
    fake = notion_env
    pages = fake.seed_sample(20)
    run(resources_for(fake, tmp_path))
    before = history_rows(tmp_path / "lake")
    mapping = tmp_path / "map.toml"
    mapping.write_text('[columns.entreprise]\nproperty = "Entreprise"\nkind = "text"\n')
    result = run(resources_for(fake, tmp_path, str(mapping)))
    rows = history_rows(tmp_path / "lake")
    assert "entreprise" in DeltaTable(f"{tmp_path}/lake/{HISTORY_TABLE}").schema().to_arrow().names
    # The versions from before the change read NULL in the new column, nothing else moved.
    old = {
        (r["id"], r["version"]): r
        for r in rows
        if (r["id"], r["version"]) in {(b["id"], b["version"]) for b in before}
    }
    assert all(r["entreprise"] is None for r in old.values())
    assert len(old) == len(before)
    companies = {
        p["id"]: "".join(s["plain_text"] for s in p["properties"]["Entreprise"]["rich_text"])
        for p in pages
    }
    current = {r["id"]: r for r in rows if r["is_current"]}
    for page_id, company in companies.items():
        assert current[page_id]["entreprise"] == (company or None)
        if company:
            assert current[page_id]["version"] == 2
            assert "entreprise" in current[page_id]["changed_columns"]
    assert history_metadata(result)["versions_added"] == sum(1 for c in companies.values() if c)


def test_lead_history_is_an_ingestion_asset_of_both_sync_jobs_and_maintained():
    from leads_pipeline.definitions import defs
    from leads_pipeline.defs.maintenance import LAKE_TABLES

    graph = defs.resolve_asset_graph()
    node = graph.get(dg.AssetKey(HISTORY_TABLE))
    assert node.group_name == "ingestion" and node.pools == {"leads_lake"}
    assert dg.AssetKey(LEADS_TABLE) in node.parent_keys
    for job in ("sync_leads", "refresh_leads"):
        assert (
            dg.AssetKey(HISTORY_TABLE)
            in defs.resolve_job_def(job).asset_layer.asset_graph.get_all_asset_keys()
        )
    assert HISTORY_TABLE in LAKE_TABLES
    assert set(HISTORY_ONLY_COLUMNS) >= {
        "version",
        "valid_from",
        "valid_to",
        "is_current",
        "change",
        "changed_columns",
        "synced_at",
    }
    assert LEADS_VERSION_KEY == "leads_version"
