"""Standard metadata (issue 14, items 3 and 7): column schemas, table names, URIs, owners, kinds,
code references, the schema-change check of ``leads``, legible metadata names and one summary line
per step in the run log.

The project's own definitions run ``sync_leads`` on the bundled sample in a temporary lake and
warehouse; the schemas they report are compared with the tables read back with deltalake and
DuckDB directly, and their types named here independently of the code.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from deltalake import DeltaTable

from leads_pipeline.defs.assets import ingestion
from leads_pipeline.defs.checks import SCHEMA_CHANGE_CHECK, leads_column_schema_unchanged
from leads_pipeline.defs.resources import LakeResource, PropertyMapResource, WarehouseResource
from leads_pipeline.sources.sample import SampleLeadsSource

ROOT = Path(__file__).resolve().parents[2]
DELTA_TABLES = ("raw_notion_leads", "leads", "lead_quality_issues", "lead_history")
PII = {"nom", "email", "telephone"}
#: The contract's event columns: French codes that must not name metadata entries.
EVENT_CODES = (
    "date_prise_contact",
    "date_reponse_prospect",
    "date_appel_propose",
    "date_appel_booke",
    "date_relance",
)


def load_defs() -> dg.Definitions:
    import leads_pipeline.definitions as module

    return importlib.reload(module).defs


def asset_nodes(defs: dg.Definitions) -> dict[str, object]:
    graph = defs.resolve_asset_graph()
    return {key.to_user_string(): graph.get(key) for key in graph.get_all_asset_keys()}


def columns_of(schema: dg.TableSchema) -> list[tuple[str, str]]:
    return [(column.name, column.type) for column in schema.columns]


def delta_name(arrow_type) -> str:
    """Delta's name of a column type, from the Arrow type deltalake reads (independent mapping)."""
    text = str(arrow_type).lower()
    if text.startswith("list") or text.startswith("large_list"):
        return f"array<{delta_name(arrow_type.value_type)}>"
    if "timestamp" in text:
        return "timestamp"
    names = {
        "string": "string",
        "large_string": "string",
        "string_view": "string",
        "utf8": "string",
        "large_utf8": "string",
        "int64": "long",
        "int32": "integer",
        "bool": "boolean",
        "date32[day]": "date",
        "double": "double",
    }
    return names[text]


def real_delta_columns(uri: str) -> list[tuple[str, str]]:
    import pyarrow as pa

    schema = pa.schema(DeltaTable(uri).schema().to_arrow())
    return [(field.name, delta_name(field.type)) for field in schema]


def real_duckdb_columns(path: str, table: str) -> list[tuple[str, str]]:
    with duckdb.connect(path, read_only=True) as con:
        return [(row[0], row[1]) for row in con.sql(f"DESCRIBE {table}").fetchall()]


def test_every_asset_declares_its_schema_table_owners_kinds_and_code_references():
    nodes = asset_nodes(load_defs())
    assert len(nodes) == 12
    for name, node in nodes.items():
        metadata = node.metadata
        schema = metadata["dagster/column_schema"]
        assert len(schema.columns) >= 4, name
        assert all(column.description for column in schema.columns), name
        table = metadata["dagster/table_name"]
        assert table == (name if name in DELTA_TABLES else f"analytics.{name}")
        uri = metadata["dagster/uri"]
        if name in DELTA_TABLES:
            assert uri == (Path.cwd() / "data" / "lake" / name).as_uri()
        else:
            assert uri == f"duckdb://{Path.cwd() / 'data' / 'warehouse.duckdb'}?table={table}"
        assert node.owners == ["team:sales-analytics"], name
        assert node.kinds >= {"python"} and node.kinds & {"deltalake", "duckdb"}, name
        assert node.tags["layer"] == ("ingestion" if name in DELTA_TABLES else "analytics")
        [reference] = metadata["dagster/code_references"].code_references
        assert Path(reference.file_path).is_file() and reference.line_number > 0, name
        assert Path(reference.file_path).is_relative_to(ROOT / "leads_pipeline" / "defs")
    assert nodes["raw_notion_leads"].kinds >= {"notion"}
    for name in ("leads", "lead_history"):
        by_name = {c.name: c for c in nodes[name].metadata["dagster/column_schema"].columns}
        assert {c for c, column in by_name.items() if "pii" in column.tags} == PII, name
        assert "Notion property 'Statut'" in by_name["statut"].description
        assert (
            "Notion property 'Date d'appel booké' (date" in by_name["date_appel_booke"].description
        )


def test_owners_and_git_links_come_from_the_settings(monkeypatch):
    monkeypatch.setenv("LEADS_OWNERS", "team:growth, ana@example.com")
    monkeypatch.setenv("LEADS_GIT_URL", "https://github.com/acme/leads_pipeline")
    monkeypatch.setenv("LEADS_GIT_BRANCH", "release")
    nodes = asset_nodes(load_defs())
    prefix = "https://github.com/acme/leads_pipeline/tree/release/"
    for name, node in nodes.items():
        assert node.owners == ["team:growth", "ana@example.com"], name
        [reference] = node.metadata["dagster/code_references"].code_references
        assert reference.url.startswith(prefix), reference.url
        path, _, line = reference.url.removeprefix(prefix).partition("#L")
        assert (ROOT / path).is_file() and int(line) > 0, reference.url


def test_bad_owners_fail_naming_the_variable(monkeypatch):
    from leads_pipeline.settings import ConfigurationError

    monkeypatch.setenv("LEADS_OWNERS", "sales")
    with pytest.raises(ConfigurationError, match="LEADS_OWNERS='sales'"):
        load_defs()


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    """``sync_leads`` of the project's definitions on the sample, with its instance's event log."""
    root = tmp_path_factory.mktemp("standard")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LEADS_LAKE_URI", str(root / "lake"))
        patch.setenv("LEADS_WAREHOUSE_PATH", str(root / "warehouse.duckdb"))
        defs = load_defs()
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("sync_leads").execute_in_process(instance=instance)
        assert result.success
        logs = instance.all_logs(result.run_id)
    load_defs()  # the environment restored: later tests see the default definitions
    return defs, result, logs, root


def materializations(result) -> dict[str, dict]:
    return {
        event.asset_key.to_user_string(): event.materialization.metadata
        for event in result.get_asset_materialization_events()
    }


def test_materialized_schemas_are_the_tables_real_ones_and_the_declared_ones(sample_run):
    defs, result, _, root = sample_run
    declared = {n: node.metadata for n, node in asset_nodes(defs).items()}
    shown = materializations(result)
    assert set(shown) == set(declared)
    for name, metadata in shown.items():
        reported = columns_of(metadata["dagster/column_schema"].schema)
        if name in DELTA_TABLES:
            real = real_delta_columns(str(root / "lake" / name))
            assert metadata["dagster/uri"].value == (root / "lake" / name).resolve().as_uri()
            assert metadata["dagster/table_name"].value == name
        else:
            table = f"analytics.{name}"
            real = real_duckdb_columns(str(root / "warehouse.duckdb"), table)
            warehouse = (root / "warehouse.duckdb").resolve()
            assert metadata["dagster/uri"].value == f"duckdb://{warehouse}?table={table}"
            assert metadata["dagster/table_name"].value == table
        assert reported == real, name
        # The default property map on the sample: the definition declared the same columns.
        assert columns_of(declared[name]["dagster/column_schema"]) == real, name
        descriptions = [c.description for c in metadata["dagster/column_schema"].schema.columns]
        assert all(descriptions), name
        assert "table_uri" not in metadata and "table" not in metadata, name


def test_metadata_names_are_english_versions_text_and_the_chart_first(sample_run):
    _, result, _, _ = sample_run
    shown = materializations(result)
    for name, metadata in shown.items():
        french = [key for key in metadata if any(code in key for code in EVENT_CODES)]
        assert not french, (name, french)
        for key, value in metadata.items():
            if key.endswith("_version") or key == "leads_commit_timestamp":
                assert isinstance(value, dg.TextMetadataValue), (name, key)
                assert value.value.isdigit(), (name, key, value)
    for name in ("weekly_event_counts", "monthly_event_counts"):
        metadata = shown[name]
        assert next(iter(metadata)) == "chart"
        assert metadata["chart"].value.startswith("![chart](data:image/png;base64,")
        totals = {
            key: metadata[key].value
            for key in (
                "first_contacts_total",
                "replies_total",
                "calls_proposed_total",
                "calls_booked_total",
                "follow_ups_total",
            )
        }
        assert totals["first_contacts_total"] == 2000  # every sample lead has a first contact
        assert all(isinstance(v, int) for v in totals.values())
    assert {"delta_version", "leads_delta_version"} <= set(shown["lead_history"])
    assert "leads_delta_version" in shown["weekly_event_counts"]
    objectives = shown["weekly_objectives"]
    percents = {k: v.value for k, v in objectives.items() if k.endswith("_attainment_percent")}
    assert len(percents) == 5 and all(0 <= v <= 1000 for v in percents.values())
    assert any(v > 1.5 for v in percents.values())  # percentages, not shares


#: The step of a check owned by another change, which does not log its summary yet.


def test_every_step_logs_one_info_summary(sample_run):
    defs, result, logs, _ = sample_run
    steps = {
        event.step_key for event in result.all_events if event.event_type_value == "STEP_SUCCESS"
    }
    assert len(steps) == 19  # 11 asset steps (leads and its issues share one), 8 check steps
    names = set(asset_nodes(defs))
    for step in sorted(steps):
        info = [
            entry.user_message
            for entry in logs
            if entry.step_key == step and entry.dagster_event is None and entry.level == 20
        ]
        summaries = [m for m in info if m.split(": ", 1)[0].split(":")[0] in names]
        assert len(summaries) == 1, (step, info)
        assert len(summaries[0]) < 300 and "\n" not in summaries[0]
    counts = next(
        e.user_message
        for e in logs
        if e.step_key == "weekly_event_counts" and (e.user_message or "").startswith("weekly_")
    )
    assert "2,000 first contacts" in counts


def schema_check_result(run: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    [evaluation] = [
        e for e in run.get_asset_check_evaluations() if e.check_name == SCHEMA_CHANGE_CHECK
    ]
    return evaluation


def test_the_schema_change_check_passes_then_warns_when_the_map_adds_a_column(
    tmp_path, lake_uri, warehouse_path
):
    resources = {
        "source": SampleLeadsSource(),
        "lake": LakeResource(uri=lake_uri),
        "warehouse": WarehouseResource(path=warehouse_path),
        "property_map": PropertyMapResource(),
    }
    assets = [*ingestion.ASSETS, leads_column_schema_unchanged]
    with dg.instance_for_test() as instance:
        first = dg.materialize(assets, resources=resources, instance=instance)
        assert schema_check_result(first).passed
        assert "nothing to compare" in schema_check_result(first).description
        second = dg.materialize(assets, resources=resources, instance=instance)
        unchanged = schema_check_result(second)
        assert unchanged.passed and unchanged.metadata["compared"].value is True
        mapping = tmp_path / "map.toml"
        mapping.write_text('[columns.entreprise]\nproperty = "Entreprise"\nkind = "text"\n')
        changed_resources = {**resources, "property_map": PropertyMapResource(path=str(mapping))}
        third = dg.materialize(assets, resources=changed_resources, instance=instance)
    changed = schema_check_result(third)
    assert not changed.passed
    assert changed.severity == dg.AssetCheckSeverity.WARN
    assert "added entreprise (string)" in changed.description
    assert changed.metadata["changes"].value == ["added entreprise (string)"]
    [leads] = [
        e.materialization.metadata
        for e in third.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey("leads")
    ]
    by_name = {c.name: c for c in leads["dagster/column_schema"].schema.columns}
    assert "Notion property 'Entreprise' (rich_text)" in by_name["entreprise"].description
    assert real_delta_columns(f"{lake_uri}/leads") == columns_of(
        leads["dagster/column_schema"].schema
    )
