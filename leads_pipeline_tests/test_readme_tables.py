"""The README's tables name every asset, check, job, schedule and sensor the UI shows."""

import re
from pathlib import Path

import pytest

from leads_pipeline.definitions import defs

README = Path(__file__).resolve().parents[1] / "README.md"


def _table_rows(header: str) -> str:
    """The rows of the README's table whose header starts with ``| <header> |``."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"| {header} |")
    rows = []
    for line in text[start:].splitlines():
        if not line.startswith("|"):
            break
        rows.append(line)
    return "\n".join(rows)


def _named(header: str) -> set[str]:
    """Every backquoted name in the first column of that table."""
    names = set()
    for row in _table_rows(header).splitlines()[2:]:
        first = row.split("|")[1]
        names |= set(re.findall(r"`([^`]+)`", first))
    return names


def _checks() -> set[str]:
    names = {spec.name for check in defs.asset_checks or [] for spec in check.check_specs}
    names |= {spec.name for asset in defs.assets or [] for spec in asset.check_specs}
    return names


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            "asset",
            lambda: {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()},
        ),
        ("check", _checks),
        ("job", lambda: {job.name for job in defs.jobs}),
        ("schedule", lambda: {schedule.name for schedule in defs.schedules}),
        ("sensor", lambda: {sensor.name for sensor in defs.sensors}),
    ],
)
def test_the_readme_table_names_every_definition(header, expected):
    assert _named(header) == expected()
