"""Schemas of script records: the record, its multipart form, its change and its searches."""

import marshmallow as ma

from webapp.common.api import QueryArgsSchema, ResponseSchema, Schema
from webapp.fields import File, JSONObject, NameList, Text, Timestamp
from webapp.services.record_rules import NAME, RecordFields


class RecordSchema(ResponseSchema):
    id = ma.fields.UUID()
    timestamp = Timestamp()
    collection_date = ma.fields.Date()
    script_id = ma.fields.UUID()
    script_name = Text()
    script_run_id = ma.fields.UUID(allow_none=True)
    dataset_id = ma.fields.UUID()
    dataset_name = Text()
    experiment_id = ma.fields.UUID()
    experiment_name = Text()
    season_id = ma.fields.UUID()
    season_name = Text()
    site_id = ma.fields.UUID()
    site_name = Text()
    script_data = JSONObject()
    record_info = JSONObject()
    record_file = Text(allow_none=True, metadata={"description": "Object-store key of the attached file, or null."})
    file_name = Text(allow_none=True, metadata={"description": "Original file name, sanitised."})
    file_size = ma.fields.Integer(allow_none=True)
    file_sha256 = Text(allow_none=True)
    file_content_type = Text(allow_none=True)
    file_status = Text(allow_none=True, metadata={"description": "pending | ready | failed"})


class RecordFormSchema(RecordFields):
    """The fields of a record (the contract in ``services/record_rules.py``) and its file, as a form."""

    record_file = File(metadata={"description": "Optional file attached to the record."})


class BulkUploadFormSchema(Schema):
    file = File(
        required=True,
        metadata={
            "description": "NDJSON, CSV (header row; script_data and record_info columns hold JSON) or a JSON "
            "array of records; recognised by the part's content type, else the file extension (else 415)."
        },
    )
    experiment_name = Text(validate=NAME, metadata={"description": "For rows without one."})
    season_name = Text(validate=NAME, metadata={"description": "For rows without one."})
    site_name = Text(validate=NAME, metadata={"description": "For rows without one."})
    dataset_name = Text(validate=NAME, metadata={"description": "For rows without one."})
    collection_date = ma.fields.Date(metadata={"description": "For rows without one."})


class RecordUpdateSchema(Schema):
    script_data = JSONObject(metadata={"description": "Replaces the stored value."})
    record_info = JSONObject(metadata={"description": "Replaces the stored value."})


class RecordQueryArgsSchema(QueryArgsSchema):
    experiment_name = Text()
    season_name = Text()
    site_name = Text()
    collection_date = ma.fields.Date()
    dataset_name = Text()


class RecordFilterArgsSchema(QueryArgsSchema):
    start_timestamp = Timestamp(metadata={"description": "Inclusive lower bound."})
    end_timestamp = Timestamp(metadata={"description": "Inclusive upper bound."})
    dataset_names = NameList(metadata={"description": "Repeat the key or separate names with commas."})
    experiment_names = NameList()
    season_names = NameList()
    site_names = NameList()


class RecordExportArgsSchema(RecordFilterArgsSchema):
    format = Text(
        required=True,
        validate=ma.validate.OneOf(["csv", "parquet"]),
        metadata={"description": "`csv` (UTF-8, header row, RFC 4180 quoting) or `parquet`."},
    )
