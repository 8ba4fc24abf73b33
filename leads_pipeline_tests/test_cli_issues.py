"""``leads-pipeline issues``: the rows of lead_quality_issues with each lead's Notion link."""

import csv
import io
import json
from datetime import datetime

import pytest

from leads_pipeline.cli import EXIT_NOT_BUILT, EXIT_OK, EXIT_USAGE, main
from leads_pipeline.defs.assets import ingestion
from leads_pipeline.serving import BUILD_COMMAND
from leads_pipeline_tests.lake_helpers import Workspace
from leads_pipeline_tests.pages import date_value, make_page

CONTACT = "Date de prise de contact"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def synced(tmp_path):
    """A lake synced from pages with bad emails and dates; returns (workspace, pages)."""
    workspace = Workspace(tmp_path)
    pages = [
        make_page(email="pas-un-email"),
        make_page(email="lea@", dates={CONTACT: date_value("2025-02-30")}),
        make_page(dates={CONTACT: date_value("demain")}),
        make_page(email="ok@exemple.fr"),
    ]
    workspace.publish(pages)
    workspace.sync(assets=ingestion.ASSETS)
    return workspace, pages


def _expected(workspace, pages, column=None) -> list[dict]:
    """The table's rows, newest first, each with its page's URL."""
    url_of = {page["id"]: page["url"] for page in pages}
    rows = workspace.table("lead_quality_issues").to_pyarrow_table().to_pylist()
    rows = [row for row in rows if column is None or row["column"] == column]
    rows.sort(key=lambda r: (-r["detected_at"].timestamp(), r["page_id"], r["column"]))
    return [{**row, "url": url_of[row["page_id"]]} for row in rows]


def _parsed(records: list[dict]) -> list[dict]:
    return [{**r, "detected_at": datetime.fromisoformat(r["detected_at"])} for r in records]


def test_json_equals_the_tables_rows(synced, capsys):
    workspace, pages = synced
    code, out, err = run(capsys, "--lake", workspace.lake_uri, "issues", "--format", "json")
    assert (code, err) == (EXIT_OK, "")
    expected = _expected(workspace, pages)
    assert len(expected) == 4  # two bad emails, two bad dates
    assert _parsed(json.loads(out)) == expected


def test_column_filters(synced, capsys, monkeypatch):
    workspace, pages = synced
    monkeypatch.setenv("LEADS_LAKE_URI", workspace.lake_uri)
    code, out, _ = run(capsys, "issues", "--column", "date_prise_contact", "--format", "json")
    assert code == EXIT_OK
    expected = _expected(workspace, pages, "date_prise_contact")
    assert len(expected) == 2
    assert _parsed(json.loads(out)) == expected
    code, out, _ = run(capsys, "issues", "--column", "telephone", "--format", "json")
    assert (code, json.loads(out)) == (EXIT_OK, [])


def test_csv_and_table(synced, capsys):
    workspace, pages = synced
    expected = _expected(workspace, pages, "email")
    code, out, _ = run(capsys, "--lake", workspace.lake_uri, "issues", "--column", "email",
                       "--format", "csv")  # fmt: skip
    assert code == EXIT_OK
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["page_id"], r["raw_value"], r["url"]) for r in rows] == [
        (e["page_id"], e["raw_value"], e["url"]) for e in expected
    ]
    code, out, _ = run(capsys, "--lake", workspace.lake_uri, "issues")
    assert code == EXIT_OK
    for row in _expected(workspace, pages):
        lines = [line for line in out.splitlines() if row["page_id"] in line]
        line = next(line for line in lines if f" {row['column']} " in line)
        assert row["url"] in line and row["reason"] in line and row["raw_value"] in line


def test_no_issues(tmp_path, capsys):
    workspace = Workspace(tmp_path)
    workspace.publish([make_page(email="ok@exemple.fr")])
    workspace.sync(assets=ingestion.ASSETS)
    code, out, _ = run(capsys, "--lake", workspace.lake_uri, "issues")
    assert (code, out.strip()) == (EXIT_OK, "(no quality issues)")
    code, out, _ = run(capsys, "--lake", workspace.lake_uri, "issues", "--format", "csv")
    assert out.splitlines() == ["detected_at,page_id,column,reason,raw_value,url"]


def test_exit_3_before_any_run(tmp_path, capsys):
    code, out, err = run(capsys, "--lake", str(tmp_path / "lake"), "issues")
    assert (code, out) == (EXIT_NOT_BUILT, "")
    assert "lead_quality_issues" in err and BUILD_COMMAND in err


def test_bad_format_is_a_usage_error(capsys):
    assert run(capsys, "issues", "--format", "xml")[0] == EXIT_USAGE
