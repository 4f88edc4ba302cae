"""Conventions every endpoint follows: paging, slashes, error shape, media types, body limits, docs."""

import re

import pytest

from tests.conftest import make_app, make_token, token_client


@pytest.fixture
def five_sites(client):
    return [client.post("/api/sites", json={"site_name": f"site-{i}"}).json for i in range(5)]


def test_lists_are_bare_arrays_oldest_first_with_total_header(client, five_sites):
    """Lists are arrays in creation order with X-Total-Count."""
    response = client.get("/api/sites")
    assert response.status_code == 200
    assert response.headers["X-Total-Count"] == "5"
    assert [s["site_name"] for s in response.json] == [f"site-{i}" for i in range(5)]


def test_limit_and_offset_page_through_a_list(client, five_sites):
    """limit/offset page the list; the total stays the whole count; past the end is empty."""
    page = client.get("/api/sites", query_string={"limit": 2, "offset": 3})
    assert [s["site_name"] for s in page.json] == ["site-3", "site-4"]
    assert page.headers["X-Total-Count"] == "5"
    past_end = client.get("/api/sites", query_string={"offset": 50})
    assert past_end.status_code == 200
    assert past_end.json == []
    assert past_end.headers["X-Total-Count"] == "5"


@pytest.mark.parametrize("params", [{"limit": -1}, {"limit": 1001}, {"offset": -1}, {"limit": "many"}])
def test_bad_paging_values_are_422(client, params):
    """Negative, oversize or non-numeric paging values are validation errors naming the parameter."""
    response = client.get("/api/sites", query_string=params)
    assert response.status_code == 422
    assert set(response.json["errors"]) == set(params)


def test_empty_supporting_lists_are_200(client):
    """Empty lists of supporting resources are 200 []."""
    for url in ("/api/sites", "/api/experiments"):
        response = client.get(url)
        assert response.status_code == 200
        assert response.json == []


@pytest.mark.parametrize(
    "path", ["/api/sites", "/api/sites/", "/api/experiments", "/api/experiments/", "/api/scripts", "/api/scripts/"]
)
def test_collections_answer_with_and_without_trailing_slash(client, path):
    """Collection paths answer both ways, never by redirect."""
    response = client.get(path)
    assert response.status_code in (200, 404)
    assert response.json["code"] == 404 if response.status_code == 404 else isinstance(response.json, list)
    created = client.post(path, json={_name_field(path): "x"})
    assert created.status_code == 200


def _name_field(path: str) -> str:
    return {"sites": "site_name", "experiments": "experiment_name", "scripts": "script_name"}[path.split("/")[2]]


def test_unknown_query_parameters_are_ignored(client, five_sites):
    """A query parameter the endpoint does not know changes nothing."""
    assert client.get("/api/sites", query_string={"colour": "red"}).headers["X-Total-Count"] == "5"


def test_malformed_json_body_is_400_in_the_error_shape(client):
    """A body that is not JSON at all is 400 with the one error shape."""
    response = client.post("/api/sites", data="{not json", content_type="application/json")
    assert response.status_code == 400
    assert set(response.json) >= {"code", "error", "error_description"}


def test_json_body_that_is_not_an_object_is_422(client):
    """A JSON array body is a validation error."""
    response = client.post("/api/sites", json=["site_name"])
    assert response.status_code == 422


def test_form_body_on_json_endpoint_is_415(client):
    """Sending a form to a JSON endpoint is an unsupported media type."""
    response = client.post("/api/sites", data={"site_name": "x"})
    assert response.status_code == 415
    assert "application/json" in response.json["error_description"]


def test_unsupported_method_is_405_in_the_error_shape(client):
    """A method a path does not support is 405 with Allow."""
    response = client.put("/api/sites")
    assert response.status_code == 405
    assert response.json["code"] == 405
    assert "GET" in response.headers["Allow"]


def test_unknown_path_is_404_in_the_error_shape(client):
    """Unknown paths answer in the error shape too."""
    response = client.get("/api/nothing-here")
    assert response.status_code == 404
    assert response.json["error"] == "Not Found"


def test_body_over_the_configured_maximum_is_413(tmp_path, database_url):
    """A body larger than MAX_CONTENT_LENGTH is 413 and stores nothing."""
    app = make_app(tmp_path, database_url, max_content_length=1024)
    client = token_client(app, make_token(app))
    response = client.post("/api/sites", json={"site_name": "x", "site_info": {"pad": "y" * 4096}})
    assert response.status_code == 413
    assert response.json["code"] == 413
    with app.app_context():
        assert client.get("/api/sites", query_string={"limit": 0}).headers["X-Total-Count"] == "0"


def test_unexpected_errors_are_500_without_internals(client, monkeypatch):
    """A bug answers 500 in the error shape without leaking the exception."""
    from webapp.services import sites

    def explode():
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(sites, "list_sites", explode)
    response = client.get("/api/sites")
    assert response.status_code == 500
    assert response.json["code"] == 500
    assert "secret" not in response.get_data(as_text=True)


def test_openapi_document_describes_the_contract(client):
    """The OpenAPI document is served and names the contract's paths and the error shape."""
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    spec = response.json
    for path in (
        "/api/scripts/all",
        "/api/scripts/id/{script_id}/records",
        "/api/scripts/id/{script_id}/records/filter",
        "/api/scripts/records/id/{record_id}/download",
        "/api/experiments/id/{experiment_id}/seasons",
        "/api/sites/id/{site_id}",
    ):
        assert path in spec["paths"], path
    assert "error_description" in spec["components"]["schemas"]["Error"]["properties"]
    assert "X-Total-Count" in spec["info"]["description"]


def test_openapi_document_lists_every_status_without_a_catch_all(client):
    """Each operation documents its statuses (no "default"): 404 for path ids, 401 unless public, and the
    public ones (health) say they need no credentials; response schemas require the fields always sent."""
    spec = client.get("/api/openapi.json").json
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            responses = operation["responses"]
            assert "default" not in responses, (method, path)
            if "{" in path:
                assert "404" in responses, (method, path)
            if path in ("/api/health", "/api/ready"):
                assert operation["security"] == [] and "401" not in responses
            else:
                assert "security" not in operation or operation["security"], (method, path)
                assert {"401", "503"} <= set(responses), (method, path)
    # Responses carry every field: the document requires them (all of a record's, a script's read-only ones).
    schemas = spec["components"]["schemas"]
    assert set(schemas["Record"]["required"]) == set(schemas["Record"]["properties"])
    assert {"id", "created_at", "updated_at", "script_name"} == set(schemas["Script"]["required"])
    # Text refuses NUL (422), and the document says so.
    assert schemas["Site"]["properties"]["site_name"]["pattern"] == "^[^\\u0000]*$"


def test_docs_page_works_offline(client):
    """The docs page loads its assets from this server, not from a CDN."""
    page = client.get("/api/docs")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets, html
    for asset in assets:
        assert asset.startswith("/"), asset
        assert client.get(asset).status_code == 200, asset


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"site_name": "a\x00b"}, "site_name"),
        ({"site_name": "a", "site_info": {"k": "v\x00"}}, "site_info"),
        ({"site_name": "a", "site_info": {"k\x00": 1}}, "site_info"),
    ],
)
def test_nul_characters_are_422_not_500(client, body, field):
    """Text holding NUL characters, which PostgreSQL cannot store, is a validation error naming the field."""
    response = client.post("/api/sites", json=body)
    assert response.status_code == 422
    assert field in response.json["errors"]


def test_nul_in_a_query_filter_is_422(client):
    """A NUL in a query parameter is refused before it reaches the database."""
    client.post("/api/scripts", json={"script_name": "a"})
    response = client.get("/api/scripts", query_string={"script_name": "a\x00"})
    assert response.status_code == 422


@pytest.mark.parametrize("info", ['{"x": NaN}', '{"x": Infinity}', '{"x": [1, -Infinity]}', '{"x": 1e999}'])
def test_non_finite_numbers_in_json_fields_are_422(client, info):
    """NaN and Infinity are not JSON: a JSON field holding one is refused."""
    response = client.post("/api/sites", json={"site_name": "a", "site_info": info})
    assert response.status_code == 422
    assert "site_info" in response.json["errors"]


def test_absurd_json_bodies_are_400_not_500(client):
    """Nesting that exhausts the decoder, or integers too long to convert, are a malformed body."""
    deep = "[" * 100_000 + "]" * 100_000
    assert client.post("/api/sites", data=deep, content_type="application/json").status_code == 400
    huge = '{"site_name": "x", "site_info": {"n": ' + "9" * 5000 + "}}"
    assert client.post("/api/sites", data=huge, content_type="application/json").status_code == 400


def test_json_fields_nest_at_most_64_levels(client):
    """Deeply nested JSON fields are refused with a 422 naming the field; 64 levels are fine."""

    def nested(levels):
        value = {}
        for _ in range(levels - 1):
            value = {"a": value}
        return value

    assert client.post("/api/sites", json={"site_name": "ok", "site_info": nested(64)}).status_code == 200
    response = client.post("/api/sites", json={"site_name": "deep", "site_info": nested(65)})
    assert response.status_code == 422
    assert "site_info" in response.json["errors"]
    as_text = client.post("/api/sites", json={"site_name": "deep", "site_info": '{"a":' * 5000 + "1" + "}" * 5000})
    assert as_text.status_code == 422


@pytest.mark.parametrize("body", [{"site_name": "\ud800"}, {"site_name": "x", "site_info": {"k": "\udfff"}}])
def test_unpaired_surrogates_are_422(client, body):
    """Text no UTF-8 column can store is refused before it reaches the database."""
    assert client.post("/api/sites", json=body).status_code == 422


def test_doubled_slashes_are_not_redirected(client):
    """'//' in a path is simply not found."""
    response = client.get("/api//scripts")
    assert response.status_code == 404
    assert response.json["code"] == 404


def test_concurrent_deletes_answer_one_200_and_404s(app, client):
    """Deleting the same script from several requests at once: one succeeds, the others find nothing."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.conftest import make_token, token_client

    script = client.post("/api/scripts", json={"script_name": "s"}).json
    clients = [token_client(app, make_token(app, "writer")) for _ in range(6)]
    with ThreadPoolExecutor(6) as pool:
        statuses = sorted(pool.map(lambda c: c.delete(f"/api/scripts/id/{script['id']}").status_code, clients))
    assert statuses == [200, 404, 404, 404, 404, 404]
