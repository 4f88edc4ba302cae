"""Queued bulk uploads: formats, row errors with line numbers, duplicates, defaults, idempotency, jobs API.

These run the jobs on the embedded default's in-process queue; tests/test_workers.py runs them on Celery.
"""

import io
import json
import sys
import uuid
from datetime import datetime, timedelta

import marshmallow as ma
import pytest

from tests.conftest import db_job, make_app, make_token, record_form, token_client
from tests.servers import wait_until
from webapp import bulk_sql
from webapp.services import bulk
from webapp.services.record_rules import RECORD_RULES, record_rule


@pytest.fixture
def bulk_url(script):
    return f"/api/scripts/id/{script['id']}/records/bulk"


def post_bulk(client, url, content: bytes, name: str, content_type: str | None = None, headers=None, **form):
    """POST a bulk upload; returns the response."""
    data = {"file": (io.BytesIO(content), name, content_type) if content_type else (io.BytesIO(content), name)}
    data.update(form)
    return client.post(url, data=data, headers=headers or {})


def finished(client, response) -> dict:
    """The job of a 202 response once it has ended."""
    assert response.status_code == 202, response.json
    location = response.headers["Location"]
    job = wait_until(lambda: client.get(location).json, lambda j: j["state"] not in ("queued", "running"))
    assert job["state"] != "running", job
    return job


def ndjson(*rows) -> bytes:
    return b"".join((json.dumps(row) if not isinstance(row, str) else row).encode() + b"\n" for row in rows)


ROW = {"experiment_name": "Drought 2024", "season_name": "Summer", "site_name": "Maricopa"}


def test_ndjson_upload_counts_inserted_duplicates_and_failed_rows_with_lines(client, reference, script, bulk_url):
    """Valid rows are stored once, duplicates counted apart, invalid rows reported by physical line."""
    content = ndjson(
        {**ROW, "timestamp": "2024-05-01T00:00:00Z", "script_data": {"h": 1}},
        {**ROW, "timestamp": "2024-05-01T00:00:00Z"},  # duplicate of line 1
        "",
        {**ROW, "timestamp": "not a time"},
        "{broken json",
        {**ROW, "timestamp": "2024-05-02T00:00:00Z", "site_name": "Nowhere"},
        '["not", "an", "object"]',
        {**ROW, "timestamp": "2024-05-03T00:00:00Z", "colour": "red"},
        {**ROW, "timestamp": "2024-05-04T00:00:00Z", "script_data": '{"h": 4}'},
    )
    response = post_bulk(client, bulk_url, content, "rows.ndjson")
    assert response.json["state"] in ("queued", "running", "succeeded")
    assert response.json["kind"] == "bulk_records"
    job = finished(client, response)
    assert job["state"] == "succeeded"
    assert (job["total"], job["processed"], job["inserted"], job["duplicates"], job["failed"]) == (8, 8, 2, 1, 5)
    assert [error["line"] for error in job["errors"]] == [4, 5, 6, 7, 8]
    assert "timestamp" in job["errors"][0]["error"]
    assert "site_name" in job["errors"][2]["error"]
    assert "colour" in job["errors"][4]["error"]
    lines = client.get(f"/api/scripts/id/{script['id']}/records").data.decode().splitlines()
    assert [json.loads(line)["script_data"] for line in lines] == [{"h": 1}, {"h": 4}]


def test_bulk_rows_get_time_ordered_ids_in_line_order(client, app, reference, script, bulk_url, monkeypatch):
    """Across chunks, each stored row has a version-7 id, and a later line's id sorts after an earlier one's."""
    monkeypatch.setitem(app.config, "BULK_CHUNK_ROWS", 4)
    content = ndjson(*({**ROW, "timestamp": f"2024-05-01T00:00:{second:02d}Z"} for second in range(10)))
    job = finished(client, post_bulk(client, bulk_url, content, "rows.ndjson"))
    assert (job["state"], job["inserted"]) == ("succeeded", 10)
    lines = client.get(f"/api/scripts/id/{script['id']}/records").data.decode().splitlines()
    records = sorted((json.loads(line) for line in lines), key=lambda record: record["timestamp"])
    ids = [uuid.UUID(record["id"]) for record in records]
    assert len(ids) == 10 and {i.version for i in ids} == {7}
    assert ids == sorted(ids)


def test_a_job_hands_the_gil_over_promptly_and_restores_the_interval(client, reference, script, bulk_url, monkeypatch):
    """While a job stores its chunks, the process switches threads every ``PROMPT_SWITCH_SECONDS``; once it ended,
    at the interval it had before (the setting is the whole process's)."""
    before = sys.getswitchinterval()
    seen = []
    copy_new_rows = bulk_sql.copy_new_rows

    def recording(*args, **kwargs):
        seen.append(sys.getswitchinterval())
        return copy_new_rows(*args, **kwargs)

    monkeypatch.setattr(bulk_sql, "copy_new_rows", recording)
    content = ndjson(*({**ROW, "timestamp": f"2024-05-01T00:00:{second:02d}Z"} for second in range(3)))
    job = finished(client, post_bulk(client, bulk_url, content, "rows.ndjson"))
    assert (job["state"], job["inserted"]) == ("succeeded", 3)
    # Python keeps the interval in whole microseconds.
    assert seen and {round(value * 1e6) for value in seen} == {round(bulk.PROMPT_SWITCH_SECONDS * 1e6)}
    assert round(before * 1e6) != round(bulk.PROMPT_SWITCH_SECONDS * 1e6)
    assert sys.getswitchinterval() == before


def test_csv_upload_with_json_columns_and_multiline_cells(client, reference, script, bulk_url):
    """CSV rows use the header; JSON columns hold JSON; lines are physical, the header being line 1."""
    content = (
        b"timestamp,experiment_name,season_name,site_name,script_data,record_info\n"
        b'2024-05-01T00:00:00Z,Drought 2024,Summer,Maricopa,"{""h"": 1}",\n'
        b'2024-05-02T00:00:00Z,Drought 2024,Summer,Maricopa,"{""note"":\n ""two lines""}",\n'
        b'2024-05-03T00:00:00Z,Drought 2024,Summer,Maricopa,"{not json",\n'
        b"2024-05-04T00:00:00Z,Drought 2024,Summer,Maricopa,,\n"
    )
    job = finished(client, post_bulk(client, bulk_url, content, "rows.csv"))
    assert (job["inserted"], job["failed"]) == (3, 1)
    assert job["errors"] == [{"line": 5, "error": job["errors"][0]["error"]}]
    assert "script_data" in job["errors"][0]["error"]
    lines = [json.loads(x) for x in client.get(f"/api/scripts/id/{script['id']}/records").data.decode().splitlines()]
    assert lines[1]["script_data"] == {"note": "two lines"}
    assert lines[2]["script_data"] == {}


def test_json_array_upload_reports_items_by_index(client, reference, script, bulk_url):
    """A JSON array's items are numbered from 1."""
    items = [{**ROW, "timestamp": "2024-05-01T00:00:00Z"}, "text", {**ROW, "timestamp": "2024-05-02T00:00:00Z"}]
    job = finished(client, post_bulk(client, bulk_url, json.dumps(items).encode(), "rows.json"))
    assert (job["inserted"], job["failed"], job["errors"][0]["line"]) == (2, 1, 2)


def test_values_are_stored_as_given_whatever_their_range(client, reference, script, bulk_url):
    """Offsets, moments before 2000 and past 2038, microseconds, old dates, 64-bit integers and
    non-ASCII text come back as sent (PostgreSQL's rows are encoded for its binary COPY by bulk_sql itself)."""
    rows = [
        {**ROW, "timestamp": "1969-07-20T20:17:40.123456-04:00", "collection_date": "1899-12-31"},
        {**ROW, "timestamp": "1999-12-31T23:59:59.999999Z", "record_info": {"nested": {"a": [1, 2.5, None, True]}}},
        {**ROW, "timestamp": "2024-05-01T12:00:00+05:30", "script_data": {"big": 2**63 - 1, "text": "naïve ☃"}},
        {**ROW, "timestamp": "2038-01-19T03:14:08Z", "dataset_name": "Données ✓"},
    ]
    job = finished(client, post_bulk(client, bulk_url, ndjson(*rows), "rows.ndjson"))
    assert (job["inserted"], job["failed"]) == (4, 0), job["errors"]
    lines = [json.loads(x) for x in client.get(f"/api/scripts/id/{script['id']}/records").data.decode().splitlines()]
    stored = sorted(lines, key=lambda line: datetime.fromisoformat(line["timestamp"]))
    assert [datetime.fromisoformat(line["timestamp"]) for line in stored] == [
        datetime.fromisoformat(row["timestamp"]) for row in rows
    ]
    assert [line["collection_date"] for line in stored] == ["1899-12-31", "1999-12-31", "2024-05-01", "2038-01-19"]
    assert stored[1]["record_info"] == {"nested": {"a": [1, 2.5, None, True]}}
    assert stored[2]["script_data"] == {"big": 2**63 - 1, "text": "naïve ☃"}
    assert stored[3]["dataset_name"] == "Données ✓"


@pytest.mark.parametrize("name", ["rows.ndjson", "rows.json"])
def test_integers_beyond_64_bits_are_kept_exactly_as_a_single_post_keeps_them(
    client, reference, script, bulk_url, name
):
    """JSON allows integers of any size; a bulk row keeps them exactly (orjson alone reads them as floats)."""
    data = {"big": 2**70 + 1, "low": -(2**64) - 3, "exact": 2**64 - 1, "digits": "12345678901234567890123"}
    rows = [{**ROW, "timestamp": "2024-05-01T00:00:00Z", "script_data": data, "record_info": {"n": [10**30]}}]
    content = ndjson(*rows) if name.endswith(".ndjson") else json.dumps(rows).encode()
    job = finished(client, post_bulk(client, bulk_url, content, name))
    assert (job["inserted"], job["failed"]) == (1, 0), job["errors"]
    (line,) = client.get(f"/api/scripts/id/{script['id']}/records").data.decode().splitlines()
    stored = json.loads(line)
    assert stored["script_data"] == data and type(stored["script_data"]["big"]) is int
    assert stored["record_info"] == {"n": [10**30]}


def test_form_fields_fill_in_rows_that_lack_them(client, reference, script, bulk_url):
    """experiment/season/site/dataset given in the form apply to rows without them."""
    content = ndjson(
        {"timestamp": "2024-05-01T00:00:00Z"}, {"timestamp": "2024-05-02T00:00:00Z", "dataset_name": "Own"}
    )
    job = finished(client, post_bulk(client, bulk_url, content, "rows.ndjson", dataset_name="Flight 1", **ROW))
    assert (job["inserted"], job["failed"]) == (2, 0)
    lines = [json.loads(x) for x in client.get(f"/api/scripts/id/{script['id']}/records").data.decode().splitlines()]
    assert [line["dataset_name"] for line in lines] == ["Flight 1", "Own"]
    datasets = client.get(f"/api/scripts/id/{script['id']}/datasets").json
    assert {d["dataset_name"] for d in datasets} == {"Flight 1", "Own"}


def test_rows_follow_the_single_record_rules(client, reference, script, bulk_url):
    """A row and a single POST with the same values store the same record (and then collide as duplicates)."""
    single = client.post(
        f"/api/scripts/id/{script['id']}/records", data=record_form(timestamp="2024-05-02T01:30:00+05:00")
    ).json
    row = {**ROW, "timestamp": "2024-05-02T01:30:00+05:00", "script_data": {"height_cm": 41.5}}
    job = finished(client, post_bulk(client, bulk_url, ndjson(row), "rows.ndjson"))
    assert (job["inserted"], job["duplicates"]) == (0, 1)
    assert single["collection_date"] == "2024-05-02"


NOT_COLLECTED_LATER = "A record is not collected after it is taken."


@pytest.fixture
def collected_no_later_than_taken():
    """A rule across a record's fields added to the record rules (through ``record_rule``) for one test."""

    def collected_no_later(values):
        if values.get("collection_date") and values["collection_date"] > values["timestamp"].date():
            raise ma.ValidationError(NOT_COLLECTED_LATER, "collection_date")

    record_rule(collected_no_later)
    yield
    RECORD_RULES.remove(collected_no_later)


def test_a_rule_added_to_the_record_rules_refuses_single_records_and_bulk_rows(
    client, reference, script, bulk_url, collected_no_later_than_taken
):
    """A schema-level rule added to the record rules applies to a single POST and to each bulk row alike, the
    row's defaults from the upload's form included."""
    single = client.post(f"/api/scripts/id/{script['id']}/records", data=record_form(collection_date="2024-05-02"))
    assert single.status_code == 422
    assert single.json["errors"] == {"collection_date": [NOT_COLLECTED_LATER]}
    content = ndjson(
        {**ROW, "timestamp": "2024-05-01T00:00:00Z", "collection_date": "2024-05-02"},
        {**ROW, "timestamp": "2024-05-03T00:00:00Z"},  # collected on the form's date, before it was taken
        {**ROW, "timestamp": "2024-05-01T00:00:00Z"},  # collected on the form's date, after it was taken
        {**ROW, "timestamp": "2024-05-04T00:00:00Z", "collection_date": "2024-05-04"},
    )
    job = finished(client, post_bulk(client, bulk_url, content, "rows.ndjson", collection_date="2024-05-02"))
    assert (job["inserted"], job["failed"]) == (2, 2)
    assert [error["line"] for error in job["errors"]] == [1, 3]
    assert all(NOT_COLLECTED_LATER in error["error"] for error in job["errors"])


def test_bulk_bad_requests(client, reference, script, bulk_url):
    """Unknown script 404, unknown format 415, empty file 422, unknown default names 422, missing file 422."""
    rows = ndjson({**ROW, "timestamp": "2024-05-01T00:00:00Z"})
    assert post_bulk(client, f"/api/scripts/id/{uuid.uuid4()}/records/bulk", rows, "r.ndjson").status_code == 404
    assert post_bulk(client, bulk_url, rows, "rows.xlsx", "application/vnd.ms-excel").status_code == 415
    empty = post_bulk(client, bulk_url, b"", "rows.ndjson")
    assert empty.status_code == 422 and "file" in empty.json["errors"]
    unknown_site = post_bulk(client, bulk_url, rows, "rows.ndjson", site_name="Nowhere")
    assert unknown_site.status_code == 422 and "site_name" in unknown_site.json["errors"]
    missing = client.post(bulk_url, data={"site_name": "Maricopa"})
    assert missing.status_code == 422 and "file" in missing.json["errors"]
    assert client.get("/api/jobs").json == []


def test_content_type_is_preferred_over_the_extension(client, reference, script, bulk_url):
    """A part labelled text/csv is read as CSV whatever its name."""
    content = b"timestamp,experiment_name,season_name,site_name\n2024-05-01T00:00:00Z,Drought 2024,Summer,Maricopa\n"
    job = finished(client, post_bulk(client, bulk_url, content, "export.txt", "text/csv"))
    assert job["inserted"] == 1


def test_upload_over_the_configured_limit_is_413(tmp_path, database_url, reference):
    """A bulk upload larger than MAX_CONTENT_LENGTH is 413 and queues nothing."""
    app = make_app(tmp_path, database_url, max_content_length=2048)
    client = token_client(app, make_token(app))
    script = client.post("/api/scripts", json={"script_name": "s"}).json
    big = ndjson(*[{**ROW, "timestamp": f"2024-05-01T00:00:{i:02d}Z"} for i in range(60)])
    response = post_bulk(client, f"/api/scripts/id/{script['id']}/records/bulk", big, "rows.ndjson")
    assert response.status_code == 413
    assert client.get("/api/jobs").json == []


def test_idempotency_key_returns_the_same_job_and_refuses_another_file(client, app, reference, script, bulk_url):
    """The same key and file give the same job; the same key with another file is 409; keys are per caller."""
    rows = ndjson({**ROW, "timestamp": "2024-05-01T00:00:00Z"})
    first = post_bulk(client, bulk_url, rows, "rows.ndjson", headers={"Idempotency-Key": "upload-1"})
    again = post_bulk(client, bulk_url, rows, "rows.ndjson", headers={"Idempotency-Key": "upload-1"})
    assert first.status_code == again.status_code == 202
    assert again.json["id"] == first.json["id"]
    other = post_bulk(client, bulk_url, rows + rows, "rows.ndjson", headers={"Idempotency-Key": "upload-1"})
    assert other.status_code == 409
    assert client.get("/api/jobs").headers["X-Total-Count"] == "1"
    assert finished(client, first)["inserted"] == 1
    # Keys belong to their caller: another account's same key is another upload.
    someone_else = token_client(app, make_token(app, "writer"))
    theirs = post_bulk(someone_else, bulk_url, rows + rows, "rows.ndjson", headers={"Idempotency-Key": "upload-1"})
    assert theirs.status_code == 202 and theirs.json["id"] != first.json["id"]


def test_chunks_commit_counts_and_keep_only_the_first_100_errors(client, app, reference, script, bulk_url, monkeypatch):
    """Across many small chunks the counts add up and errors stop at 100."""
    monkeypatch.setitem(app.config, "BULK_CHUNK_ROWS", 7)
    rows = [{**ROW, "timestamp": f"2024-05-01T00:{i // 60:02d}:{i % 60:02d}Z"} for i in range(60)]
    rows += [{**ROW, "timestamp": "bad"} for _ in range(120)]
    job = finished(client, post_bulk(client, bulk_url, ndjson(*rows), "rows.ndjson"))
    assert (job["total"], job["inserted"], job["failed"], len(job["errors"])) == (180, 60, 120, 100)
    assert job["errors"][0]["line"] == 61 and job["errors"][-1]["line"] == 160


def test_only_a_chunk_meeting_a_duplicate_goes_the_staging_way_and_every_row_is_stored_once(
    client, app, reference, script, bulk_url, monkeypatch, database_url
):
    """Chunks go straight into the table; the one holding a taken key (stored before, or twice in the chunk) is
    rolled back and inserted through staging, skipping only the duplicates."""
    assert (
        client.post(f"/api/scripts/id/{script['id']}/records", data=record_form("2024-05-01T00:00:04Z")).status_code
        == 200
    )
    staged = []
    if database_url.startswith("postgresql"):
        through_staging = bulk_sql._insert_through_staging
        monkeypatch.setattr(
            bulk_sql,
            "_insert_through_staging",
            lambda *args: staged.append(through_staging(*args)) or staged[-1],
        )
    monkeypatch.setitem(app.config, "BULK_CHUNK_ROWS", 3)
    stamps = [f"2024-05-01T00:00:{second:02d}Z" for second in (0, 1, 2, 3, 4, 5, 6, 6, 7, 8, 9, 10)]
    job = finished(client, post_bulk(client, bulk_url, ndjson(*({**ROW, "timestamp": t} for t in stamps)), "r.ndjson"))
    assert (job["state"], job["total"], job["inserted"], job["duplicates"], job["failed"]) == (
        "succeeded",
        12,
        10,
        2,
        0,
    )
    lines = client.get(f"/api/scripts/id/{script['id']}/records").data.decode().splitlines()
    stored = sorted(json.loads(line)["timestamp"] for line in lines)
    assert stored == [f"2024-05-01T00:00:{second:02d}+00:00" for second in range(11)]
    if database_url.startswith("postgresql"):
        # Chunks of 3: (0 1 2) (3 4* 5) (6 6 7) (8 9 10); * stored before. Each staged chunk inserted two.
        assert staged == [2, 2]


def test_jobs_list_filters_and_unknown_job(client, reference, script, bulk_url):
    """Jobs list with filters; an unknown job id is 404."""
    finished(client, post_bulk(client, bulk_url, ndjson({**ROW, "timestamp": "2024-05-01T00:00:00Z"}), "r.ndjson"))
    assert len(client.get("/api/jobs", query_string={"kind": "bulk_records", "state": "succeeded"}).json) == 1
    assert client.get("/api/jobs", query_string={"script_id": str(uuid.uuid4())}).json == []
    assert client.get("/api/jobs", query_string={"state": "sleeping"}).status_code == 422
    assert client.get(f"/api/jobs/{uuid.uuid4()}").status_code == 404


def test_cancelling_a_queued_job_stops_it_and_an_ended_job_is_409(client, app, reference, script):
    """A cancelled job is never run; cancelling an ended job is 409."""
    from webapp.extensions import db
    from webapp.models import JobKind
    from webapp.services import jobs

    job = jobs.new_job(
        JobKind.BULK_RECORDS, uuid.UUID(script["id"]), {"key": "nowhere", "format": "ndjson", "defaults": {}}
    )
    db.session.commit()
    response = client.post(f"/api/jobs/{job.id}/cancel")
    assert response.status_code == 200
    assert response.json["state"] == "cancelled" and response.json["finished_at"]
    jobs.run_job(job.id, "test-worker")
    assert client.get(f"/api/jobs/{job.id}").json["state"] == "cancelled"
    assert client.post(f"/api/jobs/{job.id}/cancel").status_code == 409


def test_a_cancelled_or_failed_upload_leaves_no_staged_file(client, app, reference, script, bulk_url, held_jobs):
    """The staged upload of a job that will not finish is deleted: when cancelled, and when it fails."""
    from webapp.extensions import store
    from webapp.services import jobs

    queued = post_bulk(client, bulk_url, ndjson({**ROW, "timestamp": "2024-05-01T00:00:00Z"}), "rows.ndjson").json
    broken = post_bulk(client, bulk_url, b"timestamp,timestamp\n1,2\n", "rows.csv").json
    staged = {job["id"]: store.backend.path_of(db_job(job["id"]).params["key"]) for job in (queued, broken)}
    assert all(path.is_file() for path in staged.values())
    assert client.post(f"/api/jobs/{queued['id']}/cancel").status_code == 200
    jobs.run_job(uuid.UUID(broken["id"]), "test-worker")
    assert "header" in client.get(f"/api/jobs/{broken['id']}").json["error_description"]
    assert [path.exists() for path in staged.values()] == [False, False]


def test_a_database_failure_during_a_job_is_retried_not_fatal(
    client, app, reference, script, bulk_url, monkeypatch, held_jobs
):
    """A lost database connection while a job runs puts it back in the queue with its upload; it then succeeds."""
    from sqlalchemy.exc import OperationalError

    from webapp.extensions import store
    from webapp.models import JobKind
    from webapp.services import jobs

    job = post_bulk(client, bulk_url, ndjson({**ROW, "timestamp": "2024-05-01T00:00:00Z"}), "rows.ndjson").json
    staged = store.backend.path_of(db_job(job["id"]).params["key"])

    def connection_lost(job, worker):
        raise OperationalError("SELECT 1", {}, Exception("server closed the connection"), connection_invalidated=True)

    handlers = app.extensions["job_handlers"]
    real = handlers[JobKind.BULK_RECORDS]
    monkeypatch.setitem(handlers, JobKind.BULK_RECORDS, jobs.JobHandler(run=connection_lost, abandon=real.abandon))
    jobs.run_job(uuid.UUID(job["id"]), "test-worker")
    retried = client.get(f"/api/jobs/{job['id']}").json
    assert retried["state"] == "queued" and "database" in retried["error_description"]
    assert staged.is_file()
    handlers[JobKind.BULK_RECORDS] = real
    jobs.run_job(uuid.UUID(job["id"]), "test-worker")
    done = client.get(f"/api/jobs/{job['id']}").json
    assert (done["state"], done["inserted"]) == ("succeeded", 1)


def test_jobs_outlive_their_script(client, reference, script, bulk_url):
    """Deleting a script deletes its records but keeps its jobs."""
    job = finished(
        client, post_bulk(client, bulk_url, ndjson({**ROW, "timestamp": "2024-05-01T00:00:00Z"}), "r.ndjson")
    )
    client.delete(f"/api/scripts/id/{script['id']}")
    assert client.get(f"/api/jobs/{job['id']}").json["script_id"] == script["id"]


def test_a_job_resumed_after_its_runner_died_stores_every_row_once(
    client, app, reference, script, bulk_url, monkeypatch, held_jobs, failing_store
):
    """A runner that dies after some chunks leaves a checkpoint; the next one resumes with equal counts."""
    from webapp.extensions import db
    from webapp.models import Job
    from webapp.services import jobs

    monkeypatch.setitem(app.config, "BULK_CHUNK_ROWS", 4)
    rows = [{**ROW, "timestamp": f"2024-05-01T00:00:{i:02d}Z"} for i in range(20)]
    rows[5]["timestamp"] = "bad"
    rows[12] = rows[11]
    content = ndjson(*rows)
    job_id = uuid.UUID(post_bulk(client, bulk_url, content, "rows.ndjson").json["id"])

    class RunnerDied(BaseException):
        pass

    # The runner dies while reading the third chunk: the first two (8 rows) are committed.
    failing_store.read_error, failing_store.read_limit = RunnerDied(), len(b"".join(content.splitlines(True)[:9]))
    with pytest.raises(RunnerDied):
        jobs.run_job(job_id, "worker-a")
    db.session.rollback()
    halfway = db.session.get(Job, job_id)
    db.session.refresh(halfway)
    assert (halfway.state, halfway.checkpoint, halfway.processed) == ("running", 8, 8)

    failing_store.read_error = None
    jobs.run_job(job_id, "worker-b")  # the lease of worker-a has not expired: nothing happens
    db.session.refresh(halfway)
    assert halfway.lease_owner == "worker-a"
    halfway.lease_expires_at = halfway.lease_expires_at - timedelta(hours=1)
    db.session.commit()
    jobs.run_job(job_id, "worker-b")
    job = client.get(f"/api/jobs/{job_id}").json
    assert job["state"] == "succeeded"
    assert (job["total"], job["processed"], job["inserted"], job["duplicates"], job["failed"]) == (20, 20, 18, 1, 1)
    assert [error["line"] for error in job["errors"]] == [6]
    streamed = client.get(f"/api/scripts/id/{script['id']}/records").data.decode().splitlines()
    assert len(streamed) == 18


def test_bulk_bad_headers_and_parts_are_422(client, reference, script, bulk_url):
    """A text field where the file belongs, or an over-long Idempotency-Key, is refused."""
    assert client.post(bulk_url, data={"file": "hello"}).status_code == 422
    rows = ndjson({**ROW, "timestamp": "2024-05-01T00:00:00Z"})
    response = post_bulk(client, bulk_url, rows, "rows.ndjson", headers={"Idempotency-Key": "k" * 300})
    assert response.status_code == 422
    assert "Idempotency-Key" in response.json["errors"]
