"""``history_matches_leads`` on a no-change sync: it passes without reading the tables, and only then.

Real materializations of the ingestion assets (sample source, real Delta tables) on one Dagster
instance, as a deployment runs them: the check remembers what it verified in its metadata, and the
next evaluation relies on it only while neither table has committed since.
"""

from __future__ import annotations

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable, write_deltalake

from leads_pipeline.defs.assets import ingestion
from leads_pipeline.defs.checks import HISTORY_CHECK, history_matches_leads
from leads_pipeline.defs.resources import LakeResource, PropertyMapResource
from leads_pipeline.sources.sample import SampleLeadsSource
from leads_pipeline.tables import HISTORY_TABLE, LEADS_TABLE

PAGES = 150


@pytest.fixture
def instance():
    with dg.DagsterInstance.ephemeral() as instance:
        yield instance


def sync(lake_uri: str, instance: dg.DagsterInstance, day: int = 0, *, check_only: bool = False):
    """One sync (raw → leads → lead_history, then the check), or the check alone."""
    resources = {
        "source": SampleLeadsSource(pages=PAGES, day=day),
        "lake": LakeResource(uri=lake_uri),
        "property_map": PropertyMapResource(),
    }
    result = dg.materialize(
        [*ingestion.ASSETS, history_matches_leads],
        resources=resources,
        instance=instance,
        selection=dg.AssetSelection.checks(history_matches_leads) if check_only else None,
        raise_on_error=False,
    )
    [evaluation] = [
        e for e in result.get_asset_check_evaluations() if e.check_name == HISTORY_CHECK
    ]
    return result, evaluation, {k: v.value for k, v in evaluation.metadata.items()}


def delta_version(lake_uri: str, table: str) -> int:
    return DeltaTable(f"{lake_uri}/{table}").version()


def test_a_no_change_sync_passes_without_reading_and_a_change_is_verified(lake_uri, instance):
    first, evaluation, metadata = sync(lake_uri, instance)
    assert evaluation.passed, evaluation.description
    assert metadata["unchanged_since_last_pass"] is False
    assert metadata["verified_in_run"] == first.run_id
    assert metadata["live_leads"] == PAGES
    history_version = delta_version(lake_uri, HISTORY_TABLE)
    leads_version = delta_version(lake_uri, LEADS_TABLE)

    # Nothing changed in the source: no commit to either table, the check relies on run 1.
    second, evaluation, again = sync(lake_uri, instance)
    assert second.success
    assert delta_version(lake_uri, HISTORY_TABLE) == history_version
    assert delta_version(lake_uri, LEADS_TABLE) == leads_version
    assert evaluation.passed
    assert again["unchanged_since_last_pass"] is True
    assert again["verified_in_run"] == first.run_id
    assert (int(again["history_delta_version"]), int(again["leads_delta_version"])) == (
        history_version,
        leads_version,
    )
    assert again["rows"] == metadata["rows"] and again["live_leads"] == PAGES
    assert "not read again" in evaluation.description
    assert f"Delta version {history_version}" in evaluation.description

    # A day of the sample's evolution moves statuses: both tables commit, the check verifies.
    third, evaluation, changed = sync(lake_uri, instance, day=1)
    assert evaluation.passed, evaluation.description
    assert changed["unchanged_since_last_pass"] is False
    assert changed["verified_in_run"] == third.run_id
    assert int(changed["history_delta_version"]) > history_version
    assert int(changed["leads_delta_version"]) > leads_version
    assert changed["rows"] > metadata["rows"]


def test_a_tampered_history_after_a_passing_run_is_caught(lake_uri, instance):
    _, evaluation, metadata = sync(lake_uri, instance)
    assert evaluation.passed and metadata["unchanged_since_last_pass"] is False
    _, evaluation, _ = sync(lake_uri, instance)
    assert evaluation.passed and evaluation.metadata["unchanged_since_last_pass"].value is True

    # One current version's email altered: a new Delta version of lead_history, leads untouched.
    uri = f"{lake_uri}/{HISTORY_TABLE}"
    rows = DeltaTable(uri).to_pyarrow_table()
    current = pc.and_(rows["is_current"], pc.is_valid(rows["email"]))
    victim = pc.index(current, True).as_py()
    emails = rows["email"].to_pylist()
    emails[victim] = "tampered@exemple.fr"
    tampered = rows.set_column(
        rows.schema.get_field_index("email"), "email", pa.array(emails, rows["email"].type)
    )
    write_deltalake(uri, tampered, mode="overwrite", partition_by=["is_current"])
    assert delta_version(lake_uri, HISTORY_TABLE) > int(metadata["history_delta_version"])

    result, evaluation, found = sync(lake_uri, instance, check_only=True)
    assert not result.success  # the check is blocking
    assert not evaluation.passed
    assert found["unchanged_since_last_pass"] is False
    assert found["current_versions_differing_from_leads"] == 1
    assert found["differing_columns"] == {"email": 1}
    assert int(found["history_delta_version"]) == delta_version(lake_uri, HISTORY_TABLE)

    # A failed evaluation is never relied on: the next one verifies again, and fails again.
    _, evaluation, still = sync(lake_uri, instance, check_only=True)
    assert not evaluation.passed
    assert still["unchanged_since_last_pass"] is False
    assert still["current_versions_differing_from_leads"] == 1
