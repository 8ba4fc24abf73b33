"""Lake semantics: merges that never lose or duplicate, deletions, evolution, rebuild, history."""

import datetime as dt
import json

import pyarrow as pa
import pytest

from leads_pipeline.storage.raw_store import SourceMismatchError
from leads_pipeline_tests.lake_helpers import Workspace, metadata_of
from leads_pipeline_tests.pages import date_value, make_page, rich

CONTACT = "Date de prise de contact"


def page(n, day="2025-01-06", edited="2025-03-01T10:00:00.000Z", **kwargs):
    return make_page(
        f"00000000-0000-4000-8000-{n:012d}",
        nom=rich(f"Lead {n}"),
        dates={CONTACT: date_value(day)},
        edited=edited,
        **kwargs,
    )


def expected_leads(pages):
    """The leads an ideal pipeline holds: every live page, its name and contact date."""
    return {
        p["id"]: (
            p["properties"]["Nom"]["title"][0]["plain_text"],
            dt.date.fromisoformat(p["properties"][CONTACT]["date"]["start"]),
        )
        for p in pages
        if not p.get("in_trash")
    }


def actual_leads(ws):
    return {k: (v["nom"], v["date_prise_contact"]) for k, v in ws.rows("leads").items()}


@pytest.fixture
def ws(tmp_path):
    return Workspace(tmp_path)


def _minute(offset: int) -> str:
    """The current minute (as Notion stamps edits) plus ``offset`` minutes."""
    now = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    return (now + dt.timedelta(minutes=offset)).isoformat().replace("+00:00", ".000Z")


def test_inserts_updates_and_deletions_across_syncs(ws):
    # Edit times around now: an edit in the same minute as the last sync is only possible then.
    start = _minute(0)
    pages = [page(i, edited=start) for i in range(30)]
    ws.publish(pages)
    first = ws.sync()
    assert actual_leads(ws) == expected_leads(pages)
    assert metadata_of(first, "raw_notion_leads")["rows_inserted"].value == 30

    # Edits (one in the same minute as the watermark), new pages, a trashed page.
    pages[3] = page(3, day="2025-02-01", edited=start)
    pages[3]["properties"]["Nom"]["title"] = rich("Lead 3 renamed")
    pages[4] = page(4, day="2025-02-02", edited=_minute(1))
    pages += [page(i, edited=_minute(2)) for i in range(30, 35)]
    pages[7]["in_trash"] = True
    pages[7]["last_edited_time"] = _minute(3)
    ws.publish(pages)
    second = ws.sync()
    raw_meta = metadata_of(second, "raw_notion_leads")
    assert raw_meta["mode"].value == "incremental"
    assert raw_meta["rows_inserted"].value == 5
    assert raw_meta["rows_updated"].value == 2
    # leads reads only the changed raw rows, from the Delta change data feed.
    leads_meta = metadata_of(second, "leads")
    assert (leads_meta["mode"].value, leads_meta["raw_rows_processed"].value) == ("incremental", 7)
    # The query hides trashed pages: an incremental sync cannot see the deletion yet.
    assert pages[7]["id"] in actual_leads(ws)
    assert {k: v for k, v in actual_leads(ws).items() if k != pages[7]["id"]} == expected_leads(
        pages
    )

    # A full listing catches it: raw keeps the page, flagged; leads drops it.
    third = ws.sync(full=True)
    assert metadata_of(third, "raw_notion_leads")["rows_marked_deleted"].value == 1
    assert metadata_of(third, "leads")["rows_deleted"].value == 1
    assert actual_leads(ws) == expected_leads(pages)
    raw = ws.rows("raw_notion_leads", key="page_id")
    assert len(raw) == 35
    assert raw[pages[7]["id"]]["deleted_at"] is not None
    assert sum(r["deleted_at"] is not None for r in raw.values()) == 1

    # Restored from the trash: it comes back.
    pages[7]["in_trash"] = False
    pages[7]["last_edited_time"] = _minute(4)
    ws.publish(pages)
    ws.sync()
    assert actual_leads(ws) == expected_leads(pages)
    assert ws.rows("raw_notion_leads", key="page_id")[pages[7]["id"]]["deleted_at"] is None


def test_a_sync_with_no_change_writes_no_commit(ws):
    ws.publish([page(i) for i in range(10)])
    ws.sync()
    versions = {
        t: ws.table(t).version() for t in ("raw_notion_leads", "leads", "lead_quality_issues")
    }
    for full in (False, True):
        result = ws.sync(full=full)
        assert metadata_of(result, "raw_notion_leads")["delta_committed"].value is False
        assert metadata_of(result, "leads")["delta_committed"].value is False
    assert versions == {t: ws.table(t).version() for t in versions}


def test_each_sync_is_one_commit_per_table(ws):
    pages = [page(i) for i in range(10)]
    ws.publish(pages)
    ws.sync()
    before = {t: ws.table(t).version() for t in ("raw_notion_leads", "leads")}
    pages[0]["properties"]["Nom"]["title"] = rich("changed")
    pages[0]["last_edited_time"] = "2025-03-05T10:00:00.000Z"
    ws.publish([*pages[1:], page(99, edited="2025-03-05T10:00:00.000Z"), *pages[:1]])
    ws.sync(full=True)  # an update, an insert and nothing deleted
    assert {t: ws.table(t).version() for t in before} == {t: v + 1 for t, v in before.items()}
    assert ws.table("leads").history(1)[0]["operation"] == "MERGE"


def test_property_map_gaining_a_column_evolves_the_schema_and_fills_it_from_raw(ws, tmp_path):
    pages = [page(i) for i in range(5)]
    ws.publish(pages)
    ws.sync()
    version = ws.table("leads").version()
    map_path = tmp_path / "map.toml"
    map_path.write_text('[columns.entreprise]\nproperty = "Entreprise"\nkind = "text"\n')
    ws.property_map = str(map_path)
    result = ws.sync()
    assert metadata_of(result, "leads")["mode"].value == "full"
    schema = ws.table("leads").schema().to_arrow()
    assert schema.field("entreprise").nullable
    assert {r["entreprise"] for r in ws.rows("leads").values()} == {"ACME"}
    assert "Entreprise" not in json.loads(next(iter(ws.rows("leads").values()))["extra_properties"])
    # The previous version is still readable with its old schema (time travel).
    old = ws.table("leads", version=version).to_pyarrow_table()
    assert "entreprise" not in old.column_names and old.num_rows == 5


def test_a_column_removed_from_the_property_map_leaves_the_table(ws, tmp_path):
    pages = [page(i) for i in range(5)]
    ws.publish(pages)
    map_path = tmp_path / "map.toml"
    map_path.write_text('[columns.entreprise]\nproperty = "Entreprise"\nkind = "text"\n')
    ws.property_map = str(map_path)
    ws.sync()
    with_column = ws.table("leads").version()
    assert {r["entreprise"] for r in ws.rows("leads").values()} == {"ACME"}

    ws.property_map = None  # back to the defaults: entreprise is unmapped again
    result = ws.sync()
    assert metadata_of(result, "leads")["mode"].value == "full"
    assert "entreprise" not in pa.schema(ws.table("leads").schema().to_arrow()).names
    rows = ws.rows("leads")
    assert actual_leads(ws) == expected_leads(pages)
    # The property is kept again with the other unmapped ones.
    assert all(json.loads(r["extra_properties"])["Entreprise"] == "ACME" for r in rows.values())
    # Nothing lost: the version with the column is still readable (time travel).
    old = ws.table("leads", version=with_column).to_pyarrow_table()
    assert "entreprise" in old.column_names and old.num_rows == 5
    # And a sync with no change after it commits nothing.
    version = ws.table("leads").version()
    ws.sync()
    assert ws.table("leads").version() == version


def test_rebuild_from_raw_equals_the_synced_result(ws):
    pages = [page(i) for i in range(20)]
    pages[5]["properties"]["Email"]["email"] = "pas-un-email"
    ws.publish(pages)
    ws.sync()
    synced = (ws.rows("leads"), ws.rows("lead_quality_issues", key="page_id"))
    (ws.root / "snapshot.json").unlink()  # no source at all: the rebuild must not need it
    from leads_pipeline.defs.assets.ingestion import leads_and_quality_issues

    result = ws.sync(rebuild=True, assets=[leads_and_quality_issues])
    assert metadata_of(result, "leads")["mode"].value == "full"
    assert (ws.rows("leads"), ws.rows("lead_quality_issues", key="page_id")) == synced


def test_time_travel_reads_earlier_versions(ws):
    pages = [page(i) for i in range(3)]
    ws.publish(pages)
    ws.sync()
    v1 = ws.table("leads").version()
    ws.publish([*pages, page(3, edited="2025-03-09T10:00:00.000Z")])
    ws.sync()
    assert ws.table("leads").version() == v1 + 1
    assert ws.table("leads", version=v1).to_pyarrow_table().num_rows == 3
    assert ws.table("leads").to_pyarrow_table().num_rows == 4


def test_another_source_never_writes_into_the_lake(ws, tmp_path):
    ws.publish([page(1)])
    ws.sync()
    from leads_pipeline.sources.snapshot import write_snapshot

    write_snapshot(ws.snapshot, "another-data-source", ws.schema, [page(2)])
    import dagster as dg

    from leads_pipeline_tests.lake_helpers import ASSETS

    with pytest.raises(SourceMismatchError, match="another-data-source"):
        dg.materialize(ASSETS, resources=ws.resources())
    assert set(ws.rows("leads")) == {page(1)["id"]}


def test_analytics_answer_as_of_an_earlier_version_or_timestamp(ws):
    from leads_pipeline.serving import LeadsAnalytics

    pages = [page(i, day="2025-01-06") for i in range(4)]
    ws.publish(pages)
    ws.sync()
    v1 = ws.table("leads").version()
    analytics = LeadsAnalytics(warehouse_path=ws.warehouse_path, lake_uri=ws.lake_uri)
    before = [w.model_dump(mode="json") for w in analytics.count_date_by_week()]
    ws.publish([*pages, page(9, day="2025-01-07", edited="2025-03-09T10:00:00.000Z")])
    ws.sync()
    now = [w.model_dump(mode="json") for w in analytics.count_date_by_week()]
    assert now != before and now[0]["date_prise_contact"] == 5
    assert [w.model_dump(mode="json") for w in analytics.count_date_by_week(as_of=v1)] == before
    # A moment is Notion's time (lead_history's valid_from, the edit time), not the commit time
    # of a Delta version: just before the fifth lead's edit, four leads; at it, five.
    by_time = analytics.count_date_by_week(as_of="2025-03-09T09:59:59+00:00")
    assert [w.model_dump(mode="json") for w in by_time] == before
    at_edit = analytics.count_date_by_week(as_of="2025-03-09T10:00:00+00:00")
    assert [w.model_dump(mode="json") for w in at_edit] == now
    assert analytics.count_date_by_month(as_of=v1)[0].date_prise_contact == 4
    with pytest.raises(ValueError, match="as_of=99"):
        analytics.count_date_by_week(as_of=99)
