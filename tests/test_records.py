"""Single records: create (with and without a file), read, change, delete, duplicates and bad input."""

import hashlib
import io
import json
import uuid

import marshmallow as ma
import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import db_job, empty_tables, make_app, make_token, record_form, token_client, wait_for_file
from webapp.extensions import db
from webapp.services.record_rules import RecordFields


@pytest.fixture
def records_url(script):
    return f"/api/scripts/id/{script['id']}/records"


@pytest.fixture(params=["first record of its dataset", "later record of its dataset"])
def earlier(request, client, reference, records_url) -> list[str]:
    """Nothing, or one record posted first to the dataset the test's records go to: a dataset's first record takes
    the step-by-step path, a later one the single statement (``RECORD_BY_NAMES``); every refusal holds for both.
    Returns the ids of the records stored before the test's own."""
    if request.param.startswith("first"):
        return []
    return [client.post(records_url, data=record_form(timestamp="2024-05-01T00:00:30Z")).json["id"]]


def stored_ids(client, records_url) -> list[str]:
    """The ids of the records a script's stream holds."""
    return [json.loads(line)["id"] for line in client.get(records_url).data.decode().splitlines()]


def test_post_record_returns_every_field_with_names(client, reference, script, records_url):
    """A stored record carries ids and names of its script, dataset, experiment, season and site."""
    response = client.post(records_url, data=record_form(record_info='{"camera": "A"}'))
    assert response.status_code == 200
    record = response.json
    assert record["script_id"] == script["id"]
    assert record["script_name"] == "canopy-height"
    assert record["experiment_id"] == reference["experiment"]["id"]
    assert record["season_id"] == reference["season"]["id"]
    assert record["site_id"] == reference["site"]["id"]
    assert record["script_data"] == {"height_cm": 41.5}
    assert record["record_info"] == {"camera": "A"}
    assert record["timestamp"] == "2024-05-01T12:00:00+00:00"
    assert record["dataset_name"] == "canopy-height Dataset 2024-05-01"
    assert record["record_file"] is None and record["file_status"] is None
    assert client.get(f"/api/scripts/records/id/{record['id']}").json == record


def test_later_records_of_a_dataset_are_stored_like_the_first(client, reference, script, records_url):
    """Once its dataset exists a record is stored in one statement; it carries the same names and ids."""
    first = client.post(records_url, data=record_form()).json
    form = record_form(timestamp="2024-05-01T13:00:00Z", record_file=(io.BytesIO(b"leaf"), "leaf.txt"))
    second = wait_for_file(client, client.post(records_url, data=form).json)
    names = ("script", "dataset", "experiment", "season", "site")
    same = [f"{name}_{part}" for name in names for part in ("id", "name")] + ["collection_date", "script_data"]
    assert {key: second[key] for key in same} == {key: first[key] for key in same}
    assert second["id"] != first["id"]
    assert second["timestamp"] == "2024-05-01T13:00:00+00:00"
    assert (second["file_name"], second["file_size"], second["file_status"]) == ("leaf.txt", 4, "ready")
    listed = client.get(records_url).data.decode().splitlines()
    assert [json.loads(line)["id"] for line in listed] == [first["id"], second["id"]]


def test_a_record_of_a_new_experiment_in_an_existing_dataset_associates_it(client, reference, script, records_url):
    """A dataset that already holds records of one experiment gets a record of another: both are associated."""
    other = client.post("/api/experiments", json={"experiment_name": "Heat 2024"}).json
    client.post(f"/api/experiments/id/{other['id']}/seasons", json={"season_name": "Summer"})
    client.post(records_url, data=record_form())
    record = client.post(records_url, data=record_form(timestamp="2024-05-01T13:00:00Z", experiment_name="Heat 2024"))
    assert record.json["experiment_id"] == other["id"]
    experiments = client.get(f"/api/scripts/id/{script['id']}/experiments").json
    assert [e["experiment_name"] for e in experiments] == ["Drought 2024", "Heat 2024"]


def test_a_renamed_script_files_new_records_under_its_new_name(client, reference, script, records_url):
    """The default dataset follows the script's current name, also right after a rename."""
    client.post(records_url, data=record_form())
    client.patch(f"/api/scripts/id/{script['id']}", json={"script_name": "canopy-height-v2"})
    record = client.post(records_url, data=record_form(timestamp="2024-05-01T13:00:00Z")).json
    assert record["script_name"] == "canopy-height-v2"
    assert record["dataset_name"] == "canopy-height-v2 Dataset 2024-05-01"
    assert client.get(f"/api/scripts/records/id/{record['id']}").json == record


def test_records_of_a_deleted_script_are_404(client, reference, script, records_url, earlier):
    """A deleted script takes no more records, whether it had received records or not."""
    client.delete(f"/api/scripts/id/{script['id']}")
    assert client.post(records_url, data=record_form(timestamp="2024-05-01T13:00:00Z")).status_code == 404


def test_timestamp_without_offset_is_utc_and_offsets_are_normalised(client, reference, records_url):
    """A naive timestamp is UTC; an offset timestamp is stored in UTC; collection_date uses its own offset."""
    naive = client.post(records_url, data=record_form(timestamp="2024-05-01T10:00:00")).json
    assert naive["timestamp"] == "2024-05-01T10:00:00+00:00"
    shifted = client.post(records_url, data=record_form(timestamp="2024-05-02T01:30:00+05:00")).json
    assert shifted["timestamp"] == "2024-05-01T20:30:00+00:00"
    assert shifted["collection_date"] == "2024-05-02"


def test_post_record_associates_script_dataset_and_experiment(client, reference, script, records_url):
    """Storing a record associates its script with the experiment and dataset, and the dataset with both."""
    client.post(records_url, data=record_form(dataset_name="Flight 7"))
    datasets = client.get(f"/api/scripts/id/{script['id']}/datasets").json
    assert [d["dataset_name"] for d in datasets] == ["Flight 7"]
    experiments = client.get(f"/api/scripts/id/{script['id']}/experiments").json
    assert [e["id"] for e in experiments] == [reference["experiment"]["id"]]


def test_post_record_with_file_stores_name_size_checksum_and_type(client, reference, records_url):
    """A file is accepted as pending at once; a worker then stores it with its size and SHA-256."""
    payload = b"\x89PNG" + bytes(range(256)) * 100
    form = record_form(record_file=(io.BytesIO(payload), "plot 7.png"))
    accepted = client.post(records_url, data=form).json
    assert accepted["file_status"] == "pending"
    assert accepted["file_sha256"] is None
    record = wait_for_file(client, accepted)
    assert record["record_file"] == accepted["record_file"]
    assert record["file_name"] == "plot 7.png"
    assert record["file_size"] == len(payload)
    assert record["file_sha256"] == hashlib.sha256(payload).hexdigest()
    assert record["file_content_type"] == "image/png"
    assert record["file_status"] == "ready"
    assert record["id"] in record["record_file"]


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\boot.ini", "boot.ini"),
        ("a\x00b\x1f\x7fc.txt", "abc.txt"),
        (".env", "env"),
    ],
)
def test_unsafe_file_names_are_sanitised(client, reference, records_url, raw, stored):
    """Path components, control characters and leading dots are removed from file names."""
    record = client.post(records_url, data=record_form(record_file=(io.BytesIO(b"x"), raw))).json
    assert record["file_name"] == stored
    assert ".." not in record["record_file"]


def test_file_name_with_nothing_usable_is_422(client, reference, records_url, earlier):
    """A file name that sanitises to nothing is rejected and nothing is stored."""
    response = client.post(records_url, data=record_form(record_file=(io.BytesIO(b"x"), "../..")))
    assert response.status_code == 422
    assert "record_file" in response.json["errors"]
    assert stored_ids(client, records_url) == earlier


def test_duplicate_record_is_409_and_leaves_original_and_file_untouched(client, app, reference, records_url, earlier):
    """A second record with the same identity is 409; the first record and its file stay as they were."""
    from webapp.extensions import queue, store

    first = wait_for_file(
        client, client.post(records_url, data=record_form(record_file=(io.BytesIO(b"first"), "a.txt"))).json
    )
    again = client.post(
        records_url, data=record_form(script_data='{"other": 1}', record_file=(io.BytesIO(b"second"), "a.txt"))
    )
    assert again.status_code == 409
    assert again.json["code"] == 409
    assert client.get(f"/api/scripts/records/id/{first['id']}").json == first
    assert store.backend.path_of(first["record_file"]).read_bytes() == b"first"
    queue.dispatcher.drain()
    stored_files = [p for p in store.backend.root.rglob("*") if p.is_file()]
    assert stored_files == [store.backend.path_of(first["record_file"])]


def test_unknown_experiment_season_or_site_is_422_naming_each(client, reference, records_url, earlier):
    """Each missing reference is named in the 422 errors."""
    response = client.post(records_url, data=record_form(season_name="Winter", site_name="Nowhere"))
    assert response.status_code == 422
    assert set(response.json["errors"]) == {"season_name", "site_name"}
    response = client.post(records_url, data=record_form(experiment_name="Other"))
    assert response.status_code == 422
    assert "experiment_name" in response.json["errors"]
    assert stored_ids(client, records_url) == earlier


def test_missing_required_fields_and_bad_values_are_422(client, reference, records_url, earlier):
    """Missing required fields, non-ISO timestamps, bad JSON fields and unknown fields are 422."""
    cases = [
        (record_form(timestamp=None), "timestamp"),
        (record_form(site_name=None), "site_name"),
        (record_form(timestamp="yesterday"), "timestamp"),
        (record_form(timestamp="05/01/2024 12:00"), "timestamp"),
        (record_form(timestamp="0001-01-01T00:00:00+05:00"), "timestamp"),
        (record_form(script_data='{"a": "\\u0000"}'), "script_data"),
        (record_form(script_data='{"\\u0000": 1}'), "script_data"),
        (record_form(script_data="[1, 2]"), "script_data"),
        (record_form(script_data="{broken"), "script_data"),
        (record_form(collection_date="2024-13-01"), "collection_date"),
        (record_form(script_run_id="not-a-uuid"), "script_run_id"),
        (record_form(colour="red"), "colour"),
    ]
    for form, field in cases:
        response = client.post(records_url, data=form)
        assert response.status_code == 422, form
        assert field in response.json["errors"], (form, response.json)
    assert stored_ids(client, records_url) == earlier


def test_file_under_an_unknown_part_name_is_422_not_dropped(client, reference, records_url, earlier):
    """A file sent under another name than record_file is refused rather than silently ignored."""
    response = client.post(records_url, data=record_form(photo=(io.BytesIO(b"x"), "a.png")))
    assert response.status_code == 422
    assert "photo" in response.json["errors"]


def test_record_run_must_belong_to_the_script(client, reference, script, records_url, earlier):
    """script_run_id must name a run of this script."""
    other = client.post("/api/scripts", json={"script_name": "other"}).json
    foreign_run = client.post(f"/api/scripts/id/{other['id']}/runs").json
    response = client.post(records_url, data=record_form(script_run_id=foreign_run["id"]))
    assert response.status_code == 422
    assert "script_run_id" in response.json["errors"]
    own_run = client.post(f"/api/scripts/id/{script['id']}/runs").json
    assert (
        client.post(records_url, data=record_form(script_run_id=own_run["id"])).json["script_run_id"] == own_run["id"]
    )


def test_post_record_to_unknown_script_is_404(client, reference, earlier):
    """Records of an unknown script are 404."""
    response = client.post(f"/api/scripts/id/{uuid.uuid4()}/records", data=record_form())
    assert response.status_code == 404


def test_json_body_on_record_post_is_415(client, reference, records_url, earlier):
    """The record endpoint takes a form; a JSON body is an unsupported media type."""
    response = client.post(records_url, json=record_form())
    assert response.status_code == 415
    assert response.json["code"] == 415


def test_patch_record_replaces_payloads(client, reference, records_url):
    """PATCH replaces script_data and record_info; non-objects are 422; unknown ids 404."""
    record = client.post(records_url, data=record_form(record_info='{"a": 1, "b": 2}')).json
    url = f"/api/scripts/records/id/{record['id']}"
    response = client.patch(url, json={"record_info": {"c": 3}})
    assert response.status_code == 200
    assert response.json["record_info"] == {"c": 3}
    assert response.json["script_data"] == {"height_cm": 41.5}
    assert client.patch(url, json={"script_data": [1]}).status_code == 422
    assert client.patch(url, json={"timestamp": "2024-01-01T00:00:00Z"}).status_code == 422
    assert client.patch(f"/api/scripts/records/id/{uuid.uuid4()}", json={"record_info": {}}).status_code == 404


def test_delete_record_removes_it_and_its_file(client, app, reference, records_url):
    """DELETE removes the record and its stored file."""
    from webapp.extensions import store

    record = wait_for_file(
        client, client.post(records_url, data=record_form(record_file=(io.BytesIO(b"x"), "a.txt"))).json
    )
    path = store.backend.path_of(record["record_file"])
    assert path.exists()
    assert client.delete(f"/api/scripts/records/id/{record['id']}").status_code == 200
    assert client.get(f"/api/scripts/records/id/{record['id']}").status_code == 404
    assert not path.exists()
    assert client.delete(f"/api/scripts/records/id/{record['id']}").status_code == 404


def test_storage_failure_leaves_no_record_behind(client, app, reference, records_url, failing_store, earlier):
    """When the object store fails, the answer is 503 and neither record nor dataset is stored."""
    failing_store.put_error = OSError("disk full")
    response = client.post(records_url, data=record_form(record_file=(io.BytesIO(b"x"), "a.txt")))
    assert response.status_code == 503
    assert "disk full" not in response.json["error_description"]
    assert stored_ids(client, records_url) == earlier
    new = client.post(records_url, data=record_form(dataset_name="New", record_file=(io.BytesIO(b"x"), "a.txt")))
    assert new.status_code == 503
    assert stored_ids(client, records_url) == earlier
    scripts_datasets = client.get(records_url.replace("/records", "/datasets"))
    if earlier:
        assert [d["dataset_name"] for d in scripts_datasets.json] == ["canopy-height Dataset 2024-05-01"]
    else:
        assert scripts_datasets.status_code == 404


def test_download_of_record_without_file_is_404(client, reference, records_url):
    """A record without a file has nothing to download."""
    record = client.post(records_url, data=record_form()).json
    assert client.get(f"/api/scripts/records/id/{record['id']}/download").status_code == 404
    assert client.get(f"/api/scripts/records/id/{uuid.uuid4()}/download").status_code == 404


def test_download_of_pending_file_is_409_with_retry_after(client, app, reference, records_url):
    """A file still pending answers 409 with Retry-After."""
    from webapp.extensions import db
    from webapp.models import Record

    record = wait_for_file(
        client, client.post(records_url, data=record_form(record_file=(io.BytesIO(b"x"), "a.txt"))).json
    )
    db.session.get(Record, uuid.UUID(record["id"])).file_status = "pending"
    db.session.commit()
    response = client.get(f"/api/scripts/records/id/{record['id']}/download")
    assert response.status_code == 409
    assert response.headers["Retry-After"]


def test_text_where_a_file_belongs_is_422(client, reference, records_url, earlier):
    """A plain field named record_file is refused, not mistaken for a file."""
    response = client.post(records_url, data=record_form(record_file="hello"))
    assert response.status_code == 422
    assert "record_file" in response.json["errors"]


def test_malformed_file_media_type_is_replaced_by_a_guess(client, reference, records_url):
    """A part's content type that is not a well-formed media type is not stored; the name decides."""
    form = record_form(record_file=(io.BytesIO(b"x"), "leaf.png", "image/" + "x" * 300))
    record = client.post(records_url, data=form).json
    assert record["file_content_type"] == "image/png"


def test_long_names_stay_within_limits(client, reference):
    """A 255-character script name still gives a default dataset name of at most 255 characters, and a file
    name of many multi-byte characters is cut to 200 bytes with its extension kept."""
    script = client.post("/api/scripts", json={"script_name": "s" * 255}).json
    form = record_form(record_file=(io.BytesIO(b"x"), "é" * 150 + ".txt"))
    record = client.post(f"/api/scripts/id/{script['id']}/records", data=form).json
    assert len(record["dataset_name"]) == 255 and record["dataset_name"].endswith(" Dataset 2024-05-01")
    assert len(record["file_name"].encode()) <= 200 and record["file_name"].endswith(".txt")
    assert wait_for_file(client, record)["file_status"] == "ready"


def test_payload_integers_beyond_64_bits_are_kept_and_streamed(client, reference, records_url):
    """JSON allows big integers: they are stored and come back in single reads and streams."""
    record = client.post(records_url, data=record_form(script_data='{"n": 18446744073709551616}')).json
    assert record["script_data"] == {"n": 18446744073709551616}
    import json as stdjson

    (line,) = client.get(records_url).data.decode().splitlines()
    assert stdjson.loads(line)["script_data"] == {"n": 18446744073709551616}


def test_file_job_whose_upload_is_lost_fails_clearly(client, app, reference, records_url, held_jobs):
    """The upload goes straight to the record's key (no staging copy); a job whose file is gone fails, saying so."""
    from webapp.extensions import store
    from webapp.services import jobs

    record = client.post(records_url, data=record_form(record_file=(io.BytesIO(b"leaf"), "a.png"))).json
    (job,) = client.get("/api/jobs", query_string={"kind": "record_file"}).json
    uploaded = store.backend.path_of(db_job(job["id"]).params["key"])
    assert uploaded == store.backend.path_of(record["record_file"])
    uploaded.unlink()
    jobs.run_job(uuid.UUID(job["id"]), "test-worker")
    stored = client.get(f"/api/scripts/records/id/{record['id']}").json
    ended = client.get(f"/api/jobs/{job['id']}").json
    assert (ended["state"], stored["file_status"]) == ("failed", "failed")
    assert "lost" in ended["error_description"]


def test_a_local_file_changed_before_its_job_fails_and_goes(client, app, reference, records_url, held_jobs):
    """The worker hashes a local file again: one whose bytes changed after the upload (same size) fails, and
    the wrong bytes are deleted."""
    from webapp.extensions import store
    from webapp.services import jobs

    record = client.post(records_url, data=record_form(record_file=(io.BytesIO(b"leaf"), "a.png"))).json
    (job,) = client.get("/api/jobs", query_string={"kind": "record_file"}).json
    path = store.backend.path_of(record["record_file"])
    path.write_bytes(b"lead")
    jobs.run_job(uuid.UUID(job["id"]), "test-worker")
    ended = client.get(f"/api/jobs/{job['id']}").json
    stored = client.get(f"/api/scripts/records/id/{record['id']}").json
    assert (ended["state"], stored["file_status"], stored["file_sha256"]) == ("failed", "failed", None)
    assert "SHA-256" in ended["error_description"]
    assert not path.exists()


def test_a_file_job_queued_before_direct_uploads_is_still_stored(client, app, reference, records_url, held_jobs):
    """A job of the earlier shape (the file at a staging key, no size or checksum sent) is hashed from the store
    and moved to the record's key."""
    from webapp.extensions import store
    from webapp.services import jobs

    record = client.post(records_url, data=record_form(record_file=(io.BytesIO(b"leaf"), "a.png"))).json
    (job,) = client.get("/api/jobs", query_string={"kind": "record_file"}).json
    staged = f"staging/{record['id']}"
    store.backend.path_of(staged).parent.mkdir(parents=True, exist_ok=True)
    store.backend.move(record["record_file"], staged)
    stored_job = db_job(job["id"])
    stored_job.params = {"record_id": record["id"], "staged_key": staged}
    db.session.commit()
    jobs.run_job(uuid.UUID(job["id"]), "test-worker")
    stored = client.get(f"/api/scripts/records/id/{record['id']}").json
    assert (stored["file_status"], stored["file_size"]) == ("ready", 4)
    assert stored["file_sha256"] == hashlib.sha256(b"leaf").hexdigest()
    assert store.backend.path_of(record["record_file"]).read_bytes() == b"leaf"
    assert not store.backend.path_of(staged).exists()


def test_cancelling_a_file_job_fails_the_file_and_removes_the_upload(client, app, reference, records_url, held_jobs):
    """A record whose file job is cancelled says its file failed, offers no download, and leaves no upload."""
    from webapp.extensions import store

    record = client.post(records_url, data=record_form(record_file=(io.BytesIO(b"leaf"), "a.png"))).json
    (job,) = client.get("/api/jobs", query_string={"kind": "record_file"}).json
    uploaded = store.backend.path_of(db_job(job["id"]).params["key"])
    assert uploaded.read_bytes() == b"leaf"
    assert client.post(f"/api/jobs/{job['id']}/cancel").json["state"] == "cancelled"
    assert client.get(f"/api/scripts/records/id/{record['id']}").json["file_status"] == "failed"
    assert client.get(f"/api/scripts/records/id/{record['id']}/download").status_code == 404
    assert not uploaded.exists()


@pytest.mark.parametrize("size", [10, 200_000])  # split by the app itself, and by werkzeug
def test_a_file_name_that_is_not_utf8_is_422_alone(client, reference, records_url, size, earlier):
    """A Latin-1 file name gets a 422 saying so, not one claiming that every form field is missing."""
    boundary = b"n4me"
    fields = [(name, value.encode()) for name, value in record_form().items()]
    body = b"".join(
        b"--"
        + boundary
        + b'\r\nContent-Disposition: form-data; name="'
        + name.encode()
        + b'"\r\n\r\n'
        + value
        + b"\r\n"
        for name, value in fields
    )
    body += b"--" + boundary + b'\r\nContent-Disposition: form-data; name="record_file"; filename="caf\xe9.txt"\r\n'
    body += b"Content-Type: text/plain\r\n\r\n" + b"x" * size + b"\r\n--" + boundary + b"--\r\n"
    response = client.post(records_url, data=body, content_type=f"multipart/form-data; boundary={boundary.decode()}")
    assert response.status_code == 422
    assert "UTF-8" in response.json["error_description"]
    assert "timestamp" not in response.json["errors"]
    if size < 64 * 1024:
        assert list(response.json["errors"]) == ["record_file"]


class RecordFieldsWithValidators(RecordFields):
    """The record's fields with validators of every kind ``load_record`` runs (a test-only subclass)."""

    @ma.validates("site_name")
    def site_not_shouted(self, value, **kwargs):
        if value.isupper():
            raise ma.ValidationError("Do not shout.")

    @ma.validates_schema
    def season_within_its_site(self, values, **kwargs):
        if values.get("season_name") == values.get("site_name"):
            raise ma.ValidationError("A season is not named after its site.", "season_name")

    @ma.validates_schema(pass_original=True)
    def as_sent(self, values, original, **kwargs):
        if "record_info" not in original and values.get("dataset_name") == "Annotated":
            raise ma.ValidationError({"record_info": ["Annotated datasets need record_info."]})

    @ma.validates_schema(skip_on_field_errors=False)
    def always(self, values, **kwargs):
        if "timestamp" not in values:
            raise ma.ValidationError("No timestamp, no record.")


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"site_name": "MARICOPA"},
        {"season_name": "Maricopa"},
        {"dataset_name": "Annotated"},
        {"dataset_name": "Annotated", "record_info": "{}"},
        {"timestamp": None},
        {"timestamp": "yesterday", "season_name": "Maricopa", "colour": "red"},
        {"script_data": "[1]", "site_name": "X" * 256},
    ],
)
def test_load_record_loads_and_refuses_as_marshmallow_does(changes):
    """The one validation of a record (``load_record``, which the single POST and bulk rows run) gives the values
    and errors of marshmallow's own ``Schema.load``, field, field-level and schema-level validators alike."""
    schema = RecordFieldsWithValidators()
    raw = record_form(**changes)
    values, errors = schema.load_record(raw)
    try:
        expected, expected_errors = ma.Schema.load(schema, raw), {}
    except ma.ValidationError as exc:
        expected, expected_errors = exc.valid_data, exc.messages
    assert errors == expected_errors
    assert values == expected
    assert bool(errors) == bool(changes) - ("record_info" in changes)


def test_a_record_schema_may_not_transform_what_it_loads():
    """A pre_load or post_load hook, which ``load_record`` would not run, is refused rather than skipped."""

    class Transforming(RecordFields):
        @ma.post_load
        def lower(self, values, **kwargs):
            return {**values, "site_name": values["site_name"].lower()}

    with pytest.raises(TypeError, match="post_load"):
        Transforming().load_record(record_form())


def test_a_later_record_on_a_connection_the_database_ended_is_503_then_stored(tmp_path, postgresql_url):
    """A later record of its dataset is one statement on the pooled driver connection (``db.rows``): on one
    PostgreSQL ended a moment ago the POST is a 503 to retry that stores nothing, and the retry is stored with its
    JSON payload as sent."""
    app = make_app(tmp_path, postgresql_url)
    client = token_client(app, make_token(app))
    try:
        _post_on_an_ended_connection(client, postgresql_url)
    finally:
        empty_tables(app)  # the session's database, which other tests' apps share
        app.extensions["database"].dispose()


def _post_on_an_ended_connection(client, postgresql_url: str) -> None:
    experiment = client.post("/api/experiments", json={"experiment_name": "Drought 2024"}).json
    client.post(f"/api/experiments/id/{experiment['id']}/seasons", json={"season_name": "Summer"})
    client.post("/api/sites", json={"site_name": "Maricopa"})
    url = f"/api/scripts/id/{client.post('/api/scripts', json={'script_name': 's'}).json['id']}/records"
    first = client.post(url, data=record_form(timestamp="2024-05-01T00:00:30Z")).json
    database = make_url(postgresql_url)
    with psycopg.connect(database.set(drivername="postgresql").render_as_string(hide_password=False)) as admin:
        admin.autocommit = True
        ended = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            [database.database],
        ).fetchone()[0]
    assert ended >= 1
    form = record_form(script_data='{"height_cm": 41.5, "tags": ["a", "b"], "plot": {"row": 3}}')
    failed = client.post(url, data=form)
    assert (failed.status_code, failed.headers["Retry-After"]) == (503, "1")
    assert stored_ids(client, url) == [first["id"]]
    stored = client.post(url, data=form)
    assert stored.status_code == 200
    assert stored.json["script_data"] == {"height_cm": 41.5, "tags": ["a", "b"], "plot": {"row": 3}}
    assert stored.json["dataset_name"] == first["dataset_name"]
    # The response echoes what was sent; what the database holds is read back.
    read = client.get(f"/api/scripts/records/id/{stored.json['id']}").json
    assert read["script_data"] == {"height_cm": 41.5, "tags": ["a", "b"], "plot": {"row": 3}}
    assert read["dataset_name"] == first["dataset_name"]
    assert stored_ids(client, url) == [first["id"], stored.json["id"]]
