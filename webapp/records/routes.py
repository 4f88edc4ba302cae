"""Script records: create with a file, stream searches, read, change, delete, download."""

import logging
import uuid

from flask import Response, current_app, g, redirect, request, url_for
from flask.views import MethodView

from webapp.common.api import Blueprint
from webapp.jobs.schemas import JobSchema
from webapp.records.schemas import (
    BulkUploadFormSchema,
    RecordExportArgsSchema,
    RecordFilterArgsSchema,
    RecordFormSchema,
    RecordQueryArgsSchema,
    RecordSchema,
    RecordUpdateSchema,
)
from webapp.services import bulk, record_export, record_search, records

log = logging.getLogger(__name__)

blp = Blueprint("records", __name__, url_prefix="/api/scripts", description="Script records and their files.")

NDJSON_DOC = (
    "An `application/x-ndjson` stream of every matching record, one per line, oldest timestamp first "
    "(ties by id), null fields omitted; not paged. A stream that fails midway ends with a line "
    '`{"error": ..., "error_description": ...}`.'
)


def ndjson_response(lines) -> Response:
    """Stream ``lines``; a failure midway ends the stream with an error line so it cannot pass as complete."""

    def guarded():
        try:
            yield from lines
        except Exception:
            log.exception("Record stream failed midway")
            yield record_search.MIDWAY_ERROR_LINE

    return Response(guarded(), mimetype="application/x-ndjson")


@blp.route("/id/<uuid:script_id>/records")
class ScriptRecords(MethodView):
    @blp.arguments(RecordQueryArgsSchema, location="query")
    @blp.response(200, RecordSchema, content_type="application/x-ndjson", description=NDJSON_DOC)
    @blp.alt_response(404, description="Unknown script.")
    def get(self, filters, script_id: uuid.UUID):
        """Stream a script's records, optionally filtered by exact names and collection date."""
        return ndjson_response(record_search.stream_records(script_id, filters))

    @blp.arguments(RecordFormSchema, location="multipart")
    @blp.response(200, RecordSchema)
    @blp.alt_response(404, description="Unknown script.")
    @blp.alt_response(409, description="A record with the same identity exists; it is left untouched.")
    @blp.alt_response(413, description="The body is larger than the configured maximum.")
    def post(self, values, script_id: uuid.UUID):
        """Store one record, with an optional file, from a multipart form."""
        upload = values.pop("record_file", None)
        if upload is not None and not upload.filename:
            upload = None  # browsers send an empty part for an empty file input
        return records.create_record(script_id, values, upload)


# The part types recognised without looking at the file name (a gzip part needs a name saying its format).
BULK_PART_TYPES = {"file": {"contentType": "application/x-ndjson, text/csv, application/json"}}


@blp.route("/id/<uuid:script_id>/records/bulk")
class ScriptRecordsBulk(MethodView):
    @blp.arguments(BulkUploadFormSchema, location="multipart")
    @blp.doc(requestBody={"content": {"multipart/form-data": {"encoding": BULK_PART_TYPES}}})
    @blp.response(
        202,
        JobSchema,
        headers={
            "Location": {"description": "The job to poll", "schema": {"type": "string"}},
            "Idempotent-Replayed": {
                "description": "`true` when the Idempotency-Key found an earlier job (nothing new was queued)",
                "schema": {"type": "string", "enum": ["true"]},
            },
        },
    )
    @blp.alt_response(404, description="Unknown script.")
    @blp.alt_response(409, description="This Idempotency-Key was used with a different file.")
    @blp.alt_response(413, description="The upload is larger than the configured maximum.")
    @blp.alt_response(415, description="The file is neither NDJSON, CSV nor a JSON array.")
    def post(self, form, script_id: uuid.UUID):
        """Queue a bulk upload of records; answers 202 at once with the job to poll.

        An `Idempotency-Key` header makes a retried POST return the same job; the same key with another file
        is 409. Keys belong to the caller's account: another account's same key is another upload.
        """
        upload = form.pop("file")
        job, created = bulk.create_bulk_job(
            script_id,
            upload,
            form,
            idempotency_key=request.headers.get("Idempotency-Key") or None,
            requested_by=str(g.account_id),
        )
        headers = {"Location": url_for("jobs.JobById", job_id=job.id)}
        if not created:
            headers["Idempotent-Replayed"] = "true"
        return job, 202, headers


@blp.route("/id/<uuid:script_id>/records/filter")
class ScriptRecordsFilter(MethodView):
    @blp.arguments(RecordFilterArgsSchema, location="query")
    @blp.response(200, RecordSchema, content_type="application/x-ndjson", description=NDJSON_DOC)
    @blp.alt_response(404, description="Unknown script.")
    def get(self, filters, script_id: uuid.UUID):
        """Stream a script's records within a time range and name lists (OR within a list, AND across)."""
        return ndjson_response(record_search.stream_records(script_id, filters))


EXPORT_DOC = (
    "The records of `/records/filter` in the same order, as one table: the record fields as columns (`script_data` "
    "and `record_info` as JSON text), then one column `script_data.<key>` per top-level key found in the matching "
    "records' `script_data`, keys in sorted order. A key's column is an integer when every value is a whole number "
    "within 64 bits, a float when every value is a number, a boolean when every value is one, else text (objects "
    "and arrays as JSON; values of other types written as text, nothing dropped); an absent key or a JSON null is "
    "null. Control characters in a key are spelled out (`\\n`) and a key is cut to 100 characters in its column "
    "name; a name that would repeat another gets `~2`, `~3`. At most 2,000 key columns (else 422). `X-Total-Count` "
    "gives the number of records. A CSV export that fails midway ends with a line "
    '`{"error": ..., "error_description": ...}`; a Parquet export that fails midway is cut short (no footer, so '
    "no reader takes it for a whole file)."
)
EXPORT_TYPES = {
    "text/csv": {"schema": {"type": "string"}},
    "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
}


@blp.route("/id/<uuid:script_id>/records/export")
class ScriptRecordsExport(MethodView):
    @blp.arguments(RecordExportArgsSchema, location="query")
    @blp.response(
        200,
        description=EXPORT_DOC,
        headers={
            "X-Total-Count": {"description": "Records in the table", "schema": {"type": "integer"}},
            "Content-Disposition": {"description": "A file name for the table", "schema": {"type": "string"}},
        },
    )
    @blp.doc(responses={"200": {"content": EXPORT_TYPES}})
    @blp.alt_response(404, description="Unknown script.")
    def get(self, filters, script_id: uuid.UUID):
        """Export a script's records as a CSV or Parquet table, streamed."""
        table = record_export.export_records(script_id, filters, filters.pop("format"))
        headers = {
            "X-Total-Count": str(table.total),
            "Content-Disposition": f'attachment; filename="{table.filename}"',
        }
        return Response(table.chunks, content_type=table.content_type, headers=headers)


@blp.route("/records/id/<uuid:record_id>")
class RecordById(MethodView):
    @blp.response(200, RecordSchema)
    @blp.alt_response(404, description="Unknown record.")
    def get(self, record_id: uuid.UUID):
        """Get one record."""
        return records.get_record(record_id)

    @blp.arguments(RecordUpdateSchema, required=False)
    @blp.response(200, RecordSchema)
    @blp.alt_response(404, description="Unknown record.")
    def patch(self, values, record_id: uuid.UUID):
        """Replace a record's ``script_data`` and/or ``record_info``."""
        return records.update_record(record_id, values)

    @blp.response(200, RecordSchema)
    @blp.alt_response(404, description="Unknown record.")
    def delete(self, record_id: uuid.UUID):
        """Delete a record and its stored file; answers the deleted record."""
        return records.delete_record(record_id)


@blp.route("/records/id/<uuid:record_id>/download")
class RecordDownload(MethodView):
    @blp.response(307, description="Redirect to a short-lived URL serving the file under its original name.")
    @blp.alt_response(404, description="Unknown record, or a record without a file.")
    @blp.alt_response(409, description="The file is still pending (see Retry-After).")
    def get(self, record_id: uuid.UUID):
        """Download a record's file through a short-lived URL that needs no credentials."""
        url = records.download_url(record_id, current_app.config["DOWNLOAD_URL_EXPIRES"])
        return redirect(url, code=307)
