"""The ``leads-pipeline`` command: outputs (table, json, csv), dates, exit codes."""

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from leads_pipeline.cli import EXIT_ERROR, EXIT_NOT_BUILT, EXIT_OK, EXIT_USAGE, main
from leads_pipeline.serving import BUILD_COMMAND
from leads_pipeline_tests.crafted_counts import publish_counts

WEEKS = {
    "2024-W52": (1, 0, 0, 0, 0),
    "2025-W01": (45, 32, 35, 28, 40),
    "2025-W02": (2, 1, 0, 0, 0),
}
MONTHS = {
    "2024-12": (5, 0, 0, 0, 0),
    "2025-01": (180, 145, 150, 120, 160),
    "2025-02": (7, 1, 0, 0, 2),
}
OLD_API_KEYS = [
    "date_prise_contact",
    "date_reponse_prospect",
    "date_appel_booke",
    "date_appel_propose",
    "date_relance",
]


@pytest.fixture
def built(monkeypatch, warehouse_path) -> str:
    publish_counts(warehouse_path, weekly=WEEKS, monthly=MONTHS)
    monkeypatch.setenv("LEADS_WAREHOUSE_PATH", warehouse_path)
    return warehouse_path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_json_is_the_old_api_payload(built, capsys):
    code, out, err = run(capsys, "counts", "--by", "week", "--format", "json")
    assert (code, err) == (EXIT_OK, "")
    payload = json.loads(out)
    assert [list(row) for row in payload] == [["semaine", *OLD_API_KEYS]] * 3
    assert payload[1] == {
        "semaine": "2025-W01",
        "date_prise_contact": 45,
        "date_reponse_prospect": 32,
        "date_appel_booke": 28,
        "date_appel_propose": 35,
        "date_relance": 40,
    }
    assert run(capsys, "counts", "--by", "week", "--json")[1] == out  # compatibility alias


def test_csv_has_a_header_and_one_line_per_period(built, capsys):
    code, out, _ = run(capsys, "counts", "--by", "month", "--format", "csv")
    assert code == EXIT_OK
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["mois", *OLD_API_KEYS]
    assert rows[1:] == [
        ["2024-12", "5", "0", "0", "0", "0"],
        ["2025-01", "180", "145", "120", "150", "160"],
        ["2025-02", "7", "1", "0", "0", "2"],
    ]


def test_table_is_the_default(built, capsys):
    code, out, _ = run(capsys, "counts", "--by", "week")
    lines = out.splitlines()
    assert code == EXIT_OK
    assert lines[0].split() == ["semaine", *OLD_API_KEYS]
    assert lines[3].split() == ["2025-W01", "45", "32", "28", "35", "40"]
    assert len(lines) == 2 + len(WEEKS)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--by", "week", "--from", "2025-01-01"], ["2025-W01", "2025-W02"]),
        (["--by", "week", "--to", "2024-12-29"], ["2024-W52"]),
        (["--by", "week", "--from", "2025-W01", "--to", "2025-W01"], ["2025-W01"]),
        (["--by", "month", "--from", "2025-01", "--to", "2025-01"], ["2025-01"]),
        (["--by", "month", "--to", "2025-01"], ["2024-12", "2025-01"]),
        (["--by", "week", "--to", "2024-12"], ["2024-W52", "2025-W01"]),  # 31 Dec is in W01
        (["--by", "month", "--from", "2030-01-01"], []),
    ],
)
def test_from_and_to(built, capsys, argv, expected):
    code, out, _ = run(capsys, "counts", *argv, "--format", "json")
    assert code == EXIT_OK
    assert [next(iter(row.values())) for row in json.loads(out)] == expected


def test_an_empty_range_says_so_in_a_table(built, capsys):
    assert run(capsys, "counts", "--by", "month", "--from", "2030-01")[:2] == (
        EXIT_OK,
        "(no periods in this range)\n",
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["counts", "--by", "week", "--from", "2025-13-01"], "not a valid date"),
        (["counts", "--by", "week", "--to", "yesterday"], "is not a date"),
        (["counts", "--by", "week", "--from", "2025-W54"], "not a valid date"),
        (["counts", "--by", "week", "--from", "2025-03-01", "--to", "2025-02-01"], "is after"),
        (["counts", "--by", "year"], "invalid choice"),
        (["counts"], "--by"),
        (["counts", "--by", "week", "--format", "xml"], "invalid choice"),
        (["counts", "--by", "week", "--json", "--format", "csv"], "not allowed"),
        ([], "COMMAND"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2(built, capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == EXIT_USAGE
    assert message in err
    assert out == ""


def test_help_teaches_examples_and_exit_codes(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == EXIT_OK
    assert "leads-pipeline counts --by week" in out
    assert "exit codes:" in out
    assert "3  the pipeline has not run yet" in out
    assert BUILD_COMMAND in out
    code, out, _ = run(capsys, "counts", "--help")
    assert code == EXIT_OK
    assert "2025-W03" in out and "--format" in out


def test_not_run_yet_exits_3_and_names_the_command(capsys, tmp_path):
    code, out, err = run(
        capsys, "--warehouse", str(tmp_path / "none.duckdb"), "counts", "--by", "week"
    )
    assert (code, out) == (EXIT_NOT_BUILT, "")
    assert BUILD_COMMAND in err
    code, _, err = run(capsys, "--lake", str(tmp_path / "no-lake"), "status")
    assert code == EXIT_NOT_BUILT
    assert BUILD_COMMAND in err


def test_an_unreadable_warehouse_exits_1(capsys, tmp_path):
    broken = tmp_path / "broken.duckdb"
    broken.write_bytes(b"this is not a duckdb file" * 100)
    code, out, err = run(capsys, "--warehouse", str(broken), "counts", "--by", "month")
    assert (code, out) == (EXIT_ERROR, "")
    assert err.startswith("leads-pipeline: error:")


def test_status(capsys, sample_resources, lake_uri, warehouse_path):
    import dagster as dg

    from leads_pipeline.defs.assets import analytics, ingestion

    dg.materialize([*ingestion.ASSETS, *analytics.ASSETS], resources=sample_resources)
    code, out, _ = run(
        capsys, "--lake", lake_uri, "--warehouse", warehouse_path, "status", "--format", "json"
    )
    assert code == EXIT_OK
    status = json.loads(out)
    assert status["source"] == "sample"
    assert status["raw_rows"] == 2000
    code, out, _ = run(capsys, "--lake", lake_uri, "--warehouse", warehouse_path, "status")
    assert code == EXIT_OK
    assert "raw_rows" in out and "2000" in out and "watermark" in out


def test_the_console_script(built, tmp_path):
    """The installed entry point, in its own process, as a shell script would call it."""
    script = Path(sys.executable).parent / "leads-pipeline"
    env = {**os.environ, "LEADS_WAREHOUSE_PATH": built}
    done = subprocess.run(
        [str(script), "counts", "--by", "month", "--from", "2025-01", "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == EXIT_OK, done.stderr
    assert json.loads(done.stdout)[0] == {
        "mois": "2025-01",
        "date_prise_contact": 180,
        "date_reponse_prospect": 145,
        "date_appel_booke": 120,
        "date_appel_propose": 150,
        "date_relance": 160,
    }
    env["LEADS_WAREHOUSE_PATH"] = str(tmp_path / "nothing-here.duckdb")
    missing = subprocess.run(
        [str(script), "counts", "--by", "week"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert missing.returncode == EXIT_NOT_BUILT
    assert BUILD_COMMAND in missing.stderr
    usage = subprocess.run(
        [str(script), "counts", "--by", "week", "--from", "2025-02-30"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert usage.returncode == EXIT_USAGE
    assert "2025-02-30" in usage.stderr
