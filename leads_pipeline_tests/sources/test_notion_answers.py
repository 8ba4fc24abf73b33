"""Query answers decoded in bulk: the same raw rows as decoding them into Python objects."""

import json
from datetime import UTC, datetime

import pytest

from leads_pipeline.sources.notion_answers import (
    MalformedAnswerError,
    UndecodableAnswerError,
    answers_to_rows,
    read_answer,
    read_envelope,
)
from leads_pipeline.storage.raw_store import RAW_SCHEMA, pages_to_raw

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


P0 = "0b8d2f4e-0000-4000-8000-000000000000"
P1 = "0b8d2f4e-0000-4000-8000-000000000001"


def raw_answer(*results: bytes) -> bytes:
    """An answer whose results are JSON texts written by hand (what json.dumps cannot write)."""
    return b'{"object":"list","results":[' + b",".join(results) + b'],"has_more":false}'


def raw_page(page_id: str, name_json: bytes, key_json: bytes = b"Nom") -> bytes:
    return (
        b'{"object":"page","id":"' + page_id.encode() + b'","created_time":"2025-01-01T00:00:00'
        b'.000Z","last_edited_time":"2025-01-02T00:07:00.000Z","in_trash":false,"url":"u",'
        b'"properties":{"'
        + key_json
        + b'":{"type":"title","title":[{"plain_text":"'
        + name_json
        + b'"}]}}}'
    )


@pytest.mark.parametrize(
    ("name_json", "expected", "replaced"),
    [
        (rb"half \ud83d", "half \ufffd", 1),  # a high surrogate at the end of a string
        (rb"\udE00 low", "\ufffd low", 1),  # a low one alone, any case of hex digits
        (rb"\uD83D\u0041", "\ufffdA", 1),  # a high one followed by another escape
        (rb"\ud83d\ud83d\ude00", "\ufffd\U0001f600", 1),  # a lone high, then a pair
        (rb"\ude00\ud83d", "\ufffd\ufffd", 2),  # the two halves in the wrong order
        (rb"pair \ud83d\ude80 kept", "pair \U0001f680 kept", 0),
        (rb"\\ud83d", "\\ud83d", 0),  # an escaped backslash, then text
        (rb"\\\ud83d", "\\\ufffd", 1),  # an escaped backslash, then a lone surrogate
    ],
)
def test_lone_surrogates_are_replaced_and_counted_pairs_kept(name_json, expected, replaced):
    sound = raw_page("sound", "Zoë 🚀".encode())
    body = raw_answer(raw_page(P1, name_json), sound)
    checked = read_answer(body)
    assert checked.replaced == replaced
    assert dict(checked.replaced_by_page) == ({P1: replaced} if replaced else {})
    rows = answers_to_rows([checked.body], NOW)
    assert [
        json.loads(t)["Nom"]["title"][0]["plain_text"] for t in rows["properties_json"].to_pylist()
    ] == [
        expected,
        "Zoë 🚀",
    ]


def test_a_lone_surrogate_in_a_property_name_is_replaced_too():
    checked = read_answer(raw_answer(raw_page(P1, b"x", key_json=rb"Nom \udfff")))
    rows = answers_to_rows([checked.body], NOW)
    assert checked.replaced == 1 and json.loads(rows["properties_json"][0].as_py()) == {
        "Nom \ufffd": {"type": "title", "title": [{"plain_text": "x"}]}
    }


def test_a_sound_answer_is_passed_through_as_received():
    body = answer([page("p1", {"Nom": {"type": "title", "title": [{"plain_text": "é 🚀"}]}})])
    checked = read_answer(body)
    assert checked.body is body and checked.replaced == 0 and checked.envelope.has_more is False


def test_an_answer_that_is_not_utf8_cannot_be_decoded_and_says_where():
    body = raw_answer(raw_page(P0, b"ok"), raw_page(P1, b"caf\xe9 cr\xe8me"))
    with pytest.raises(UndecodableAnswerError) as caught:
        read_answer(body)
    position = body.index(b"\xe9")
    assert caught.value.position == position
    message = str(caught.value)
    assert f"not UTF-8 text (invalid continuation byte) at byte {position} " in message
    assert f"in page {P1}" in message and r"caf\xe9 cr\xe8me" in message


@pytest.mark.parametrize(
    ("body", "at"),
    [
        (b'{"results":[{"object":"page","id":"p1","in_trash" false}]}', b"false"),
        (b'{"results":[],"has_more":false}\n{"results":[]}', b'{"results":[]}'),
        (b'{"results":[{"object":"page","id":"p1",,"url":"u"}]}', b',"url"'),
    ],
    ids=["missing-colon", "two-objects", "double-comma"],
)
def test_a_complete_answer_that_is_not_json_cannot_be_decoded_and_says_where(body, at):
    with pytest.raises(UndecodableAnswerError) as caught:
        read_answer(body)
    position = body.rindex(at)  # whitespace before it is fine JSON
    assert caught.value.position == position
    assert "not valid JSON" in str(caught.value) and f"byte {position} " in str(caught.value)


def test_cut_off_empty_or_html_answers_stay_worth_another_try():
    """Every cut of an answer (mid-character, mid-escape, mid-literal) is an early end, and so
    are an empty body and a proxy's HTML page (even one not in UTF-8): not undecodable."""
    body = raw_answer(
        raw_page(P1, "Zoë 🚀 \\ud83d\\ude00 \\\\".encode()), b'{"n":-1.5e-7,"t":true}'
    )
    bodies = [body[:cut] for cut in range(len(body))]
    bodies += [
        b"",
        b"  \n",
        b"<html>502 Bad Gateway</html>",
        b"<html>Passerelle \xe9chou\xe9e</html>",
    ]
    for cut in bodies:
        with pytest.raises(MalformedAnswerError) as caught:
            read_answer(cut)
        assert not isinstance(caught.value, UndecodableAnswerError), cut
    assert read_answer(body).replaced == 0
