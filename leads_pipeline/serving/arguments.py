"""Reading the arguments of the serving layer: lead ids and URLs, moments, periods."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time
from urllib.parse import parse_qs, unquote, urlsplit

from leads_pipeline.serving.errors import InvalidLeadIdError
from leads_pipeline.tables import Grain, grain

_NOTION_ID = re.compile(r"([0-9a-fA-F]{32})$")


def parse_lead_id(text: str) -> str:
    """The page id (dashed, lower case) of a page id or a Notion page URL.

    Accepts ``37cf03bc16934b77b9186686475222cc``, its dashed form, and URLs such as
    ``https://www.notion.so/Nicolas-Da-Silva-37cf03bc16934b77b9186686475222cc`` (a workspace
    path, ``?v=``/``?pvs=`` queries and ``#`` fragments are ignored). A database URL with a page
    open on top (``notion.so/<database>?v=<view>&p=<page>``) names the page of ``p``.

    Raises:
        InvalidLeadIdError: If ``text`` holds no page id.
    """
    value = text.strip()
    is_url = "/" in value or "?" in value
    if is_url:
        parts = urlsplit(value if "://" in value else f"https://{value}")
        candidates = parse_qs(parts.query).get("p", [])[:1]
        candidates.append(unquote(parts.path).rstrip("/").rsplit("/", 1)[-1])
    else:
        candidates = [value]
    for candidate in candidates:
        bare = candidate.replace("-", "")
        match = _NOTION_ID.search(bare)
        if match and (is_url or len(bare) == 32):
            hex_id = match[1].lower()
            return f"{hex_id[:8]}-{hex_id[8:12]}-{hex_id[12:16]}-{hex_id[16:20]}-{hex_id[20:]}"
    raise InvalidLeadIdError(
        f"{text!r} is not a Notion page id (32 hexadecimal digits, dashes optional) nor a "
        "Notion page URL (https://www.notion.so/<title>-<id>)."
    )


def as_moment(value: str | date | datetime, name: str = "as_of") -> datetime:
    """A timezone-aware instant: a naive datetime is UTC, a date its midnight UTC."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = (
                date.fromisoformat(text)
                if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text)
                else datetime.fromisoformat(text)
            )
        except ValueError as error:
            raise ValueError(
                f"{name}={value!r} is not a date or datetime (expected YYYY-MM-DD or "
                "YYYY-MM-DDTHH:MM[:SS][+HH:MM])."
            ) from error
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, date):
        return datetime.combine(value, time(0), UTC)
    raise ValueError(f"{name}={value!r} is not a Delta version (int), a date or a datetime.")


def period_start(day: date, by: str) -> date:
    """The first day of the period of grain ``by`` (``"week"``: Monday) holding ``day``.

    Raises:
        ValueError: If no grain is called ``by``.
    """
    return grain(by).period_start(day)


def as_date(value: date | str | None, name: str) -> date | None:
    if value is None or (isinstance(value, date) and not isinstance(value, datetime)):
        return value
    if isinstance(value, datetime):
        return value.date()
    try:
        return date.fromisoformat(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name}={value!r} is not a date (expected YYYY-MM-DD).") from error


def date_bounds(
    start: date | str | None, end: date | str | None
) -> tuple[date | None, date | None]:
    start, end = as_date(start, "start"), as_date(end, "end")
    if start is not None and end is not None and start > end:
        raise ValueError(f"start ({start}) is after end ({end}).")
    return start, end


def in_range(rows: tuple, of: Grain, start: date | None, end: date | None) -> list:
    """The items of ``(period start, item)`` rows whose period contains or follows ``start``
    and contains or precedes ``end``."""
    first = of.period_start(start) if start is not None else None
    return [
        item
        for begins, item in rows
        if (first is None or begins >= first) and (end is None or begins <= end)
    ]
