"""The chart shown on the count assets in the Dagster UI: the last 12 months of the funnel."""

import base64
import io
from datetime import date

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from leads_pipeline.tables import EVENT_COLUMNS

#: How far back the chart looks, in months.
CHART_MONTHS = 12

_LABELS = {
    "date_prise_contact": "first contact",
    "date_reponse_prospect": "prospect's reply",
    "date_appel_propose": "call proposed",
    "date_appel_booke": "call booked",
    "date_relance": "follow-up",
}


def _months_before(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 - months
    return date(index // 12, index % 12 + 1, 1)


def last_months(counts: pa.Table, start_column: str, months: int = CHART_MONTHS) -> pa.Table:
    """The rows of ``counts`` in the last ``months`` calendar months up to its last period."""
    if counts.num_rows == 0:
        return counts
    last = counts[start_column][-1].as_py()
    first = _months_before(date(last.year, last.month, 1), months - 1)
    return counts.filter(pc.greater_equal(counts[start_column], pa.scalar(first, pa.date32())))


def event_counts_png(counts: pa.Table, title: str) -> bytes:
    """A PNG line chart of the five event counts, one line per funnel step.

    Args:
        counts: Rows of a count table: a label column, a start-date column, the event columns.
        title: Chart title.
    """
    start_column = counts.column_names[1]
    rows = last_months(counts, start_column)
    # Imported here: matplotlib costs most of a second, which every load of the definitions paid.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 3.6), dpi=90)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    x = rows[start_column].to_pylist()
    for column in EVENT_COLUMNS:
        axes.plot(x, rows[column].to_pylist(), marker=".", label=_LABELS.get(column, column))
    axes.set_title(title)
    axes.set_ylabel("leads")
    axes.grid(alpha=0.3)
    axes.set_ylim(bottom=0)
    axes.legend(
        loc="upper center", bbox_to_anchor=(0.5, -0.12), ncols=5, fontsize="small", frameon=False
    )
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def chart_metadata(png: bytes | None) -> dg.MarkdownMetadataValue:
    """A chart as markdown metadata (an inline PNG), which the Dagster UI renders.

    Args:
        png: The chart from :func:`event_counts_png`; None when there is nothing to chart.
    """
    if png is None:
        return dg.MetadataValue.md("_(no events yet: nothing to chart)_")
    encoded = base64.b64encode(png).decode("ascii")
    return dg.MetadataValue.md(f"![chart](data:image/png;base64,{encoded})")
