"""The direct dump of webapp/common/api.py's Schema gives what marshmallow's generic path gives, for every
response schema of the API over rows the API stored, and for dicts, missing values and fields it cannot take."""

import io
import uuid
from datetime import UTC, datetime
from types import SimpleNamespace

import marshmallow as ma
import pytest
from sqlalchemy import select

from tests.conftest import record_form
from webapp.common.api import Schema
from webapp.experiments.schemas import ExperimentSchema, SeasonSchema
from webapp.extensions import db
from webapp.fields import JSONObject, Text, Timestamp
from webapp.jobs.schemas import JobSchema
from webapp.models import ApiToken, Dataset, Experiment, Job, Record, Script, ScriptRun, Season, Site
from webapp.records.schemas import RecordSchema
from webapp.scripts.schemas import DatasetSchema, ScriptRunSchema, ScriptSchema
from webapp.sites.schemas import SiteSchema
from webapp.tokens.schemas import TokenSchema

PAIRS = [
    (ExperimentSchema, Experiment),
    (SeasonSchema, Season),
    (SiteSchema, Site),
    (ScriptSchema, Script),
    (ScriptRunSchema, ScriptRun),
    (DatasetSchema, Dataset),
    (RecordSchema, Record),
    (TokenSchema, ApiToken),
    (JobSchema, Job),
]


def generic(schema: ma.Schema, obj, many: bool = False):
    """What marshmallow's own serialization makes of ``obj``."""
    return ma.Schema._serialize(schema, obj, many=many)


@pytest.fixture
def stored(client, reference, script):
    """A script with a run, records (one with a file, one with info) and a bulk upload's job."""
    path = f"/api/scripts/id/{script['id']}/records"
    assert client.post(f"/api/scripts/id/{script['id']}/runs", json={"script_run_info": {"k": [1, 2]}}).status_code
    assert client.post(path, data=record_form(record_info='{"note": "é"}')).status_code == 200
    with_file = record_form(timestamp="2024-05-02T12:00:00Z", record_file=(io.BytesIO(b"abc"), "a.txt"))
    assert client.post(path, data=with_file).status_code == 200
    line = b'{"timestamp": "2024-05-03T12:00:00Z", "experiment_name": "Drought 2024", "season_name": "Summer", '
    line += b'"site_name": "Maricopa", "script_data": {"x": 1}}\n'
    assert client.post(f"{path}/bulk", data={"file": (io.BytesIO(line), "rows.ndjson")}).status_code == 202


@pytest.mark.usefixtures("stored")
@pytest.mark.parametrize(("schema_class", "model"), PAIRS, ids=[schema.__name__ for schema, _ in PAIRS])
def test_the_direct_dump_of_stored_rows_is_marshmallows(schema_class, model):
    """Each response schema takes the direct path, and its dump of every stored row is marshmallow's."""
    rows = db.session.scalars(select(model)).unique().all()
    assert rows, f"the fixture stored no {model.__name__}"
    schema = schema_class()
    assert schema._make_dump_plan() is not None
    assert schema.dump(rows, many=True) == generic(schema, rows, many=True)
    for row in rows:
        assert schema.dump(row) == generic(schema, row)


class Sample(Schema):
    id = ma.fields.UUID()
    name = Text(allow_none=True)
    renamed = ma.fields.Integer(data_key="count", attribute="number")
    when = Timestamp(allow_none=True)
    info = JSONObject()
    nested = ma.fields.Nested(lambda: Sample(only=("name",)), allow_none=True)
    secret = Text(load_only=True)


def test_dicts_missing_values_and_renamed_fields_dump_alike():
    """Dicts and objects, absent keys and attributes (left out), None, data_key and attribute, nesting."""
    schema = Sample()
    samples = [
        {"id": uuid.uuid4(), "name": "a", "number": 3, "when": datetime(2024, 1, 2, tzinfo=UTC), "info": {"k": 1}},
        {"name": None, "nested": {"name": "inner"}, "secret": "s"},
        SimpleNamespace(id=uuid.uuid4(), number=0, when=None, info={}, nested=None),
        {},
    ]
    for sample in samples:
        assert schema.dump(sample) == generic(schema, sample)
    assert "secret" not in schema.dump(samples[1]) and "count" not in schema.dump(samples[1])
    assert schema.dump(samples, many=True) == generic(schema, samples, many=True)


def test_fields_the_direct_path_cannot_take_fall_back_to_marshmallow():
    """A default, a method field or a dotted attribute sends the whole schema the generic way, with its result."""

    class WithDefault(Schema):
        name = Text(dump_default="unnamed")

    class WithMethod(Schema):
        shout = ma.fields.Method("make_shout")

        def make_shout(self, obj):
            return obj["name"].upper()

    class Dotted(Schema):
        inner = Text(attribute="outer.inner")

    for schema, obj, expected in (
        (WithDefault(), {}, {"name": "unnamed"}),
        (WithMethod(), {"name": "a"}, {"shout": "A"}),
        (Dotted(), {"outer": {"inner": "x"}}, {"inner": "x"}),
    ):
        assert schema._make_dump_plan() is None
        assert schema.dump(obj) == expected


@pytest.mark.usefixtures("stored")
def test_a_script_read_as_plain_rows_dumps_as_its_orm_object(client):
    """The list and the single read, which read rows outside the session (on PostgreSQL the list written as JSON
    by the database), answer what the ORM objects dump to."""
    info = {"é": [1, 2.5, {"x": None}], "big": 12345678901234567890, "quote": 'a "b" \\ c'}
    body = {"script_name": "tab\there ünï", "script_url": None, "script_extension": "py", "script_info": info}
    assert client.post("/api/scripts", json=body).status_code == 200
    objects = db.session.scalars(select(Script).order_by(Script.created_at, Script.id)).all()
    expected = ScriptSchema().dump(objects, many=True)
    assert client.get("/api/scripts/all").json == expected
    assert client.get("/api/scripts", query_string={"script_name": "canopy-height"}).json == expected[:1]
    assert client.get("/api/scripts/all", query_string={"offset": 1}).json == expected[1:]
    assert client.get("/api/scripts/all", query_string={"offset": 2}).headers["X-Total-Count"] == "2"
    assert [client.get(f"/api/scripts/id/{item.id}").json for item in objects] == expected
