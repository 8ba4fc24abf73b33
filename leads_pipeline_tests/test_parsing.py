"""Parsing of every mapped property type and of the edge cases real Notion data has."""

import copy
import datetime as dt
import json

import pytest

from leads_pipeline.parsing import parse_pages
from leads_pipeline.property_map import bindings, load_property_map, resolve
from leads_pipeline.raw_store import pages_to_raw
from leads_pipeline.sample_data import SAMPLE_SCHEMA
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
