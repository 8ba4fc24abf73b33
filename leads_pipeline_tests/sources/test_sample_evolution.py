"""The sample's deterministic evolution over simulated days (issue 13, item 6).

The expectations are computed here from the pages of consecutive days, by comparing them page by
page with the rules the evolution is documented to follow (a fixed share of the open leads one
status forward in the funnel, three leads trashed a day, one of day 1's restored on day 2), not
from the generator's own bookkeeping. The last test syncs days 0, 1 and 2 into one lake with the
real ingestion assets and checks the ``lead_history`` they build.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from deltalake import DeltaTable

from leads_pipeline.defs.assets import ingestion
from leads_pipeline.defs.resources import LakeResource, PropertyMapResource, WarehouseResource
from leads_pipeline.sources.base import ListingStats
from leads_pipeline.sources.sample import SampleLeadsSource
from leads_pipeline.sources.sample_data import SAMPLE_SCHEMA, generate_pages
from leads_pipeline.tables import RAW_TABLE

#: The funnel as the sales team draws it; moves go one step to the right, never out of a closed one.
FUNNEL = ["Nouveau", "Contacté", "Répondu", "Appel proposé", "Appel booké", "Gagné", "Perdu"]
CLOSED = {"Gagné", "Perdu"}
#: The date property a move into a status sets.
DATE_OF = {
    "Contacté": "Date de prise de contact",
    "Répondu": "Date de réponse du prospect",
    "Appel proposé": "Date d'appel proposé",
    "Appel booké": "Date d'appel booké",
}
#: The ``leads`` column of each date property (the default property map).
COLUMN_OF = {
    "Date de prise de contact": "date_prise_contact",
    "Date de réponse du prospect": "date_reponse_prospect",
    "Date d'appel proposé": "date_appel_propose",
    "Date d'appel booké": "date_appel_booke",
}
DAY_ZERO = date(2026, 1, 2)  # the sample's last edit


def pages(day: int | None) -> list[dict]:
    return list(SampleLeadsSource(day=day).live_pages())


def status(page: dict) -> str:
    return page["properties"]["Statut"]["status"]["name"]


def edited(page: dict) -> datetime:
    return datetime.fromisoformat(page["last_edited_time"].replace("Z", "+00:00"))


def trashed(page: dict) -> bool:
    return page["in_trash"] or page["archived"]


def without(page: dict, *keys: str, properties: tuple[str, ...] = ()) -> dict:
    """``page`` without top-level ``keys`` and without the named properties."""
    rest = {k: v for k, v in page.items() if k not in keys and k != "properties"}
    rest["properties"] = {k: v for k, v in page["properties"].items() if k not in properties}
    return rest


def day_changes(before: list[dict], after: list[dict], day: int) -> dict[str, list[str]]:
    """Classifies what changed between two consecutive days, asserting each change is legal.

    Returns:
        ``{"moved": [...], "trashed": [...], "restored": [...]}``, page ids.
    """
    old = {p["id"]: p for p in before}
    new = {p["id"]: p for p in after}
    assert set(old) == set(new), "no page appears or disappears: trashed pages stay in the list"
    today = DAY_ZERO + timedelta(days=day)
    opening = datetime(today.year, today.month, today.day, 9, tzinfo=UTC)
    changes: dict[str, list[str]] = {"moved": [], "trashed": [], "restored": []}
    for page_id, page in new.items():
        previous = old[page_id]
        if page == previous:
            continue
        # Edited on that simulated day, in working hours.
        assert opening <= edited(page) < opening + timedelta(hours=8), page["last_edited_time"]
        if trashed(page) != trashed(previous):
            kind = "trashed" if trashed(page) else "restored"
            assert page["in_trash"] is page["archived"] is trashed(page)
            assert without(page, "last_edited_time", "in_trash", "archived") == without(
                previous, "last_edited_time", "in_trash", "archived"
            )
            changes[kind].append(page_id)
            continue
        assert not trashed(previous), "a trashed page is never edited"
        was, now = status(previous), status(page)
        assert was not in CLOSED and FUNNEL.index(now) == FUNNEL.index(was) + 1, (was, now)
        option = next(o for o in SAMPLE_SCHEMA["Statut"]["status"]["options"] if o["name"] == now)
        assert page["properties"]["Statut"]["status"] == option
        touched = ("Statut",)
        if now in DATE_OF:
            touched = ("Statut", DATE_OF[now])
            value = page["properties"][DATE_OF[now]]
            assert value["date"] == {"start": today.isoformat(), "end": None, "time_zone": None}
            assert value["id"] == SAMPLE_SCHEMA[DATE_OF[now]]["id"]
        assert without(page, "last_edited_time", properties=touched) == without(
            previous, "last_edited_time", properties=touched
        )
        changes["moved"].append(page_id)
    return changes


def test_day_zero_and_unset_are_exactly_todays_sample():
    today = generate_pages(2000, 42)
    for day in (None, 0):
        served = pages(day)
        assert json.dumps(served, ensure_ascii=False) == json.dumps(today, ensure_ascii=False)
    listed = [
        p
        for batch in SampleLeadsSource(day=0).list_pages(
            edited_on_or_after=None, stats=ListingStats()
        )
        for p in batch
    ]
    assert listed == today


def test_the_day_field_rejects_a_negative_day():
    with pytest.raises(Exception, match="greater than or equal to 0"):
        SampleLeadsSource(day=-1)


def test_days_one_to_three_move_trash_and_restore_by_the_rules():
    days = [pages(day) for day in range(4)]
    restored_total = []
    trashed_on: dict[int, list[str]] = {}
    for day in (1, 2, 3):
        before, after = days[day - 1], days[day]
        changes = day_changes(before, after, day)
        open_live = [p for p in before if not trashed(p) and status(p) not in CLOSED]
        assert len(changes["moved"]) == max(1, round(0.05 * len(open_live)))
        assert len(changes["trashed"]) == 3
        trashed_on[day] = changes["trashed"]
        restored_total += [(day, page_id) for page_id in changes["restored"]]
        # Sorted as a Notion query sorted by edit time; the day's edits come after every other.
        assert [(p["last_edited_time"], p["id"]) for p in after] == sorted(
            (p["last_edited_time"], p["id"]) for p in after
        )
        changed = set(changes["moved"]) | set(changes["trashed"]) | set(changes["restored"])
        newest_before = max(edited(p) for p in before)
        assert all(edited(p) > newest_before for p in after if p["id"] in changed)
        assert all(edited(p) <= newest_before for p in after if p["id"] not in changed)
    # Exactly one lead comes back: one trashed on day 1, on day 2.
    assert len(restored_total) == 1
    [(day, page_id)] = restored_total
    assert day == 2 and page_id in trashed_on[1]
    # Day 1 moved leads out of every open status.
    moved_from = {
        status(p) for p in days[0] if p["id"] in day_changes(days[0], days[1], 1)["moved"]
    }
    assert moved_from == set(FUNNEL) - CLOSED


def test_an_incremental_listing_sees_exactly_the_days_live_changes():
    before, after = pages(1), pages(2)
    changes = day_changes(before, after, 2)
    since = max(edited(p) for p in before) + timedelta(minutes=1)  # on_or_after: one past day 1
    source = SampleLeadsSource(day=2)
    listed = [
        p
        for batch in source.list_pages(edited_on_or_after=since, stats=ListingStats())
        for p in batch
    ]
    # Trashed pages are left out of a listing, as Notion's queries leave them out.
    assert {p["id"] for p in listed} == set(changes["moved"]) | set(changes["restored"])
    assert source.latest_edit(after=since, stats=ListingStats()) == max(
        edited(p) for p in after if not trashed(p)
    )


def _digest(day: int, seed: int) -> str:
    """The day's pages' SHA-256, computed in a fresh interpreter with its own hash seed."""
    code = (
        "import hashlib, json, sys;"
        "from leads_pipeline.sources.sample_data import pages_on_day;"
        f"pages = pages_on_day(2000, {seed}, {day});"
        "sys.stdout.write(hashlib.sha256(json.dumps(pages).encode()).hexdigest())"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        capture_output=True,
        text=True,
        env={"PYTHONHASHSEED": "random"},
    ).stdout


def test_the_evolution_is_deterministic_across_processes_and_depends_on_the_seed():
    here = hashlib.sha256(json.dumps(pages(3)).encode()).hexdigest()
    assert _digest(3, 42) == _digest(3, 42) == here
    assert SampleLeadsSource(day=3, seed=7).live_pages() != SampleLeadsSource(day=3).live_pages()


# -- three syncs into one lake --------------------------------------------------------------------


def sync(lake: Path, day: int, *, full_listing: bool = False) -> tuple[datetime, datetime]:
    """Materializes the ingestion assets on the sample of ``day``; returns the run's time span."""
    started = datetime.now(UTC)
    result = dg.materialize(
        ingestion.ASSETS,
        resources={
            "source": SampleLeadsSource(day=day),
            "lake": LakeResource(uri=str(lake)),
            "warehouse": WarehouseResource(path=str(lake.parent / "warehouse.duckdb")),
            "property_map": PropertyMapResource(),
        },
        run_config={"ops": {RAW_TABLE: {"config": {"full_listing": full_listing}}}},
    )
    assert result.success
    return started, datetime.now(UTC)


def test_three_syncs_of_days_0_1_2_build_the_expected_history(tmp_path):
    """Day 0, day 1 with a full listing (deletions are noticed), day 2 incremental, then a refresh.

    Expected versions per lead: created at its day-0 edit; one ``updated`` per move seen by a
    sync, starting at the page's edit time, with the status and date columns changed; a
    ``deleted`` tombstone when a full listing misses a trashed lead (at that sync's time); a
    ``restored`` version when the lead comes back (never starting before its tombstone).
    """
    lake = tmp_path / "lake"
    days = [pages(day) for day in range(3)]
    one, two = day_changes(days[0], days[1], 1), day_changes(days[1], days[2], 2)
    by_day = [{p["id"]: p for p in day_pages} for day_pages in days]

    expected: dict[str, list[tuple]] = {
        p["id"]: [("created", status(p), edited(p))] for p in days[0]
    }
    changed_columns: dict[tuple[str, int], set[str]] = {}

    def moved(day: int, page_id: str) -> None:
        page = by_day[day][page_id]
        expected[page_id].append(("updated", status(page), edited(page)))
        columns = {"statut"} | (
            {COLUMN_OF[DATE_OF[status(page)]]} if status(page) in DATE_OF else set()
        )
        changed_columns[(page_id, len(expected[page_id]))] = columns

    sync(lake, 0)
    day_one_span = sync(lake, 1, full_listing=True)
    for page_id in one["moved"]:
        moved(1, page_id)
    for page_id in one["trashed"]:
        expected[page_id].append(("deleted", status(by_day[1][page_id]), day_one_span))
    sync(lake, 2)  # incremental: sees the moves and the restore, not day 2's trashed leads
    for page_id in two["moved"]:
        moved(2, page_id)
    [back] = two["restored"]
    expected[back].append(("restored", status(by_day[2][back]), day_one_span))

    def check() -> None:
        rows = DeltaTable(str(lake / "lead_history")).to_pyarrow_table().to_pylist()
        actual: dict[str, list[dict]] = {}
        for row in sorted(rows, key=lambda r: (r["id"], r["version"])):
            actual.setdefault(row["id"], []).append(row)
        assert set(actual) == set(expected)
        for page_id, chain in expected.items():
            got = actual[page_id]
            assert [r["version"] for r in got] == list(range(1, len(chain) + 1))
            assert [(r["change"], r["statut"]) for r in got] == [(c, s) for c, s, _ in chain]
            for row, (change, _, start) in zip(got, chain, strict=True):
                if isinstance(start, tuple):  # a sync's time span: when it noticed the change
                    assert start[0] <= row["valid_from"] <= start[1], (page_id, change)
                else:
                    assert row["valid_from"] == start, (page_id, change)
                key = (page_id, row["version"])
                if key in changed_columns:
                    assert set(row["changed_columns"]) == changed_columns[key]
            assert got[-1]["is_current"] is (got[-1]["change"] != "deleted")
            assert all(not r["is_current"] for r in got[:-1])

    check()
    live_day_2 = {p["id"] for p in days[2] if not trashed(p)}
    assert set(two["trashed"]).isdisjoint(live_day_2)
    # Day 2's trashed leads are still current: only a full listing notices a deletion.
    refresh_span = sync(lake, 2, full_listing=True)
    for page_id in two["trashed"]:
        expected[page_id].append(("deleted", status(by_day[2][page_id]), refresh_span))
    check()
    counts = {
        change: sum(c == change for chain in expected.values() for c, _, _ in chain)
        for change in ("created", "updated", "deleted", "restored")
    }
    assert counts["created"] == 2000 and counts["restored"] == 1 and counts["deleted"] == 6
    assert counts["updated"] == len(one["moved"]) + len(two["moved"]) > 100
