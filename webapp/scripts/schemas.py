"""Schemas of scripts, runs and datasets."""

import marshmallow as ma

from webapp.common.api import QueryArgsSchema, Schema
from webapp.fields import JSONObject, Text, Timestamp

NAME = ma.validate.Length(min=1, max=255)


class ScriptSchema(Schema):
    id = ma.fields.UUID(dump_only=True)
    script_name = Text(required=True, validate=NAME)
    script_url = Text(allow_none=True)
    script_extension = Text(allow_none=True, validate=ma.validate.Length(max=255))
    script_info = JSONObject(allow_none=True, metadata={"description": "A JSON object (or a string holding one)."})
    created_at = Timestamp(dump_only=True)
    updated_at = Timestamp(dump_only=True)

    @ma.post_load
    def null_info_is_empty(self, data, **kwargs):
        if "script_info" in data and data["script_info"] is None:
            data["script_info"] = {}
        return data


class ScriptCreateSchema(ScriptSchema):
    experiment_name = Text(
        load_only=True,
        validate=NAME,
        metadata={"description": "Associate the script with this experiment, which must exist (else 422)."},
    )


class ScriptUpdateSchema(ScriptSchema):
    """A script's changeable fields, all optional (use with ``partial=True``)."""

    experiment_name = Text(
        load_only=True,
        validate=NAME,
        metadata={"description": "Also associate the script with this experiment, which must exist (else 422)."},
    )


class ScriptQueryArgsSchema(QueryArgsSchema):
    script_name = Text()
    script_url = Text()
    script_extension = Text()
    script_info = JSONObject(
        metadata={"description": "A JSON object: scripts whose info contains every given key/value."}
    )
    experiment_name = Text(metadata={"description": "Scripts associated with this experiment."})


class ScriptRunSchema(Schema):
    id = ma.fields.UUID(dump_only=True)
    script_id = ma.fields.UUID(dump_only=True)
    script_name = Text(dump_only=True)
    script_run_info = JSONObject(load_default=dict)
    created_at = Timestamp(dump_only=True)


class DatasetSchema(Schema):
    id = ma.fields.UUID(dump_only=True)
    dataset_name = Text(required=True, validate=NAME)
    dataset_info = JSONObject(load_default=dict)
    collection_date = ma.fields.Date(allow_none=True)
    created_at = Timestamp(dump_only=True)


class DatasetCreateSchema(DatasetSchema):
    experiment_name = Text(
        load_only=True,
        validate=NAME,
        metadata={"description": "Associate the dataset with this experiment, which must exist (else 422)."},
    )
