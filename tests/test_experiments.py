"""Experiments and seasons: create, read, list, update, delete, conflicts."""

import uuid


def test_create_experiment_returns_every_field(client):
    """POST answers 200 with every field, null where empty."""
    response = client.post("/api/experiments", json={"experiment_name": "E1", "experiment_start_date": "2024-01-01"})
    assert response.status_code == 200
    body = response.json
    assert set(body) == {"id", "experiment_name", "experiment_info", "experiment_start_date", "experiment_end_date"}
    assert body["experiment_info"] == {}
    assert body["experiment_start_date"] == "2024-01-01"
    assert body["experiment_end_date"] is None
    uuid.UUID(body["id"])


def test_duplicate_experiment_name_is_409(client):
    """A second experiment with the same name is a conflict."""
    assert client.post("/api/experiments", json={"experiment_name": "E1"}).status_code == 200
    response = client.post("/api/experiments", json={"experiment_name": "E1"})
    assert response.status_code == 409
    assert response.json["code"] == 409
    assert "E1" in response.json["error_description"]


def test_experiment_info_accepts_a_string_holding_an_object(client):
    """JSON-valued fields take an object or a string holding one."""
    response = client.post("/api/experiments", json={"experiment_name": "E1", "experiment_info": '{"a": [1, 2]}'})
    assert response.status_code == 200
    assert response.json["experiment_info"] == {"a": [1, 2]}


def test_experiment_info_that_is_not_an_object_is_422(client):
    """A JSON field holding an array or a bare string is a validation error naming the field."""
    for bad in (["a"], '"text"', "[1]", "{not json"):
        response = client.post("/api/experiments", json={"experiment_name": "E1", "experiment_info": bad})
        assert response.status_code == 422, bad
        assert "experiment_info" in response.json["errors"]


def test_update_experiment_changes_only_given_fields(client):
    """PATCH changes the given fields and keeps the others."""
    created = client.post("/api/experiments", json={"experiment_name": "E1", "experiment_info": {"k": 1}}).json
    response = client.patch(f"/api/experiments/id/{created['id']}", json={"experiment_end_date": "2024-12-31"})
    assert response.status_code == 200
    assert response.json["experiment_end_date"] == "2024-12-31"
    assert response.json["experiment_info"] == {"k": 1}
    assert client.get(f"/api/experiments/id/{created['id']}").json == response.json


def test_seasons_of_an_experiment(client):
    """Seasons are created inside an experiment and carry its id and name."""
    experiment = client.post("/api/experiments", json={"experiment_name": "E1"}).json
    response = client.post(f"/api/experiments/id/{experiment['id']}/seasons", json={"season_name": "S1"})
    assert response.status_code == 200
    season = response.json
    assert season["experiment_id"] == experiment["id"]
    assert season["experiment_name"] == "E1"
    listed = client.get(f"/api/experiments/id/{experiment['id']}/seasons")
    assert listed.json == [season]
    assert client.get(f"/api/seasons/id/{season['id']}").json == season


def test_season_name_is_unique_within_its_experiment_only(client):
    """The same season name may exist in two experiments but not twice in one."""
    e1 = client.post("/api/experiments", json={"experiment_name": "E1"}).json
    e2 = client.post("/api/experiments", json={"experiment_name": "E2"}).json
    assert client.post(f"/api/experiments/id/{e1['id']}/seasons", json={"season_name": "S"}).status_code == 200
    assert client.post(f"/api/experiments/id/{e2['id']}/seasons", json={"season_name": "S"}).status_code == 200
    assert client.post(f"/api/experiments/id/{e1['id']}/seasons", json={"season_name": "S"}).status_code == 409


def test_seasons_of_unknown_experiment_is_404(client):
    """Listing or creating seasons of an unknown experiment is 404."""
    missing = uuid.uuid4()
    assert client.get(f"/api/experiments/id/{missing}/seasons").status_code == 404
    assert client.post(f"/api/experiments/id/{missing}/seasons", json={"season_name": "S"}).status_code == 404


def test_delete_experiment_removes_its_seasons(client):
    """Deleting an unreferenced experiment deletes it and its seasons."""
    experiment = client.post("/api/experiments", json={"experiment_name": "E1"}).json
    season = client.post(f"/api/experiments/id/{experiment['id']}/seasons", json={"season_name": "S"}).json
    response = client.delete(f"/api/experiments/id/{experiment['id']}")
    assert response.status_code == 200
    assert response.json["experiment_name"] == "E1"
    assert client.get(f"/api/experiments/id/{experiment['id']}").status_code == 404
    assert client.get(f"/api/seasons/id/{season['id']}").status_code == 404


def test_delete_experiment_referenced_by_records_is_409(client, reference, script):
    """An experiment, season or site that records reference cannot be deleted."""
    from tests.conftest import record_form

    assert client.post(f"/api/scripts/id/{script['id']}/records", data=record_form()).status_code == 200
    assert client.delete(f"/api/experiments/id/{reference['experiment']['id']}").status_code == 409
    assert client.delete(f"/api/seasons/id/{reference['season']['id']}").status_code == 409
    assert client.delete(f"/api/sites/id/{reference['site']['id']}").status_code == 409
    assert client.get(f"/api/experiments/id/{reference['experiment']['id']}").status_code == 200
    assert client.get(f"/api/seasons/id/{reference['season']['id']}").status_code == 200


def test_an_experiment_or_season_may_not_end_before_it_starts(client):
    """A start date after the end date is 422 on create and on PATCH (against the stored other date)."""
    late = {"experiment_start_date": "2024-06-01", "experiment_end_date": "2024-05-01"}
    created = client.post("/api/experiments", json={"experiment_name": "Backwards", **late})
    assert created.status_code == 422 and "experiment_end_date" in created.json["errors"]
    experiment = client.post(
        "/api/experiments", json={"experiment_name": "Forwards", "experiment_start_date": "2024-05-01"}
    ).json
    patched = client.patch(f"/api/experiments/id/{experiment['id']}", json={"experiment_end_date": "2024-04-01"})
    assert patched.status_code == 422
    same_day = client.patch(f"/api/experiments/id/{experiment['id']}", json={"experiment_end_date": "2024-05-01"})
    assert same_day.status_code == 200

    seasons = f"/api/experiments/id/{experiment['id']}/seasons"
    season = client.post(
        seasons, json={"season_name": "S", "season_start_date": "2024-07-02", "season_end_date": "2024-07-01"}
    )
    assert season.status_code == 422 and "season_end_date" in season.json["errors"]
    season = client.post(seasons, json={"season_name": "S", "season_end_date": "2024-07-01"}).json
    moved = client.patch(f"/api/seasons/id/{season['id']}", json={"season_start_date": "2024-08-01"})
    assert moved.status_code == 422
    assert client.get(f"/api/seasons/id/{season['id']}").json["season_start_date"] is None


def test_every_list_also_answers_at_all(client):
    """/api/experiments/all, /api/seasons/all (every season) and /api/sites/all, as GEMINI's clients call them."""
    first = client.post("/api/experiments", json={"experiment_name": "A"}).json
    second = client.post("/api/experiments", json={"experiment_name": "B"}).json
    client.post(f"/api/experiments/id/{first['id']}/seasons", json={"season_name": "S1"})
    client.post(f"/api/experiments/id/{second['id']}/seasons", json={"season_name": "S2"})
    client.post("/api/sites", json={"site_name": "Ames"})
    assert client.get("/api/experiments/all").json == client.get("/api/experiments").json
    seasons = client.get("/api/seasons/all", query_string={"limit": 1, "offset": 1})
    assert [s["season_name"] for s in seasons.json] == ["S2"]
    assert seasons.headers["X-Total-Count"] == "2"
    assert [s["site_name"] for s in client.get("/api/sites/all/").json] == ["Ames"]
