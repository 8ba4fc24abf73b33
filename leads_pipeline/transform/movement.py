"""Movement analytics over ``lead_history``: status entries per period, stays, cohorts.

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

How they are computed: one vectorised Arrow/NumPy pass (:func:`mark_versions`) reads only the
columns :data:`HISTORY_COLUMNS` of the dataset, orders the versions by lead then version (one
integer sort: lead ids are dictionary-encoded first) and flags the entries and the ends of the
stays by comparing each version with the one before it. It hands DuckDB only narrow relations: the
entries counted per UTC day and status (:func:`daily_entries`, a few thousand rows), or the stays
(:func:`stays`); the SQL of :func:`status_entries_sql` and :func:`status_durations_sql` turns
them into periods, zero-filling, statuses' order and quantiles. The check
(:func:`verify_status_entries`) counts the entries again with an independent statement of the
rules, a DuckDB window over the history, so the two implementations are reconciled on every run.

Periods come from the :class:`~leads_pipeline.tables.Grain` records, like the event counts: every
period between the first and the last entry appears, each with every status (zeros included).
Statuses are ordered and grouped as :mod:`leads_pipeline.transform.status_semantics` says; statuses
found in the history but absent from the given ``statuses`` are appended alphabetically, with no
group.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
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
#: Columns of ``lead_history`` the movement tables read (the only ones read from a dataset).
HISTORY_COLUMNS = ("id", "version", "valid_from", "change", "statut")
#: Revision of the rules :func:`mark_versions` applies, written into the SQL of the tables (so
#: into the digest their reuse depends on): bump it when those rules change.
MARKING_REVISION = 2

_DELETED = "deleted"
_HISTORY, _STATUSES, _LEADS = "history", "statuses", "leads"
_ENTRIES, _STAYS = "daily_entries", "stays"
_DAY_US = 86_400_000_000
_NO_CODE = -1

Data = ds.Dataset | pa.Table


def _grain(value: Grain | str) -> Grain:
    return value if isinstance(value, Grain) else grain_named(value)


# -- the Arrow pass: versions in lead order, entries and stays flagged ----------------------------


@dataclass(frozen=True)
class MarkedVersions:
    """The versions of ``lead_history`` in lead then version order, flagged by the rules.

    The arrays ``status_code``, ``is_entry``, ``is_last`` and ``has_next`` have one item per
    version in that order; ``rows`` maps it back to the rows read.
    """

    #: Position among the rows read of each version, in lead then version order.
    rows: np.ndarray
    #: The version's status, as an index into ``statuses`` (-1: no status).
    status_code: np.ndarray
    #: The status names the codes stand for.
    statuses: pa.Array
    #: The version enters its status.
    is_entry: np.ndarray
    #: The version is live (no tombstone, a status) and the next one does not continue its stay.
    is_last: np.ndarray
    #: The next version in this order is of the same lead.
    has_next: np.ndarray
    #: ``valid_from`` of the rows read, in their order (not in lead order).
    valid_from: pa.ChunkedArray

    @property
    def entry_rows(self) -> np.ndarray:
        """Positions among the rows read of the versions entering a status, in lead order."""
        return self.rows[self.is_entry]


def _history_columns(history: Data) -> pa.Table:
    """Only :data:`HISTORY_COLUMNS` of ``history`` (a projection read for a dataset)."""
    _check_history(history)
    if isinstance(history, pa.Table):
        return history.select(list(HISTORY_COLUMNS))
    return history.to_table(columns=list(HISTORY_COLUMNS))


def _codes(column: pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """Dense ``int64`` codes of ``column``'s values (NULL: -1) and the values they stand for."""
    encoded = pc.dictionary_encode(column).combine_chunks()
    codes = pc.fill_null(encoded.indices, _NO_CODE).to_numpy(zero_copy_only=False)
    return codes.astype(np.int64, copy=False), encoded.dictionary


def _lead_order(lead: np.ndarray, version: pa.ChunkedArray) -> np.ndarray:
    """Positions of the rows ordered by ``lead`` code, then ``version`` (NULL last).

    The window ``PARTITION BY id ORDER BY version`` of the rules, as one sort of a 64-bit key
    (lead code in the high half, the version's rank from the lowest one in the low half) when the
    versions span less than 2³² values, the usual case; a lexicographic sort otherwise.
    """
    if not pa.types.is_integer(version.type):
        raise ValueError(f"lead_history.version is {version.type}, not an integer")
    values = pc.fill_null(version, 0).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    known = pc.is_valid(version).to_numpy(zero_copy_only=False)
    if not known.any():
        return np.argsort(lead, kind="stable")
    low, high = int(values[known].min()), int(values[known].max())
    span = high - low + 1  # the rank of a NULL version: after every other
    if span < 2**32 - 1:
        rank = np.where(known, values - low, span) if version.null_count else values - low
        return np.argsort(((lead + 1) << 32) | rank)
    return np.lexsort((values, ~known, lead))


def _timestamps_us(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """``column`` (timestamps) as microseconds since the epoch, UTC (``int64``, NULLs kept)."""
    return column.cast(pa.timestamp("us", column.type.tz), safe=False).cast(pa.int64())


def mark_versions(history: Data) -> MarkedVersions:
    """Orders ``history``'s versions by lead then version and flags entries and ends of stays.

    A version *carries* its status to the next one when it has a version number, is no tombstone
    and has a status; the next version *continues* the stay when it is live and has that status;
    a live version that does not continue one is an entry. All vectorised: NumPy over the codes
    of the columns, no Python loop over rows.

    Args:
        history: ``lead_history`` rows (an Arrow dataset or table); only :data:`HISTORY_COLUMNS`
            are read.
    """
    table = _history_columns(history)
    if not pa.types.is_timestamp(table["valid_from"].type):
        raise ValueError(f"lead_history.valid_from is {table['valid_from'].type}, not a timestamp")
    lead, _ = _codes(table["id"])
    rows = _lead_order(lead, table["version"])
    codes, statuses = _codes(table["statut"])
    status_code = codes[rows]
    alive = pc.fill_null(pc.not_equal(table["change"], _DELETED), True)
    alive = alive.to_numpy(zero_copy_only=False)[rows]
    carrier = alive
    if table["version"].null_count:
        carrier = alive & pc.is_valid(table["version"]).to_numpy(zero_copy_only=False)[rows]
    ordered_lead = lead[rows]
    has_next = np.zeros(len(rows), dtype=bool)
    has_next[:-1] = ordered_lead[1:] == ordered_lead[:-1]
    carried = np.where(carrier, status_code, _NO_CODE)
    live = alive & (status_code != _NO_CODE)
    continues = np.zeros(len(rows), dtype=bool)  # live, in the status the version before carries
    continues[1:] = has_next[:-1] & (carried[:-1] == status_code[1:]) & live[1:]
    next_continues = np.zeros(len(rows), dtype=bool)
    next_continues[:-1] = continues[1:]
    return MarkedVersions(
        rows=rows,
        status_code=status_code,
        statuses=statuses,
        is_entry=live & ~continues,
        is_last=live & ~next_continues,
        has_next=has_next,
        valid_from=table["valid_from"],
    )


def _marked(history: Data | MarkedVersions) -> MarkedVersions:
    return history if isinstance(history, MarkedVersions) else mark_versions(history)


def daily_entries(history: Data | MarkedVersions) -> pa.Table:
    """The versions of ``history`` entering each status, counted per UTC day of ``valid_from``.

    Args:
        history: ``lead_history`` rows (an Arrow dataset or table), or their
            :func:`mark_versions`.

    Returns:
        ``day`` (``date32``, NULL for an entry without ``valid_from``), ``statut``, ``entries``
        (``int64``), one row per day and status holding entries, in no particular order.
    """
    marked = _marked(history)
    micros = _timestamps_us(marked.valid_from).take(pa.array(marked.entry_rows))
    day = np.floor_divide(pc.fill_null(micros, 0).to_numpy(zero_copy_only=False), _DAY_US)
    undated = micros.is_null().to_numpy(zero_copy_only=False) if micros.null_count else None
    keyed = pa.table(
        {
            "day": pa.array(day.astype(np.int32), pa.date32(), mask=undated),
            "code": marked.status_code[marked.is_entry],
        }
    )
    counted = keyed.group_by(["day", "code"], use_threads=False).aggregate([([], "count_all")])
    return pa.table(
        {
            "day": counted["day"],
            "statut": marked.statuses.take(counted["code"]),
            "entries": counted["count_all"].cast(pa.int64()),
        }
    )


def stays(history: Data | MarkedVersions) -> pa.Table:
    """The stays of ``history``'s leads in their statuses.

    Args:
        history: ``lead_history`` rows (an Arrow dataset or table), or their
            :func:`mark_versions`.

    Returns:
        ``statut`` (dictionary-encoded), ``entered_at`` (the entry's ``valid_from``) and
        ``ended_at`` (the ``valid_from`` of the version ending it; NULL while open), one row per
        entry, in lead order.
    """
    marked = _marked(history)
    # A stay is a run of live versions, its entry then the versions continuing it; runs do not
    # overlap, so the k-th entry's run ends at the k-th last version.
    last = np.flatnonzero(marked.is_last)
    following = np.minimum(last + 1, len(marked.rows) - 1)
    ending_rows = pa.array(marked.rows[following], mask=~marked.has_next[last])
    status_codes = pa.array(marked.status_code[marked.is_entry], pa.int32())
    return pa.table(
        {
            "statut": pa.DictionaryArray.from_arrays(status_codes, marked.statuses),
            "entered_at": marked.valid_from.take(pa.array(marked.entry_rows)),
            "ended_at": marked.valid_from.take(ending_rows),
        }
    )


# -- SQL over the narrow relations ----------------------------------------------------------------


def _revision_comment(what: str) -> str:
    return f"-- over the {what} of movement.mark_versions, rules revision {MARKING_REVISION}"


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
    """SQL counting, per period and status, the entries of ``relation``.

    Args:
        relation: Name of the relation holding :func:`daily_entries` (``day, statut, entries``).
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
        {_revision_comment("daily entries")}
        WITH counted AS (
            SELECT {g.start_sql("day")} AS period_start, statut, sum(entries) AS n
            FROM {relation} GROUP BY ALL
        ),
        {_all_statuses_cte(statuses, "counted")},
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


def _run(sql: str, *, dedicated: bool = True, **relations: Data) -> pa.Table:
    """Runs ``sql`` over ``relations`` on a scratch connection (a database of its own when
    ``dedicated``: for inputs of a million rows)."""
    con = scratch_connection(dedicated=dedicated)
    try:
        for name, data in relations.items():
            con.register(name, data)
        return con.sql(sql).to_arrow_table()
    finally:
        con.close()


def compute_status_entries(
    history: Data | MarkedVersions, grain: Grain | str, statuses: pa.Table | None = None
) -> pa.Table:
    """Per period and status, how many versions of ``history`` entered that status.

    Args:
        history: ``lead_history`` rows (an Arrow dataset or table), or their
            :func:`mark_versions` (to compute several grains from one read).
        grain: The time grain (or its name).
        statuses: The statuses table (:func:`status_semantics.ordered_statuses`); None: only the
            statuses found in the history, alphabetically, no groups.

    Returns:
        The rows of :func:`status_entries_sql`.
    """
    counted = daily_entries(history)
    # A few thousand rows: the process's shared database is enough.
    return _run(
        status_entries_sql(_ENTRIES, grain),
        dedicated=False,
        **{_ENTRIES: counted, _STATUSES: _statuses_or_empty(statuses)},
    )


def status_durations_sql(relation: str, now: datetime, statuses: str = _STATUSES) -> str:
    """SQL of the stays per status (see :func:`compute_status_durations`).

    Args:
        relation: Name of the relation holding :func:`stays` (``statut, entered_at, ended_at``).
        now: The moment open stays are aged to (a naive value is UTC).
        statuses: Name of the relation holding the statuses table.
    """
    moment = (now if now.tzinfo is not None else now.replace(tzinfo=UTC)).astimezone(UTC)
    return f"""
        {_revision_comment("stays")}
        WITH stays AS (
            SELECT statut,
                   (epoch(ended_at) - epoch(entered_at)) / 86400.0 AS days,
                   (epoch(TIMESTAMPTZ '{moment.isoformat()}') - epoch(entered_at)) / 86400.0
                       AS age_days,
                   ended_at IS NOT NULL AS completed
            FROM {relation}
        ),
        per_status AS (
            SELECT statut,
                   count(*) FILTER (WHERE completed) AS completed_stays,
                   -- One aggregate for both quantiles: the days are gathered and sorted once.
                   quantile_cont(days, [0.5, 0.9]) FILTER (WHERE completed) AS days_quantiles,
                   count(*) FILTER (WHERE NOT completed) AS open_stays,
                   quantile_cont(age_days, 0.5) FILTER (WHERE NOT completed) AS median_open_days
            FROM stays GROUP BY statut
        ),
        {_all_statuses_cte(statuses, "per_status")}
        SELECT s.statut, s.status_group, s.position,
               coalesce(t.completed_stays, 0)::BIGINT AS completed_stays,
               t.days_quantiles[1] AS median_days, t.days_quantiles[2] AS p90_days,
               coalesce(t.open_stays, 0)::BIGINT AS open_stays,
               t.median_open_days
        FROM all_statuses s LEFT JOIN per_status t ON t.statut = s.statut
        ORDER BY s.position
    """


def compute_status_durations(
    history: Data | MarkedVersions, statuses: pa.Table | None = None, now: datetime | None = None
) -> pa.Table:
    """How long leads stay in each status.

    Args:
        history: ``lead_history`` rows (an Arrow dataset or table), or their
            :func:`mark_versions`.
        statuses: The statuses table (:func:`status_semantics.ordered_statuses`), or None.
        now: The moment open stays are measured to (default: now). A naive value is UTC.

    Returns:
        Per status, in position order: ``statut, status_group, position, completed_stays,
        median_days, p90_days`` (days from the entry to the end of the stay; quantiles
        interpolated linearly between the closest ranks; NULL without completed stays),
        ``open_stays, median_open_days`` (days from the entry to ``now``).
    """
    return _run(
        status_durations_sql(_STAYS, now or datetime.now(UTC)),
        **{_STAYS: stays(history), _STATUSES: _statuses_or_empty(statuses)},
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


def entries_by_status_sql(relation: str) -> str:
    """SQL counting per status the versions of ``relation`` (``lead_history``) entering it.

    The rules stated again, independently of :func:`mark_versions`, as one DuckDB window: a
    version enters its status when it is live (no tombstone, a status) and the version before it
    in its lead did not carry that status (it does when it has a version number, is no tombstone
    and holds that status). Gives ``statut, entries``.
    """
    return f"""
        SELECT statut, count(*) AS entries FROM (
            SELECT statut, change IS DISTINCT FROM '{_DELETED}' AS alive,
                   lag(CASE WHEN version IS NOT NULL AND change IS DISTINCT FROM '{_DELETED}'
                            THEN statut END)
                       OVER (PARTITION BY id ORDER BY version) AS carried
            FROM {relation}
        )
        WHERE alive AND statut IS NOT NULL AND carried IS DISTINCT FROM statut
        GROUP BY statut
    """


def verify_status_entries(history: Data, entries_table: pa.Table) -> StatusEntriesVerification:
    """Checks a status-entries table against the history it was computed from.

    Per status, the sum of ``entries`` over the periods must equal the number of versions of
    ``history`` entering that status, counted directly by :func:`entries_by_status_sql` (without
    periods or zero-filling, and without the Arrow pass the table was computed with).

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
        con.execute("SET preserve_insertion_order = false")  # only the final ORDER BY counts
        rows = con.sql(
            f"""
            WITH expected AS (
                SELECT statut, entries AS n FROM ({entries_by_status_sql(_HISTORY)})
            ),
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
