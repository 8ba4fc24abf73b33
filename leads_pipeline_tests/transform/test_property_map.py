"""The property map: its TOML file, disabled columns, and the errors of a map that does not fit."""

from __future__ import annotations

import copy
import datetime as dt

import dagster as dg
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from leads_pipeline.defs.assets import analytics, ingestion
from leads_pipeline.defs.jobs import sync_leads
from leads_pipeline.defs.resources import LakeResource, PropertyMapResource, WarehouseResource
from leads_pipeline.sources.sample_data import SAMPLE_SCHEMA
from leads_pipeline.transform.property_map import (
    DEFAULT_COLUMNS,
    EVENT_COLUMNS,
    PropertyMapError,
    accepted_types,
    bindings,
    kinds_accepting,
    load_property_map,
    resolve,
)
from leads_pipeline_tests.notion_fixtures import notion_source
from leads_pipeline_tests.pages import date_value, rich

#: The acceptance table of the interface, written out independently of the code.
ACCEPTED = {
    "text": {"title", "rich_text", "formula", "unique_id", "url", "email", "phone_number"},
    "email": {"email", "rich_text", "formula"},
    "phone": {"phone_number", "rich_text", "formula"},
    "option": {"status", "select", "formula"},
    "date": {"date", "formula", "rollup", "created_time", "last_edited_time"},
    "number": {"number"},
    "checkbox": {"checkbox"},
    "url": {"url"},
    "references": {"people", "relation"},
}


def write_map(tmp_path, text: str | bytes, name: str = "map.toml"):
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path, text: str | bytes):
    return load_property_map(write_map(tmp_path, text))


def schema_of(*props: tuple[str, str, str]) -> dict:
    """A data source schema from (name, id, type) triples."""
    return {name: {"id": pid, "name": name, "type": ptype} for name, pid, ptype in props}


# -- kinds ------------------------------------------------------------------------------------


def test_every_kind_accepts_exactly_the_documented_types():
    assert {kind: set(accepted_types(kind)) for kind in ACCEPTED} == ACCEPTED
    for notion_type in set().union(*ACCEPTED.values()) | {"button", "files"}:
        expected = {kind for kind, types in ACCEPTED.items() if notion_type in types}
        assert set(kinds_accepting(notion_type)) == expected, notion_type
    assert kinds_accepting("formula") == ("text", "email", "phone", "option", "date")
    assert kinds_accepting("button") == ()


# -- disabled columns -------------------------------------------------------------------------


def test_a_disabled_column_resolves_to_nothing_and_has_no_binding(tmp_path):
    mapping = load(tmp_path, "[columns]\ntelephone = false\ndate_relance = false\n")
    specs = {c.column: c for c in mapping.columns}
    assert specs["telephone"].property is None and not specs["telephone"].enabled
    assert specs["telephone"].kind == "phone" and specs["date_relance"].kind == "date"
    schema = copy.deepcopy(SAMPLE_SCHEMA)
    del schema["Téléphone"], schema["Date de relance"]  # the database has no such property
    columns = resolve(mapping, schema)
    assert [c.column for c in columns] == [c.column for c in DEFAULT_COLUMNS]
    by_column = {c.column: c for c in columns}
    for column in ("telephone", "date_relance"):
        disabled = by_column[column]
        assert not disabled.enabled
        assert (disabled.property_id, disabled.property_name, disabled.notion_type) == (None,) * 3
    assert by_column["telephone"].arrow_type == pa.string()
    assert by_column["date_relance"].arrow_type == pa.date32()
    assert by_column["email"].enabled and by_column["email"].property_id == "%3EaNk"
    bound = bindings(mapping, columns)
    assert "telephone" not in bound and "date_relance" not in bound
    assert bound["email"] == ("Email", "%3EaNk")
    # Resolving again with the stored bindings gives the same columns.
    assert resolve(mapping, schema, bound) == columns


def test_disabling_or_enabling_a_column_changes_the_fingerprint(tmp_path):
    default = load_property_map().fingerprint()
    disabled = load(tmp_path, "[columns]\ntelephone = false\n").fingerprint()
    explicit = load(tmp_path, '[columns]\ntelephone = "Téléphone"\n').fingerprint()
    as_table = load(tmp_path, "[columns.telephone]\nproperty = false\n").fingerprint()
    assert disabled != default
    assert explicit == default  # the same map written out
    assert as_table == disabled


@pytest.mark.parametrize("column", ["email", "telephone", "statut", *EVENT_COLUMNS])
def test_every_contract_column_but_nom_may_be_disabled(tmp_path, column):
    mapping = load(tmp_path, f"[columns]\n{column} = false\n")
    assert [c.column for c in mapping.columns if not c.enabled] == [column]


def test_nom_cannot_be_disabled(tmp_path):
    with pytest.raises(PropertyMapError, match=r"'nom' is required and cannot be disabled"):
        load(tmp_path, "[columns]\nnom = false\n")


def test_a_column_of_your_own_cannot_be_disabled_but_removed(tmp_path):
    with pytest.raises(PropertyMapError, match=r"'entreprise' is not a column of the leads"):
        load(tmp_path, "[columns]\nentreprise = false\n")
    with pytest.raises(PropertyMapError, match=r"did you mean 'telephone'\?"):
        load(tmp_path, "[columns]\ntelephon = false\n")


# -- errors of a map that does not fit the data source -----------------------------------------


def test_a_missing_property_names_column_property_and_the_way_out(tmp_path):
    schema = schema_of(("Name", "title", "title"), ("Phone", "ph1", "phone_number"))
    mapping = load(tmp_path, '[columns]\nnom = "Name"\nemail = false\nstatut = false\n')
    with pytest.raises(PropertyMapError) as error:
        resolve(mapping, schema)
    message = str(error.value)
    assert "Column 'telephone' maps property 'Téléphone'" in message
    assert "does not have" in message
    assert "'Name' (title), 'Phone' (phone_number)" in message  # the available properties
    assert "kind 'phone' accepts" in message and "'Phone'" in message
    assert "leads-pipeline map suggest" in message
    assert "`telephone = false`" in message


def test_nom_on_a_schema_without_a_title_says_so(tmp_path):
    schema = schema_of(("Notes", "n1", "rich_text"))
    disable = "\n".join(f"{c} = false" for c in ("email", "telephone", "statut", *EVENT_COLUMNS))
    mapping = load(tmp_path, f"[columns]\n{disable}\n")
    with pytest.raises(PropertyMapError) as error:
        resolve(mapping, schema)
    message = str(error.value)
    assert "Column 'nom' maps property 'Nom'" in message
    assert "has no title property at all" in message
    assert "'nom' is required and cannot be disabled" in message
    assert "'Notes'" in message  # a rich_text property kind 'text' would read


def test_nom_missing_points_at_the_title_property(tmp_path):
    schema = schema_of(("Name", "title", "title"))
    disable = "\n".join(f"{c} = false" for c in ("email", "telephone", "statut", *EVENT_COLUMNS))
    with pytest.raises(
        PropertyMapError, match=r"Its title property is 'Name': map it with `nom = \"Name\"`"
    ):
        resolve(load(tmp_path, f"[columns]\n{disable}\n"), schema)


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        (
            '[columns]\ndate_relance = "Email"\n',
            [
                "Column 'date_relance' maps property 'Email', of type 'email'",
                "kind 'date' accepts date, formula (date result), rollup (date result), "
                "created_time, last_edited_time",
                "accepted by kinds 'text', 'email'",
                "'date_relance' is an event column",
                "`date_relance = false`",
                "leads-pipeline map suggest",
            ],
        ),
        (
            '[columns]\nstatut = "Entreprise"\n',
            [
                "Column 'statut' maps property 'Entreprise', of type 'rich_text'",
                "kind 'option' accepts status, select, formula (string result)",
                "accepted by kinds 'text', 'email', 'phone'",
                'set `kind = "text"` under [columns.statut]',
            ],
        ),
        (
            '[columns.score]\nproperty = "Tags"\nkind = "number"\n',
            [
                "Column 'score' maps property 'Tags', of type 'multi_select'",
                "kind 'number' accepts number",
                "No kind accepts type 'multi_select'",
            ],
        ),
    ],
)
def test_a_property_of_a_wrong_type_names_its_type_and_the_kinds_accepting_it(
    tmp_path, toml, expected
):
    with pytest.raises(PropertyMapError) as error:
        resolve(load(tmp_path, toml), SAMPLE_SCHEMA)
    for text in expected:
        assert text in str(error.value)


def test_a_wrong_map_fails_before_any_listing(notion_env, tmp_path):
    fake = notion_env
    fake.seed_sample(5)
    map_path = write_map(tmp_path, '[columns]\ndate_relance = "Email"\n')
    resources = {
        "source": notion_source(fake),
        "lake": LakeResource(uri=str(tmp_path / "lake")),
        "warehouse": WarehouseResource(path=str(tmp_path / "warehouse.duckdb")),
        "property_map": PropertyMapResource(path=str(map_path)),
    }
    fake.reset_counts()
    with pytest.raises(PropertyMapError, match="'Email', of type 'email'"):
        dg.materialize(ingestion.ASSETS, resources=resources)
    assert fake.counts["data_source"] >= 1 and fake.counts["query"] == 0
    assert not (tmp_path / "lake" / "raw_notion_leads").exists()


def test_a_database_without_email_phone_or_status_syncs_with_them_disabled(notion_env, tmp_path):
    """The issue's first "done when": a real sync through the fake server, columns left out."""
    fake = notion_env
    database_id = "0d0d0000-0000-4000-8000-000000000001"
    data_source_id = "0e0e0000-0000-4000-8000-000000000001"
    schema = schema_of(
        ("Name", "title", "title"),
        ("Contacted on", "c0n", "date"),
        ("Created", "cr3", "created_time"),
        ("Phone number", "ph0", "rich_text"),  # not mapped: kept in extra_properties
    )
    fake.add_database(database_id, data_sources=[(data_source_id, "Leads", schema)])
    pages = []
    for index, (contacted, created) in enumerate(
        [
            ("2025-01-05T23:30:00.000-05:00", "2025-01-01T08:00:00.000Z"),
            (None, "2025-02-03T23:59:00.000Z"),
        ]
    ):
        page_id = f"00000000-0000-4000-8000-00000000000{index}"
        pages.append(
            {
                "object": "page",
                "id": page_id,
                "created_time": created,
                "last_edited_time": "2025-03-01T10:00:00.000Z",
                "in_trash": False,
                "url": f"https://www.notion.so/{page_id.replace('-', '')}",
                "properties": {
                    "Name": {"id": "title", "type": "title", "title": rich(f"Lead {index}")},
                    "Contacted on": {"id": "c0n", "type": "date", "date": date_value(contacted)},
                    "Created": {"id": "cr3", "type": "created_time", "created_time": created},
                    "Phone number": {"id": "ph0", "type": "rich_text", "rich_text": rich("06")},
                },
            }
        )
    fake.seed(pages, data_source_id)
    map_path = write_map(
        tmp_path,
        '[columns]\nnom = "Name"\nemail = false\ntelephone = false\nstatut = false\n'
        'date_prise_contact = "Contacted on"\ndate_reponse_prospect = false\n'
        "date_appel_propose = false\ndate_appel_booke = false\n"
        '[columns.date_relance]\nproperty = "Created"\n',
    )
    lake = tmp_path / "lake"
    resources = {
        "source": notion_source(fake, database_id=database_id),
        "lake": LakeResource(uri=str(lake)),
        "warehouse": WarehouseResource(path=str(tmp_path / "warehouse.duckdb")),
        "property_map": PropertyMapResource(path=str(map_path)),
    }
    defs = dg.Definitions(
        assets=[*ingestion.ASSETS, *analytics.ASSETS], jobs=[sync_leads], resources=resources
    )
    assert defs.resolve_job_def("sync_leads").execute_in_process().success
    leads = DeltaTable(str(lake / "leads")).to_pyarrow_table()
    assert leads.schema.field("telephone").type == pa.string()
    assert leads.schema.field("date_appel_booke").type == pa.date32()
    rows = {row["nom"]: row for row in leads.to_pylist()}
    assert set(rows) == {"Lead 0", "Lead 1"}
    for row in rows.values():
        assert row["email"] is row["telephone"] is row["statut"] is None
        assert row["date_reponse_prospect"] is row["date_appel_booke"] is None
    assert rows["Lead 0"]["date_prise_contact"] == dt.date(2025, 1, 5)  # local date, not UTC's
    assert rows["Lead 1"]["date_prise_contact"] is None
    assert rows["Lead 0"]["date_relance"] == dt.date(2025, 1, 1)
    assert rows["Lead 1"]["date_relance"] == dt.date(2025, 2, 3)
    assert DeltaTable(str(lake / "lead_quality_issues")).to_pyarrow_table().num_rows == 0


# -- the TOML file ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            '[columns.email]\nproperty = "Email"\nknd = "email"\n',
            r"unknown key 'knd' \(did you mean 'kind'\?\)",
        ),
        (
            '[columns.email]\nproprety = "Email"\n',
            r"unknown key 'proprety' \(did you mean 'property'\?\)",
        ),
        ('[colums]\nnom = "Nom"\n', r"unknown table or key 'colums' \(did you mean 'columns'\?\)"),
        ('title = "Leads"\n[columns]\n', r"unknown table or key 'title'"),
        ('[columns.__stale]\nproperty = "Score"\nkind = "number"\n', r"'__stale' is reserved"),
        ('[columns._x]\nproperty = "Score"\nkind = "number"\n', r"'_x' is reserved"),
        ('[columns.url]\nproperty = "Score"\nkind = "number"\n', r"'url' is reserved"),
        ('[columns.extra_properties]\nproperty = "Score"\nkind = "number"\n', r"reserved"),
        ('[columns.version]\nproperty = "Score"\nkind = "number"\n', r"reserved by lead_history"),
        ('[columns.Score]\nproperty = "Score"\nkind = "number"\n', r"'Score' must be a lower-case"),
        ('[columns."2x"]\nproperty = "Score"\nkind = "number"\n', r"'2x' must be a lower-case"),
        ('[columns."a-b"]\nproperty = "Score"\nkind = "number"\n', r"'a-b' must be a lower-case"),
        (
            '[columns.score]\nproperty = "Score"\nkind = "numbr"\n',
            r"unknown kind 'numbr' \(did you mean 'number'\?\)",
        ),
        ('[columns.score]\nproperty = "Score"\n', r"new column 'score' needs both"),
        ('[columns]\nscore = "Score"\n', r"new column 'score' needs a table"),
        ('[columns]\nemail = ""\n', r"'email' names no property; .*`email = false`"),
        ("[columns]\nemail = true\n", r"'email' must be a property name \(string\), false"),
        ("[columns]\nemail = 3\n", r"'email' must be a property name"),
        (
            '[columns.date_relance]\nproperty = "Score"\nkind = "number"\n',
            r"event column 'date_relance' must have kind 'date'",
        ),
        ('[columns.statut]\nkind = "number"\n', r"'statut' of the leads contract holds string"),
        ('[columns.email]\nproperty = 3\nkind = "email"\n', r"needs string 'property' and 'kind'"),
    ],
)
def test_a_bad_file_is_rejected_naming_the_variable_the_file_and_the_culprit(
    tmp_path, toml, message
):
    path = write_map(tmp_path, toml)
    with pytest.raises(PropertyMapError, match=message) as error:
        load_property_map(path)
    assert "LEADS_PROPERTY_MAP" in str(error.value) and str(path) in str(error.value)


def test_a_file_that_is_not_utf8_names_the_variable_and_the_byte(tmp_path):
    text = '[columns]\nnom = "Pr\xe9nom"\n'.encode("latin-1")
    path = write_map(tmp_path, text)
    with pytest.raises(PropertyMapError) as error:
        load_property_map(path)
    message = str(error.value)
    position = text.index(b"\xe9")
    assert "LEADS_PROPERTY_MAP" in message and str(path) in message
    assert f"byte {position} (0xe9, line 2)" in message
    assert "not UTF-8" in message


def test_a_utf8_file_with_a_byte_order_mark_is_read(tmp_path):
    mapping = load(tmp_path, '\ufeff[columns]\nnom = "Prénom"\n'.encode())
    assert next(c for c in mapping.columns if c.column == "nom").property == "Prénom"


def test_a_column_table_may_change_only_the_kind_of_a_contract_column(tmp_path):
    mapping = load(tmp_path, '[columns.statut]\nkind = "text"\n')
    statut = next(c for c in mapping.columns if c.column == "statut")
    assert (statut.property, statut.kind) == ("Statut", "text")
    schema = copy.deepcopy(SAMPLE_SCHEMA)
    schema["Statut"]["type"] = "rich_text"
    assert {c.column: c for c in resolve(mapping, schema)}["statut"].notion_type == "rich_text"


def test_unreadable_and_invalid_toml_name_the_variable(tmp_path):
    with pytest.raises(PropertyMapError, match="LEADS_PROPERTY_MAP") as error:
        load_property_map(tmp_path / "absent.toml")
    assert "absent.toml" in str(error.value)
    with pytest.raises(PropertyMapError, match=r"LEADS_PROPERTY_MAP.*not valid TOML"):
        load(tmp_path, "[columns\n")
    with pytest.raises(PropertyMapError, match=r"LEADS_PROPERTY_MAP.*cannot be read"):
        load_property_map(tmp_path)  # a directory
