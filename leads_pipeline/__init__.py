"""leads_pipeline: a Notion "Leads" database turned into Delta Lake tables and DuckDB event counts."""

__version__ = "0.1.0"
