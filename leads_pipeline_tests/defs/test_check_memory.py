"""The check memory on real syncs: a no-change sync passes the checks without reading, and only then.

Real materializations of the sync's assets and checks (sample source, real Delta tables, real
DuckDB warehouse) on one Dagster instance, as a deployment runs them. Each check that remembers
(:mod:`leads_pipeline.defs.check_memory`) passes a no-change sync on its last pass; a commit, a
republished table, a recreated table or another threshold makes it verify in full again, and a
failed evaluation is never relied on. Expected figures come from the sample's pages.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from leads_pipeline.defs import checks
from leads_pipeline.defs.assets import analytics, ingestion, movement
from leads_pipeline.defs.check_memory import NOT_BUILT, rows_digest
from leads_pipeline.defs.resources import LakeResource, PropertyMapResource, WarehouseResource
from leads_pipeline.sources.sample import SampleLeadsSource
from leads_pipeline.sources.sample_data import pages_on_day
from leads_pipeline.storage.warehouse import Warehouse
from leads_pipeline.tables import (
    EVENT_COLUMNS,
    HISTORY_TABLE,
    ISSUES_TABLE,
    LEADS_TABLE,
    MONTH,
    WEEK,
)

PAGES = 120
ASSETS = [*ingestion.ASSETS, *analytics.ASSETS, *movement.ASSETS]
CHECKS = [*checks.CHECKS, *movement.CHECKS]
#: The Notion date property behind each event column (DESIGN.md's default map).
PROPERTIES = {
    "date_prise_contact": "Date de prise de contact",
    "date_reponse_prospect": "Date de réponse du prospect",
    "date_appel_propose": "Date d'appel proposé",
    "date_appel_booke": "Date d'appel booké",
    "date_relance": "Date de relance",
}
ID_CHECK = ("leads", checks.LEADS_ID_CHECK)
SHARE_CHECK = ("lead_quality_issues", checks.QUALITY_SHARE_CHECK)
HISTORY_CHECK = ("lead_history", checks.HISTORY_CHECK)
WEEKLY_COUNTS = ("weekly_event_counts", checks.RECONCILE_CHECK)
MONTHLY_COUNTS = ("monthly_event_counts", checks.RECONCILE_CHECK)
WEEKLY_ENTRIES = ("weekly_status_entries", movement.ENTRIES_CHECK)
MONTHLY_ENTRIES = ("monthly_status_entries", movement.ENTRIES_CHECK)
#: Every check of the sync that remembers its last pass (column_schema_unchanged reads no table).
REMEMBERING = {
    ID_CHECK,
    SHARE_CHECK,
    HISTORY_CHECK,
    WEEKLY_COUNTS,
    MONTHLY_COUNTS,
    WEEKLY_ENTRIES,
    MONTHLY_ENTRIES,
}


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture
def resources(lake_uri, warehouse_path) -> dict:
    return {
        "source": SampleLeadsSource(pages=PAGES),
        "lake": LakeResource(uri=lake_uri),
        "warehouse": WarehouseResource(path=warehouse_path),
        "property_map": PropertyMapResource(),
    }


class Run:
    """A finished run: its id, success, and each check's evaluation and metadata values."""

    def __init__(self, result: dg.ExecuteInProcessResult):
        self.id = result.run_id
        self.success = result.success
        self.evaluations = {
            (e.asset_key.to_user_string(), e.check_name): e
            for e in result.get_asset_check_evaluations()
        }
        self.failures = [
            f"{event.step_key}: {event.step_failure_data.error.cause}"
            for event in result.get_step_failure_events()
        ]

    def meta(self, check: tuple[str, str]) -> dict:
        return {k: v.value for k, v in self.evaluations[check].metadata.items()}

    def passed(self, check: tuple[str, str]) -> bool:
        return self.evaluations[check].passed

    def unchanged(self) -> dict[tuple[str, str], bool]:
        return {c: self.meta(c)["unchanged_since_last_pass"] for c in REMEMBERING}


def sync(instance, resources, day: int = 0) -> Run:
    """One sync of the sample as it is on ``day``: every asset, then every check."""
    resources = {**resources, "source": SampleLeadsSource(pages=PAGES, day=day)}
    return Run(
        dg.materialize(
            [*ASSETS, *CHECKS], resources=resources, instance=instance, raise_on_error=False
        )
    )


def checks_only(instance, resources, extra: list | None = None) -> Run:
    """The checks alone (no asset materialized), as the UI's "Execute checks" runs them."""
    definitions = [*CHECKS, *(extra or [])]
    return Run(
        dg.materialize(
            [*ASSETS, *definitions],
            resources=resources,
            instance=instance,
            selection=dg.AssetSelection.checks(*definitions),
            raise_on_error=False,
        )
    )


# -- expectations from the sample's pages -------------------------------------------------------


def status_of(page: dict) -> str | None:
    value = page["properties"]["Statut"]["status"]
    return value["name"] if value else None


def dated(page: dict, column: str) -> bool:
    return page["properties"][PROPERTIES[column]]["date"] is not None


def synced_pages(day: int) -> list[dict]:
    """The pages as ``leads`` holds them after incremental syncs of days 0..``day``.

    An incremental listing leaves trashed pages out: a lead trashed on a later day keeps its
    last live copy.
    """
    held: dict[str, dict] = {}
    for d in range(day + 1):
        for page in pages_on_day(PAGES, 42, d):
            if not page["in_trash"]:
                held[page["id"]] = page
    return list(held.values())


def expected_entries(day: int) -> int:
    """Status entries in ``lead_history`` after syncs of days 0..``day``: a lead enters its
    first status with its first version, and another one each time a sync sees it move."""
    seen: dict[str, str | None] = {}
    entries = 0
    for d in range(day + 1):
        for page in synced_pages(d):
            status = status_of(page)
            if page["id"] not in seen or seen[page["id"]] != status:
                entries += status is not None
            seen[page["id"]] = status
    return entries


def expected_totals(day: int) -> dict[str, int]:
    """Per event column, the non-null dates in ``leads`` after syncs of days 0..``day``."""
    pages = synced_pages(day)
    return {column: sum(dated(p, column) for p in pages) for column in EVENT_COLUMNS}


def assert_figures(run: Run, day: int) -> None:
    """The figures each check reports (verified or relied on) match the pages of ``day``."""
    totals = expected_totals(day)
    assert run.meta(ID_CHECK)["rows"] == len(synced_pages(day))
    assert run.meta(SHARE_CHECK)["leads"] == len(synced_pages(day))
    assert run.meta(HISTORY_CHECK)["live_leads"] == len(synced_pages(day))
    for check in (WEEKLY_COUNTS, MONTHLY_COUNTS):
        meta = run.meta(check)
        for column, total in totals.items():
            assert meta[f"{column}/counts"] == meta[f"{column}/leads"] == total, (check, column)
    other = {WEEKLY_COUNTS: "monthly_event_counts", MONTHLY_COUNTS: "weekly_event_counts"}
    for check, other_asset in other.items():
        assert run.meta(check)[f"date_prise_contact/{other_asset}"] == totals["date_prise_contact"]
    for check in (WEEKLY_ENTRIES, MONTHLY_ENTRIES):
        meta = run.meta(check)
        assert meta["entries_in_history"] == meta["entries_in_table"] == expected_entries(day)


def delta_version(lake_uri: str, table: str) -> int:
    return DeltaTable(f"{lake_uri}/{table}").version()


def published(warehouse_path: str, table: str) -> pa.Table:
    with Warehouse(warehouse_path).read() as con:
        return con.sql(f"SELECT * FROM {table}").to_arrow_table()


# -- the tests ------------------------------------------------------------------------------------


def test_a_no_change_sync_relies_on_every_last_pass_and_a_change_is_verified(
    instance, resources, lake_uri
):
    first = sync(instance, resources)
    assert first.success
    assert first.unchanged() == dict.fromkeys(REMEMBERING, False)
    assert {c: first.meta(c)["verified_in_run"] for c in REMEMBERING} == dict.fromkeys(
        REMEMBERING, first.id
    )
    assert_figures(first, day=0)
    versions = {t: delta_version(lake_uri, t) for t in (LEADS_TABLE, HISTORY_TABLE, ISSUES_TABLE)}

    # Nothing changed in the source: no commit, same published rows, every check relies on run 1.
    second = sync(instance, resources)
    assert second.success
    assert {t: delta_version(lake_uri, t) for t in versions} == versions
    assert second.unchanged() == dict.fromkeys(REMEMBERING, True)
    for check in REMEMBERING:
        evaluation = second.evaluations[check]
        assert evaluation.passed, check
        assert second.meta(check)["verified_in_run"] == first.id, check
        assert "not read again" in evaluation.description, check
        assert f"run {first.id}" in evaluation.description, check
    assert f"leads (Delta version {versions[LEADS_TABLE]})" in (
        second.evaluations[ID_CHECK].description
    )
    assert_figures(second, day=0)
    # The schema check reads no table: nothing to remember.
    assert "unchanged_since_last_pass" not in second.meta(("leads", checks.SCHEMA_CHANGE_CHECK))

    # A day of the sample's evolution moves statuses: leads and lead_history commit, the counts
    # and entries are republished: every check verifies again, in full.
    third = sync(instance, resources, day=1)
    assert third.success
    assert delta_version(lake_uri, LEADS_TABLE) > versions[LEADS_TABLE]
    assert delta_version(lake_uri, HISTORY_TABLE) > versions[HISTORY_TABLE]
    assert third.unchanged() == dict.fromkeys(REMEMBERING, False)
    assert {c: third.meta(c)["verified_in_run"] for c in REMEMBERING} == dict.fromkeys(
        REMEMBERING, third.id
    )
    assert all(third.passed(c) for c in REMEMBERING)
    assert expected_entries(1) > expected_entries(0)
    assert_figures(third, day=1)
    assert int(third.meta(WEEKLY_COUNTS)["leads_delta_version"]) == delta_version(
        lake_uri, LEADS_TABLE
    )


def test_a_pass_relied_on_reads_no_data_file(instance, resources, lake_uri):
    """Proof that nothing is read: without the data files (the Delta logs kept), the checks still
    pass on their memory, while a verification of the same lake fails to read it."""
    assert sync(instance, resources).success
    for table in (LEADS_TABLE, HISTORY_TABLE, ISSUES_TABLE):
        data_files = [
            p for p in Path(lake_uri, table).rglob("*.parquet") if "_delta_log" not in p.parts
        ]
        assert data_files, table
        for path in data_files:
            path.unlink()

    relied = checks_only(instance, resources)
    assert relied.unchanged() == dict.fromkeys(REMEMBERING, True)
    assert all(relied.passed(c) for c in REMEMBERING)

    # Each of them with no memory (a new instance) tries to read its tables, and cannot.
    with dg.instance_for_test() as fresh:
        for definition in CHECKS:
            [key] = definition.check_keys
            if (key.asset_key.to_user_string(), key.name) not in REMEMBERING:
                continue
            run = Run(
                dg.materialize(
                    [*ASSETS, definition],
                    resources=resources,
                    instance=fresh,
                    selection=dg.AssetSelection.checks(definition),
                    raise_on_error=False,
                )
            )
            assert not run.success and not run.evaluations, key
            [failure] = run.failures
            assert "FileNotFoundError" in failure and ".parquet" in failure, key


def test_a_republished_table_with_its_old_lineage_is_verified_and_caught(
    instance, resources, lake_uri, warehouse_path
):
    """Rows published again under their old lineage (as a writer that reuses it would): their
    digest moves, so the checks verify them again."""
    assert sync(instance, resources).success
    weekly_table, monthly_entries = WEEK.table(), MONTH.table("status_entries")
    weekly = published(warehouse_path, weekly_table)
    entries = published(warehouse_path, monthly_entries)
    lineage = Warehouse(warehouse_path).lineage(weekly_table)
    entries_lineage = Warehouse(warehouse_path).lineage(monthly_entries)
    contacts = expected_totals(0)["date_prise_contact"]

    # One week gains a first contact; one month and status gains 3 entries.
    rows = weekly.to_pylist()
    busiest = max(range(len(rows)), key=lambda i: rows[i]["date_prise_contact"])
    rows[busiest]["date_prise_contact"] += 1
    entry_rows = entries.to_pylist()
    first = next(i for i, r in enumerate(entry_rows) if r["entries"])
    entry_rows[first]["entries"] += 3
    status = entry_rows[first]["statut"]
    in_history = sum(r["entries"] for r in entries.to_pylist() if r["statut"] == status)
    Warehouse(warehouse_path).publish(
        {
            weekly_table: pa.Table.from_pylist(rows, schema=weekly.schema),
            monthly_entries: pa.Table.from_pylist(entry_rows, schema=entries.schema),
        },
        lineage={weekly_table: lineage, monthly_entries: entries_lineage},
    )
    assert Warehouse(warehouse_path).lineage(weekly_table) == lineage  # what reuse would trust

    caught = checks_only(instance, resources)
    assert not caught.success  # both checks block
    assert not caught.passed(WEEKLY_COUNTS)
    assert f"date_prise_contact: {contacts + 1} counted vs {contacts} in leads" in (
        caught.evaluations[WEEKLY_COUNTS].description
    )
    assert not caught.passed(MONTHLY_ENTRIES)
    assert f"{status!r}: {in_history + 3} in the table vs {in_history} in lead_history" in (
        caught.evaluations[MONTHLY_ENTRIES].description
    )
    # The monthly counts name the weekly table's digest too: verified again, they still pass,
    # and show the weekly total that moved.
    assert caught.passed(MONTHLY_COUNTS)
    assert caught.meta(MONTHLY_COUNTS)["date_prise_contact/weekly_event_counts"] == contacts + 1
    assert caught.unchanged() == {
        **dict.fromkeys(REMEMBERING, True),
        WEEKLY_COUNTS: False,
        MONTHLY_COUNTS: False,
        MONTHLY_ENTRIES: False,
    }

    # A failed evaluation is never relied on: verified again, failing again.
    again = checks_only(instance, resources)
    assert not again.passed(WEEKLY_COUNTS) and not again.passed(MONTHLY_ENTRIES)
    assert again.meta(WEEKLY_COUNTS)["unchanged_since_last_pass"] is False
    assert again.meta(MONTHLY_ENTRIES)["unchanged_since_last_pass"] is False
    assert again.meta(MONTHLY_COUNTS)["unchanged_since_last_pass"] is True

    # The original rows back: the inputs of the first pass, but the latest evaluation failed,
    # so the check verifies in full (and passes); only the next one relies on it.
    Warehouse(warehouse_path).publish(
        {weekly_table: weekly, monthly_entries: entries},
        lineage={weekly_table: lineage, monthly_entries: entries_lineage},
    )
    restored = checks_only(instance, resources)
    assert restored.passed(WEEKLY_COUNTS) and restored.passed(MONTHLY_ENTRIES)
    assert restored.meta(WEEKLY_COUNTS)["unchanged_since_last_pass"] is False
    assert restored.meta(WEEKLY_COUNTS)["verified_in_run"] == restored.id
    assert restored.meta(MONTHLY_ENTRIES)["verified_in_run"] == restored.id
    relied = checks_only(instance, resources)
    assert relied.unchanged() == dict.fromkeys(REMEMBERING, True)
    assert relied.meta(WEEKLY_COUNTS)["verified_in_run"] == restored.id


def leads_rows(lake_uri: str) -> pa.Table:
    return DeltaTable(f"{lake_uri}/{LEADS_TABLE}").to_pyarrow_table()


def test_a_commit_to_leads_is_verified_in_full_and_a_lead_without_history_caught(
    instance, resources, lake_uri
):
    assert sync(instance, resources).success
    counted_version = delta_version(lake_uri, LEADS_TABLE)
    # A lead written to leads behind the pipeline's back: a new commit, no history for it.
    rows = leads_rows(lake_uri)
    stranger = rows.slice(7, 1).set_column(
        rows.schema.get_field_index("id"), "id", pa.array(["not-from-notion"], pa.string())
    )
    write_deltalake(f"{lake_uri}/{LEADS_TABLE}", stranger, mode="append")

    after = checks_only(instance, resources)
    for check in (ID_CHECK, SHARE_CHECK, HISTORY_CHECK, WEEKLY_COUNTS, MONTHLY_COUNTS):
        assert after.meta(check)["unchanged_since_last_pass"] is False, check
        assert after.meta(check)["verified_in_run"] == after.id, check
    assert after.passed(ID_CHECK) and after.meta(ID_CHECK)["rows"] == PAGES + 1
    assert after.meta(SHARE_CHECK)["leads"] == PAGES + 1
    assert not after.passed(HISTORY_CHECK)
    assert after.meta(HISTORY_CHECK)["live_leads_without_current_version"] == 1
    # The counts still reconcile with the version they were computed from, verified in full
    # because leads has a newer commit.
    for check in (WEEKLY_COUNTS, MONTHLY_COUNTS):
        meta = after.meta(check)
        assert after.passed(check), check
        assert int(meta["leads_delta_version"]) == counted_version
        assert int(meta["leads_newest_version"]) == counted_version + 1
    # lead_history did not move: its entries checks (skipped after the blocking failure above,
    # run alone here) still rely on the first run.
    entries = Run(
        dg.materialize(
            [*ASSETS, *movement.CHECKS],
            resources=resources,
            instance=instance,
            selection=dg.AssetSelection.checks(*movement.CHECKS),
        )
    )
    assert entries.meta(WEEKLY_ENTRIES)["unchanged_since_last_pass"] is True
    assert entries.meta(MONTHLY_ENTRIES)["unchanged_since_last_pass"] is True


def test_a_table_recreated_at_the_same_version_is_verified(instance, resources, lake_uri):
    """Same URI, same version number, other data: the commit time tells them apart."""
    assert sync(instance, resources).success
    version = delta_version(lake_uri, LEADS_TABLE)
    rows = leads_rows(lake_uri)
    shutil.rmtree(Path(lake_uri, LEADS_TABLE))
    # As many commits as before, the last one adding a lead twice.
    uri = f"{lake_uri}/{LEADS_TABLE}"
    write_deltalake(uri, rows, mode="overwrite")
    for _ in range(version - 1):
        write_deltalake(uri, rows.slice(0, 0), mode="append")
    if version:
        write_deltalake(uri, rows.slice(3, 1), mode="append")
    else:
        write_deltalake(uri, pa.concat_tables([rows, rows.slice(3, 1)]), mode="overwrite")
    assert delta_version(lake_uri, LEADS_TABLE) == version

    after = checks_only(instance, resources)
    assert after.meta(ID_CHECK)["unchanged_since_last_pass"] is False
    assert not after.passed(ID_CHECK)
    assert after.meta(ID_CHECK)["duplicated_ids"] == 1


def test_another_threshold_is_verified_not_relied_on(instance, resources):
    """The share check's threshold is part of its inputs: a new setting is applied at once."""
    assert sync(instance, resources).success
    lenient = checks.quality_share_check(1.0)  # the same check (same key), another threshold
    selection = [c for c in CHECKS if c is not checks.share_of_leads_with_issues]

    def share_run(check) -> dict:
        result = dg.materialize(
            [*ASSETS, *selection, check],
            resources=resources,
            instance=instance,
            selection=dg.AssetSelection.checks(check),
        )
        [evaluation] = result.get_asset_check_evaluations()
        return {k: v.value for k, v in evaluation.metadata.items()}

    assert share_run(lenient)["unchanged_since_last_pass"] is False
    assert share_run(lenient)["unchanged_since_last_pass"] is True
    assert share_run(lenient)["threshold_percent"] == 100.0
    back = share_run(checks.share_of_leads_with_issues)
    assert back["unchanged_since_last_pass"] is False
    assert back["threshold_share"] == repr(checks.quality_max_share({}))


def test_rows_digest_tells_equal_rows_from_any_change():
    table = pa.table(
        {"semaine": ["2025-W01", "2025-W02"], "n": pa.array([3, 4], pa.int64())},
    )
    same = pa.concat_tables([table.slice(0, 1), table.slice(1, 1)])  # other chunks, same rows
    assert rows_digest(same) == rows_digest(table)
    assert rows_digest(table.set_column(1, "n", pa.array([3, 5], pa.int64()))) != rows_digest(table)
    assert rows_digest(table.set_column(1, "n", pa.array([3, 4], pa.int32()))) != rows_digest(table)
    assert rows_digest(table.slice(0, 1)) != rows_digest(table)
    assert rows_digest(None) == NOT_BUILT


def test_an_event_moved_to_the_next_week_is_verified_not_relied_on(
    instance, resources, warehouse_path
):
    """Moving one event to the next week keeps every total: the weekly check passes (totals are
    what it proves), and says it verified the new rows rather than relying on the old ones."""
    assert sync(instance, resources).success
    table = WEEK.table()
    weekly = published(warehouse_path, table)
    rows = weekly.to_pylist()
    i = next(i for i, r in enumerate(rows[:-1]) if r["date_relance"])
    rows[i]["date_relance"] -= 1
    rows[i + 1]["date_relance"] += 1
    Warehouse(warehouse_path).publish({table: pa.Table.from_pylist(rows, schema=weekly.schema)})
    after = checks_only(instance, resources)
    assert after.passed(WEEKLY_COUNTS)
    assert after.meta(WEEKLY_COUNTS)["unchanged_since_last_pass"] is False
    assert after.meta(WEEKLY_COUNTS)["verified_in_run"] == after.id
    assert after.meta(WEEKLY_COUNTS)["weekly_event_counts_sha256"] == rows_digest(
        published(warehouse_path, table)
    )
