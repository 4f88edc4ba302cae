"""Script records: creation (with an attached file), lookup, change, deletion, search and download."""

import logging
import mimetypes
import os
import unicodedata
import uuid
from collections.abc import Iterator
from datetime import UTC

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from werkzeug.datastructures import FileStorage

from webapp.errors import ConflictError, NotFoundError, StorageError, ValidationError
from webapp.extensions import db, store
from webapp.models import Dataset, Experiment, FileStatus, Record, Script, ScriptRun, Season, Site
from webapp.services.common import commit, get_or_404, new_id
from webapp.services.reference import resolve_names
from webapp.services.scripts import associate, find_or_create_dataset, get_script

log = logging.getLogger(__name__)

MAX_FILE_NAME = 200


def sanitise_file_name(raw: str) -> str:
    """The last path component of ``raw`` without control characters or leading dots; 422 if nothing is left."""
    name = unicodedata.normalize("NFC", raw).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip().lstrip(".").strip()
    if not name:
        raise ValidationError({"record_file": f"The file name {raw!r} has no usable characters."})
    stem, ext = os.path.splitext(name)
    if len(name) > MAX_FILE_NAME:
        name = stem[: MAX_FILE_NAME - len(ext[:20])] + ext[:20]
    return name


def get_record(record_id: uuid.UUID) -> Record:
    """The record with that id (404)."""
    return get_or_404(Record, record_id, "record")


def create_record(script_id: uuid.UUID, values: dict, upload: FileStorage | None = None) -> Record:
    """Store one record and its file; 409 for a duplicate, and nothing is left behind when any step fails."""
    script = get_script(script_id)
    experiment, season, site = resolve_names(values["experiment_name"], values["season_name"], values["site_name"])
    run_id = values.get("script_run_id")
    if (
        run_id is not None
        and db.session.scalar(select(ScriptRun.id).where(ScriptRun.id == run_id, ScriptRun.script_id == script.id))
        is None
    ):
        raise ValidationError({"script_run_id": f"Script {script.id} has no run with the id {run_id}."})

    timestamp = values["timestamp"]
    # The default collection date is the timestamp's date where it was taken, i.e. in its own offset.
    collection_date = values.get("collection_date") or timestamp.date()
    dataset_name = values.get("dataset_name") or f"{script.script_name} Dataset {collection_date.isoformat()}"
    dataset = find_or_create_dataset(dataset_name, collection_date=collection_date, dataset_info={})
    record = Record(
        id=new_id(),
        timestamp=timestamp.astimezone(UTC),
        collection_date=collection_date,
        script=script,
        script_run_id=run_id,
        dataset=dataset,
        experiment=experiment,
        season=season,
        site=site,
        script_data=values.get("script_data") or {},
        record_info=values.get("record_info") or {},
    )
    if find_duplicate(record) is not None:
        db.session.rollback()
        raise duplicate_error()
    associate(script.id, dataset.id, experiment.id)
    db.session.add(record)
    if upload is not None:
        attach_file(record, upload)
    try:
        db.session.commit()
    except Exception as exc:
        db.session.rollback()
        if record.record_file:
            store.delete_quietly(record.record_file)
        if isinstance(exc, IntegrityError):
            raise duplicate_error() from exc
        raise
    return record


def attach_file(record: Record, upload: FileStorage) -> None:
    """Write the upload to a key unique to ``record`` and note its name, size, checksum and type."""
    file_name = sanitise_file_name(upload.filename or "file")
    content_type = (
        upload.mimetype
        if upload.mimetype and upload.mimetype != "application/octet-stream"
        else mimetypes.guess_type(file_name)[0] or "application/octet-stream"
    )
    key = f"records/{record.script.id}/{record.id}/{file_name}"
    try:
        stored = store.save(key, upload.stream, content_type)
    except Exception as exc:
        db.session.rollback()
        log.exception("Storing %s failed", key)
        raise StorageError("The file could not be stored; nothing was saved. Try again later.") from exc
    record.record_file = key
    record.file_name = file_name
    record.file_size = stored.size
    record.file_sha256 = stored.sha256
    record.file_content_type = content_type
    record.file_status = FileStatus.READY


def find_duplicate(record: Record) -> uuid.UUID | None:
    """The id of a stored record with the same identity as ``record``, if any."""
    return db.session.scalar(
        select(Record.id).where(
            Record.script_id == record.script.id,
            Record.dataset_id == record.dataset.id,
            Record.experiment_id == record.experiment.id,
            Record.season_id == record.season.id,
            Record.site_id == record.site.id,
            Record.timestamp == record.timestamp,
        )
    )


def duplicate_error() -> ConflictError:
    return ConflictError(
        "A record with the same script, dataset, experiment, season, site and timestamp exists already; "
        "the stored record and its file are unchanged."
    )


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
    key = record.record_file
    db.session.delete(record)
    commit("The record could not be deleted.")
    if key:
        store.delete_quietly(key)
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


def record_rows(script_id: uuid.UUID, filters: dict):
    """The flat columns of a script's records matching ``filters``, oldest timestamp first (ties by id)."""
    get_script(script_id)
    stmt = (
        select(
            Record.id,
            Record.timestamp,
            Record.collection_date,
            Record.script_id,
            Script.script_name,
            Record.script_run_id,
            Record.dataset_id,
            Dataset.dataset_name,
            Record.experiment_id,
            Experiment.experiment_name,
            Record.season_id,
            Season.season_name,
            Record.site_id,
            Site.site_name,
            Record.record_file,
            Record.file_name,
            Record.file_size,
            Record.file_sha256,
            Record.file_content_type,
            Record.file_status,
            Record.script_data,
            Record.record_info,
        )
        .join(Script, Script.id == Record.script_id)
        .join(Dataset, Dataset.id == Record.dataset_id)
        .join(Experiment, Experiment.id == Record.experiment_id)
        .join(Season, Season.id == Record.season_id)
        .join(Site, Site.id == Record.site_id)
        .where(Record.script_id == script_id)
        .order_by(Record.timestamp, Record.id)
    )
    equal = {
        "experiment_name": Experiment.experiment_name,
        "season_name": Season.season_name,
        "site_name": Site.site_name,
        "dataset_name": Dataset.dataset_name,
        "collection_date": Record.collection_date,
    }
    within = {
        "experiment_names": Experiment.experiment_name,
        "season_names": Season.season_name,
        "site_names": Site.site_name,
        "dataset_names": Dataset.dataset_name,
    }
    for name, column in equal.items():
        if filters.get(name) is not None:
            stmt = stmt.where(column == filters[name])
    for name, column in within.items():
        if filters.get(name):
            stmt = stmt.where(column.in_(filters[name]))
    if filters.get("start_timestamp") is not None:
        stmt = stmt.where(Record.timestamp >= filters["start_timestamp"])
    if filters.get("end_timestamp") is not None:
        stmt = stmt.where(Record.timestamp <= filters["end_timestamp"])
    return stmt


def stream_records(script_id: uuid.UUID, filters: dict) -> Iterator[bytes]:
    """NDJSON lines of the matching records (404 for an unknown script is raised before streaming)."""
    stmt = record_rows(script_id, filters)
    return db.stream_json_lines(stmt)
