"""The S3 backend against a real S3-protocol server (moto's server, started on loopback by the tests)."""

import base64
import hashlib
import io
import os
import uuid
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import requests
from botocore.exceptions import ClientError

from tests.conftest import HeldJobs, db_job, make_app, make_token, record_form, token_client, wait_for_file


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


def b64_sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


@pytest.fixture
def calls(s3_app):
    """The S3 operations the app's client sends from now on, by name."""
    sent = []
    s3_app.extensions["object_store"].client.meta.events.register(
        "before-call.s3", lambda model, **kwargs: sent.append(model.name)
    )
    return sent


@pytest.mark.parametrize("size", [5 * 1024 * 1024 + 3, 16 * 1024 * 1024, 17 * 1024 * 1024 + 1])
def test_a_file_goes_straight_to_its_key_and_is_verified_from_the_stores_checksum(s3_app, posted, s3, calls, size):
    """The web uploads to the record's key with each request's SHA-256; the worker compares the checksum the
    store reports (for parts, the store's SHA-256 of the parts' SHA-256s) and never reads the file back or
    copies it."""
    client, script, _, _ = posted
    payload = os.urandom(size)
    form = record_form(timestamp="2024-05-01T12:00:01Z", record_file=(io.BytesIO(payload), "big.tif"))
    record = wait_for_file(client, client.post(f"/api/scripts/id/{script['id']}/records", data=form).json)
    assert record["file_status"] == "ready"
    assert (record["file_size"], record["file_sha256"]) == (size, hashlib.sha256(payload).hexdigest())
    from webapp.storage import S3Backend

    part = S3Backend.PART_SIZE
    head = s3.head_object(Bucket=s3_app.config["S3_BUCKET"], Key=record["record_file"], ChecksumMode="ENABLED")
    if size < S3Backend.SINGLE_PUT:
        assert "PutObject" in calls and head["ChecksumSHA256"] == b64_sha256(payload)
    else:
        parts = [payload[start : start + part] for start in range(0, size, part)]
        composite = b64_sha256(b"".join(hashlib.sha256(piece).digest() for piece in parts))
        assert calls.count("UploadPart") == len(parts)
        assert head["ChecksumSHA256"].partition("-")[0] == composite
    assert not {"GetObject", "CopyObject", "UploadPartCopy"} & set(calls)
    assert s3.get_object(Bucket=s3_app.config["S3_BUCKET"], Key=record["record_file"])["Body"].read() == payload


@pytest.fixture
def held(s3_app, monkeypatch):
    """Jobs are queued, not run, so a test can change the stored object before the worker sees it."""
    monkeypatch.setitem(s3_app.extensions, "job_queue", HeldJobs())


@pytest.mark.parametrize("size", [1024, 9 * 1024 * 1024])
@pytest.mark.parametrize("overwrite", ["with the store's checksum", "without a checksum"])
def test_an_object_changed_behind_the_apis_back_fails_the_file(s3_app, posted, s3, held, size, overwrite):
    """Bytes of the same size put at the record's key between the POST and the worker: the store reports a
    checksum other than the one sent (or none, and the worker hashes what it reads back), so the file fails,
    with no checksum recorded and the wrong object deleted."""
    from webapp.services import jobs

    client, script, _, _ = posted
    payload = os.urandom(size)
    form = record_form(timestamp="2024-05-01T12:00:02Z", record_file=(io.BytesIO(payload), "scan.tif"))
    record = client.post(f"/api/scripts/id/{script['id']}/records", data=form).json
    assert record["file_status"] == "pending"
    (job,) = [j for j in client.get("/api/jobs", query_string={"kind": "record_file"}).json if j["state"] == "queued"]
    bucket, key = s3_app.config["S3_BUCKET"], record["record_file"]
    assert db_job(job["id"]).params["key"] == key
    other = bytes(reversed(payload))
    extra = {"ChecksumAlgorithm": "SHA256"} if overwrite == "with the store's checksum" else {}
    s3.put_object(Bucket=bucket, Key=key, Body=other, **extra)
    jobs.run_job(uuid.UUID(job["id"]), "test-worker")
    ended = client.get(f"/api/jobs/{job['id']}").json
    stored = client.get(f"/api/scripts/records/id/{record['id']}").json
    assert (ended["state"], stored["file_status"], stored["file_sha256"]) == ("failed", "failed", None)
    assert "SHA-256" in ended["error_description"]
    assert s3.list_objects_v2(Bucket=bucket, Prefix=key).get("KeyCount", 0) == 0


def test_a_store_reporting_no_checksum_has_the_file_read_back(s3_app, posted, s3, held, calls):
    """An object the store keeps no checksum for (some S3-compatible stores keep none) is read back and hashed:
    the same bytes pass."""
    from webapp.services import jobs

    client, script, _, _ = posted
    payload = os.urandom(2048)
    form = record_form(timestamp="2024-05-01T12:00:03Z", record_file=(io.BytesIO(payload), "scan.tif"))
    record = client.post(f"/api/scripts/id/{script['id']}/records", data=form).json
    (job,) = [j for j in client.get("/api/jobs", query_string={"kind": "record_file"}).json if j["state"] == "queued"]
    s3.put_object(Bucket=s3_app.config["S3_BUCKET"], Key=record["record_file"], Body=payload)
    jobs.run_job(uuid.UUID(job["id"]), "test-worker")
    stored = client.get(f"/api/scripts/records/id/{record['id']}").json
    assert (stored["file_status"], stored["file_sha256"]) == ("ready", hashlib.sha256(payload).hexdigest())
    assert "GetObject" in calls


@pytest.mark.parametrize(
    ("sent", "reported", "same"),
    [
        ("abc=", "abc=", True),
        ("abc=-3", "abc=-3", True),
        ("abc=-3", "abc=", True),  # moto's HeadObject leaves the part count off
        ("abc=-3", "abc=-4", False),
        ("abc=", "abd=", False),
        ("abc=-2", "abd=-2", False),
    ],
)
def test_checksums_compare_with_or_without_the_part_count(sent, reported, same):
    from webapp.storage import same_checksum

    assert same_checksum(sent, reported) is same
