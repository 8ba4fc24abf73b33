"""A deterministic generator of realistic Notion page objects for the Leads database.

Pages have the real API's JSON shape (version 2025-09-03) and the edge cases real data has: empty
dates, datetimes with a UTC offset, date ranges, titles split over several rich-text segments,
empty titles, invalid emails, accents and emoji.

The sample can also play a deterministic evolution over simulated days (:func:`pages_on_day`): each
day some open leads move one status forward, a few are trashed, and on day 2 one of day 1's
trashed leads is restored, so that successive syncs of days 0, 1, 2, … build a lead history.
"""

from __future__ import annotations

import random
import unicodedata
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache

SAMPLE_DATABASE_ID = "1f3e2a4b-5c6d-4e7f-8a9b-0c1d2e3f4a5b"
SAMPLE_DATA_SOURCE_ID = "2a4b6c8d-0e1f-4a3b-9c5d-7e9f1a3b5c7d"
SAMPLE_START = date(2024, 1, 1)
SAMPLE_DAYS = 731  # two years: 2024-01-01 .. 2025-12-31
SAMPLE_END = datetime(2026, 1, 2, 18, 0, tzinfo=UTC)

#: The sample data source's schema (``GET /v1/data_sources/{id}`` → ``properties``).
SAMPLE_SCHEMA: dict[str, dict] = {
    name: {"id": pid, "name": name, "type": ptype, ptype: {}}
    for name, pid, ptype in (
        ("Nom", "title", "title"),
        ("Email", "%3EaNk", "email"),
        ("Téléphone", "Xq%5Bz", "phone_number"),
        ("Statut", "s%3Dtt", "status"),
        ("Date de prise de contact", "dPc1", "date"),
        ("Date de réponse du prospect", "dRp2", "date"),
        ("Date d'appel proposé", "dAp3", "date"),
        ("Date d'appel booké", "dAb4", "date"),
        ("Date de relance", "dRl5", "date"),
        ("Entreprise", "eNt%3F", "rich_text"),
        ("Source", "sRc%7C", "select"),
        ("Score", "sCo%40", "number"),
        ("Tags", "tAg%2B", "multi_select"),
        ("Responsable", "rEs%21", "people"),
    )
}

#: Status names in the order of their option ids (``st0``, ``st1``, …) in pages and schema.
_STATUSES = ["Nouveau", "Contacté", "Répondu", "Appel proposé", "Appel booké", "Perdu", "Gagné"]
#: Notion's status groups, in the order Notion shows them: (name, id, color, statuses in funnel
#: order). Won and lost are closed: Complete.
STATUS_GROUPS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("To-do", "grp-todo", "gray", ("Nouveau",)),
    ("In progress", "grp-prog", "blue", ("Contacté", "Répondu", "Appel proposé", "Appel booké")),
    ("Complete", "grp-done", "green", ("Gagné", "Perdu")),
)
#: Every status in funnel order (groups, then options within a group).
FUNNEL: tuple[str, ...] = tuple(name for *_, names in STATUS_GROUPS for name in names)


def _status_option(name: str) -> dict:
    """A status option (and a page's status value): the same id, name and color everywhere."""
    return {"id": f"st{_STATUSES.index(name)}", "name": name, "color": "default"}


SAMPLE_SCHEMA["Statut"]["status"] = {
    "options": [_status_option(name) for name in FUNNEL],
    "groups": [
        {
            "id": group_id,
            "name": group,
            "color": color,
            "option_ids": [_status_option(name)["id"] for name in names],
        }
        for group, group_id, color, names in STATUS_GROUPS
    ],
}

_FIRST = [
    "Camille",
    "Léa",
    "Éloïse",
    "Zoé",
    "Jérôme",
    "François",
    "Hélène",
    "Loïc",
    "Gaëlle",
    "Noël",
    "Bérénice",
    "Maël",
    "Thomas",
    "Julie",
    "Nicolas",
    "Inès",
    "Sébastien",
    "Chloé",
    "Raphaël",
    "Anaïs",
    "Mathéo",
    "Émilie",
    "Yannick",
    "Clément",
]
_LAST = [
    "Lefèvre",
    "Müller",
    "Dupré",
    "Girard",
    "Bénard",
    "Côté",
    "N'Diaye",
    "O'Connor",
    "Da Silva",
    "Lemaître",
    "Martin",
    "Bernard",
    "Dubois",
    "Moreau",
    "Laurent",
    "Fontaine",
    "Rousseau",
    "Chevalier",
    "Garnier",
    "Faure",
]
_COMPANIES = [
    "Boulangerie Dupré",
    "Atelier Côté",
    "Société Générale de Café",
    "Éditions Lumière",
    "Café ☕ des Arts",
    "Studio Nébuleuse",
    "Les Jardins d'Hélène",
    "Brasserie 🍺 du Port",
    "Cabinet Lemaître & Fils",
    "Ferme Bio Saint-Émilion",
    "Transports Müller",
]
_SOURCES = ["LinkedIn", "Salon", "Recommandation", "Site web", "Cold email"]
_TAGS = ["PME", "Grand compte", "Urgent", "Relance", "Partenaire", "Export"]
_OFFSETS = ["+01:00", "+02:00", "-05:00", "-08:00", "+09:00", "+05:30"]
_USERS = [str(uuid.UUID(int=random.Random(i).getrandbits(128), version=4)) for i in range(4)]
_ANNOTATIONS = {
    "bold": False,
    "italic": False,
    "strikethrough": False,
    "underline": False,
    "code": False,
    "color": "default",
}


def _iso(instant: datetime) -> str:
    return instant.strftime("%Y-%m-%dT%H:%M:00.000Z")


def _segment(text: str, bold: bool = False) -> dict:
    return {
        "type": "text",
        "text": {"content": text, "link": None},
        "annotations": {**_ANNOTATIONS, "bold": bold},
        "plain_text": text,
        "href": None,
    }


def _slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "-".join("".join(c if c.isalnum() else " " for c in ascii_text).split()) or "Untitled"


class _Page:
    """Builds one page; a class only to keep the random draws in one readable order."""

    def __init__(self, rng: random.Random, parent: dict):
        self.rng = rng
        self.parent = parent

    def date_value(self, day: date | None, allow_range: bool = False) -> dict:
        rng = self.rng
        if day is None:
            return {"id": "", "type": "date", "date": None}
        roll = rng.random()
        if roll < 0.12:
            # A datetime with an offset: its local date is the event date, whatever UTC says.
            local = datetime.combine(day, time(rng.choice([0, 8, 13, 18, 23]), rng.choice([0, 30])))
            start = local.strftime("%Y-%m-%dT%H:%M:00.000") + rng.choice(_OFFSETS)
        else:
            start = day.isoformat()
        end = None
        if allow_range and rng.random() < 0.08:
            end = (day + timedelta(days=rng.randint(1, 5))).isoformat()
        return {"id": "", "type": "date", "date": {"start": start, "end": end, "time_zone": None}}

    def build(self) -> dict:
        rng = self.rng
        page_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        name = f"{first} {last}"
        roll = rng.random()
        if roll < 0.01:
            title: list[dict] = []
            name = ""
        elif roll < 0.11:
            title = [_segment(first + " "), _segment(last.upper(), bold=True)]
        elif roll < 0.13:
            name = f"{name} {rng.choice(['🚀', '⭐', '🎯'])}"
            title = [_segment(name)]
        else:
            title = [_segment(name)]

        contact = SAMPLE_START + timedelta(days=rng.randrange(SAMPLE_DAYS))
        reply = proposed = booked = follow_up = None
        if rng.random() < 0.6:
            reply = contact + timedelta(days=rng.randint(0, 10))
            if rng.random() < 0.7:
                proposed = reply + timedelta(days=rng.randint(0, 7))
                if rng.random() < 0.65:
                    booked = proposed + timedelta(days=rng.randint(0, 10))
        if rng.random() < 0.5:
            follow_up = contact + timedelta(days=rng.randint(3, 21))
        events = [d for d in (contact, reply, proposed, booked, follow_up) if d is not None]
        latest = max(events)

        created = datetime.combine(contact, time(), UTC) - timedelta(
            minutes=rng.randrange(3 * 24 * 60)
        )
        edited = datetime.combine(latest, time(), UTC) + timedelta(
            minutes=rng.randrange(2 * 24 * 60)
        )
        edited = max(created, min(edited, SAMPLE_END))

        local = _slug(first).lower() + "." + _slug(last).lower().replace("-", "")
        email_roll = rng.random()
        if email_roll < 0.04:
            email = None
        elif email_roll < 0.07:
            email = rng.choice([f"{local}@", f"{local}.gmail.com", f"{local}@exemple", "n/a"])
        else:
            email = f"{local}@{rng.choice(['exemple.fr', 'mail.com', 'entreprise.io'])}"
        phone = (
            None
            if rng.random() < 0.15
            else f"+33 6 {rng.randint(10, 99)} {rng.randint(10, 99)} {rng.randint(10, 99)} {rng.randint(10, 99)}"
        )
        status = (
            "Appel booké"
            if booked
            else "Appel proposé"
            if proposed
            else "Répondu"
            if reply
            else rng.choice(["Nouveau", "Contacté", "Perdu"])
        )
        if booked and rng.random() < 0.3:
            status = "Gagné"
        company = rng.choice(_COMPANIES)
        tags = rng.sample(_TAGS, rng.randint(0, 2))

        values = {
            "Nom": {"type": "title", "title": title},
            "Email": {"type": "email", "email": email},
            "Téléphone": {"type": "phone_number", "phone_number": phone},
            "Statut": {
                "type": "status",
                "status": _status_option(status),
            },
            "Date de prise de contact": self.date_value(contact),
            "Date de réponse du prospect": self.date_value(reply),
            "Date d'appel proposé": self.date_value(proposed),
            "Date d'appel booké": self.date_value(booked),
            "Date de relance": self.date_value(follow_up, allow_range=True),
            "Entreprise": {"type": "rich_text", "rich_text": [_segment(company)]},
            "Source": {
                "type": "select",
                "select": {"id": f"so{_SOURCES.index(s)}", "name": s, "color": "gray"}
                if (s := rng.choice([*_SOURCES, None]))
                else None,
            },
            "Score": {"type": "number", "number": rng.choice([None, rng.randint(0, 100)])},
            "Tags": {
                "type": "multi_select",
                "multi_select": [
                    {"id": f"tg{_TAGS.index(t)}", "name": t, "color": "blue"} for t in tags
                ],
            },
            "Responsable": {
                "type": "people",
                "people": [{"object": "user", "id": rng.choice(_USERS)}],
            },
        }
        properties = {}
        for prop_name, value in values.items():
            value["id"] = SAMPLE_SCHEMA[prop_name]["id"]
            properties[prop_name] = {"id": value.pop("id"), **value}
        user = {"object": "user", "id": rng.choice(_USERS)}
        return {
            "object": "page",
            "id": page_id,
            "created_time": _iso(created),
            "last_edited_time": _iso(edited),
            "created_by": user,
            "last_edited_by": user,
            "cover": None,
            "icon": None,
            "parent": self.parent,
            "in_trash": False,
            "archived": False,
            "is_locked": False,
            "properties": properties,
            "url": f"https://www.notion.so/{_slug(name)}-{page_id.replace('-', '')}",
            "public_url": None,
        }


def generate_pages(count: int = 2000, seed: int = 42) -> list[dict]:
    """Generates ``count`` lead pages, the same ones for the same arguments.

    Args:
        count: Number of pages.
        seed: Random seed.

    Returns:
        Page objects sorted by ``last_edited_time`` then id, as a Notion query sorted ascending
        would return them.
    """
    rng = random.Random(seed)
    parent = {
        "type": "data_source_id",
        "data_source_id": SAMPLE_DATA_SOURCE_ID,
        "database_id": SAMPLE_DATABASE_ID,
    }
    builder = _Page(rng, parent)
    pages = [builder.build() for _ in range(count)]
    pages.sort(key=lambda page: (page["last_edited_time"], page["id"]))
    return pages


@lru_cache(maxsize=4)
def cached_pages(count: int, seed: int) -> tuple[dict, ...]:
    """:func:`generate_pages`, memoised per process (callers must not mutate the pages)."""
    return tuple(generate_pages(count, seed))


# -- a deterministic evolution over simulated days ---------------------------------------------

#: The status each open status moves to in one evolution step (one step forward in the funnel).
NEXT_STATUS: dict[str, str] = {
    "Nouveau": "Contacté",
    "Contacté": "Répondu",
    "Répondu": "Appel proposé",
    "Appel proposé": "Appel booké",
    "Appel booké": "Gagné",
}
#: The date property a move into a status sets to the simulated day (Gagné has none).
EVENT_DATE_OF_STATUS: dict[str, str] = {
    "Contacté": "Date de prise de contact",
    "Répondu": "Date de réponse du prospect",
    "Appel proposé": "Date d'appel proposé",
    "Appel booké": "Date d'appel booké",
}
#: Share of the open leads (status not in the Complete group) moving one status forward each day.
DAILY_MOVE_SHARE = 0.05
#: Live leads moved to the trash each day.
DAILY_TRASHED = 3
#: The day on which the first lead trashed the day before comes back from the trash.
RESTORE_DAY = 2
#: Simulated edits of a day happen between 09:00 and 17:00 UTC of that day.
_WORKDAY_START = time(9, 0)
_WORKDAY_MINUTES = 8 * 60


def simulated_date(day: int) -> date:
    """The calendar date of simulated day ``day`` (day 0 is the sample's last edit, 2026-01-02)."""
    return SAMPLE_END.date() + timedelta(days=day)


def pages_on_day(count: int = 2000, seed: int = 42, day: int = 0) -> tuple[dict, ...]:
    """The sample after ``day`` simulated days of its deterministic evolution.

    Day 0 is :func:`cached_pages` itself. Each later day ``n`` starts from day ``n - 1``'s pages
    and, drawing from a generator seeded by ``seed`` and ``n``:

    - moves ``round(DAILY_MOVE_SHARE × open leads)`` (at least one) open live leads one status
      forward (:data:`NEXT_STATUS`), setting the status's date property
      (:data:`EVENT_DATE_OF_STATUS`) to the simulated date;
    - moves :data:`DAILY_TRASHED` other live leads to the trash (``in_trash`` and ``archived``
      true, as Notion answers with API version 2025-09-03);
    - on :data:`RESTORE_DAY`, takes the first lead trashed the day before out of the trash.

    Every page changed on day ``n`` gets a ``last_edited_time`` between 09:00 and 17:00 UTC of
    :func:`simulated_date` ``(n)``, later than any edit of the days before, so an incremental
    sync sees it. Trashed pages stay in the result (a listing leaves them out).

    Args:
        count: Number of generated leads.
        seed: Random seed of the generator and of the evolution.
        day: Number of simulated days (0 = the sample as generated).

    Returns:
        The pages sorted by ``last_edited_time`` then id, memoised per process (callers must not
        mutate them; unchanged pages are shared between days).

    Raises:
        ValueError: ``day`` is negative.
    """
    if day < 0:
        raise ValueError(f"The sample's day must be 0 or more, got {day}.")
    if day == 0:
        return cached_pages(count, seed)
    return _evolved(count, seed, day)


@lru_cache(maxsize=8)
def _evolved(count: int, seed: int, day: int) -> tuple[dict, ...]:
    pages = list(cached_pages(count, seed))
    trashed_yesterday: list[str] = []
    for current in range(1, day + 1):
        pages, trashed_yesterday = _play_day(pages, seed, current, trashed_yesterday)
    return tuple(pages)


def _play_day(
    pages: Sequence[dict], seed: int, day: int, trashed_yesterday: Sequence[str]
) -> tuple[list[dict], list[str]]:
    """One simulated day: the pages after it, and the ids it trashed (in the order drawn)."""
    rng = random.Random(f"sample-evolution:{seed}:{day}")
    by_id = {page["id"]: page for page in pages}
    changed: dict[str, dict] = {}
    if day == RESTORE_DAY and trashed_yesterday:
        back = trashed_yesterday[0]
        changed[back] = {**by_id[back], "in_trash": False, "archived": False}
    live = [page for page in pages if not page["in_trash"] and page["id"] not in changed]
    open_ids = [page["id"] for page in live if _status_name(page) in NEXT_STATUS]
    moves = max(1, round(DAILY_MOVE_SHARE * len(open_ids))) if open_ids else 0
    for page_id in rng.sample(open_ids, moves):
        changed[page_id] = _moved(by_id[page_id], simulated_date(day))
    others = [page["id"] for page in live if page["id"] not in changed]
    trashed = rng.sample(others, min(DAILY_TRASHED, len(others)))
    for page_id in trashed:
        changed[page_id] = {**by_id[page_id], "in_trash": True, "archived": True}
    start = datetime.combine(simulated_date(day), _WORKDAY_START, UTC)
    for page in changed.values():
        page["last_edited_time"] = _iso(start + timedelta(minutes=rng.randrange(_WORKDAY_MINUTES)))
    edited = sorted(changed.values(), key=lambda page: (page["last_edited_time"], page["id"]))
    return [page for page in pages if page["id"] not in changed] + edited, trashed


def _status_name(page: dict) -> str | None:
    value = page["properties"]["Statut"]["status"]
    return value["name"] if value else None


def _moved(page: dict, day: date) -> dict:
    """A copy of ``page`` one status further, with that status's date set to ``day``."""
    status = NEXT_STATUS[_status_name(page)]
    properties = dict(page["properties"])
    statut = properties["Statut"]
    properties["Statut"] = {**statut, "status": _status_option(status)}
    if status in EVENT_DATE_OF_STATUS:
        name = EVENT_DATE_OF_STATUS[status]
        properties[name] = {
            **properties[name],
            "date": {"start": day.isoformat(), "end": None, "time_zone": None},
        }
    return {**page, "properties": properties}
