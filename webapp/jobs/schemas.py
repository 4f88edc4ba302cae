"""Schemas of jobs."""

import marshmallow as ma

from webapp.common.api import QueryArgsSchema, ResponseSchema
from webapp.fields import Text, Timestamp
from webapp.models import JobKind, JobState

STATES = (JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)
KINDS = (JobKind.BULK_RECORDS, JobKind.RECORD_FILE)


class JobErrorSchema(ResponseSchema):
    line = ma.fields.Integer(metadata={"description": "Physical line (NDJSON, CSV) or 1-based item (JSON array)."})
    error = ma.fields.String()


class JobSchema(ResponseSchema):
    id = ma.fields.UUID()
    kind = ma.fields.String(metadata={"description": " | ".join(KINDS)})
    state = ma.fields.String(metadata={"description": "queued → running → succeeded | failed | cancelled"})
    script_id = ma.fields.UUID(allow_none=True)
    total = ma.fields.Integer(allow_none=True, metadata={"description": "Rows in the upload; null until known."})
    processed = ma.fields.Integer()
    inserted = ma.fields.Integer()
    duplicates = ma.fields.Integer(metadata={"description": "Rows already stored; not failures."})
    failed = ma.fields.Integer()
    errors = ma.fields.List(ma.fields.Nested(JobErrorSchema), metadata={"description": "The first 100 failed rows."})
    error_description = ma.fields.String(allow_none=True, metadata={"description": "Why the job failed."})
    request_id = ma.fields.String(
        allow_none=True, metadata={"description": "The X-Request-ID of the request that created the job."}
    )
    created_at = Timestamp()
    started_at = Timestamp(allow_none=True)
    finished_at = Timestamp(allow_none=True)


class JobQueryArgsSchema(QueryArgsSchema):
    state = Text(validate=ma.validate.OneOf(STATES))
    kind = Text(validate=ma.validate.OneOf(KINDS))
    script_id = ma.fields.UUID()
