"""The FastAPI-free serving layer: event counts in the old API's JSON shapes.

``LeadsAnalytics`` is a Dagster resource and a plain object at once::

    from leads_pipeline.serving import LeadsAnalytics
    analytics = LeadsAnalytics.from_env()
    [week.model_dump(mode="json") for week in analytics.count_date_by_week()]
"""

from __future__ import annotations

import os

import dagster as dg
from pydantic import BaseModel, Field

from leads_pipeline.settings import DEFAULT_LAKE_URI, DEFAULT_WAREHOUSE_PATH
from leads_pipeline.warehouse import MONTHLY_TABLE, WEEKLY_TABLE, Warehouse, WarehouseNotBuiltError


class WeeklyEventCount(BaseModel):
    """One week of the old ``GET /api/v1/transformation/count_date_by_week``."""

    semaine: str = Field(description="ISO 8601 week with its ISO year, e.g. 2025-W01.")
    date_prise_contact: int
    date_reponse_prospect: int
    date_appel_booke: int
    date_appel_propose: int
    date_relance: int


class MonthlyEventCount(BaseModel):
    """One month of the old ``GET /api/v1/transformation/count_date_by_month``."""

    mois: str = Field(description="Calendar month, e.g. 2025-01.")
    date_prise_contact: int
    date_reponse_prospect: int
    date_appel_booke: int
    date_appel_propose: int
    date_relance: int


class PipelineNotRunError(WarehouseNotBuiltError):
    """The counts asked for have not been materialized yet."""


class LeadsAnalytics(dg.ConfigurableResource):
    """Read-only access to the pipeline's results, inside Dagster or in any Python code.

    Attributes:
        warehouse_path: The DuckDB file written by the count assets.
        lake_uri: The Delta lake root.
    """

    warehouse_path: str = DEFAULT_WAREHOUSE_PATH
    lake_uri: str = DEFAULT_LAKE_URI

    @classmethod
    def from_env(cls) -> LeadsAnalytics:
        """An instance configured from ``LEADS_WAREHOUSE_PATH`` and ``LEADS_LAKE_URI``."""
        return cls(
            warehouse_path=os.environ.get("LEADS_WAREHOUSE_PATH") or DEFAULT_WAREHOUSE_PATH,
            lake_uri=os.environ.get("LEADS_LAKE_URI") or DEFAULT_LAKE_URI,
        )

    def _rows(self, table: str) -> list[dict]:
        try:
            with Warehouse(self.warehouse_path).read() as con:
                result = con.execute(f"SELECT * FROM {table} ORDER BY 2")
                names = [d[0] for d in result.description]
                return [dict(zip(names, row, strict=True)) for row in result.fetchall()]
        except WarehouseNotBuiltError as error:
            raise PipelineNotRunError(str(error)) from error
        except Exception as error:
            if "does not exist" in str(error):
                raise PipelineNotRunError(
                    f"{table} is not in {self.warehouse_path} yet. Build it with: "
                    "dagster job execute -m leads_pipeline.definitions -j sync_leads"
                ) from error
            raise

    def count_date_by_week(self) -> list[WeeklyEventCount]:
        """Event counts per ISO week, oldest first, in the old API's shape."""
        return [WeeklyEventCount(**row) for row in self._rows(WEEKLY_TABLE)]

    def count_date_by_month(self) -> list[MonthlyEventCount]:
        """Event counts per calendar month, oldest first, in the old API's shape."""
        return [MonthlyEventCount(**row) for row in self._rows(MONTHLY_TABLE)]
