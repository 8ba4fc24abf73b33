"""deploy/dagster.yaml against a real PostgreSQL server: boot an instance, run sync_leads.

The server is named by ``LEADS_TEST_POSTGRES_URL`` (``postgresql://user:password@host:port/db``, a
role allowed to create databases); ``.ci/run`` installs PostgreSQL, starts a cluster and sets it.
Each test gets its own throw-away database.
"""

import os
import shutil
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import dagster as dg
import pytest

from leads_pipeline.defs.assets import analytics, ingestion
from leads_pipeline.defs.checks import CHECKS
from leads_pipeline.defs.jobs import sync_leads
from leads_pipeline.defs.pools import LAKE_POOL
from leads_pipeline.storage.warehouse import Warehouse
from leads_pipeline.tables import WEEK

WEEKLY_TABLE = WEEK.table()

DEPLOY_CONFIG = Path(__file__).resolve().parents[1] / "deploy" / "dagster.yaml"
URL_VARIABLE = "LEADS_TEST_POSTGRES_URL"

pytestmark = pytest.mark.skipif(
    not os.environ.get(URL_VARIABLE),
    reason=f"{URL_VARIABLE} is not set: no PostgreSQL server to test deploy/dagster.yaml against "
    "(.ci/run installs one and sets it).",
)


@pytest.fixture
def postgres_env(monkeypatch):
    """A fresh database on the test server, exposed through deploy/dagster.yaml's variables."""
    import psycopg2

    server = urlsplit(os.environ[URL_VARIABLE])
    database = f"leads_test_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(os.environ[URL_VARIABLE], connect_timeout=10)
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {database}")
        for name, value in {
            "DAGSTER_PG_HOST": server.hostname,
            "DAGSTER_PG_PORT": str(server.port or 5432),
            "DAGSTER_PG_USERNAME": server.username,
            "DAGSTER_PG_PASSWORD": server.password or "",
            "DAGSTER_PG_DB": database,
        }.items():
            monkeypatch.setenv(name, value)
        yield database
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        admin.close()


@pytest.fixture
def dagster_home(tmp_path, postgres_env) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DEPLOY_CONFIG, home / "dagster.yaml")
    return home


def test_instance_from_deploy_config_uses_postgres_and_the_queue(dagster_home):
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        assert isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)
        concurrency = instance.get_concurrency_config()
        assert concurrency.pool_config.default_pool_limit == 1
        assert concurrency.run_queue_config.max_concurrent_runs == 4
        limits = {limit["key"] for limit in concurrency.run_queue_config.tag_concurrency_limits}
        assert "leads_pipeline/trigger" in limits


def test_sync_leads_runs_on_sample_data_with_postgres_storage(dagster_home, sample_resources):
    defs = dg.Definitions(
        assets=[*ingestion.ASSETS, *analytics.ASSETS],
        asset_checks=CHECKS,
        jobs=[sync_leads],
        resources=sample_resources,
    )
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        result = defs.resolve_job_def("sync_leads").execute_in_process(instance=instance)
        assert result.success
        run_id = result.run_id
        # Pools are enforced by the Postgres storage: the lake pool has the default limit of one.
        assert instance.event_log_storage.get_concurrency_info(LAKE_POOL).slot_count == 1

    # Another process (the webserver, the daemon, a worker on another machine) sees it all.
    with dg.DagsterInstance.from_config(str(dagster_home)) as other:
        run = other.get_run_by_id(run_id)
        assert run.status == dg.DagsterRunStatus.SUCCESS
        leads = other.get_latest_materialization_event(dg.AssetKey("leads"))
        assert leads.asset_materialization.metadata["dagster/row_count"].value == 2000
        evaluation = other.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(dg.AssetKey("leads"), "id_unique_and_not_null")]
        )
        assert evaluation
    with Warehouse(sample_resources["warehouse"].path).read() as con:
        weeks = con.execute(f"SELECT sum(date_prise_contact) FROM {WEEKLY_TABLE}").fetchone()[0]
    assert weeks == 2000
