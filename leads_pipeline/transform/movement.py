"""Movement analytics over ``lead_history``: status entries per period, stays, cohorts.

Vectorised DuckDB SQL over the Arrow dataset (or table) of ``lead_history``; one window over the
narrow columns ``id, version, valid_from, change, statut`` does the work.

What the tables mean:

- A lead **enters** a status with a version whose ``statut`` is not NULL (NULL is no status) and
  differs from the previous version's, or with its first version. A tombstone (``change =
  'deleted'``) is never an entry, and it ends the lead's stay: while deleted a lead is in no
  status, so a ``restored`` version enters its status again, even the one it had. Two versions
  sharing a ``valid_from`` (edits within one minute) are two entries at that time. An entry's time
  is its version's ``valid_from``; its period is that instant's UTC date's ISO week or month.
- A **stay** runs from an entry to the next version that is not the same status (an entry into
  another status, a NULL status, or the deletion). It is *completed* when that version exists,
  *open* otherwise (the lead is still in the status: its age is measured to ``now``). So, per
  status, entries = completed stays + open stays, and the open stays are the live leads currently
  in it.
- A **cohort** is the leads whose ``date_prise_contact`` (first contact) falls in a month; it
  reached reply, call proposed and call booked when the lead holds those dates (``leads`` as it is
  now, whatever the dates' order).

Periods come from the :class:`~leads_pipeline.tables.Grain` records, like the event counts: every
period between the first and the last entry appears, each with every status (zeros included).
Statuses are ordered and grouped as :mod:`leads_pipeline.transform.status_semantics` says; statuses found in
the history but absent from the given ``statuses`` are appended alphabetically, with no group.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.dataset as ds

from leads_pipeline.storage.duck import scratch_connection
from leads_pipeline.tables import MONTH, Grain
from leads_pipeline.tables import grain as grain_named
from leads_pipeline.transform.status_semantics import STATUSES_SCHEMA

#: The ``leads`` column whose month makes a cohort (Notion's "Date de prise de contact").
FIRST_CONTACT_COLUMN = "date_prise_contact"
#: Cohort step → the ``leads`` date column that says a lead reached it.
COHORT_STEPS: Mapping[str, str] = {
    "replied": "date_reponse_prospect",
    "call_proposed": "date_appel_propose",
    "call_booked": "date_appel_booke",
}
#: Cohort step → the name of its ratio column.
COHORT_RATES: Mapping[str, str] = {
    "replied": "reply_rate",
    "call_proposed": "call_proposed_rate",
    "call_booked": "call_booked_rate",
}
#: Columns of ``lead_history`` the movement tables read.
HISTORY_COLUMNS = ("id", "version", "valid_from", "change", "statut")

_DELETED = "deleted"
_HISTORY, _STATUSES, _LEADS = "history", "statuses", "leads"

Data = ds.Dataset | pa.Table


def _grain(value: Grain | str) -> Grain:
    return value if isinstance(value, Grain) else grain_named(value)


def _marked_sql(relation: str) -> str:
    """Every version with ``is_entry`` (it enters its status) and ``is_continuation`` (it stays
    in the status of the version before)."""
    return f"""
        SELECT id, version, valid_from, statut,
               change IS DISTINCT FROM '{_DELETED}' AND statut IS NOT NULL AS is_live,
               coalesce(
                   lag(version) OVER w IS NOT NULL
                   AND lag(change) OVER w IS DISTINCT FROM '{_DELETED}'
                   AND lag(statut) OVER w = statut,
                   FALSE
               ) AS same_as_previous
        FROM {relation}
        WINDOW w AS (PARTITION BY id ORDER BY version)
    """


def _entries_cte(relation: str) -> str:
    """CTEs ``marked`` (every version, flagged) and ``entries`` (the versions entering a status:
    ``id, version, statut, entered_at``)."""
    return f"""
        marked AS ({_marked_sql(relation)}),
        entries AS (
            SELECT id, version, statut, valid_from AS entered_at
            FROM marked WHERE is_live AND NOT same_as_previous
        )
    """


def _all_statuses_cte(statuses: str, seen: str) -> str:
    """CTE ``all_statuses`` (``statut, status_group, position``): ``statuses`` then the statuses
    of ``seen`` it lacks, alphabetically."""
    return f"""
        all_statuses AS (
            SELECT status AS statut, "group" AS status_group, position FROM {statuses}
            UNION ALL
            SELECT statut, NULL::VARCHAR AS status_group,
                   (SELECT coalesce(max(position) + 1, 0) FROM {statuses})
                       + row_number() OVER (ORDER BY statut) - 1 AS position
            FROM (SELECT DISTINCT statut FROM {seen}
                  WHERE statut NOT IN (SELECT status FROM {statuses}))
        )
    """


def status_entries_sql(relation: str, grain: Grain | str, statuses: str = _STATUSES) -> str:
    """SQL counting, per period and status, the versions of ``relation`` entering that status.

    Args:
        relation: Name of the relation holding ``lead_history`` (at least :data:`HISTORY_COLUMNS`).
        grain: The time grain (a :class:`~leads_pipeline.tables.Grain` or its name).
        statuses: Name of the relation holding the statuses table of
            :func:`leads_pipeline.transform.status_semantics.ordered_statuses`.

    Returns:
        A query giving ``<grain.label>, <grain.start_column>, statut, status_group, entries``,
        every period from the first to the last entry × every status, ordered by period then
        status position.
    """
    g = _grain(grain)
    return f"""
        WITH {_entries_cte(relation)},
        {_all_statuses_cte(statuses, "entries")},
        counted AS (
            SELECT {g.start_sql("CAST(timezone('UTC', entered_at) AS DATE)")} AS period_start,
                   statut, count(*) AS n
            FROM entries GROUP BY ALL
        ),
        periods AS (
            SELECT unnest(generate_series(min(period_start), max(period_start),
                                          INTERVAL {g.step}))::DATE AS period_start
            FROM counted
        )
        SELECT {g.label_sql("p.period_start")} AS {g.label},
               p.period_start AS {g.start_column},
               s.statut, s.status_group, coalesce(c.n, 0)::BIGINT AS entries
        FROM periods p CROSS JOIN all_statuses s
        LEFT JOIN counted c ON c.period_start = p.period_start AND c.statut = s.statut
        ORDER BY p.period_start, s.position
    """


def _statuses_or_empty(statuses: pa.Table | None) -> pa.Table:
    if statuses is None:
        return STATUSES_SCHEMA.empty_table()
    missing = [n for n in ("status", "position", "group") if n not in statuses.column_names]
    if missing:
        raise ValueError(
            f"statuses lacks column(s) {', '.join(missing)}: pass the table of "
            "status_semantics.ordered_statuses"
        )
    return statuses


def _check_history(history: Data) -> None:
    names = set(history.schema.names)
    missing = [c for c in HISTORY_COLUMNS if c not in names]
    if missing:
        raise ValueError(f"lead_history lacks column(s) {', '.join(missing)}")


def _run(sql: str, **relations: Data) -> pa.Table:
    con = scratch_connection(dedicated=True)
    try:
        for name, data in relations.items():
            con.register(name, data)
        return con.sql(sql).to_arrow_table()
    finally:
        con.close()


def compute_status_entries(
    history: Data, grain: Grain | str, statuses: pa.Table | None = None
) -> pa.Table:
    """Runs :func:`status_entries_sql` over an Arrow dataset or table of ``lead_history``.

    Args:
        history: ``lead_history`` rows.
        grain: The time grain (or its name).
        statuses: The statuses table (:func:`status_semantics.ordered_statuses`); None: only the
            statuses found in the history, alphabetically, no groups.
    """
    _check_history(history)
    return _run(
        status_entries_sql(_HISTORY, grain),
        **{_HISTORY: history, _STATUSES: _statuses_or_empty(statuses)},
    )


def _stays_marked_sql(relation: str) -> str:
    """Every version flagged as :func:`_marked_sql` does, and in the same window (one sort):
    ``next_continues`` (the next version stays in this one's status) and ``next_from`` (the next
    version's ``valid_from``)."""
    return f"""
        SELECT id, version, valid_from, statut,
               change IS DISTINCT FROM '{_DELETED}' AND statut IS NOT NULL AS is_live,
               coalesce(
                   lag(version) OVER w IS NOT NULL
                   AND lag(change) OVER w IS DISTINCT FROM '{_DELETED}'
                   AND lag(statut) OVER w = statut,
                   FALSE
               ) AS same_as_previous,
               -- The next version's same_as_previous AND is_live, read from this row.
               coalesce(
                   version IS NOT NULL
                   AND change IS DISTINCT FROM '{_DELETED}'
                   AND lead(change) OVER w IS DISTINCT FROM '{_DELETED}'
                   AND lead(statut) OVER w = statut,
                   FALSE
               ) AS next_continues,
               lead(valid_from) OVER w AS next_from
        FROM {relation}
        WINDOW w AS (PARTITION BY id ORDER BY version)
    """


def status_durations_sql(relation: str, now: datetime, statuses: str = _STATUSES) -> str:
    """SQL of the stays per status (see :func:`compute_status_durations`).

    A stay is a run of versions: its entry, then the versions continuing it; it ends at the
    ``valid_from`` of the version after its last one (``next_from`` there; NULL: open). One window
    finds both ends of every run; a run of one version (the usual case) is a stay at once, and
    only the first and last versions of longer runs are paired, by a second window over them.
    """
    moment = (now if now.tzinfo is not None else now.replace(tzinfo=UTC)).astimezone(UTC)
    return f"""
        WITH marked AS ({_stays_marked_sql(relation)}),
        ends AS (
            SELECT id, version, statut, valid_from, next_from,
                   NOT same_as_previous AS is_entry, NOT next_continues AS is_last
            FROM marked WHERE is_live AND (NOT same_as_previous OR NOT next_continues)
        ),
        runs AS (
            SELECT statut, valid_from AS entered_at, next_from AS ended_at
            FROM ends WHERE is_entry AND is_last
            UNION ALL
            SELECT statut, valid_from AS entered_at, ended_at FROM (
                SELECT statut, valid_from, is_entry,
                       lead(next_from) OVER (PARTITION BY id ORDER BY version) AS ended_at
                FROM ends WHERE is_entry <> is_last
            ) WHERE is_entry
        ),
        stays AS (
            SELECT statut,
                   (epoch(ended_at) - epoch(entered_at)) / 86400.0 AS days,
                   (epoch(TIMESTAMPTZ '{moment.isoformat()}') - epoch(entered_at)) / 86400.0
                       AS age_days,
                   ended_at IS NOT NULL AS completed
            FROM runs
        ),
        per_status AS (
            SELECT statut,
                   count(*) FILTER (WHERE completed) AS completed_stays,
                   quantile_cont(days, 0.5) FILTER (WHERE completed) AS median_days,
                   quantile_cont(days, 0.9) FILTER (WHERE completed) AS p90_days,
                   count(*) FILTER (WHERE NOT completed) AS open_stays,
                   quantile_cont(age_days, 0.5) FILTER (WHERE NOT completed) AS median_open_days
            FROM stays GROUP BY statut
        ),
        {_all_statuses_cte(statuses, "per_status")}
        SELECT s.statut, s.status_group, s.position,
               coalesce(t.completed_stays, 0)::BIGINT AS completed_stays,
               t.median_days, t.p90_days,
               coalesce(t.open_stays, 0)::BIGINT AS open_stays,
               t.median_open_days
        FROM all_statuses s LEFT JOIN per_status t ON t.statut = s.statut
        ORDER BY s.position
    """


def compute_status_durations(
    history: Data, statuses: pa.Table | None = None, now: datetime | None = None
) -> pa.Table:
    """How long leads stay in each status.

    Args:
        history: ``lead_history`` rows (an Arrow dataset or table).
        statuses: The statuses table (:func:`status_semantics.ordered_statuses`), or None.
        now: The moment open stays are measured to (default: now). A naive value is UTC.

    Returns:
        Per status, in position order: ``statut, status_group, position, completed_stays,
        median_days, p90_days`` (days from the entry to the end of the stay; quantiles
        interpolated linearly between the closest ranks; NULL without completed stays),
        ``open_stays, median_open_days`` (days from the entry to ``now``).
    """
    _check_history(history)
    return _run(
        status_durations_sql(_HISTORY, now or datetime.now(UTC)),
        **{_HISTORY: history, _STATUSES: _statuses_or_empty(statuses)},
    )


def cohort_conversion_sql(relation: str) -> str:
    """SQL of the monthly first-contact cohorts of ``relation`` (see
    :func:`compute_cohort_conversion`)."""
    g = MONTH
    reached = ",\n               ".join(
        f"count({column})::BIGINT AS {step}" for step, column in COHORT_STEPS.items()
    )
    filled = ", ".join(f"coalesce(c.{step}, 0)::BIGINT AS {step}" for step in COHORT_STEPS)
    rates = ", ".join(
        f"CASE WHEN coalesce(c.leads, 0) = 0 THEN NULL "
        f"ELSE c.{step}::DOUBLE / c.leads END AS {COHORT_RATES[step]}"
        for step in COHORT_STEPS
    )
    booked = COHORT_STEPS["call_booked"]
    return f"""
        WITH counted AS (
            SELECT {g.start_sql(FIRST_CONTACT_COLUMN)} AS period_start,
                   count(*)::BIGINT AS leads,
               {reached},
                   quantile_cont(({booked} - {FIRST_CONTACT_COLUMN})::DOUBLE, 0.5)
                       AS median_days_to_call_booked
            FROM {relation} WHERE {FIRST_CONTACT_COLUMN} IS NOT NULL
            GROUP BY 1
        ),
        periods AS (
            SELECT unnest(generate_series(min(period_start), max(period_start),
                                          INTERVAL {g.step}))::DATE AS period_start
            FROM counted
        )
        SELECT {g.label_sql("p.period_start")} AS {g.label},
               p.period_start AS {g.start_column},
               coalesce(c.leads, 0)::BIGINT AS leads, {filled}, {rates},
               c.median_days_to_call_booked
        FROM periods p LEFT JOIN counted c USING (period_start)
        ORDER BY p.period_start
    """


def compute_cohort_conversion(leads: Data) -> pa.Table:
    """Per month of first contact, how far that month's leads went.

    Args:
        leads: ``leads`` rows (an Arrow dataset or table).

    Returns:
        ``mois, month_start, leads, replied, call_proposed, call_booked`` (leads holding
        ``date_reponse_prospect``, ``date_appel_propose``, ``date_appel_booke``), ``reply_rate,
        call_proposed_rate, call_booked_rate`` (0..1; NULL for a month without leads) and
        ``median_days_to_call_booked`` (from ``date_prise_contact`` to ``date_appel_booke``,
        over the cohort's leads holding both). Every month from the first to the last cohort.
    """
    names = set(leads.schema.names)
    missing = [c for c in (FIRST_CONTACT_COLUMN, *COHORT_STEPS.values()) if c not in names]
    if missing:
        raise ValueError(f"leads lacks column(s) {', '.join(missing)}")
    return _run(cohort_conversion_sql(_LEADS), **{_LEADS: leads})


@dataclass(frozen=True)
class StatusEntriesVerification:
    """What :func:`verify_status_entries` found."""

    passed: bool
    #: Status → (entries in the table, versions of the history entering it), where they differ.
    mismatches: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    #: Total entries in the table and in the history.
    table_total: int = 0
    history_total: int = 0

    def describe(self) -> str:
        """A sentence for the check's result."""
        if self.passed:
            return (
                f"Each status's total entries equals the versions of lead_history entering it "
                f"({self.history_total} entries)."
            )
        differing = "; ".join(
            f"{status!r}: {in_table} in the table vs {in_history} in lead_history"
            for status, (in_table, in_history) in self.mismatches.items()
        )
        return f"Status entries differ from lead_history: {differing}."


def verify_status_entries(history: Data, entries_table: pa.Table) -> StatusEntriesVerification:
    """Checks a status-entries table against the history it was computed from.

    Per status, the sum of ``entries`` over the periods must equal the number of versions of
    ``history`` entering that status (counted directly, without periods or zero-filling).

    Args:
        history: ``lead_history`` rows.
        entries_table: A table of :func:`compute_status_entries` (any grain).
    """
    _check_history(history)
    if "statut" not in entries_table.column_names or "entries" not in entries_table.column_names:
        raise ValueError("entries_table lacks its statut or entries column")
    con = scratch_connection(dedicated=True)
    try:
        con.register(_HISTORY, history)
        con.register("entries_table", entries_table.select(["statut", "entries"]))
        rows = con.sql(
            f"""
            WITH {_entries_cte(_HISTORY)},
            expected AS (SELECT statut, count(*) AS n FROM entries GROUP BY statut),
            actual AS (SELECT statut, sum(entries) AS n FROM entries_table GROUP BY statut)
            SELECT coalesce(a.statut, e.statut) AS statut,
                   coalesce(a.n, 0)::BIGINT AS in_table, coalesce(e.n, 0)::BIGINT AS in_history
            FROM actual a FULL JOIN expected e ON a.statut IS NOT DISTINCT FROM e.statut
            ORDER BY 1
            """
        ).fetchall()
    finally:
        con.close()
    mismatches = {status: (t, h) for status, t, h in rows if t != h}
    return StatusEntriesVerification(
        passed=not mismatches,
        mismatches=mismatches,
        table_total=sum(t for _, t, _ in rows),
        history_total=sum(h for _, _, h in rows),
    )
