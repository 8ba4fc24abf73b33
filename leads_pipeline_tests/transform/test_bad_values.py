"""Bad pages and bad values (issue 11): every one ends as NULL values plus a quality issue.

Nothing a page in ``raw_notion_leads`` holds may fail the parse: properties that are not a JSON
object (or not JSON), values of the wrong JSON type, impossible datetimes, invalid Unicode. Each
case goes through the real ``parse_pages`` (DuckDB); the expected rows are written by hand. The
last tests run the ingestion assets with ``dagster.materialize`` on a snapshot source.
"""

from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa
import pytest

from leads_pipeline.sources.sample_data import SAMPLE_SCHEMA
from leads_pipeline.storage.raw_store import pages_to_raw
from leads_pipeline.tables import EVENT_COLUMNS
from leads_pipeline.transform.parsing import KINDS, parse_pages
from leads_pipeline.transform.property_map import accepted_types, load_property_map, resolve
from leads_pipeline_tests.lake_helpers import Workspace
from leads_pipeline_tests.pages import date_value, make_page, rich

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
CREATED = dt.datetime(2025, 2, 1, 9, tzinfo=dt.UTC)  # make_page's created_time
EDITED = dt.datetime(2025, 3, 1, 10, tzinfo=dt.UTC)  # make_page's last_edited_time
CONTACT = "Date de prise de contact"
RELANCE = "Date de relance"
MAPPED = ("nom", "email", "telephone", "statut", *EVENT_COLUMNS)

NOT_AN_OBJECT = "page properties are not a JSON object"
INVALID_UNICODE = "page properties hold invalid Unicode (replaced by U+FFFD)"
NOT_A_DATE = "not an ISO 8601 date"


def issue_rows(result) -> list[tuple]:
    return [
        (i["page_id"], i["column"], i["raw_value"], i["reason"]) for i in result.issues.to_pylist()
    ]


def parse_raw(raw: pa.Table, schema=SAMPLE_SCHEMA, columns=None):
    columns = columns or resolve(load_property_map(), schema)
    result = parse_pages(raw, columns, schema, NOW)
    # Whatever the input, what comes out is valid UTF-8 (a Delta write would refuse it otherwise).
    result.leads.validate(full=True)
    result.issues.validate(full=True)
    return result


def with_properties_json(raw: pa.Table, texts: list[str | bytes | None]) -> pa.Table:
    """``raw`` with its ``properties_json`` replaced by these texts, bytes kept as they are.

    Bytes that are not UTF-8 cannot come from ``pages_to_raw``; they stand for whatever another
    writer (or a damaged file) could leave in the column.
    """
    data = [t.encode() if isinstance(t, str) else t for t in texts]
    column = pa.array(data, pa.binary()).view(pa.string())
    return raw.set_column(raw.schema.get_field_index("properties_json"), "properties_json", column)


def empty_lead(page_id: str) -> dict:
    """The lead of a page whose properties cannot be read: metadata kept, nothing else."""
    return {
        "id": page_id,
        **dict.fromkeys(MAPPED),
        "created_time": CREATED,
        "last_edited_time": EDITED,
        "url": f"https://www.notion.so/{page_id}",
        "extra_properties": "{}",
    }


# -- pages whose properties are not a JSON object ----------------------------------------------


@pytest.mark.parametrize(
    ("properties", "text"),
    [
        ("garbage", '"garbage"'),
        ([1, 2, 3], "[1,2,3]"),
        (42, "42"),
        (True, "true"),
    ],
    ids=["string", "array", "number", "boolean"],
)
def test_properties_of_another_json_type_give_an_empty_lead_and_one_issue(properties, text):
    page = make_page("p1")
    page["properties"] = properties
    result = parse_raw(pages_to_raw([page], NOW))
    assert result.leads.to_pylist() == [empty_lead("p1")]
    assert issue_rows(result) == [("p1", "properties", text, NOT_AN_OBJECT)]
    assert result.issues["detected_at"].to_pylist() == [NOW]


@pytest.mark.parametrize(
    "text",
    [
        "null",
        '{"Nom": {"type": "title", ',  # cut short
        "<html><body>502 Bad Gateway</body></html>",
        "",
        '{"Nom": 1} trailing',
    ],
    ids=["null", "truncated", "html", "empty", "trailing-text"],
)
def test_properties_that_are_null_or_not_json_give_an_empty_lead_and_one_issue(text):
    raw = with_properties_json(pages_to_raw([make_page("p1")], NOW), [text])
    result = parse_raw(raw)
    assert result.leads.to_pylist() == [empty_lead("p1")]
    assert issue_rows(result) == [("p1", "properties", text, NOT_AN_OBJECT)]


def test_a_long_unreadable_text_is_shown_cut_to_200_characters():
    text = json.dumps("x" * 500)  # a JSON string, 502 characters
    raw = with_properties_json(pages_to_raw([make_page("p1")], NOW), [text])
    (issue,) = issue_rows(parse_raw(raw))
    assert issue == ("p1", "properties", '"' + "x" * 198 + "…", NOT_AN_OBJECT)
    assert len(issue[2]) == 200


def test_unreadable_pages_do_not_disturb_the_others_in_their_batch():
    good = [
        make_page(
            f"g{i}",
            nom=rich(f"Lead {i}"),
            email=f"lead{i}@exemple.fr",
            dates={CONTACT: date_value(f"2025-01-0{i + 1}")},
        )
        for i in range(3)
    ]
    bad = [make_page(f"b{i}") for i in range(3)]
    raw = pages_to_raw([good[0], bad[0], good[1], bad[1], bad[2], good[2]], NOW)
    texts = raw["properties_json"].to_pylist()
    texts[1] = "[]"  # valid JSON, not an object
    texts[3] = "{not json"  # DuckDB fails a whole statement on it: set aside first
    texts[4] = "null"
    result = parse_raw(with_properties_json(raw, texts))
    leads = {lead["id"]: lead for lead in result.leads.to_pylist()}
    assert sorted(leads) == ["b0", "b1", "b2", "g0", "g1", "g2"]
    for i in range(3):
        assert leads[f"g{i}"]["nom"] == f"Lead {i}"
        assert leads[f"g{i}"]["email"] == f"lead{i}@exemple.fr"
        assert leads[f"g{i}"]["date_prise_contact"] == dt.date(2025, 1, i + 1)
        assert json.loads(leads[f"g{i}"]["extra_properties"])["Entreprise"] == "ACME"
        assert leads[f"b{i}"] == empty_lead(f"b{i}")
    assert sorted(issue_rows(result)) == [
        ("b0", "properties", "[]", NOT_AN_OBJECT),
        ("b1", "properties", "{not json", NOT_AN_OBJECT),
        ("b2", "properties", "null", NOT_AN_OBJECT),
    ]


# -- values of the wrong JSON type (the default map) -------------------------------------------


def sample_value(name: str, **value) -> dict:
    """A value of property ``name`` of the sample schema, with its id."""
    return {"id": SAMPLE_SCHEMA[name]["id"], **value}


#: (property, value as the page holds it, column, reason).
WRONG_VALUES = [
    ("Email", "jean@exemple.fr", "email", "property value is a string, expected an object"),
    ("Email", None, "email", "property value is null, expected an object"),
    ("Email", [1], "email", "property value is an array, expected an object"),
    ("Email", 7, "email", "property value is a number, expected an object"),
    (
        "Email",
        sample_value("Email", type=None, email="a@b.fr"),
        "email",
        "property value has no type",
    ),
    ("Email", sample_value("Email", email="a@b.fr"), "email", "property value has no type"),
    (
        "Nom",
        sample_value("Nom", type="title", title=42),
        "nom",
        "title is a number, expected an array",
    ),
    (
        "Nom",
        sample_value("Nom", type="title", title="Jean"),
        "nom",
        "title is a string, expected an array",
    ),
    (
        "Statut",
        sample_value("Statut", type="status", status="Répondu"),
        "statut",
        "status is a string, expected an object",
    ),
    (
        "Statut",
        sample_value("Statut", type="status", status={"id": "x", "name": 3}),
        "statut",
        "status.name is a number, expected a string",
    ),
    (
        CONTACT,
        sample_value(CONTACT, type="date", date="2025-01-05"),
        "date_prise_contact",
        "date is a string, expected an object",
    ),
    (
        CONTACT,
        sample_value(CONTACT, type="date", date=["2025-01-05"]),
        "date_prise_contact",
        "date is an array, expected an object",
    ),
    (
        "Téléphone",
        sample_value("Téléphone", type="phone_number", phone_number={"number": "+33 6 12"}),
        "telephone",
        "phone_number is an object, expected a string",
    ),
    (
        "Téléphone",
        sample_value("Téléphone", type="phone_number", phone_number=612345678),
        "telephone",
        "phone_number is a number, expected a string",
    ),
    (
        "Téléphone",
        sample_value("Téléphone", type="phone_number", phone_number=["06 12"]),
        "telephone",
        "phone_number is an array, expected a string",
    ),
    (
        "Email",
        sample_value("Email", type="email", email=True),
        "email",
        "email is a boolean, expected a string",
    ),
    (
        "Email",
        # As text this would even pass for an email address.
        sample_value("Email", type="email", email={"a": "x@y.fr"}),
        "email",
        "email is an object, expected a string",
    ),
    (
        # A type the column accepts but the schema does not give: looked at all the same.
        CONTACT,
        sample_value(CONTACT, type="formula", formula={"type": "date", "date": "2025-01-05"}),
        "date_prise_contact",
        "formula.date is a string, expected an object",
    ),
]


@pytest.mark.parametrize(
    ("name", "value", "column", "reason"),
    WRONG_VALUES,
    ids=[f"{column}-{reason}" for _, _, column, reason in WRONG_VALUES],
)
def test_a_value_of_the_wrong_json_type_is_null_and_an_issue_with_its_json(
    name, value, column, reason
):
    page = make_page("p1", dates={RELANCE: date_value("2025-03-04")})
    page["properties"][name] = value
    result = parse_raw(pages_to_raw([page], NOW))
    (lead,) = result.leads.to_pylist()
    assert lead[column] is None
    assert lead["date_relance"] == dt.date(2025, 3, 4)  # the lead still counts for its dates
    assert lead["nom"] == ("Jean Dupont" if column != "nom" else None)
    ((page_id, issue_column, raw_value, issue_reason),) = issue_rows(result)
    assert (page_id, issue_column, issue_reason) == ("p1", column, reason)
    assert json.loads(raw_value) == value  # the value's JSON, verbatim


@pytest.mark.parametrize(
    ("name", "value", "column", "expected"),
    [
        # Texts that look like a number, a boolean or JSON are looked up, and kept.
        ("Téléphone", "0612345678", "telephone", "0612345678"),
        ("Téléphone", "[33] 6 12 34", "telephone", "[33] 6 12 34"),
        ("Email", "0@exemple.fr", "email", "0@exemple.fr"),
        ("Statut", {"id": "x", "name": "true", "color": "red"}, "statut", "true"),
        ("Statut", {"id": "x", "name": "{brouillon}", "color": "red"}, "statut", "{brouillon}"),
        # Empty values are NULL without an issue.
        ("Statut", None, "statut", None),
        ("Email", None, "email", None),
        (CONTACT, None, "date_prise_contact", None),
        ("Nom", [], "nom", None),
    ],
)
def test_a_value_of_the_right_json_type_is_read_without_an_issue(name, value, column, expected):
    page = make_page("p1")
    notion_type = page["properties"][name]["type"]
    page["properties"][name][notion_type] = value
    result = parse_raw(pages_to_raw([page], NOW))
    (lead,) = result.leads.to_pylist()
    assert lead[column] == expected
    assert issue_rows(result) == []


def test_a_missing_property_is_null_without_an_issue():
    # A page stored before the property was added to the data source.
    page = make_page("p1", telephone="06 12 34 56 78")
    del page["properties"]["Téléphone"]
    result = parse_raw(pages_to_raw([page], NOW))
    (lead,) = result.leads.to_pylist()
    assert lead["telephone"] is None and lead["nom"] == "Jean Dupont"
    assert issue_rows(result) == []


# -- values of the wrong JSON type, every kind -------------------------------------------------

VALUE = "Valeur"
VALUE_ID = "vAl%3D"


def parse_one_value(tmp_path, kind: str, value: dict, schema_type: str | None = None):
    """Parses a page whose property ``Valeur`` feeds the column ``valeur`` of ``kind``."""
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
    result = parse_raw(pages_to_raw([page], NOW), schema, columns)
    (lead,) = result.leads.to_pylist()
    return lead, issue_rows(result)


def prop(notion_type: str, content) -> dict:
    return {"type": notion_type, notion_type: content}


#: (kind, property value, reason).
WRONG_BY_KIND = [
    ("number", prop("number", "beaucoup"), "number is a string, expected a number"),
    ("number", prop("number", "3"), "number is a string, expected a number"),
    ("number", prop("number", True), "number is a boolean, expected a number"),
    ("number", prop("number", {"value": 3}), "number is an object, expected a number"),
    ("checkbox", prop("checkbox", "yes"), "checkbox is a string, expected a boolean"),
    ("checkbox", prop("checkbox", 1), "checkbox is a number, expected a boolean"),
    ("checkbox", prop("checkbox", "true"), "checkbox is a string, expected a boolean"),
    ("references", prop("people", {"id": "u1"}), "people is an object, expected an array"),
    ("references", prop("relation", "r1"), "relation is a string, expected an array"),
    ("url", prop("url", 12), "url is a number, expected a string"),
    ("text", prop("rich_text", 5), "rich_text is a number, expected an array"),
    ("text", prop("unique_id", "LEAD-1"), "unique_id is a string, expected an object"),
    (
        "text",
        prop("formula", {"type": "string", "string": 7}),
        "formula.string is a number, expected a string",
    ),
    ("email", prop("rich_text", "x@y.fr"), "rich_text is a string, expected an array"),
    ("option", prop("select", "Chaud"), "select is a string, expected an object"),
    ("option", prop("select", {"name": False}), "select.name is a boolean, expected a string"),
    (
        "date",
        prop("rollup", {"type": "date", "date": "2025-01-01", "function": "latest_date"}),
        "rollup.date is a string, expected an object",
    ),
    (
        "date",
        prop("rollup", {"type": "array", "array": {"x": 1}, "function": "show_original"}),
        "rollup.array is an object, expected an array",
    ),
    (
        "date",
        prop("formula", {"type": "date", "date": 20250101}),
        "formula.date is a number, expected an object",
    ),
]


@pytest.mark.parametrize(
    ("kind", "value", "reason"),
    WRONG_BY_KIND,
    ids=[f"{kind}-{reason}" for kind, _, reason in WRONG_BY_KIND],
)
def test_every_kind_reports_a_value_of_the_wrong_json_type(tmp_path, kind, value, reason):
    lead, issues = parse_one_value(tmp_path, kind, value)
    assert lead["valeur"] is None
    assert [(i[1], i[3]) for i in issues] == [("valeur", reason)]
    assert json.loads(issues[0][2]) == {"id": VALUE_ID, **value}


#: The JSON type of each Notion type's content, as Python types of ``json.loads``.
JSON_TYPE_OF = {
    **dict.fromkeys(("title", "rich_text", "people", "relation"), (list,)),
    **dict.fromkeys(("email", "phone_number", "url", "created_time", "last_edited_time"), (str,)),
    "number": (int, float),
    "checkbox": (bool,),
    **dict.fromkeys(("select", "status", "date", "unique_id", "formula", "rollup"), (dict,)),
}
OTHER_JSON = [12345, "x", {"x": 1}, [1], True]
EVERY_WRONG_CONTENT = [
    (kind, notion_type, content)
    for kind in KINDS
    for notion_type in accepted_types(kind)
    for content in OTHER_JSON
    if type(content) not in JSON_TYPE_OF[notion_type]
]


def test_the_matrix_covers_every_accepted_type():
    assert {t for kind in KINDS for t in accepted_types(kind)} == set(JSON_TYPE_OF)


@pytest.mark.parametrize(
    ("kind", "notion_type", "content"),
    EVERY_WRONG_CONTENT,
    ids=[f"{k}-{t}-{type(c).__name__}" for k, t, c in EVERY_WRONG_CONTENT],
)
def test_no_kind_reads_content_of_another_json_type_silently(tmp_path, kind, notion_type, content):
    """Whatever the kind and the Notion type: NULL and one issue, never a silent NULL or text."""
    value = prop(notion_type, content)
    lead, issues = parse_one_value(tmp_path, kind, value)
    assert lead["valeur"] is None
    assert [(i[0], i[1]) for i in issues] == [("p1", "valeur")]
    if notion_type in ("created_time", "last_edited_time"):
        # A date's text is validated anyway: another JSON type shows as its JSON text.
        assert issues[0][2:] == (json.dumps(content, separators=(",", ":")), NOT_A_DATE)
    else:
        assert json.loads(issues[0][2]) == {"id": VALUE_ID, **value}


@pytest.mark.parametrize(
    ("segments", "reason"),
    [
        ([5], "title[0] is a number, expected an object"),
        (["Jean"], "title[0] is a string, expected an object"),
        ([{"plain_text": 5}], "title[0].plain_text is a number, expected a string"),
        ([{"plain_text": {"t": "Jean"}}], "title[0].plain_text is an object, expected a string"),
        ([{"text": {"content": "Jean"}}], None),  # a segment without plain_text: empty
    ],
)
def test_a_rich_text_of_other_things_than_segments_is_reported(segments, reason):
    page = make_page("p1")
    page["properties"]["Nom"]["title"] = segments
    result = parse_raw(pages_to_raw([page], NOW))
    assert [lead["nom"] for lead in result.leads.to_pylist()] == [None]
    expected = [] if reason is None else [("nom", reason)]
    assert [(i[1], i[3]) for i in issue_rows(result)] == expected


@pytest.mark.parametrize("title", ["2025", "[Urgent] Dupont", "true"])
def test_a_title_that_looks_like_json_is_read(title):
    result = parse_raw(pages_to_raw([make_page("p1", nom=rich(title, " bis"))], NOW))
    assert [lead["nom"] for lead in result.leads.to_pylist()] == [f"{title} bis"]
    assert issue_rows(result) == []


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        ("number", prop("number", 1), 1.0),
        ("number", prop("number", -2.5), -2.5),
        ("number", prop("number", 1e3), 1000.0),
        ("number", prop("number", None), None),
        ("checkbox", prop("checkbox", False), False),
        ("checkbox", prop("checkbox", True), True),
        ("checkbox", prop("checkbox", None), None),
        ("url", prop("url", "2025"), "2025"),
    ],
)
def test_values_of_the_right_json_type_are_read_by_every_kind(tmp_path, kind, value, expected):
    lead, issues = parse_one_value(tmp_path, kind, value)
    assert lead["valeur"] == expected
    assert issues == []


# -- datetimes ---------------------------------------------------------------------------------

INVALID_DATES = [
    "2025-01-01T25:61:00Z",  # hour 25, minute 61
    "2025-01-01T24:00:00Z",  # ISO 8601's end of day: not accepted (hour <= 23)
    "2025-01-01T23:60:00Z",
    "2025-01-01T23:59:61Z",
    "2025-01-01T23:59:99.000+01:00",
    "2025-02-30",
    "2025-02-29",  # 2025 is not a leap year
    "2025-13-01",
    "2025-00-10",
    "2025-01-00",
    "2025-01-32",
    "2025-04-31T10:00:00.000Z",
    "2025-01-01T10:00:00+14:30",  # offsets stop at +-14:00
    "2025-01-01T10:00:00-15:00",
    "2025-01-01T10:00:00+05:60",
    "2025-01-01T1:00:00Z",
    "2025-1-01",
    "2025-01-01T10",
]


@pytest.mark.parametrize("start", INVALID_DATES)
def test_an_impossible_date_or_time_is_null_and_an_issue(start):
    page = make_page("p1", dates={CONTACT: date_value(start), RELANCE: date_value("2025-03-04")})
    result = parse_raw(pages_to_raw([page], NOW))
    (lead,) = result.leads.to_pylist()
    assert lead["date_prise_contact"] is None
    assert lead["date_relance"] == dt.date(2025, 3, 4)
    assert issue_rows(result) == [("p1", "date_prise_contact", start, NOT_A_DATE)]


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        ("2024-02-29", dt.date(2024, 2, 29)),
        ("2025-12-31T23:59:59.999Z", dt.date(2025, 12, 31)),
        ("2016-12-31T23:59:60Z", dt.date(2016, 12, 31)),  # a leap second is tolerated
        ("2025-01-01T00:00:00+14:00", dt.date(2025, 1, 1)),
        ("2025-01-01T23:00:00-12:00", dt.date(2025, 1, 1)),
        ("2025-06-01T10:00:00+05:45", dt.date(2025, 6, 1)),
        ("2025-06-01T10:00:00+0530", dt.date(2025, 6, 1)),
        ("2025-06-01T10:00", dt.date(2025, 6, 1)),
        ("2025-06-01T10:00:00", dt.date(2025, 6, 1)),
    ],
)
def test_a_real_date_or_time_is_read(start, expected):
    result = parse_raw(pages_to_raw([make_page("p1", dates={CONTACT: date_value(start)})], NOW))
    (lead,) = result.leads.to_pylist()
    assert lead["date_prise_contact"] == expected
    assert issue_rows(result) == []


BAD_TIME = "2025-01-01T25:61:00Z"


@pytest.mark.parametrize(
    "value",
    [
        prop("date", date_value(BAD_TIME)),
        prop("formula", {"type": "date", "date": date_value(BAD_TIME)}),
        prop("rollup", {"type": "date", "date": date_value(BAD_TIME), "function": "latest_date"}),
        prop(
            "rollup",
            {"type": "array", "array": [prop("date", date_value(BAD_TIME))], "function": "x"},
        ),
        prop("created_time", BAD_TIME),
        prop("last_edited_time", BAD_TIME),
    ],
    ids=["date", "formula", "rollup-date", "rollup-array", "created_time", "last_edited_time"],
)
def test_every_date_source_validates_the_time(tmp_path, value):
    lead, issues = parse_one_value(tmp_path, "date", value)
    assert lead["valeur"] is None
    assert issues == [("p1", "valeur", BAD_TIME, NOT_A_DATE)]


# -- invalid Unicode ---------------------------------------------------------------------------

TITLE_ONLY = {"Nom": {"id": "title", "name": "Nom", "type": "title"}}


def title_only_columns(tmp_path):
    path = tmp_path / "map.toml"
    path.write_text(
        "[columns]\n"
        + "\n".join(f"{c} = false" for c in ("email", "telephone", "statut", *EVENT_COLUMNS))
        + "\n",
        encoding="utf-8",
    )
    return resolve(load_property_map(path), TITLE_ONLY)


def title_page(plain_text_json: str) -> str:
    """A page's properties: just its title, whose plain_text is this JSON string literal."""
    return '{"Nom":{"id":"title","type":"title","title":[{"plain_text":' + plain_text_json + "}]}}"


@pytest.mark.parametrize(
    ("literal", "nom"),
    [
        (r'"Zo\ud83d"', "Zo\ufffd"),  # a high surrogate alone
        (r'"Zo\udc00"', "Zo\ufffd"),  # a low surrogate alone
        (r'"\ude80\ud83d"', "\ufffd\ufffd"),  # a pair the wrong way round
        (r'"a\ud83d\ud83d\ude80"', "a\ufffd🚀"),  # a high one alone, then a real pair
    ],
)
def test_a_lone_surrogate_escape_is_replaced_and_reported(tmp_path, literal, nom):
    text = title_page(literal)
    raw = with_properties_json(pages_to_raw([make_page("p1")], NOW), [text])
    result = parse_raw(raw, TITLE_ONLY, title_only_columns(tmp_path))
    (lead,) = result.leads.to_pylist()
    assert lead["nom"] == nom
    assert lead["extra_properties"] == "{}"
    assert issue_rows(result) == [("p1", "properties", text, INVALID_UNICODE)]


@pytest.mark.parametrize(
    ("literal", "nom"),
    [
        (r'"\ud83d\ude80"', "🚀"),  # a real pair
        (r'"\\ud83d"', "\\ud83d"),  # an escaped backslash, then text
        (r'"\u00e9"', "é"),
    ],
)
def test_valid_unicode_escapes_are_read_without_an_issue(tmp_path, literal, nom):
    raw = with_properties_json(pages_to_raw([make_page("p1")], NOW), [title_page(literal)])
    result = parse_raw(raw, TITLE_ONLY, title_only_columns(tmp_path))
    assert [lead["nom"] for lead in result.leads.to_pylist()] == [nom]
    assert issue_rows(result) == []


@pytest.mark.parametrize(
    ("data", "nom"),
    [
        (b'"Zo\xff"', "Zo\ufffd"),
        (b'"Zo\xc3"', "Zo\ufffd"),  # a sequence cut short
        (b'"Zo\xed\xa0\xbd"', "Zo\ufffd\ufffd\ufffd"),  # a surrogate encoded as UTF-8 ("WTF-8")
    ],
)
def test_bytes_that_are_not_utf8_are_replaced_and_reported(tmp_path, data, nom):
    text = title_page("").encode()
    at = text.index(b"}]}}")
    stored = text[:at] + data + text[at:]
    raw = with_properties_json(pages_to_raw([make_page("p1")], NOW), [stored])
    result = parse_raw(raw, TITLE_ONLY, title_only_columns(tmp_path))
    assert [lead["nom"] for lead in result.leads.to_pylist()] == [nom]
    shown = title_page(json.dumps(nom, ensure_ascii=False))
    assert issue_rows(result) == [("p1", "properties", shown, INVALID_UNICODE)]


def test_invalid_unicode_in_text_that_is_not_json_is_reported_as_not_an_object():
    raw = with_properties_json(pages_to_raw([make_page("p1")], NOW), [b"{\xff oops"])
    result = parse_raw(raw)
    assert result.leads.to_pylist() == [empty_lead("p1")]
    assert issue_rows(result) == [("p1", "properties", "{\ufffd oops", NOT_AN_OBJECT)]


def test_invalid_unicode_in_a_long_page_is_shown_around_the_bad_spot():
    page = make_page("p1", nom=rich("Zoé"), dates={CONTACT: date_value("2025-01-05")})
    text = pages_to_raw([page], NOW)["properties_json"][0].as_py()
    assert len(text) > 1000 and text.count('"Zoé"') == 2  # text.content and plain_text
    broken = text.replace('"Zoé"', r'"Zo\ud83d"')
    result = parse_raw(with_properties_json(pages_to_raw([page], NOW), [broken]))
    (lead,) = result.leads.to_pylist()
    assert lead["nom"] == "Zo\ufffd"
    assert lead["date_prise_contact"] == dt.date(2025, 1, 5)  # the rest of the page is read
    assert json.loads(lead["extra_properties"])["Entreprise"] == "ACME"
    ((page_id, column, shown, reason),) = issue_rows(result)
    assert (page_id, column, reason) == ("p1", "properties", INVALID_UNICODE)
    assert r"Zo\ud83d" in shown and len(shown) == 200
    assert shown.startswith("…") and shown.endswith("…")
    assert shown[1:-1] in broken


def test_invalid_unicode_in_an_unmapped_property_is_replaced_in_the_extras():
    page = make_page("p1")
    raw = pages_to_raw([page], NOW)
    text = raw["properties_json"][0].as_py().replace('"ACME"', r'"AC\udfffME"')
    result = parse_raw(with_properties_json(raw, [text]))
    (lead,) = result.leads.to_pylist()
    assert json.loads(lead["extra_properties"])["Entreprise"] == "AC\ufffdME"
    assert lead["nom"] == "Jean Dupont"
    assert [(i[1], i[3]) for i in issue_rows(result)] == [("properties", INVALID_UNICODE)]


# -- through Dagster ---------------------------------------------------------------------------


def test_a_page_with_non_object_properties_never_fails_the_ingestion_assets(tmp_path):
    good = make_page(
        "11111111-0000-4000-8000-000000000001",
        nom=rich("Zoé"),
        dates={CONTACT: date_value("2025-01-06")},
    )
    garbage = make_page("22222222-0000-4000-8000-000000000002")
    garbage["properties"] = "garbage"
    listed = make_page("33333333-0000-4000-8000-000000000003")
    listed["properties"] = [1, 2, 3]
    phone = make_page("44444444-0000-4000-8000-000000000004", nom=rich("Paul"))
    phone["properties"]["Téléphone"]["phone_number"] = {"number": "+33 6 12 34 56 78"}
    ws = Workspace(tmp_path)
    ws.publish([good, garbage, listed, phone])

    ws.sync()  # asserts the run succeeded

    def check_tables():
        leads = ws.rows("leads")
        assert sorted(leads) == sorted(p["id"] for p in (good, garbage, listed, phone))
        assert leads[good["id"]]["nom"] == "Zoé"
        assert leads[good["id"]]["date_prise_contact"] == dt.date(2025, 1, 6)
        assert leads[phone["id"]]["nom"] == "Paul" and leads[phone["id"]]["telephone"] is None
        for page in (garbage, listed):
            lead = leads[page["id"]]
            assert {c: lead[c] for c in MAPPED} == dict.fromkeys(MAPPED)
            assert lead["extra_properties"] == "{}"
            assert lead["url"] == page["url"]
            assert lead["created_time"] == CREATED and lead["last_edited_time"] == EDITED
        issues = ws.table("lead_quality_issues").to_pyarrow_table().to_pylist()
        assert sorted((i["page_id"], i["column"], i["raw_value"], i["reason"]) for i in issues) == [
            (garbage["id"], "properties", '"garbage"', NOT_AN_OBJECT),
            (listed["id"], "properties", "[1,2,3]", NOT_AN_OBJECT),
            (
                phone["id"],
                "telephone",
                json.dumps(phone["properties"]["Téléphone"], separators=(",", ":")),
                "phone_number is an object, expected a string",
            ),
        ]

    check_tables()
    ws.sync()  # the same pages again: still succeeds, same tables
    check_tables()
    ws.sync(full=True)  # a full listing too
    check_tables()
    ws.sync(rebuild=True)  # and a rebuild of leads from raw
    check_tables()
