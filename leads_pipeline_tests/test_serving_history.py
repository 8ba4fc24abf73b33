"""LeadsAnalytics over ``lead_history``: a lead's versions, counts as of a moment, movement tables.

The syncs run the real jobs against the fake Notion server over HTTP; pages are crafted, then
edited (twice within one minute), trashed and restored at chosen edit times. The expectations are
computed here from the pages as they were at each moment (page snapshots kept by the test), never
from the pipeline's tables.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest
from deltalake import DeltaTable

from leads_pipeline.defs.assets import movement
from leads_pipeline.defs.maintenance import maintain_lake
from leads_pipeline.serving import (
    HistoryRangeError,
    InvalidLeadIdError,
    LeadNotFoundError,
    LeadsAnalytics,
    LeadVersion,
    PipelineNotRunError,
    parse_lead_id,
)
from leads_pipeline.storage.warehouse import Warehouse
from leads_pipeline.tables import COHORTS_TABLE, DURATIONS_TABLE, LEADS_TABLE, MONTH, WEEK
from leads_pipeline_tests.pages import date_value, make_page
from leads_pipeline_tests.transform.test_history import resources_for, run

#: Date property → the old API's event key, in the old API's order.
EVENTS = {
    "Date de prise de contact": "date_prise_contact",
    "Date de réponse du prospect": "date_reponse_prospect",
    "Date d'appel booké": "date_appel_booke",
    "Date d'appel proposé": "date_appel_propose",
    "Date de relance": "date_relance",
}
IDS = [f"{i:08x}-1111-4222-8333-{i:012x}" for i in range(1, 7)]


def crafted_pages() -> list[dict]:
    """Six leads with dates spread over February and March 2025 (ISO weeks 6 to 11)."""
    days = ["2025-02-03", "2025-02-09", "2025-02-10", "2025-02-24", "2025-03-02", "2025-03-10"]
    pages = []
    for i, page_id in enumerate(IDS):
        dates = {"Date de prise de contact": date_value(days[i])}
        if i % 2:
            dates["Date de relance"] = date_value(days[(i + 2) % 6])
        if i >= 3:
            dates["Date de réponse du prospect"] = date_value(days[i])
        pages.append(
            make_page(
                page_id,
                statut="Contacté" if i % 3 else "Nouveau",
                dates=dates,
                edited=f"2025-03-0{i + 1}T10:00:00.000Z",
            )
        )
    return pages


def weekly(pages: list[dict]) -> dict[str, tuple[int, ...]]:
    """The non-zero weekly counts of the old API computed from page objects."""
    counted: dict[str, Counter] = {}
    for page in pages:
        for name, key in EVENTS.items():
            value = page["properties"][name]["date"]
            if value is None:
                continue
            year, week, _ = date.fromisoformat(value["start"][:10]).isocalendar()
            counted.setdefault(f"{year}-W{week:02d}", Counter())[key] += 1
    return {label: tuple(c[k] for k in EVENTS.values()) for label, c in sorted(counted.items())}


def served(analytics: LeadsAnalytics, as_of) -> dict[str, tuple[int, ...]]:
    weeks = [w.model_dump() for w in analytics.count_date_by_week(as_of=as_of)]
    shown = {w.pop("semaine"): tuple(w.values()) for w in weeks}
    zeros = {label for label, values in shown.items() if not any(values)}
    return {label: values for label, values in shown.items() if label not in zeros}


def edit(fake, page_id: str, when: datetime, statut: str, **dates: str) -> dict:
    values = {"Statut": {"type": "status", "status": {"name": statut}}}
    for name, start in dates.items():
        values[name] = {"type": "date", "date": date_value(start)}
    return fake.edit(page_id, values, at=when)


def restore_at(fake, page_id: str, when: datetime) -> dict:
    """Takes a page out of the trash with a chosen edit time."""
    with fake.lock:
        source = fake.source_of(page_id)
        page = json.loads(json.dumps(source.pages[page_id]))
        page["in_trash"] = page["archived"] = False
        page["last_edited_time"] = when.strftime("%Y-%m-%dT%H:%M:00.000Z")
        source.store(page)
    return fake.page(page_id)


@pytest.fixture
def synced(notion_env, tmp_path):
    """Six syncs; returns the analytics, the resources and the moments with their pages."""
    fake = notion_env
    pages = crafted_pages()
    fake.seed(pages)
    resources = resources_for(fake, tmp_path)
    current = {p["id"]: p for p in pages}
    moments: list[tuple[datetime, list[dict]]] = []

    run(resources)
    moments.append((datetime.now(UTC), list(current.values())))  # before any change
    # Future edit times, so that every moment is known to fall between two edits.
    base = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(hours=1)
    fake.trash(IDS[4])
    run(resources, "refresh_leads")  # the deletion is noticed now
    gone = current.pop(IDS[4])
    moments.append((base - timedelta(minutes=1), list(current.values())))
    current[IDS[4]] = restore_at(fake, IDS[4], base)
    run(resources)
    moments.append((base + timedelta(minutes=5), list(current.values())))
    at10 = base + timedelta(minutes=10)
    before_edit = list(current.values())
    edit(fake, IDS[0], at10, "Appel booké", **{"Date d'appel booké": "2025-03-12"})
    run(resources)
    current[IDS[0]] = edit(fake, IDS[0], at10, "Gagné")  # the same minute, the next sync
    run(resources)
    moments.append((at10 - timedelta(microseconds=1), before_edit))
    moments.append((at10, list(current.values())))
    current[IDS[1]] = edit(
        fake,
        IDS[1],
        base + timedelta(minutes=20),
        "Répondu",
        **{"Date de réponse du prospect": "2025-02-12"},
    )
    run(resources)
    moments.append((base + timedelta(minutes=25), list(current.values())))
    analytics = LeadsAnalytics(
        warehouse_path=str(tmp_path / "warehouse.duckdb"), lake_uri=str(tmp_path / "lake")
    )
    return {
        "analytics": analytics,
        "resources": resources,
        "moments": moments,
        "base": base,
        "gone": gone,
        "root": tmp_path,
    }


def test_a_lead_history_by_id_or_url(synced):
    analytics, base = synced["analytics"], synced["base"]
    first = crafted_pages()[0]
    url = f"https://www.notion.so/acme/Jean-Dupont-{IDS[0].replace('-', '')}?pvs=4"
    versions = analytics.lead_history(url)
    assert all(isinstance(v, LeadVersion) for v in versions)
    assert [(v.version, v.change, v.statut) for v in versions] == [
        (1, "created", "Nouveau"),
        (2, "updated", "Appel booké"),
        (3, "updated", "Gagné"),
    ]
    created = datetime(2025, 3, 1, 10, tzinfo=UTC)
    assert [(v.valid_from, v.valid_to, v.is_current) for v in versions] == [
        (created, base + timedelta(minutes=10), False),
        (base + timedelta(minutes=10), base + timedelta(minutes=10), False),
        (base + timedelta(minutes=10), None, True),
    ]
    assert versions[1].changed_columns == ["statut", "date_appel_booke"]
    assert versions[2].changed_columns == ["statut"]
    dumped = versions[1].model_dump(mode="json")
    assert dumped["date_appel_booke"] == "2025-03-12" and dumped["id"] == IDS[0]
    assert list(dumped)[:7] == [
        "id",
        "version",
        "valid_from",
        "valid_to",
        "is_current",
        "change",
        "changed_columns",
    ]
    assert first["url"] == dumped["url"]
    # The same lead by its bare id, its dashed id (any case) and a database URL with ?p=.
    bare = IDS[0].replace("-", "")
    peek = f"https://www.notion.so/{'ab' * 16}?v={'cd' * 16}&p={bare}&pm=s"
    for other in (bare, IDS[0].upper(), peek):
        assert analytics.lead_history(other) == versions
    # Deleted, then restored at a chosen time.
    trashed = analytics.lead_history(IDS[4])
    assert [v.change for v in trashed] == ["created", "deleted", "restored"]
    assert trashed[1].valid_from == trashed[1].valid_to == trashed[0].valid_to
    assert trashed[2].valid_from == base and trashed[2].is_current


def test_counts_as_of_each_moment_are_the_pages_as_they_were(synced):
    analytics = synced["analytics"]
    for moment, pages in synced["moments"]:
        assert served(analytics, moment) == weekly(pages), moment
    # Strings and naive datetimes are UTC; the newest moment equals the published counts.
    moment, pages = synced["moments"][-1]
    assert served(analytics, moment.isoformat()) == weekly(pages)
    assert served(analytics, moment.replace(tzinfo=None)) == weekly(pages)
    now = datetime.now(UTC) + timedelta(days=1)
    assert analytics.count_date_by_week(as_of=now) == analytics.count_date_by_week()
    assert analytics.count_date_by_month(as_of=now) == analytics.count_date_by_month()
    uncached = LeadsAnalytics(
        warehouse_path=analytics.warehouse_path, lake_uri=analytics.lake_uri, cache=False
    )
    assert served(uncached, synced["moments"][1][0]) == weekly(synced["moments"][1][1])


def test_as_of_answers_after_maintain_lake_vacuumed_the_old_versions_of_leads(synced):
    analytics, root = synced["analytics"], synced["root"]
    result = maintain_lake.execute_in_process(
        resources={"lake": synced["resources"]["lake"]},
        run_config={
            "ops": {
                "compact_and_vacuum_lake": {
                    "config": {"retention_hours": 0, "enforce_retention_duration": False}
                }
            }
        },
    )
    assert result.success
    # Time travel to the first versions of leads is gone: their files were vacuumed.
    with pytest.raises(Exception):  # noqa: B017 (delta-rs raises OSError or DeltaError)
        DeltaTable(f"{root}/lake/{LEADS_TABLE}", version=1).to_pyarrow_table()
    with pytest.raises(ValueError, match="no such Delta version"):
        analytics.count_date_by_week(as_of=1)
    for moment, pages in synced["moments"]:
        assert served(analytics, moment) == weekly(pages), moment


def test_movement_tables_are_served_as_published(synced):
    analytics, resources = synced["analytics"], synced["resources"]
    assert dg.materialize(movement.ASSETS, resources=resources).success
    warehouse = Warehouse(analytics.warehouse_path)
    for of in (WEEK, MONTH):
        published = warehouse.require_table(of.table("status_entries")).to_pylist()
        entries = [e.model_dump() for e in analytics.status_entries(by=of.name)]
        assert entries == [
            {k: row[k] for k in (of.label, "statut", "status_group", "entries")}
            for row in published
        ]
        # Each version entering a status, from the edits: 6 created (one restored again), and
        # three status changes (Appel booké, Gagné, Répondu).
        assert sum(e["entries"] for e in entries) == 6 + 1 + 3
    march = analytics.status_entries("month", start="2025-03-15", end="2025-03-15")
    assert {e.mois for e in march} == {"2025-03"}
    first_contacts = [p["properties"]["Date de prise de contact"]["date"] for p in crafted_pages()]
    per_month = Counter(d["start"][:7] for d in first_contacts)
    cohorts = analytics.cohorts()
    assert {c.mois: c.leads for c in cohorts} == dict(per_month)
    assert [c.model_dump() for c in cohorts] == [
        {k: row[k] for k in cohorts[0].model_dump()}
        for row in warehouse.require_table(COHORTS_TABLE, "month_start").to_pylist()
    ]
    assert [c.mois for c in analytics.cohorts(start="2025-03-31")] == ["2025-03"]
    durations = analytics.status_durations()
    table = warehouse.require_table(DURATIONS_TABLE, "position").to_pylist()
    assert [d.statut for d in durations] == [row["statut"] for row in table]
    assert sum(d.open_stays for d in durations) == len(IDS)  # every lead is live and in one


def test_errors_name_the_lead_the_moment_and_the_missing_table(synced, tmp_path):
    analytics = synced["analytics"]
    unknown = "ffffffff-1111-4222-8333-000000000000"
    with pytest.raises(LeadNotFoundError, match=unknown) as error:
        analytics.lead_history(unknown.replace("-", ""))
    assert isinstance(error.value, LookupError)
    with pytest.raises(InvalidLeadIdError, match="not a Notion page id"):
        analytics.lead_history("Jean Dupont")
    with pytest.raises(HistoryRangeError, match="2025-03-01T10:00:00") as error:
        analytics.count_date_by_week(as_of=date(2025, 2, 28))
    assert "before lead_history begins" in str(error.value)
    assert analytics.history_begins() == datetime(2025, 3, 1, 10, tzinfo=UTC)
    with pytest.raises(ValueError, match="not a date or datetime"):
        analytics.count_date_by_week(as_of="last monday")
    empty = LeadsAnalytics(warehouse_path=str(tmp_path / "no.duckdb"), lake_uri=str(tmp_path / "x"))
    for call in (
        lambda: empty.lead_history(IDS[0]),
        lambda: empty.count_date_by_week(as_of="2025-03-01"),
        lambda: empty.status_entries("week"),
        empty.status_durations,
        empty.cohorts,
    ):
        with pytest.raises(PipelineNotRunError, match="dg launch --job sync_leads"):
            call()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("37cf03bc16934b77b9186686475222cc", "37cf03bc-1693-4b77-b918-6686475222cc"),
        ("37CF03BC-1693-4B77-B918-6686475222CC", "37cf03bc-1693-4b77-b918-6686475222cc"),
        (
            "https://www.notion.so/Nicolas-Da-Silva-37cf03bc16934b77b9186686475222cc",
            "37cf03bc-1693-4b77-b918-6686475222cc",
        ),
        (
            "notion.so/team/Cafe-37cf03bc16934b77b9186686475222cc?pvs=4#abc",
            "37cf03bc-1693-4b77-b918-6686475222cc",
        ),
        (
            "https://www.notion.so/0123456789abcdef0123456789abcdef?v=fedcba9876543210fedcba98"
            "76543210&p=37cf03bc16934b77b9186686475222cc&pm=s",
            "37cf03bc-1693-4b77-b918-6686475222cc",
        ),
        ("  37cf03bc-1693-4b77-b918-6686475222cc\n", "37cf03bc-1693-4b77-b918-6686475222cc"),
    ],
)
def test_lead_ids_and_urls(text, expected):
    assert parse_lead_id(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "37cf03bc16934b77b9186686475222c",
        "x37cf03bc16934b77b9186686475222cc",
        "https://www.notion.so/",
    ],
)
def test_texts_that_are_no_lead_id(text):
    with pytest.raises(InvalidLeadIdError):
        parse_lead_id(text)
