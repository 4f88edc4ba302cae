"""Hostile bulk files: over-long rows, deep nesting, text that is not UTF-8, gzip (bombs included), broken containers.

A bad row fails alone on its own line and the job reads on; memory stays flat whatever the file holds. The jobs
run on the embedded default's queue, or in the test's own thread where their memory is measured.
"""

import gzip
import io
import json
import uuid
from datetime import timedelta

import pytest

from tests.memory import peak_rss_growth
from tests.test_bulk import ROW, finished, ndjson, post_bulk

# The most a job may add to its process's resident memory, whatever it reads (the rows' own chunk included).
FLAT_MB = 30


@pytest.fixture
def bulk_url(script):
    return f"/api/scripts/id/{script['id']}/records/bulk"


def row(second: int, **fields) -> dict:
    return {**ROW, "timestamp": f"2024-05-01T00:00:{second:02d}Z", **fields}


@pytest.fixture
def held(held_jobs):
    """Run queued jobs by hand, in this thread: returns a function that uploads and runs one, measuring its memory."""
    from webapp.services import jobs

    def run(client, url, content: bytes, name: str, **form) -> tuple[dict, float]:
        response = post_bulk(client, url, content, name, **form)
        assert response.status_code == 202, response.json
        with peak_rss_growth() as growth:
            jobs.run_job(uuid.UUID(response.json["id"]), "test-runner")
        return client.get(response.headers["Location"]).json, growth.mb

    return run


def test_a_row_over_the_row_limit_fails_alone_without_being_held(client, reference, script, bulk_url, held):
    """A 40 MB NDJSON line is read past in pieces and reported on its line; the rows around it are stored."""
    huge = json.dumps(row(2, script_data={"blob": "x" * 40_000_000}))
    job, growth = held(client, bulk_url, ndjson(row(1), huge, row(3)), "rows.ndjson")
    assert (job["state"], job["inserted"], job["failed"]) == ("succeeded", 2, 1)
    assert job["errors"] == [
        {"line": 2, "error": "The row is longer than 1048576 bytes (SCRIPTORIUM_BULK_MAX_ROW_BYTES)."}
    ]
    assert growth < FLAT_MB


def test_the_row_limit_is_a_setting(client, app, reference, script, bulk_url, monkeypatch):
    """SCRIPTORIUM_BULK_MAX_ROW_BYTES sets the limit; a CSV row that grows past it over several lines fails alone."""
    monkeypatch.setitem(app.config, "BULK_MAX_ROW_BYTES", 200)
    content = (
        b"timestamp,experiment_name,season_name,site_name,script_data\n"
        b'2024-05-01T00:00:01Z,Drought 2024,Summer,Maricopa,"{""a"":\n' + b'""' + b"y" * 150 + b'"",\n""b"": 1}"\n'
        b"2024-05-01T00:00:02Z,Drought 2024,Summer,Maricopa,\n"
    )
    job = finished(client, post_bulk(client, bulk_url, content, "rows.csv"))
    assert (job["inserted"], job["failed"]) == (1, 1)
    assert job["errors"][0]["line"] == 2 and "longer than 200 bytes" in job["errors"][0]["error"]


def test_csv_cells_may_be_as_long_as_the_row_limit_and_lines_stay_physical(client, reference, script, bulk_url):
    """A 300 KB JSON cell (over Python's 128 KiB field limit) is stored; a bad row after it keeps its own line."""
    cell = json.dumps({"blob": "z" * 300_000}).replace('"', '""')
    content = (
        b"timestamp,experiment_name,season_name,site_name,script_data\n"
        + f'2024-05-01T00:00:01Z,Drought 2024,Summer,Maricopa,"{cell}"\n'.encode()
        + b'2024-05-01T00:00:02Z,Drought 2024,Summer,Maricopa,"{""two"":\n 2}"\n'
        + b"not a time,Drought 2024,Summer,Maricopa,\n"
    )
    job = finished(client, post_bulk(client, bulk_url, content, "rows.csv"))
    assert (job["state"], job["inserted"], job["failed"]) == ("succeeded", 2, 1)
    assert job["errors"][0]["line"] == 5


def test_text_that_is_not_utf8_fails_on_its_own_line(client, reference, script, bulk_url):
    """A Latin-1 CSV or NDJSON row fails on its line; a UTF-16 NDJSON file fails line by line, not as a job."""
    csv_content = (
        b"timestamp,experiment_name,season_name,site_name,record_info\n"
        b"2024-05-01T00:00:01Z,Drought 2024,Summer,Maricopa,\n"
        b'2024-05-01T00:00:02Z,Drought 2024,Summer,Maricopa,"{""place"": ""M\xe9rida""}"\n'
        b"2024-05-01T00:00:03Z,Drought 2024,Summer,Maricopa,\n"
    )
    job = finished(client, post_bulk(client, bulk_url, csv_content, "rows.csv"))
    assert (job["state"], job["inserted"], job["failed"]) == ("succeeded", 2, 1)
    assert job["errors"] == [{"line": 3, "error": "Line 3 is not UTF-8 text."}]

    latin1 = (
        ndjson(row(4))
        + json.dumps(row(5, record_info={"place": "Mérida"}), ensure_ascii=False).encode("latin-1")
        + b"\n"
    )
    job = finished(client, post_bulk(client, bulk_url, latin1, "rows.ndjson"))
    assert (job["inserted"], job["failed"], job["errors"]) == (
        1,
        1,
        [{"line": 2, "error": "The row is not UTF-8 text."}],
    )

    utf16 = "\n".join(json.dumps(row(6 + i)) for i in range(3)).encode("utf-16")
    job = finished(client, post_bulk(client, bulk_url, utf16, "rows.ndjson"))
    assert (job["state"], job["inserted"], job["failed"]) == ("succeeded", 0, 3)
    assert [error["line"] for error in job["errors"]] == [1, 2, 3]


def test_json_nested_too_deep_fails_alone_with_flat_memory(client, reference, script, bulk_url, held):
    """A JSON array item nested 20,000 levels deep fails on its own, counted through rather than built."""
    deep = '{"timestamp": "2024-05-01T00:00:01Z", "script_data": {"x": ' + "[" * 20_000 + "]" * 20_000 + "}}"
    content = f"[{deep}, {json.dumps(row(2))}]".encode()
    job, growth = held(client, bulk_url, content, "rows.json")
    assert (job["state"], job["inserted"], job["failed"]) == ("succeeded", 1, 1)
    assert job["errors"] == [{"line": 1, "error": "The item nests deeper than 65 levels."}]
    assert growth < FLAT_MB

    job, growth = held(client, bulk_url, b"[" * 200_000, "brackets.json")
    assert job["state"] == "failed"
    assert "ends before its closing bracket" in job["error_description"]
    assert growth < FLAT_MB


def test_a_malformed_json_array_item_fails_alone_and_the_array_reads_on(client, reference, script, bulk_url):
    """An item that is not JSON fails with its index; only brackets that never close end the job early."""
    content = f'[{json.dumps(row(1))}, {{"timestamp": oops}}, {json.dumps(row(2))}]'.encode()
    job = finished(client, post_bulk(client, bulk_url, content, "rows.json"))
    assert (job["state"], job["inserted"], job["failed"]) == ("succeeded", 2, 1)
    assert job["errors"][0]["line"] == 2

    unclosed = f"[{json.dumps(row(3))}, {json.dumps(row(4))}".encode()
    job = finished(client, post_bulk(client, bulk_url, unclosed, "more.json"))
    assert (job["state"], job["inserted"]) == ("failed", 2)
    assert "after item 2" in job["error_description"]


def test_quotes_that_never_close_fail_the_row_where_they_open(client, reference, script, bulk_url):
    """A CSV quote left open to the end of the file fails the row it opens on; the rows before it are stored."""
    content = (
        b"timestamp,experiment_name,season_name,site_name,script_data\n"
        b"2024-05-01T00:00:01Z,Drought 2024,Summer,Maricopa,\n"
        b'2024-05-01T00:00:02Z,Drought 2024,Summer,Maricopa,"{""open\n'
        b"2024-05-01T00:00:03Z,Drought 2024,Summer,Maricopa,\n"
    )
    job = finished(client, post_bulk(client, bulk_url, content, "rows.csv"))
    assert (job["state"], job["inserted"], job["failed"]) == ("succeeded", 1, 1)
    assert job["errors"][0]["line"] == 3


def test_a_header_of_100000_columns_gives_short_reasons(client, reference, script, bulk_url):
    """Rows naming 100,000 unknown columns fail with a reason of bounded length."""
    header = ",".join(f"c{i}" for i in range(100_000))
    content = f"{header}\n{','.join('v' for _ in range(100_000))}\n".encode()
    job = finished(client, post_bulk(client, bulk_url, content, "wide.csv"))
    assert (job["state"], job["failed"]) == ("succeeded", 1)
    assert job["errors"][0]["line"] == 2 and len(job["errors"][0]["error"]) <= 500


@pytest.mark.parametrize(
    ("name", "content_type", "content"),
    [
        ("rows.ndjson.gz", None, ndjson(row(1), row(2))),
        (
            "rows.csv.gz",
            None,
            b"timestamp,experiment_name,season_name,site_name\n2024-05-01T00:00:01Z,Drought 2024,"
            b"Summer,Maricopa\n2024-05-01T00:00:02Z,Drought 2024,Summer,Maricopa\n",
        ),
        ("rows.json.gz", None, json.dumps([row(1), row(2)]).encode()),
        ("rows.ndjson.gz", "application/gzip", ndjson(row(1), row(2))),
        ("rows.ndjson", None, ndjson(row(1), row(2))),  # compressed, though its name does not say so
    ],
)
def test_gzip_compressed_files_are_decompressed_while_read(
    client, reference, script, bulk_url, name, content_type, content
):
    """.ndjson.gz, .csv.gz, .json.gz and application/gzip parts are read decompressed (gzip is known by its bytes)."""
    response = post_bulk(client, bulk_url, gzip.compress(content), name, content_type)
    job = finished(client, response)
    assert (job["state"], job["inserted"], job["failed"]) == ("succeeded", 2, 0)


def test_a_gzip_part_must_name_the_format_inside(client, reference, script, bulk_url):
    """An application/gzip part called rows.gz says nothing of its format: 415 with the naming rule."""
    response = post_bulk(client, bulk_url, gzip.compress(ndjson(row(1))), "rows.gz", "application/gzip")
    assert response.status_code == 415
    assert "rows.ndjson.gz" in response.json["error_description"]


def test_a_gzip_bomb_is_one_failed_row_with_flat_memory(client, reference, script, bulk_url, held):
    """300 MB of zeros compressed to a few hundred KB is one over-long line, read past without being held."""
    bomb = io.BytesIO()
    with gzip.GzipFile(fileobj=bomb, mode="wb", compresslevel=9) as out:
        out.write(ndjson(row(1)))
        for _ in range(300):
            out.write(b"0" * 1_000_000)
        out.write(b"\n" + ndjson(row(2)))
    job, growth = held(client, bulk_url, bomb.getvalue(), "bomb.ndjson.gz")
    assert (job["state"], job["inserted"], job["failed"]) == ("succeeded", 2, 1)
    assert job["errors"][0]["line"] == 2
    assert growth < FLAT_MB


def test_a_file_may_not_decompress_to_more_than_an_upload_may_hold(
    client, app, reference, script, bulk_url, monkeypatch
):
    """Decompressed data beyond SCRIPTORIUM_MAX_CONTENT_LENGTH ends the job; the rows before it are stored."""
    rows = ndjson(*(row(second) for second in range(60)))
    monkeypatch.setitem(app.config, "MAX_CONTENT_LENGTH", len(rows) // 2)
    job = finished(client, post_bulk(client, bulk_url, gzip.compress(rows), "rows.ndjson.gz"))
    assert job["state"] == "failed"
    assert "decompresses to more than" in job["error_description"]
    assert 0 < job["inserted"] < 60


def test_a_broken_gzip_stream_fails_the_job_after_storing_what_it_held(client, reference, script, bulk_url):
    """A gzip file cut short ends the job as failed, naming gzip; the rows decompressed before the cut count."""
    cut = gzip.compress(ndjson(row(1), row(2), row(3)))[:-8]  # without its checksum trailer
    job = finished(client, post_bulk(client, bulk_url, cut, "rows.ndjson.gz"))
    assert (job["state"], job["inserted"]) == ("failed", 3)
    assert "gzip" in job["error_description"]


def test_a_job_whose_runner_vanishes_twice_at_the_same_point_fails(client, app, reference, script, bulk_url, held):
    """A job that kills its runner twice without progress is failed with the reason, not handed to a third one."""
    from webapp.extensions import db
    from webapp.models import Job
    from webapp.services import jobs

    response = post_bulk(client, bulk_url, ndjson(row(1)), "rows.ndjson")
    job_id = uuid.UUID(response.json["id"])

    def runner_vanishes(worker: str) -> None:
        job = jobs.claim(job_id, worker)
        assert job is not None
        job.lease_expires_at = job.lease_expires_at - timedelta(hours=1)  # its lease runs out unrenewed
        db.session.commit()

    runner_vanishes("worker-a")
    runner_vanishes("worker-b")  # resumed once: a worker may die for reasons of its own
    assert db.session.get(Job, job_id).lost_runs == 1
    jobs.run_job(job_id, "worker-c")
    job = client.get(f"/api/jobs/{job_id}").json
    assert (job["state"], job["inserted"]) == ("failed", 0)
    assert "vanished 2 times" in job["error_description"]


def test_a_request_body_with_an_encoding_the_app_does_not_decode_is_415(client, reference, script, bulk_url):
    """Content-Encoding: gzip (or anything but identity) is refused, never parsed raw."""
    body = gzip.compress(json.dumps({"script_name": "x"}).encode())
    response = client.post(
        "/api/scripts", data=body, content_type="application/json", headers={"Content-Encoding": "gzip"}
    )
    assert response.status_code == 415
    assert "Content-Encoding" in response.json["error_description"]
    plain = client.post("/api/scripts", json={"script_name": "x"}, headers={"Content-Encoding": "identity"})
    assert plain.status_code == 200


def test_a_script_deleted_while_its_upload_is_ingested_fails_the_job_with_the_reason(
    client, app, reference, script, bulk_url, monkeypatch, held_jobs, failing_store
):
    """Deleting the script midway ends its bulk job as failed, saying why (the insert met a deleted reference)."""
    from sqlalchemy import delete

    from webapp.extensions import db
    from webapp.models import Script
    from webapp.services import jobs

    monkeypatch.setitem(app.config, "BULK_CHUNK_ROWS", 2)
    content = ndjson(*(row(second) for second in range(8)))
    job_id = uuid.UUID(post_bulk(client, bulk_url, content, "rows.ndjson").json["id"])
    engine = db.engine  # the reader runs on a thread of its own, outside the app context

    def delete_the_script():
        with engine.begin() as connection:
            connection.execute(delete(Script).where(Script.id == uuid.UUID(script["id"])))

    failing_store.read_hook, failing_store.read_limit = delete_the_script, len(b"".join(content.splitlines(True)[:3]))
    jobs.run_job(job_id, "test-runner")
    job = client.get(f"/api/jobs/{job_id}").json
    assert job["state"] == "failed"
    assert job["error_description"] == "The script was deleted while its upload was being ingested."
