"""The S3 backend against a real S3-protocol server (moto's server, started on loopback by the tests)."""

import io
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import requests
from botocore.exceptions import ClientError

from tests.conftest import make_app, make_token, record_form, token_client, wait_for_file


@pytest.fixture
def s3_app(tmp_path, postgresql_url, s3_endpoint):
    """An app on PostgreSQL storing files in a fresh bucket; clients reach S3 through a public hostname."""
    from tests.conftest import empty_tables

    public = s3_endpoint.replace("127.0.0.1", "localhost")
    bucket = f"scriptorium-{tmp_path.name.lower().replace('_', '-')}"[:63]
    app = make_app(
        tmp_path,
        postgresql_url,
        storage_backend="s3",
        s3_endpoint_url=s3_endpoint,
        s3_public_endpoint_url=public,
        s3_bucket=bucket,
        download_url_expires=120,
    )
    with app.app_context():
        from webapp.extensions import store

        store.backend.ensure_bucket()
        yield app
    empty_tables(app)


@pytest.fixture
def s3(s3_endpoint):
    return boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")


def seed(client) -> dict:
    """An experiment with a season, a site and a script (returned), through the API."""
    experiment = client.post("/api/experiments", json={"experiment_name": "Drought 2024"}).json
    client.post(f"/api/experiments/id/{experiment['id']}/seasons", json={"season_name": "Summer"})
    client.post("/api/sites", json={"site_name": "Maricopa"})
    return client.post("/api/scripts", json={"script_name": "canopy-height"}).json


@pytest.fixture
def posted(s3_app):
    """A record with a file posted through the API to the S3 backend."""
    client = token_client(s3_app, make_token(s3_app))
    script = seed(client)
    payload = bytes(range(256)) * 4096
    form = record_form(record_file=(io.BytesIO(payload), "leaf scan.tif"))
    record = wait_for_file(client, client.post(f"/api/scripts/id/{script['id']}/records", data=form).json)
    assert record["file_status"] == "ready"
    return client, script, record, payload


def test_upload_lands_in_the_bucket_under_the_record_key(s3_app, posted, s3):
    """The file is in the bucket under the record's key, with its content type."""
    _, _, record, payload = posted
    head = s3.head_object(Bucket=s3_app.config["S3_BUCKET"], Key=record["record_file"])
    assert head["ContentLength"] == len(payload) == record["file_size"]
    assert head["ContentType"] == "image/tiff"


def test_download_redirect_is_a_presigned_url_for_the_public_endpoint(s3_app, posted):
    """The 307 goes to the public endpoint, expires as configured, and serves the file by plain HTTP GET."""
    client, _, record, payload = posted
    response = client.get(f"/api/scripts/records/id/{record['id']}/download")
    assert response.status_code == 307
    location = response.headers["Location"]
    parts = urlsplit(location)
    assert parts.hostname == "localhost"
    assert parse_qs(parts.query)["X-Amz-Expires"] == ["120"]
    fetched = requests.get(location, timeout=10)
    assert fetched.status_code == 200
    assert fetched.content == payload
    assert "leaf%20scan.tif" in fetched.headers["Content-Disposition"]


def test_deleting_a_record_deletes_its_object(s3_app, posted, s3):
    """DELETE of the record removes the object from the bucket."""
    client, _, record, _ = posted
    assert client.delete(f"/api/scripts/records/id/{record['id']}").status_code == 200
    with pytest.raises(ClientError) as missing:
        s3.head_object(Bucket=s3_app.config["S3_BUCKET"], Key=record["record_file"])
    assert missing.value.response["Error"]["Code"] == "404"


def test_deleting_a_script_deletes_its_objects_in_batches(s3_app, posted, s3, monkeypatch):
    """DELETE of the script removes its records' objects, many per request (here 2 per batch)."""
    from webapp.storage import S3Backend

    client, script, _, _ = posted
    for second in (1, 2, 3):
        form = record_form(timestamp=f"2024-05-01T12:00:0{second}Z", record_file=(io.BytesIO(b"x"), "x.txt"))
        wait_for_file(client, client.post(f"/api/scripts/id/{script['id']}/records", data=form).json)
    prefix = f"records/{script['id']}/"
    assert s3.list_objects_v2(Bucket=s3_app.config["S3_BUCKET"], Prefix=prefix)["KeyCount"] == 4
    monkeypatch.setattr(S3Backend, "DELETE_BATCH", 2)
    requests_sent = []
    s3_app.extensions["object_store"].client.meta.events.register(
        "before-call.s3.DeleteObjects", lambda **kwargs: requests_sent.append(1)
    )
    assert client.delete(f"/api/scripts/id/{script['id']}").status_code == 200
    assert s3.list_objects_v2(Bucket=s3_app.config["S3_BUCKET"], Prefix=prefix).get("KeyCount", 0) == 0
    assert len(requests_sent) == 2


def test_deleting_falls_back_to_one_request_per_key_where_batches_are_refused(s3_app, posted, s3):
    """An S3-compatible store without DeleteObjects (or refusing its checksum) still has the files deleted."""
    client, script, _, _ = posted
    form = record_form(timestamp="2024-05-01T12:00:01Z", record_file=(io.BytesIO(b"x"), "x.txt"))
    wait_for_file(client, client.post(f"/api/scripts/id/{script['id']}/records", data=form).json)

    def refuse(**kwargs):
        raise ClientError({"Error": {"Code": "NotImplemented", "Message": "no batch deletes"}}, "DeleteObjects")

    s3_app.extensions["object_store"].client.meta.events.register("before-call.s3.DeleteObjects", refuse)
    assert client.delete(f"/api/scripts/id/{script['id']}").status_code == 200
    listed = s3.list_objects_v2(Bucket=s3_app.config["S3_BUCKET"], Prefix=f"records/{script['id']}/")
    assert listed.get("KeyCount", 0) == 0


def test_unreachable_object_store_is_503_and_stores_nothing(tmp_path, postgresql_url):
    """When the S3 server cannot be reached, the POST is 503 and leaves no record behind."""
    from tests.conftest import empty_tables
    from tests.servers import free_port

    app = make_app(tmp_path, postgresql_url, storage_backend="s3", s3_endpoint_url=f"http://127.0.0.1:{free_port()}")
    client = token_client(app, make_token(app))
    try:
        script = seed(client)
        form = record_form(record_file=(io.BytesIO(b"x"), "a.txt"))
        response = client.post(f"/api/scripts/id/{script['id']}/records", data=form)
        assert response.status_code == 503
        assert client.get(f"/api/scripts/id/{script['id']}/records").data == b""
    finally:
        empty_tables(app)


def test_a_bucket_emptied_away_is_created_again(s3_app, posted, s3):
    """With its bucket deleted behind the app's back, the next file POST makes it again instead of failing."""
    client, script, _, _ = posted
    bucket = s3_app.config["S3_BUCKET"]
    for item in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
        s3.delete_object(Bucket=bucket, Key=item["Key"])
    s3.delete_bucket(Bucket=bucket)
    form = record_form(timestamp="2024-05-01T12:00:09Z", record_file=(io.BytesIO(b"again"), "again.txt"))
    response = client.post(f"/api/scripts/id/{script['id']}/records", data=form)
    assert response.status_code == 200, response.json
    assert wait_for_file(client, response.json)["file_status"] == "ready"


def test_a_store_that_never_answers_is_503_with_retry_after(tmp_path, postgresql_url):
    """A store that takes connections but never answers times out (as configured): 503 with Retry-After."""
    import socket

    from tests.conftest import empty_tables

    silent = socket.create_server(("127.0.0.1", 0), backlog=16)  # the kernel completes connections; nobody reads
    port = silent.getsockname()[1]
    app = make_app(
        tmp_path,
        postgresql_url,
        storage_backend="s3",
        s3_endpoint_url=f"http://127.0.0.1:{port}",
        s3_connect_timeout=1,
        s3_read_timeout=1,
    )
    client = token_client(app, make_token(app))
    config = app.extensions["object_store"].client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (1, 1)  # the settings reach the client that answers
    try:
        script = seed(client)
        response = client.post(
            f"/api/scripts/id/{script['id']}/records", data=record_form(record_file=(io.BytesIO(b"x"), "a.txt"))
        )
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "5"
        assert client.get(f"/api/scripts/id/{script['id']}/records").data == b""
    finally:
        silent.close()
        empty_tables(app)
