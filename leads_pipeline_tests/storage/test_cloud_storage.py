"""The lake on S3: a real S3-compatible server (moto in server mode) started by the test."""

import socket
import subprocess
import sys
import time

import boto3
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from leads_pipeline.storage.warehouse import Warehouse
from leads_pipeline.tables import WEEK
from leads_pipeline_tests.lake_helpers import Workspace, metadata_of
from leads_pipeline_tests.pages import date_value, make_page

WEEKLY_TABLE = WEEK.table()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3_endpoint(monkeypatch):
    """An S3 server on loopback, with credentials in the standard AWS environment variables."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                server.kill()
                raise
            time.sleep(0.1)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)  # the endpoint override
    monkeypatch.setenv("AWS_ALLOW_HTTP", "true")
    boto3.client("s3", endpoint_url=endpoint).create_bucket(
        Bucket="leads-lake", CreateBucketConfiguration={"LocationConstraint": "eu-west-3"}
    )
    yield endpoint
    server.terminate()
    server.wait(timeout=10)


def test_sync_merge_read_back_and_aggregate_on_s3(tmp_path, s3_endpoint):
    ws = Workspace(tmp_path)
    uri = "s3://leads-lake/prod/lake"
    pages = [
        make_page(
            f"00000000-0000-4000-8000-{i:012d}",
            dates={"Date de prise de contact": date_value(f"2025-01-{i + 1:02d}")},
        )
        for i in range(12)
    ]
    ws.publish(pages)
    ws.sync(lake_uri=uri)
    pages[0]["properties"]["Email"]["email"] = "new@exemple.fr"
    pages[0]["last_edited_time"] = "2025-03-09T10:00:00.000Z"
    ws.publish(pages)
    second = ws.sync(lake_uri=uri)
    assert metadata_of(second, "raw_notion_leads")["rows_updated"].value == 1
    assert metadata_of(second, "leads")["rows_updated"].value == 1

    leads = DeltaTable(f"{uri}/leads").to_pyarrow_table().to_pylist()
    assert len(leads) == 12
    assert {r["email"] for r in leads if r["id"] == pages[0]["id"]} == {"new@exemple.fr"}
    objects = boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(
        Bucket="leads-lake", Prefix="prod/lake/leads/_delta_log/"
    )
    assert objects["KeyCount"] >= 2
    assert not (tmp_path / "lake").exists()  # nothing went to the local disk instead
    with Warehouse(ws.warehouse_path).read() as con:
        weeks = con.sql(f"SELECT sum(date_prise_contact) FROM {WEEKLY_TABLE}").fetchall()
    assert weeks == [(12,)]


def test_s3_lakes_commit_with_conditional_writes(tmp_path, s3_endpoint, monkeypatch):
    """Every commit on S3 is a conditional write, so two writers never both commit one version."""
    from leads_pipeline.storage.lake import S3_SAFE_COMMIT_OPTIONS, DeltaLake

    # The server the racing tests use answers a second create-if-absent with 412, as S3 does.
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.put_object(Bucket="leads-lake", Key="probe", Body=b"first", IfNoneMatch="*")
    with pytest.raises(s3.exceptions.ClientError, match="PreconditionFailed"):
        s3.put_object(Bucket="leads-lake", Key="probe", Body=b"second", IfNoneMatch="*")
    assert s3.get_object(Bucket="leads-lake", Key="probe")["Body"].read() == b"first"

    # An s3:// lake asks for conditional writes unless told otherwise; other lakes need nothing.
    assert DeltaLake("s3://leads-lake/a").storage_options == S3_SAFE_COMMIT_OPTIONS
    assert DeltaLake("s3://leads-lake/a", {"AWS_REGION": "eu-west-3"}).storage_options == {
        "AWS_REGION": "eu-west-3",
        **S3_SAFE_COMMIT_OPTIONS,
    }
    assert DeltaLake(str(tmp_path / "lake")).storage_options is None
    assert DeltaLake("gs://bucket/lake").storage_options is None
    monkeypatch.setenv("AWS_CONDITIONAL_PUT", "etag")
    assert DeltaLake("s3://leads-lake/a").storage_options is None  # the user's own setting

    # Commits have no unconditional path: with conditional writes disabled, none is made at all.
    lake = DeltaLake("s3://leads-lake/b", {"conditional_put": "disabled"})
    with pytest.raises(OSError, match="conditional put is disabled"):
        lake.ensure("t", pa.schema([("id", pa.string())]))
