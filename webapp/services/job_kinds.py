"""Every kind of job and its handler: what the factory gives the job runner (``services/jobs.py``)."""

from webapp.models import JobKind
from webapp.services import bulk, record_files
from webapp.services.jobs import JobHandler

HANDLERS = {
    JobKind.BULK_RECORDS: JobHandler(run=bulk.ingest, abandon=bulk.abandon),
    JobKind.RECORD_FILE: JobHandler(run=record_files.store_record_file, abandon=record_files.abandon),
}
