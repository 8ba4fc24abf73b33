"""Builders of Notion page objects for crafted test cases (the real API's JSON shape)."""

from __future__ import annotations

import uuid

from leads_pipeline.sources.sample_data import SAMPLE_SCHEMA


def rich(*segments: str) -> list[dict]:
    """A rich-text array with one segment per string."""
    return [
        {
            "type": "text",
            "text": {"content": s, "link": None},
            "annotations": {
                "bold": False,
                "italic": False,
                "strikethrough": False,
                "underline": False,
                "code": False,
                "color": "default",
            },
            "plain_text": s,
            "href": None,
        }
        for s in segments
    ]


def date_value(start: str | None, end: str | None = None) -> dict | None:
    return None if start is None else {"start": start, "end": end, "time_zone": None}


def make_page(
    page_id: str | None = None,
    *,
    nom: list[dict] | None = None,
    email: str | None = None,
    telephone: str | None = None,
    statut: str | None = None,
    dates: dict[str, dict | None] | None = None,
    extra: dict[str, dict] | None = None,
    edited: str = "2025-03-01T10:00:00.000Z",
    created: str = "2025-02-01T09:00:00.000Z",
    in_trash: bool = False,
) -> dict:
    """A lead page with the sample schema's properties; dates keyed by property name."""
    page_id = page_id or str(uuid.uuid4())
    dates = dates or {}
    values = {
        "Nom": {"type": "title", "title": nom if nom is not None else rich("Jean Dupont")},
        "Email": {"type": "email", "email": email},
        "Téléphone": {"type": "phone_number", "phone_number": telephone},
        "Statut": {
            "type": "status",
            "status": None if statut is None else {"id": "x", "name": statut, "color": "default"},
        },
        "Entreprise": {"type": "rich_text", "rich_text": rich("ACME")},
        "Source": {"type": "select", "select": None},
        "Score": {"type": "number", "number": None},
        "Tags": {"type": "multi_select", "multi_select": []},
        "Responsable": {"type": "people", "people": []},
    }
    for name in (
        "Date de prise de contact",
        "Date de réponse du prospect",
        "Date d'appel proposé",
        "Date d'appel booké",
        "Date de relance",
    ):
        values[name] = {"type": "date", "date": dates.get(name)}
    values.update(extra or {})
    properties = {
        name: {"id": SAMPLE_SCHEMA[name]["id"] if name in SAMPLE_SCHEMA else f"id-{name}", **value}
        for name, value in values.items()
    }
    return {
        "object": "page",
        "id": page_id,
        "created_time": created,
        "last_edited_time": edited,
        "in_trash": in_trash,
        "archived": in_trash,
        "properties": properties,
        "url": f"https://www.notion.so/{page_id.replace('-', '')}",
    }
