"""Scripts: create, search, read, update, delete, and their experiments, runs and datasets."""

import uuid

import psycopg
from sqlalchemy.engine import make_url

from tests.conftest import make_app, make_token, record_form, token_client, wait_for_file


def test_all_scripts_is_404_when_there_are_none(client):
    """GET /all with no scripts at all is 404 in the error shape."""
    response = client.get("/api/scripts/all")
    assert response.status_code == 404
    assert set(response.json) == {"code", "error", "error_description"}


def test_create_script_returns_every_field(client):
    """POST answers 200 with every field; optional ones are null, script_info defaults to {}."""
    response = client.post("/api/scripts", json={"script_name": "ndvi"})
    assert response.status_code == 200
    body = response.json
    assert set(body) == {
        "id",
        "script_name",
        "script_url",
        "script_extension",
        "script_info",
        "created_at",
        "updated_at",
    }
    assert body["script_url"] is None and body["script_extension"] is None
    assert body["script_info"] == {}
    assert body["created_at"].endswith("+00:00")


def test_script_names_are_not_unique(client):
    """Two scripts may share a name."""
    assert client.post("/api/scripts", json={"script_name": "same"}).status_code == 200
    assert client.post("/api/scripts", json={"script_name": "same"}).status_code == 200
    assert client.get("/api/scripts/all").headers["X-Total-Count"] == "2"


def test_create_script_with_experiment_associates_it(client):
    """A script created with experiment_name is listed under that experiment."""
    client.post("/api/experiments", json={"experiment_name": "E1"})
    script = client.post("/api/scripts", json={"script_name": "s", "experiment_name": "E1"}).json
    experiments = client.get(f"/api/scripts/id/{script['id']}/experiments")
    assert experiments.status_code == 200
    assert [e["experiment_name"] for e in experiments.json] == ["E1"]


def test_create_script_with_unknown_experiment_is_422_and_stores_nothing(client):
    """An unknown experiment_name is 422 naming the field, and no script is created."""
    response = client.post("/api/scripts", json={"script_name": "s", "experiment_name": "nope"})
    assert response.status_code == 422
    assert "experiment_name" in response.json["errors"]
    assert client.get("/api/scripts/all").status_code == 404


def test_create_script_validation_errors(client):
    """Missing name, empty name, wrong types and unknown fields are 422 naming each field."""
    cases = [
        ({}, "script_name"),
        ({"script_name": ""}, "script_name"),
        ({"script_name": "x" * 256}, "script_name"),
        ({"script_name": 5}, "script_name"),
        ({"script_name": "s", "script_info": [1]}, "script_info"),
        ({"script_name": "s", "colour": "red"}, "colour"),
        ({"script_name": "s", "id": str(uuid.uuid4())}, "id"),
    ]
    for body, field in cases:
        response = client.post("/api/scripts", json=body)
        assert response.status_code == 422, body
        assert field in response.json["errors"], (body, response.json)


def test_search_scripts_combines_parameters_with_and(client):
    """Search parameters combine with AND and match names exactly and case-sensitively."""
    client.post("/api/experiments", json={"experiment_name": "E1"})
    a = client.post("/api/scripts", json={"script_name": "a", "script_extension": "py", "experiment_name": "E1"}).json
    client.post("/api/scripts", json={"script_name": "a", "script_extension": "r"})
    client.post("/api/scripts", json={"script_name": "A", "script_extension": "py"})
    response = client.get("/api/scripts/", query_string={"script_name": "a", "script_extension": "py"})
    assert response.status_code == 200
    assert [s["id"] for s in response.json] == [a["id"]]
    by_experiment = client.get("/api/scripts", query_string={"experiment_name": "E1"})
    assert [s["id"] for s in by_experiment.json] == [a["id"]]


def test_search_scripts_by_info_containment(client):
    """script_info matches scripts whose info contains every given key/value, nested ones included."""
    match = client.post(
        "/api/scripts", json={"script_name": "m", "script_info": {"sensor": "rgb", "v": 2, "opts": {"x": 1, "y": 2}}}
    ).json
    client.post("/api/scripts", json={"script_name": "n", "script_info": {"sensor": "rgb", "v": "2"}})
    response = client.get("/api/scripts", query_string={"script_info": '{"sensor": "rgb", "v": 2, "opts": {"x": 1}}'})
    assert response.status_code == 200
    assert [s["id"] for s in response.json] == [match["id"]]


def test_search_with_no_match_is_404(client):
    """A search that matches nothing is 404."""
    client.post("/api/scripts", json={"script_name": "a"})
    assert client.get("/api/scripts", query_string={"script_name": "b"}).status_code == 404


def test_search_with_malformed_info_is_422(client):
    """script_info in the query must be a JSON object."""
    response = client.get("/api/scripts", query_string={"script_info": "[1,2]"})
    assert response.status_code == 422
    assert "script_info" in response.json["errors"]


def test_get_script_by_id_and_unknown_or_malformed_ids(client, script):
    """A known id is 200; an unknown id or a non-UUID is 404, an unknown id worded as every other read says it."""
    assert client.get(f"/api/scripts/id/{script['id']}").json == script
    unknown = uuid.uuid4()
    response = client.get(f"/api/scripts/id/{unknown}")
    assert response.status_code == 404
    assert response.json["error_description"] == f"No script has the id {unknown}."
    assert client.get(f"/api/scripts/id/{unknown}/runs").json["error_description"] == response.json["error_description"]
    response = client.get("/api/scripts/id/not-a-uuid")
    assert response.status_code == 404
    assert response.json["code"] == 404


def test_reads_on_connections_the_database_ended_are_503_then_served(tmp_path, postgresql_url):
    """GET /id and GET /all run on the pooled driver connection itself (webapp/database.py, ``rows``): on one
    PostgreSQL ended a moment ago the request is a 503 to retry, not a 500, and the pool's connections are
    replaced, so the next request is served."""
    app = make_app(tmp_path, postgresql_url)
    client = token_client(app, make_token(app))
    script = client.post("/api/scripts", json={"script_name": "s", "script_info": {"k": 1}}).json
    url = make_url(postgresql_url)
    server = url.set(drivername="postgresql").render_as_string(hide_password=False)
    for path, expected in ((f"/api/scripts/id/{script['id']}", script), ("/api/scripts/all", [script])):
        assert client.get(path).json == expected
        with psycopg.connect(server, autocommit=True) as admin:
            ended = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                [url.database],
            ).fetchone()[0]
        assert ended >= 1
        failed = client.get(path)
        assert (failed.status_code, failed.headers["Retry-After"]) == (503, "1")
        assert client.get(path).json == expected
    app.extensions["database"].dispose()


def test_patch_script_changes_only_given_fields_and_null_clears(client):
    """PATCH changes given fields, null clears optional ones, and updated_at moves forward."""
    created = client.post(
        "/api/scripts", json={"script_name": "s", "script_url": "http://x", "script_info": {"a": 1}}
    ).json
    response = client.patch(f"/api/scripts/id/{created['id']}", json={"script_url": None, "script_extension": "py"})
    assert response.status_code == 200
    body = response.json
    assert body["script_url"] is None
    assert body["script_extension"] == "py"
    assert body["script_info"] == {"a": 1}
    assert body["script_name"] == "s"
    assert body["updated_at"] >= created["updated_at"]
    assert client.patch(f"/api/scripts/id/{created['id']}", json={"script_name": None}).status_code == 422
    assert client.patch(f"/api/scripts/id/{uuid.uuid4()}", json={"script_name": "x"}).status_code == 404


def test_patch_script_with_experiment_name_adds_an_association(client, script):
    """PATCH with experiment_name associates the script with that experiment too; an unknown one is 422."""
    for name in ("E1", "E2"):
        client.post("/api/experiments", json={"experiment_name": name})
    path = f"/api/scripts/id/{script['id']}"
    assert client.patch(path, json={"experiment_name": "E1"}).status_code == 200
    response = client.patch(path, json={"experiment_name": "E2", "script_url": "https://example.org/s.py"})
    assert response.status_code == 200
    assert response.json["script_url"] == "https://example.org/s.py" and "experiment_name" not in response.json
    assert client.patch(path, json={"experiment_name": "E1"}).status_code == 200  # already associated
    experiments = client.get(f"{path}/experiments").json
    assert [e["experiment_name"] for e in experiments] == ["E1", "E2"]
    unknown = client.patch(path, json={"experiment_name": "nope", "script_name": "renamed"})
    assert unknown.status_code == 422 and "experiment_name" in unknown.json["errors"]
    assert client.get(path).json["script_name"] == "canopy-height"


def test_runs_of_a_script(client, script):
    """Every POST creates a new run; runs list oldest first; no runs is 404."""
    url = f"/api/scripts/id/{script['id']}/runs"
    assert client.get(url).status_code == 404
    first = client.post(url, json={"script_run_info": {"commit": "abc"}})
    assert first.status_code == 200
    assert first.json["script_id"] == script["id"]
    assert first.json["script_name"] == script["script_name"]
    assert first.json["script_run_info"] == {"commit": "abc"}
    second = client.post(url)
    assert second.status_code == 200
    assert second.json["script_run_info"] == {}
    assert [r["id"] for r in client.get(url).json] == [first.json["id"], second.json["id"]]
    assert client.post(f"/api/scripts/id/{uuid.uuid4()}/runs", json={}).status_code == 404


def test_datasets_of_a_script_are_created_or_reused(client, script):
    """Posting a dataset creates it or reuses the one of that name, and associates it."""
    client.post("/api/experiments", json={"experiment_name": "E1"})
    url = f"/api/scripts/id/{script['id']}/datasets"
    assert client.get(url).status_code == 404
    created = client.post(url, json={"dataset_name": "D1", "collection_date": "2024-05-01", "experiment_name": "E1"})
    assert created.status_code == 200
    assert created.json["collection_date"] == "2024-05-01"
    other = client.post("/api/scripts", json={"script_name": "other"}).json
    reused = client.post(f"/api/scripts/id/{other['id']}/datasets", json={"dataset_name": "D1"})
    assert reused.json["id"] == created.json["id"]
    assert [d["dataset_name"] for d in client.get(url).json] == ["D1"]
    assert client.post(url, json={"dataset_name": "D2", "experiment_name": "nope"}).status_code == 422
    assert client.post(f"/api/scripts/id/{uuid.uuid4()}/datasets", json={"dataset_name": "D"}).status_code == 404


def test_experiments_of_unknown_script_or_script_without_any_is_404(client, script):
    """The experiments list is 404 for an unknown script and for a script with none."""
    assert client.get(f"/api/scripts/id/{uuid.uuid4()}/experiments").status_code == 404
    assert client.get(f"/api/scripts/id/{script['id']}/experiments").status_code == 404


def test_delete_script_removes_runs_records_and_files(client, app, reference, script):
    """Deleting a script deletes its runs, records and their stored files."""
    import io

    from webapp.extensions import store

    run = client.post(f"/api/scripts/id/{script['id']}/runs").json
    form = record_form(script_run_id=run["id"], record_file=(io.BytesIO(b"img"), "a.png"))
    record = wait_for_file(client, client.post(f"/api/scripts/id/{script['id']}/records", data=form).json)
    path = store.backend.path_of(record["record_file"])
    assert path.read_bytes() == b"img"
    response = client.delete(f"/api/scripts/id/{script['id']}")
    assert response.status_code == 200
    assert response.json["id"] == script["id"]
    assert client.get(f"/api/scripts/id/{script['id']}").status_code == 404
    assert client.get(f"/api/scripts/records/id/{record['id']}").status_code == 404
    assert not path.exists()
    assert client.delete(f"/api/scripts/id/{script['id']}").status_code == 404
