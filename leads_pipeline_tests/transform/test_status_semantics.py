"""Status semantics (issue 13, item 2): the order and group of each status, from Notion's schema.

Crafted ``status`` and ``select`` configurations shaped as Notion returns them, the schema kept by
the sync in a real Delta table (including a table written before the configuration was kept), and
every ``status`` / ``select`` property recorded from the real API.
"""

from __future__ import annotations

import pyarrow as pa
import pytest

from leads_pipeline.sources.sample_data import SAMPLE_SCHEMA
from leads_pipeline.storage.lake import DeltaLake
from leads_pipeline.storage.raw_store import load_schema, store_schema
from leads_pipeline.tables import SCHEMA_TABLE
from leads_pipeline.transform.status_semantics import (
    STATUSES_SCHEMA,
    StatusSchemaError,
    lake_statuses,
    ordered_statuses,
    schema_order,
    status_property,
)
from leads_pipeline_tests.real_notion import recorded_schemas


def option(option_id: str, name: str, color: str = "default") -> dict:
    return {"id": option_id, "name": name, "color": color, "description": None}


#: A status property as Notion returns it: options in creation order, groups listing their own.
STATUT = {
    "id": "s%3Dtt",
    "name": "Statut",
    "type": "status",
    "status": {
        "options": [
            option("o-gagne", "Gagné", "green"),
            option("o-nouveau", "Nouveau"),
            option("o-perdu", "Perdu", "red"),
            option("o-contacte", "Contacté", "blue"),
            option("o-booke", "Appel booké", "purple"),
            option("o-repondu", "Répondu", "yellow"),
        ],
        "groups": [
            {"id": "g-todo", "name": "To-do", "color": "gray", "option_ids": ["o-nouveau"]},
            {
                "id": "g-progress",
                "name": "In progress",
                "color": "blue",
                "option_ids": ["o-contacte", "o-repondu", "o-booke"],
            },
            {
                "id": "g-complete",
                "name": "Complete",
                "color": "green",
                "option_ids": ["o-gagne", "o-perdu"],
            },
        ],
    },
}


def rows(table: pa.Table) -> list[tuple]:
    return [(r["status"], r["position"], r["group"], r["stage"]) for r in table.to_pylist()]


def test_a_status_is_ordered_by_groups_then_by_each_groups_options():
    table = ordered_statuses(STATUT)
    assert table.schema == STATUSES_SCHEMA
    assert rows(table) == [
        ("Nouveau", 0, "To-do", "open"),
        ("Contacté", 1, "In progress", "open"),
        ("Répondu", 2, "In progress", "open"),
        ("Appel booké", 3, "In progress", "open"),
        ("Gagné", 4, "Complete", "closed"),
        ("Perdu", 5, "Complete", "closed"),
    ]


def test_statuses_seen_but_not_in_the_schema_come_last_alphabetically_without_group():
    seen = ["Perdu", None, "Zombie", "Archivé", "Nouveau", "Archivé"]
    table = ordered_statuses(STATUT, seen)
    assert rows(table)[6:] == [("Archivé", 6, None, "open"), ("Zombie", 7, None, "open")]
    assert table.num_rows == 8


def test_an_option_in_no_group_follows_the_grouped_ones_in_option_order():
    prop = {
        "name": "Statut",
        "type": "status",
        "status": {
            "options": [option("a", "A"), option("b", "B"), option("c", "C")],
            "groups": [{"id": "g", "name": "Complete", "option_ids": ["c", "unknown-id"]}],
        },
    }
    assert rows(ordered_statuses(prop)) == [
        ("C", 0, "Complete", "closed"),
        ("A", 1, None, "open"),
        ("B", 2, None, "open"),
    ]


def test_a_select_keeps_its_option_order_and_has_no_groups():
    prop = {
        "id": "x",
        "name": "Statut",
        "type": "select",
        "select": {"options": [option("1", "Zèbre"), option("2", "Alpha"), option("3", "Zèbre")]},
    }
    assert rows(ordered_statuses(prop, ["Beta"])) == [
        ("Zèbre", 0, None, "open"),
        ("Alpha", 1, None, "open"),
        ("Beta", 2, None, "open"),
    ]


def test_no_property_or_no_configuration_gives_only_the_seen_statuses():
    assert rows(ordered_statuses(None, ["b", "a"])) == [
        ("a", 0, None, "open"),
        ("b", 1, None, "open"),
    ]
    bare = {"id": "s", "name": "Statut", "type": "status", "status": {}}
    assert schema_order(bare) == []
    assert schema_order({"id": "s", "name": "Statut", "type": "status"}) == []
    assert ordered_statuses(None).num_rows == 0


@pytest.mark.parametrize(
    ("prop", "message"),
    [
        ({"name": "Statut", "type": "rich_text", "rich_text": {}}, "'Statut' is a 'rich_text'"),
        ({"name": "Statut", "type": "select", "select": {"options": "x"}}, "must be a list"),
        ({"name": "Statut", "type": "select", "select": {"options": [{"id": 1}]}}, "no name"),
        (
            {"name": "Statut", "type": "status", "status": {"options": [], "groups": [{}]}},
            "a group has no name",
        ),
    ],
)
def test_a_malformed_property_fails_naming_it(prop, message):
    with pytest.raises(StatusSchemaError, match=message):
        schema_order(prop)


# -- the configuration kept by the sync ------------------------------------------------------------


def sample_schema_with(statut: dict) -> dict:
    schema = {name: dict(prop) for name, prop in SAMPLE_SCHEMA.items()}
    schema["Statut"] = statut
    return schema


def test_the_sync_keeps_the_bound_status_configuration_and_loads_it_back(tmp_path):
    lake = DeltaLake(str(tmp_path / "lake"))
    schema = sample_schema_with(STATUT)
    schema["Source"] = {
        "id": "sRc%7C",
        "name": "Source",
        "type": "select",
        "select": {"options": [option("l", "LinkedIn")]},
    }
    bound = {"nom": ("Nom", "title"), "statut": ("Statut", STATUT["id"])}
    store_schema(lake, schema, bound, {"source": "test"})

    stored = {r["name"]: r for r in lake.read(SCHEMA_TABLE).to_pylist()}
    assert stored["Statut"]["options"] is not None
    assert stored["Source"]["options"] is None  # not bound to the status column
    assert stored["Nom"]["options"] is None

    loaded, loaded_bound = load_schema(lake)
    assert loaded_bound == bound
    assert loaded["Statut"]["status"] == STATUT["status"]
    assert "select" not in loaded["Source"]
    assert status_property(loaded, loaded_bound)["status"] == STATUT["status"]
    assert rows(lake_statuses(lake, ["Inconnu"])) == [
        *rows(ordered_statuses(STATUT)),
        ("Inconnu", 6, None, "open"),
    ]
    # Stored again unchanged: no new commit.
    version = lake.load(SCHEMA_TABLE).version()
    store_schema(lake, schema, bound, {"source": "test"})
    assert lake.load(SCHEMA_TABLE).version() == version


def test_a_schema_table_stored_before_the_options_column_still_loads(tmp_path):
    lake = DeltaLake(str(tmp_path / "lake"))
    old = pa.table(
        {
            "property_id": ["title", STATUT["id"]],
            "name": ["Nom", "Statut"],
            "type": ["title", "status"],
            "column": ["nom", "statut"],
            "mapped_as": ["Nom", "Statut"],
        }
    )
    lake.replace(SCHEMA_TABLE, old)
    schema, bound = load_schema(lake)
    assert schema["Statut"] == {"id": STATUT["id"], "name": "Statut", "type": "status"}
    assert bound["statut"] == ("Statut", STATUT["id"])
    assert rows(lake_statuses(lake, ["Nouveau"])) == [("Nouveau", 0, None, "open")]
    # The next sync adds the column (and the configuration).
    store_schema(lake, sample_schema_with(STATUT), bound, {})
    assert load_schema(lake)[0]["Statut"]["status"] == STATUT["status"]


def test_an_unmapped_status_column_or_no_stored_schema_gives_the_seen_statuses(tmp_path):
    lake = DeltaLake(str(tmp_path / "lake"))
    assert rows(lake_statuses(lake, ["b", "a"])) == [("a", 0, None, "open"), ("b", 1, None, "open")]
    store_schema(lake, sample_schema_with(STATUT), {"nom": ("Nom", "title")}, {})
    schema, bound = load_schema(lake)
    assert status_property(schema, bound) is None
    assert "status" not in schema["Statut"]
    assert lake_statuses(lake).num_rows == 0


# -- the real API's recorded schemas ---------------------------------------------------------------


def expected_order(prop: dict) -> list[tuple[str, str | None]]:
    """The display order, computed here from the recorded configuration."""
    kind = prop["type"]
    options = prop[kind].get("options") or []
    if kind == "select":
        names = []
        for o in options:
            if o["name"] not in names:
                names.append(o["name"])
        return [(n, None) for n in names]
    name_of = {o["id"]: o["name"] for o in options}
    order = []
    for group in prop[kind].get("groups") or []:
        for option_id in group["option_ids"]:
            if option_id in name_of and name_of[option_id] not in [n for n, _ in order]:
                order.append((name_of[option_id], group["name"]))
    order += [(o["name"], None) for o in options if o["name"] not in [n for n, _ in order]]
    return order


def test_every_recorded_status_and_select_property_yields_its_ordered_statuses():
    checked = {"status": 0, "select": 0}
    for record in recorded_schemas():
        for prop in (record["object"].get("properties") or {}).values():
            kind = prop.get("type")
            if kind not in checked or not isinstance(prop.get(kind), dict):
                continue
            table = ordered_statuses(prop)
            expected = expected_order(prop)
            assert table["position"].to_pylist() == list(range(len(expected)))
            pairs = zip(table["status"].to_pylist(), table["group"].to_pylist(), strict=True)
            assert list(pairs) == expected
            if kind == "status":
                declared = {g["name"] for g in prop["status"].get("groups") or []}
                assert {g for g in table["group"].to_pylist() if g is not None} <= declared
            checked[kind] += 1
    # The corpus holds 260 select properties (and, as recorded, no status property).
    assert checked["select"] >= 100, checked
