"""Environment configuration: defaults, source selection and errors that name the variable."""

import pytest

from leads_pipeline.property_map import PropertyMapError, load_property_map, resolve
from leads_pipeline.sample_data import SAMPLE_SCHEMA
from leads_pipeline.settings import ConfigurationError, load_settings


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
