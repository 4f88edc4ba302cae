"""The Python client (client/, package scriptorium_client) against gunicorn on PostgreSQL, and against tiny
loopback servers where the test must see what the client sends (retries, headers of a download)."""

import csv
import datetime as dt
import gzip
import hashlib
import io
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner
from scriptorium_client import APIError, Client
from scriptorium_client import client as client_module

from tests.conftest import empty_tables, make_app, make_token
from tests.servers import gunicorn_app

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NAMES = {"experiment_name": "Drought 2024", "season_name": "Summer", "site_name": "Maricopa"}


@pytest.fixture(scope="module")
def server(tmp_path_factory, postgresql_url):
    """gunicorn serving the app on PostgreSQL with the local store; yields (base URL, app)."""
    tmp_path = tmp_path_factory.mktemp("client-server")
    app = make_app(tmp_path, postgresql_url)
    with gunicorn_app(postgresql_url, tmp_path) as base:
        yield base, app
    empty_tables(app)


@pytest.fixture
def api(server):
    """A client of the server with a writer's token; the tables are emptied after the test."""
    base, app = server
    with Client(base, make_token(app, "writer")) as client:
        yield client
    empty_tables(app)


@pytest.fixture
def script(api):
    """The tour's experiment, season and site, and a script associated with the experiment."""
    experiment = api.create_experiment("Drought 2024")
    api.create_season(experiment["id"], "Summer")
    api.create_site("Maricopa", site_state="AZ")
    return api.create_script(script_name="canopy-height", script_extension="py", experiment_name="Drought 2024")


def add(api, script, timestamp, **fields):
    """A record of the tour's names at ``timestamp``."""
    return api.add_record(script["id"], timestamp=timestamp, **{**NAMES, **fields})


# -- reference data, scripts, runs, datasets


def test_reference_data_round_trip(api):
    """Experiments, seasons and sites are created, listed, read, changed and deleted through the client."""
    experiment = api.create_experiment("E1", experiment_start_date=dt.date(2024, 4, 1))
    assert experiment["experiment_start_date"] == "2024-04-01"
    season = api.create_season(experiment["id"], "Spring", season_info={"weeks": 12})
    other = api.create_season(api.create_experiment("E2")["id"], "Spring")
    site = api.create_site("Ames", site_state="IA")
    assert [e["experiment_name"] for e in api.experiments()] == ["E1", "E2"]
    assert [s["id"] for s in api.seasons(experiment["id"])] == [season["id"]]
    assert {s["id"] for s in api.seasons()} == {season["id"], other["id"]}
    assert api.season(season["id"])["season_info"] == {"weeks": 12}
    assert api.update_site(site["id"], site_city="Ames", site_state=None)["site_state"] is None
    assert api.site(site["id"])["site_city"] == "Ames"
    assert api.update_experiment(experiment["id"], experiment_info={"pi": "Lee"})["experiment_info"] == {"pi": "Lee"}
    assert api.experiment(experiment["id"])["experiment_info"] == {"pi": "Lee"}
    assert api.update_season(season["id"], season_name="Early spring")["season_name"] == "Early spring"
    api.delete_season(season["id"])
    api.delete_site(site["id"])
    api.delete_experiment(experiment["id"])
    assert [s["site_name"] for s in api.sites()] == []
    with pytest.raises(APIError) as missing:
        api.experiment(experiment["id"])
    assert missing.value.status == 404


def test_scripts_runs_and_datasets(api, script):
    """Scripts are searched, read, changed and deleted; runs and datasets are listed (empty lists are [])."""
    assert api.scripts() == [script]
    assert api.scripts(script_name="nothing-like-it") == []
    assert [s["id"] for s in api.scripts(experiment_name="Drought 2024")] == [script["id"]]
    assert [e["experiment_name"] for e in api.script_experiments(script["id"])] == ["Drought 2024"]
    assert api.runs(script["id"]) == []
    assert api.datasets(script["id"]) == []
    run = api.create_run(script["id"], {"commit": "abc123"})
    assert [r["script_run_info"] for r in api.runs(script["id"])] == [{"commit": "abc123"}]
    dataset = api.create_dataset(script["id"], "Plots 2024", collection_date=dt.date(2024, 5, 1))
    assert [d["id"] for d in api.datasets(script["id"])] == [dataset["id"]]
    assert api.create_run(script["id"])["id"] != run["id"]
    changed = api.update_script(script["id"], script_url="https://git.example.org/ch", script_extension=None)
    assert (changed["script_url"], changed["script_extension"]) == ("https://git.example.org/ch", None)
    assert api.script(script["id"])["script_url"] == "https://git.example.org/ch"
    api.delete_script(script["id"])
    with pytest.raises(APIError) as unknown:
        api.runs(script["id"])
    assert unknown.value.status == 404


# -- records in and out


def test_add_record_with_a_path_a_file_object_and_a_pipe(api, script, tmp_path):
    """A record's file may be a path, a seekable binary file or an unseekable stream; each is stored whole."""
    payload = b"\x00\x01scan-bytes" * 40_000
    (tmp_path / "scan.tif").write_bytes(payload)
    by_path = add(api, script, "2024-05-01T12:00:00Z", script_data={"height_cm": 41.5}, file=tmp_path / "scan.tif")
    assert (by_path["file_name"], by_path["file_status"]) == ("scan.tif", "pending")
    buffer = io.BytesIO(b"skip" + payload)
    buffer.seek(4)
    buffer.name = "from-buffer.tif"
    by_object = add(api, script, "2024-05-01T13:00:00Z", file=buffer)

    class Pipe(io.RawIOBase):
        """Readable once, not seekable: sent chunked."""

        def __init__(self):
            self.source = io.BytesIO(payload)

        def readable(self):
            return True

        def readinto(self, target):
            data = self.source.read(len(target))
            target[: len(data)] = data
            return len(data)

    by_pipe = add(api, script, dt.datetime(2024, 5, 1, 14, tzinfo=dt.UTC), file=Pipe(), record_info={"via": "pipe"})
    assert by_pipe["record_info"] == {"via": "pipe"}
    assert by_pipe["timestamp"].startswith("2024-05-01T14:00:00")
    for record in (by_path, by_object, by_pipe):
        path = api.download(record["id"], tmp_path / f"{record['id']}.bin")  # waits while the file is pending
        assert path.read_bytes() == payload
        assert api.record(record["id"])["file_sha256"] == hashlib.sha256(payload).hexdigest()


def test_download_into_a_folder_keeps_the_original_name(api, script, tmp_path):
    """Given a folder, the download is written under the file's original (sanitised) name."""
    upload = tmp_path / "up"
    upload.mkdir()
    (upload / "plot 7 ndvi.png").write_bytes(b"png-bytes")
    record = add(api, script, "2024-05-01T12:00:00Z", file=upload / "plot 7 ndvi.png")
    into = tmp_path / "downloads"
    into.mkdir()
    written = api.download(record["id"], into)
    assert written == into / "plot 7 ndvi.png"
    assert written.read_bytes() == b"png-bytes"
    assert sorted(p.name for p in into.iterdir()) == ["plot 7 ndvi.png"]  # no temporary file left behind


def test_records_go_to_the_exact_or_the_filter_stream(api, script):
    """Exact names go to /records, lists and time bounds (datetimes, lists) to /records/filter."""
    api.create_site("Ames")
    first = add(api, script, "2024-05-01T12:00:00Z", script_data={"n": 1})
    second = add(api, script, "2024-05-02T12:00:00Z", site_name="Ames", script_data={"n": 2})
    third = add(api, script, "2024-05-03T12:00:00Z", dataset_name="Late", script_data={"n": 3})

    def ids(**filters):
        return [record["id"] for record in api.records(script["id"], **filters)]

    assert ids() == [first["id"], second["id"], third["id"]]
    assert ids(site_name="Ames") == [second["id"]]
    assert ids(dataset_name="Late") == [third["id"]]
    assert ids(collection_date=dt.date(2024, 5, 2)) == [second["id"]]
    assert ids(site_names=["Ames", "Maricopa"]) == [first["id"], second["id"], third["id"]]
    assert ids(start_timestamp=dt.datetime(2024, 5, 2, 12, tzinfo=dt.UTC)) == [second["id"], third["id"]]
    assert ids(end_timestamp="2024-05-02T12:00:00Z", site_names="Maricopa") == [first["id"]]
    # An exact name mixed with bounds is the list of that one name.
    assert ids(site_name="Maricopa", start_timestamp=dt.datetime(2024, 5, 2)) == [third["id"]]
    [record] = api.records(script["id"], site_name="Ames")
    assert record["script_data"] == {"n": 2} and record["site_name"] == "Ames"
    with pytest.raises(TypeError, match="unknown record filter"):
        api.records(script["id"], site="Ames", start_timestamp="2024-05-01")


def test_update_and_delete_a_record(api, script):
    """A record's script_data and record_info are replaced; a deleted record is gone."""
    record = add(api, script, "2024-05-01T12:00:00Z", script_data={"height_cm": 41.5})
    changed = api.update_record(record["id"], script_data={"height_cm": 42.0}, record_info={"checked": True})
    assert (changed["script_data"], changed["record_info"]) == ({"height_cm": 42.0}, {"checked": True})
    api.delete_record(record["id"])
    assert list(api.records(script["id"])) == []


def three_records(api, script):
    """Three records of two sites over three days, with differing script_data keys; their ids in order."""
    api.create_site("Ames")
    return [
        add(api, script, "2024-05-01T12:00:00Z", script_data={"height_cm": 41.5, "plot": 7})["id"],
        add(api, script, "2024-05-02T12:00:00Z", site_name="Ames", script_data={"height_cm": 43, "plot": 8})["id"],
        add(api, script, "2024-05-03T12:00:00Z", script_data={"plot": 9, "note": "leaf curl, row 3"})["id"],
    ]


def test_export_writes_csv_and_parquet_tables(api, script, tmp_path):
    """The export is written whole, in the stream's order, with script_data's keys as columns; progress gets the
    bytes received and the table's rows; a folder gets records-<id>.<format>."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = three_records(api, script)
    seen = []
    written = api.export(script["id"], tmp_path / "all.csv", format="csv", progress=lambda *a: seen.append(a))
    with open(written, newline="", encoding="utf-8") as table:
        rows = list(csv.DictReader(table))
    assert [row["id"] for row in rows] == ids
    assert [row["script_data.plot"] for row in rows] == ["7", "8", "9"]
    assert json.loads(rows[2]["script_data"]) == {"plot": 9, "note": "leaf curl, row 3"}
    assert rows[2]["script_data.note"] == "leaf curl, row 3"
    assert seen[-1] == (written.stat().st_size, 3)

    folder = tmp_path / "out"
    folder.mkdir()
    parquet = api.export(script["id"], folder, site_names=["Ames"], end_timestamp=dt.datetime(2024, 6, 1))
    assert parquet == folder / f"records-{script['id']}.parquet"
    read = pq.read_table(parquet)
    assert read.column("id").to_pylist() == [ids[1]]
    assert pa.types.is_timestamp(read.schema.field("timestamp").type)
    assert read.schema.field("timestamp").type.tz in ("UTC", "+00:00")
    assert sorted(p.name for p in folder.iterdir()) == [parquet.name]


def test_records_frame_is_the_parquet_export_as_a_dataframe(api, script):
    """records_frame gives one row per record, in order, with typed script_data columns; filters apply."""
    ids = three_records(api, script)
    frame = api.records_frame(script["id"])
    assert frame["id"].tolist() == ids
    assert frame["script_data.plot"].tolist() == [7, 8, 9]
    assert frame["script_data.height_cm"].tolist()[:2] == [41.5, 43.0]
    assert str(frame["timestamp"].dt.tz) == "UTC"
    assert frame["site_name"].tolist() == ["Maricopa", "Ames", "Maricopa"]
    assert api.records_frame(script["id"], site_name="Ames")["id"].tolist() == [ids[1]]
    assert len(api.records_frame(script["id"], start_timestamp="2025-01-01")) == 0


def test_export_errors(api, script, tmp_path):
    """An unknown format or a bad bound is a 422 before any file is written; an unknown script is a 404."""
    with pytest.raises(APIError) as bad_format:
        api.export(script["id"], tmp_path / "t.xlsx", format="xlsx")
    assert bad_format.value.status == 422
    with pytest.raises(APIError) as bad_bound:
        api.export(script["id"], tmp_path / "t.csv", format="csv", start_timestamp="yesterday-ish")
    assert bad_bound.value.status == 422 and "start_timestamp" in bad_bound.value.errors
    with pytest.raises(APIError) as unknown:
        api.records_frame("00000000-0000-0000-0000-000000000000")
    assert unknown.value.status == 404
    assert list(tmp_path.iterdir()) == []


def test_records_frame_without_pyarrow_names_the_frames_extra(monkeypatch):
    """Without pyarrow installed, records_frame says which extra to install."""
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with Client("http://127.0.0.1:9", "t") as client, pytest.raises(ImportError, match=r"scriptorium-client\[frames\]"):
        client.records_frame("s1")


def test_cli_export_writes_the_table_with_filters(api, script, server, tmp_path):
    """`scriptorium export` writes the filtered table and says how many records it holds."""
    from webapp.cli import main

    ids = three_records(api, script)
    base, app = server
    out = tmp_path / "maricopa.csv"
    args = ["export", "--script", script["id"], "--format", "csv", "-o", str(out), "--site", "Maricopa"]
    args += ["--start", "2024-05-01T00:00:00Z", "--url", base, "--token", make_token(app, "reader")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "Wrote 2 records" in result.output
    with open(out, newline="", encoding="utf-8") as table:
        assert [row["id"] for row in csv.DictReader(table)] == [ids[0], ids[2]]
    refused = CliRunner().invoke(main, [*args[:4], "parquet", "-o", str(out), "--url", base, "--token", "nope"])
    assert refused.exit_code == 1 and "401" in refused.output


# -- bulk uploads and jobs


def test_bulk_upload_of_an_iterable_streams_ndjson(api, script):
    """A generator of dicts is uploaded as NDJSON (dates serialised) and the job followed to its end."""
    start = dt.datetime(2024, 6, 1, tzinfo=dt.UTC)
    seen = []

    def rows():
        for i in range(3000):
            yield {"timestamp": start + dt.timedelta(seconds=i), "script_data": {"i": i}}

    job = api.bulk_upload(script["id"], rows(), interval=0.1, progress=seen.append, **NAMES)
    assert (job["state"], job["inserted"], job["failed"], job["replayed"]) == ("succeeded", 3000, 0, False)
    assert seen[-1]["state"] == "succeeded"
    stored = list(api.records(script["id"]))
    assert len(stored) == 3000
    assert stored[-1]["script_data"] == {"i": 2999}


def test_bulk_upload_of_a_file_is_found_again_by_its_hash(api, script, tmp_path):
    """A gzip NDJSON file is uploaded; the same file again replays the job; wait=False answers at once."""
    path = tmp_path / "rows.ndjson.gz"
    lines = "".join(json.dumps({"timestamp": f"2024-06-01T00:00:{i:02d}Z"}) + "\n" for i in range(20))
    path.write_bytes(gzip.compress(lines.encode()))
    job = api.bulk_upload(script["id"], path, interval=0.1, **NAMES)
    assert (job["state"], job["inserted"], job["replayed"]) == ("succeeded", 20, False)
    again = api.bulk_upload(script["id"], str(path), wait=False, **NAMES)
    assert (again["id"], again["replayed"]) == (job["id"], True)
    assert api.job(job["id"])["inserted"] == 20
    assert [j["id"] for j in api.jobs(script_id=script["id"])] == [job["id"]]
    assert api.jobs(state="failed") == []
    with pytest.raises(TypeError, match="bulk_upload takes no site"):
        api.bulk_upload(script["id"], path, site="Maricopa")


def test_recent_jobs_wait_job_and_cancel(api, script):
    """recent_jobs is newest first; cancelling an ended job is a 409 APIError."""
    ids = []
    for i in range(3):
        rows = [{"timestamp": f"2024-06-0{i + 1}T00:00:00Z"}]
        ids.append(api.bulk_upload(script["id"], rows, wait=False, **NAMES)["id"])
    assert [j["id"] for j in api.recent_jobs(2)] == [ids[2], ids[1]]
    ended = [api.wait_job(job_id, interval=0.05, timeout=60) for job_id in ids]
    assert [job["state"] for job in ended] == ["succeeded"] * 3
    with pytest.raises(APIError) as conflict:
        api.cancel_job(ids[0])
    assert conflict.value.status == 409
    assert "already ended" in conflict.value.error_description


@pytest.mark.parametrize("sample", ["records.csv", "records.ndjson"])
def test_each_sample_file_stores_every_row(api, script, sample):
    """The sample files the README and `scriptorium upload --help` name upload with every row stored."""
    path = EXAMPLES / sample
    rows = len(path.read_text().splitlines()) - (1 if sample.endswith(".csv") else 0)
    assert rows >= 3
    job = api.bulk_upload(script["id"], path, interval=0.1)
    assert (job["state"], job["inserted"], job["failed"]) == ("succeeded", rows, 0), job["errors"]
    assert len(list(api.records(script["id"]))) == rows


# -- errors


def test_errors_are_api_errors_with_the_contracts_fields(api, script, server):
    """404, 422 with its field messages, and a reader's token writing (403, not retried) raise APIError."""
    with pytest.raises(APIError) as unknown:
        list(api.records("00000000-0000-0000-0000-000000000000"))
    assert unknown.value.status == 404 and unknown.value.error_description
    with pytest.raises(APIError) as invalid:
        add(api, script, "not a time")
    assert invalid.value.status == 422
    assert "timestamp" in invalid.value.errors
    assert "timestamp" in str(invalid.value) and str(invalid.value).startswith("422 ")
    base, app = server
    with Client(base, make_token(app, "reader")) as reader:
        assert reader.script(script["id"])["id"] == script["id"]
        with pytest.raises(APIError) as forbidden:
            reader.create_script(script_name="not mine to make")
    assert forbidden.value.status == 403
    with Client(base, "not-a-token") as stranger, pytest.raises(APIError) as unauthorised:
        stranger.scripts()
    assert unauthorised.value.status == 401


class Scripted(ThreadingHTTPServer):
    """A loopback HTTP server answering each request with the next of ``answers`` (status, headers, body) and
    keeping what it was sent: (method, path, headers, body)."""

    def __init__(self, answers):
        super().__init__(("127.0.0.1", 0), ScriptedHandler)
        self.answers = list(answers)
        self.seen = []

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


class ScriptedHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if self.headers.get("Transfer-Encoding") == "chunked":
            body = b""
            while size := int(self.rfile.readline().strip(), 16):
                body += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
        else:
            body = self.rfile.read(length)
        self.server.seen.append((self.command, self.path, dict(self.headers), body))
        status, headers, payload = self.server.answers.pop(0)
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", "Content-Length": str(len(payload)), **headers}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)
        if int(headers.get("Content-Length", len(payload))) != len(payload):
            self.close_connection = True  # an answer that breaks off

    do_GET = do_POST = do_PATCH = do_DELETE = _answer

    def log_message(self, *args):
        """Quiet."""


@pytest.fixture
def scripted():
    """Start a ``Scripted`` server with the given answers; stopped after the test."""
    servers = []

    def start(*answers):
        http = Scripted(answers)
        threading.Thread(target=http.serve_forever, daemon=True).start()
        servers.append(http)
        return http

    yield start
    for http in servers:
        http.shutdown()
        http.server_close()


BUSY = (503, {"Retry-After": "0"}, b'{"code": 503, "error": "Service Unavailable", "error_description": "Busy."}')
OK = (200, {}, b'{"id": "s1", "script_name": "x"}')


def test_reads_are_retried_on_503_and_on_409_with_retry_after(scripted):
    """A GET answered 503 twice, then 200, succeeds on its third attempt; a 409 with Retry-After is retried."""
    http = scripted(BUSY, BUSY, OK, (409, {"Retry-After": "0"}, b"{}"), OK)
    with Client(http.url, "t") as client:
        assert client.script("s1")["id"] == "s1"
        assert client.script("s1")["id"] == "s1"
    assert [seen[1] for seen in http.seen] == ["/api/scripts/id/s1"] * 5


def test_retry_after_is_honoured_up_to_a_cap(scripted, monkeypatch):
    """The client waits what Retry-After says, at most ``max_wait``; without it, it backs off."""
    waits = []
    monkeypatch.setattr(client_module.time, "sleep", waits.append)
    http = scripted((503, {"Retry-After": "3600"}, b"{}"), (503, {"Retry-After": "1"}, b"{}"), (503, {}, b"{}"), OK)
    with Client(http.url, "t", max_wait=2) as client:
        assert client.script("s1")["id"] == "s1"
    assert waits == [2, 1, 2]


def test_requests_not_safe_to_repeat_are_not_retried(scripted, tmp_path):
    """A create, a 409 without Retry-After, a 403 and an iterable's bulk stream fail on their first answer."""
    conflict = (409, {}, b'{"code": 409, "error": "Conflict", "error_description": "Taken."}')
    forbidden = (403, {"Retry-After": "0"}, b'{"code": 403, "error": "Forbidden", "error_description": "Role."}')
    http = scripted(BUSY, conflict, forbidden, BUSY)
    statuses = []
    with Client(http.url, "t") as client:
        for call in (
            lambda: client.create_script(script_name="x"),
            lambda: client.script("s1"),
            lambda: client.script("s1"),
            lambda: client.bulk_upload("s1", iter([{"timestamp": "2024-01-01"}])),
        ):
            with pytest.raises(APIError) as failed:
                call()
            statuses.append(failed.value.status)
    assert statuses == [503, 409, 403, 503]
    assert [(method, path) for method, path, _, _ in http.seen] == [
        ("POST", "/api/scripts"),
        ("GET", "/api/scripts/id/s1"),
        ("GET", "/api/scripts/id/s1"),
        ("POST", "/api/scripts/id/s1/records/bulk"),
    ]


def test_a_bulk_upload_of_a_file_is_retried_with_the_same_key_and_body(scripted, tmp_path):
    """A file's bulk POST carries its SHA-256 as Idempotency-Key, so a 503 is retried with the whole file again."""
    path = tmp_path / "rows.ndjson"
    path.write_text('{"timestamp": "2024-01-01T00:00:00Z"}\n')
    job = {"id": "j1", "state": "queued", "processed": 0, "total": None}
    http = scripted(BUSY, (202, {"Idempotent-Replayed": "true"}, json.dumps(job).encode()))
    with Client(http.url, "t") as client:
        answered = client.bulk_upload("s1", path, wait=False, site_name="Maricopa")
    assert (answered["id"], answered["replayed"]) == ("j1", True)
    (_, _, first, body1), (_, _, second, body2) = http.seen
    assert first["Idempotency-Key"] == second["Idempotency-Key"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert body1 == body2 and path.read_bytes() in body1 and b"Maricopa" in body1
    assert int(first["Content-Length"]) == len(body1)


def test_download_does_not_send_the_token_to_the_file_url(scripted, tmp_path):
    """The 307's file URL (same host here) is fetched without the Authorization header the API call carried."""
    http = scripted(
        (307, {"Location": "/files/signed-token"}, b""),
        (200, {"Content-Disposition": "attachment; filename*=UTF-8''..%2F..%2Fevil%0A.txt"}, b"file-bytes"),
    )
    with Client(http.url, "secret-token") as client:
        written = client.download("r1", tmp_path)
    (_, api_path, api_headers, _), (_, file_path, file_headers, _) = http.seen
    assert (api_path, api_headers["Authorization"]) == ("/api/scripts/records/id/r1/download", "Bearer secret-token")
    assert file_path == "/files/signed-token"
    assert "Authorization" not in file_headers and "secret-token" not in json.dumps(file_headers)
    assert written == tmp_path / "evil.txt"  # no way out of the folder, no control character
    assert written.read_bytes() == b"file-bytes"


def test_records_raise_on_the_streams_error_line(scripted):
    """The records before the error line are yielded; the error line raises APIError with its description."""
    lines = b'{"id": "a"}\n{"id": "b"}\n{"error": "Internal Server Error", "error_description": "Broke midway."}\n'
    http = scripted((200, {"Content-Type": "application/x-ndjson"}, lines))
    seen = []
    with Client(http.url, "t") as client, pytest.raises(APIError) as failed:
        for record in client.records("s1"):
            seen.append(record["id"])
    assert seen == ["a", "b"]
    assert (failed.value.status, failed.value.error_description) == (500, "Broke midway.")


def test_exports_that_end_badly_raise_and_leave_no_file(scripted, tmp_path):
    """A CSV ending with the error line, a Parquet file without its footer and a body that breaks off raise
    APIError, and nothing is left at the destination."""
    error_line = b'{"error": "Internal Server Error", "error_description": "The export failed midway."}\n'
    http = scripted(
        (200, {"Content-Type": "text/csv", "X-Total-Count": "2"}, b"id,timestamp\r\na,2024\r\n" + error_line),
        (200, {"Content-Type": "application/vnd.apache.parquet"}, b"PAR1" + b"\x00" * 100),
        (200, {"Content-Type": "text/csv", "Content-Length": "1000"}, b"id,timestamp\r\n"),
        (200, {"Content-Type": "text/csv", "X-Total-Count": "1"}, b"id,timestamp\r\na,2024\r\n"),
    )
    with Client(http.url, "t") as client:
        with pytest.raises(APIError) as csv_error:
            client.export("s1", tmp_path / "t.csv", format="csv")
        assert csv_error.value.error_description == "The export failed midway."
        with pytest.raises(APIError, match="without its footer"):
            client.export("s1", tmp_path / "t.parquet")
        with pytest.raises(APIError, match="broke off"):
            client.export("s1", tmp_path / "t.csv", format="csv")
        assert list(tmp_path.iterdir()) == []
        assert client.export("s1", tmp_path / "t.csv", format="csv").read_bytes() == b"id,timestamp\r\na,2024\r\n"
    assert http.seen[0][1] == "/api/scripts/id/s1/records/export?format=csv"


def test_a_stream_that_breaks_off_raises(scripted):
    """An NDJSON stream whose connection ends before its last byte raises APIError, not a JSON error."""
    http = scripted((200, {"Content-Type": "application/x-ndjson", "Content-Length": "1000"}, b'{"id": "a"}\n{"id'))
    with Client(http.url, "t") as client, pytest.raises(APIError, match="broke off"):
        list(client.records("s1"))


def test_client_defaults_come_from_the_environment(monkeypatch):
    """Client() reads SCRIPTORIUM_URL and SCRIPTORIUM_TOKEN."""
    monkeypatch.setenv("SCRIPTORIUM_URL", "http://127.0.0.1:5999/")
    monkeypatch.setenv("SCRIPTORIUM_TOKEN", "from-env")
    with Client() as client:
        assert client.url == "http://127.0.0.1:5999"
        assert client.session.headers["Authorization"] == "Bearer from-env"
    monkeypatch.delenv("SCRIPTORIUM_URL")
    assert Client().url == "http://127.0.0.1:5000"


def test_upload_help_shows_the_row_layouts_and_the_samples():
    """`scriptorium upload --help` shows the CSV header and an NDJSON line, and names the existing sample files."""
    from webapp.cli import main

    shown = CliRunner().invoke(main, ["upload", "--help"]).output
    assert "timestamp,experiment_name,season_name,site_name,script_data" in shown
    assert '{"timestamp": "2024-05-01T12:00:00Z"' in shown and "Unknown field" in shown
    for sample in ("examples/records.csv", "examples/records.ndjson"):
        assert sample in shown
        assert (EXAMPLES.parent / sample).is_file()
    assert (EXAMPLES / "records.csv").read_text().splitlines()[0] in shown
