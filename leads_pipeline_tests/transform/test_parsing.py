"""Parsing of every mapped property type and of the edge cases real Notion data has."""

import copy
import datetime as dt
import json

import pyarrow as pa
import pytest

from leads_pipeline.sources.sample_data import SAMPLE_SCHEMA
from leads_pipeline.storage.raw_store import pages_to_raw
from leads_pipeline.transform.parsing import KINDS, leads_schema, parse_pages
from leads_pipeline.transform.property_map import (
    EVENT_COLUMNS,
    accepted_types,
    bindings,
    load_property_map,
    resolve,
)
from leads_pipeline_tests.pages import date_value, make_page, rich

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
CONTACT = "Date de prise de contact"


def parse(pages, schema=SAMPLE_SCHEMA, previous=None):
    columns = resolve(load_property_map(), schema, previous)
    result = parse_pages(pages_to_raw(pages, NOW), columns, schema, NOW)
    leads = {row["id"]: row for row in result.leads.to_pylist()}
    return leads, result.issues.to_pylist()


def test_every_mapped_type_is_parsed():
    page = make_page(
        "p1",
        nom=rich("Éloïse ", "Müller 🚀"),
        email=" eloise@exemple.fr ",
        telephone="+33 6 12 34 56 78",
        statut="Répondu",
        dates={
            CONTACT: date_value("2025-01-05"),
            "Date de réponse du prospect": date_value("2025-01-05T23:30:00.000-05:00"),
            "Date d'appel proposé": date_value("2025-01-06T00:15:00.000+09:00"),
            "Date d'appel booké": date_value("2025-01-07", "2025-01-09"),
            "Date de relance": None,
        },
    )
    leads, issues = parse([page])
    lead = leads["p1"]
    assert lead["nom"] == "Éloïse Müller 🚀"
    assert lead["email"] == "eloise@exemple.fr"
    assert lead["telephone"] == "+33 6 12 34 56 78"
    assert lead["statut"] == "Répondu"
    assert lead["date_prise_contact"] == dt.date(2025, 1, 5)
    # The local date as written, never shifted to UTC (which would be 2025-01-06 / 2025-01-05).
    assert lead["date_reponse_prospect"] == dt.date(2025, 1, 5)
    assert lead["date_appel_propose"] == dt.date(2025, 1, 6)
    assert lead["date_appel_booke"] == dt.date(2025, 1, 7)  # a range counts on its start
    assert lead["date_relance"] is None
    assert lead["created_time"] == dt.datetime(2025, 2, 1, 9, tzinfo=dt.UTC)
    assert lead["last_edited_time"] == dt.datetime(2025, 3, 1, 10, tzinfo=dt.UTC)
    assert lead["url"] == "https://www.notion.so/p1"
    assert json.loads(lead["extra_properties"]) == {
        "Entreprise": "ACME",
        "Responsable": [],
        "Score": None,
        "Source": None,
        "Tags": [],
    }
    assert issues == []


def test_select_is_accepted_for_the_status_column():
    schema = copy.deepcopy(SAMPLE_SCHEMA)
    schema["Statut"]["type"] = "select"
    page = make_page("p1")
    page["properties"]["Statut"] = {
        "id": schema["Statut"]["id"],
        "type": "select",
        "select": {"id": "a", "name": "Gagné", "color": "green"},
    }
    leads, _ = parse([page], schema)
    assert leads["p1"]["statut"] == "Gagné"


def test_empty_values_are_null_without_issues():
    page = make_page("p1", nom=[], email=None, telephone=None, statut=None)
    leads, issues = parse([page])
    lead = leads["p1"]
    assert (lead["nom"], lead["email"], lead["telephone"], lead["statut"]) == (None,) * 4
    assert all(lead[c] is None for c in lead if c.startswith("date_"))
    assert issues == []


def test_unparseable_values_become_null_and_issues_and_the_lead_is_kept():
    page = make_page(
        "p1",
        email="jean.dupont@",
        dates={
            CONTACT: date_value("2025-02-30"),
            "Date de relance": date_value("demain"),
            "Date d'appel booké": date_value("2025-03-04"),
        },
    )
    page["properties"]["Date de réponse du prospect"] = {
        "id": SAMPLE_SCHEMA["Date de réponse du prospect"]["id"],
        "type": "rich_text",
        "rich_text": rich("hier"),
    }
    leads, issues = parse([page])
    lead = leads["p1"]
    assert lead["email"] is None
    assert lead["date_prise_contact"] is None
    assert lead["date_relance"] is None
    assert lead["date_reponse_prospect"] is None
    assert lead["date_appel_booke"] == dt.date(2025, 3, 4)  # still counts for its other dates
    found = {(i["column"], i["raw_value"], i["reason"]) for i in issues}
    wrong_type = next(i for i in issues if i["column"] == "date_reponse_prospect")
    assert json.loads(wrong_type["raw_value"])["rich_text"][0]["plain_text"] == "hier"
    assert found - {tuple(wrong_type[k] for k in ("column", "raw_value", "reason"))} == {
        ("email", "jean.dupont@", "not a valid email address"),
        ("date_prise_contact", "2025-02-30", "not an ISO 8601 date"),
        ("date_relance", "demain", "not an ISO 8601 date"),
    }
    assert wrong_type["reason"] == "property has type rich_text, expected date"
    assert {i["page_id"] for i in issues} == {"p1"}
    assert {i["detected_at"] for i in issues} == {NOW}


def test_renamed_property_keeps_feeding_its_column_in_old_and_new_pages():
    mapping = load_property_map()
    before = bindings(mapping, resolve(mapping, SAMPLE_SCHEMA))
    old_page = make_page("p1", dates={CONTACT: date_value("2025-01-05")})
    new_page = make_page("p2", dates={CONTACT: date_value("2025-01-06")})
    new_page["properties"]["Premier contact"] = new_page["properties"].pop(CONTACT)
    schema = copy.deepcopy(SAMPLE_SCHEMA)
    schema["Premier contact"] = {**schema.pop(CONTACT), "name": "Premier contact"}
    leads, issues = parse([old_page, new_page], schema, previous=before)
    assert leads["p1"]["date_prise_contact"] == dt.date(2025, 1, 5)
    assert leads["p2"]["date_prise_contact"] == dt.date(2025, 1, 6)
    assert "Premier contact" not in json.loads(leads["p2"]["extra_properties"])
    assert issues == []


def test_every_page_yields_exactly_one_lead():
    pages = [make_page(f"p{i}", nom=[] if i % 2 else rich("x")) for i in range(50)]
    leads, _ = parse(pages)
    assert sorted(leads) == sorted(p["id"] for p in pages)


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        ("2025-01-05T23:30:00.000-05:00", dt.date(2025, 1, 5)),
        ("2025-01-05T00:30:00.000+02:00", dt.date(2025, 1, 5)),
        ("2024-12-31T23:59:00Z", dt.date(2024, 12, 31)),
        ("2024-02-29", dt.date(2024, 2, 29)),
    ],
)
def test_event_date_is_the_local_calendar_date(start, expected):
    leads, issues = parse([make_page("p1", dates={CONTACT: date_value(start)})])
    assert leads["p1"]["date_prise_contact"] == expected
    assert issues == []


# -- every Notion type each kind accepts -------------------------------------------------------

VALUE = "Valeur"
VALUE_ID = "vAl%3D"


def prop(notion_type: str, content, **extra) -> dict:
    """A property value as a page holds it (without its id)."""
    return {"type": notion_type, notion_type: content, **extra}


def formula(result_type: str, result) -> dict:
    return prop("formula", {"type": result_type, result_type: result})


def rollup(result_type: str, result, function: str = "show_original") -> dict:
    return prop("rollup", {"type": result_type, result_type: result, "function": function})


def unique_id(prefix, number) -> dict:
    return prop("unique_id", {"prefix": prefix, "number": number})


def parse_value(tmp_path, kind: str, value: dict, schema_type: str | None = None):
    """Parses one page whose property ``Valeur`` feeds the column ``valeur`` of ``kind``.

    The contract columns other than ``nom`` are disabled: the schema has only Nom and Valeur.
    """
    schema = {
        "Nom": {"id": "title", "name": "Nom", "type": "title"},
        VALUE: {"id": VALUE_ID, "name": VALUE, "type": schema_type or value["type"]},
    }
    disabled = "\n".join(f"{c} = false" for c in ("email", "telephone", "statut", *EVENT_COLUMNS))
    path = tmp_path / "map.toml"
    path.write_text(
        f'[columns]\n{disabled}\n[columns.valeur]\nproperty = "{VALUE}"\nkind = "{kind}"\n',
        encoding="utf-8",
    )
    columns = resolve(load_property_map(path), schema)
    page = make_page("p1")
    page["properties"] = {
        "Nom": {"id": "title", "type": "title", "title": rich("X")},
        VALUE: {"id": VALUE_ID, **value},
    }
    result = parse_pages(pages_to_raw([page], NOW), columns, schema, NOW)
    (lead,) = result.leads.to_pylist()
    return lead, result.issues.to_pylist()


#: (kind, property value, expected column value): every accepted type of every kind.
ACCEPTED_CASES = [
    ("text", prop("title", rich("Éloïse ", "Müller")), "Éloïse Müller"),
    ("text", prop("rich_text", rich("ACME", " SA")), "ACME SA"),
    ("text", formula("string", "Chaud 🔥"), "Chaud 🔥"),
    ("text", unique_id("LEAD", 42), "LEAD-42"),
    ("text", prop("url", "https://exemple.fr/a"), "https://exemple.fr/a"),
    ("text", prop("email", "a@b.fr"), "a@b.fr"),
    ("text", prop("phone_number", "+33 6 00"), "+33 6 00"),
    ("email", prop("email", " jean@exemple.fr "), "jean@exemple.fr"),
    ("email", prop("rich_text", rich("marie@", "exemple.com")), "marie@exemple.com"),
    ("email", formula("string", "x@y.org"), "x@y.org"),
    ("phone", prop("phone_number", " 06 12 34 56 78 "), "06 12 34 56 78"),
    ("phone", prop("rich_text", rich("+1 555 0100")), "+1 555 0100"),
    ("phone", formula("string", "+44 20"), "+44 20"),
    ("option", prop("status", {"id": "s", "name": "Répondu", "color": "blue"}), "Répondu"),
    ("option", prop("select", {"id": "s", "name": "Gagné", "color": "green"}), "Gagné"),
    ("option", formula("string", "Perdu"), "Perdu"),
    ("date", prop("date", date_value("2025-01-05T23:30:00.000-05:00")), dt.date(2025, 1, 5)),
    ("date", formula("date", date_value("2024-02-29")), dt.date(2024, 2, 29)),
    (
        "date",
        rollup("date", date_value("1981-11-23T07:02:00.000+00:00"), "earliest_date"),
        dt.date(1981, 11, 23),
    ),
    ("date", prop("created_time", "2025-06-30T23:59:00.000Z"), dt.date(2025, 6, 30)),
    ("date", prop("last_edited_time", "2025-12-31T23:00:00.000Z"), dt.date(2025, 12, 31)),
    ("number", prop("number", 2.5), 2.5),
    ("checkbox", prop("checkbox", True), True),
    ("url", prop("url", "https://exemple.fr"), "https://exemple.fr"),
    ("references", prop("people", [{"object": "user", "id": "u1"}, {"id": "u2"}]), '["u1","u2"]'),
    ("references", prop("relation", [{"id": "r1"}], has_more=False), '["r1"]'),
]


def test_the_cases_cover_every_accepted_type_of_every_kind():
    covered = {(kind, value["type"]) for kind, value, _ in ACCEPTED_CASES}
    assert covered == {(kind, t) for kind in KINDS for t in accepted_types(kind)}


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    ACCEPTED_CASES,
    ids=[f"{kind}-{value['type']}" for kind, value, _ in ACCEPTED_CASES],
)
def test_every_accepted_type_is_read(tmp_path, kind, value, expected):
    lead, issues = parse_value(tmp_path, kind, value)
    assert lead["valeur"] == expected
    assert issues == []


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        ("text", unique_id(None, 7), "7"),  # no prefix: the number alone
        ("text", unique_id("", 8), "8"),
        ("text", unique_id("LEAD", None), None),
        ("text", formula("string", None), None),
        ("option", prop("status", None), None),
        # A rollup array: the first element that holds a date, in its own offset.
        (
            "date",
            rollup(
                "array",
                [
                    prop("number", 3),
                    prop("date", None),
                    prop("date", date_value("2025-03-04T01:00:00.000+09:00")),
                    prop("date", date_value("2025-01-01")),
                ],
            ),
            dt.date(2025, 3, 4),
        ),
        ("date", rollup("array", []), None),
        ("date", rollup("array", [prop("date", None)]), None),
        ("date", rollup("date", None, "latest_date"), None),
        ("date", formula("date", None), None),
        ("date", formula("date", date_value("2025-01-06T00:15:00.000+09:00")), dt.date(2025, 1, 6)),
    ],
)
def test_empty_and_special_values_of_accepted_types(tmp_path, kind, value, expected):
    lead, issues = parse_value(tmp_path, kind, value)
    assert lead["valeur"] == expected
    assert issues == []


@pytest.mark.parametrize(
    ("kind", "value", "reason"),
    [
        ("text", formula("number", 3), "formula result is number, expected string"),
        ("email", formula("boolean", False), "formula result is boolean, expected string"),
        (
            "phone",
            formula("date", date_value("2025-01-01")),
            "formula result is date, expected string",
        ),
        ("option", formula("number", None), "formula result is number, expected string"),
        ("date", formula("string", "2025-01-01"), "formula result is string, expected date"),
        ("date", formula("number", 12), "formula result is number, expected date"),
        ("date", rollup("number", 2, "count"), "rollup result is number, expected date"),
        ("date", rollup("unsupported", None), "rollup result is unsupported, expected date"),
        (
            "date",
            rollup("array", [prop("number", 42), prop("number", 1)]),
            "rollup result is an array of number, expected date",
        ),
    ],
)
def test_a_formula_or_rollup_with_another_result_is_null_and_an_issue(
    tmp_path, kind, value, reason
):
    lead, issues = parse_value(tmp_path, kind, value)
    assert lead["valeur"] is None
    assert [(i["column"], i["reason"]) for i in issues] == [("valeur", reason)]
    assert json.loads(issues[0]["raw_value"]) == {"id": VALUE_ID, **value}  # verbatim


@pytest.mark.parametrize(
    ("kind", "value", "raw", "reason"),
    [
        (
            "email",
            prop("rich_text", rich("pas une adresse")),
            "pas une adresse",
            "not a valid email address",
        ),
        ("email", formula("string", "a@b"), "a@b", "not a valid email address"),
        ("date", formula("date", date_value("2025-02-30")), "2025-02-30", "not an ISO 8601 date"),
        ("date", rollup("date", date_value("hier")), "hier", "not an ISO 8601 date"),
        (
            "date",
            prop("created_time", "2025-13-01T00:00:00.000Z"),
            "2025-13-01T00:00:00.000Z",
            "not an ISO 8601 date",
        ),
    ],
)
def test_an_unreadable_value_of_a_new_type_is_null_and_an_issue(tmp_path, kind, value, raw, reason):
    lead, issues = parse_value(tmp_path, kind, value)
    assert lead["valeur"] is None
    assert [(i["column"], i["raw_value"], i["reason"]) for i in issues] == [("valeur", raw, reason)]


def test_a_page_value_of_a_type_the_kind_does_not_read_names_the_schema_type(tmp_path):
    value = prop("number", 3)
    lead, issues = parse_value(tmp_path, "date", value, schema_type="created_time")
    assert lead["valeur"] is None
    assert [i["reason"] for i in issues] == ["property has type number, expected created_time"]


# -- disabled columns --------------------------------------------------------------------------


def test_disabled_columns_are_typed_nulls_without_issues(tmp_path):
    path = tmp_path / "map.toml"
    path.write_text(
        "[columns]\nemail = false\ntelephone = false\nstatut = false\ndate_relance = false\n",
        encoding="utf-8",
    )
    columns = resolve(load_property_map(path), SAMPLE_SCHEMA)
    page = make_page(
        "p1",
        email="pas-un-email",  # would be an issue if the column read it
        telephone="06",
        statut="Répondu",
        dates={CONTACT: date_value("2025-01-05"), "Date de relance": date_value("demain")},
    )
    result = parse_pages(pages_to_raw([page], NOW), columns, SAMPLE_SCHEMA, NOW)
    assert result.issues.num_rows == 0
    types = {f.name: f.type for f in result.leads.schema}
    assert types["email"] == types["telephone"] == types["statut"] == pa.string()
    assert types["date_relance"] == pa.date32()
    assert result.leads.column_names == leads_schema(columns).names
    (lead,) = result.leads.to_pylist()
    assert (lead["email"], lead["telephone"], lead["statut"], lead["date_relance"]) == (None,) * 4
    assert lead["date_prise_contact"] == dt.date(2025, 1, 5)
    # The properties the disabled columns would have read are unmapped: kept as simple values.
    extra = json.loads(lead["extra_properties"])
    assert extra["Email"] == "pas-un-email" and extra["Téléphone"] == "06"
    assert extra["Statut"] == "Répondu" and extra["Date de relance"] == "demain"


def test_a_map_with_every_optional_column_disabled_parses(tmp_path):
    path = tmp_path / "map.toml"
    path.write_text(
        "[columns]\n"
        + "\n".join(f"{c} = false" for c in ("email", "telephone", "statut", *EVENT_COLUMNS))
        + "\n",
        encoding="utf-8",
    )
    schema = {"Nom": SAMPLE_SCHEMA["Nom"]}
    columns = resolve(load_property_map(path), schema)
    page = make_page("p1", nom=rich("Zoé"))
    page["properties"] = {"Nom": page["properties"]["Nom"]}
    result = parse_pages(pages_to_raw([page], NOW), columns, schema, NOW)
    (lead,) = result.leads.to_pylist()
    assert lead["nom"] == "Zoé" and json.loads(lead["extra_properties"]) == {}
    assert all(lead[c] is None for c in EVENT_COLUMNS)
    assert result.issues.num_rows == 0


# -- extra_properties --------------------------------------------------------------------------


def test_extra_properties_hold_simple_values_of_every_type(tmp_path):
    values = {
        "Réf": unique_id("LEAD", 12),
        "N°": unique_id(None, 3),
        "Compte": rollup("number", 2, "count"),
        "Dernier": rollup("date", date_value("2025-04-01T10:00:00.000+02:00"), "latest_date"),
        "Vide": rollup("date", None, "earliest_date"),
        "Liste": rollup(
            "array",
            [
                prop("title", rich("Projet ", "A")),
                prop("rich_text", rich("note")),
                prop("number", 42),
                prop("date", date_value("2025-01-01", "2025-01-03")),
                prop("relation", [{"id": "r1"}, {"id": "r2"}], has_more=False),
                prop("people", [{"object": "user", "id": "u1"}]),
                prop("select", {"name": "Chaud"}),
                prop("checkbox", False),
                formula("string", "ok"),
                prop("unique_id", {"prefix": None, "number": 9}),
                prop("mystery", {"x": [1, 2]}),  # a type without a rule keeps its value
            ],
        ),
        "Rien": rollup("array", []),
        "Non géré": rollup("unsupported", {}),
        "Vérifié": prop("verification", {"state": "verified", "verified_by": None, "date": None}),
        "Lieu": prop("place", {"lat": 48.8, "lon": 2.3, "name": "Tour Eiffel", "address": "Paris"}),
        "Adresse": prop("place", {"lat": 52.5, "lon": 13.4, "name": None, "address": "Berlin"}),
        "Nulle part": prop("place", None),
        "Texte": formula("string", "abc"),
        "Nombre": formula("number", 1.5),
        "Booléen": formula("boolean", True),
        "Quand": formula("date", date_value("2025-05-05")),
        "Bouton": prop("button", {}),
    }
    schema = copy.deepcopy(SAMPLE_SCHEMA)
    page = make_page("p1")
    for index, (name, value) in enumerate(values.items()):
        schema[name] = {"id": f"x{index}", "name": name, "type": value["type"]}
        page["properties"][name] = {"id": f"x{index}", **value}
    leads, issues = parse([page], schema)
    extra = json.loads(leads["p1"]["extra_properties"])
    assert "Bouton" not in extra  # a button holds no data
    assert {name: extra[name] for name in values if name != "Bouton"} == {
        "Réf": "LEAD-12",
        "N°": 3,
        "Compte": 2,
        "Dernier": "2025-04-01T10:00:00.000+02:00",
        "Vide": None,
        "Liste": [
            "Projet A",
            "note",
            42,
            "2025-01-01/2025-01-03",
            ["r1", "r2"],
            ["u1"],
            "Chaud",
            False,
            "ok",
            9,
            {"x": [1, 2]},
        ],
        "Rien": [],
        "Non géré": None,
        "Vérifié": "verified",
        "Lieu": "Tour Eiffel",
        "Adresse": "Berlin",
        "Nulle part": None,
        "Texte": "abc",
        "Nombre": 1.5,
        "Booléen": True,
        "Quand": "2025-05-05",
    }
    assert issues == []
