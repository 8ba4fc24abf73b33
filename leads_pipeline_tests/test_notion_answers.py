"""Query answers decoded in bulk: the same raw rows as decoding them into Python objects."""

import json
from datetime import UTC, datetime

import pytest

from leads_pipeline.raw_store import RAW_SCHEMA, pages_to_raw
from leads_pipeline.sources.notion_answers import (
    MalformedAnswerError,
    answers_to_rows,
    read_envelope,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def page(page_id: str, properties: dict, **fields) -> dict:
    return {
        "object": "page",
        "id": page_id,
        "created_time": "2025-01-01T00:00:00.000Z",
        "last_edited_time": "2025-01-02T00:07:00.000Z",
        "in_trash": False,
        "url": f"https://www.notion.so/{page_id}",
        "properties": properties,
        **fields,
    }


def answer(results: list[dict], cursor: str | None = None) -> bytes:
    body = {"object": "list", "results": results, "next_cursor": cursor, "has_more": bool(cursor)}
    return json.dumps(body).encode()


def test_rows_are_byte_identical_to_decoding_then_re_encoding():
    tricky = {
        "Nom": {
            "id": "title",
            "type": "title",
            "title": [{"plain_text": 'Zoë "Q" \\ back\nslash 🚀 \u2028 \u0007 é'}],
        },
        "Score": {"id": "s", "type": "number", "number": 1e-7},
        "Zero": {"id": "z", "type": "number", "number": -0.0},
        "Big": {"id": "b", "type": "number", "number": 12345678901234},
        "Tenth": {"id": "t", "type": "number", "number": 0.1},
        "Done": {"id": "d", "type": "checkbox", "checkbox": True},
        "Empty": {"id": "e", "type": "rich_text", "rich_text": []},
        "Link": {"id": "l", "type": "url", "url": None},
    }
    pages = [page("p1", tricky), page("p2", {}), page("p3", tricky, in_trash=True)]
    bodies = [answer(pages[:2], cursor="c"), answer(pages[2:])]
    rows = answers_to_rows(bodies, NOW)
    expected = pages_to_raw(json.loads(json.dumps(pages)), NOW)
    assert rows.select(RAW_SCHEMA.names).equals(expected)
    assert json.loads(rows["properties_json"][0].as_py()) == tricky
    # The trashed page is kept and dated, as pages_to_raw does; the caller filters.
    assert rows["deleted_at"].to_pylist() == [None, None, NOW]
    assert rows["last_edited_text"].to_pylist() == ["2025-01-02T00:07:00.000Z"] * 3


def test_truncated_values_are_flagged_by_property_name():
    people = {"id": "r", "type": "people", "people": [{"id": "u1"}], "has_more": True}
    complete = {**people, "has_more": False}
    bodies = [answer([page("a", {"Owner": people}), page("b", {"Owner": complete})])]
    assert answers_to_rows(bodies, NOW, ["Owner"])["truncated"].to_pylist() == [True, False]
    assert answers_to_rows(bodies, NOW)["truncated"].to_pylist() == [False, False]


def test_envelopes():
    body = (
        b'{"object":"list","results":[{"object":"page","properties":{"next_cursor":{}}}],'
        b'"next_cursor":"c-2","has_more":true,"request_status":{"type":"incomplete"}}'
    )
    envelope = read_envelope(body)
    assert (envelope.next_cursor, envelope.has_more, envelope.incomplete) == ("c-2", True, True)
    last = read_envelope(answer([]))
    assert (last.next_cursor, last.has_more, last.incomplete) == (None, False, False)
    pretty = read_envelope(json.dumps({"results": [], "next_cursor": "x"}, indent=2).encode())
    assert pretty.next_cursor == "x"


@pytest.mark.parametrize(
    ("bodies", "message"),
    [
        ([b'{"results":[{"object":"page","properties":{}}]}'], "no id"),
        ([b'{"results":[{"object":"page","id":"\xff"}]}'], "not UTF-8"),
    ],
)
def test_malformed_answers_are_named(bodies, message):
    with pytest.raises(MalformedAnswerError, match=message):
        answers_to_rows(bodies, NOW)


def test_a_body_that_is_not_json_is_malformed():
    with pytest.raises(MalformedAnswerError, match="not a JSON object"):
        read_envelope(b"<html>502 Bad Gateway</html>")


def test_trash_is_in_trash_or_archived_whichever_the_answer_carries():
    """2026-03-11 answers have no ``archived``, answers from before 2024 no ``in_trash``."""

    def trash_keys(**keys) -> dict:
        shaped = page("x", {})
        del shaped["in_trash"]
        return {**shaped, **keys}

    shapes = [
        trash_keys(archived=True),  # an export from before 2024
        trash_keys(archived=False),
        trash_keys(in_trash=True),  # a 2026-03-11 answer
        trash_keys(in_trash=False),
        trash_keys(in_trash=True, archived=True),  # a 2025-09-03 answer
        trash_keys(in_trash=False, archived=True),
        trash_keys(),  # neither key: live
    ]
    pages = [{**shape, "id": f"p{i}"} for i, shape in enumerate(shapes)]
    rows = answers_to_rows([answer(pages)], NOW)
    expected = [True, False, True, False, True, True, False]
    assert rows["in_trash"].to_pylist() == expected
    assert rows["deleted_at"].to_pylist() == [NOW if trashed else None for trashed in expected]
