"""Queued bulk uploads of records: NDJSON, CSV or a JSON array, ingested by a worker in chunks.

Each row follows the single-record rules: ``record_rules``' one validation (``RecordFields.load_record``) and its
step-by-step resolution (``RecordReferences``). A chunk's rows, the job's counts, its first errors and its
checkpoint commit in one transaction guarded by the job's lease, so a resumed job neither stores a row twice nor
counts or reports it twice. Reading, validating and encoding run on a second thread, ahead of the inserts.
"""

import contextlib
import gc
import operator
import os
import queue as queues
import sys
import threading
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from flask import current_app
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from werkzeug.datastructures import FileStorage

from webapp import bulk_sql, telemetry
from webapp.errors import ConflictError, StorageError, UnsupportedMediaTypeError, ValidationError
from webapp.extensions import db, store
from webapp.fields import new_id, new_raw_id, unstorable_text
from webapp.models import Job, JobKind, Record, Script, utcnow
from webapp.services import jobs
from webapp.services.bulk_files import UnreadableFile, read_rows
from webapp.services.jobs import JobFailed, RetryLater, renew_lease
from webapp.services.names import missing_names
from webapp.services.record_rules import PLACE_NAMES, RECORD_FIELDS, RecordNames, RecordReferences, record_values
from webapp.services.scripts import associate, get_script
from webapp.services.uploads import content_type_for, sanitise_file_name
from webapp.storage import file_digest

FORMAT_BY_CONTENT_TYPE = {
    "application/x-ndjson": "ndjson",
    "application/ndjson": "ndjson",
    "application/jsonl": "ndjson",
    "application/json-lines": "ndjson",
    "text/csv": "csv",
    "application/csv": "csv",
    "application/json": "json",
}
FORMAT_BY_EXTENSION = {".ndjson": "ndjson", ".jsonl": "ndjson", ".csv": "csv", ".json": "json"}
GZIP_TYPES = {"application/gzip", "application/x-gzip"}
# Keeps one reason short enough to report a hundred of them (a CSV header may name 100,000 unknown columns).
MAX_REASON_CHARS = 500
# How soon a thread waiting for the GIL gets it during a job (see _prompt_handoffs); Python's default is 5 ms.
PROMPT_SWITCH_SECONDS = 0.0001


def detect_format(file_name: str, content_type: str | None) -> str:
    """The upload's format from its part's content type, else its extension (a ``.gz`` after it says only that
    the file is compressed, which the worker sees from its first bytes anyway); 415 when neither says."""
    media_type = (content_type or "").split(";")[0].strip().lower()
    by_type = FORMAT_BY_CONTENT_TYPE.get(media_type)
    if by_type:
        return by_type
    stem, extension = os.path.splitext((file_name or "").lower())
    if extension == ".gz":
        extension = os.path.splitext(stem)[1]
    by_extension = FORMAT_BY_EXTENSION.get(extension)
    if by_extension:
        return by_extension
    raise UnsupportedMediaTypeError(
        "The file must be NDJSON (.ndjson, .jsonl, application/x-ndjson), CSV (.csv, text/csv) or a JSON array "
        "(.json, application/json), optionally gzip-compressed (.ndjson.gz, .csv.gz, .json.gz)."
        + (" A gzip part's name must say the format inside, e.g. rows.ndjson.gz." if media_type in GZIP_TYPES else "")
    )


def create_bulk_job(
    script_id: uuid.UUID,
    upload: FileStorage,
    defaults: dict,
    idempotency_key: str | None = None,
    requested_by: str = "",
) -> tuple[Job, bool]:
    """Stage the upload and queue its job; returns (job, created). A retried key returns the first job."""
    script = get_script(script_id)
    file_format = detect_format(upload.filename, upload.mimetype)
    stream = upload.stream
    fingerprint = file_digest(stream)
    stream.seek(0)
    if fingerprint.size == 0:
        raise ValidationError({"file": "The file is empty."})
    if idempotency_key is not None and (len(idempotency_key) > 255 or unstorable_text(idempotency_key)):
        raise ValidationError({"Idempotency-Key": "At most 255 characters of text."})
    if idempotency_key:
        existing = _job_for_key(requested_by, script.id, idempotency_key)
        if existing is not None:
            return _same_upload(existing, fingerprint.sha256), False
    _check_defaults(defaults)

    job_id = new_id()
    file_name = sanitise_file_name(upload.filename or "upload", field="file")
    staged_key = f"uploads/{job_id}/{file_name}"
    try:
        store.backend.put(staged_key, stream, content_type_for(upload, file_name))
    except Exception as exc:
        raise StorageError("The upload could not be stored; nothing was queued. Try again later.") from exc
    job = jobs.new_job(
        JobKind.BULK_RECORDS,
        script.id,
        {"key": staged_key, "format": file_format, "defaults": _as_text(defaults)},
        id=job_id,
        requested_by=requested_by,
        idempotency_key=idempotency_key,
        fingerprint=fingerprint.sha256,
    )
    try:
        db.session.commit()
    except IntegrityError:
        # Another request with the same key won the race.
        db.session.rollback()
        store.delete_quietly(staged_key)
        existing = _job_for_key(requested_by, script.id, idempotency_key)
        if existing is None:
            raise
        return _same_upload(existing, fingerprint.sha256), False
    jobs.dispatch(job)
    return job, True


def _job_for_key(requested_by: str, script_id: uuid.UUID, key: str) -> Job | None:
    return db.session.scalar(
        select(Job).where(Job.requested_by == requested_by, Job.script_id == script_id, Job.idempotency_key == key)
    )


def _same_upload(job: Job, sha256: str) -> Job:
    if job.fingerprint != sha256:
        raise ConflictError("This Idempotency-Key was used for a different file; use a new key for a new upload.")
    return job


def _check_defaults(defaults: dict) -> None:
    """Names given as defaults for every row must exist (422), like those of a single record."""
    missing = missing_names(**{name: defaults[name] for name in PLACE_NAMES if defaults.get(name)})
    if missing:
        raise ValidationError(missing)


def _as_text(defaults: dict) -> dict:
    """Defaults as the strings a CSV cell would hold, so rows and defaults go through the same fields."""
    return {
        name: value.isoformat() if hasattr(value, "isoformat") else value
        for name, value in defaults.items()
        if value is not None
    }


# --- the worker's half -------------------------------------------------------------------------------------


@dataclass
class Chunk:
    """Rows read and prepared together (``_Rows.prepared``), sorted by what is left to do with them: ``rows``
    ready to insert, ``unresolved`` (line, ``_Unresolved``) pairs, ``errors`` ({line, error} each, in line
    order); ``processed`` counts them all, ``total`` is set on the last chunk."""

    rows: list = field(default_factory=list)
    unresolved: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    processed: int = 0
    total: int | None = None

    def add(self, line: int, row, error: str | None) -> None:
        """Take one of ``_Rows.prepared``'s rows."""
        if error is not None:
            self.errors.append({"line": line, "error": error})
        elif isinstance(row, _Unresolved):
            self.unresolved.append((line, row))
        else:
            self.rows.append(row)
        self.processed += 1


def ingest(job: Job, worker: str) -> None:
    """Read the staged upload from the job's checkpoint on, storing valid rows and reporting invalid ones."""
    script = db.session.get(Script, job.script_id)
    if script is None:
        raise JobFailed("The script was deleted before its upload was ingested.")
    params = job.params
    rows_in = _Rows(job, worker, RecordReferences(script), bulk_sql.RowFormat(db.session, Record.__table__, COLUMNS))
    try:
        stream = store.backend.open(params["key"])
    except FileNotFoundError as exc:
        raise JobFailed("The uploaded file is no longer in the object store; upload it again.") from exc
    except Exception as exc:
        raise RetryLater(f"The staged upload could not be read ({type(exc).__name__}).") from exc
    config = current_app.config
    rows = read_rows(stream, params["format"], config["BULK_MAX_ROW_BYTES"], config["MAX_CONTENT_LENGTH"])
    validated = _validated(rows, params["defaults"], skip=job.checkpoint)
    prepared = rows_in.prepared(validated)
    try:
        with stream, _prompt_handoffs():
            try:
                for chunk in _read_ahead(_chunked(prepared, config["BULK_CHUNK_ROWS"], job.checkpoint)):
                    rows_in.store(chunk)
            except UnreadableFile as exc:
                raise JobFailed(str(exc)) from exc
    finally:
        # What the job left in reference cycles goes now, not at some later collection, so that the allocator's
        # arenas it pins are freed; then the free heap goes back to the system.
        gc.collect()
        bulk_sql.release_free_memory()
    store.delete_quietly(params["key"])


def abandon(job: Job) -> list[str]:
    """When the job fails or is cancelled, its staged upload is to go (the rows stored so far stay)."""
    return [job.params["key"]]


# A stored row's columns: first the ids its names resolve to (where the job's transaction is), then its own values,
# which the reader thread encodes (``_Rows.prepared``).
ID_COLUMNS = ("script_id", "dataset_id", "experiment_id", "season_id", "site_id")
OWN_COLUMNS = ("id", "created_at", "timestamp", "collection_date", "script_run_id", "script_data", "record_info")
COLUMNS = (*ID_COLUMNS, *OWN_COLUMNS)
_record_own_values = operator.itemgetter(*OWN_COLUMNS[2:])  # of record_values' dict


class _Unresolved(NamedTuple):
    """A valid row whose names the reader thread found no ids for (yet): its names and encoded own columns."""

    names: RecordNames
    own: bytes | tuple


class _Rows:
    """A job's rows on their way into the table: encoded on the reader thread, each chunk stored on the job's.

    Names are resolved on the job's thread (it may query, and create a dataset, in the chunk's transaction); the
    reader thread completes every row whose names were resolved before, so the job's thread has little left to
    do while the database works.
    """

    def __init__(self, job: Job, worker: str, references: RecordReferences, row_format: bulk_sql.RowFormat):
        self.job, self.worker, self.references, self.row_format = job, worker, references, row_format
        self._encode_ids = row_format.encoder(ID_COLUMNS)
        # By what a row names (RecordNames without the date), its encoded ids. Only the job's thread adds to it.
        self._resolved: dict[tuple, bytes | tuple] = {}
        self._new_pairs: set[tuple] = set()  # (dataset, experiment) pairs resolved, to associate
        self._associated: set[tuple] = set()

    def prepared(self, validated: Iterator[tuple]) -> Iterator[tuple]:
        """(line, row, None) for each valid row of ``validated``: the whole row encoded, or ``_Unresolved``;
        errors as they were. It needs no database, so it runs on the reader thread."""
        encode, names_of, resolved = self.row_format.encoder(OWN_COLUMNS), self.references.names, self._resolved
        now = utcnow()
        for count, (line, values, error) in enumerate(validated):
            if error is not None:
                yield line, None, error
                continue
            if count % 1000 == 0:
                now = utcnow()  # the rows' creation time, to within a thousand rows
            row = record_values(values)
            names = names_of(values, row["collection_date"])
            own = encode((new_raw_id(), now, *_record_own_values(row)))
            ids = resolved.get(names[:3])
            yield line, (_Unresolved(names, own) if ids is None else ids + own), None

    def store(self, chunk: Chunk) -> None:
        """Resolve what the chunk's rows name, insert them, count them and checkpoint the job: one transaction."""
        job, rows, errors, processed = self.job, chunk.rows, chunk.errors, chunk.processed
        for line, row in chunk.unresolved:
            try:
                rows.append(self._ids(row.names) + row.own)
            except ValidationError as exc:
                errors.append({"line": line, "error": exc.description})
        if chunk.unresolved and errors:
            errors.sort(key=operator.itemgetter("line"))
        try:
            inserted = bulk_sql.copy_new_rows(db.session, self.row_format, rows)
            for pair in self._new_pairs - self._associated:
                associate(job.script_id, *pair)
                self._associated.add(pair)
        except IntegrityError as exc:
            # Only a reference can fail here (taken keys are skipped): something was deleted while the job ran.
            db.session.rollback()
            if db.session.get(Script, job.script_id) is None:
                raise JobFailed("The script was deleted while its upload was being ingested.") from exc
            raise RetryLater("An experiment, season, site or dataset the rows name was deleted meanwhile.") from exc
        valid = processed - len(errors)
        renew_lease(
            job,
            self.worker,
            processed=processed,
            inserted=inserted,
            duplicates=valid - inserted,
            failed=len(errors),
            errors=errors,
            checkpoint=processed,
            total=chunk.total,
        )
        db.session.commit()
        telemetry.count_rows(inserted=inserted, duplicate=valid - inserted, failed=len(errors))

    def _ids(self, names: RecordNames) -> bytes | tuple:
        """The encoded id columns of a row naming ``names``, resolved once; 422 naming every unknown reference."""
        key = names[:3]
        encoded = self._resolved.get(key)
        if encoded is None:
            ids = self.references.ids(names)
            self._new_pairs.add((ids["dataset_id"], ids["experiment_id"]))
            encoded = self._resolved[key] = self._encode_ids([ids[name] for name in ID_COLUMNS])
        return encoded


def _validated(rows: Iterable[tuple], defaults: dict, skip: int) -> Iterator[tuple]:
    """(line, values, None) for a valid row, (line, None, reason) for an invalid one; the first ``skip``
    rows (already handled by an earlier run) are passed over unvalidated."""
    # The form's defaults are loaded once, not with every row that lacks them.
    defaults, default_errors = RECORD_FIELDS.load_defaults(defaults)
    if default_errors:
        raise JobFailed(f"The upload's defaults are invalid: {_describe(default_errors)}")
    for index, (line, raw, error) in enumerate(rows):
        if index < skip:
            continue
        if error is not None:
            yield line, None, error
            continue
        values, errors = RECORD_FIELDS.load_record(raw, defaults)
        if errors:
            yield line, None, _describe(errors)
        else:
            yield line, values, None


def _describe(field_errors: dict) -> str:
    reason = "; ".join(f"{name}: {' '.join(map(str, messages))}" for name, messages in field_errors.items())
    return reason if len(reason) <= MAX_REASON_CHARS else reason[: MAX_REASON_CHARS - 1] + "…"


def _chunked(items: Iterator[tuple], size: int, already: int) -> Iterator[Chunk]:
    """Chunks of ``size`` rows; when the file turns out unreadable, the rows read before it still come first."""
    chunk, seen = Chunk(), already
    try:
        for item in items:
            chunk.add(*item)
            seen += 1
            if chunk.processed == size:
                yield chunk
                chunk = Chunk()
    except UnreadableFile:
        if chunk.processed:
            yield chunk
        raise
    chunk.total = seen
    yield chunk


@contextlib.contextmanager
def _prompt_handoffs() -> Iterator[None]:
    """While it runs, a thread waiting for the GIL gets it sooner (``sys.setswitchinterval``)."""
    # The job's thread waits for PostgreSQL many times per chunk (each part of the COPY it sends, then the COPY's
    # end, each statement); each time it wakes, it waits for the busy reader thread to hand over the GIL, by
    # default after up to 5 ms. With 0.5 ms, a 400k-row upload (bench.bulk_ingest) took 34 s instead of 42; with
    # 0.1 ms, 12.9 s instead of 17.9 (a faster machine): the chunk's first statement (BEGIN, SAVEPOINT), a few ms
    # at the server, had taken 45-80 ms on the job's thread for every second chunk at 0.5 ms, under 1 ms at 0.1.
    before = sys.getswitchinterval()
    sys.setswitchinterval(PROMPT_SWITCH_SECONDS)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def _read_ahead(chunks: Iterator[Chunk]) -> Iterator[Chunk]:
    """Produce chunks on a second thread so reading and validating overlap the inserts: the next chunk is read
    while one is stored, and no further."""
    # Not further: a chunk's rows are megabytes of small objects, and Python keeps the memory of as many as were
    # ever alive at once (its allocator's arenas stay pinned by the few objects that outlive a job).
    handoff: queues.Queue = queues.Queue(maxsize=1)
    taken = threading.Semaphore(0)
    stop = threading.Event()
    done = object()

    def produce():
        try:
            for chunk in chunks:
                handoff.put(chunk)  # the queue is empty: the chunk before was taken
                while not taken.acquire(timeout=0.5):
                    if stop.is_set():
                        return
            handoff.put(done)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            handoff.put(exc)

    thread = threading.Thread(target=produce, name="scriptorium-bulk-reader", daemon=True)
    thread.start()
    try:
        while (item := handoff.get()) is not done:
            taken.release()
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
