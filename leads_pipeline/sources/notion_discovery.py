"""Which data source to read: Notion ids, database → data source discovery, and its schema.

``NOTION_DATABASE_ID`` (an id or a URL) designates a database; discovery reads it and picks its
one data source, or the one ``NOTION_DATA_SOURCE_ID`` names when it has several.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from notion_client import Client

from leads_pipeline.sources.notion_http import NotionSyncError

_HEX_ID = re.compile(r"([0-9a-fA-F]{32}|[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12})")

#: Performs one GET: ``get(path, send, subject)`` → the decoded body, where ``send`` makes the
#: request once through notion-client and ``subject`` names what the path designates.
Getter = Callable[[str, Callable[[], dict], str], dict]


class NotionDiscoveryError(NotionSyncError):
    """The database id, URL or data source choice does not designate exactly one data source."""


def normalize_id(text: str) -> str:
    """A Notion id in its dashed form (``8-4-4-4-12``) from a bare id, a dashed id or a URL.

    Args:
        text: ``1f3e2a4b5c6d...``, ``1f3e2a4b-5c6d-...`` or ``https://www.notion.so/ws/Leads-1f3e...?v=...``.

    Returns:
        The dashed, lower-case id.

    Raises:
        NotionDiscoveryError: If no id can be found in ``text``.
    """
    path = text.strip().split("?", 1)[0].split("#", 1)[0]
    found = _HEX_ID.findall(path)
    if not found:
        raise NotionDiscoveryError(
            f"NOTION_DATABASE_ID={text!r} holds no Notion id: give the database id (32 hex "
            "digits) or the database's URL."
        )
    bare = found[-1].replace("-", "").lower()
    return f"{bare[:8]}-{bare[8:12]}-{bare[12:16]}-{bare[16:20]}-{bare[20:]}"


def discover_data_source(
    client: Client, get: Getter, database_id: str | None, data_source_id: str | None
) -> str:
    """The id of the data source to read, as Notion spells it.

    Args:
        client: The notion-client ``Client``.
        get: Performs the database GET (pacing, retries, errors).
        database_id: ``NOTION_DATABASE_ID``: the database id or URL.
        data_source_id: ``NOTION_DATA_SOURCE_ID``: the data source to pick, or None when the
            database has only one.

    Returns:
        The data source id.

    Raises:
        NotionDiscoveryError: If the database is not given, has no data source, has several and
            none is chosen, or the chosen one is not among them.
    """
    if not database_id:
        raise NotionDiscoveryError("NOTION_DATABASE_ID is not set: give the database id or URL.")
    database_id = normalize_id(database_id)
    database = get(
        f"/v1/databases/{database_id}",
        lambda: client.databases.retrieve(database_id=database_id),
        f"database {database_id} (NOTION_DATABASE_ID)",
    )
    sources = database.get("data_sources") or []
    listing = "; ".join(f"{s.get('name') or '(untitled)'!r} (id {s['id']})" for s in sources)
    if data_source_id:
        wanted = normalize_id(data_source_id)
        for candidate in sources:
            if normalize_id(candidate["id"]) == wanted:
                return candidate["id"]
        raise NotionDiscoveryError(
            f"NOTION_DATA_SOURCE_ID={data_source_id} is not a data source of database "
            f"{database_id}. Its data sources are: {listing or 'none'}."
        )
    if len(sources) == 1:
        return sources[0]["id"]
    if not sources:
        raise NotionDiscoveryError(
            f"Database {database_id} has no data source the integration can read."
        )
    raise NotionDiscoveryError(
        f"Database {database_id} has {len(sources)} data sources: {listing}. Set "
        "NOTION_DATA_SOURCE_ID to the id of the one holding the leads."
    )


def read_schema(client: Client, get: Getter, data_source_id: str) -> dict[str, dict]:
    """The data source's properties, ``{name: {"id", "name", "type", ...}}``.

    Args:
        client: The notion-client ``Client``.
        get: Performs the data source GET (pacing, retries, errors).
        data_source_id: The data source.
    """
    body = get(
        f"/v1/data_sources/{data_source_id}",
        lambda: client.data_sources.retrieve(data_source_id=data_source_id),
        f"data source {data_source_id}",
    )
    return dict(body.get("properties") or {})
