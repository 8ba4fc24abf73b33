"""Incremental derivations stay the size of a sync: the marks of ``leads`` and its issues (issue 13).

A write that changes nothing makes no commit, so ``lead_quality_issues`` (which rarely changes)
kept the mark of the first derivation, and every sync parsed and merged again every raw change
since: the ``leads`` step grew with each sync. These tests count the raw rows each derivation
processes (the pages that sync changed) and compare every table with what the pages say.
"""

import datetime as dt
import shutil

import dagster as dg
from deltalake import write_deltalake

from leads_pipeline.defs.assets import ingestion
from leads_pipeline.tables import ISSUES_TABLE, LEADS_TABLE, RAW_TABLE
from leads_pipeline_tests.lake_helpers import Workspace, metadata_of
from leads_pipeline_tests.pages import date_value, make_page, rich

CONTACT = "Date de prise de contact"
#: Not a calendar date: the lead keeps a NULL contact date and gets one quality issue.
BAD_DAY = "2025-02-30"
PAGES = 30


def page(n: int, *, name: str | None = None, day: str = "2025-01-06", edited: int = 0) -> dict:
    """Lead ``n``; ``edited`` days after 2025-03-01 (each sync's edits are newer than the last)."""
    stamp = dt.datetime(2025, 3, 1, 10, tzinfo=dt.UTC) + dt.timedelta(days=edited)
    return make_page(
        f"00000000-0000-4000-8000-{n:012d}",
        nom=rich(name or f"Lead {n}"),
        dates={CONTACT: date_value(day)},
        edited=stamp.isoformat().replace("+00:00", ".000Z"),
    )


def first_pages() -> list[dict]:
    """The pages of the first sync: leads 0 and 1 have an unreadable contact date."""
    return [page(n, day=BAD_DAY if n < 2 else "2025-01-06") for n in range(PAGES)]


def expected_leads(pages: list[dict]) -> dict[str, tuple]:
    """Every page's lead: its name and contact date (NULL when it is not a calendar date)."""
    result = {}
    for p in pages:
        start = p["properties"][CONTACT]["date"]["start"]
        day = None if start == BAD_DAY else dt.date.fromisoformat(start)
        result[p["id"]] = (p["properties"]["Nom"]["title"][0]["plain_text"], day)
    return result


def expected_issues(pages: list[dict]) -> set[tuple[str, str]]:
    """(page, column) of every issue: one per unreadable contact date."""
    return {
        (p["id"], "date_prise_contact")
        for p in pages
        if p["properties"][CONTACT]["date"]["start"] == BAD_DAY
    }


def leads_of(ws: Workspace) -> dict[str, tuple]:
    return {k: (v["nom"], v["date_prise_contact"]) for k, v in ws.rows(LEADS_TABLE).items()}


def issues_of(ws: Workspace) -> set[tuple[str, str]]:
    return {
        (r["page_id"], r["column"]) for r in ws.table(ISSUES_TABLE).to_pyarrow_table().to_pylist()
    }


def sync(ws: Workspace, pages: list[dict], assets=ingestion.ASSETS):
    """Publishes ``pages`` and syncs the ingestion assets (``lead_history`` reads the feed)."""
    ws.publish(pages)
    return ws.sync(assets=assets)


def rename(pages: list[dict], numbers: list[int], edited: int) -> None:
    """Renames leads ``numbers`` (no issue changes), edited ``edited`` days after the first."""
    for n in numbers:
        old = pages[n]
        day = old["properties"][CONTACT]["date"]["start"]
        pages[n] = page(n, name=f"Lead {n} (edit {edited})", day=day, edited=edited)


def processed(result) -> tuple[str, int]:
    meta = metadata_of(result, LEADS_TABLE)
    return meta["mode"].value, meta["raw_rows_processed"].value


def test_each_sync_parses_only_its_own_changes_while_the_issues_stay_unchanged(tmp_path):
    ws = Workspace(tmp_path)
    pages = first_pages()
    sync(ws, pages)
    issues_version = ws.table(ISSUES_TABLE).version()
    leads_version = ws.table(LEADS_TABLE).version()
    for edit in range(1, 7):
        numbers = [(3 * edit) % PAGES, (3 * edit + 1) % PAGES]
        rename(pages, numbers, edit)
        result = sync(ws, pages)
        # Before the fix: 2, 4, 6, ... (every change since the issues' last commit).
        assert processed(result) == ("incremental", 2)
        assert leads_of(ws) == expected_leads(pages)
        assert issues_of(ws) == expected_issues(pages)
        # One commit to leads, none to the unchanged issues.
        assert ws.table(LEADS_TABLE).version() == leads_version + edit
        assert ws.table(ISSUES_TABLE).version() == issues_version
    assert ws.table(RAW_TABLE).to_pyarrow_dataset().count_rows() == PAGES


def test_compaction_and_vacuum_keep_the_issues_mark_and_another_write_resets_it(tmp_path):
    ws = Workspace(tmp_path)
    pages = first_pages()
    sync(ws, pages)
    # An issue appears (a new file of issues, the old one left for vacuum), then goes again.
    pages[5] = page(5, day=BAD_DAY, edited=1)
    assert processed(sync(ws, pages)) == ("incremental", 1)
    pages[5] = page(5, edited=2)
    assert processed(sync(ws, pages)) == ("incremental", 1)
    assert issues_of(ws) == expected_issues(pages)

    # Upkeep as maintain_lake does it (here without retention): commits that change no row.
    issues = ws.table(ISSUES_TABLE)
    issues.optimize.compact()
    assert issues.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
    upkeep = {c["operation"] for c in ws.table(ISSUES_TABLE).history(2)}
    assert upkeep == {"VACUUM START", "VACUUM END"}
    rename(pages, [10, 11], 3)
    assert processed(sync(ws, pages)) == ("incremental", 2)

    # Another writer rewrites the issues (here with the same rows): the derivation no longer
    # knows what they were derived from and goes back to their own mark, the sync that removed
    # page 5's issue: pages 10, 11 (edited since), and the two renamed now.
    write_deltalake(
        ws.table(ISSUES_TABLE), ws.table(ISSUES_TABLE).to_pyarrow_table(), mode="overwrite"
    )
    rename(pages, [12, 13], 4)
    assert processed(sync(ws, pages)) == ("incremental", 4)
    rename(pages, [14], 5)
    assert processed(sync(ws, pages)) == ("incremental", 1)
    assert leads_of(ws) == expected_leads(pages)
    assert issues_of(ws) == expected_issues(pages)


def test_a_derivation_that_stopped_between_its_issues_and_its_leads_is_completed(tmp_path):
    """The issues written through the new raw version, ``leads`` still on the previous one."""
    ws = Workspace(tmp_path)
    pages = first_pages()
    sync(ws, pages)
    rename(pages, [3], 1)
    assert processed(sync(ws, pages)) == ("incremental", 1)  # its commit vouches for the issues
    pages[7] = page(7, day=BAD_DAY, edited=2)
    rename(pages, [8], 2)
    ws.publish(pages)
    assert dg.materialize([ingestion.raw_notion_leads], resources=ws.resources()).success
    leads_before = leads_of(ws)

    # The interrupted derivation: the leads step run on a copy of the lake, of which only the
    # issues (written first) are kept, as a process killed before its leads commit leaves them.
    copy = Workspace(tmp_path / "copy")
    shutil.copytree(tmp_path / "lake", tmp_path / "copy" / "lake")
    copy.publish(pages)
    copy.sync(assets=[ingestion.leads_and_quality_issues])
    shutil.rmtree(tmp_path / "lake" / ISSUES_TABLE)
    shutil.copytree(tmp_path / "copy" / "lake" / ISSUES_TABLE, tmp_path / "lake" / ISSUES_TABLE)
    assert issues_of(ws) == expected_issues(pages)
    assert leads_of(ws) == leads_before != expected_leads(pages)

    issues_version = ws.table(ISSUES_TABLE).version()
    result = ws.sync(assets=[ingestion.leads_and_quality_issues])
    assert processed(result) == ("incremental", 2)
    assert leads_of(ws) == expected_leads(pages)
    assert issues_of(ws) == expected_issues(pages)
    assert ws.table(ISSUES_TABLE).version() == issues_version  # already right: no commit
    # The leads commit now vouches for those issues: the next sync reads only its own change.
    rename(pages, [9], 3)
    assert processed(sync(ws, pages)) == ("incremental", 1)
    assert leads_of(ws) == expected_leads(pages)
