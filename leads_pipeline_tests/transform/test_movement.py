"""Movement analytics (issue 13, items 3 and 5): status entries, stays, cohorts and their check.

The first half runs the computations over crafted ``lead_history`` and ``leads`` tables (real
Delta tables for the history) and compares them with values worked out by hand in this file.
The second half materializes the real assets over a lake filled by syncs of the fake Notion
server, whose schema declares the statuses' order and groups, and compares the published tables
with what the pages put in the fake say.
"""

from __future__ import annotations

import itertools
import json
import shutil
from collections import Counter
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from leads_pipeline.defs.assets import ingestion
from leads_pipeline.defs.assets import movement as movement_assets
from leads_pipeline.defs.resources import LakeResource, PropertyMapResource, WarehouseResource
from leads_pipeline.sources.sample_data import SAMPLE_DATA_SOURCE_ID, SAMPLE_SCHEMA
from leads_pipeline.storage.warehouse import Warehouse
from leads_pipeline.tables import (
    COHORTS_TABLE,
    DURATIONS_TABLE,
    GRAINS,
    HISTORY_TABLE,
    MONTH,
    STATUS_ENTRIES,
    WEEK,
)
from leads_pipeline.transform.movement import (
    compute_cohort_conversion,
    compute_status_durations,
    compute_status_entries,
    verify_status_entries,
)
from leads_pipeline.transform.status_semantics import ordered_statuses
from leads_pipeline_tests.notion_fixtures import notion_source

TS = pa.timestamp("us", tz="UTC")


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


# -- crafted history ------------------------------------------------------------------------------

#: Schema order: To-do [Nouveau], In progress [Contacté, Répondu, Appel booké],
#: Complete [Gagné, Perdu] (options listed in another order than the groups show them).
STATUT = {
    "id": "s%3Dtt",
    "name": "Statut",
    "type": "status",
    "status": {
        "options": [
            {"id": f"o{i}", "name": n, "color": "default"}
            for i, n in enumerate(
                ["Perdu", "Gagné", "Appel booké", "Répondu", "Contacté", "Nouveau"]
            )
        ],
        "groups": [
            {"id": "g1", "name": "To-do", "option_ids": ["o5"]},
            {"id": "g2", "name": "In progress", "option_ids": ["o4", "o3", "o2"]},
            {"id": "g3", "name": "Complete", "option_ids": ["o1", "o0"]},
        ],
    },
}
STATUSES = ordered_statuses(STATUT)
#: (status, group) in the tables' order: the schema's, then "Archivé" (only seen in the data).
ORDER = [
    ("Nouveau", "To-do"),
    ("Contacté", "In progress"),
    ("Répondu", "In progress"),
    ("Appel booké", "In progress"),
    ("Gagné", "Complete"),
    ("Perdu", "Complete"),
    ("Archivé", None),
]

#: Per lead, its versions: (change, statut, valid_from). Tombstones hold the last status.
VERSIONS = {
    # Sunday 23:59 UTC (2024-W52), then Monday 00:00 UTC written at -05:00 (2025-W01).
    "A": [
        ("created", "Nouveau", utc(2024, 12, 29, 23, 59)),
        (
            "updated",
            "Contacté",
            datetime(2024, 12, 29, 19, 0, tzinfo=timezone(-timedelta(hours=5))),
        ),
    ],
    # Two changes within one minute (same valid_from), seen by two syncs.
    "B": [
        ("created", "Nouveau", utc(2025, 1, 1, 10, 0)),
        ("updated", "Contacté", utc(2025, 1, 2, 9, 0)),
        ("updated", "Répondu", utc(2025, 1, 2, 9, 0)),
    ],
    # Deleted, then restored in the status it had; an edit that keeps the status.
    "C": [
        ("created", "Contacté", utc(2025, 1, 6, 8, 0)),
        ("deleted", "Contacté", utc(2025, 1, 8, 8, 0)),
        ("restored", "Contacté", utc(2025, 1, 20, 0, 0)),
        ("updated", "Contacté", utc(2025, 1, 21, 0, 0)),
    ],
    # No status first (not a status), then one.
    "D": [
        ("created", None, utc(2025, 1, 7, 0, 0)),
        ("updated", "Nouveau", utc(2025, 1, 27, 0, 0)),
    ],
    # A status the schema does not know.
    "E": [("created", "Archivé", utc(2025, 1, 28, 0, 0))],
    # A status emptied then set again (two entries into Nouveau), then won.
    "G": [
        ("created", "Nouveau", utc(2025, 1, 7, 0, 0)),
        ("updated", None, utc(2025, 1, 8, 0, 0)),
        ("updated", "Nouveau", utc(2025, 1, 9, 0, 0)),
        ("updated", "Gagné", utc(2025, 1, 10, 12, 0)),
    ],
}
NOW = utc(2025, 2, 1)


def history_table(versions: dict[str, list[tuple]]) -> pa.Table:
    """``lead_history`` rows for ``versions``: valid_to and is_current as the history sets them."""
    rows = []
    for key, chain in versions.items():
        for number, (change, statut, start) in enumerate(chain, 1):
            following = chain[number] if number < len(chain) else None
            deleted = change == "deleted"
            rows.append(
                {
                    "id": f"lead-{key}",
                    "version": number,
                    "valid_from": start,
                    "valid_to": start if deleted else (following[2] if following else None),
                    "is_current": following is None and not deleted,
                    "change": change,
                    "changed_columns": ["statut"],
                    "nom": f"Nom {key}",
                    "statut": statut,
                    "synced_at": start,
                }
            )
    schema = pa.schema(
        [
            ("id", pa.string()),
            ("version", pa.int64()),
            ("valid_from", TS),
            ("valid_to", TS),
            ("is_current", pa.bool_()),
            ("change", pa.string()),
            ("changed_columns", pa.list_(pa.string())),
            ("nom", pa.string()),
            ("statut", pa.string()),
            ("synced_at", TS),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


@pytest.fixture
def history(tmp_path) -> pa.dataset.Dataset:
    """The crafted history as a real Delta table's Arrow dataset."""
    uri = str(tmp_path / HISTORY_TABLE)
    write_deltalake(uri, history_table(VERSIONS), partition_by=["is_current"])
    return DeltaTable(uri).to_pyarrow_dataset()


def expected_entries(periods: list[tuple[str, date]], counts: dict[tuple[str, str], int]) -> list:
    return [
        {
            "label": label,
            "start": start,
            "statut": status,
            "status_group": group,
            "entries": counts.get((label, status), 0),
        }
        for (label, start), (status, group) in itertools.product(periods, ORDER)
    ]


def as_expected(table: pa.Table, grain) -> list[dict]:
    """The table's rows in the shape of :func:`expected_entries`."""
    assert table.column_names == [
        grain.label,
        grain.start_column,
        "statut",
        "status_group",
        "entries",
    ]
    return [
        {
            "label": r[grain.label],
            "start": r[grain.start_column],
            "statut": r["statut"],
            "status_group": r["status_group"],
            "entries": r["entries"],
        }
        for r in table.to_pylist()
    ]


def test_weekly_entries_count_each_entry_in_its_iso_week_zero_filled(history):
    table = compute_status_entries(history, WEEK, STATUSES)
    periods = [
        ("2024-W52", date(2024, 12, 23)),
        ("2025-W01", date(2024, 12, 30)),  # 2024-12-30 is in ISO year 2025
        ("2025-W02", date(2025, 1, 6)),
        ("2025-W03", date(2025, 1, 13)),  # no entry at all: zeros
        ("2025-W04", date(2025, 1, 20)),
        ("2025-W05", date(2025, 1, 27)),
    ]
    counts = {
        ("2024-W52", "Nouveau"): 1,  # A, Sunday 23:59
        ("2025-W01", "Contacté"): 2,  # A (Monday 00:00 UTC), B
        ("2025-W01", "Nouveau"): 1,  # B
        ("2025-W01", "Répondu"): 1,  # B, same minute as its Contacté
        ("2025-W02", "Contacté"): 1,  # C created (its deletion is no entry)
        ("2025-W02", "Nouveau"): 2,  # G, twice (around an empty status)
        ("2025-W02", "Gagné"): 1,  # G
        ("2025-W04", "Contacté"): 1,  # C restored (its later edit keeps the status)
        ("2025-W05", "Nouveau"): 1,  # D (its first version had no status)
        ("2025-W05", "Archivé"): 1,  # E
    }
    assert as_expected(table, WEEK) == expected_entries(periods, counts)


def test_monthly_entries_use_the_same_rules_per_calendar_month(history):
    table = compute_status_entries(history, MONTH, STATUSES)
    periods = [("2024-12", date(2024, 12, 1)), ("2025-01", date(2025, 1, 1))]
    counts = {
        ("2024-12", "Nouveau"): 1,
        ("2024-12", "Contacté"): 1,
        ("2025-01", "Nouveau"): 4,  # B, D, G twice
        ("2025-01", "Contacté"): 3,  # B, C, C restored
        ("2025-01", "Répondu"): 1,
        ("2025-01", "Gagné"): 1,
        ("2025-01", "Archivé"): 1,
    }
    assert as_expected(table, MONTH) == expected_entries(periods, counts)


def test_without_statuses_the_seen_ones_come_alphabetically_and_empty_history_gives_no_rows():
    table = compute_status_entries(history_table(VERSIONS), "month")
    seen = ["Archivé", "Contacté", "Gagné", "Nouveau", "Répondu"]
    assert table["statut"].to_pylist() == seen * 2
    assert table["mois"].to_pylist() == ["2024-12"] * 5 + ["2025-01"] * 5
    assert table["status_group"].null_count == table.num_rows
    empty = compute_status_entries(history_table({}), WEEK, STATUSES)
    assert empty.num_rows == 0 and empty.column_names[0] == "semaine"


def test_status_durations_are_the_stays_computed_by_hand(history):
    table = compute_status_durations(history, STATUSES, NOW)
    assert table.column_names == [
        "statut",
        "status_group",
        "position",
        "completed_stays",
        "median_days",
        "p90_days",
        "open_stays",
        "median_open_days",
    ]
    got = {r["statut"]: r for r in table.to_pylist()}
    assert [(r["statut"], r["status_group"]) for r in table.to_pylist()] == ORDER
    assert [r["position"] for r in table.to_pylist()] == list(range(7))

    # Nouveau, completed: A 1 minute, B 23 h, G 1 day (ended by the empty status), G 1.5 days.
    nouveau = sorted([1 / 1440, 23 / 24, 1.0, 1.5])
    median = (nouveau[1] + nouveau[2]) / 2
    p90 = nouveau[2] + 0.7 * (nouveau[3] - nouveau[2])  # rank 0.9 * 3 = 2.7
    # Open: D since 2025-01-27.
    expect = {
        "Nouveau": (4, median, p90, 1, 5.0),
        # Completed: B 0 (left within the minute), C 2 days (ended by its deletion).
        # Open: A since 2024-12-30 (33 days), C since its restoration 2025-01-20 (12 days).
        "Contacté": (2, 1.0, 1.8, 2, 22.5),
        # Open: B since 2025-01-02 09:00 (29 days 15 h).
        "Répondu": (0, None, None, 1, 29.625),
        "Appel booké": (0, None, None, 0, None),
        # Open: G since 2025-01-10 12:00.
        "Gagné": (0, None, None, 1, 21.5),
        "Perdu": (0, None, None, 0, None),
        "Archivé": (0, None, None, 1, 4.0),
    }
    for status, (completed, median, p90, open_stays, median_open) in expect.items():
        row = got[status]
        assert row["completed_stays"] == completed, status
        assert row["open_stays"] == open_stays, status
        for column, value in (
            ("median_days", median),
            ("p90_days", p90),
            ("median_open_days", median_open),
        ):
            if value is None:
                assert row[column] is None, (status, column)
            else:
                assert row[column] == pytest.approx(value, abs=1e-9), (status, column)

    # Every entry starts a stay: entries = completed + open stays, per status.
    entries = compute_status_entries(history, MONTH, STATUSES)
    totals = Counter()
    for r in entries.to_pylist():
        totals[r["statut"]] += r["entries"]
    for r in table.to_pylist():
        assert totals[r["statut"]] == r["completed_stays"] + r["open_stays"], r["statut"]


def test_cohort_conversion_per_month_of_first_contact():
    d = date
    columns = ["date_prise_contact", "date_reponse_prospect", "date_appel_propose"]
    columns.append("date_appel_booke")
    rows = [
        # id, first contact, reply, call proposed, call booked
        ("L1", d(2025, 1, 5), d(2025, 1, 7), d(2025, 1, 8), d(2025, 1, 10)),  # booked in 5 days
        ("L2", d(2025, 1, 20), d(2025, 1, 21), None, d(2025, 2, 3)),  # 14 days
        ("L3", d(2025, 1, 31), None, None, None),
        ("L4", d(2025, 3, 2), d(2025, 3, 3), d(2025, 3, 4), d(2025, 3, 12)),  # 10 days
        ("L5", None, None, None, d(2025, 3, 1)),  # no first contact: in no cohort
        ("L6", d(2025, 3, 15), None, d(2025, 3, 20), None),
    ]
    leads = pa.Table.from_pylist(
        [dict(zip(["id", *columns], row, strict=True)) for row in rows],
        schema=pa.schema([("id", pa.string())] + [(c, pa.date32()) for c in columns]),
    )
    table = compute_cohort_conversion(leads)
    assert table.to_pylist() == [
        {
            "mois": "2025-01",
            "month_start": d(2025, 1, 1),
            "leads": 3,
            "replied": 2,
            "call_proposed": 1,
            "call_booked": 2,
            "reply_rate": pytest.approx(2 / 3),
            "call_proposed_rate": pytest.approx(1 / 3),
            "call_booked_rate": pytest.approx(2 / 3),
            "median_days_to_call_booked": 9.5,
        },
        {
            "mois": "2025-02",
            "month_start": d(2025, 2, 1),
            "leads": 0,
            "replied": 0,
            "call_proposed": 0,
            "call_booked": 0,
            "reply_rate": None,
            "call_proposed_rate": None,
            "call_booked_rate": None,
            "median_days_to_call_booked": None,
        },
        {
            "mois": "2025-03",
            "month_start": d(2025, 3, 1),
            "leads": 2,
            "replied": 1,
            "call_proposed": 2,
            "call_booked": 1,
            "reply_rate": 0.5,
            "call_proposed_rate": 1.0,
            "call_booked_rate": 0.5,
            "median_days_to_call_booked": 10.0,
        },
    ]


def test_a_missing_column_is_named():
    with pytest.raises(ValueError, match="date_appel_booke"):
        compute_cohort_conversion(pa.table({"date_prise_contact": pa.array([], pa.date32())}))
    with pytest.raises(ValueError, match="statut"):
        compute_status_entries(history_table(VERSIONS).drop_columns(["statut"]), WEEK)


def test_the_entries_check_passes_on_the_computed_tables_and_fails_on_altered_ones(history):
    for grain in GRAINS:
        entries = compute_status_entries(history, grain, STATUSES)
        found = verify_status_entries(history, entries)
        assert found.passed and found.mismatches == {}
        assert found.history_total == found.table_total == 12

    weekly = compute_status_entries(history, WEEK, STATUSES).to_pylist()
    [row] = [r for r in weekly if r["semaine"] == "2025-W03" and r["statut"] == "Perdu"]
    row["entries"] = 2
    altered = pa.Table.from_pylist(weekly, schema=compute_status_entries(history, WEEK).schema)
    found = verify_status_entries(history, altered)
    assert not found.passed
    assert found.mismatches == {"Perdu": (2, 0)}
    assert "'Perdu': 2 in the table vs 0 in lead_history" in found.describe()

    # The history moved on (a new entry) since the table was computed.
    grown = dict(VERSIONS, H=[("created", "Répondu", utc(2025, 1, 30))])
    found = verify_status_entries(history_table(grown), compute_status_entries(history, WEEK))
    assert found.mismatches == {"Répondu": (1, 2)}


# -- the real assets over syncs of the fake Notion server -----------------------------------------


def resources_for(fake, root: Path) -> dict:
    return {
        "source": notion_source(fake),
        "lake": LakeResource(uri=str(root / "lake")),
        "warehouse": WarehouseResource(path=str(root / "warehouse.duckdb")),
        "property_map": PropertyMapResource(path=None),
    }


def notion_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def status_of(page: dict) -> str | None:
    value = page["properties"]["Statut"]["status"]
    return value["name"] if value else None


#: The fake's schema: the sample's, its status declaring options and groups. "Appel proposé",
#: which the sample pages use, is left out: it is only seen in the data.
FAKE_STATUT = {
    "id": SAMPLE_SCHEMA["Statut"]["id"],
    "name": "Statut",
    "type": "status",
    "status": {
        "options": [
            {"id": f"st{i}", "name": n, "color": "default"}
            for i, n in enumerate(
                ["Nouveau", "Contacté", "Répondu", "Appel booké", "Perdu", "Gagné"]
            )
        ],
        "groups": [
            {"id": "todo", "name": "To-do", "option_ids": ["st0"]},
            {"id": "doing", "name": "In progress", "option_ids": ["st1", "st2", "st3"]},
            {"id": "done", "name": "Complete", "option_ids": ["st5", "st4"]},
        ],
    },
}
FAKE_ORDER = [
    ("Nouveau", "To-do"),
    ("Contacté", "In progress"),
    ("Répondu", "In progress"),
    ("Appel booké", "In progress"),
    ("Gagné", "Complete"),
    ("Perdu", "Complete"),
    ("Appel proposé", None),
]

ASSETS = [*ingestion.ASSETS, *movement_assets.ASSETS]


def materialize(resources: dict) -> dg.ExecuteInProcessResult:
    result = dg.materialize([*ASSETS, *movement_assets.CHECKS], resources=resources)
    assert result.success
    return result


def published(root: Path, table: str) -> list[dict]:
    with Warehouse(root / "warehouse.duckdb").read() as con:
        return con.sql(f"SELECT * FROM {table}").to_arrow_table().to_pylist()


def metadata_of(result, asset: str) -> dict:
    [event] = [
        e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(asset)
    ]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def week_of(moment: datetime) -> str:
    day = moment.astimezone(UTC).date()
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def test_the_assets_publish_the_movement_of_synced_leads(notion_env, tmp_path):
    fake = notion_env
    schema = json.loads(json.dumps(SAMPLE_SCHEMA))
    schema["Statut"] = FAKE_STATUT
    fake.add_database(data_sources=[(SAMPLE_DATA_SOURCE_ID, "Leads", schema)])
    pages = fake.seed_sample(60)
    resources = resources_for(fake, tmp_path)
    first = materialize(resources)

    # Expected from the pages: each lead entered its status at its edit time.
    entered = Counter(
        (week_of(notion_time(p["last_edited_time"])), status_of(p))
        for p in pages
        if status_of(p) is not None
    )
    moved = next(p for p in pages if status_of(p) not in (None, "Gagné"))
    edit = fake.edit(moved["id"], {"Statut": {"type": "status", "status": {"name": "Gagné"}}})
    second = materialize(resources)
    entered[(week_of(notion_time(edit["last_edited_time"])), "Gagné")] += 1

    weekly = published(tmp_path, WEEK.table(STATUS_ENTRIES))
    got = Counter()
    for r in weekly:
        got[(r["semaine"], r["statut"])] += r["entries"]
    assert +got == +entered
    # Every week × every status, in the schema's order (and its groups), the unknown one last.
    statuses_seen = {s for _, s in entered}
    order = [(s, g) for s, g in FAKE_ORDER if s in statuses_seen or g is not None]
    weeks = list(dict.fromkeys(r["semaine"] for r in weekly))
    assert len(weekly) == len(weeks) * len(order)
    assert [(r["statut"], r["status_group"]) for r in weekly[: len(order)]] == order
    assert weeks == sorted(weeks) and weeks[0] == min(w for w, _ in entered)
    assert weeks[-1] == max(w for w, _ in entered)

    monthly = published(tmp_path, MONTH.table(STATUS_ENTRIES))
    assert sum(r["entries"] for r in monthly) == sum(entered.values())

    # Open stays are the live leads now in each status; the moved lead's old stay completed.
    durations = {r["statut"]: r for r in published(tmp_path, DURATIONS_TABLE)}
    now_in = Counter(status_of(p) for p in pages if p["id"] != moved["id"])
    now_in["Gagné"] += 1
    assert {s: r["open_stays"] for s, r in durations.items() if r["open_stays"]} == {
        s: n for s, n in now_in.items() if s is not None
    }
    assert durations[status_of(moved)]["completed_stays"] == 1
    assert sum(r["completed_stays"] for r in durations.values()) == 1

    cohorts = published(tmp_path, COHORTS_TABLE)
    contacts = [p["properties"]["Date de prise de contact"]["date"] for p in pages]
    assert sum(r["leads"] for r in cohorts) == sum(c is not None for c in contacts)

    checks = second.get_asset_check_evaluations()
    assert {(c.asset_key.path[-1], c.check_name, c.passed) for c in checks} == {
        (g.asset(STATUS_ENTRIES), movement_assets.ENTRIES_CHECK, True) for g in GRAINS
    }
    meta = metadata_of(second, WEEK.asset(STATUS_ENTRIES))
    assert meta["recomputed"] is True and meta["status_entries_total"] == sum(entered.values())
    assert metadata_of(first, WEEK.asset(STATUS_ENTRIES))["status_entries_total"] == len(
        [p for p in pages if status_of(p) is not None]
    )

    # Nothing changed in Notion: the entries and cohorts are reused, not recomputed.
    third = materialize(resources)
    assert metadata_of(third, WEEK.asset(STATUS_ENTRIES))["recomputed"] is False
    assert metadata_of(third, "cohort_conversion")["recomputed"] is False
    assert published(tmp_path, WEEK.table(STATUS_ENTRIES)) == weekly


def test_the_check_fails_when_the_published_entries_differ_from_the_history(notion_env, tmp_path):
    fake = notion_env
    fake.seed_sample(20)
    resources = resources_for(fake, tmp_path)
    materialize(resources)
    table = MONTH.table(STATUS_ENTRIES)
    warehouse = Warehouse(tmp_path / "warehouse.duckdb")
    with warehouse.read() as con:
        current = con.sql(f"SELECT * FROM {table}").to_arrow_table()
    rows = current.to_pylist()
    rows[0]["entries"] += 3
    warehouse.publish({table: pa.Table.from_pylist(rows, schema=current.schema)})

    [check] = [
        c
        for c in movement_assets.CHECKS
        if dg.AssetKey(MONTH.asset(STATUS_ENTRIES)) in {k.asset_key for k in c.check_keys}
    ]
    [spec] = check.check_specs
    assert spec.blocking and spec.name == movement_assets.ENTRIES_CHECK
    result = dg.materialize(
        [check, *ASSETS],
        resources=resources,
        selection=dg.AssetSelection.checks(check),
        raise_on_error=False,
    )
    [evaluation] = result.get_asset_check_evaluations()
    assert not evaluation.passed
    status = rows[0]["statut"]
    in_history = sum(r["entries"] for r in current.to_pylist() if r["statut"] == status)
    assert f"{status!r}: {in_history + 3} in the table vs {in_history} in lead_history" in (
        evaluation.description
    )


def test_the_assets_are_analytics_duckdb_assets_following_their_upstream():
    keys = {a.key.path[-1]: a for a in movement_assets.ASSETS}
    assert set(keys) == {
        "weekly_status_entries",
        "monthly_status_entries",
        "status_durations",
        "cohort_conversion",
    }
    for name, asset in keys.items():
        spec = next(iter(asset.specs))
        assert spec.group_name == "analytics", name
        assert "duckdb" in spec.kinds, name
        assert spec.automation_condition is not None, name
        assert asset.op.pool == "leads_warehouse", name
        upstream = {d.asset_key.path[-1] for d in spec.deps}
        assert upstream == ({"leads"} if name == "cohort_conversion" else {HISTORY_TABLE}), name


def test_one_marking_serves_every_movement_asset_of_a_history_version(tmp_path):
    from leads_pipeline.storage.lake import DeltaLake
    from leads_pipeline.transform.movement import daily_entries, mark_versions

    store = DeltaLake(str(tmp_path / "lake"))
    uri = store.table_uri(HISTORY_TABLE)
    write_deltalake(uri, history_table(VERSIONS), partition_by=["is_current"])
    first = movement_assets._marked_history(store, DeltaTable(uri))
    # The same version, read again by the next asset of the run: the same marking.
    assert movement_assets._marked_history(store, DeltaTable(uri)) is first
    assert daily_entries(first).equals(
        daily_entries(mark_versions(DeltaTable(uri).to_pyarrow_dataset()))
    )

    # A new version of the history: marked again, from its own rows.
    more = {**VERSIONS, "extra": [("created", "Prospect", utc(2025, 1, 20))]}
    write_deltalake(uri, history_table(more), partition_by=["is_current"], mode="overwrite")
    second = movement_assets._marked_history(store, DeltaTable(uri))
    assert second is not first
    assert len(second.rows) == len(first.rows) + 1

    # The table recreated at the same URI, back at the version marked first: not mistaken for it.
    shutil.rmtree(uri)
    write_deltalake(uri, history_table(more), partition_by=["is_current"])
    write_deltalake(uri, history_table(VERSIONS), partition_by=["is_current"], mode="overwrite")
    recreated = DeltaTable(uri)
    assert recreated.version() == 1
    third = movement_assets._marked_history(store, recreated)
    assert third is not second and len(third.rows) == len(first.rows)
