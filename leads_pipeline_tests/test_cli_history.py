"""``leads-pipeline history``, ``statuses``, ``cohorts`` and ``counts --as-of``: formats, exit codes.

One lake is built for the module from the sample's evolution (days 0, 1 and 2 synced in turn by
the real assets); expectations come from the sample's pages of each day, or from the lake.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from datetime import date

import dagster as dg
import pytest
from deltalake import DeltaTable

from leads_pipeline.cli import EXIT_NOT_BUILT, EXIT_OK, EXIT_USAGE, main
from leads_pipeline.defs.assets import analytics, ingestion, movement
from leads_pipeline.defs.resources import LakeResource, PropertyMapResource, WarehouseResource
from leads_pipeline.serving import BUILD_COMMAND
from leads_pipeline.sources.sample import SampleLeadsSource
from leads_pipeline.storage.warehouse import Warehouse
from leads_pipeline.tables import HISTORY_TABLE, MONTH


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("evolution")
    paths = {"lake": str(root / "lake"), "warehouse": str(root / "warehouse.duckdb")}
    for day in (0, 1, 2):
        resources = {
            "source": SampleLeadsSource(day=day),
            "lake": LakeResource(uri=paths["lake"]),
            "warehouse": WarehouseResource(path=paths["warehouse"]),
            "property_map": PropertyMapResource(),
        }
        assets = [*ingestion.ASSETS, *analytics.ASSETS, *movement.ASSETS]
        assert dg.materialize(assets, resources=resources).success
    history = DeltaTable(f"{paths['lake']}/{HISTORY_TABLE}").to_pyarrow_table().to_pylist()
    paths["history"] = history
    return paths


def run(capsys, lake: dict, *argv: str) -> tuple[int, str, str]:
    code = main(["--lake", lake["lake"], "--warehouse", lake["warehouse"], *argv])
    out, err = capsys.readouterr()
    return code, out, err


def moved_lead(lake: dict) -> tuple[str, list[dict]]:
    """A lead with three versions, and them in order."""
    counts = Counter(r["id"] for r in lake["history"])
    lead = sorted(i for i, n in counts.items() if n == 3)[0]
    return lead, sorted((r for r in lake["history"] if r["id"] == lead), key=lambda r: r["version"])


def test_history_in_each_format_by_id_and_by_url(lake, capsys):
    lead, rows = moved_lead(lake)
    code, out, err = run(capsys, lake, "history", lead, "--format", "json")
    assert (code, err) == (EXIT_OK, "")
    payload = json.loads(out)
    assert [(v["version"], v["change"], v["statut"]) for v in payload] == [
        (r["version"], r["change"], r["statut"]) for r in rows
    ]
    assert payload[0]["changed_columns"] == rows[0]["changed_columns"]
    by_url = run(capsys, lake, "history", rows[0]["url"] + "?pvs=4", "--format", "json")
    assert by_url[:2] == (EXIT_OK, out)
    code, out, _ = run(capsys, lake, "history", lead.replace("-", ""), "--format", "csv")
    records = list(csv.DictReader(io.StringIO(out)))
    assert code == EXIT_OK
    assert [r["statut"] for r in records] == [r["statut"] for r in rows]
    assert records[1]["changed_columns"] == ";".join(rows[1]["changed_columns"])
    code, out, _ = run(capsys, lake, "history", lead)
    lines = out.splitlines()
    assert code == EXIT_OK and lead in lines[0]
    assert lines[1].split()[:6] == [
        "version",
        "valid_from",
        "valid_to",
        "is_current",
        "change",
        "changed_columns",
    ]
    assert f"statut={rows[2]['statut']}" in lines[-1] and "True" in lines[-1]


def test_history_of_an_unknown_or_malformed_lead_exits_2(lake, capsys):
    unknown = "0123456789abcdef0123456789abcdef"
    code, out, err = run(capsys, lake, "history", unknown)
    assert (code, out) == (EXIT_USAGE, "")
    assert "01234567-89ab-cdef-0123-456789abcdef" in err
    code, out, err = run(capsys, lake, "history", "Léa Bénard")
    assert (code, out) == (EXIT_USAGE, "")
    assert "not a Notion page id" in err


def test_statuses_in_each_format(lake, capsys):
    published = Warehouse(lake["warehouse"]).require_table(MONTH.table("status_entries"))
    rows = published.to_pylist()
    code, out, _ = run(capsys, lake, "statuses", "--by", "month", "--format", "json")
    assert code == EXIT_OK
    assert json.loads(out) == [
        {k: r[k] for k in ("mois", "statut", "status_group", "entries")} for r in rows
    ]
    code, out, _ = run(
        capsys, lake, "statuses", "--by", "month", "--from", "2025-12", "--format", "csv"
    )
    records = list(csv.DictReader(io.StringIO(out)))
    assert {r["mois"] for r in records} == {r["mois"] for r in rows if r["mois"] >= "2025-12"}
    code, out, _ = run(capsys, lake, "statuses", "--by", "week", "--from", "2025-W52")
    lines = out.splitlines()
    statuses = list(dict.fromkeys(r["statut"] for r in rows))
    assert code == EXIT_OK
    assert lines[0].split()[0] == "semaine" and "Nouveau" in lines[0]
    assert len(lines) - 2 == len({*[ln.split()[0] for ln in lines[2:]]})  # one line per week
    assert statuses[0] in lines[0]


def test_cohorts_in_each_format(lake, capsys):
    leads = DeltaTable(f"{lake['lake']}/leads").to_pyarrow_table().to_pylist()
    per_month = Counter(
        r["date_prise_contact"].strftime("%Y-%m") for r in leads if r["date_prise_contact"]
    )
    code, out, _ = run(capsys, lake, "cohorts", "--format", "json")
    assert code == EXIT_OK
    payload = json.loads(out)
    assert {c["mois"]: c["leads"] for c in payload if c["leads"]} == dict(per_month)
    code, out, _ = run(
        capsys, lake, "cohorts", "--from", "2025-06", "--to", "2025-07", "--format", "csv"
    )
    assert [r["mois"] for r in csv.DictReader(io.StringIO(out))] == ["2025-06", "2025-07"]
    code, out, _ = run(capsys, lake, "cohorts", "--to", "2024-01")
    assert code == EXIT_OK and out.splitlines()[2].split()[:2] == [
        "2024-01",
        str(per_month["2024-01"]),
    ]


def test_counts_as_of_a_date_and_a_datetime(lake, capsys):
    # Day 1's moves are stamped 2026-01-03: at its midnight, only day 0's pages were known.
    day0 = list(SampleLeadsSource(day=0).live_pages())
    contacts = Counter()
    for page in day0:
        value = page["properties"]["Date de prise de contact"]["date"]
        if value:
            day = date.fromisoformat(value["start"][:10])
            contacts[day.strftime("%Y-%m")] += 1
    code, out, _ = run(
        capsys, lake, "counts", "--by", "month", "--as-of", "2026-01-03", "--format", "json"
    )
    assert code == EXIT_OK
    shown = {m["mois"]: m["date_prise_contact"] for m in json.loads(out)}
    assert {k: v for k, v in shown.items() if v} == dict(contacts)
    same = run(
        capsys,
        lake,
        "counts",
        "--by",
        "month",
        "--as-of",
        "2026-01-03T00:00+00:00",
        "--format",
        "json",
    )
    assert same[:2] == (EXIT_OK, out)
    now = run(capsys, lake, "counts", "--by", "month", "--as-of", "2030-01-01", "--format", "csv")
    assert now[:2] == run(capsys, lake, "counts", "--by", "month", "--format", "csv")[:2]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["counts", "--by", "week", "--as-of", "yesterday"], "is not a date or datetime"),
        (["counts", "--by", "week", "--as-of", "2000-01-01"], "before lead_history begins"),
        (["statuses", "--by", "year"], "invalid choice"),
        (["statuses", "--by", "week", "--from", "2025-03", "--to", "2025-01"], "is after"),
        (["cohorts", "--format", "xml"], "invalid choice"),
        (["history"], "LEAD"),
    ],
)
def test_usage_errors_exit_2(lake, capsys, argv, message):
    code, out, err = run(capsys, lake, *argv)
    assert (code, out) == (EXIT_USAGE, "")
    assert message in err


def test_not_built_exits_3(capsys, tmp_path):
    paths = {"lake": str(tmp_path / "none"), "warehouse": str(tmp_path / "none.duckdb")}
    for argv in (
        ["history", "0123456789abcdef0123456789abcdef"],
        ["statuses", "--by", "week"],
        ["cohorts"],
        ["counts", "--by", "week", "--as-of", "2025-03-01"],
    ):
        code, out, err = run(capsys, paths, *argv)
        assert (code, out) == (EXIT_NOT_BUILT, ""), argv
        assert BUILD_COMMAND in err


def test_help_lists_the_new_commands(capsys):
    code, out, _ = run(capsys, {"lake": "x", "warehouse": "y"}, "--help")
    assert code == EXIT_OK
    for text in ("leads-pipeline history", "statuses --by month", "cohorts", "--as-of 2025-03-01"):
        assert text in out
    code, out, _ = run(capsys, {"lake": "x", "warehouse": "y"}, "counts", "--help")
    assert "--as-of" in out and "midnight UTC" in out
