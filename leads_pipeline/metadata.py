"""Helpers that turn results into Dagster metadata the UI can show."""

from __future__ import annotations

import dagster as dg
import pyarrow as pa
from tabulate import tabulate


def markdown_preview(
    table: pa.Table, limit: int = 10, tail: bool = False
) -> dg.MarkdownMetadataValue:
    """A markdown table of the first (or last) ``limit`` rows."""
    if table.num_rows == 0:
        return dg.MetadataValue.md("_(no rows)_")
    rows = table.slice(max(table.num_rows - limit, 0)) if tail else table.slice(0, limit)
    text = tabulate(rows.to_pylist(), headers="keys", tablefmt="github", missingval="∅")
    return dg.MetadataValue.md(text)
