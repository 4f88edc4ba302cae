"""Table exports of records (CSV and Parquet): columns, types, order, filters, odd keys, bad input, failures."""

import csv
import io
import json
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
from sqlalchemy import text

from tests.conftest import empty_tables, make_app, make_token, record_form, token_client
from tests.servers import gunicorn_app, wait_until
from webapp.extensions import db
from webapp.services import record_export

RECORD_FIELDS = [
    "id",
    "timestamp",
    "collection_date",
    "script_id",
    "script_name",
    "script_run_id",
    "dataset_id",
    "dataset_name",
    "experiment_id",
    "experiment_name",
    "season_id",
    "season_name",
    "site_id",
    "site_name",
    "record_file",
    "file_name",
    "file_size",
    "file_sha256",
    "file_content_type",
    "file_status",
    "script_data",
    "record_info",
]


@pytest.fixture
def urls(script):
    base = f"/api/scripts/id/{script['id']}/records"
    return {"records": base, "export": f"{base}/export", "filter": f"{base}/filter"}


def parquet_table(response) -> pa.Table:
    assert response.status_code == 200, response.data
    assert response.mimetype == "application/vnd.apache.parquet"
    return pq.read_table(io.BytesIO(response.data))


def csv_rows(response) -> list[dict]:
    assert response.status_code == 200, response.data
    assert response.mimetype == "text/csv"
    return list(csv.DictReader(io.StringIO(response.data.decode("utf-8"), newline="")))


def ndjson(response) -> list[dict]:
    assert response.status_code == 200, response.data
    return [json.loads(line) for line in response.data.decode().splitlines()]


def post(client, url, **form):
    response = client.post(url, data=record_form(**form))
    assert response.status_code == 200, response.json
    return response.json


def test_an_export_holds_the_streams_records_in_order_with_one_column_per_key(client, reference, urls):
    """Both formats: the record fields, then script_data.<key> columns typed by their values; NDJSON order."""
    late = post(
        client,
        urls["records"],
        timestamp="2024-05-03T00:00:00.25Z",
        script_data='{"plot": 7, "height_cm": 41, "ok": true, "genotype": "G-01", "tags": ["a"], "mixed": 1}',
    )
    early = post(
        client,
        urls["records"],
        timestamp="2024-05-01T00:00:00Z",
        script_data='{"plot": 8, "height_cm": 40.5, "ok": false, "mixed": "one", "note": ""}',
        record_info='{"camera": {"iso": 200}}',
    )
    stream = ndjson(client.get(urls["filter"]))
    assert [line["id"] for line in stream] == [early["id"], late["id"]]

    response = client.get(urls["export"], query_string={"format": "parquet"})
    assert response.headers["X-Total-Count"] == "2"
    assert response.headers["Content-Disposition"] == 'attachment; filename="canopy-height-records.parquet"'
    table = parquet_table(response)
    keys = ["genotype", "height_cm", "mixed", "note", "ok", "plot", "tags"]
    assert table.column_names == RECORD_FIELDS + [f"script_data.{key}" for key in keys]
    types = {name: table.schema.field(name).type for name in table.column_names}
    assert types["timestamp"] == pa.timestamp("us", tz="UTC")
    assert types["collection_date"] == pa.date32()
    assert types["script_data.plot"] == pa.int64()
    assert types["script_data.height_cm"] == pa.float64()
    assert types["script_data.ok"] == pa.bool_()
    assert types["script_data.mixed"] == pa.string()
    rows = table.to_pylist()
    assert [row["id"] for row in rows] == [early["id"], late["id"]]
    assert rows[0]["timestamp"] == datetime(2024, 5, 1, tzinfo=UTC)
    assert rows[1]["timestamp"] == datetime(2024, 5, 3, 0, 0, 0, 250000, tzinfo=UTC)
    assert [row["script_data.plot"] for row in rows] == [8, 7]
    assert [row["script_data.height_cm"] for row in rows] == [40.5, 41.0]
    assert [row["script_data.ok"] for row in rows] == [False, True]
    assert [row["script_data.mixed"] for row in rows] == ["one", "1"]
    assert [row["script_data.note"] for row in rows] == ["", None]
    assert [row["script_data.genotype"] for row in rows] == [None, "G-01"]
    assert json.loads(rows[1]["script_data.tags"]) == ["a"]
    assert json.loads(rows[0]["record_info"]) == {"camera": {"iso": 200}}
    for row, line in zip(rows, stream, strict=True):
        assert json.loads(row["script_data"]) == line["script_data"]
        for name in ("script_name", "dataset_name", "experiment_name", "season_name", "site_name", "site_id"):
            assert row[name] == line[name]
        assert row["record_file"] is None and row["file_size"] is None

    rows = csv_rows(client.get(urls["export"], query_string={"format": "csv"}))
    assert list(rows[0]) == table.column_names
    assert [row["id"] for row in rows] == [early["id"], late["id"]]
    assert [row["timestamp"] for row in rows] == [line["timestamp"] for line in stream]
    assert [row["script_data.height_cm"] for row in rows] == ["40.5", "41"]
    assert [row["script_data.ok"] for row in rows] == ["false", "true"]
    assert [row["collection_date"] for row in rows] == [line["collection_date"] for line in stream]
    assert json.loads(rows[1]["script_data"]) == stream[1]["script_data"]


def test_an_empty_csv_line_and_a_null_differ(client, reference, urls):
    """CSV: an empty string is quoted, a null is nothing (as PostgreSQL's COPY writes them)."""
    post(client, urls["records"], script_data='{"note": ""}')
    post(client, urls["records"], timestamp="2024-05-02T00:00:00Z", script_data='{"other": 1}')
    lines = client.get(urls["export"], query_string={"format": "csv"}).data.decode().splitlines()
    assert lines[0].endswith(",script_data.note,script_data.other")
    assert lines[1].endswith(',"",')
    assert lines[2].endswith(",,1")


def test_an_export_takes_every_filter_of_the_filter_stream(client, reference, urls):
    """Time bounds and name lists select the same records as /records/filter."""
    client.post("/api/sites", json={"site_name": "Ames"})
    for day, site in ((1, "Maricopa"), (2, "Ames"), (3, "Maricopa"), (4, "Ames")):
        post(client, urls["records"], timestamp=f"2024-05-0{day}T00:00:00Z", site_name=site)
    query = {"site_names": "Ames", "start_timestamp": "2024-05-02T00:00:00Z", "end_timestamp": "2024-05-03T00:00Z"}
    expected = [line["id"] for line in ndjson(client.get(urls["filter"], query_string=query))]
    assert len(expected) == 1
    table = parquet_table(client.get(urls["export"], query_string={**query, "format": "parquet"}))
    assert table.column("id").to_pylist() == expected
    rows = csv_rows(client.get(urls["export"], query_string={**query, "format": "csv"}))
    assert [row["id"] for row in rows] == expected


def test_no_match_is_a_table_without_rows(client, reference, urls):
    """Nothing matching: a CSV of only the header, a Parquet file with the record columns and no rows."""
    post(client, urls["records"])
    query = {"site_names": "Nowhere"}
    response = client.get(urls["export"], query_string={**query, "format": "csv"})
    assert response.data.decode() == ",".join(RECORD_FIELDS) + "\n"
    assert response.headers["X-Total-Count"] == "0"
    table = parquet_table(client.get(urls["export"], query_string={**query, "format": "parquet"}))
    assert table.num_rows == 0 and table.column_names == RECORD_FIELDS


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"format": "xlsx"},
        {"format": "parquet", "start_timestamp": "yesterday"},
        {"format": "csv", "site_names": ""},
    ],
)
def test_bad_export_parameters_are_422_before_any_row(client, reference, urls, query):
    """A missing or unknown format, a bad timestamp or an empty name: 422 in the error shape."""
    post(client, urls["records"])
    response = client.get(urls["export"], query_string=query)
    assert response.status_code == 422
    assert response.mimetype == "application/json"
    assert response.json["errors"]


def test_export_of_an_unknown_script_is_404(client):
    response = client.get(
        "/api/scripts/id/00000000-0000-0000-0000-000000000000/records/export", query_string={"format": "csv"}
    )
    assert response.status_code == 404


def test_odd_keys_give_unique_readable_columns(client, reference, urls):
    """Keys with dots, quotes, newlines, 300 characters, or alike once spelled out: unique, readable names."""
    long_a, long_b = "a" * 300, "a" * 299 + "b"
    data = {
        "with.dot": 1,
        'say "hi"': 2,
        "two\nlines": 3,
        "two\\nlines": 4,
        long_a: 5,
        long_b: 6,
        "tab\there,comma": 7,
    }
    post(client, urls["records"], script_data=json.dumps(data))
    for fmt in ("parquet", "csv"):
        response = client.get(urls["export"], query_string={"format": fmt})
        if fmt == "parquet":
            table = parquet_table(response)
            names, row = table.column_names, table.to_pylist()[0]
        else:
            (row,) = csv_rows(response)
            names = list(row)
        key_names = [name for name in names if name.startswith("script_data.")]
        assert len(key_names) == len(data) == len(set(key_names))
        for name in key_names:
            assert not any(ord(ch) < 32 for ch in name), name
            assert len(name) <= len("script_data.") + record_export.MAX_KEY_NAME + 2
        assert "script_data.with.dot" in names and 'script_data.say "hi"' in names
        assert "script_data.two\\nlines" in names and "script_data.two\\nlines~2" in names
        assert sorted(str(row[name]) for name in key_names) == sorted(str(value) for value in data.values())
        assert json.loads(row["script_data"]) == data


def test_too_many_keys_is_422(client, reference, urls, monkeypatch):
    monkeypatch.setattr(record_export, "MAX_KEY_COLUMNS", 3)
    post(client, urls["records"], script_data=json.dumps({f"k{i}": i for i in range(4)}))
    response = client.get(urls["export"], query_string={"format": "parquet"})
    assert response.status_code == 422
    assert "4 different script_data keys" in response.json["error_description"]


def test_whole_numbers_beyond_64_bits_make_a_float_column(client, reference, urls):
    """A whole number an int64 cannot hold makes its column a float rather than failing the export."""
    post(client, urls["records"], script_data='{"big": 18446744073709551616, "small": 3}')
    table = parquet_table(client.get(urls["export"], query_string={"format": "parquet"}))
    assert table.schema.field("script_data.small").type == pa.int64()
    assert table.schema.field("script_data.big").type == pa.float64()
    assert table.column("script_data.big").to_pylist() == [18446744073709551616.0]


@pytest.mark.parametrize("sample, most_guessed", [(1, 400), (1000, 0)], ids=["keys-beyond-the-sample", "wide-sample"])
def test_keys_the_first_records_lack_still_get_their_columns(
    client, reference, urls, monkeypatch, sample, most_guessed
):
    """PostgreSQL guesses the keys from a few records and checks the guess: keys only later records hold, and a key
    whose type changes after the sample, come out as when every key is listed (also when the sample is too wide)."""
    monkeypatch.setattr(record_export, "SAMPLE_RECORDS", sample)
    monkeypatch.setattr(record_export, "MAX_GUESSED_KEYS", most_guessed)
    documents = ['{"plot": 1, "height": 2}', '{"plot": "one", "ok": true}', "{}", '{"tags": [1], "height": 2.5}']
    for day, document in enumerate(documents, start=1):
        post(client, urls["records"], timestamp=f"2024-05-0{day}T00:00:00Z", script_data=document)
    response = client.get(urls["export"], query_string={"format": "parquet"})
    assert response.headers["X-Total-Count"] == "4"
    table = parquet_table(response)
    keys = {name: table.schema.field(name).type for name in table.column_names if name.startswith("script_data.")}
    assert keys == {
        "script_data.height": pa.float64(),
        "script_data.ok": pa.bool_(),
        "script_data.plot": pa.string(),
        "script_data.tags": pa.string(),
    }
    assert table.column("script_data.plot").to_pylist() == ["1", "one", None, None]
    assert table.column("script_data.height").to_pylist() == [2.0, None, None, 2.5]
    rows = csv_rows(client.get(urls["export"], query_string={"format": "csv"}))
    assert [name for name in rows[0] if name.startswith("script_data.")] == sorted(keys)
    assert [row["script_data.tags"] for row in rows] == ["", "", "", "[1]"]


def test_an_export_failing_midway_cannot_pass_as_complete(client, reference, urls, monkeypatch):
    """CSV ends with the streams' error line; Parquet is cut short, which no reader takes for a file."""
    for day in range(1, 4):
        post(client, urls["records"], timestamp=f"2024-05-0{day}T00:00:00Z")

    def breaking(real):
        def broken(*args):
            yield from real(*args)
            raise ConnectionError("database went away")

        return broken

    # The CSV lines, and the Arrow tables a Parquet export reads on PostgreSQL (from CSV lines on SQLite).
    for name in ("_joined", "_adbc_tables"):
        monkeypatch.setattr(record_export, name, breaking(getattr(record_export, name)))
    lines = client.get(urls["export"], query_string={"format": "csv"}).data.decode().splitlines()
    assert len(lines) == 5
    assert json.loads(lines[-1])["error"] == "Internal Server Error"
    with pytest.raises(ConnectionError):
        client.get(urls["export"], query_string={"format": "parquet"}).data  # noqa: B018


def copy_queries(app) -> list[str]:
    """The COPY statements other sessions are running (the exports in progress)."""
    with app.app_context(), db.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT query FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND state = 'active'"
                " AND query LIKE 'COPY (SELECT%'"
            )
        )
        return [query for (query,) in rows]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_client_that_goes_away_stops_the_export_query(tmp_path, postgresql_url, fmt):
    """Under gunicorn: closing the connection after the first bytes cancels the export's COPY on PostgreSQL."""
    app = make_app(tmp_path / "instance", postgresql_url)
    client = token_client(app, token := make_token(app))
    client.post("/api/experiments", json={"experiment_name": "Drought 2024"})
    experiment = client.get("/api/experiments").json[0]
    client.post(f"/api/experiments/id/{experiment['id']}/seasons", json={"season_name": "Summer"})
    client.post("/api/sites", json={"site_name": "Maricopa"})
    script = client.post("/api/scripts", json={"script_name": "canopy-height"}).json
    client.post(f"/api/scripts/id/{script['id']}/records", data=record_form())
    with app.app_context(), db.engine.begin() as conn:
        # Enough rows that the export is far from done when the client leaves (a whole row group and more).
        conn.execute(
            text(
                "INSERT INTO script_records (id, timestamp, collection_date, script_id, dataset_id, experiment_id,"
                " season_id, site_id, script_data, record_info, created_at)"
                " SELECT gen_random_uuid(), r.timestamp + g * interval '1 second', r.collection_date, r.script_id,"
                " r.dataset_id, r.experiment_id, r.season_id, r.site_id,"
                " jsonb_build_object('plot', g, 'note', repeat('x', 1000)), '{}', now()"
                " FROM script_records r, generate_series(1, 100000) AS g"
            )
        )
    try:
        with gunicorn_app(postgresql_url, tmp_path) as base:
            url = f"{base}/api/scripts/id/{script['id']}/records/export"
            headers = {"Authorization": f"Bearer {token}"}
            with requests.get(url, params={"format": fmt}, headers=headers, stream=True, timeout=60) as response:
                assert response.status_code == 200
                assert next(response.iter_content(64 * 1024))
                assert copy_queries(app), "the export's COPY should be running while the client reads"
            # The client is gone; the worker notices at its next write and the COPY is cancelled.
            assert wait_until(lambda: copy_queries(app), lambda queries: not queries, timeout=60) == []
    finally:
        empty_tables(app)
