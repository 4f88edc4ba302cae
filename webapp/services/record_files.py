"""The worker's half of a record file: checksum the staged upload and move it to the record's key."""

import logging
import uuid

from webapp.extensions import db, store
from webapp.models import FileStatus, Job, Record
from webapp.services.jobs import JobFailed, RetryLater, renew_lease
from webapp.storage import file_digest

log = logging.getLogger(__name__)


def store_record_file(job: Job, worker: str) -> None:
    """Compute size and SHA-256 of the staged file, move it to its final key and mark the record ready."""
    record = db.session.get(Record, uuid.UUID(job.params["record_id"]))
    staged = job.params["staged_key"]
    if record is None or record.file_status != FileStatus.PENDING:
        # The record was deleted, or an earlier run finished it: nothing is left to do but tidy up.
        store.delete_quietly(staged)
        renew_lease(job, worker, processed=1)
        db.session.commit()
        return
    backend = store.backend
    try:
        try:
            stream, moved = backend.open(staged), False
        except FileNotFoundError:
            # After a crash between the move and the commit, the file is already at its final key.
            stream, moved = backend.open(record.record_file), True
        with stream:
            stored = file_digest(stream)
        if not moved:
            backend.move(staged, record.record_file)
    except FileNotFoundError as exc:
        raise JobFailed("The uploaded file was lost before it could be stored; upload it again.") from exc
    except Exception as exc:
        log.warning("Object store failed for record %s: %r", record.id, exc)
        raise RetryLater(f"The object store failed while storing the file ({type(exc).__name__}).") from exc
    record.file_size = stored.size
    record.file_sha256 = stored.sha256
    record.file_status = FileStatus.READY
    renew_lease(job, worker, processed=1)
    db.session.commit()


def abandon(job: Job) -> list[str]:
    """When the job fails or is cancelled, the record says its file failed (it can be deleted and posted
    again); the staged upload is to go."""
    record = db.session.get(Record, uuid.UUID(job.params["record_id"]))
    if record is not None and record.file_status == FileStatus.PENDING:
        record.file_status = FileStatus.FAILED
    return [job.params["staged_key"]]
