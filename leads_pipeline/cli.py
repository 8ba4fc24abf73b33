"""``leads-pipeline``: read the pipeline's results from the shell.

Exit codes: 0 success, 1 unexpected error, 2 usage error, 3 the pipeline has not run yet.
"""

from __future__ import annotations

import argparse
import json
import sys

from tabulate import tabulate

from leads_pipeline.serving import LeadsAnalytics, PipelineNotRunError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_NOT_BUILT = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="leads-pipeline",
        description="Read the leads pipeline's results (the counts the old API served). "
        "Locations come from LEADS_WAREHOUSE_PATH and LEADS_LAKE_URI.",
        epilog="Build the results first: dagster job execute -m leads_pipeline.definitions -j sync_leads",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    counts = commands.add_parser(
        "counts",
        help="lead events per week or per month",
        description="Lead events (first contact, reply, call proposed, call booked, follow-up) "
        "counted per ISO week or calendar month.",
    )
    counts.add_argument("--by", choices=("week", "month"), required=True, help="period grain")
    counts.add_argument(
        "--json", action="store_true", help="print the old API's JSON instead of a table"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit code."""
    args = _parser().parse_args(argv)
    analytics = LeadsAnalytics.from_env()
    try:
        if args.command == "counts":
            rows = (
                analytics.count_date_by_week()
                if args.by == "week"
                else analytics.count_date_by_month()
            )
            records = [row.model_dump(mode="json") for row in rows]
            if args.json:
                print(json.dumps(records, ensure_ascii=False, indent=2))
            else:
                print(tabulate(records, headers="keys", tablefmt="simple"))
    except PipelineNotRunError as error:
        print(f"leads-pipeline: {error}", file=sys.stderr)
        return EXIT_NOT_BUILT
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
