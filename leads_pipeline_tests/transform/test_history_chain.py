"""The chain that numbers and links a derivation's versions, against a plain Python walk.

``lead_history``'s derivation joins each lead's latest stored version (current, or a tombstone)
with the events of the pending ``leads`` versions and walks the chain with NumPy. Random chains
(several events per lead, deletions with and without a recorded time, restorations, edit times
going backwards, NULLs, NaN) are compared with a per-row walk written here from the rules in the
module's docstring.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, date, datetime, timedelta

import pyarrow as pa
import pytest

from leads_pipeline.transform.history import (
    _DELETIONS_SCHEMA,
    _EVENT_FIELDS,
    UNVERSIONED,
    _combine,
    _ValueColumns,
    history_schema,
)

TS = pa.timestamp("us", tz="UTC")
LEADS_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("nom", pa.string()),
        pa.field("statut", pa.string()),
        pa.field("date_appel_booke", pa.date32()),
        pa.field("score", pa.float64()),
        pa.field("actif", pa.bool_()),
        pa.field("last_edited_time", TS),
    ]
)
VALUE_NAMES = [f.name for f in LEADS_SCHEMA if f.name != "id"]
COMPARED = [n for n in VALUE_NAMES if n not in UNVERSIONED]
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
BASE_KEEP = ("version", "valid_from", "is_current", "change")


def random_values(rng: random.Random) -> dict:
    return {
        "nom": rng.choice(["Ada", "Bea", None]),
        "statut": rng.choice(["Contacté", "Répondu", "Appel booké", None]),
        "date_appel_booke": rng.choice([None, date(2026, 3, 9), date(2026, 3, 16)]),
        "score": rng.choice([None, 1.5, 2.0, math.nan]),
        "actif": rng.choice([None, True, False]),
        "last_edited_time": T0 + timedelta(minutes=rng.randrange(0, 50)),
    }


def distinct(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return False
    return a != b


def random_case(seed: int):
    rng = random.Random(seed)
    bases, events, deletions = [], [], []
    for lead in range(rng.randrange(1, 40)):
        lead_id = f"lead-{lead:03d}"
        if rng.random() < 0.7:
            tombstone = rng.random() < 0.2
            bases.append(
                {
                    "id": lead_id,
                    "version": rng.randrange(1, 6),
                    "valid_from": T0 + timedelta(minutes=rng.randrange(0, 40)),
                    "is_current": not tombstone,
                    "change": "deleted" if tombstone else rng.choice(["created", "updated"]),
                    **random_values(rng),
                }
            )
        for step in sorted(rng.sample(range(10), rng.randrange(1, 5))):
            kind = rng.choice(["new", "changed", "gone"])
            event_time = (
                None
                if kind == "gone"
                else rng.choice([None, *[T0 + timedelta(minutes=m) for m in (5, 30, 60)]])
            )
            events.append(
                {
                    "id": lead_id,
                    "step": step,
                    "kind": kind,
                    "event_time": event_time,
                    "synced_at": T0 + timedelta(hours=1, minutes=step),
                    **random_values(rng),
                }
            )
            if kind == "gone" and rng.random() < 0.6:
                deleted_at = T0 + timedelta(minutes=rng.randrange(0, 90))
                deletions.append({"step": step, "id": lead_id, "deleted_at": deleted_at})
    return bases, events, deletions


def expected_chain(bases: list[dict], events: list[dict], deletions: list[dict]):
    """Per lead: its stored version, then its events by step, walked row by row."""
    deleted_at = {(d["id"], d["step"]): d["deleted_at"] for d in deletions}
    added, closing = [], []
    for lead_id in sorted({e["id"] for e in events}):
        base = next((b for b in bases if b["id"] == lead_id), None)
        chain = sorted((e for e in events if e["id"] == lead_id), key=lambda e: e["step"])
        previous = base
        previous_kind = "base" if base else None
        number = base["version"] if base else 0
        latest = base["valid_from"] if base else None
        versions = []
        for event in chain:
            own = deleted_at.get((lead_id, event["step"])) if event["kind"] == "gone" else None
            own = own or event["event_time"] or event["synced_at"]
            latest = own if latest is None else max(latest, own)
            number += 1
            gone = event["kind"] == "gone"
            if gone:
                change, changed = "deleted", []
            elif previous is None:
                change = "created"
                changed = [c for c in COMPARED if event[c] is not None]
            else:
                after_tombstone = previous_kind == "gone" or (
                    previous_kind == "base" and base["change"] == "deleted"
                )
                change = "restored" if after_tombstone else "updated"
                changed = [c for c in COMPARED if distinct(event[c], previous[c])]
            versions.append(
                {
                    "id": lead_id,
                    "version": number,
                    "valid_from": latest,
                    "gone": gone,
                    "change": change,
                    "changed_columns": changed,
                    "synced_at": event["synced_at"],
                    **{c: event[c] for c in VALUE_NAMES},
                }
            )
            previous, previous_kind = event, event["kind"]
        for i, version in enumerate(versions):
            later = versions[i + 1]["valid_from"] if i + 1 < len(versions) else None
            version["valid_to"] = version["valid_from"] if version["gone"] else later
            version["is_current"] = i + 1 == len(versions) and not version.pop("gone")
            version.pop("gone", None)
        if base is not None and base["is_current"] and versions:
            closing.append(
                {"id": lead_id, "version": base["version"], "valid_to": versions[0]["valid_from"]}
            )
        added.extend(versions)
    return added, closing


def comparable(rows: list[dict]) -> list[dict]:
    def fix(value):
        if isinstance(value, float) and math.isnan(value):
            return "NaN"
        return value

    return [{k: fix(v) for k, v in row.items()} for row in rows]


@pytest.mark.parametrize("seed", range(40))
def test_the_chain_matches_a_row_by_row_walk(seed):
    bases, events, deletions = random_case(seed)
    columns = _ValueColumns(history_schema(LEADS_SCHEMA))
    schema = columns.schema()
    keep = [schema.field(n) for n in BASE_KEEP]
    base_table = columns.values(
        pa.Table.from_pylist(
            bases,
            schema=pa.schema([schema.field("id"), *keep, *(schema.field(n) for n in VALUE_NAMES)]),
        ),
        keep=keep,
    )
    event_fields = [schema.field("id"), *_EVENT_FIELDS, *(schema.field(n) for n in VALUE_NAMES)]
    event_table = columns.values(
        pa.Table.from_pylist(events, schema=pa.schema(event_fields)), keep=_EVENT_FIELDS
    )
    deletion_table = pa.Table.from_pylist(deletions, schema=_DELETIONS_SCHEMA)

    added, closing = _combine(event_table, base_table, deletion_table, columns)

    want_added, want_closing = expected_chain(bases, events, deletions)
    got_added = added.select([*want_added[0].keys()]).to_pylist() if want_added else []
    assert comparable(got_added) == comparable(want_added)
    got_closing = sorted(closing.to_pylist(), key=lambda r: r["id"])
    assert got_closing == want_closing
    assert added.schema == schema
