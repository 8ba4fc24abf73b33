"""The map, the parser and whole syncs on pages and schemas recorded from the real Notion API.

Every expectation is computed here from the recorded pages, following the rules of the README's
table of kinds, never read back from the code under test.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import dagster as dg
import pytest
from deltalake import DeltaTable

from leads_pipeline.defs.assets import analytics, ingestion
from leads_pipeline.defs.jobs import refresh_leads, sync_leads
from leads_pipeline.defs.resources import LakeResource, PropertyMapResource, WarehouseResource
from leads_pipeline.storage.raw_store import pages_to_raw
from leads_pipeline.transform.parsing import parse_pages
from leads_pipeline.transform.property_map import load_property_map, resolve
from leads_pipeline_tests.fake_notion import FakeNotion
from leads_pipeline_tests.notion_fixtures import notion_source
from leads_pipeline_tests.real_notion import (
    State,
    is_trashed,
    parent_of,
    plain_text,
    signature,
    stale_pairs,
    states,
)

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
CONTRACT = (
    "nom",
    "email",
    "telephone",
    "statut",
    "date_prise_contact",
    "date_reponse_prospect",
    "date_appel_propose",
    "date_appel_booke",
    "date_relance",
)
DATE_TYPES = ("date", "created_time")
SYNCED_AT = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


# -- the map a team would write for a state, and what each column must then hold ---------------


def map_for(state: State) -> dict[str, str | None]:
    """Column → property name (None: disabled): the first property of a fitting type."""
    dates = state.properties_of_type(*DATE_TYPES)
    options = state.properties_of_type("status", "select")
    emails = state.properties_of_type("email")
    phones = state.properties_of_type("phone_number")
    chosen = {
        "nom": state.title,
        "email": emails[0] if emails else None,
        "telephone": phones[0] if phones else None,
        "statut": options[0] if options else None,
        "date_prise_contact": dates[0] if dates else None,
        "date_reponse_prospect": dates[1] if len(dates) > 1 else None,
    }
    return {column: chosen.get(column) for column in CONTRACT}


def toml_for(mapping: dict[str, str | None]) -> str:
    lines = ["[columns]"]
    for column, prop in mapping.items():
        lines.append(f"{column} = {json.dumps(prop) if prop else 'false'}")
    return "\n".join(lines) + "\n"


def expected_value(column: str, value: dict | None):
    """What ``leads.<column>`` holds for a property value, by the kinds' documented rules."""
    if value is None:
        return None
    kind = value["type"]
    content = value.get(kind)
    if column == "nom":
        return plain_text(value)
    if column == "email":
        text = (content or "").strip()
        return text if _EMAIL.fullmatch(text) else None
    if column == "telephone":
        return (content or "").strip() or None
    if column == "statut":
        return content["name"] if content else None
    if kind == "date":
        return content["start"][:10] if content else None
    if kind == "created_time":
        return content[:10]
    raise AssertionError(f"no rule for {column} from {kind}")


def simple_value(value: dict):
    """The simple value ``extra_properties`` keeps for an unmapped property."""
    kind = value.get("type")
    content = value.get(kind)
    if kind in ("title", "rich_text"):
        return "".join(s.get("plain_text") or "" for s in content or [])
    if kind in (
        "email",
        "phone_number",
        "url",
        "number",
        "checkbox",
        "created_time",
        "last_edited_time",
    ):
        return content
    if kind in ("select", "status"):
        return content["name"] if content else None
    if kind in ("multi_select", "files"):
        return [item["name"] for item in content or []]
    if kind in ("people", "relation"):
        return [item["id"] for item in content or []]
    if kind in ("created_by", "last_edited_by"):
        return content["id"] if content else None
    if kind == "date":
        if not content:
            return None
        return (
            content["start"] if not content.get("end") else f"{content['start']}/{content['end']}"
        )
    if kind == "unique_id":
        if content.get("number") is None:
            return None
        prefix = content.get("prefix")
        return f"{prefix}-{content['number']}" if prefix else content["number"]
    if kind == "formula":
        result = content.get(content.get("type"))
        if content.get("type") == "date":
            return result["start"] if result else None
        return result
    if kind == "rollup":
        result_type = content.get("type")
        if result_type == "number":
            return content.get("number")
        if result_type == "date":
            return content["date"]["start"] if content.get("date") else None
        if result_type == "array":
            return [simple_value(item) for item in content.get("array") or []]
        return None
    if kind == "verification":
        return content.get("state") if content else None
    if kind == "place":
        return (content.get("name") or content.get("address")) if content else None
    raise AssertionError(f"no simple-value rule for {kind}")


def expected_leads(state: State, mapping: dict[str, str | None]) -> dict[str, dict]:
    mapped = {prop for prop in mapping.values() if prop}
    result = {}
    for page in state.live_pages:
        properties = page["properties"]
        row = {
            column: expected_value(column, properties.get(prop)) if prop else None
            for column, prop in mapping.items()
        }
        row["extra_properties"] = {
            name: simple_value(value)
            for name, value in properties.items()
            if name not in mapped and value.get("type") != "button"
        }
        result[page["id"]] = row
    return result


def comparable(row: dict) -> dict:
    out = {column: row[column] for column in CONTRACT}
    for column in CONTRACT:
        if hasattr(out[column], "isoformat"):
            out[column] = out[column].isoformat()
    out["extra_properties"] = json.loads(row["extra_properties"])
    return out


# -- the parser and the map on every recorded state -------------------------------------------


def test_every_recorded_state_parses_with_a_map_fitting_it(tmp_path):
    """All 200-odd real database states: the map loads, resolves, and every value is right."""
    checked = 0
    for index, state in enumerate(states()):
        if not state.live_pages:
            continue
        mapping = map_for(state)
        path = tmp_path / f"map_{index}.toml"
        path.write_text(toml_for(mapping), encoding="utf-8")
        columns = resolve(load_property_map(path), state.schema)
        parsed = parse_pages(
            pages_to_raw(state.live_pages, SYNCED_AT), columns, state.schema, SYNCED_AT
        )
        got = {row["id"]: comparable(row) for row in parsed.leads.to_pylist()}
        assert got == expected_leads(state, mapping), f"state of {state.parent_id}"
        invalid_emails = {
            page["id"]
            for page in state.live_pages
            if mapping["email"]
            and (page["properties"][mapping["email"]].get("email") or "").strip()
            and expected_value("email", page["properties"][mapping["email"]]) is None
        }
        issues = {row["page_id"] for row in parsed.issues.to_pylist() if row["column"] == "email"}
        assert issues == invalid_emails
        checked += 1
    assert checked >= 150


def test_recorded_trash_flags_are_honoured_in_raw():
    """Pre-2024 answers mark trash with ``archived`` only, 2026-03-11 ones with ``in_trash``."""
    pages = [page for state in states() for page in state.pages]
    assert any("in_trash" not in p for p in pages) and any("archived" not in p for p in pages)
    raw = pages_to_raw(pages, SYNCED_AT)
    assert raw["in_trash"].to_pylist() == [is_trashed(p) for p in pages]


# -- whole syncs through the fake server ------------------------------------------------------


def _serve(fake: FakeNotion, state: State) -> str:
    database_id = "0b0e0f00-0000-4000-8000-" + state.parent_id.replace("-", "")[-12:]
    fake.add_database(database_id, "Leads", data_sources=[(state.parent_id, "Leads", state.schema)])
    fake.seed(list(state.pages), state.parent_id)
    return database_id


def _resources(fake, database_id, tmp_path, map_path, **source_options) -> dict:
    return {
        "source": notion_source(fake, database_id=database_id, **source_options),
        "lake": LakeResource(uri=str(tmp_path / "lake")),
        "warehouse": WarehouseResource(path=str(tmp_path / "warehouse.duckdb")),
        "property_map": PropertyMapResource(path=str(map_path)),
    }


def _run(job, resources):
    defs = dg.Definitions(
        assets=[*ingestion.ASSETS, *analytics.ASSETS],
        jobs=[sync_leads, refresh_leads],
        resources=resources,
    )
    result = defs.resolve_job_def(job).execute_in_process()
    assert result.success
    return result


def _leads(tmp_path) -> dict[str, dict]:
    rows = DeltaTable(str(tmp_path / "lake" / "leads")).to_pyarrow_table().to_pylist()
    return {row["id"]: comparable(row) for row in rows}


def _richest(version: str) -> State:
    """The recorded state with an email property and the most pages, recorded at ``version``."""
    candidates = [
        s
        for s in states()
        if version in s.notion_versions and s.properties_of_type("email") and s.live_pages
    ]
    if not candidates:
        pytest.skip(f"the corpus holds no state with an email property recorded at {version}")
    return max(candidates, key=lambda s: (len(s.live_pages), s.parent_id))


@pytest.mark.parametrize("version", ["2025-09-03", "2026-03-11"])
def test_a_recorded_database_syncs_through_the_fake_server(notion_env, tmp_path, version):
    fake = notion_env
    state = _richest(version)
    database_id = _serve(fake, state)
    mapping = map_for(state)
    map_path = tmp_path / "map.toml"
    map_path.write_text(toml_for(mapping), encoding="utf-8")
    resources = _resources(fake, database_id, tmp_path, map_path, api_version=version)
    _run("sync_leads", resources)
    assert _leads(tmp_path) == expected_leads(state, mapping)
    assert {h.get("Notion-Version") for h in fake.headers_seen} == {version}


def _stale_case() -> tuple[State, dict, dict]:
    """A recorded page whose values changed while its ``last_edited_time`` stayed the same."""
    for before, after in stale_pairs():
        if is_trashed(before) or is_trashed(after):
            continue
        for state in states():
            if state.parent_id == parent_of(before) and signature(state.schema) == signature(
                before["properties"]
            ):
                return state, before, after
    pytest.skip("the corpus holds no page recorded twice with one edit time")


def test_a_value_changed_without_an_edit_time_reaches_leads_after_a_refresh(notion_env, tmp_path):
    fake = notion_env
    state, before, after = _stale_case()
    pages = [before if p["id"] == before["id"] else p for p in state.pages]
    state_before = State(state.parent_id, state.schema, tuple(pages), state.notion_versions)
    database_id = _serve(fake, state_before)
    mapping = map_for(state)
    map_path = tmp_path / "map.toml"
    map_path.write_text(toml_for(mapping), encoding="utf-8")
    resources = _resources(fake, database_id, tmp_path, map_path)
    _run("sync_leads", resources)
    assert _leads(tmp_path) == expected_leads(state_before, mapping)

    fake.add_page(after, state.parent_id)  # same id, same edit time, other values
    state_after = State(
        state.parent_id,
        state.schema,
        tuple(after if p["id"] == after["id"] else p for p in pages),
        state.notion_versions,
    )
    assert expected_leads(state_after, mapping) != expected_leads(state_before, mapping)
    _run("refresh_leads", resources)
    assert _leads(tmp_path) == expected_leads(state_after, mapping)
