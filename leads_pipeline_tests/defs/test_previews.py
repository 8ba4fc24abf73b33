"""Materialization metadata without customer data, and actionable quality issues.

Previews of ``leads`` and ``raw_notion_leads`` (and every other entry of every materialization)
hold no name, email or phone of the sample's pages unless ``LEADS_FULL_PREVIEWS`` is on;
``lead_quality_issues`` reports counts per column and reason and the latest issues with each
lead's Notion link.
"""

import json
from collections import Counter

import dagster as dg
import pytest

from leads_pipeline.defs.assets import ingestion
from leads_pipeline.defs.metadata import mask_email, mask_name, mask_phone, notion_link
from leads_pipeline.defs.resources import build_resources
from leads_pipeline.settings import ConfigurationError, full_previews_enabled, load_settings
from leads_pipeline.sources.sample_data import cached_pages
from leads_pipeline_tests.lake_helpers import Workspace, metadata_of
from leads_pipeline_tests.pages import date_value, make_page, rich

CONTACT = "Date de prise de contact"
FOLLOW_UP = "Date de relance"


def _entry_text(entry: dg.MetadataValue) -> str:
    """Everything an entry shows, non-ASCII characters kept as they are."""
    value = entry.value
    if isinstance(entry, dg.TableMetadataValue):
        return json.dumps([record.data for record in value.records], ensure_ascii=False)
    if isinstance(entry, dg.JsonMetadataValue):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _metadata_text(result) -> dict[str, str]:
    """Asset → the text of all its materialization metadata."""
    return {
        event.asset_key.to_user_string(): "\n".join(
            f"{key}: {_entry_text(entry)}"
            for key, entry in event.event_specific_data.materialization.metadata.items()
        ).casefold()
        for event in result.get_asset_materialization_events()
    }


def _sample_customer_data(pages) -> set[str]:
    """Full names, emails, phones and title-bearing URLs of the pages, casefolded.

    Values under 5 characters (``n/a`` as an email) are left out: they name nobody.
    """
    found = set()
    for page in pages:
        properties = page["properties"]
        name = "".join(segment["plain_text"] for segment in properties["Nom"]["title"]).strip()
        values = [name, properties["Email"]["email"], properties["Téléphone"]["phone_number"]]
        if name:
            values.append(page["url"])  # Notion puts the title in the page's URL
        found.update(v.casefold() for v in values if v and len(v) >= 5)
    return found


@pytest.fixture(scope="module")
def sample_pages():
    pages = cached_pages(2000, 42)  # what SampleLeadsSource() serves
    return pages


def _materialize_sample(sample_resources):
    result = dg.materialize(ingestion.ASSETS, resources=sample_resources)
    assert result.success
    return result


def test_no_customer_data_in_any_materialization(sample_resources, sample_pages, monkeypatch):
    monkeypatch.delenv("LEADS_FULL_PREVIEWS", raising=False)
    texts = _metadata_text(_materialize_sample(sample_resources))
    assert {"raw_notion_leads", "leads", "lead_quality_issues"} <= set(texts)
    secrets = _sample_customer_data(sample_pages)
    assert len(secrets) > 4000, "the sample should hold names, emails and phones"
    for asset, text in texts.items():
        leaked = sorted(secret for secret in secrets if secret in text)
        assert not leaked, f"{asset}'s metadata shows customer data: {leaked[:5]}"
        # The column schema names the column; no entry shows its contents.
        without_schema = "\n".join(
            line for line in text.splitlines() if not line.startswith("dagster/column_schema: ")
        )
        assert "properties_json" not in without_schema, asset
    # The previews still show the leads: their ids and statuses, masked contact details.
    leads_preview = texts["leads"]
    ids = [page["id"] for page in sample_pages]
    assert sum(page_id in leads_preview for page_id in ids) == 10
    assert "***@" in leads_preview and "** ** **" in leads_preview
    statuses = {page["properties"]["Statut"]["status"]["name"].casefold() for page in sample_pages}
    assert any(status in leads_preview for status in statuses)


def test_full_previews_show_customer_data(sample_resources, sample_pages, lake_uri):
    # As build_resources sets it from LEADS_FULL_PREVIEWS=true.
    lake = build_resources(
        load_settings({"LEADS_FULL_PREVIEWS": "true", "LEADS_LAKE_URI": lake_uri})
    )["lake"]
    assert lake.full_previews is True
    texts = _metadata_text(_materialize_sample({**sample_resources, "lake": lake}))
    secrets = _sample_customer_data(sample_pages)
    shown = [secret for secret in secrets if secret in texts["leads"]]
    # Ten leads previewed: their names, emails, phones and URLs, minus the empty ones.
    assert len(shown) >= 20
    emails = {p["properties"]["Email"]["email"] for p in sample_pages} - {None}
    issues = texts["lead_quality_issues"]
    assert any(email.casefold() in issues for email in emails if len(email) >= 5)


def test_full_previews_setting():
    assert full_previews_enabled({}) is False
    assert load_settings({}).full_previews is False
    assert load_settings({"LEADS_FULL_PREVIEWS": " Yes "}).full_previews is True
    assert full_previews_enabled({"LEADS_FULL_PREVIEWS": "0"}) is False
    with pytest.raises(ConfigurationError, match="LEADS_FULL_PREVIEWS='maybe'"):
        load_settings({"LEADS_FULL_PREVIEWS": "maybe"})


def test_masks():
    assert mask_email("jean.dupont@exemple.fr") == "j***@exemple.fr"
    assert mask_email("jean.dupont.gmail.com") == "j***"
    assert mask_phone("+33 6 12 34 56 78") == "+33 6 ** ** ** 78"
    assert mask_phone("0612345678") == "061*****78"
    assert mask_phone("1234") == "**34"
    assert mask_name("Jean DUPONT 🚀") == "J. D. 🚀."
    assert mask_name("") == "" and mask_email(None) is None
    hex_id = "2b5d57169c0f454b98544c3a728adc3d"
    assert notion_link(f"https://www.notion.so/jean-dupont-{hex_id}") == (
        f"https://www.notion.so/{hex_id}"
    )
    assert notion_link(f"https://www.notion.so/acme/Jean-{hex_id}?pvs=4") == (
        f"https://www.notion.so/{hex_id}"
    )
    assert notion_link("https://example.com/no-id") == "https://example.com/no-id"


# -- lead_quality_issues ------------------------------------------------------------------------

EMAIL = ("email", "not a valid email address")
DATE_CONTACT = ("date_prise_contact", "not an ISO 8601 date")
DATE_FOLLOW_UP = ("date_relance", "not an ISO 8601 date")
STATUS = ("statut", "property has type rich_text, expected status")


def _bad_pages() -> tuple[list[dict], dict[tuple[str, str], str]]:
    """Pages with crafted bad values, and (page id, column) → (reason, raw text) expected."""
    pages, expected = [], {}

    def add(page, *problems):
        pages.append(page)
        for (column, reason), raw in problems:
            expected[(page["id"], column)] = (reason, raw)

    for number, email in enumerate(["pas-un-email", "camille@", "n/a", "jo.dupont.gmail.com"]):
        add(
            make_page(email=email, edited=f"2025-03-01T10:0{number}:00.000Z"),
            (EMAIL, email),
        )
    add(make_page(dates={CONTACT: date_value("2025-13-45")}), (DATE_CONTACT, "2025-13-45"))
    add(make_page(dates={FOLLOW_UP: date_value("hier")}), (DATE_FOLLOW_UP, "hier"))
    add(
        make_page(email="zoe@", dates={CONTACT: date_value("31/02/2025")}),
        (EMAIL, "zoe@"),
        (DATE_CONTACT, "31/02/2025"),
    )
    add(
        make_page(extra={"Statut": {"type": "rich_text", "rich_text": rich("En cours")}}),
        (STATUS, "En cours"),
    )
    for _ in range(3):  # clean leads: no issue
        pages.append(make_page(email="ok@exemple.fr", dates={CONTACT: date_value("2025-01-02")}))
    return pages, expected


def _records(entry: dg.TableMetadataValue) -> list[dict]:
    return [record.data for record in entry.records]


def test_issue_counts_and_latest_issues(tmp_path, monkeypatch):
    monkeypatch.delenv("LEADS_FULL_PREVIEWS", raising=False)
    workspace = Workspace(tmp_path)
    pages, expected = _bad_pages()
    workspace.publish(pages)
    result = workspace.sync(assets=ingestion.ASSETS)
    metadata = metadata_of(result, "lead_quality_issues")

    per_column = Counter(column for _, column in expected)
    per_reason = Counter(reason for reason, _ in expected.values())
    per_pair = Counter((column, reason) for (_, column), (reason, _) in expected.items())
    assert {r["column"]: r["issues"] for r in _records(metadata["issues_per_column"])} == dict(
        per_column
    )
    assert {r["reason"]: r["issues"] for r in _records(metadata["issues_per_reason"])} == dict(
        per_reason
    )
    pairs = _records(metadata["issues_per_column_and_reason"])
    assert {(r["column"], r["reason"]): r["issues"] for r in pairs} == dict(per_pair)
    assert [r["issues"] for r in pairs] == sorted((r["issues"] for r in pairs), reverse=True)
    assert metadata["dagster/row_count"].value == len(expected)

    latest = metadata["latest_issues"]
    assert [c.name for c in latest.schema.columns] == [
        "detected_at",
        "page_id",
        "notion_url",
        "column",
        "reason",
        "raw_value",
    ]
    rows = _records(latest)
    assert {(r["page_id"], r["column"]) for r in rows} == set(expected)
    url_of = {page["id"]: page["url"] for page in pages}
    for row in rows:
        reason, raw = expected[(row["page_id"], row["column"])]
        assert row["notion_url"] == url_of[row["page_id"]]
        assert row["reason"] == reason
        if row["column"] == "email":  # customer data: masked
            local, at, domain = raw.partition("@")
            assert row["raw_value"] == f"{local[0]}***{at}{domain}"
        elif row["column"] == "statut":  # the property's JSON, cut at 60 characters
            assert row["raw_value"].startswith("{") and '"type":"rich_text"' in row["raw_value"]
            assert len(row["raw_value"]) == 60 and row["raw_value"].endswith("…")
        else:
            assert raw in row["raw_value"]
    # The markdown preview lists the same issues, with the links.
    assert all(url_of[row["page_id"]] in metadata["preview"].value for row in rows)


def test_latest_issues_are_the_newest_twenty(tmp_path):
    workspace = Workspace(tmp_path)
    first = [make_page(email=f"client{n}@") for n in range(25)]
    workspace.publish(first)
    workspace.sync(assets=ingestion.ASSETS)
    newest = make_page(email="dernier@", edited="2025-04-01T10:00:00.000Z")
    workspace.publish([*first, newest])
    metadata = metadata_of(workspace.sync(assets=ingestion.ASSETS), "lead_quality_issues")

    rows = _records(metadata["latest_issues"])
    assert len(rows) == 20
    assert rows[0]["page_id"] == newest["id"]  # detected by the second sync
    assert [r["detected_at"] for r in rows] == sorted(
        (r["detected_at"] for r in rows), reverse=True
    )
    assert {r["issues"] for r in _records(metadata["issues_per_column"])} == {26}
