"""The movement tables against the rules walked lead by lead, over histories shaped like real ones.

:mod:`leads_pipeline.transform.movement` computes the entries and stays with one vectorised
Arrow/NumPy pass over the whole history. Here the same rules are applied the slow and obvious
way, in Python, one lead at a time, version after version (the module docstring's wording): a
live version whose status differs from the one the lead was in enters it; a tombstone or an
empty status ends the stay. The histories are random but seeded, written as real Delta tables
the way syncs write them (appended in edit-time order over many commits, rows of a lead spread
over files), with versions that keep their status, deletions then restorations (into the same or
another status), empty statuses, edits within one minute and version numbers with gaps.
"""

from __future__ import annotations

import itertools
import random
import statistics
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from leads_pipeline.tables import GRAINS, HISTORY_TABLE, MONTH, WEEK
from leads_pipeline.transform.movement import (
    compute_status_durations,
    compute_status_entries,
    mark_versions,
    verify_status_entries,
)
from leads_pipeline.transform.status_semantics import ordered_statuses

TS = pa.timestamp("us", tz="UTC")
SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("version", pa.int64()),
        ("valid_from", TS),
        ("change", pa.string()),
        ("statut", pa.string()),
        ("nom", pa.string()),
    ]
)
#: A select property: its options in order, no groups. "Archivé" is only seen in the data.
STATUSES = ordered_statuses(
    {
        "type": "select",
        "select": {"options": [{"name": n} for n in ("Nouveau", "Contacté", "Répondu", "Gagné")]},
    }
)
KNOWN = ["Nouveau", "Contacté", "Répondu", "Gagné"]
NOW = datetime(2025, 9, 1, tzinfo=UTC)


# -- the rules, walked one lead at a time -----------------------------------------------------


def walk(rows: list[dict]) -> tuple[list[tuple[str, datetime]], list[tuple[str, bool, float]]]:
    """The entries ``(status, time)`` and the stays ``(status, completed, days)`` of the history
    ``rows``, lead by lead in version order (an open stay's days: its age at ``NOW``)."""
    by_lead = defaultdict(list)
    for row in rows:
        by_lead[row["id"]].append(row)
    entries, stays = [], []
    for versions in by_lead.values():
        current = None  # (status, entered at) of the stay the lead is in
        for v in sorted(versions, key=lambda r: r["version"]):
            status = None if v["change"] == "deleted" else v["statut"]
            if current is not None and status != current[0]:
                stays.append((current[0], True, (v["valid_from"] - current[1]) / timedelta(days=1)))
                current = None
            if status is not None and current is None:
                entries.append((status, v["valid_from"]))
                current = (status, v["valid_from"])
        if current is not None:
            stays.append((current[0], False, (NOW - current[1]) / timedelta(days=1)))
    return entries, stays


def period_start(grain, moment: datetime) -> date:
    return grain.period_start(moment.astimezone(UTC).date())


def next_period(grain, start: date) -> date:
    if grain is WEEK:
        return start + timedelta(days=7)
    return date(start.year + start.month // 12, start.month % 12 + 1, 1)


def status_order(seen: set[str]) -> list[str]:
    return KNOWN + sorted(seen - set(KNOWN))


def expected_entries(rows: list[dict], grain) -> list[dict]:
    entries, _ = walk(rows)
    if not entries:
        return []
    counts = Counter((period_start(grain, t), s) for s, t in entries)
    first = min(p for p, _ in counts)
    last = max(p for p, _ in counts)
    periods = [first]
    while periods[-1] < last:
        periods.append(next_period(grain, periods[-1]))
    order = status_order({s for s, _ in entries})
    return [
        {
            grain.label: grain.label_of(p),
            grain.start_column: p,
            "statut": s,
            "status_group": None,
            "entries": counts.get((p, s), 0),
        }
        for p, s in itertools.product(periods, order)
    ]


def quantile(values: list[float], q: float) -> float | None:
    """Linear interpolation between the closest ranks (DuckDB's ``quantile_cont``)."""
    if not values:
        return None
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (position - low) * (ordered[high] - ordered[low])


def expected_durations(rows: list[dict]) -> dict[str, tuple]:
    entries, stays = walk(rows)
    out = {}
    for status in status_order({s for s, _ in entries}):
        done = [d for s, completed, d in stays if s == status and completed]
        ages = [d for s, completed, d in stays if s == status and not completed]
        out[status] = (
            len(done),
            quantile(done, 0.5),
            quantile(done, 0.9),
            len(ages),
            statistics.median(ages) if ages else None,
        )
    return out


# -- histories shaped like real ones ----------------------------------------------------------


def random_history(seed: int, leads: int = 300) -> list[dict]:
    """Versions of ``leads`` leads: statuses moving on or kept, emptied, deletions, restorations
    (into the same or another status), same-minute edits, version numbers with gaps."""
    rng = random.Random(seed)
    statuses = [*KNOWN, "Archivé"]
    rows = []
    for lead in range(leads):
        moment = datetime(2024, 11, 1, tzinfo=UTC) + timedelta(minutes=rng.randrange(400_000))
        number = rng.choice([1, 1, 1, 5])
        status = rng.choice([*statuses, None])
        change = "created"
        for _ in range(rng.randint(1, 8)):
            rows.append(
                {
                    "id": f"{lead:08x}-0000-4000-8000-{seed:012x}",
                    "version": number,
                    "valid_from": moment,
                    "change": change,
                    "statut": status,
                    "nom": f"Lead {lead}",
                }
            )
            number += rng.choice([1, 1, 1, 1, 2])
            moment += rng.choice([timedelta(0), timedelta(minutes=1), timedelta(hours=5)])
            moment += timedelta(days=rng.choice([0, 0, 1, 3, 12]))
            draw = rng.random()
            if change == "deleted":
                change = "restored"
                status = rng.choice([status, rng.choice(statuses)])  # back as it was, or not
            elif draw < 0.1:
                change = "deleted"  # the tombstone keeps the last status
            elif draw < 0.3:
                change = "updated"  # another column changed: the status is kept
            elif draw < 0.38:
                change, status = "updated", None
            else:
                change, status = "updated", rng.choice(statuses)
    return rows


def as_delta(tmp_path, rows: list[dict], commits: int = 12):
    """``rows`` written as syncs write them: in edit-time order, over ``commits`` appends."""
    uri = str(tmp_path / HISTORY_TABLE)
    ordered = sorted(rows, key=lambda r: r["valid_from"])
    size = -(-len(ordered) // commits)
    for start in range(0, len(ordered), size):
        chunk = pa.Table.from_pylist(ordered[start : start + size], schema=SCHEMA)
        write_deltalake(uri, chunk, mode="append")
    return DeltaTable(uri).to_pyarrow_dataset()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_entries_follow_the_rules_walked_lead_by_lead(tmp_path, seed):
    rows = random_history(seed)
    history = as_delta(tmp_path, rows)
    assert len(history.files) > 1  # a lead's versions are spread over files
    entries, _ = walk(rows)
    assert len(entries) > len({r["id"] for r in rows})  # leads do move
    for grain in GRAINS:
        table = compute_status_entries(history, grain, STATUSES)
        assert table.to_pylist() == expected_entries(rows, grain), grain.name
        assert table.schema.field("entries").type == pa.int64()
        assert verify_status_entries(history, table).passed


@pytest.mark.parametrize("seed", [1, 4])
def test_durations_follow_the_rules_walked_lead_by_lead(tmp_path, seed):
    rows = random_history(seed)
    table = compute_status_durations(as_delta(tmp_path, rows), STATUSES, NOW)
    expected = expected_durations(rows)
    assert table["statut"].to_pylist() == list(expected)
    assert table["position"].to_pylist() == list(range(len(expected)))
    for row in table.to_pylist():
        completed, median, p90, open_stays, median_open = expected[row["statut"]]
        assert (row["completed_stays"], row["open_stays"]) == (completed, open_stays)
        for column, value in (
            ("median_days", median),
            ("p90_days", p90),
            ("median_open_days", median_open),
        ):
            assert row[column] == (None if value is None else pytest.approx(value, abs=1e-9))


def chain(lead: str, *versions: tuple) -> list[dict]:
    """Rows of one lead: ``(version, change, statut, valid_from)``."""
    return [
        {"id": lead, "version": n, "valid_from": t, "change": c, "statut": s, "nom": lead}
        for n, c, s, t in versions
    ]


def day(n: int, hour: int = 9) -> datetime:
    return datetime(2025, 3, 1, hour, tzinfo=UTC) + timedelta(days=n)


EDGES = [
    # Kept over many versions, then deleted and restored into the same status: two entries.
    *chain(
        "kept",
        (1, "created", "Contacté", day(0)),
        (2, "updated", "Contacté", day(1)),
        (3, "updated", "Contacté", day(2)),
        (4, "deleted", "Contacté", day(4)),
        (5, "restored", "Contacté", day(9)),
        (6, "updated", "Contacté", day(10)),
    ),
    # First seen as a tombstone, deleted twice in a row, restored into another status.
    *chain(
        "tomb",
        (1, "deleted", "Nouveau", day(1)),
        (2, "restored", "Nouveau", day(2)),
        (3, "deleted", "Nouveau", day(3)),
        (4, "deleted", "Nouveau", day(5)),
        (5, "restored", "Répondu", day(6)),
    ),
    # Version numbers far apart (wider than 2**32): still ordered by version, not by row.
    *chain(
        "far",
        (3 * 2**33, "updated", "Gagné", day(8)),
        (2, "created", "Nouveau", day(2)),
        (2**33, "updated", "Nouveau", day(5)),
    ),
    # Emptied then set again within the same minute: a second entry at that minute.
    *chain(
        "blank",
        (1, "created", "Nouveau", day(3)),
        (2, "updated", None, day(3, 10)),
        (3, "updated", "Nouveau", day(3, 10)),
    ),
]


def test_edges_kept_statuses_tombstones_restorations_and_far_apart_versions(tmp_path):
    history = as_delta(tmp_path, EDGES, commits=3)
    monthly = compute_status_entries(history, MONTH, STATUSES)
    got = {r["statut"]: r["entries"] for r in monthly.to_pylist()}
    # kept: Contacté ×2; tomb: Nouveau (restored), Répondu; far: Nouveau, Gagné; blank: Nouveau ×2.
    assert got == {"Nouveau": 4, "Contacté": 2, "Répondu": 1, "Gagné": 1}
    assert monthly.to_pylist() == expected_entries(EDGES, MONTH)
    durations = {
        r["statut"]: r for r in compute_status_durations(history, STATUSES, NOW).to_pylist()
    }
    # Contacté: 4 days (ended by the deletion), then open since day 9. Nouveau: tomb 1 day,
    # far 6 days (2 → 8), blank 1 h; blank's second stay is open.
    assert durations["Contacté"]["completed_stays"] == 1
    assert durations["Contacté"]["median_days"] == pytest.approx(4.0)
    assert durations["Nouveau"]["completed_stays"] == 3
    assert durations["Nouveau"]["median_days"] == pytest.approx(1.0)
    assert durations["Nouveau"]["p90_days"] == pytest.approx(1.0 + 0.8 * (6.0 - 1.0))
    assert durations["Nouveau"]["open_stays"] == 1
    assert verify_status_entries(history, monthly).passed


def test_one_marking_serves_every_grain_and_the_durations(tmp_path):
    history = as_delta(tmp_path, random_history(5, leads=80))
    marked = mark_versions(history)
    for grain in GRAINS:
        assert compute_status_entries(marked, grain, STATUSES).equals(
            compute_status_entries(history, grain, STATUSES)
        )
    assert compute_status_durations(marked, STATUSES, NOW).equals(
        compute_status_durations(history, STATUSES, NOW)
    )


def test_an_unusable_version_or_valid_from_is_named():
    rows = pa.Table.from_pylist(EDGES, schema=SCHEMA)
    with pytest.raises(ValueError, match="version"):
        compute_status_entries(
            rows.set_column(1, "version", rows["version"].cast(pa.string())), WEEK
        )
    with pytest.raises(ValueError, match="valid_from"):
        compute_status_entries(
            rows.set_column(2, "valid_from", rows["valid_from"].cast(pa.string())), WEEK
        )
