"""The pipeline's configuration: every environment variable it reads, parsed once, here.

Each setting is a field of :class:`Settings` (or of its :class:`NotionTuning`) declared with the
variable that sets it, the type its text must validate as (a pydantic type with its constraints)
and its rule in words; :data:`VARIABLES` lists them all. :func:`load_settings` reads them once and
fails on the first bad value with a message naming the variable. Nothing else in the package reads
the environment: the definitions load the settings and hand them to what they build.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field, TypeAdapter, ValidationError

#: The sales team's time zone: schedules run in it, "today" and "last week" are judged in it.
TIMEZONE = "Europe/Paris"

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
#: ``notion`` the default source. ``NOTION_API_VERSION`` and the tuning variables only adjust how
#: Notion is read, so they leave the sample as the default.
NOTION_VARIABLES = (
    "NOTION_TOKEN",
    "NOTION_DATABASE_ID",
    "NOTION_DATA_SOURCE_ID",
    "NOTION_API_BASE_URL",
)

#: Every 15 minutes.
DEFAULT_SYNC_CRON = "*/15 * * * *"
#: Every night at 02:30, out of office hours and away from the daylight-saving switch at 02:00.
DEFAULT_REFRESH_CRON = "30 2 * * *"
#: Sundays at 04:00, after the nightly refresh.
DEFAULT_MAINTAIN_CRON = "0 4 * * 0"
DEFAULT_SENSOR_INTERVAL_SECONDS = 60
#: ``leads`` fails its freshness policy when not materialized for 2 hours (8 missed syncs) …
DEFAULT_FRESHNESS_FAIL_MINUTES = 120
#: … and warns after 1 hour (when the fail window is longer than that).
DEFAULT_FRESHNESS_WARN_MINUTES = 60
#: At most 5 % of leads may have a value that could not be read.
DEFAULT_QUALITY_MAX_SHARE = 0.05
#: Who owns the assets, as the Dagster UI shows it (``LEADS_OWNERS``).
DEFAULT_OWNERS = ("team:sales-analytics",)
#: The branch code references link to when ``LEADS_GIT_URL`` is set.
DEFAULT_GIT_BRANCH = "main"
_TEAM_OWNER = re.compile(r"team:[A-Za-z0-9_.-]+")
_EMAIL_OWNER = re.compile(r"[^@\s,]+@[^@\s,]+\.[^@\s,]+")

# The knobs' types, shared by the environment variables (checked at load) and the Notion source's
# fields (checked when a run builds the resource, e.g. from launchpad config).
#: Requests per second: 0 turns pacing off.
RequestRate = Annotated[float, Field(ge=0, allow_inf_nan=False)]
#: Pages per query: Notion returns at most 100.
QueryPageSize = Annotated[int, Field(ge=1, le=100)]
#: A duration that must be positive (a timeout, a backoff cap).
PositiveSeconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
#: A duration that may be 0 (a retry budget, an interval between log lines).
NonNegativeSeconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
#: A positive whole number of seconds (the sensor's interval).
PositiveWholeSeconds = Annotated[int, Field(ge=1)]
#: A number of minutes, at least 1 (a freshness fail window).
FailMinutes = Annotated[float, Field(ge=1, allow_inf_nan=False)]
#: A number of minutes, 0 or more (a freshness warn window; 0 means no warning).
WarnMinutes = Annotated[float, Field(ge=0, allow_inf_nan=False)]
#: A share, from 0 to 1.
Share = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
#: A day of the sample's evolution: 0 is the sample as generated.
SampleDay = Annotated[int, Field(ge=0)]


class ConfigurationError(ValueError):
    """Raised when the environment configuration is inconsistent; the message names the variable."""


@dataclass(frozen=True)
class Variable:
    """One environment variable and how its text becomes the setting it declares.

    Attributes:
        name: The variable.
        kind: The type its text is validated as (constraints included); ``None`` when a function
            of this module reads it (``parse``, or :func:`load_settings` itself).
        rule: What a valid value is, in words (for the error message).
        sets: What the value sets, in words (for the error message).
        parse: Turns the (stripped, non-empty) text into the value, raising
            :class:`ConfigurationError`; used instead of ``kind``.
    """

    name: str
    kind: Any = None
    rule: str = ""
    sets: str = ""
    parse: Callable[[str, Variable, Any], Any] | None = None

    def read(self, env: Mapping[str, str], default: Any) -> Any:
        """The value ``env`` gives this variable, ``default`` when it is unset or blank.

        Raises:
            ConfigurationError: If the text is not a valid value; the message names the variable,
                its rule and its default.
        """
        text = _get(env, self.name)
        if text is None:
            return default
        if self.parse is not None:
            return self.parse(text, self, default)
        try:
            return _adapter(self.kind).validate_python(text)
        except ValidationError as error:
            why = error.errors()[0]["msg"]
            shown = "" if default is None else f", {_shown(default)}"
            raise ConfigurationError(
                f"{self.name}={text!r} is not valid ({why[0].lower()}{why[1:]}): give "
                f"{self.rule}. It sets {self.sets}; unset it to use the default{shown}."
            ) from None


_ADAPTERS: dict[Any, TypeAdapter] = {}


def _adapter(kind: Any) -> TypeAdapter:
    if kind not in _ADAPTERS:
        _ADAPTERS[kind] = TypeAdapter(kind)
    return _ADAPTERS[kind]


def _shown(default: Any) -> str:
    if isinstance(default, int | float) and not isinstance(default, bool):
        return f"{default:g}"
    return repr(default)


_VARIABLE = "variable"
_GROUP = "group"


def _setting(default: Any, name: str, kind: Any = None, rule: str = "", sets: str = "", **kw):
    """A dataclass field holding the setting of variable ``name`` (see :class:`Variable`)."""
    variable = Variable(name, kind, rule, sets, kw.pop("parse", None))
    return field(default=default, metadata={_VARIABLE: variable}, **kw)


def _tuning(default: float, name: str, kind: Any, rule: str, knob: str):
    return _setting(default, name, kind, rule, f"the Notion source's {knob}")


@dataclass(frozen=True)
class NotionTuning:
    """How the Notion source paces, pages, waits and reports; the defaults are its own.

    Each attribute is the field of the same name of ``NotionLeadsSource``, set by the environment
    variable its declaration names (``NOTION_REQUESTS_PER_SECOND``...).

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

    requests_per_second: float = _tuning(
        3.0,
        "NOTION_REQUESTS_PER_SECOND",
        RequestRate,
        "a number of requests per second, 0 or more (0 turns pacing off)",
        "requests_per_second",
    )
    page_size: int = _tuning(
        100, "NOTION_PAGE_SIZE", QueryPageSize, "a whole number from 1 to 100", "page_size"
    )
    timeout_seconds: float = _tuning(
        60.0,
        "NOTION_TIMEOUT_SECONDS",
        PositiveSeconds,
        "a number of seconds above 0",
        "timeout_seconds",
    )
    max_retry_seconds: float = _tuning(
        1800.0,
        "NOTION_MAX_RETRY_SECONDS",
        NonNegativeSeconds,
        "a number of seconds, 0 or more (0 gives up at the first failure)",
        "max_retry_seconds",
    )
    max_backoff_seconds: float = _tuning(
        60.0,
        "NOTION_MAX_BACKOFF_SECONDS",
        PositiveSeconds,
        "a number of seconds above 0",
        "max_backoff_seconds",
    )
    progress_interval_seconds: float = _tuning(
        10.0,
        "NOTION_PROGRESS_INTERVAL_SECONDS",
        NonNegativeSeconds,
        "a number of seconds, 0 or more (0 reports after every batch of answers)",
        "progress_interval_seconds",
    )


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _parse_full_previews(text: str, variable: Variable, default: bool) -> bool:
    if text.lower() in _FALSE:
        return False
    if text.lower() in _TRUE:
        return True
    raise ConfigurationError(
        f"{variable.name}={text!r} is not valid: use true or false (default false: previews "
        "mask names, emails and phones; true shows them, for a development lake only)."
    )


def _parse_cron(text: str, variable: Variable, default: str) -> str:
    import dagster as dg  # only when a cron is set: the settings load without Dagster otherwise

    try:
        dg.ScheduleDefinition(name="cron_probe", cron_schedule=text, job_name="cron_probe")
    except dg.DagsterInvalidDefinitionError as error:
        raise ConfigurationError(
            f"{variable.name}={text!r} is not a valid cron expression (five fields, e.g. "
            f"{default!r}). Fix it or unset {variable.name} to use the default."
        ) from error
    return text


def _parse_api_version(text: str, variable: Variable, default: str) -> str:
    return check_notion_api_version(text, variable.name)


def _parse_api_base_url(text: str, variable: Variable, default: str) -> str:
    return check_notion_api_base_url(text, variable.name)


def _is_set(text: str, variable: Variable, default: bool) -> bool:
    return True


def _parse_owners(text: str, variable: Variable, default: tuple[str, ...]) -> tuple[str, ...]:
    owners = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    bad = [o for o in owners if not (_TEAM_OWNER.fullmatch(o) or _EMAIL_OWNER.fullmatch(o))]
    if bad or not owners:
        raise ConfigurationError(
            f"{variable.name}={text!r} is not valid: {', '.join(map(repr, bad)) or 'no owner'} "
            "is neither a team (team:name) nor an email address. Give a comma-separated list, "
            f"e.g. 'team:sales-analytics,jane@example.com'; unset it to use the default "
            f"{','.join(default)!r}."
        )
    return owners


def _parse_git_url(text: str, variable: Variable, default: str | None) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(
            f"{variable.name}={text!r} is not valid: give the repository's web address, e.g. "
            "'https://github.com/acme/leads_pipeline' (code references link into it); unset it "
            "to link them to the local files only."
        )
    return text.rstrip("/")


def _cron(default: str, name: str, job: str):
    return _setting(default, name, parse=_parse_cron, sets=f"the cron of {job}'s schedule")


#: The deltalake S3 option that chooses how commits are made, when set as an environment
#: variable (any case; ``CONDITIONAL_PUT`` too): the lake then leaves the choice to the user.
CONDITIONAL_PUT_VARIABLE = "AWS_CONDITIONAL_PUT"
_CONDITIONAL_PUT_NAMES = {"aws_conditional_put", "conditional_put"}


@dataclass(frozen=True)
class Settings:
    """The pipeline's configuration, resolved from environment variables.

    Every attribute is declared with the variable that sets it (see :data:`VARIABLES`); the
    defaults are those of an empty environment.

    Attributes:
        source: ``"sample"`` or ``"notion"`` (``LEADS_SOURCE``; default ``notion`` when any of
            :data:`NOTION_VARIABLES` is set, else ``sample``).
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
        sync_cron: Cron of ``sync_leads_schedule`` (``LEADS_SYNC_CRON``).
        refresh_cron: Cron of ``refresh_leads_schedule`` (``LEADS_REFRESH_CRON``).
        maintain_cron: Cron of ``maintain_lake_schedule`` (``LEADS_MAINTAIN_CRON``).
        sensor_interval_seconds: Seconds between two ticks of ``notion_changes_sensor``.
        freshness_fail_minutes: ``leads`` fails its freshness policy after this long without a
            materialization (``LEADS_FRESHNESS_FAIL_MINUTES``).
        freshness_warn_minutes: … and warns after this long; 0 means no warning
            (``LEADS_FRESHNESS_WARN_MINUTES``; default 60 when the fail window is longer, else 0).
        quality_max_share: The largest share of leads with an unreadable value that passes the
            ``share_of_leads_with_issues`` check (``LEADS_QUALITY_ISSUES_MAX_SHARE``).
        sample_day: The day of the sample's deterministic evolution (``LEADS_SAMPLE_DAY``): 0 is
            the sample as generated, N the sample after N simulated days; ``None`` leaves the
            sample source's own default.
        conditional_put_in_environment: Whether the environment sets deltalake's S3
            ``conditional_put`` option itself (``AWS_CONDITIONAL_PUT``, any case).
        owners: The owners of every asset (``LEADS_OWNERS``, comma-separated teams
            ``team:name`` or email addresses; default ``team:sales-analytics``).
        git_url: The repository's web address (``LEADS_GIT_URL``): code references link to the
            source files there; ``None`` links them to the local files only.
        git_branch: The branch (or commit) those links point at (``LEADS_GIT_BRANCH``).
    """

    source: str = _setting(SOURCE_SAMPLE, "LEADS_SOURCE")
    lake_uri: str = _setting(DEFAULT_LAKE_URI, "LEADS_LAKE_URI", str)
    warehouse_path: str = _setting(DEFAULT_WAREHOUSE_PATH, "LEADS_WAREHOUSE_PATH", str)
    property_map_path: str | None = _setting(None, "LEADS_PROPERTY_MAP", str)
    notion_database_id: str | None = _setting(None, "NOTION_DATABASE_ID", str)
    notion_data_source_id: str | None = _setting(None, "NOTION_DATA_SOURCE_ID", str)
    notion_api_base_url: str = _setting(
        DEFAULT_NOTION_API_BASE_URL, "NOTION_API_BASE_URL", parse=_parse_api_base_url
    )
    notion_token_set: bool = _setting(False, "NOTION_TOKEN", parse=_is_set)
    notion_api_version: str = _setting(
        DEFAULT_NOTION_API_VERSION, "NOTION_API_VERSION", parse=_parse_api_version
    )
    notion_tuning: NotionTuning = field(default_factory=NotionTuning, metadata={_GROUP: True})
    full_previews: bool = _setting(False, "LEADS_FULL_PREVIEWS", parse=_parse_full_previews)
    sync_cron: str = _cron(DEFAULT_SYNC_CRON, "LEADS_SYNC_CRON", "sync_leads")
    refresh_cron: str = _cron(DEFAULT_REFRESH_CRON, "LEADS_REFRESH_CRON", "refresh_leads")
    maintain_cron: str = _cron(DEFAULT_MAINTAIN_CRON, "LEADS_MAINTAIN_CRON", "maintain_lake")
    sensor_interval_seconds: int = _setting(
        DEFAULT_SENSOR_INTERVAL_SECONDS,
        "LEADS_SENSOR_INTERVAL_SECONDS",
        PositiveWholeSeconds,
        "a positive whole number of seconds",
        "the interval between two ticks of notion_changes_sensor",
    )
    freshness_fail_minutes: float = _setting(
        DEFAULT_FRESHNESS_FAIL_MINUTES,
        "LEADS_FRESHNESS_FAIL_MINUTES",
        FailMinutes,
        "a number of minutes ≥ 1",
        "the fail window of the freshness policy of leads",
    )
    freshness_warn_minutes: float = _setting(
        DEFAULT_FRESHNESS_WARN_MINUTES,
        "LEADS_FRESHNESS_WARN_MINUTES",
        WarnMinutes,
        "a number of minutes ≥ 0 (0 means no warning)",
        "the warn window of the freshness policy of leads",
    )
    quality_max_share: float = _setting(
        DEFAULT_QUALITY_MAX_SHARE,
        "LEADS_QUALITY_ISSUES_MAX_SHARE",
        Share,
        "a number between 0 and 1",
        "the largest share of leads with quality issues that passes share_of_leads_with_issues",
    )
    sample_day: int | None = _setting(
        None,
        "LEADS_SAMPLE_DAY",
        SampleDay,
        "a whole number of days, 0 or more",
        "the day of the sample's evolution (0: the sample as generated)",
    )
    conditional_put_in_environment: bool = _setting(False, CONDITIONAL_PUT_VARIABLE)
    owners: tuple[str, ...] = _setting(
        DEFAULT_OWNERS, "LEADS_OWNERS", parse=_parse_owners, sets="the owners of every asset"
    )
    git_url: str | None = _setting(None, "LEADS_GIT_URL", parse=_parse_git_url)
    git_branch: str = _setting(
        DEFAULT_GIT_BRANCH, "LEADS_GIT_BRANCH", str, "a branch name", "the branch code links use"
    )


def _variables(cls: type) -> tuple[str, ...]:
    names: list[str] = []
    for spec in fields(cls):
        if spec.metadata.get(_GROUP):
            names.extend(_variables(spec.default_factory))  # type: ignore[arg-type]
        elif _VARIABLE in spec.metadata:
            names.append(spec.metadata[_VARIABLE].name)
    return tuple(names)


#: Every environment variable the settings read, in declaration order.
VARIABLES: tuple[str, ...] = _variables(Settings)


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None or not value.strip():
        return None
    return value.strip()


def _read_fields(cls: type, env: Mapping[str, str]) -> dict[str, Any]:
    """The attributes of ``cls`` its variables set in ``env`` (those with a ``kind`` or ``parse``)."""
    values: dict[str, Any] = {}
    for spec in fields(cls):
        variable = spec.metadata.get(_VARIABLE)
        if spec.metadata.get(_GROUP):
            group = spec.default_factory  # type: ignore[misc]
            values[spec.name] = group(**_read_fields(group, env))
        elif variable is not None and (variable.kind is not None or variable.parse is not None):
            values[spec.name] = variable.read(env, spec.default)
    return values


def full_previews_enabled(env: Mapping[str, str] | None = None) -> bool:
    """Reads ``LEADS_FULL_PREVIEWS``: whether previews may show names, emails and phones.

    For code that runs without the settings object (an asset body); the same field of
    :class:`Settings` parses it.

    Args:
        env: Environment to read; ``os.environ`` when omitted.

    Returns:
        True for ``1``/``true``/``yes``/``on``; False when unset or ``0``/``false``/``no``/``off``.

    Raises:
        ConfigurationError: If the variable holds another value.
    """
    return _field_value("full_previews", os.environ if env is None else env)


def conditional_put_in_environment(env: Mapping[str, str] | None = None) -> bool:
    """Whether the environment sets deltalake's S3 ``conditional_put`` option itself.

    deltalake reads ``AWS_CONDITIONAL_PUT`` (or ``CONDITIONAL_PUT``, any case) from the
    environment; the lake asks for conditional writes only when neither is given.

    Args:
        env: Environment to read; ``os.environ`` when omitted.
    """
    names = os.environ if env is None else env
    return any(name.lower() in _CONDITIONAL_PUT_NAMES for name in names)


def _field(attribute: str) -> Any:
    return next(spec for spec in fields(Settings) if spec.name == attribute)


def _field_value(attribute: str, env: Mapping[str, str]) -> Any:
    spec = _field(attribute)
    return spec.metadata[_VARIABLE].read(env, spec.default)


def variable_of(attribute: str) -> str:
    """The environment variable that sets the attribute ``attribute`` of :class:`Settings`.

    Args:
        attribute: An attribute of :class:`Settings`, e.g. ``"sync_cron"``.

    Returns:
        Its variable's name, e.g. ``"LEADS_SYNC_CRON"``.
    """
    return _field(attribute).metadata[_VARIABLE].name


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


def _source(env: Mapping[str, str]) -> tuple[str, bool]:
    """The source, and whether ``LEADS_SOURCE`` chose it explicitly."""
    explicit = _get(env, "LEADS_SOURCE")
    if explicit is None:
        any_notion = any(_get(env, name) for name in NOTION_VARIABLES)
        return (SOURCE_NOTION if any_notion else SOURCE_SAMPLE), False
    source = explicit.lower()
    if source not in SOURCES:
        raise ConfigurationError(
            f"LEADS_SOURCE={explicit!r} is not valid: use one of {', '.join(SOURCES)}."
        )
    return source, True


def _freshness_warn(env: Mapping[str, str], fail: float, warn: float) -> float:
    """The warn window: its default depends on the fail window, and it must stay below it."""
    if _get(env, "LEADS_FRESHNESS_WARN_MINUTES") is None:
        return DEFAULT_FRESHNESS_WARN_MINUTES if fail > DEFAULT_FRESHNESS_WARN_MINUTES else 0
    if warn and not 1 <= warn < fail:
        raise ConfigurationError(
            f"LEADS_FRESHNESS_WARN_MINUTES={warn:g} must be 0 (no warning) or at least 1 and less "
            f"than LEADS_FRESHNESS_FAIL_MINUTES={fail:g} minutes."
        )
    return warn


def _check_notion_complete(settings: Settings, explicit: bool) -> None:
    """With the Notion source, the token and the database must be set."""
    if settings.source != SOURCE_NOTION:
        return
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


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Reads and validates the configuration, every variable of :data:`VARIABLES`.

    Args:
        env: Environment to read; ``os.environ`` when omitted.

    Returns:
        The resolved settings.

    Raises:
        ConfigurationError: If a variable holds an invalid value or a required one is missing;
            the message names the variable.
    """
    env = os.environ if env is None else env
    source, explicit = _source(env)
    values = _read_fields(Settings, env)
    values["freshness_warn_minutes"] = _freshness_warn(
        env, values["freshness_fail_minutes"], values["freshness_warn_minutes"]
    )
    settings = Settings(
        source=source, conditional_put_in_environment=conditional_put_in_environment(env), **values
    )
    _check_notion_complete(settings, explicit)
    return settings


def as_settings(given: Settings | Mapping[str, str] | None = None) -> Settings:
    """``given`` when it is settings already, else the settings loaded from it.

    Args:
        given: Settings, an environment to load them from, or ``None`` for ``os.environ``.
    """
    return given if isinstance(given, Settings) else load_settings(given)
