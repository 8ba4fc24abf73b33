"""Query answers of the Notion API decoded in bulk, straight into ``raw_notion_leads`` rows.

Decoding an answer into Python objects (what notion-client's ``request`` does) costs more than the
HTTP request itself, and ``raw_notion_leads`` would then re-encode each page's properties. Here an
answer's body stays bytes: the listing thread reads only its envelope (``next_cursor``,
``has_more``, ``request_status``) with Arrow's JSON reader, and DuckDB turns a batch of bodies into
raw rows in one parallel pass, keeping each page's ``properties`` as JSON text.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from leads_pipeline.duck import scratch_connection
from leads_pipeline.raw_store import RAW_SCHEMA

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
#: before 2024), as :func:`leads_pipeline.sources.base.is_trashed` decides for page objects.
_TRASHED = "(coalesce(r.in_trash, FALSE) OR coalesce(r.archived, FALSE))"
#: Columns of :func:`answers_to_rows` besides ``RAW_SCHEMA``'s.
LISTING_COLUMNS = ("object", "created_text", "last_edited_text", "truncated")


class MalformedAnswerError(ValueError):
    """A query answer that is not the JSON object the API documents."""


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


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def answers_to_rows(
    bodies: Sequence[bytes], synced_at: datetime, truncatable_names: Collection[str] = ()
) -> pa.Table:
    """Turns query answers into ``raw_notion_leads`` rows, in listing order.

    Every result is kept, pages or not, trashed or not: the caller filters. A page is trashed when
    ``in_trash`` or ``archived`` is true (either key may be missing: 2026-03-11 answers have no
    ``archived``, answers from before 2024 no ``in_trash``); it gets ``deleted_at = synced_at``,
    as :func:`leads_pipeline.raw_store.pages_to_raw` does.

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
