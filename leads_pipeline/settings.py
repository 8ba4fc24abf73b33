"""Environment configuration: the variables of DESIGN.md, read and validated in one place."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

SOURCE_SAMPLE = "sample"
SOURCE_NOTION = "notion"
SOURCES = (SOURCE_SAMPLE, SOURCE_NOTION)

DEFAULT_LAKE_URI = "data/lake"
DEFAULT_WAREHOUSE_PATH = "data/warehouse.duckdb"
DEFAULT_NOTION_API_BASE_URL = "https://api.notion.com"

NOTION_VARIABLES = (
    "NOTION_TOKEN",
    "NOTION_DATABASE_ID",
    "NOTION_DATA_SOURCE_ID",
    "NOTION_API_BASE_URL",
)


class ConfigurationError(ValueError):
    """Raised when the environment configuration is inconsistent; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    """The pipeline's configuration, resolved from environment variables.

    Attributes:
        source: ``"sample"`` or ``"notion"``.
        lake_uri: Root of the Delta lake (local path or ``s3://``/``gs://``/``az://`` URI).
        warehouse_path: Path of the DuckDB database file.
        property_map_path: Optional TOML file mapping Notion properties to columns.
        notion_database_id: Database id or URL (Notion source only).
        notion_data_source_id: Data source to read when the database has several.
        notion_api_base_url: API root.
        notion_token_set: Whether ``NOTION_TOKEN`` is set; the token itself is never held here.
    """

    source: str
    lake_uri: str
    warehouse_path: str
    property_map_path: str | None
    notion_database_id: str | None
    notion_data_source_id: str | None
    notion_api_base_url: str
    notion_token_set: bool


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None or not value.strip():
        return None
    return value.strip()


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Reads and validates the configuration.

    Args:
        env: Environment to read; ``os.environ`` when omitted.

    Returns:
        The resolved settings.

    Raises:
        ConfigurationError: If a variable holds an invalid value or a required one is missing.
    """
    env = os.environ if env is None else env
    explicit = _get(env, "LEADS_SOURCE")
    any_notion = any(_get(env, name) for name in NOTION_VARIABLES)
    if explicit is None:
        source = SOURCE_NOTION if any_notion else SOURCE_SAMPLE
    else:
        source = explicit.lower()
        if source not in SOURCES:
            raise ConfigurationError(
                f"LEADS_SOURCE={explicit!r} is not valid: use one of {', '.join(SOURCES)}."
            )
    settings = Settings(
        source=source,
        lake_uri=_get(env, "LEADS_LAKE_URI") or DEFAULT_LAKE_URI,
        warehouse_path=_get(env, "LEADS_WAREHOUSE_PATH") or DEFAULT_WAREHOUSE_PATH,
        property_map_path=_get(env, "LEADS_PROPERTY_MAP"),
        notion_database_id=_get(env, "NOTION_DATABASE_ID"),
        notion_data_source_id=_get(env, "NOTION_DATA_SOURCE_ID"),
        notion_api_base_url=_get(env, "NOTION_API_BASE_URL") or DEFAULT_NOTION_API_BASE_URL,
        notion_token_set=_get(env, "NOTION_TOKEN") is not None,
    )
    if source == SOURCE_NOTION:
        missing = [
            name
            for name, present in (
                ("NOTION_TOKEN", settings.notion_token_set),
                ("NOTION_DATABASE_ID", settings.notion_database_id is not None),
            )
            if not present
        ]
        if missing:
            why = (
                "LEADS_SOURCE=notion"
                if explicit
                else "a NOTION_* variable is set, so the source is notion"
            )
            raise ConfigurationError(
                f"{why}, but {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set. "
                "Set it, or set LEADS_SOURCE=sample to run on the bundled sample data."
            )
    return settings
