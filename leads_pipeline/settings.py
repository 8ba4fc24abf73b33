"""Environment configuration: the variables of DESIGN.md, read and validated in one place."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field, TypeAdapter, ValidationError

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

#: The variables that point the pipeline at a Notion database: setting any of them makes
#: ``notion`` the default source. ``NOTION_API_VERSION`` and the tuning variables below only
#: adjust how Notion is read, so they leave the sample as the default.
NOTION_VARIABLES = (
    "NOTION_TOKEN",
    "NOTION_DATABASE_ID",
    "NOTION_DATA_SOURCE_ID",
    "NOTION_API_BASE_URL",
)

# The tuning knobs' types, shared by the environment variables (checked at load) and the Notion
# source's fields (checked when a run builds the resource, e.g. from launchpad config).
#: Requests per second: 0 turns pacing off.
RequestRate = Annotated[float, Field(ge=0, allow_inf_nan=False)]
#: Pages per query: Notion returns at most 100.
QueryPageSize = Annotated[int, Field(ge=1, le=100)]
#: A duration that must be positive (a timeout, a backoff cap).
PositiveSeconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
#: A duration that may be 0 (a retry budget, an interval between log lines).
NonNegativeSeconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]


@dataclass(frozen=True)
class NotionTuning:
    """How the Notion source paces, pages, waits and reports; the defaults are its own.

    Each attribute is the field of the same name of ``NotionLeadsSource`` and is set by the
    environment variable of :data:`NOTION_TUNING_KNOBS`.

    Attributes:
        requests_per_second: Average request rate (Notion allows 3); 0 turns pacing off.
        page_size: Pages per query request, 1 to 100.
        timeout_seconds: Timeout of one HTTP request.
        max_retry_seconds: Give up on a request still failing (429, 5xx, timeouts) after this
            long; 0 gives up at the first failure.
        max_backoff_seconds: Cap of the exponential backoff between retries (not of the
            ``Retry-After`` Notion asks for).
        progress_interval_seconds: Minimum seconds between two progress lines in the run log;
            0 reports after every batch of answers.
    """

    requests_per_second: float = 3.0
    page_size: int = 100
    timeout_seconds: float = 60.0
    max_retry_seconds: float = 1800.0
    max_backoff_seconds: float = 60.0
    progress_interval_seconds: float = 10.0


@dataclass(frozen=True)
class TuningKnob:
    """One tuning knob: the source field, its variable, its type and its rule in words."""

    field: str
    variable: str
    kind: Any
    rule: str


NOTION_TUNING_KNOBS = (
    TuningKnob(
        "requests_per_second",
        "NOTION_REQUESTS_PER_SECOND",
        RequestRate,
        "a number of requests per second, 0 or more (0 turns pacing off)",
    ),
    TuningKnob("page_size", "NOTION_PAGE_SIZE", QueryPageSize, "a whole number from 1 to 100"),
    TuningKnob(
        "timeout_seconds", "NOTION_TIMEOUT_SECONDS", PositiveSeconds, "a number of seconds above 0"
    ),
    TuningKnob(
        "max_retry_seconds",
        "NOTION_MAX_RETRY_SECONDS",
        NonNegativeSeconds,
        "a number of seconds, 0 or more (0 gives up at the first failure)",
    ),
    TuningKnob(
        "max_backoff_seconds",
        "NOTION_MAX_BACKOFF_SECONDS",
        PositiveSeconds,
        "a number of seconds above 0",
    ),
    TuningKnob(
        "progress_interval_seconds",
        "NOTION_PROGRESS_INTERVAL_SECONDS",
        NonNegativeSeconds,
        "a number of seconds, 0 or more (0 reports after every batch of answers)",
    ),
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
        notion_tuning: The Notion source's knobs (``NOTION_REQUESTS_PER_SECOND``...).
        full_previews: Whether materialization previews show customer data (names, emails,
            phones) in full (``LEADS_FULL_PREVIEWS``; off by default, for a development lake).
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
    notion_tuning: NotionTuning = field(default_factory=NotionTuning)
    full_previews: bool = False


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def full_previews_enabled(env: Mapping[str, str] | None = None) -> bool:
    """Reads ``LEADS_FULL_PREVIEWS``: whether previews may show names, emails and phones.

    Args:
        env: Environment to read; ``os.environ`` when omitted.

    Returns:
        True for ``1``/``true``/``yes``/``on``; False when unset or ``0``/``false``/``no``/``off``.

    Raises:
        ConfigurationError: If the variable holds another value.
    """
    text = _get(os.environ if env is None else env, "LEADS_FULL_PREVIEWS")
    if text is None or text.lower() in _FALSE:
        return False
    if text.lower() in _TRUE:
        return True
    raise ConfigurationError(
        f"LEADS_FULL_PREVIEWS={text!r} is not valid: use true or false (default false: previews "
        "mask names, emails and phones; true shows them, for a development lake only)."
    )


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


def check_tuning_value(knob: TuningKnob, value: str) -> float | int:
    """Parses and validates one tuning variable.

    Args:
        knob: The knob the variable sets.
        value: The variable's text, stripped.

    Returns:
        The value, an ``int`` for ``page_size`` and a ``float`` otherwise.

    Raises:
        ConfigurationError: If ``value`` is not a number within the knob's range; the message
            names the variable and the default.
    """
    try:
        return TypeAdapter(knob.kind).validate_python(value)
    except ValidationError as error:
        why = error.errors()[0]["msg"]
        default = getattr(NotionTuning, knob.field)
        raise ConfigurationError(
            f"{knob.variable}={value!r} is not valid ({why[0].lower()}{why[1:]}): give "
            f"{knob.rule}. It sets the Notion source's {knob.field}; unset it to use the "
            f"default, {default:g}."
        ) from None


def load_notion_tuning(env: Mapping[str, str]) -> NotionTuning:
    """Reads the tuning variables of :data:`NOTION_TUNING_KNOBS`; unset ones keep the default.

    Args:
        env: Environment to read.

    Returns:
        The knobs' values.

    Raises:
        ConfigurationError: If a variable holds an invalid value (see :func:`check_tuning_value`).
    """
    values = {}
    for knob in NOTION_TUNING_KNOBS:
        text = _get(env, knob.variable)
        if text is not None:
            values[knob.field] = check_tuning_value(knob, text)
    return NotionTuning(**values)


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
        notion_tuning=load_notion_tuning(env),
        full_previews=full_previews_enabled(env),
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
