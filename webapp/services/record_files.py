"""The worker's half of a record file: check that the store holds what the web sent, then mark the record ready.

The web uploads the file straight to the record's key, hashing it on the way (``Backend.put``), and the job
carries what it sent. The worker asks the store to confirm it (``Backend.verify``): S3 reports the SHA-256
checksum it computed from the bytes it received, so nothing is read back; the local folder, which keeps no
checksum, is hashed again from disk.
"""

import logging
import uuid

from webapp.extensions import db, store
from webapp.models import FileStatus, Job, Record
from webapp.services.jobs import JobFailed, RetryLater, renew_lease
from webapp.storage import StoredFile, file_digest

log = logging.getLogger(__name__)


def store_record_file(job: Job, worker: str) -> None:
    """Verify the uploaded file against the size and SHA-256 the web sent and mark the record ready; a store
    holding anything else fails the file."""
    record = db.session.get(Record, uuid.UUID(job.params["record_id"]))
    if record is None or record.file_status != FileStatus.PENDING:
        # The record was deleted, or an earlier run finished it: nothing is left to do but tidy up.
        if record is None:
            store.delete_quietly(*uploaded_keys(job))
        renew_lease(job, worker, processed=1)
        db.session.commit()
        return
    try:
        if "sent" in job.params:
            sent = StoredFile(**job.params["sent"])
            verified = store.backend.verify(job.params["key"], sent)
        else:
            sent, verified = _move_staged_file(job.params["staged_key"], record.record_file), True
    except FileNotFoundError as exc:
        raise JobFailed("The uploaded file was lost before it could be stored; upload it again.") from exc
    except Exception as exc:
        log.warning("Object store failed for record %s: %r", record.id, exc)
        raise RetryLater(f"The object store failed while storing the file ({type(exc).__name__}).") from exc
    if not verified:
        raise JobFailed("The stored file is not the one uploaded (its size or SHA-256 differ); upload it again.")
    record.file_size = sent.size
    record.file_sha256 = sent.sha256
    record.file_status = FileStatus.READY
    renew_lease(job, worker, processed=1)
    db.session.commit()


def _move_staged_file(staged: str, key: str) -> StoredFile:
    """A job queued before uploads went straight to the record's key: hash the staged file while reading it back,
    then move it to ``key``."""
    backend = store.backend
    try:
        stream, moved = backend.open(staged), False
    except FileNotFoundError:
        # After a crash between the move and the commit, the file is already at its final key.
        stream, moved = backend.open(key), True
    with stream:
        stored = file_digest(stream)
    if not moved:
        backend.move(staged, key)
    return stored


def uploaded_keys(job: Job) -> list[str]:
    """Where the job's upload is: the record's key, or (for a job queued before that) its staging key."""
    return [job.params["key"] if "sent" in job.params else job.params["staged_key"]]


def abandon(job: Job) -> list[str]:
    """When the job fails or is cancelled, the record says its file failed (it can be deleted and posted
    again); the upload, unverified or wrong, is to go."""
    record = db.session.get(Record, uuid.UUID(job.params["record_id"]))
    if record is not None and record.file_status == FileStatus.PENDING:
        record.file_status = FileStatus.FAILED
    return uploaded_keys(job)
