"""Request ids and structured logs: X-Request-ID on every response, the id on the jobs a request creates, and JSON
lines from the request through to the job's own start and end."""

import io
import json
import logging
import uuid

import pytest
import requests

from tests.conftest import PASSWORD, empty_tables, make_app, record_form, token_client
from tests.servers import free_port, running, wait_until
from tests.test_metrics import BULK_FORM, ROWS, SCRIPTORIUM, seed
from webapp import logs


def test_every_response_carries_a_new_request_id(anonymous):
    """Without one from the caller, each response gets a new id, errors included."""
    first = anonymous.get("/api/health").headers["X-Request-ID"]
    second = anonymous.get("/no/such/path").headers["X-Request-ID"]
    assert first and second and first != second


def test_the_callers_request_id_is_echoed(anonymous):
    """An id of up to 128 printable ASCII characters comes back as sent."""
    for candidate in ("abc-123", "x" * 128, "trace id: 7/8 (retry)"):
        assert anonymous.get("/api/health", headers={"X-Request-ID": candidate}).headers["X-Request-ID"] == candidate


@pytest.mark.parametrize("candidate", ["x" * 129, "caf\u00e9", "a\x00b", "tab\tbed", "   "])
def test_a_bad_request_id_is_replaced_never_echoed(anonymous, candidate):
    """Too long, not ASCII, control characters or blank: the response has a new id instead."""
    environ = {"HTTP_X_REQUEST_ID": candidate}
    answered = anonymous.get("/api/health", environ_overrides=environ).headers["X-Request-ID"]
    assert answered != candidate and len(answered) == 32 and answered.isalnum()


def test_a_job_keeps_the_request_id_of_the_request_that_created_it(client, reference, script, held_jobs):
    """The bulk upload's and the record file's jobs show the id of their POST."""
    response = client.post(
        f"/api/scripts/id/{script['id']}/records/bulk",
        data={"file": (io.BytesIO(ROWS), "rows.ndjson"), **BULK_FORM},
        headers={"X-Request-ID": "bulk-upload-1"},
    )
    assert response.status_code == 202
    assert response.json["request_id"] == "bulk-upload-1"
    assert client.get(f"/api/jobs/{response.json['id']}").json["request_id"] == "bulk-upload-1"
    form = record_form(record_file=(io.BytesIO(b"pixels"), "leaf.png"))
    record = client.post(f"/api/scripts/id/{script['id']}/records", data=form).json
    posted = client.get("/api/jobs", query_string={"kind": "record_file"}).json
    assert len(posted) == 1 and posted[0]["request_id"] not in (None, "bulk-upload-1")
    assert record["file_status"] == "pending"


def test_text_lines_carry_the_request_id(anonymous, caplog):
    """The default text format names the request id on the request's line."""
    stream = io.StringIO()
    handler = logs.handler("text", stream)
    logging.getLogger("scriptorium.request").addHandler(handler)
    try:
        anonymous.get("/api/health", headers={"X-Request-ID": "text-line-1"})
    finally:
        logging.getLogger("scriptorium.request").removeHandler(handler)
    assert "[text-line-1]: GET /api/health 200" in stream.getvalue()


def test_a_signed_download_path_is_logged_without_its_token(client, reference, script, app):
    """The raw path of a local signed download hides the token; the route pattern names it."""
    form = record_form(record_file=(io.BytesIO(b"pixels"), "leaf.png"))
    record = client.post(f"/api/scripts/id/{script['id']}/records", data=form).json
    wait_until(
        lambda: client.get(f"/api/scripts/records/id/{record['id']}").json, lambda r: r["file_status"] != "pending"
    )
    location = client.get(f"/api/scripts/records/id/{record['id']}/download").headers["Location"]
    signed = location.rsplit("/", 1)[-1]
    stream = io.StringIO()
    handler = logs.handler("json", stream)
    logging.getLogger("scriptorium.request").addHandler(handler)
    try:
        assert app.test_client().get(location).status_code == 200
    finally:
        logging.getLogger("scriptorium.request").removeHandler(handler)
    line = json.loads(stream.getvalue().splitlines()[-1])
    assert (line["route"], line["path"], line["status"]) == ("/files/<token>", "/files/<token>", 200)
    assert signed not in stream.getvalue()


@pytest.fixture(params=["postgresql", "sqlite"])
def json_server(request, tmp_path):
    """gunicorn with LOG_FORMAT=json on either database (jobs run in the web process); yields (base URL, an
    admin token, its account id, the log file)."""
    database_url = request.getfixturevalue(f"{request.param}_url")
    app = make_app(tmp_path / "tests", database_url)
    from webapp.services import accounts, tokens

    with app.app_context():
        account = accounts.create_account(f"logs-{uuid.uuid4().hex[:8]}@example.org", PASSWORD, "admin")
        account_id, token = str(account.id), tokens.create_token(account, "tests")[1]
    port = free_port()
    env = {
        "SCRIPTORIUM_DATABASE_URL": database_url,
        "SCRIPTORIUM_SECRET_KEY": "server-test-key",
        "SCRIPTORIUM_INSTANCE_PATH": str(tmp_path),
        "SCRIPTORIUM_LOG_FORMAT": "json",
    }
    base = f"http://127.0.0.1:{port}"
    # stdout holds `serve`'s own greeting; stderr is the log.
    args = ["sh", "-c", f'exec "$0" serve --port {port} --workers 2 2>"$1"', SCRIPTORIUM, str(tmp_path / "stderr.log")]
    with running(args, f"{base}/api/health", env=env, log_path=tmp_path / "stdout.log"):
        yield base, token, account_id, app, tmp_path / "stderr.log"
    empty_tables(app)


def test_json_lines_follow_a_request_into_the_job_it_created(json_server):
    """Each stderr line is one JSON object; the bulk POST's line and the job's start and end lines carry the same
    request id, with the fields an operator searches by."""
    base, token, account_id, app, log_file = json_server
    script = seed(token_client(app, token))
    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {token}"
    request_id = f"upload-{uuid.uuid4().hex[:8]}"
    response = api.post(
        f"{base}/api/scripts/id/{script['id']}/records/bulk",
        files={"file": ("rows.ndjson", ROWS)},
        data=BULK_FORM,
        headers={"X-Request-ID": request_id},
    )
    assert response.status_code == 202 and response.headers["X-Request-ID"] == request_id
    job_id = response.json()["id"]
    job = wait_until(lambda: api.get(f"{base}/api/jobs/{job_id}").json(), lambda j: j["finished_at"])
    assert job["state"] == "succeeded" and job["request_id"] == request_id

    def lines():
        return [json.loads(line) for line in log_file.read_text().splitlines() if line.strip()]

    mine = wait_until(lambda: [line for line in lines() if line.get("request_id") == request_id], lambda m: len(m) >= 3)
    (post,) = [line for line in mine if line["logger"] == "scriptorium.request"]
    assert post["method"] == "POST"
    assert post["route"] == "/api/scripts/id/<uuid:script_id>/records/bulk"
    assert post["path"] == f"/api/scripts/id/{script['id']}/records/bulk"
    assert post["status"] == 202 and post["duration_ms"] > 0
    assert post["account"] == account_id and post["remote_addr"] == "127.0.0.1"
    job_lines = [line for line in mine if line.get("job_id") == job_id]
    assert [line["message"].split(":")[0] for line in job_lines] == [
        f"Job {job_id} (bulk_records) starts, attempt 1",
        f"Job {job_id} ends",
    ]
    end = job_lines[-1]
    assert (end["kind"], end["attempt"], end["outcome"], end["state"]) == ("bulk_records", 1, "succeeded", "succeeded")
    assert end["rows"] == {"processed": 3, "inserted": 2, "duplicates": 0, "failed": 1}
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines())
