"""``leads-pipeline``: read the pipeline's results from the shell.

Exit codes: 0 success, 1 unexpected error, 2 usage error (bad option or date), 3 the pipeline has
not run yet (the message names the command that builds the results).
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
from datetime import date, timedelta

from tabulate import tabulate

from leads_pipeline.serving import BUILD_COMMAND, LeadsAnalytics, PipelineNotRunError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_BUILT = 3

FORMATS = ("table", "json", "csv")

_EPILOG = f"""\
examples:
  leads-pipeline counts --by week                         weekly counts, as a table
  leads-pipeline counts --by month --from 2025-01 --to 2025-06 --format csv > h1.csv
  leads-pipeline counts --by week --from 2025-W10 --format json | jq '.[0]'
  leads-pipeline status                                   last sync, watermark, row counts
  LEADS_WAREHOUSE_PATH=/srv/leads/warehouse.duckdb leads-pipeline counts --by month

configuration:
  LEADS_WAREHOUSE_PATH  DuckDB file with the counts (default data/warehouse.duckdb)
  LEADS_LAKE_URI        Delta lake root (default data/lake); --warehouse/--lake override them

exit codes:
  0  success
  1  unexpected error (message on stderr)
  2  usage error: unknown option, bad date, --from after --to
  3  the pipeline has not run yet; build the results with:
       {BUILD_COMMAND}
"""

_COUNTS_EPILOG = """\
dates:
  --from/--to accept a day (2025-01-15), an ISO week (2025-W03) or a month (2025-01).
  A period is kept when it contains or follows --from and contains or precedes --to: with
  --by week, --from 2025-01-01 starts at 2025-W01 (the week holding 1 January), and --to 2025-01
  means up to 31 January. Both bounds are inclusive and optional.

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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="leads-pipeline",
        description="Read the leads pipeline's results: the event counts the old API served, "
        "and where ingestion stands. Read-only: it never blocks a running pipeline.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--warehouse", metavar="PATH", help="DuckDB file (overrides LEADS_WAREHOUSE_PATH)"
    )
    parser.add_argument("--lake", metavar="URI", help="Delta lake root (overrides LEADS_LAKE_URI)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    counts = commands.add_parser(
        "counts",
        help="lead events per ISO week or calendar month",
        description="Lead events (first contact, reply, call proposed, call booked, follow-up) "
        "counted per ISO week or calendar month, oldest first, periods without events included.",
        epilog=_COUNTS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    counts.add_argument("--by", choices=("week", "month"), required=True, help="period grain")
    counts.add_argument(
        "--from",
        dest="start",
        metavar="DATE",
        type=lambda text: parse_date_bound(text, upper=False),
        help="first period: the one containing DATE",
    )
    counts.add_argument(
        "--to",
        dest="end",
        metavar="DATE",
        type=lambda text: parse_date_bound(text, upper=True),
        help="last period: the one containing DATE",
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
    return parser


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


def _run(args: argparse.Namespace) -> None:
    analytics = LeadsAnalytics(
        warehouse_path=args.warehouse
        or os.environ.get("LEADS_WAREHOUSE_PATH")
        or LeadsAnalytics.model_fields["warehouse_path"].default,
        lake_uri=args.lake
        or os.environ.get("LEADS_LAKE_URI")
        or LeadsAnalytics.model_fields["lake_uri"].default,
    )
    if args.command == "counts":
        query = analytics.count_date_by_week if args.by == "week" else analytics.count_date_by_month
        rows = query(start=args.start, end=args.end)
        _print_records([row.model_dump(mode="json") for row in rows], args.format)
    elif args.command == "status":
        status = analytics.ingestion_status().model_dump(mode="json")
        if args.format == "json":
            print(json.dumps(status, ensure_ascii=False, indent=2))
        else:
            print(tabulate(list(status.items()), tablefmt="plain", missingval="-"))


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
    try:
        _run(args)
    except PipelineNotRunError as error:
        print(f"leads-pipeline: {error}", file=sys.stderr)
        return EXIT_NOT_BUILT
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
