"""Suggests a property map for a data source's schema, and describes how a map resolves.

Pure functions, no I/O: a schema (``{name: {"id", "name", "type", ...}}``, as
``GET /v1/data_sources/{id}`` returns its ``properties``) goes in, a structured suggestion or the
text of a TOML property map comes out. ``leads-pipeline map suggest`` and ``map check`` only wire
the settings, the source and the output around them.

How a property is chosen for a contract column:

- its Notion type must be one the column's kind accepts (:func:`property_map.accepted_types`);
- it scores by **name** (French and English synonyms, compared without accents, case or
  punctuation: "E-mail", "Courriel", "Téléphone", "Contacted on", "Follow-up"…) and by **type**
  (the title property for ``nom``, an ``email``/``phone_number``/``status`` property for the
  matching column, a ``date`` rather than a formula for a date column);
- a property needs a name match to be chosen, except the title property for ``nom``, a property of
  the column's own type (``email``, ``phone_number``, ``status``) and, for
  ``date_prise_contact`` only, a ``created_time`` property (the page's creation, as a fallback);
- the best pairs are taken first and a property feeds at most one column; a column left without
  a candidate is disabled (``false``).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from tabulate import tabulate

from leads_pipeline.transform.property_map import DEFAULT_COLUMNS, ResolvedColumn, accepted_types

#: Name score of an exact match (accents, case and punctuation ignored), a synonym's words all
#: present in the name, or a synonym found inside a one-word name.
EXACT, CONTAINS, INSIDE = 100, 70, 55

#: Rollup functions whose result may be a date (``show_original`` on a date: its first date).
_DATE_ROLLUP_FUNCTIONS = {"earliest_date", "latest_date", "date_range"}
_MAYBE_DATE_ROLLUP_FUNCTIONS = _DATE_ROLLUP_FUNCTIONS | {"show_original", "show_unique"}

#: Words that say nothing about which event a date is ("Date de …", "… on", "… time").
_FILLER = {
    "a",
    "at",
    "d",
    "date",
    "day",
    "de",
    "des",
    "du",
    "en",
    "jour",
    "l",
    "la",
    "le",
    "of",
    "on",
    "the",
    "time",
    "when",
}

#: Synonyms of each contract column's property name, French and English.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "nom": (
        "Nom",
        "Name",
        "Full name",
        "Nom complet",
        "Prénom nom",
        "Contact name",
        "Lead name",
        "Prospect",
        "Client",
        "Customer",
        "Person",
        "Personne",
    ),
    "email": (
        "Email",
        "E-mail",
        "Mail",
        "Courriel",
        "Adresse email",
        "Adresse mail",
        "Email address",
        "Work email",
        "Contact email",
    ),
    "telephone": (
        "Téléphone",
        "Telephone",
        "Phone",
        "Phone number",
        "Numéro de téléphone",
        "Tel",
        "Tél",
        "Mobile",
        "Portable",
        "Cell",
        "Cellphone",
        "GSM",
    ),
    "statut": (
        "Statut",
        "Status",
        "Stage",
        "Étape",
        "État",
        "State",
        "Phase",
        "Pipeline",
        "Lead status",
        "Deal stage",
    ),
    "date_prise_contact": (
        "Date de prise de contact",
        "Prise de contact",
        "Contacted",
        "Contacted on",
        "Contact date",
        "Date contact",
        "First contact",
        "First contacted",
        "Premier contact",
        "Contacté le",
        "Reached out",
        "Outreach",
    ),
    "date_reponse_prospect": (
        "Date de réponse du prospect",
        "Date de réponse",
        "Réponse",
        "Réponse du prospect",
        "Répondu le",
        "Replied",
        "Replied on",
        "Reply",
        "Reply date",
        "Response",
        "Response date",
        "Responded",
        "Answered",
        "Answered on",
    ),
    "date_appel_propose": (
        "Date d'appel proposé",
        "Appel proposé",
        "Call proposed",
        "Proposed call",
        "Call offered",
        "Call suggested",
        "Meeting proposed",
        "Proposed meeting",
        "RDV proposé",
        "Rendez-vous proposé",
    ),
    "date_appel_booke": (
        "Date d'appel booké",
        "Appel booké",
        "Appel réservé",
        "Appel planifié",
        "Call booked",
        "Booked call",
        "Call scheduled",
        "Meeting booked",
        "Meeting scheduled",
        "Booked",
        "Demo booked",
        "RDV",
        "RDV booké",
        "Rendez-vous",
        "Rendez-vous booké",
    ),
    "date_relance": (
        "Date de relance",
        "Relance",
        "Relancé le",
        "Prochaine relance",
        "Follow-up",
        "Follow up",
        "Follow-up date",
        "Followed up",
        "Next follow-up",
        "Reminder",
        "Rappel",
    ),
}

#: Stems that rule a name out for a column: "Last contact" is not the first contact, and
#: "Days since contact" is a number of days, not a date.
_NOT_A_DATE = ("since", "depuis", "ago", "nb", "number", "nombre", "count", "delay", "delai")
_EXCLUDED_WORDS: dict[str, tuple[str, ...]] = {
    "date_prise_contact": (*_NOT_A_DATE, "last", "dernier", "derniere", "next", "prochain"),
    "date_reponse_prospect": _NOT_A_DATE,
    "date_appel_propose": _NOT_A_DATE,
    "date_appel_booke": _NOT_A_DATE,
    "date_relance": _NOT_A_DATE,
}

#: Type bonus per column: the column's own Notion type first, then the other accepted ones.
_TYPE_BONUS: dict[str, dict[str, int]] = {
    "nom": {"title": 1000, "rich_text": 10, "formula": 5},
    "email": {"email": 40, "rich_text": 0, "formula": -5},
    "telephone": {"phone_number": 40, "rich_text": 0, "formula": -5},
    "statut": {"status": 40, "select": 10, "formula": -5},
}
_DATE_TYPE_BONUS = {
    "date": 10,
    "formula": 0,
    "rollup": 0,
    "created_time": 0,
    "last_edited_time": -5,
}

#: Types that make a property a candidate without a name match, per column.
_CHOSEN_BY_TYPE: dict[str, frozenset[str]] = {
    "nom": frozenset({"title"}),
    "email": frozenset({"email"}),
    "telephone": frozenset({"phone_number"}),
    "statut": frozenset({"status"}),
}

#: The fallback of ``date_prise_contact``: the page's creation time, as a ``created_time`` property.
_FALLBACK_TYPE = {"date_prise_contact": "created_time"}
_FALLBACK_SCORE = 15


@dataclass(frozen=True)
class Candidate:
    """A property that could feed a column.

    Attributes:
        name: The property's name.
        id: The property's id.
        notion_type: Its Notion type.
        score: Higher is better; only comparable within one column.
        reason: Why it fits, for the comment next to it.
        eligible: Whether it may be chosen (a name match, the column's own type, or a fallback).
    """

    name: str
    id: str
    notion_type: str
    score: int
    reason: str
    eligible: bool


@dataclass(frozen=True)
class ColumnSuggestion:
    """What the advisor proposes for one contract column.

    Attributes:
        column: The ``leads`` column.
        kind: Its kind in the property map.
        chosen: The proposed property, or None to disable the column.
        alternatives: Every other property of a type the kind accepts, best first.
        accepted: The Notion types the kind accepts.
    """

    column: str
    kind: str
    chosen: Candidate | None
    alternatives: tuple[Candidate, ...]
    accepted: tuple[str, ...]


@dataclass(frozen=True)
class MapSuggestion:
    """A suggested property map for one schema.

    Attributes:
        columns: One suggestion per contract column, in contract order.
        unmapped: ``(name, type)`` of the properties no column uses (they go to
            ``extra_properties``), in schema order.
    """

    columns: tuple[ColumnSuggestion, ...]
    unmapped: tuple[tuple[str, str], ...]

    def chosen(self) -> dict[str, str | None]:
        """Column → chosen property name (None when disabled)."""
        return {c.column: c.chosen.name if c.chosen else None for c in self.columns}


# -- names ------------------------------------------------------------------------------------


def _fold(text: str) -> str:
    """Lower case, without accents; every run of other characters becomes one space."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    return " ".join(re.findall(r"[a-z0-9]+", plain))


def _stem(word: str) -> str:
    """A crude stem shared by French and English: contacts/contacted → contact, booké → book."""
    if len(word) > 5 and word.endswith("ing"):
        return word[:-3]
    if len(word) > 3 and word.endswith("s"):
        word = word[:-1]
    if len(word) > 4 and word.endswith("ed"):
        return word[:-2]
    if len(word) > 3 and word.endswith("e"):
        return word[:-1]
    return word


def _words(text: str) -> frozenset[str]:
    stems = (_stem(w) for w in _fold(text).split() if w not in _FILLER)
    return frozenset(w for w in stems if w not in _FILLER)


def name_score(column: str, name: str) -> tuple[int, str | None]:
    """How well a property name matches a column's synonyms.

    Args:
        column: A contract column (a key of :data:`SYNONYMS`).
        name: A property name.

    Returns:
        The score (0 when nothing matches) and the synonym that matched best.
    """
    folded = _fold(name)
    squashed = folded.replace(" ", "")
    words = _words(name)
    if not words or words & {_stem(w) for w in _EXCLUDED_WORDS.get(column, ())}:
        return 0, None
    best: tuple[int, str | None] = (0, None)
    for synonym in SYNONYMS.get(column, ()):
        wanted = _words(synonym)
        synonym_squashed = _fold(synonym).replace(" ", "")
        if squashed == synonym_squashed or (wanted and words == wanted):
            score = EXACT
        elif wanted and wanted <= words:
            score = max(CONTAINS - 5 * (len(words) - len(wanted)), INSIDE)
        elif len(synonym_squashed) >= 5 and synonym_squashed in squashed:
            score = INSIDE
        else:
            continue
        if score > best[0]:
            best = (score, synonym)
    return best


# -- candidates --------------------------------------------------------------------------------


def _properties(schema: Mapping[str, Mapping]) -> list[tuple[str, str, str, Mapping]]:
    """``(name, id, type, property)`` in schema order (the key is the name when none is given)."""
    return [
        (str(p.get("name") or key), str(p.get("id") or key), str(p.get("type")), p)
        for key, p in schema.items()
    ]


def _rollup_may_be_date(prop: Mapping) -> tuple[bool, int]:
    function = (prop.get("rollup") or {}).get("function")
    if function is None:
        return True, 0
    return function in _MAYBE_DATE_ROLLUP_FUNCTIONS, 5 if function in _DATE_ROLLUP_FUNCTIONS else 0


def _candidate(
    column: str, kind: str, name: str, pid: str, ptype: str, prop: Mapping
) -> Candidate | None:
    """Scores one property for one column; None when its type cannot feed the column."""
    if ptype not in accepted_types(kind):
        return None
    bonus = (
        _DATE_TYPE_BONUS.get(ptype, 0)
        if kind == "date"
        else _TYPE_BONUS.get(column, {}).get(ptype, 0)
    )
    if ptype == "rollup":
        possible, extra = _rollup_may_be_date(prop)
        if not possible:
            return None
        bonus += extra
    score, synonym = name_score(column, name)
    reasons = []
    eligible = score > 0
    if synonym is not None:
        reasons.append(f"name matches {toml_string(synonym)}")
    if ptype in _CHOSEN_BY_TYPE.get(column, ()):
        eligible = True
        reasons.append("the title property" if ptype == "title" else f"{ptype} type")
    if not eligible and _FALLBACK_TYPE.get(column) == ptype:
        eligible = True
        score = _FALLBACK_SCORE
        reasons.append("the page's creation time (fallback)")
    if not reasons:
        reasons.append("accepted type, name not recognised")
    return Candidate(name, pid, ptype, score + bonus, "; ".join(reasons), eligible)


def suggest_map(schema: Mapping[str, Mapping]) -> MapSuggestion:
    """Proposes a property for each contract column of ``leads``.

    Args:
        schema: The data source's properties, ``{name: {"id", "name", "type", ...}}``.

    Returns:
        The suggestion: for each column the chosen property (or None) and its alternatives.
    """
    properties = _properties(schema)
    candidates: dict[str, list[Candidate]] = {}
    for spec in DEFAULT_COLUMNS:
        found = (_candidate(spec.column, spec.kind, *p) for p in properties)
        candidates[spec.column] = [c for c in found if c is not None]
    order = {spec.column: i for i, spec in enumerate(DEFAULT_COLUMNS)}
    position = {pid: i for i, (_, pid, _, _) in enumerate(properties)}
    pairs = sorted(
        ((column, c) for column, found in candidates.items() for c in found if c.eligible),
        key=lambda pair: (-pair[1].score, order[pair[0]], position[pair[1].id]),
    )
    chosen: dict[str, Candidate] = {}
    used: set[str] = set()
    for column, candidate in pairs:
        if column not in chosen and candidate.id not in used:
            chosen[column] = candidate
            used.add(candidate.id)
    columns = []
    for spec in DEFAULT_COLUMNS:
        pick = chosen.get(spec.column)
        others = sorted(
            (c for c in candidates[spec.column] if pick is None or c.id != pick.id),
            key=lambda c: (-c.score, position[c.id]),
        )
        columns.append(
            ColumnSuggestion(
                spec.column, spec.kind, pick, tuple(others), tuple(accepted_types(spec.kind))
            )
        )
    unmapped = tuple((name, ptype) for name, pid, ptype, _ in properties if pid not in used)
    return MapSuggestion(tuple(columns), unmapped)


# -- TOML --------------------------------------------------------------------------------------


def toml_string(text: str) -> str:
    """``text`` as a TOML basic string (JSON escapes are valid TOML; DEL is escaped too)."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007F")


def _comment(text: str) -> str:
    """One comment line's text, with no line break inside."""
    return " ".join(text.splitlines())


def property_reference(candidate: Candidate, schema: Mapping[str, Mapping]) -> str:
    """How the map names a property: by name, unless the name is another property's id.

    ``property_map.resolve`` looks a map entry up by id first, so a name equal to another
    property's id would bind that other property; the id is then written instead.
    """
    others = {p[1] for p in _properties(schema) if p[1] != candidate.id}
    return candidate.id if candidate.name in others else candidate.name


def _describe(candidate: Candidate, holder: str | None) -> str:
    text = f"{candidate.notion_type}, id {toml_string(candidate.id)}: {candidate.reason}"
    if holder:
        text += f"; used by {holder}"
    return _comment(text)


def render_toml(suggestion: MapSuggestion, schema: Mapping[str, Mapping], origin: str) -> str:
    """The suggestion as a TOML property map, readable by ``property_map.load_property_map``.

    Args:
        suggestion: What :func:`suggest_map` returned for ``schema``.
        schema: The schema it was computed from.
        origin: Which data source the schema was read from (for the header comment).

    Returns:
        The TOML text: a header, then ``[columns]`` with one line per contract column (a property
        name, or ``false``) and every alternative as a commented-out line.
    """
    holders = {c.chosen.id: c.column for c in suggestion.columns if c.chosen}
    lines = [
        "# Property map suggested by `leads-pipeline map suggest`.",
        f"# Read from: {_comment(origin)}, {len(schema)} properties.",
        "# Review it: each column names the property that feeds it; `false` leaves the column",
        "# unmapped (it stays in `leads`, always NULL). The other candidates are commented out",
        "# below each column. Then: export LEADS_PROPERTY_MAP=<this file>; leads-pipeline map check",
    ]
    if suggestion.unmapped:
        lines.append("# Properties no column uses (kept in leads.extra_properties):")
        lines.extend(
            f"#   {_comment(toml_string(name))} ({ptype})" for name, ptype in suggestion.unmapped
        )
    lines += ["", "[columns]"]
    for column in suggestion.columns:
        lines.append("")
        accepted = ", ".join(column.accepted)
        if column.chosen is None:
            why = (
                "no property of an accepted type matches by name"
                if column.alternatives
                else "no property has an accepted type"
            )
            lines.append(f"# {column.column} (kind {column.kind}: {accepted}): {why}.")
            if column.column == "nom":
                lines.append("# nom is REQUIRED: the data source has no title property; pick one.")
            lines.append(f"{column.column} = false")
        else:
            reference = property_reference(column.chosen, schema)
            lines.append(f"# {column.column} (kind {column.kind}: {accepted})")
            lines.append(f"{column.column} = {toml_string(reference)}")
            lines[-1] += f"  # {_describe(column.chosen, None)}"
            if reference != column.chosen.name:
                lines[-1] += f"; named {_comment(toml_string(column.chosen.name))}"
        for other in column.alternatives:
            holder = holders.get(other.id)
            lines.append(
                f"# {column.column} = {toml_string(property_reference(other, schema))}"
                f"  # {_describe(other, holder)}"
            )
    return "\n".join(lines) + "\n"


# -- check -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckReport:
    """How a property map resolves against a schema.

    Attributes:
        bound: The enabled columns with their property.
        disabled: The columns left unmapped (always NULL).
        extra: ``(name, id, type)`` of the properties kept in ``extra_properties``.
    """

    bound: tuple[ResolvedColumn, ...]
    disabled: tuple[str, ...]
    extra: tuple[tuple[str, str, str], ...]


def check_report(columns: Iterable[ResolvedColumn], schema: Mapping[str, Mapping]) -> CheckReport:
    """Sorts resolved columns into bound and disabled ones, and finds the unmapped properties.

    Args:
        columns: What ``property_map.resolve`` returned for ``schema``.
        schema: The data source's properties.

    Returns:
        The report.
    """
    columns = tuple(columns)
    bound = tuple(c for c in columns if c.property_id is not None)
    used = {c.property_id for c in bound}
    extra = tuple((n, pid, t) for n, pid, t, _ in _properties(schema) if pid not in used)
    return CheckReport(bound, tuple(c.column for c in columns if c.property_id is None), extra)


def render_check(report: CheckReport, map_origin: str, source_origin: str) -> str:
    """The text ``leads-pipeline map check`` prints for a valid map.

    Args:
        report: What :func:`check_report` returned.
        map_origin: Where the map was read from (a file, or the built-in defaults).
        source_origin: Which data source the schema was read from.

    Returns:
        A few lines: the origins, one table row per bound column (column, kind, property name,
        id, Notion type), the disabled columns and the properties kept in ``extra_properties``.
    """
    rows = [[c.column, c.kind, c.property_name, c.property_id, c.notion_type] for c in report.bound]
    lines = [
        f"Property map: {_comment(map_origin)}",
        f"Data source: {_comment(source_origin)}",
        "",
        tabulate(rows, headers=["column", "kind", "property", "id", "Notion type"]),
        "",
        "Disabled (always NULL): " + (", ".join(report.disabled) or "none"),
        f"Kept in extra_properties: {len(report.extra) or 'none'}",
    ]
    lines += [
        f"  {_comment(toml_string(name))} ({ptype}, id {toml_string(pid)})"
        for name, pid, ptype in report.extra
    ]
    lines.append(
        f"The map is valid: {len(report.bound)} columns bound, {len(report.disabled)} disabled."
    )
    return "\n".join(lines) + "\n"
