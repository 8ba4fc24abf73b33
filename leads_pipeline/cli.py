"""``leads-pipeline``: read the pipeline's results from the shell, and write its property map.

Exit codes: 0 success, 1 unexpected error, 2 usage error (bad option or date, ``--as-of`` before
the history begins, a lead id or URL that is malformed or names no lead, ``map suggest --output``
onto an existing file without ``--force``), 3 the pipeline has not run yet (the message
names the command that builds the results), 4 the property map is invalid or does not fit the data
source's schema (the message names the column and the property), 5 the configuration is invalid (the
message names the environment variable).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
from calendar import monthrange
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta

from tabulate import tabulate

from leads_pipeline.serving import (
    BUILD_COMMAND,
    VERSION_FIELDS,
    HistoryRangeError,
    InvalidLeadIdError,
    LeadNotFoundError,
    LeadsAnalytics,
    PipelineNotRunError,
)
from leads_pipeline.tables import GRAINS

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_BUILT = 3
EXIT_MAP_INVALID = 4
EXIT_CONFIGURATION = 5

FORMATS = ("table", "json", "csv")

_EPILOG = f"""\
examples:
  leads-pipeline counts --by week                         weekly counts, as a table
  leads-pipeline counts --by month --from 2025-01 --to 2025-06 --format csv > h1.csv
  leads-pipeline counts --by week --from 2025-W10 --format json | jq '.[0]'
  leads-pipeline counts --by week --as-of 2025-03-01      the counts as they were then
  leads-pipeline history https://www.notion.so/Lea-Benard-345abbc9cdc74ea38f5eed862620c92b
  leads-pipeline statuses --by month --from 2025-01       leads entering each status
  leads-pipeline cohorts --format csv                     conversion per month of first contact
  leads-pipeline status                                   last sync, watermark, row counts
  leads-pipeline issues --column email                    values to fix in Notion, with links
  LEADS_WAREHOUSE_PATH=/srv/leads/warehouse.duckdb leads-pipeline counts --by month
  leads-pipeline map suggest --output leads_map.toml      a property map for your database
  LEADS_PROPERTY_MAP=leads_map.toml leads-pipeline map check

configuration:
  LEADS_WAREHOUSE_PATH  DuckDB file with the counts (default data/warehouse.duckdb)
  LEADS_LAKE_URI        Delta lake root (default data/lake); --warehouse/--lake override them
  LEADS_SOURCE, NOTION_*, LEADS_PROPERTY_MAP   read by `map`, as by a sync

exit codes:
  0  success
  1  unexpected error (message on stderr)
  2  usage error: unknown option, bad date, --from after --to, --as-of before the
     history begins, a lead id or URL that is malformed or names no lead,
     map suggest --output onto an existing file without --force
  3  the pipeline has not run yet; build the results with:
       {BUILD_COMMAND}
  4  map: the property map is invalid or does not fit the data source's schema
  5  the configuration is invalid (the message names the environment variable)
"""

_MAP_EPILOG = """\
examples:
  leads-pipeline map suggest                              print a map for the data source
  leads-pipeline map suggest --output leads_map.toml      write it (--force to overwrite)
  leads-pipeline map check --map leads_map.toml           which property feeds which column
  LEADS_PROPERTY_MAP=leads_map.toml leads-pipeline map check

The data source is the one a sync reads: Notion when NOTION_* is set (NOTION_TOKEN,
NOTION_DATABASE_ID, NOTION_DATA_SOURCE_ID), else the bundled sample (LEADS_SOURCE=sample).
"""

_COUNTS_EPILOG = """\
dates:
  --from/--to accept a day (2025-01-15), an ISO week (2025-W03) or a month (2025-01).
  A period is kept when it contains or follows --from and contains or precedes --to: with
  --by week, --from 2025-01-01 starts at 2025-W01 (the week holding 1 January), and --to 2025-01
  means up to 31 January. Both bounds are inclusive and optional.
  --as-of 2025-03-01 (midnight UTC) or 2025-03-01T14:30 (UTC unless an offset is given): the
  counts over the leads as lead_history says they were at that moment, for any moment since
  the history's oldest version (not limited by Delta's vacuum retention).

formats:
  table  aligned columns for reading (default)
  json   the old API's JSON: a list of {"semaine"|"mois": ..., "date_prise_contact": n, ...}
  csv    header line then one line per period
"""

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_WEEK = re.compile(r"^(\d{4})-?W(\d{2})$")


def parse_date_bound(text: str, *, upper: bool) -> date:
    """Parses ``--from``/``--to``: a day, an ISO week or a month.

    Args:
        text: ``YYYY-MM-DD``, ``YYYY-Www`` or ``YYYY-MM``.
        upper: Whether this is the upper bound; a week or month then means its last day.

    Returns:
        The day the bound stands for.

    Raises:
        argparse.ArgumentTypeError: If the text is none of these.
    """
    value = text.strip()
    try:
        if match := _MONTH.match(value):
            year, month = int(match[1]), int(match[2])
            return date(year, month, monthrange(year, month)[1] if upper else 1)
        if match := _WEEK.match(value):
            monday = date.fromisocalendar(int(match[1]), int(match[2]), 1)
            return monday + timedelta(days=6) if upper else monday
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            return date.fromisoformat(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r} is not a valid date ({error})") from error
    raise argparse.ArgumentTypeError(
        f"{text!r} is not a date: use YYYY-MM-DD, YYYY-Www (ISO week) or YYYY-MM"
    )


def parse_moment(text: str) -> datetime:
    """Parses ``--as-of``: a day (its midnight UTC) or an ISO datetime (UTC unless an offset).

    Raises:
        argparse.ArgumentTypeError: If the text is neither.
    """
    value = text.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            return datetime.combine(date.fromisoformat(value), time(0), UTC)
        moment = datetime.fromisoformat(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date or datetime: use YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS][+HH:MM]"
        ) from error
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _add_bounds(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--from",
        dest="start",
        metavar="DATE",
        type=lambda text: parse_date_bound(text, upper=False),
        help="first period: the one containing DATE",
    )
    command.add_argument(
        "--to",
        dest="end",
        metavar="DATE",
        type=lambda text: parse_date_bound(text, upper=True),
        help="last period: the one containing DATE",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="leads-pipeline",
        description="Read the leads pipeline's results: the event counts the old API served "
        "(now or as of a past moment), each lead's history, status entries, cohorts, and where "
        "ingestion stands. Read-only: it never blocks a running pipeline. `map` "
        "suggests and checks the property map against the data source's schema.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--warehouse", metavar="PATH", help="DuckDB file (overrides LEADS_WAREHOUSE_PATH)"
    )
    parser.add_argument("--lake", metavar="URI", help="Delta lake root (overrides LEADS_LAKE_URI)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    periods = " or ".join(grain.name for grain in GRAINS)
    counts = commands.add_parser(
        "counts",
        help=f"lead events per {periods}",
        description="Lead events (first contact, reply, call proposed, call booked, follow-up) "
        f"counted per {periods} ({', '.join(grain.period for grain in GRAINS)}), oldest first, "
        "periods without events included.",
        epilog=_COUNTS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    counts.add_argument(
        "--by", choices=[grain.name for grain in GRAINS], required=True, help="period grain"
    )
    _add_bounds(counts)
    counts.add_argument(
        "--as-of",
        dest="as_of",
        metavar="WHEN",
        type=parse_moment,
        help="the counts as they were at WHEN (a date or datetime), from lead_history",
    )
    output = counts.add_mutually_exclusive_group()
    output.add_argument("--format", choices=FORMATS, default="table", help="output format")
    output.add_argument(
        "--json",
        dest="format",
        action="store_const",
        const="json",
        help="same as --format json (kept for compatibility)",
    )

    status = commands.add_parser(
        "status",
        help="last sync, watermark, row counts, Delta versions, quality issues",
        description="Where ingestion stands: the source, when the last sync with changes ran, "
        "the Notion watermark the next sync resumes from, row counts, Delta versions and the "
        "number of values that could not be parsed. Read from Delta logs: cheap, never blocking.",
    )
    status.add_argument("--format", choices=("table", "json"), default="table")
    issues = commands.add_parser(
        "issues",
        help="values in Notion that could not be read, with each lead's Notion link",
        description="The rows of lead_quality_issues, newest first: which lead (page id and "
        "Notion URL, to open and fix it), which column, the raw value and why it could not be "
        "read. Read from the lake; never blocking. Raw values are shown as the lake holds them.",
    )
    issues.add_argument("--column", metavar="C", help="only the issues of column C (e.g. email)")
    issues.add_argument("--format", choices=FORMATS, default="table", help="output format")
    _history_parsers(commands)
    _map_parser(commands)
    return parser


def _history_parsers(commands) -> None:
    history = commands.add_parser(
        "history",
        help="every version of one lead, from lead_history",
        description="Every version of one lead the pipeline has observed, oldest first: when "
        "each began and ended, what changed (created, updated, deleted, restored) and which "
        "columns. The table shows the changed values; json and csv give every column.",
    )
    history.add_argument(
        "lead",
        metavar="LEAD",
        help="the lead's Notion page id (dashes optional) or its Notion URL",
    )
    history.add_argument("--format", choices=FORMATS, default="table", help="output format")
    statuses = commands.add_parser(
        "statuses",
        help="how many leads entered each status per week or month",
        description="Per period and status (in Notion's order), how many leads entered the "
        "status: a lead enters one with its first version or a version whose status differs "
        "from the previous one. The table has one column per status; json and csv one row per "
        "period and status, with the status group.",
        epilog="--from/--to: as for counts (a day, an ISO week or a month; inclusive).",
    )
    statuses.add_argument(
        "--by", choices=[grain.name for grain in GRAINS], required=True, help="period grain"
    )
    _add_bounds(statuses)
    statuses.add_argument("--format", choices=FORMATS, default="table", help="output format")
    cohorts = commands.add_parser(
        "cohorts",
        help="per month of first contact, how many leads replied and booked a call",
        description="One row per month of first contact (date_prise_contact): the cohort's "
        "leads, how many have a reply, a call proposed and a call booked date, the shares, and "
        "the median days from first contact to call booked.",
        epilog="--from/--to: months to keep (a day, an ISO week or a month; inclusive).",
    )
    _add_bounds(cohorts)
    cohorts.add_argument("--format", choices=FORMATS, default="table", help="output format")


def _map_parser(commands) -> None:
    mapping = commands.add_parser(
        "map",
        help="suggest or check the property map against the data source's schema",
        description="The property map says which Notion property feeds which column of leads. "
        "These commands read the schema of the data source a sync reads (same settings, same "
        "token) and never list pages.",
        epilog=_MAP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = mapping.add_subparsers(dest="map_command", required=True, metavar="ACTION")
    suggest = actions.add_parser(
        "suggest",
        help="print a TOML property map matching the data source's properties",
        description="Proposes, for each column of leads, the property that best fits it by type "
        "and by name (French and English names), sets columns without a candidate to false, and "
        "lists every other candidate as a comment.",
    )
    suggest.add_argument("--output", metavar="FILE", help="write the map to FILE, not stdout")
    suggest.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    check = actions.add_parser(
        "check",
        help="validate a property map against the data source's schema",
        description="Resolves the map against the live schema and prints which property (name, "
        "id, Notion type) feeds which column, the disabled columns and the properties kept in "
        "extra_properties. Exit code 4 when the map does not fit.",
    )
    check.add_argument(
        "--map",
        metavar="FILE",
        help="TOML property map (default: LEADS_PROPERTY_MAP, else the built-in map)",
    )


def _print_records(records: list[dict], output_format: str) -> None:
    if output_format == "json":
        print(json.dumps(records, ensure_ascii=False, indent=2))
    elif output_format == "csv":
        if records:
            writer = csv.DictWriter(sys.stdout, fieldnames=list(records[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows(records)
    elif records:
        print(tabulate(records, headers="keys", tablefmt="simple"))
    else:
        print("(no periods in this range)")


#: Columns of ``issues`` output, in order.
ISSUE_FIELDS = ("detected_at", "page_id", "column", "reason", "raw_value", "url")
#: Characters of a raw value in ``issues --format table`` (json and csv give it whole).
_TABLE_RAW_CHARS = 40


def _print_issues(records: list[dict], output_format: str) -> None:
    """Prints ``issues`` output; csv always has its header, even without issues."""
    records = [{name: record[name] for name in ISSUE_FIELDS} for record in records]
    if output_format == "json":
        print(json.dumps(records, ensure_ascii=False, indent=2))
    elif output_format == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=ISSUE_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
    elif records:
        for record in records:
            raw = record["raw_value"]
            if raw is not None and len(raw) > _TABLE_RAW_CHARS:
                record["raw_value"] = raw[: _TABLE_RAW_CHARS - 1] + "…"
        print(tabulate(records, headers="keys", tablefmt="simple", missingval="-"))
    else:
        print("(no quality issues)")


#: Characters of a changed value in ``history --format table``.
_TABLE_VALUE_CHARS = 30


def _short(value: object) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= _TABLE_VALUE_CHARS else text[: _TABLE_VALUE_CHARS - 1] + "…"


def _print_history(records: list[dict], output_format: str) -> None:
    """Prints ``history``: the table shows each version's changed values, json and csv all."""
    if output_format == "json":
        print(json.dumps(records, ensure_ascii=False, indent=2))
        return
    if output_format == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=list(records[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows({**r, "changed_columns": ";".join(r["changed_columns"])} for r in records)
        return
    shown = [
        {
            **{name: record[name] for name in VERSION_FIELDS if name not in ("id", "synced_at")},
            "changed_columns": ", ".join(
                f"{c}={_short(record.get(c))}" for c in record["changed_columns"]
            ),
        }
        for record in records
    ]
    print(f"lead {records[0]['id']}  {records[0].get('url') or ''}".rstrip())
    print(tabulate(shown, headers="keys", tablefmt="simple", missingval="-"))


def _print_status_entries(records: list[dict], output_format: str) -> None:
    """Prints ``statuses``: a table with one column per status, json/csv one row per pair."""
    if output_format != "table" or not records:
        _print_records(records, output_format)
        return
    label = next(iter(records[0]))
    rows: dict[str, dict] = {}
    for record in records:
        rows.setdefault(record[label], {label: record[label]})[record["statut"]] = record["entries"]
    print(tabulate(list(rows.values()), headers="keys", tablefmt="simple"))


class _Refused(Exception):
    """A request the command declines (e.g. overwriting a file); exit code 2."""


def _schema_of_source(settings) -> tuple[dict, str]:
    """Reads the schema of the data source a sync would read, and says which one it is."""
    import dagster as dg

    from leads_pipeline.defs.resources import build_source
    from leads_pipeline.settings import SOURCE_SAMPLE

    # Initialised as a run would initialise it, so that EnvVar("NOTION_TOKEN") is resolved.
    with dg.build_resources({"source": build_source(settings)}) as resources:
        source = resources.source
        schema = dict(source.data_source_schema())
        identity = source.identity()
    if settings.source == SOURCE_SAMPLE:
        origin = f"the bundled sample data source {identity.removeprefix('sample:')}"
    else:
        database = settings.notion_database_id
        origin = f"Notion data source {identity.removeprefix('notion:')} of database {database}"
    return schema, origin


def _map_suggest(args: argparse.Namespace) -> None:
    from leads_pipeline.settings import load_settings
    from leads_pipeline.transform.map_advisor import render_toml, suggest_map

    settings = load_settings()
    if args.output and os.path.exists(args.output) and not args.force:
        raise _Refused(f"{args.output} exists; pass --force to overwrite it.")
    schema, origin = _schema_of_source(settings)
    suggestion = suggest_map(schema)
    text = render_toml(suggestion, schema, origin)
    chosen = suggestion.chosen()
    if chosen["nom"] is None:
        print(
            "leads-pipeline: warning: the data source has no title property: set nom to a text "
            "property by hand.",
            file=sys.stderr,
        )
    if not args.output:
        sys.stdout.write(text)
        return
    with open(args.output, "w" if args.force else "x", encoding="utf-8") as handle:
        handle.write(text)
    disabled = [column for column, name in chosen.items() if name is None]
    print(
        f"Wrote {args.output}: {len(chosen) - len(disabled)} columns mapped, {len(disabled)} "
        f"disabled{' (' + ', '.join(disabled) + ')' if disabled else ''}. Review it, then: "
        f"export LEADS_PROPERTY_MAP={args.output} && leads-pipeline map check",
        file=sys.stderr,
    )


def _map_check(args: argparse.Namespace) -> None:
    from leads_pipeline.settings import load_settings
    from leads_pipeline.transform.map_advisor import check_report, render_check
    from leads_pipeline.transform.property_map import PropertyMapError, load_property_map, resolve

    settings = load_settings()
    path = args.map or settings.property_map_path
    if args.map:
        map_origin = f"{args.map} (--map)"
    elif path:
        map_origin = f"{path} (LEADS_PROPERTY_MAP)"
    else:
        map_origin = "the built-in default map"
    mapping = load_property_map(path)
    schema, origin = _schema_of_source(settings)
    try:
        columns = resolve(mapping, schema)
    except PropertyMapError as error:
        raise PropertyMapError(f"{map_origin} does not fit {origin}: {error}") from error
    sys.stdout.write(render_check(check_report(columns, schema), map_origin, origin))


def _run(args: argparse.Namespace) -> None:
    if args.command == "map":
        (_map_suggest if args.map_command == "suggest" else _map_check)(args)
        return
    from leads_pipeline.settings import load_settings

    settings = load_settings()
    analytics = LeadsAnalytics(
        warehouse_path=args.warehouse or settings.warehouse_path,
        lake_uri=args.lake or settings.lake_uri,
    )
    if args.command == "counts":
        rows = analytics.counts(by=args.by, start=args.start, end=args.end, as_of=args.as_of)
        _print_records([row.model_dump(mode="json") for row in rows], args.format)
    elif args.command == "history":
        versions = analytics.lead_history(args.lead)
        _print_history([v.model_dump(mode="json") for v in versions], args.format)
    elif args.command == "statuses":
        rows = analytics.status_entries(by=args.by, start=args.start, end=args.end)
        _print_status_entries([row.model_dump(mode="json") for row in rows], args.format)
    elif args.command == "cohorts":
        rows = analytics.cohorts(start=args.start, end=args.end)
        _print_records([row.model_dump(mode="json") for row in rows], args.format)
    elif args.command == "status":
        status = analytics.ingestion_status().model_dump(mode="json")
        if args.format == "json":
            print(json.dumps(status, ensure_ascii=False, indent=2))
        else:
            print(tabulate(list(status.items()), tablefmt="plain", missingval="-"))
    elif args.command == "issues":
        issues = analytics.quality_issues(column=args.column)
        _print_issues([issue.model_dump(mode="json") for issue in issues], args.format)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line.

    Args:
        argv: Arguments without the program name; ``sys.argv[1:]`` when omitted.

    Returns:
        The exit code (see the module docstring); never raises ``SystemExit`` itself.
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse: --help (0) or a usage error (2)
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    if getattr(args, "start", None) and getattr(args, "end", None) and args.start > args.end:
        try:
            parser.error(f"--from ({args.start}) is after --to ({args.end})")
        except SystemExit:
            return EXIT_USAGE
    from leads_pipeline.settings import ConfigurationError
    from leads_pipeline.transform.property_map import PropertyMapError

    try:
        _run(args)
    except PipelineNotRunError as error:
        print(f"leads-pipeline: {error}", file=sys.stderr)
        return EXIT_NOT_BUILT
    except PropertyMapError as error:
        print(f"leads-pipeline: invalid property map: {error}", file=sys.stderr)
        return EXIT_MAP_INVALID
    except ConfigurationError as error:
        print(f"leads-pipeline: configuration error: {error}", file=sys.stderr)
        return EXIT_CONFIGURATION
    except (_Refused, InvalidLeadIdError, LeadNotFoundError, HistoryRangeError) as error:
        print(f"leads-pipeline: {error}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # e.g. piped into `head`: not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except Exception as error:
        print(f"leads-pipeline: error: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
