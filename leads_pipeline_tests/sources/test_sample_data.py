"""The sample generator: deterministic, in the API's shape, with real data's edge cases."""

import datetime as dt
import json
import re

from leads_pipeline.sources.base import ListingStats
from leads_pipeline.sources.sample import SampleLeadsSource
from leads_pipeline.sources.sample_data import SAMPLE_SCHEMA, generate_pages

MINUTE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:00\.000Z")


def test_generation_is_deterministic():
    assert generate_pages(300, 7) == generate_pages(300, 7)
    assert generate_pages(300, 7) != generate_pages(300, 8)


def test_pages_have_the_api_shape():
    pages = generate_pages(2000, 42)
    assert len(pages) == 2000 and len({p["id"] for p in pages}) == 2000
    for page in pages:
        assert page["object"] == "page"
        assert page["in_trash"] is False
        assert page["url"].startswith("https://www.notion.so/")
        assert MINUTE.fullmatch(page["created_time"]) and MINUTE.fullmatch(page["last_edited_time"])
        assert page["created_time"] <= page["last_edited_time"]
        assert set(page["properties"]) == set(SAMPLE_SCHEMA)
        for name, value in page["properties"].items():
            assert value["id"] == SAMPLE_SCHEMA[name]["id"]
            assert value["type"] == SAMPLE_SCHEMA[name]["type"]
    edits = [p["last_edited_time"] for p in pages]
    assert edits == sorted(edits)
    contacts = [p["properties"]["Date de prise de contact"]["date"]["start"][:10] for p in pages]
    assert min(contacts) >= "2024-01-01" and max(contacts) <= "2025-12-31"


def test_pages_contain_the_edge_cases_of_real_data():
    pages = generate_pages(2000, 42)
    props = [p["properties"] for p in pages]
    dates = [v["date"] for p in props for v in p.values() if v["type"] == "date"]
    assert any(d is None for d in dates)
    assert any(d and d["end"] for d in dates)
    assert any(d and re.search(r"T.*[+-]\d{2}:\d{2}$", d["start"]) for d in dates)
    titles = [p["Nom"]["title"] for p in props]
    assert any(t == [] for t in titles)
    assert any(len(t) > 1 for t in titles)
    names = "".join(s["plain_text"] for t in titles for s in t)
    assert re.search(r"[éèëïüÉ]", names) and re.search(r"[\U0001F300-\U0001FAFF]", names)
    emails = [p["Email"]["email"] for p in props]
    assert any(e and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s.]+", e) for e in emails)


def test_sample_source_filters_like_an_incremental_query():
    source = SampleLeadsSource(pages=500)
    stats = ListingStats()
    everything = [
        p for batch in source.list_pages(edited_on_or_after=None, stats=stats) for p in batch
    ]
    assert len(everything) == 500 and stats.pages == 500 and stats.requests == 5
    since = dt.datetime.fromisoformat(everything[-10]["last_edited_time"].replace("Z", "+00:00"))
    recent = [
        p
        for batch in source.list_pages(edited_on_or_after=since, stats=ListingStats())
        for p in batch
    ]
    assert recent and all(
        p["last_edited_time"] >= everything[-10]["last_edited_time"] for p in recent
    )
    assert source.latest_edit(after=None, stats=ListingStats()) is not None
    assert source.latest_edit(after=dt.datetime(2100, 1, 1, tzinfo=dt.UTC), stats=stats) is None


def test_the_status_property_has_notions_options_and_groups_in_funnel_order():
    statut = SAMPLE_SCHEMA["Statut"]
    assert statut["type"] == "status"
    options, groups = statut["status"]["options"], statut["status"]["groups"]
    assert [g["name"] for g in groups] == ["To-do", "In progress", "Complete"]
    by_id = {o["id"]: o for o in options}
    assert len(by_id) == len(options) and all(set(o) == {"id", "name", "color"} for o in options)
    # Every option in exactly one group; groups then options within a group give the funnel.
    grouped = [by_id[i]["name"] for g in groups for i in g["option_ids"]]
    assert (
        grouped
        == [o["name"] for o in options]
        == [
            "Nouveau",
            "Contacté",
            "Répondu",
            "Appel proposé",
            "Appel booké",
            "Gagné",
            "Perdu",
        ]
    )
    complete = next(g for g in groups if g["name"] == "Complete")
    assert {by_id[i]["name"] for i in complete["option_ids"]} == {"Gagné", "Perdu"}
    assert all(set(g) == {"id", "name", "color", "option_ids"} for g in groups)
    # Pages carry the options themselves (same id, name and color).
    values = {
        json.dumps(p["properties"]["Statut"]["status"], sort_keys=True)
        for p in generate_pages(2000, 42)
    }
    assert values == {json.dumps(o, sort_keys=True) for o in options}
