"""Script records: creation (with an attached file), lookup, change, deletion and download.

The rules a record follows, and the one statement that stores the usual record, are in ``record_rules``.
"""

import dataclasses
import logging
import uuid

from flask import current_app
from sqlalchemy.exc import IntegrityError
from werkzeug.datastructures import FileStorage

from webapp import bulk_sql
from webapp.errors import ConflictError, NotFoundError, StorageError
from webapp.extensions import db, store
from webapp.fields import new_id
from webapp.models import FileStatus, Job, JobKind, Record, Script, utcnow
from webapp.services import jobs
from webapp.services.common import commit, delete, get_or_404
from webapp.services.record_rules import (
    PLACE_NAMES,
    RECORD_BY_NAMES,
    RESOLVED_IDS,
    RecordReferences,
    duplicate_error,
    record_dataset_name,
    record_values,
)
from webapp.services.scripts import associate, get_script
from webapp.services.uploads import content_type_for, sanitise_file_name

log = logging.getLogger(__name__)

FILE_COLUMNS = ("record_file", "file_name", "file_size", "file_sha256", "file_content_type", "file_status")


def get_record(record_id: uuid.UUID) -> Record:
    """The record with that id (404)."""
    return get_or_404(Record, record_id, "record")


class KnownScripts:
    """Script names this process has seen, so most record POSTs need no script lookup of their own (the
    default dataset name is made from the script's name).

    Only hints: the insert checks the name itself, so a renamed or deleted script makes it store nothing and
    the record takes the step-by-step path, which looks the script up again.
    """

    LIMIT = 10_000  # past it they are forgotten and learnt again

    def __init__(self):
        self.names: dict[uuid.UUID, str] = {}

    def script_name(self, script_id: uuid.UUID) -> str:
        """The script's name as last seen, else looked up (404)."""
        name = self.names.get(script_id)
        return name if name is not None else self.remember(get_script(script_id)).script_name

    def remember(self, script: Script) -> Script:
        if len(self.names) >= self.LIMIT:
            self.names.clear()
        self.names[script.id] = script.script_name
        return script

    def forget(self, script_id: uuid.UUID) -> None:
        self.names.pop(script_id, None)


def known_scripts() -> KnownScripts:
    """This app's ``KnownScripts``."""
    known = current_app.extensions.get("known_scripts")
    if known is None:
        known = current_app.extensions["known_scripts"] = KnownScripts()
    return known


def create_record(script_id: uuid.UUID, values: dict, upload: FileStorage | None = None) -> dict:
    """Store one record and return it with its names; an attached file is stored and handed to a worker to
    verify (``file_status`` pending). 409 for a duplicate; when any step fails nothing is left behind.
    """
    known = known_scripts()
    script_name = known.script_name(script_id)
    record = {"id": new_id(), **record_values(values), **dict.fromkeys(FILE_COLUMNS)}
    dataset_name = record_dataset_name(values, script_name, record["collection_date"])
    insert = bulk_sql.insert_new_from_select(db.engine.dialect.name, Record.__table__, RECORD_BY_NAMES, RESOLVED_IDS)
    job = None
    try:
        if upload is not None:
            job = upload_file(script_id, record, upload)
        record["created_at"] = utcnow()  # after the upload, which may take minutes
        # One statement stores the usual record; no duplicate check up front, the unique key decides. Without a
        # file it is all there is to write: it runs by itself in autocommit (``db.rows``).
        params = {
            **record,
            **{name: values[name] for name in PLACE_NAMES},
            "script_id": script_id,
            "script_name": script_name,
            "dataset_name": dataset_name,
        }
        found = db.rows(insert, params) if job is None else db.session.execute(insert, params).all()
        ids = found[0] if found else None
        if ids is not None:
            record.update(zip(RESOLVED_IDS, ids, strict=True))
        else:
            # Something is unknown, changed or a duplicate, or the dataset is new: go step by step, which
            # says what is wrong, or creates the dataset and the associations.
            script_name, dataset_name = _insert_step_by_step(known, script_id, values, record)
        if job is not None or ids is None:
            db.session.commit()  # the session wrote: the job and the record, or the step-by-step path
    except Exception as exc:
        db.session.rollback()
        if job is not None:
            store.delete_quietly(record["record_file"])
        if isinstance(exc, IntegrityError):
            if not db.is_unique_violation(exc):
                get_script(script_id)  # 404 when a concurrent request deleted the script
                raise ConflictError("Something this record refers to changed meanwhile; try again.") from exc
            raise duplicate_error() from exc
        raise
    if job is not None:
        jobs.dispatch(job)
    return {
        **record,
        "script_name": script_name,
        "dataset_name": dataset_name,
        **{name: values[name] for name in PLACE_NAMES},
    }


def _insert_step_by_step(known: KnownScripts, script_id: uuid.UUID, values: dict, record: dict) -> tuple:
    """Resolve the record's references one by one (404, 422), associate them, then insert it (a duplicate
    fails the flush); fills ``record`` and returns the script's and dataset's names."""
    known.forget(script_id)  # a deleted script must not stay known when get_script answers 404
    script = known.remember(get_script(script_id))
    references = RecordReferences(script)
    record.update(references.row(values))
    associate(script_id, record["dataset_id"], record["experiment_id"])
    db.session.add(Record(**record))
    db.session.flush()
    return script.script_name, record_dataset_name(values, script.script_name, record["collection_date"])


def upload_file(script_id: uuid.UUID, record: dict, upload: FileStorage) -> Job:
    """Upload the file straight to the record's key, note its name and type in ``record``, and queue the job
    that finishes it.

    The store hashes nothing for us to trust blindly: the upload's size and SHA-256 (and the checksum the store
    is to report) go to the worker, which checks them against the stored object before the file is ``ready``.
    """
    file_name = sanitise_file_name(upload.filename or "file")
    content_type = content_type_for(upload, file_name)
    key = f"records/{script_id}/{record['id']}/{file_name}"
    try:
        sent = store.backend.put(key, upload.stream, content_type)
    except Exception as exc:
        db.session.rollback()
        log.exception("Storing %s failed", key)
        raise StorageError("The file could not be stored; nothing was saved. Try again later.") from exc
    record.update(record_file=key, file_name=file_name, file_content_type=content_type, file_status=FileStatus.PENDING)
    params = {"record_id": str(record["id"]), "key": key, "sent": dataclasses.asdict(sent)}
    return jobs.new_job(JobKind.RECORD_FILE, script_id, params, total=1)


def update_record(record_id: uuid.UUID, values: dict) -> Record:
    """Replace the record's ``script_data`` and/or ``record_info``."""
    record = get_record(record_id)
    for name, value in values.items():
        setattr(record, name, value)
    commit("The record could not be stored.")
    return record


def delete_record(record_id: uuid.UUID) -> Record:
    """Delete a record, then its stored file."""
    record = get_record(record_id)
    delete(record, "The record could not be deleted.")
    if record.record_file:
        store.delete_quietly(record.record_file)
    return record


def download_url(record_id: uuid.UUID, expires_in: int) -> str:
    """A short-lived URL of the record's file; 404 without a file, 409 while it is pending."""
    record = get_record(record_id)
    if not record.record_file:
        raise NotFoundError(f"Record {record_id} has no file.")
    if record.file_status == FileStatus.PENDING:
        raise ConflictError("The file is still being stored; try again shortly.", headers={"Retry-After": "5"})
    if record.file_status == FileStatus.FAILED:
        raise NotFoundError(f"The file of record {record_id} could not be stored.")
    return store.download_url(record.record_file, record.file_name, record.file_content_type, expires_in)
