"""Environment configuration: defaults, source selection and errors that name the variable."""

import os
import re
import subprocess
import sys
from dataclasses import FrozenInstanceError, fields
from pathlib import Path

import dagster as dg
import pytest

from leads_pipeline import settings as settings_module
from leads_pipeline.defs.resources import build_source
from leads_pipeline.settings import VARIABLES, ConfigurationError, Settings, load_settings
from leads_pipeline.sources.notion import NotionLeadsSource
from leads_pipeline.sources.sample_data import SAMPLE_SCHEMA
from leads_pipeline.transform.property_map import PropertyMapError, load_property_map, resolve


def test_defaults_run_on_sample_data():
    settings = load_settings({})
    assert settings.source == "sample"
    assert settings.lake_uri == "data/lake"
    assert settings.warehouse_path == "data/warehouse.duckdb"
    assert settings.notion_api_base_url == "https://api.notion.com"


def test_any_notion_variable_selects_notion():
    settings = load_settings({"NOTION_TOKEN": "secret_x", "NOTION_DATABASE_ID": "db"})
    assert settings.source == "notion"
    assert settings.notion_token_set


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LEADS_SOURCE": "csv"}, "LEADS_SOURCE"),
        ({"LEADS_SOURCE": "notion"}, "NOTION_TOKEN and NOTION_DATABASE_ID"),
        ({"NOTION_TOKEN": "secret_x"}, "NOTION_DATABASE_ID"),
    ],
)
def test_misconfiguration_names_the_variable(env, message):
    with pytest.raises(ConfigurationError, match=message):
        load_settings(env)


def test_error_never_contains_the_token():
    with pytest.raises(ConfigurationError) as error:
        load_settings({"NOTION_TOKEN": "secret_token_value"})
    assert "secret_token_value" not in str(error.value)


def test_property_map_file_extends_and_overrides_defaults(tmp_path):
    path = tmp_path / "map.toml"
    path.write_text(
        '[columns]\nnom = "Entreprise"\n\n[columns.source]\nproperty = "Source"\nkind = "option"\n',
        encoding="utf-8",
    )
    mapping = load_property_map(path)
    columns = {c.column: c for c in resolve(mapping, SAMPLE_SCHEMA)}
    assert columns["nom"].property_name == "Entreprise"
    assert columns["source"].notion_type == "select"
    assert mapping.fingerprint() != load_property_map().fingerprint()


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[columns]\nnom = "Inconnue"\n', "Inconnue"),
        ('[columns]\ndate_relance = "Email"\n', "'Email', of type 'email'"),
        ('[columns.x]\nproperty = "Score"\nkind = "float"\n', "unknown kind 'float'"),
        ('[columns.id]\nproperty = "Score"\nkind = "number"\n', "reserved"),
        ("columns = 3\n", "needs a \\[columns\\] table"),
        ("[columns\n", "not valid TOML"),
    ],
)
def test_bad_property_maps_fail_naming_the_culprit(tmp_path, toml, message):
    path = tmp_path / "map.toml"
    path.write_text(toml, encoding="utf-8")
    with pytest.raises(PropertyMapError, match=message):
        resolve(load_property_map(path), SAMPLE_SCHEMA)


def test_missing_property_map_file_names_the_variable(tmp_path):
    with pytest.raises(PropertyMapError, match="LEADS_PROPERTY_MAP"):
        load_property_map(tmp_path / "absent.toml")


def test_the_notion_api_version_defaults_to_2025_09_03_and_2026_03_11_is_supported():
    assert load_settings({}).notion_api_version == "2025-09-03"
    assert load_settings({"NOTION_API_VERSION": " 2026-03-11 "}).notion_api_version == "2026-03-11"
    assert load_settings({"NOTION_API_VERSION": "2025-09-03"}).notion_api_version == "2025-09-03"


def test_the_api_version_reaches_the_notion_source():
    """The setting becomes the source's ``api_version``, sent by notion-client as Notion-Version
    (the header itself is checked against the fake server in test_notion_versions)."""
    notion = {"NOTION_TOKEN": "secret_x", "NOTION_DATABASE_ID": "db"}
    source = build_source(load_settings({**notion, "NOTION_API_VERSION": "2026-03-11"}))
    assert source.api_version == "2026-03-11"
    assert build_source(load_settings(notion)).api_version == "2025-09-03"
    client = NotionLeadsSource(token="secret_x", api_version="2026-03-11").client()
    assert client.options.notion_version == "2026-03-11"


def test_the_api_version_alone_does_not_select_the_notion_source():
    assert load_settings({"NOTION_API_VERSION": "2026-03-11"}).source == "sample"


@pytest.mark.parametrize(
    ("version", "why"),
    [
        ("2026-12-01", "is newer than the versions this pipeline supports"),
        ("2027-01-15", "is newer than the versions this pipeline supports"),
        ("2022-06-28", "is older than the versions this pipeline supports"),
        ("2026-01-15", "is not one of the versions this pipeline supports"),
        ("latest", "is not a Notion API version"),
    ],
)
def test_an_unsupported_api_version_is_refused_at_load_saying_why(version, why):
    with pytest.raises(ConfigurationError) as caught:
        load_settings({"NOTION_API_VERSION": version})
    message = str(caught.value)
    assert message.startswith(f"NOTION_API_VERSION={version!r} {why}")
    assert "use 2025-09-03 or 2026-03-11" in message
    assert "may return fewer properties" in message and "filter_properties" in message
    assert "predate data sources" in message


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("not a url", "it does not start with http:// or https://"),
        ("api.notion.com", "it does not start with http:// or https://"),
        ("ftp://api.notion.com", "its scheme is 'ftp', not http or https"),
        ("https://", "it names no host"),
        ("http://127.0.0.1:99999", "Port out of range"),
        ("http://[::1", "cannot be parsed as a URL"),
        ("https://api.notion .com", "it holds spaces"),
        ("https://api.notion.com/?v=1", "it has a query or fragment"),
    ],
)
def test_an_unusable_api_url_fails_at_load_naming_the_variable(url, why):
    """Before, any of these failed only at the first request, retried as a connection error."""
    env = {"NOTION_TOKEN": "secret_x", "NOTION_DATABASE_ID": "db", "NOTION_API_BASE_URL": url}
    with pytest.raises(ConfigurationError) as caught:
        load_settings(env)
    message = str(caught.value)
    assert message.startswith(f"NOTION_API_BASE_URL={url!r} is not a usable Notion API URL: ")
    assert why in message and "https://api.notion.com" in message
    with pytest.raises(ConfigurationError, match="NOTION_API_BASE_URL"):
        load_settings({"NOTION_API_BASE_URL": url})  # whichever the source


@pytest.mark.parametrize(
    "url",
    [
        "https://api.notion.com",
        "http://127.0.0.1:8080",
        "HTTPS://proxy.example/notion/",
        " http://h ",
    ],
)
def test_usable_api_urls_are_accepted(url):
    env = {"NOTION_TOKEN": "secret_x", "NOTION_DATABASE_ID": "db", "NOTION_API_BASE_URL": url}
    assert load_settings(env).notion_api_base_url == url.strip()
    assert NotionLeadsSource(token="x", api_base_url=url).api_base_url == url.strip()


def test_a_password_in_an_unusable_api_url_is_masked():
    with pytest.raises(ConfigurationError) as caught:
        load_settings({"NOTION_API_BASE_URL": "http://user:hunter2@proxy:99999"})
    assert "hunter2" not in str(caught.value) and "http://***@proxy:99999" in str(caught.value)


def _probe_asset():
    @dg.asset
    def probe(source: NotionLeadsSource) -> None:
        assert source.api_base_url

    return probe


def _resource_init_error(result) -> str:
    return "\n".join(
        event.event_specific_data.error.to_string()
        for event in result.all_events
        if event.event_type_value == "RESOURCE_INIT_FAILURE"
    )


def test_the_source_refuses_an_unusable_api_url_however_it_is_given(monkeypatch):
    """Direct construction, an EnvVar (checked once resolved, at run start) and run config."""
    with pytest.raises(ValueError, match=r"api_base_url \(NOTION_API_BASE_URL\)='not a url'"):
        NotionLeadsSource(token="x", api_base_url="not a url")

    monkeypatch.setenv("LEADS_TEST_API_URL", "not a url")
    from_env = NotionLeadsSource(token="x", api_base_url=dg.EnvVar("LEADS_TEST_API_URL"))
    result = dg.materialize([_probe_asset()], resources={"source": from_env}, raise_on_error=False)
    assert not result.success
    assert "api_base_url (NOTION_API_BASE_URL)='not a url'" in _resource_init_error(result)
    monkeypatch.setenv("LEADS_TEST_API_URL", "http://127.0.0.1:9")
    assert dg.materialize([_probe_asset()], resources={"source": from_env}).success

    at_launch = NotionLeadsSource.configure_at_launch()
    config = {"resources": {"source": {"config": {"token": "x", "api_base_url": "nope"}}}}
    result = dg.materialize(
        [_probe_asset()], resources={"source": at_launch}, run_config=config, raise_on_error=False
    )
    assert not result.success
    assert "api_base_url (NOTION_API_BASE_URL)='nope'" in _resource_init_error(result)


# -- tuning knobs of the Notion source ---------------------------------------------------------

#: Each knob's variable, its default (as the README documents it) and a valid non-default value.
TUNING = {
    "requests_per_second": ("NOTION_REQUESTS_PER_SECOND", 3, "0.5", 0.5),
    "page_size": ("NOTION_PAGE_SIZE", 100, " 7 ", 7),
    "timeout_seconds": ("NOTION_TIMEOUT_SECONDS", 60, "2.5", 2.5),
    "max_retry_seconds": ("NOTION_MAX_RETRY_SECONDS", 1800, "0", 0.0),
    "max_backoff_seconds": ("NOTION_MAX_BACKOFF_SECONDS", 60, "1e-2", 0.01),
    "progress_interval_seconds": ("NOTION_PROGRESS_INTERVAL_SECONDS", 10, "30", 30.0),
}
NOTION = {"NOTION_TOKEN": "secret_x", "NOTION_DATABASE_ID": "db"}


def _tuning(settings) -> dict:
    return {name: getattr(settings.notion_tuning, name) for name in TUNING}


def test_tuning_defaults_are_the_documented_ones_for_the_settings_and_the_source():
    documented = {name: default for name, (_, default, _, _) in TUNING.items()}
    assert _tuning(load_settings({})) == documented
    source = NotionLeadsSource(token="x")
    assert {name: getattr(source, name) for name in TUNING} == documented
    source = build_source(load_settings(NOTION))
    assert {name: getattr(source, name) for name in TUNING} == documented


def test_every_tuning_variable_is_read_and_reaches_the_notion_source(monkeypatch):
    env = {variable: text for variable, _, text, _ in TUNING.values()}
    expected = {name: value for name, (_, _, _, value) in TUNING.items()}
    assert _tuning(load_settings(env)) == expected
    assert isinstance(load_settings(env).notion_tuning.page_size, int)
    source = build_source(load_settings({**NOTION, **env}))
    assert isinstance(source, NotionLeadsSource)
    assert {name: getattr(source, name) for name in TUNING} == expected
    monkeypatch.setenv("NOTION_TOKEN", "secret_x")
    with dg.build_resources({"source": source}) as resources:  # as a run builds it
        assert {name: getattr(resources.source, name) for name in TUNING} == expected
        assert resources.source.client().options.timeout_ms == 2500


@pytest.mark.parametrize("name", list(TUNING))
def test_each_tuning_variable_alone_changes_only_its_knob_and_keeps_the_sample(name):
    variable, _, text, value = TUNING[name]
    settings = load_settings({variable: text})
    assert settings.source == "sample"
    documented = {knob: default for knob, (_, default, _, _) in TUNING.items()}
    assert _tuning(settings) == {**documented, name: value}


def test_an_empty_tuning_variable_means_the_default():
    assert load_settings({"NOTION_PAGE_SIZE": "  "}).notion_tuning.page_size == 100


@pytest.mark.parametrize(
    ("variable", "value", "why", "rule"),
    [
        ("NOTION_PAGE_SIZE", "0", "greater than or equal to 1", "a whole number from 1 to 100"),
        ("NOTION_PAGE_SIZE", "101", "less than or equal to 100", "a whole number from 1 to 100"),
        ("NOTION_PAGE_SIZE", "7.5", "valid integer", "a whole number from 1 to 100"),
        ("NOTION_PAGE_SIZE", "many", "valid integer", "a whole number from 1 to 100"),
        ("NOTION_REQUESTS_PER_SECOND", "-1", "greater than or equal to 0", "0 or more"),
        ("NOTION_REQUESTS_PER_SECOND", "inf", "finite number", "0 or more"),
        ("NOTION_REQUESTS_PER_SECOND", "3/s", "valid number", "0 or more"),
        ("NOTION_TIMEOUT_SECONDS", "0", "greater than 0", "above 0"),
        ("NOTION_TIMEOUT_SECONDS", "-5", "greater than 0", "above 0"),
        ("NOTION_MAX_RETRY_SECONDS", "-1", "greater than or equal to 0", "0 or more"),
        ("NOTION_MAX_RETRY_SECONDS", "nan", "finite number", "0 or more"),
        ("NOTION_MAX_BACKOFF_SECONDS", "0", "greater than 0", "above 0"),
        ("NOTION_PROGRESS_INTERVAL_SECONDS", "-0.1", "greater than or equal to 0", "0 or more"),
    ],
)
def test_a_bad_tuning_value_fails_at_load_naming_the_variable(variable, value, why, rule):
    for env in ({variable: value}, {**NOTION, variable: value}):  # whichever the source
        with pytest.raises(ConfigurationError) as caught:
            load_settings(env)
        message = str(caught.value)
        assert message.startswith(f"{variable}={value!r} is not valid (")
        assert why in message and rule in message
        assert "unset it to use the default" in message


# -- one configuration -------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
#: A variable name in quotes or backticks (a name the settings module defines is not one).
_NAME = re.compile(r"[`'\"]((?:LEADS|NOTION)_[A-Z][A-Z0-9_]*)[`'\"]")


def test_every_variable_named_in_the_settings_module_is_read():
    source = Path(settings_module.__file__).read_text(encoding="utf-8")
    named = {name for name in _NAME.findall(source) if not hasattr(settings_module, name)}
    assert len(named) >= 20
    assert named <= set(VARIABLES)
    assert len(set(VARIABLES)) == len(VARIABLES)


def _readme_table_variables() -> set[str]:
    """The variables of the first column of the README's configuration table."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `((?:LEADS|NOTION)_[A-Z0-9_]+)` \|", section, flags=re.MULTILINE))


def test_every_documented_variable_is_read():
    table = _readme_table_variables()
    assert {"LEADS_SOURCE", "NOTION_TOKEN", "NOTION_PAGE_SIZE"} <= table
    assert table <= set(VARIABLES)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    mentioned = set(re.findall(r"`((?:LEADS|NOTION)_[A-Z][A-Z0-9_]*)", readme))
    assert "LEADS_SYNC_CRON" in mentioned
    assert {name for name in mentioned if not name.startswith("LEADS_TEST_")} <= set(VARIABLES)


def test_the_settings_are_frozen_and_their_defaults_are_an_empty_environment():
    settings = load_settings({})
    assert settings == Settings()
    with pytest.raises(FrozenInstanceError):
        settings.sync_cron = "* * * * *"  # type: ignore[misc]
    assert {spec.name for spec in fields(Settings)} >= {
        "sync_cron",
        "refresh_cron",
        "maintain_cron",
        "sensor_interval_seconds",
        "freshness_fail_minutes",
        "freshness_warn_minutes",
        "quality_max_share",
        "sample_day",
    }


def test_every_further_setting_is_read_once_at_load():
    env = {
        "LEADS_SYNC_CRON": " */5 * * * * ",
        "LEADS_REFRESH_CRON": "0 3 * * *",
        "LEADS_MAINTAIN_CRON": "0 5 * * 6",
        "LEADS_SENSOR_INTERVAL_SECONDS": "90",
        "LEADS_FRESHNESS_FAIL_MINUTES": "30",
        "LEADS_FRESHNESS_WARN_MINUTES": "10",
        "LEADS_QUALITY_ISSUES_MAX_SHARE": "0.25",
        "LEADS_SAMPLE_DAY": "3",
    }
    settings = load_settings(env)
    assert (settings.sync_cron, settings.refresh_cron, settings.maintain_cron) == (
        "*/5 * * * *",
        "0 3 * * *",
        "0 5 * * 6",
    )
    assert settings.sensor_interval_seconds == 90
    assert (settings.freshness_fail_minutes, settings.freshness_warn_minutes) == (30, 10)
    assert settings.quality_max_share == 0.25
    assert settings.sample_day == 3
    # The warn window's default follows the fail window: no warning when it would not be shorter.
    assert load_settings({"LEADS_FRESHNESS_FAIL_MINUTES": "45"}).freshness_warn_minutes == 0
    assert load_settings({}).freshness_warn_minutes == 60


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LEADS_SAMPLE_DAY", "-1"),
        ("LEADS_SAMPLE_DAY", "tomorrow"),
        ("LEADS_SENSOR_INTERVAL_SECONDS", "0"),
        ("LEADS_FRESHNESS_FAIL_MINUTES", "inf"),
        ("LEADS_FRESHNESS_WARN_MINUTES", "-1"),
        ("LEADS_QUALITY_ISSUES_MAX_SHARE", "1.5"),
    ],
)
def test_a_bad_further_setting_fails_at_load_naming_the_variable(variable, value):
    with pytest.raises(ConfigurationError) as caught:
        load_settings({variable: value})
    assert str(caught.value).startswith(f"{variable}={value!r} is not valid (")
    assert "unset it to use the default" in str(caught.value)


def test_the_sample_day_reaches_the_sample_source():
    assert build_source(load_settings({"LEADS_SAMPLE_DAY": "2"})).day == 2
    assert build_source(load_settings({})).day is None


def test_no_variable_of_the_developer_reaches_a_test():
    """Alone, it checks the environment fixture; run by the test below, the whole isolation."""
    assert not [name for name in VARIABLES if name in os.environ]
    assert load_settings() == Settings()
    import leads_pipeline.definitions as definitions  # imported as test modules import it

    crons = {s.name: s.cron_schedule for s in definitions.defs.schedules}
    assert crons["sync_leads_schedule"] == Settings().sync_cron == "*/15 * * * *"


def test_a_developer_setting_does_not_leak_into_tests():
    """A developer's own LEADS_SYNC_CRON (and every other setting) stays out of the tests."""
    developer = {name: "not a value" for name in VARIABLES}
    developer["LEADS_SYNC_CRON"] = "*/5 * * * *"
    node = f"{Path(__file__).relative_to(ROOT)}::test_no_variable_of_the_developer_reaches_a_test"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", node],
        cwd=ROOT,
        env={**os.environ, **developer},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "1 passed" in run.stdout
