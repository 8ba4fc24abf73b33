"""Environment configuration: the variables of DESIGN.md, read and validated in one place."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

SOURCE_SAMPLE = "sample"
SOURCE_NOTION = "notion"
SOURCES = (SOURCE_SAMPLE, SOURCE_NOTION)

DEFAULT_LAKE_URI = "data/lake"
DEFAULT_WAREHOUSE_PATH = "data/warehouse.duckdb"
DEFAULT_NOTION_API_BASE_URL = "https://api.notion.com"

#: Notion API versions the pipeline speaks, oldest first; the first is the default.
NOTION_API_VERSIONS = ("2025-09-03", "2026-03-11")
DEFAULT_NOTION_API_VERSION = NOTION_API_VERSIONS[0]
_VERSION_FORMAT = re.compile(r"\d{4}-\d{2}-\d{2}")

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
        notion_api_version: The ``Notion-Version`` sent with every request (one of
            :data:`NOTION_API_VERSIONS`).
    """

    source: str
    lake_uri: str
    warehouse_path: str
    property_map_path: str | None
    notion_database_id: str | None
    notion_data_source_id: str | None
    notion_api_base_url: str
    notion_token_set: bool
    notion_api_version: str = DEFAULT_NOTION_API_VERSION


def check_notion_api_version(value: str, variable: str = "NOTION_API_VERSION") -> str:
    """Validates a Notion API version: only the versions the pipeline was built and tested for.

    A newer version may return less than the pipeline needs (from 2026-12-01, queries return only
    the title unless ``filter_properties`` lists the properties wanted); an older one predates
    data sources, which the listing reads.

    Args:
        value: The version, ``YYYY-MM-DD``.
        variable: What holds it, named in the error.

    Returns:
        ``value``, stripped.

    Raises:
        ConfigurationError: If ``value`` is not one of :data:`NOTION_API_VERSIONS`.
    """
    version = value.strip()
    if version in NOTION_API_VERSIONS:
        return version
    if not _VERSION_FORMAT.fullmatch(version):
        what = "is not a Notion API version (they are dates, YYYY-MM-DD)"
    elif version > NOTION_API_VERSIONS[-1]:
        what = "is newer than the versions this pipeline supports"
    elif version < NOTION_API_VERSIONS[0]:
        what = "is older than the versions this pipeline supports"
    else:
        what = "is not one of the versions this pipeline supports"
    raise ConfigurationError(
        f"{variable}={value!r} {what}: use {' or '.join(NOTION_API_VERSIONS)} (default "
        f"{DEFAULT_NOTION_API_VERSION}). Only tested versions are accepted because a newer one may "
        "return fewer properties (from 2026-12-01, queries return only the title unless "
        "filter_properties is passed, which would leave the leads' columns empty), and versions "
        f"before {NOTION_API_VERSIONS[0]} predate data sources, which the listing reads."
    )


_USERINFO = re.compile(r"(?<=//)[^/?#@]*@")


def _url_problem(url: str) -> str:
    """What makes ``url`` unusable as the API root, or an empty string if nothing does."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number in range
    except ValueError as error:
        return f"it cannot be parsed as a URL ({error})"
    if not parts.scheme:
        return "it does not start with http:// or https://"
    if parts.scheme.lower() not in ("http", "https"):
        return f"its scheme is {parts.scheme!r}, not http or https"
    if not parts.hostname:
        return "it names no host"
    if any(character.isspace() for character in url):
        return "it holds spaces"
    if parts.query or parts.fragment:
        return "it has a query or fragment (the client appends /v1/... to it)"
    return ""


def check_notion_api_base_url(value: str, variable: str = "NOTION_API_BASE_URL") -> str:
    """Validates the Notion API root: an absolute ``http``/``https`` URL with a host.

    A path is allowed (a proxy may serve the API under one); the client appends ``/v1/...``.
    Without this check a value such as ``not a url`` would only fail at the first request, as a
    connection error retried for ``max_retry_seconds``.

    Args:
        value: The URL.
        variable: What holds it, named in the error.

    Returns:
        ``value``, stripped.

    Raises:
        ConfigurationError: If ``value`` is not such a URL (any password in it is masked).
    """
    url = value.strip()
    problem = _url_problem(url)
    if problem:
        shown = _USERINFO.sub("***@", url)
        raise ConfigurationError(
            f"{variable}={shown!r} is not a usable Notion API URL: {problem}. Give an absolute "
            f"http(s) URL with a host, such as {DEFAULT_NOTION_API_BASE_URL} (the default) or "
            "http://127.0.0.1:8080 for a proxy; unset it to use the default."
        )
    return url


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
        notion_api_base_url=check_notion_api_base_url(
            _get(env, "NOTION_API_BASE_URL") or DEFAULT_NOTION_API_BASE_URL
        ),
        notion_token_set=_get(env, "NOTION_TOKEN") is not None,
        notion_api_version=check_notion_api_version(
            _get(env, "NOTION_API_VERSION") or DEFAULT_NOTION_API_VERSION
        ),
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
