"""Dagster's own CLI on this project, as a user runs it: ``dg check defs``, ``dg launch``.

The commands run as subprocesses in a clean copy of the repository (its tracked and new files,
none of the git-ignored ones: no lake, no instance storage, no ``.egg-info``), with a ``.venv`` in
it pointing at this interpreter's environment and called as ``.venv/bin/dg`` without activating
it, exactly like the README. ``DAGSTER_HOME`` is a temporary folder holding the repository's
``dagster.yaml``; the lake and the warehouse live in temporary folders too.

Python warnings are switched on for every category (``PYTHONWARNINGS=default``, stricter than a
user's shell, which hides deprecations raised outside ``__main__``), and the output must hold none
of them, no ``WARNING`` log line and none of ``dg``'s own warnings. No filter is needed today; any
future one must be a warning raised by Dagster itself that our code does not cause, named here
with the reason.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from deltalake import DeltaTable

from leads_pipeline.sources.sample_data import generate_pages

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 300

# A Python warning (``SupersessionWarning: ...``, ``DeprecationWarning: ...``, ``UserWarning``,
# a bare ``Warning``), a Dagster log line at WARNING level, or a warning printed by ``dg`` itself
# (they all end with how to suppress them).
WARNING_LINE = re.compile(r"\b\w*Warning\b| - WARNING - |suppress this warning")

# Warnings that Dagster raises on its own and that nothing in this project causes, each with why
# it is tolerated. Empty: neither command prints any warning today.
DAGSTER_OWN_WARNINGS: tuple[re.Pattern[str], ...] = ()


@dataclass
class Checkout:
    """A clean copy of the repository and the environment a user's shell would give ``dg``."""

    root: Path
    env: dict[str, str]
    lake: Path

    def dg(self, *args: str) -> subprocess.CompletedProcess:
        """Runs ``.venv/bin/dg <args>`` in the copy's root, capturing its output as text."""
        return subprocess.run(
            [str(self.root / ".venv" / "bin" / "dg"), *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )


def _copy_clean_tree(destination: Path) -> None:
    """Copies the files git tracks or would track (not the ignored ones) into ``destination``."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    )
    for name in filter(None, listed.stdout.decode().split("\0")):
        source = ROOT / name
        if source.is_file():  # tracked files deleted in the working tree are skipped
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


@pytest.fixture
def checkout(tmp_path) -> Checkout:
    root = tmp_path / "clone"
    _copy_clean_tree(root)
    # The README creates `.venv` in the clone; this one is the environment running the tests.
    (root / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy2(ROOT / "dagster.yaml", home / "dagster.yaml")
    lake = tmp_path / "lake"
    env = {
        key: value
        for key, value in os.environ.items()
        # No activated venv (the README calls `.venv/bin/dg`), no inherited warning filters, none
        # of the developer's pipeline settings: the sample source, as on a fresh clone.
        if key not in {"VIRTUAL_ENV", "PYTHONWARNINGS", "DAGSTER_HOME"}
        and not key.startswith(("LEADS_", "NOTION_"))
    }
    env.update(
        DAGSTER_HOME=str(home),
        LEADS_LAKE_URI=str(lake),
        LEADS_WAREHOUSE_PATH=str(tmp_path / "warehouse.duckdb"),
        PYTHONWARNINGS="default",
        NO_COLOR="1",
    )
    return Checkout(root=root, env=env, lake=lake)


def _warning_lines(
    done: subprocess.CompletedProcess, streams: tuple[str, ...] = ("stdout", "stderr")
) -> list[str]:
    lines = "\n".join(getattr(done, stream) for stream in streams).splitlines()
    return [
        line
        for line in lines
        if WARNING_LINE.search(line)
        and not any(tolerated.search(line) for tolerated in DAGSTER_OWN_WARNINGS)
    ]


def _assert_succeeded_without_warnings(done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 0, f"{done.args} failed:\n{done.stdout}\n{done.stderr}"
    assert _warning_lines(done) == [], (
        f"{done.args} printed warnings:\n{done.stdout}\n{done.stderr}"
    )


def test_dg_checks_and_launches_sync_leads_from_a_clean_checkout(checkout):
    checked = checkout.dg("check", "defs")
    _assert_succeeded_without_warnings(checked)
    assert "All definitions loaded successfully" in checked.stdout

    launched = checkout.dg("launch", "--job", "sync_leads")
    _assert_succeeded_without_warnings(launched)
    assert 'Finished execution of run for "sync_leads"' in launched.stdout + launched.stderr

    live_ids = {
        page["id"]
        for page in generate_pages()
        if not page.get("in_trash") and not page.get("archived")
    }
    assert len(live_ids) == 2000
    leads_ids = DeltaTable(str(checkout.lake / "leads")).to_pyarrow_table(columns=["id"])
    assert leads_ids.num_rows == 2000
    assert set(leads_ids.column("id").to_pylist()) == live_ids


def test_dg_check_defs_fails_on_definitions_that_do_not_load(checkout):
    definitions = checkout.root / "leads_pipeline" / "definitions.py"
    definitions.write_text(
        definitions.read_text() + '\nraise RuntimeError("definitions broken on purpose")\n'
    )

    checked = checkout.dg("check", "defs")

    assert checked.returncode != 0
    assert "definitions broken on purpose" in checked.stdout + checked.stderr


def test_dg_lists_the_contract_definitions(checkout):
    listed = checkout.dg("list", "defs", "--json")

    assert listed.returncode == 0, listed.stderr
    # stdout is JSON whose descriptions may say "warning"; Python and dg warnings go to stderr.
    assert _warning_lines(listed, streams=("stderr",)) == [], listed.stderr
    defs = json.loads(listed.stdout)
    assert {job["name"] for job in defs["jobs"]} >= {"sync_leads", "refresh_leads", "maintain_lake"}
    assert {schedule["name"] for schedule in defs["schedules"]} >= {
        "sync_leads_schedule",
        "refresh_leads_schedule",
        "maintain_lake_schedule",
    }
    assert "notion_changes_sensor" in {sensor["name"] for sensor in defs["sensors"]}
    assert {asset["asset_key"] for asset in defs["assets"]} >= {
        "raw_notion_leads",
        "leads",
        "lead_quality_issues",
        "weekly_event_counts",
        "monthly_event_counts",
    }


def test_tool_dg_tool_dagster_and_workspace_yaml_name_the_same_code_location():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    workspace = yaml.safe_load((ROOT / "workspace.yaml").read_text())
    dg_project = pyproject["tool"]["dg"]["project"]
    (entry,) = workspace["load_from"]

    assert pyproject["tool"]["dg"]["directory_type"] == "project"
    assert dg_project["root_module"] == "leads_pipeline"
    locations = {
        "[tool.dg.project]": (
            dg_project["code_location_target_module"],
            dg_project["code_location_name"],
        ),
        "[tool.dagster]": (
            pyproject["tool"]["dagster"]["module_name"],
            pyproject["tool"]["dagster"]["code_location_name"],
        ),
        "workspace.yaml": (
            entry["python_module"]["module_name"],
            entry["python_module"]["location_name"],
        ),
    }
    assert set(locations.values()) == {("leads_pipeline.definitions", "leads_pipeline")}, locations
