"""Record searches: NDJSON streams, their filters, order, omitted nulls and mid-stream failures."""

import json
import uuid

import pytest

from tests.conftest import record_form


@pytest.fixture
def records_url(script):
    return f"/api/scripts/id/{script['id']}/records"


def read_ndjson(response) -> list[dict]:
    assert response.status_code == 200, response.data
    assert response.mimetype == "application/x-ndjson"
    return [json.loads(line) for line in response.data.decode().splitlines()]


@pytest.fixture
def two_sites(client, reference):
    """A second season and site, so filters have something to tell apart."""
    experiment_id = reference["experiment"]["id"]
    client.post(f"/api/experiments/id/{experiment_id}/seasons", json={"season_name": "Winter"})
    client.post("/api/sites", json={"site_name": "Ames"})


def test_stream_is_ordered_by_timestamp_then_id_with_nulls_omitted(client, reference, records_url):
    """Records stream oldest timestamp first; null fields are left out; payload nulls are kept."""
    late = client.post(records_url, data=record_form(timestamp="2024-05-03T00:00:00Z")).json
    early = client.post(
        records_url, data=record_form(timestamp="2024-05-01T00:00:00Z", script_data='{"leaf": null, "n": 1}')
    ).json
    lines = read_ndjson(client.get(records_url))
    assert [line["id"] for line in lines] == [early["id"], late["id"]]
    assert lines[0]["script_data"] == {"leaf": None, "n": 1}
    assert "record_file" not in lines[0] and "script_run_id" not in lines[0]
    single = client.get(f"/api/scripts/records/id/{early['id']}").json
    assert lines[0] == {key: value for key, value in single.items() if value is not None}


def test_fractional_timestamps_read_the_same_in_streams_and_single_reads(client, reference, records_url):
    """Sub-second timestamps keep their precision and one spelling everywhere."""
    record = client.post(records_url, data=record_form(timestamp="2024-05-01T12:00:00.250+02:00")).json
    assert record["timestamp"] == "2024-05-01T10:00:00.25+00:00"
    (line,) = read_ndjson(client.get(records_url))
    assert line["timestamp"] == record["timestamp"]
    assert client.get(f"/api/scripts/records/id/{record['id']}").json["timestamp"] == record["timestamp"]


def test_ties_in_timestamp_are_ordered_by_id(client, reference, records_url):
    """Records with the same timestamp (different sites) come in id order."""
    client.post("/api/sites", json={"site_name": "Ames"})
    a = client.post(records_url, data=record_form()).json
    b = client.post(records_url, data=record_form(site_name="Ames")).json
    lines = read_ndjson(client.get(records_url))
    assert [line["id"] for line in lines] == sorted([a["id"], b["id"]], key=uuid.UUID)


def test_stream_filters_by_exact_names_and_collection_date(client, two_sites, records_url):
    """Filters on names and collection_date combine with AND."""
    client.post(records_url, data=record_form(timestamp="2024-05-01T00:00:00Z"))
    wanted = client.post(records_url, data=record_form(timestamp="2024-05-02T00:00:00Z", site_name="Ames")).json
    client.post(records_url, data=record_form(timestamp="2024-05-03T00:00:00Z", season_name="Winter"))
    lines = read_ndjson(client.get(records_url, query_string={"site_name": "Ames", "season_name": "Summer"}))
    assert [line["id"] for line in lines] == [wanted["id"]]
    by_date = read_ndjson(client.get(records_url, query_string={"collection_date": "2024-05-02"}))
    assert [line["id"] for line in by_date] == [wanted["id"]]
    assert read_ndjson(client.get(records_url, query_string={"site_name": "ames"})) == []


def test_no_match_is_an_empty_200_stream(client, reference, records_url):
    """A search without matches is an empty stream, not a 404."""
    client.post(records_url, data=record_form())
    response = client.get(records_url, query_string={"dataset_name": "none"})
    assert response.status_code == 200
    assert response.data == b""


def test_stream_of_unknown_script_is_404(client):
    """Streams of an unknown script are 404 in the error shape."""
    for path in ("records", "records/filter"):
        response = client.get(f"/api/scripts/id/{uuid.uuid4()}/{path}")
        assert response.status_code == 404
        assert response.json["code"] == 404


def test_filter_time_bounds_are_inclusive_and_work_alone(client, reference, records_url):
    """start_timestamp and end_timestamp are inclusive and each works alone; offsets are honoured."""
    ids = [
        client.post(records_url, data=record_form(timestamp=f"2024-05-0{day}T00:00:00Z")).json["id"]
        for day in (1, 2, 3)
    ]
    url = records_url + "/filter"
    both = read_ndjson(
        client.get(
            url, query_string={"start_timestamp": "2024-05-02T00:00:00Z", "end_timestamp": "2024-05-03T00:00:00"}
        )
    )
    assert [line["id"] for line in both] == ids[1:]
    start_only = read_ndjson(client.get(url, query_string={"start_timestamp": "2024-05-02T02:00:00+02:00"}))
    assert [line["id"] for line in start_only] == ids[1:]
    end_only = read_ndjson(client.get(url, query_string={"end_timestamp": "2024-05-01T00:00:00Z"}))
    assert [line["id"] for line in end_only] == ids[:1]


def test_filter_lists_or_within_and_across(client, two_sites, records_url):
    """Name lists are OR within a list and AND across lists; repeated keys and commas both work."""
    a = client.post(records_url, data=record_form(timestamp="2024-05-01T00:00:00Z")).json
    b = client.post(records_url, data=record_form(timestamp="2024-05-02T00:00:00Z", site_name="Ames")).json
    client.post(records_url, data=record_form(timestamp="2024-05-03T00:00:00Z", season_name="Winter"))
    url = records_url + "/filter"
    repeated = read_ndjson(client.get(f"{url}?site_names=Maricopa&site_names=Ames&season_names=Summer"))
    assert [line["id"] for line in repeated] == [a["id"], b["id"]]
    commas = read_ndjson(client.get(url, query_string={"site_names": "Maricopa,Ames", "season_names": "Summer"}))
    assert [line["id"] for line in commas] == [a["id"], b["id"]]
    experiments = read_ndjson(client.get(url, query_string={"experiment_names": "Drought 2024,Other"}))
    assert len(experiments) == 3


def test_filter_with_an_empty_name_is_422(client, reference, records_url):
    """An empty name in a list filter (site_names=, a,,b, a trailing comma) is 422 naming the parameter."""
    for query in ({"site_names": ""}, {"season_names": "Summer,,x"}, {"dataset_names": "d,"}):
        response = client.get(f"{records_url}/filter", query_string=query)
        assert response.status_code == 422, query
        assert set(response.json["errors"]) == set(query), response.json
    assert client.get(f"{records_url}/filter", query_string={"site_names": "Maricopa"}).status_code == 200


def test_filter_with_bad_timestamp_is_422(client, reference, records_url):
    """A non-ISO bound is a validation error, not an empty stream."""
    response = client.get(records_url + "/filter", query_string={"start_timestamp": "last week"})
    assert response.status_code == 422
    assert "start_timestamp" in response.json["errors"]


def test_stream_failing_midway_ends_with_an_error_line(client, app, reference, records_url, monkeypatch):
    """A stream that breaks after some rows ends with an error line so it cannot pass as complete."""
    from webapp import bulk_sql

    client.post(records_url, data=record_form())
    real = bulk_sql.stream_json_lines

    def breaking(engine, stmt, batch=2000):
        yield from real(engine, stmt, batch)
        raise ConnectionError("database went away")

    monkeypatch.setattr(bulk_sql, "stream_json_lines", breaking)
    lines = client.get(records_url).data.decode().splitlines()
    assert len(lines) == 2
    assert json.loads(lines[0])["script_name"] == "canopy-height"
    last = json.loads(lines[-1])
    assert set(last) == {"error", "error_description"}
    assert "database went away" not in last["error_description"]


def test_stream_is_read_in_batches(client, reference, records_url):
    """Streams of more rows than one batch come out whole and in order."""
    from webapp import bulk_sql
    from webapp.extensions import db
    from webapp.services.record_search import record_rows

    for minute in range(7):
        client.post(records_url, data=record_form(timestamp=f"2024-05-01T00:0{minute}:00Z"))
    script_id = uuid.UUID(records_url.split("/")[4])
    chunks = list(bulk_sql.stream_json_lines(db.engine, record_rows(script_id, {}), batch=3))
    assert len(chunks) == 3
    lines = b"".join(chunks).decode().splitlines()
    assert [json.loads(line)["timestamp"][:16] for line in lines] == [f"2024-05-01T00:0{m}" for m in range(7)]
