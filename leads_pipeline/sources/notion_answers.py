"""Query answers of the Notion API decoded in bulk, straight into ``raw_notion_leads`` rows.

Decoding an answer into Python objects (what notion-client's ``request`` does) costs more than the
HTTP request itself, and ``raw_notion_leads`` would then re-encode each page's properties. Here an
answer's body stays bytes: the listing thread reads only its envelope (``next_cursor``,
``has_more``, ``request_status``) with Arrow's JSON reader, and DuckDB turns a batch of bodies into
raw rows in one parallel pass, keeping each page's ``properties`` as JSON text.

:func:`read_answer` checks each body as it arrives, at the cost of a UTF-8 validation and the
envelope read; only a body that fails them takes a slower path: a lone surrogate escape (valid
JSON syntax, but no Unicode text) is replaced by U+FFFD and reported; a complete body that is not
UTF-8 or not JSON raises :class:`UndecodableAnswerError`, which asking again would not cure; an
empty, cut-off or HTML body (a proxy's error page) stays a :class:`MalformedAnswerError`, worth
another try.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from leads_pipeline.storage.duck import scratch_connection
from leads_pipeline.storage.raw_store import RAW_SCHEMA

_ENVELOPE_SCHEMA = pa.schema(
    [
        pa.field("next_cursor", pa.string()),
        pa.field("has_more", pa.bool_()),
        pa.field("request_status", pa.struct([pa.field("type", pa.string())])),
    ]
)
_ENVELOPE_OPTIONS = pa_json.ParseOptions(
    explicit_schema=_ENVELOPE_SCHEMA, unexpected_field_behavior="ignore", newlines_in_values=True
)
_RESULT_SHAPE = {
    "object": "VARCHAR",
    "id": "VARCHAR",
    "created_time": "VARCHAR",
    "last_edited_time": "VARCHAR",
    "in_trash": "BOOLEAN",
    "archived": "BOOLEAN",
    "url": "VARCHAR",
    "properties": "JSON",
}
_ANSWER_SHAPE = {"results": [_RESULT_SHAPE]}
#: Trashed: ``in_trash`` (2024+; the only key in 2026-03-11 answers) or ``archived`` (the only key
#: before 2024), as :func:`leads_pipeline.storage.raw_store.is_trashed` decides for page objects.
_TRASHED = "(coalesce(r.in_trash, FALSE) OR coalesce(r.archived, FALSE))"
#: Columns of :func:`answers_to_rows` besides ``RAW_SCHEMA``'s.
LISTING_COLUMNS = ("object", "created_text", "last_edited_text", "truncated")


#: Bytes of a body shown on each side of the first bad byte.
_EXCERPT_BYTES = 40
#: Every backslash escape, a surrogate pair taken whole: a lone high or low surrogate escape is
#: one of the two single alternatives. Matching every escape from the left keeps ``\\ud83d``
#: (an escaped backslash, then text) for what it is.
_ESCAPE = re.compile(
    rb"\\(?:(u[dD][89abAB][0-9a-fA-F]{2})(\\u[dD][c-fC-F][0-9a-fA-F]{2})?"
    rb"|(u[dD][c-fC-F][0-9a-fA-F]{2})|.)",
    re.DOTALL,
)
_REPLACEMENT_ESCAPE = rb"\ufffd"
#: The start of a page object in an answer (Notion writes ``object`` then ``id`` first).
_PAGE_START = re.compile(rb'"object"\s*:\s*"page"\s*,\s*"id"\s*:\s*"([0-9a-fA-F-]{32,36})"')
#: A surrogate code point in text Python decoded: only a lone one survives decoding.
_SURROGATE = re.compile(r"[\ud800-\udfff]")


class MalformedAnswerError(ValueError):
    """A query answer that is not the JSON object the API documents."""


class UndecodableAnswerError(MalformedAnswerError):
    """A complete answer that cannot be decoded (not UTF-8, or not JSON): the same bytes would
    come back if asked again, so it is not retried.

    Attributes:
        position: Byte offset (from 0) of the first bad byte in the body.
    """

    def __init__(self, message: str, position: int):
        super().__init__(message)
        self.position = position


@dataclass(frozen=True)
class Envelope:
    """What a query answer says about the listing, besides its pages."""

    next_cursor: str | None
    has_more: bool
    incomplete: bool

    @classmethod
    def of(cls, answer: Mapping) -> Envelope:
        """The envelope of a decoded answer (or of its envelope fields alone)."""
        status = answer.get("request_status") or {}
        return cls(
            next_cursor=answer.get("next_cursor"),
            has_more=bool(answer.get("has_more")),
            incomplete=status.get("type") == "incomplete",
        )


def read_envelope(body: bytes) -> Envelope:
    """Reads ``next_cursor``, ``has_more`` and ``request_status`` of a query answer.

    Args:
        body: The answer's body, as received.

    Raises:
        MalformedAnswerError: If the body is not a JSON object.
    """
    try:
        table = pa_json.read_json(pa.BufferReader(body), parse_options=_ENVELOPE_OPTIONS)
    except pa.ArrowInvalid as error:
        raise MalformedAnswerError(f"not a JSON object ({error}): {body[:200]!r}") from error
    if table.num_rows != 1:
        raise MalformedAnswerError(f"expected one JSON object, got {table.num_rows}")
    return Envelope.of(table.to_pylist()[0])


@dataclass(frozen=True)
class CheckedAnswer:
    """A query answer checked by :func:`read_answer`.

    Attributes:
        body: The body as received, or with its lone surrogate escapes replaced by ``\\ufffd``.
        envelope: What the answer says about the listing.
        replaced: Lone surrogate escapes replaced in the body (0 for a sound answer).
        replaced_by_page: Of those, how many in each page (by page id) of the results.
    """

    body: bytes
    envelope: Envelope
    replaced: int = 0
    replaced_by_page: Mapping[str, int] = field(default_factory=dict)


def _where(body: bytes, position: int) -> str:
    """``position`` in words: its offset, the page it falls in (if one starts before it) and
    the bytes around it."""
    start = max(position - _EXCERPT_BYTES, 0)
    shown = repr(body[start : position + _EXCERPT_BYTES])
    excerpt = (
        ("…" if start else "") + shown + ("…" if position + _EXCERPT_BYTES < len(body) else "")
    )
    pages = [match.group(1).decode() for match in _PAGE_START.finditer(body, 0, position)]
    page = f", in page {pages[-1]}" if pages else ""
    return f"byte {position} (offset from 0, of {len(body)}){page}; around it: {excerpt}"


def _looks_like_json_object(body: bytes) -> bool:
    """Whether ``body`` starts as a JSON object does (an empty body or an HTML page does not)."""
    return body.lstrip(b" \t\r\n")[:1] == b"{"


def _check_utf8(body: bytes) -> None:
    """Raises :class:`UndecodableAnswerError` naming the first byte that is not UTF-8."""
    offsets = pa.array([0, len(body)], pa.int32()).buffers()[1]
    text = pa.Array.from_buffers(pa.string(), 1, [None, offsets, pa.py_buffer(body)])
    try:
        text.validate(full=True)  # no copy, vectorised: the cheap check every answer gets
        return
    except pa.ArrowInvalid:
        pass
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.end >= len(body) and error.reason == "unexpected end of data":
            raise _ended_early(body, "within a character") from None
        raise UndecodableAnswerError(
            f"the answer is not UTF-8 text ({error.reason}) at {_where(body, error.start)}",
            error.start,
        ) from None


def replace_lone_surrogates(body: bytes) -> tuple[bytes, int]:
    """Replaces each ``\\udXXX`` escape that is not half of a surrogate pair by ``\\ufffd``.

    Such an escape is valid JSON syntax (JavaScript's ``JSON.stringify`` writes one for half an
    emoji cut by a text edit) but denotes no character, so no UTF-8 text can hold it. Pairs
    (``\\ud83d\\ude00``) and escaped backslashes followed by ``ud83d`` are kept.

    Args:
        body: JSON text as bytes.

    Returns:
        The body with those escapes replaced, and how many were.
    """
    replaced = 0

    def replace(match: re.Match) -> bytes:
        nonlocal replaced
        if match.group(3) is not None or (match.group(1) is not None and match.group(2) is None):
            replaced += 1
            return _REPLACEMENT_ESCAPE
        return match.group(0)

    return _ESCAPE.sub(replace, body), replaced


def _replaced_by_page(body: bytes) -> dict[str, int]:
    """Lone surrogates in each result of ``body`` (Python's decoder keeps them as code points)."""
    try:
        results = json.loads(body).get("results")
    except (ValueError, AttributeError):
        return {}
    counts: dict[str, int] = {}
    for result in results if isinstance(results, list) else ():
        found = len(_SURROGATE.findall(json.dumps(result, ensure_ascii=False)))
        if found and isinstance(result, dict):
            page_id = str(result.get("id") or "(no id)")
            counts[page_id] = counts.get(page_id, 0) + found
    return counts


def _ended_early(body: bytes, detail: str) -> MalformedAnswerError:
    """A body cut off (a connection or a proxy that gave up mid-answer): worth another try."""
    return MalformedAnswerError(
        f"the answer ends early, {detail}, after {len(body)} bytes: …{body[-80:]!r}"
    )


def _diagnose(body: bytes, error: MalformedAnswerError) -> MalformedAnswerError:
    """Why a UTF-8 body that Arrow could not read fails: for good, or worth another try.

    A complete JSON object ends with ``}``: a body that does not, or whose first error is at its
    end (or is a string left open), was cut off. Any other error is in the bytes themselves.
    """
    text = body.decode("utf-8")
    try:
        decoded = json.loads(text)
    except json.JSONDecodeError as parse_error:
        end = len(text.rstrip())
        if not text.rstrip().endswith("}"):
            return _ended_early(body, "before the answer's closing brace")
        if parse_error.pos >= end or parse_error.msg.startswith("Unterminated string"):
            return _ended_early(body, f"{parse_error.msg.lower()} at the end")
        position = len(text[: parse_error.pos].encode("utf-8"))
        return UndecodableAnswerError(
            f"the answer is not valid JSON ({parse_error.msg}) at {_where(body, position)}",
            position,
        )
    if not isinstance(decoded, dict):
        return UndecodableAnswerError(
            f"the answer is JSON but not an object (a {type(decoded).__name__}) at "
            f"{_where(body, 0)}",
            0,
        )
    return error


def read_answer(body: bytes) -> CheckedAnswer:
    """Checks a query answer as received and reads its envelope.

    Args:
        body: The answer's body.

    Returns:
        The answer, its lone surrogate escapes replaced (and counted) if it had any.

    Raises:
        UndecodableAnswerError: If the body looks like a JSON object but is not UTF-8, or is
            complete and still not JSON (names the first bad byte's position).
        MalformedAnswerError: If the body is empty, cut off or not JSON at all (an HTML page).
    """
    if not _looks_like_json_object(body):
        return CheckedAnswer(body, read_envelope(body))  # raises, as "not a JSON object"
    _check_utf8(body)
    try:
        return CheckedAnswer(body, read_envelope(body))
    except MalformedAnswerError as error:
        failure = error
    repaired, replaced = replace_lone_surrogates(body)
    if replaced:
        try:
            envelope = read_envelope(repaired)
        except MalformedAnswerError as error:
            raise _diagnose(repaired, error) from error
        return CheckedAnswer(repaired, envelope, replaced, _replaced_by_page(body))
    raise _diagnose(body, failure) from failure


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def answers_to_rows(
    bodies: Sequence[bytes], synced_at: datetime, truncatable_names: Collection[str] = ()
) -> pa.Table:
    """Turns query answers into ``raw_notion_leads`` rows, in listing order.

    Every result is kept, pages or not, trashed or not: the caller filters. A page is trashed when
    ``in_trash`` or ``archived`` is true (either key may be missing: 2026-03-11 answers have no
    ``archived``, answers from before 2024 no ``in_trash``); it gets ``deleted_at = synced_at``,
    as :func:`leads_pipeline.storage.raw_store.pages_to_raw` does.

    Args:
        bodies: Answer bodies, in the order they were listed.
        synced_at: Time of this sync.
        truncatable_names: Names of ``people``/``relation`` properties whose values must be
            complete: rows where one says ``has_more`` are flagged ``truncated``.

    Returns:
        ``RAW_SCHEMA`` columns plus ``object``, ``created_text`` and ``last_edited_text`` (the
        times as Notion wrote them) and ``truncated``.

    Raises:
        MalformedAnswerError: If a body is not JSON, or a page has no id.
    """
    has_more = [
        _lit(f"$.{json.dumps(name, ensure_ascii=False)}.has_more") for name in truncatable_names
    ]
    truncated = (
        " OR ".join(
            f"coalesce(json_extract_string(r.properties, {path}) = 'true', FALSE)"
            for path in sorted(has_more)
        )
        or "FALSE"
    )
    try:
        texts = pa.array(bodies, pa.binary()).cast(pa.string())
    except pa.ArrowInvalid as error:
        raise MalformedAnswerError(f"a query answer is not UTF-8 text ({error})") from error
    bodies_table = pa.table({"seq": pa.array(range(len(bodies)), pa.int64()), "body": texts})
    # One body per record batch: DuckDB parses record batches in parallel.
    bodies_table = pa.Table.from_batches(bodies_table.to_batches(max_chunksize=1))
    con = scratch_connection()
    try:
        con.register("answers", bodies_table)
        try:
            rows = con.sql(
                f"""
                WITH parsed AS (
                    SELECT seq, json_transform(body, {_lit(json.dumps(_ANSWER_SHAPE))}).results
                        AS results
                    FROM answers
                ), listed AS (
                    SELECT seq, unnest(range(len(results))) AS pos, unnest(results) AS r
                    FROM parsed
                )
                SELECT r.id AS page_id,
                       CAST(r.created_time AS TIMESTAMPTZ) AS created_time,
                       CAST(r.last_edited_time AS TIMESTAMPTZ) AS last_edited_time,
                       {_TRASHED} AS in_trash,
                       r.url AS url,
                       coalesce(CAST(r.properties AS VARCHAR), '{{}}') AS properties_json,
                       $synced_at::TIMESTAMPTZ AS synced_at,
                       CASE WHEN {_TRASHED} THEN $synced_at::TIMESTAMPTZ END AS deleted_at,
                       r.object AS object,
                       r.created_time AS created_text,
                       r.last_edited_time AS last_edited_text,
                       ({truncated}) AS truncated
                FROM listed
                ORDER BY seq, pos
                """,
                params={"synced_at": synced_at},
            ).to_arrow_table()
        except duckdb.Error as error:
            raise MalformedAnswerError(f"a query answer could not be read: {error}") from error
    finally:
        con.close()
    pages = pc.equal(rows["object"], "page")
    missing = pc.and_(pages, pc.is_null(rows["page_id"]))
    if pc.any(missing).as_py():
        raise MalformedAnswerError("A Notion page in a query answer has no id.")
    fields = [*RAW_SCHEMA, *(rows.schema.field(name) for name in LISTING_COLUMNS)]
    return rows.cast(pa.schema(fields))
