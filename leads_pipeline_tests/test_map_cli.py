"""``leads-pipeline map suggest`` and ``map check``: over HTTP against the fake Notion server, on the
sample source, and on schemas recorded from the real Notion API."""

from __future__ import annotations

import gzip
import json
import os
import tempfile
import tomllib
from pathlib import Path

import pytest

from leads_pipeline.cli import (
    EXIT_CONFIGURATION,
    EXIT_ERROR,
    EXIT_MAP_INVALID,
    EXIT_OK,
    EXIT_USAGE,
    main,
)
from leads_pipeline.sources.sample_data import SAMPLE_DATA_SOURCE_ID, SAMPLE_SCHEMA
from leads_pipeline.transform.map_advisor import render_toml, suggest_map
from leads_pipeline.transform.property_map import (
    DEFAULT_COLUMNS,
    accepted_types,
    load_property_map,
    resolve,
)
from leads_pipeline_tests.fake_notion import DEFAULT_TOKEN

CONTRACT = [spec.column for spec in DEFAULT_COLUMNS]
CORPUS_ENV = "LEADS_TEST_REAL_NOTION_DIR"

ENGLISH_DATABASE = "0b1c2d3e-4f50-4a61-8b72-93a4b5c6d7e8"
ENGLISH_SOURCE = "1c2d3e4f-5061-4b72-9c83-a4b5c6d7e8f9"
SPARSE_DATABASE = "2d3e4f50-6172-4c83-8d94-b5c6d7e8f90a"
SPARSE_SOURCE = "3e4f5061-7283-4d94-9ea5-c6d7e8f90a1b"


def prop(name: str, pid: str, ptype: str, **config) -> tuple[str, dict]:
    return name, {"id": pid, "name": name, "type": ptype, ptype: config}


#: An English Leads database: no phone, a number formula, the page's creation time.
ENGLISH = dict(
    [
        prop("Company", "cMp%3A", "rich_text"),
        prop("E-mail", "eM%40l", "email"),
        prop("Status", "sT%3Fa", "status"),
        prop("Contacted on", "c0n%7D", "date"),
        prop("Replied on", "r3P%5B", "date"),
        prop("Call booked", "cBk%21", "date"),
        prop("Follow-up", "fUp%2C", "date"),
        prop("Priority", "pRi%3B", "select"),
        prop("Days since contact", "dSc%3D", "formula", expression="dateBetween(now(), x, 'days')"),
        prop("Created", "cRt%26", "created_time"),
        prop("Last edited", "lEd%24", "last_edited_time"),
        prop("Owner", "oWn%2A", "people"),
        prop("Name", "title", "title"),
    ]
)
ENGLISH_EXPECTED = {
    "nom": "Name",
    "email": "E-mail",
    "telephone": False,
    "statut": "Status",
    "date_prise_contact": "Contacted on",
    "date_reponse_prospect": "Replied on",
    "date_appel_propose": False,
    "date_appel_booke": "Call booked",
    "date_relance": "Follow-up",
}

#: No phone, no status; an email kept as text, dates from a formula, a rollup and a date.
SPARSE = dict(
    [
        prop("Prospect", "title", "title"),
        prop("Courriel", "cOu%3A", "rich_text"),
        prop("Premier contact", "pRc%3F", "formula", expression="dateStart(prop('Contact'))"),
        prop("Créé le", "cRl%40", "created_time"),
        prop("RDV", "rDv%5D", "rollup", function="earliest_date", relation_property_name="Appels"),
        prop("Nb d'appels", "nBa%5E", "rollup", function="count", relation_property_name="Appels"),
        prop("Relancé le", "rLc%7E", "date"),
        prop("Notes", "nOt%7B", "rich_text"),
    ]
)
SPARSE_EXPECTED = {
    "nom": "Prospect",
    "email": "Courriel",
    "telephone": False,
    "statut": False,
    "date_prise_contact": "Premier contact",
    "date_reponse_prospect": False,
    "date_appel_propose": False,
    "date_appel_booke": "RDV",
    "date_relance": "Relancé le",
}


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert DEFAULT_TOKEN not in out + err  # the token is never shown
    return code, out, err


def columns_of(toml_text: str) -> dict:
    return tomllib.loads(toml_text)["columns"]


@pytest.fixture
def english_env(notion_env, monkeypatch):
    notion_env.add_database(
        ENGLISH_DATABASE, "Leads (EN)", data_sources=[(ENGLISH_SOURCE, "Leads", ENGLISH)]
    )
    monkeypatch.setenv("NOTION_DATABASE_ID", ENGLISH_DATABASE)
    return notion_env


@pytest.fixture
def sparse_env(notion_env, monkeypatch):
    notion_env.add_database(
        SPARSE_DATABASE, "Prospects", data_sources=[(SPARSE_SOURCE, "Prospects", SPARSE)]
    )
    monkeypatch.setenv("NOTION_DATABASE_ID", SPARSE_DATABASE)
    return notion_env


# -- suggest ---------------------------------------------------------------------------------


def test_suggest_maps_an_english_database(english_env, capsys):
    code, out, err = run(capsys, "map", "suggest")
    assert (code, err) == (EXIT_OK, "")
    assert columns_of(out) == ENGLISH_EXPECTED
    assert list(columns_of(out)) == CONTRACT  # every contract column, in contract order
    header = [line for line in out.splitlines() if line.startswith("#")][:3]
    assert any(ENGLISH_SOURCE in line and ENGLISH_DATABASE in line for line in header)
    # The creation time is offered for the first contact, commented out, and so is the formula.
    assert '# date_prise_contact = "Created"' in out
    assert '# date_prise_contact = "Days since contact"' in out
    # The request went to the fake server, with the token from NOTION_TOKEN.
    assert english_env.counts  # at least the database and the data source were read


def test_suggest_without_phone_and_status(sparse_env, capsys):
    code, out, _ = run(capsys, "map", "suggest")
    assert code == EXIT_OK
    assert columns_of(out) == SPARSE_EXPECTED
    assert '# date_prise_contact = "Créé le"' in out  # the fallback, kept as an alternative
    assert "Nb d'appels" not in out.split("[columns]")[1]  # a count is no date


def test_suggest_on_the_sample_source_gives_the_default_map(capsys, tmp_path):
    assert "LEADS_SOURCE" not in os.environ  # unset: the bundled sample
    code, out, _ = run(capsys, "map", "suggest")
    assert code == EXIT_OK
    assert SAMPLE_DATA_SOURCE_ID in out.splitlines()[1]
    path = tmp_path / "sample_map.toml"
    path.write_text(out, encoding="utf-8")
    assert load_property_map(path) == load_property_map(None)
    assert columns_of(out) == {spec.column: spec.property for spec in DEFAULT_COLUMNS}


def test_suggest_through_notion_on_the_sample_schema(notion_env, capsys):
    code, out, _ = run(capsys, "map", "suggest")
    assert code == EXIT_OK
    assert columns_of(out) == {spec.column: spec.property for spec in DEFAULT_COLUMNS}


def test_suggest_output_refuses_to_overwrite(english_env, capsys, tmp_path):
    target = tmp_path / "leads_map.toml"
    code, out, err = run(capsys, "map", "suggest", "--output", str(target))
    assert (code, out) == (EXIT_OK, "")
    assert "leads_map.toml" in err and "telephone" in err  # what was written, what is disabled
    assert columns_of(target.read_text(encoding="utf-8")) == ENGLISH_EXPECTED

    target.write_text("# my edits\n", encoding="utf-8")
    code, _, err = run(capsys, "map", "suggest", "--output", str(target))
    assert code == EXIT_USAGE
    assert "--force" in err and str(target) in err
    assert target.read_text(encoding="utf-8") == "# my edits\n"

    code, _, _ = run(capsys, "map", "suggest", "--output", str(target), "--force")
    assert code == EXIT_OK
    assert columns_of(target.read_text(encoding="utf-8")) == ENGLISH_EXPECTED


def test_suggest_names_the_missing_variable(monkeypatch, capsys):
    monkeypatch.setenv("LEADS_SOURCE", "notion")
    code, out, err = run(capsys, "map", "suggest")
    assert (code, out) == (EXIT_CONFIGURATION, "")
    assert "NOTION_TOKEN" in err and "NOTION_DATABASE_ID" in err


# -- check -----------------------------------------------------------------------------------


def check_lines(out: str) -> dict[str, list[str]]:
    """The binding table of ``map check``: column → its row's cells."""
    rows = {}
    for line in out.splitlines():
        cells = line.split()
        if cells and cells[0] in CONTRACT:
            rows[cells[0]] = cells
    return rows


@pytest.mark.parametrize(
    ("env", "schema", "expected"),
    [("english_env", ENGLISH, ENGLISH_EXPECTED), ("sparse_env", SPARSE, SPARSE_EXPECTED)],
)
def test_check_accepts_the_suggested_map(env, schema, expected, request, capsys, tmp_path):
    request.getfixturevalue(env)
    path = tmp_path / "leads_map.toml"
    assert run(capsys, "map", "suggest", "--output", str(path))[0] == EXIT_OK

    code, out, err = run(capsys, "map", "check", "--map", str(path))
    assert (code, err) == (EXIT_OK, "")
    assert str(path) in out
    rows = check_lines(out)
    bound = {column: name for column, name in expected.items() if name}
    assert set(rows) == set(bound)
    for column, name in bound.items():
        row = " ".join(rows[column])
        assert name in row and schema[name]["id"] in row and schema[name]["type"] in row
    disabled = [column for column, name in expected.items() if name is False]
    assert f"Disabled (always NULL): {', '.join(disabled)}" in out
    extra = [name for name in schema if name not in bound.values()]
    extra_section = out.split("Kept in extra_properties")[1]
    assert all(json.dumps(name, ensure_ascii=False) in extra_section for name in extra)
    assert all(json.dumps(name, ensure_ascii=False) not in extra_section for name in bound.values())


def test_check_reads_leads_property_map(english_env, monkeypatch, capsys, tmp_path):
    path = tmp_path / "from_env.toml"
    assert run(capsys, "map", "suggest", "--output", str(path))[0] == EXIT_OK
    monkeypatch.setenv("LEADS_PROPERTY_MAP", str(path))
    code, out, _ = run(capsys, "map", "check")
    assert code == EXIT_OK
    assert f"{path} (LEADS_PROPERTY_MAP)" in out


def test_check_the_default_map_on_the_sample(capsys):
    code, out, _ = run(capsys, "map", "check")
    assert code == EXIT_OK
    assert "built-in default map" in out
    rows = check_lines(out)
    for spec in DEFAULT_COLUMNS:
        assert " ".join(rows[spec.column]).startswith(f"{spec.column} {spec.kind} {spec.property}")
        assert SAMPLE_SCHEMA[spec.property]["id"] in rows[spec.column]


def test_check_the_default_map_on_an_english_database_fails(english_env, capsys):
    code, out, err = run(capsys, "map", "check")
    assert (code, out) == (EXIT_MAP_INVALID, "")
    assert "'nom'" in err and "'Nom'" in err  # the first column whose property is missing


@pytest.mark.parametrize(
    ("toml_text", "column", "prop", "actual_type"),
    [
        ('[columns]\nemail = "Status"\n', "email", "Status", "status"),  # wrong type
        ('[columns]\nstatut = "Stage"\n', "statut", "Stage", None),  # no such property
        ('[columns]\ndate_relance = "Owner"\n', "date_relance", "Owner", "people"),
    ],
)
def test_check_rejects_a_wrong_map(
    english_env, capsys, tmp_path, toml_text, column, prop, actual_type
):
    good = tmp_path / "good.toml"
    assert run(capsys, "map", "suggest", "--output", str(good))[0] == EXIT_OK
    document = good.read_text(encoding="utf-8")
    # The suggested map with one line replaced by the wrong one.
    lines = [line for line in document.splitlines() if not line.startswith(f"{column} =")]
    wrong = tmp_path / "wrong.toml"
    wrong.write_text("\n".join(lines) + "\n" + toml_text.split("\n", 1)[1], encoding="utf-8")
    assert columns_of(wrong.read_text(encoding="utf-8"))[column] == prop

    code, out, err = run(capsys, "map", "check", "--map", str(wrong))
    assert (code, out) == (EXIT_MAP_INVALID, "")
    assert repr(column) in err and repr(prop) in err
    if actual_type:
        assert actual_type in err
    assert str(wrong) in err


def test_check_rejects_an_unreadable_map(capsys, tmp_path):
    broken = tmp_path / "broken.toml"
    broken.write_text("[columns\nnom = ", encoding="utf-8")
    code, _, err = run(capsys, "map", "check", "--map", str(broken))
    assert code == EXIT_MAP_INVALID
    assert str(broken) in err
    code, _, err = run(capsys, "map", "check", "--map", str(tmp_path / "absent.toml"))
    assert code == EXIT_MAP_INVALID
    assert "absent.toml" in err


# -- the advisor's rules, on schemas written here --------------------------------------------


def test_names_match_without_accents_case_or_punctuation():
    schema = dict(
        [
            prop("NOM COMPLET", "t", "rich_text"),
            prop("Titre", "title", "title"),
            prop("e-MAIL", "e", "rich_text"),
            prop("Tél.", "p", "rich_text"),
            prop("ÉTAPE", "s", "select"),
            prop("date de PRISE de contact", "d1", "date"),
            prop("Reply date", "d2", "formula"),
            prop("Call proposed", "d3", "date"),
            prop("Meeting booked", "d4", "date"),
            prop("follow up", "d5", "date"),
        ]
    )
    assert suggest_map(schema).chosen() == {
        "nom": "Titre",  # the title property wins over a text property named like a name
        "email": "e-MAIL",
        "telephone": "Tél.",
        "statut": "ÉTAPE",
        "date_prise_contact": "date de PRISE de contact",
        "date_reponse_prospect": "Reply date",
        "date_appel_propose": "Call proposed",
        "date_appel_booke": "Meeting booked",
        "date_relance": "follow up",
    }


def test_a_property_feeds_one_column_at_most():
    schema = dict([prop("Name", "title", "title"), prop("Email phone", "ep", "rich_text")])
    suggestion = suggest_map(schema)
    assert suggestion.chosen()["email"] == "Email phone"
    assert suggestion.chosen()["telephone"] is None
    text = render_toml(suggestion, schema, "test schema")
    assert '# telephone = "Email phone"' in text and "used by email" in text


def test_created_time_is_the_fallback_of_the_first_contact_only():
    schema = dict([prop("Name", "title", "title"), prop("Created time", "ct", "created_time")])
    chosen = suggest_map(schema).chosen()
    assert chosen["date_prise_contact"] == "Created time"
    assert [c for c, name in chosen.items() if name] == ["nom", "date_prise_contact"]
    # A named contact date beats the fallback.
    schema.update([prop("First contact", "fc", "date")])
    assert suggest_map(schema).chosen()["date_prise_contact"] == "First contact"


def test_a_name_equal_to_another_property_id_is_written_as_its_id():
    schema = dict([prop("Name", "title", "title"), prop("title", "e%3F", "email")])
    text = render_toml(suggest_map(schema), schema, "test schema")
    assert columns_of(text)["email"] == "e%3F"
    path_columns = resolve(_map_from(text), schema)
    assert {c.column: c.property_id for c in path_columns if c.property_id} == {
        "nom": "title",
        "email": "e%3F",
    }


def test_odd_property_names_stay_valid_toml():
    name = 'Nom "complet"\n\\ #1 \x7f'
    schema = dict([prop(name, "title", "title"), prop("Relance\tdate", "r", "date")])
    text = render_toml(suggest_map(schema), schema, 'odd "origin"\nsecond line')
    assert columns_of(text) == {
        **dict.fromkeys(CONTRACT, False),
        "nom": name,
        "date_relance": "Relance\tdate",
    }


def _map_from(text: str):
    """The property map a TOML text loads as, through ``load_property_map``."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "map.toml"
        path.write_text(text, encoding="utf-8")
        return load_property_map(path)


# -- real recorded schemas -------------------------------------------------------------------


def recorded_schemas() -> list[dict]:
    """Every recorded database / data source object, read from outside the repository."""
    value = os.environ.get(CORPUS_ENV)
    if not value:
        pytest.skip(
            f"{CORPUS_ENV} is not set: this test reads schemas recorded from the real Notion API "
            "(../shared/real-notion, which .ci/run sets); a plain clone has no corpus."
        )
    path = Path(value) / "data_sources.jsonl.gz"
    if not path.is_file():
        pytest.skip(f"{CORPUS_ENV}={value} holds no data_sources.jsonl.gz.")
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line)["object"] for line in handle if line.strip()]


def _title(recorded: dict) -> str:
    return "".join(part.get("plain_text", "") for part in recorded.get("title") or [])


def test_suggestions_on_real_recorded_schemas():
    objects = recorded_schemas()
    date_types = set(accepted_types("date"))
    with_title = 0
    for recorded in objects:
        schema = recorded["properties"]
        titles = [name for name, p in schema.items() if p["type"] == "title"]
        if not titles:
            continue
        with_title += 1
        suggestion = suggest_map(schema)
        chosen = suggestion.chosen()
        assert chosen["nom"] == titles[0], _title(recorded)
        for column in ("date_prise_contact", "date_reponse_prospect", "date_appel_propose"):
            if chosen[column]:
                assert schema[chosen[column]]["type"] in date_types
        for column in ("date_appel_booke", "date_relance"):
            if chosen[column]:
                assert schema[chosen[column]]["type"] in date_types
        # Generic dates ("Date", "Due Date", "Due by") are no lead event.
        for column in ("date_prise_contact", "date_reponse_prospect", "date_relance"):
            assert chosen[column] not in {"Date", "Due Date", "Due by", "Sync Date"}
        names = [n for n in chosen.values() if n]
        assert len(names) == len(set(names))  # a property feeds one column at most
        # The printed map reads back as exactly the suggestion, and fits the schema.
        text = render_toml(suggestion, schema, f"recorded {_title(recorded)!r}")
        assert columns_of(text) == {c: n if n else False for c, n in chosen.items()}
        resolved = resolve(_map_from(text), schema)
        assert {c.column: c.property_name for c in resolved if c.property_id} == {
            c: n for c, n in chosen.items() if n
        }
    assert with_title > 100


def test_contacts_databases_get_their_email_and_phone():
    contacts = [
        recorded["properties"]
        for recorded in recorded_schemas()
        if _title(recorded).startswith("Contacts DB")
    ]
    checked = 0
    for schema in contacts:
        emails = [n for n, p in schema.items() if p["type"] == "email"]
        phones = [n for n, p in schema.items() if p["type"] == "phone_number"]
        if not emails and not phones:
            continue
        checked += 1
        chosen = suggest_map(schema).chosen()
        if emails:
            assert chosen["email"] in emails
        if phones:
            assert chosen["telephone"] in phones
    assert checked, "no recorded Contacts DB schema with an email or phone property"


def test_a_refused_token_is_named_not_shown(english_env, monkeypatch, capsys):
    wrong = "secret_not_the_integration_token_0123456789"
    monkeypatch.setenv("NOTION_TOKEN", wrong)
    code, out, err = run(capsys, "map", "suggest")
    assert (code, out) == (EXIT_ERROR, "")
    assert "NOTION_TOKEN" in err
    assert wrong not in err
