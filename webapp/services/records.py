"""Script records: creation (with an attached file), lookup, change, deletion and download."""

import logging
import uuid
from datetime import UTC

from flask import current_app
from sqlalchemy import Uuid, bindparam, exists, select
from sqlalchemy.exc import IntegrityError
from werkzeug.datastructures import FileStorage

from webapp import bulk_sql
from webapp.errors import ConflictError, NotFoundError, StorageError, ValidationError
from webapp.extensions import db, store
from webapp.models import (
    Dataset,
    Experiment,
    FileStatus,
    Job,
    JobKind,
    Record,
    Script,
    ScriptRun,
    Season,
    Site,
    dataset_experiments,
    script_datasets,
    script_experiments,
    utcnow,
)
from webapp.services import jobs
from webapp.services.common import commit, delete, get_or_404, new_id
from webapp.services.names import missing_names
from webapp.services.scripts import associate, find_or_create_dataset, get_script
from webapp.services.uploads import content_type_for, sanitise_file_name

log = logging.getLogger(__name__)


def default_dataset_name(script_name: str, collection_date) -> str:
    """``<script_name> Dataset <collection_date>``, the script name shortened to keep within 255 characters."""
    suffix = f" Dataset {collection_date.isoformat()}"
    return script_name[: 255 - len(suffix)] + suffix


def record_dataset_name(values: dict, script_name: str, collection_date) -> str:
    """A record's dataset: the one named in its form ``values``, else the script's default for the date."""
    return values.get("dataset_name") or default_dataset_name(script_name, collection_date)


def get_record(record_id: uuid.UUID) -> Record:
    """The record with that id (404)."""
    return get_or_404(Record, record_id, "record")


# Built once: constructing the statement cost more than running it, on every record POST.
PLACES_BY_NAME = (
    select(Experiment.id, Season.id, Site.id)
    .select_from(Experiment)
    .outerjoin(Season, (Season.experiment_id == Experiment.id) & (Season.season_name == bindparam("season")))
    .outerjoin(Site, Site.site_name == bindparam("site"))
    .where(Experiment.experiment_name == bindparam("experiment"))
)

# Every column of a new record, the ids looked up by name in the same statement. It selects nothing when a
# name is unknown, the script has another name than the one given, the run belongs to another script, or the
# script, dataset and experiment are not associated yet (the first record of each combination associates them).
_RESOLVED_BY_NAME = {
    "script_id": Script.id,
    "dataset_id": Dataset.id,
    "experiment_id": Experiment.id,
    "season_id": Season.id,
    "site_id": Site.id,
}
RECORD_BY_NAMES = (
    select(*(_RESOLVED_BY_NAME.get(c.key, bindparam(c.key, type_=c.type)) for c in Record.__table__.columns))
    .select_from(Script)
    .join(Experiment, Experiment.experiment_name == bindparam("experiment_name"))
    .join(Season, (Season.experiment_id == Experiment.id) & (Season.season_name == bindparam("season_name")))
    .join(Site, Site.site_name == bindparam("site_name"))
    .join(Dataset, Dataset.dataset_name == bindparam("dataset_name"))
    .where(Script.id == bindparam("script_id"), Script.script_name == bindparam("script_name"))
    .where(
        bindparam("script_run_id", type_=Uuid()).is_(None)
        | exists().where(ScriptRun.id == bindparam("script_run_id"), ScriptRun.script_id == Script.id)
    )
    .where(
        exists().where(script_datasets.c.script_id == Script.id, script_datasets.c.dataset_id == Dataset.id),
        exists().where(
            script_experiments.c.script_id == Script.id, script_experiments.c.experiment_id == Experiment.id
        ),
        exists().where(
            dataset_experiments.c.dataset_id == Dataset.id, dataset_experiments.c.experiment_id == Experiment.id
        ),
    )
)
RESOLVED_IDS = tuple(_RESOLVED_BY_NAME)  # what the insert returns
FILE_COLUMNS = ("record_file", "file_name", "file_size", "file_sha256", "file_content_type", "file_status")
PLACE_NAMES = ("experiment_name", "season_name", "site_name")


def record_values(values: dict) -> dict:
    """The columns of a record that need no lookup, from validated form ``values``."""
    timestamp = values["timestamp"]
    return {
        "timestamp": timestamp.astimezone(UTC),
        # The default collection date is the timestamp's date where it was taken, i.e. in its own offset.
        "collection_date": values.get("collection_date") or timestamp.date(),
        "script_run_id": values.get("script_run_id"),
        "script_data": values.get("script_data") or {},
        "record_info": values.get("record_info") or {},
    }


class RecordReferences:
    """Turns a record's names (experiment, season, site, dataset) and run into ids for one script.

    Both the single-record endpoint and bulk ingest go through here, so they follow one set of rules. It
    remembers what it resolved: a bulk upload looks up each distinct name once. Missing datasets are created
    in the caller's transaction.
    """

    def __init__(self, script: Script):
        self.script = script
        self._places: dict[tuple[str, str, str], tuple] = {}
        self._datasets: dict[str, uuid.UUID] = {}
        self._runs: dict[uuid.UUID, bool] = {}

    def row(self, values: dict) -> dict:
        """The record's column values from validated form ``values``; 422 naming every unknown reference."""
        names = (values["experiment_name"], values["season_name"], values["site_name"])
        if names not in self._places:
            self._places[names] = self._find_places(*names)
        experiment_id, season_id, site_id, missing = self._places[names]
        run_id = values.get("script_run_id")
        if run_id is not None and not self._is_own_run(run_id):
            missing = {**missing, "script_run_id": f"Script {self.script.id} has no run with the id {run_id}."}
        if missing:
            raise ValidationError(missing)

        row = record_values(values)
        dataset_name = record_dataset_name(values, self.script.script_name, row["collection_date"])
        if dataset_name not in self._datasets:
            dataset = find_or_create_dataset(dataset_name, collection_date=row["collection_date"], dataset_info={})
            self._datasets[dataset_name] = dataset.id
        return {
            **row,
            "script_id": self.script.id,
            "dataset_id": self._datasets[dataset_name],
            "experiment_id": experiment_id,
            "season_id": season_id,
            "site_id": site_id,
        }

    @staticmethod
    def _find_places(experiment_name: str, season_name: str, site_name: str) -> tuple:
        """(experiment id, season id, site id, messages for the missing ones), in one query when all exist."""
        found = db.session.execute(
            PLACES_BY_NAME, {"experiment": experiment_name, "season": season_name, "site": site_name}
        ).first()
        if found is not None and None not in found:
            return (*found, {})
        return None, None, None, missing_names(experiment_name, season_name, site_name)

    def _is_own_run(self, run_id: uuid.UUID) -> bool:
        if run_id not in self._runs:
            self._runs[run_id] = (
                db.session.scalar(
                    select(ScriptRun.id).where(ScriptRun.id == run_id, ScriptRun.script_id == self.script.id)
                )
                is not None
            )
        return self._runs[run_id]


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
    """Store one record and return it with its names; an attached file is staged and handed to a worker
    (``file_status`` pending). 409 for a duplicate; when any step fails nothing is left behind.
    """
    known = known_scripts()
    script_name = known.script_name(script_id)
    record = {"id": new_id(), **record_values(values), **dict.fromkeys(FILE_COLUMNS)}
    dataset_name = record_dataset_name(values, script_name, record["collection_date"])
    insert = bulk_sql.insert_new_from_select(db.engine.dialect.name, Record.__table__, RECORD_BY_NAMES, RESOLVED_IDS)
    job = None
    try:
        if upload is not None:
            job = stage_file(script_id, record, upload)
        record["created_at"] = utcnow()  # after the upload, which may take minutes
        # One statement stores the usual record; no duplicate check up front, the unique key decides. Without a
        # file it is all there is to write, so it commits by itself.
        params = {
            **record,
            **{name: values[name] for name in PLACE_NAMES},
            "script_id": script_id,
            "script_name": script_name,
            "dataset_name": dataset_name,
        }
        if job is None:
            with db.autocommit() as connection:
                ids = connection.execute(insert, params).first()
        else:
            ids = db.session.execute(insert, params).first()
        if ids is not None:
            record.update(ids._mapping)
        else:
            # Something is unknown, changed or a duplicate, or the dataset is new: go step by step, which
            # says what is wrong, or creates the dataset and the associations.
            script_name, dataset_name = _insert_step_by_step(known, script_id, values, record)
        db.session.commit()
    except Exception as exc:
        db.session.rollback()
        if job is not None:
            store.delete_quietly(job.params["staged_key"])
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


def stage_file(script_id: uuid.UUID, record: dict, upload: FileStorage) -> Job:
    """Put the upload where a worker will find it, note its name and type in ``record``, and queue the job
    that finishes it.

    The record's key is fixed now; the worker computes size and SHA-256 and moves the file to that key.
    """
    file_name = sanitise_file_name(upload.filename or "file")
    content_type = content_type_for(upload, file_name)
    staged_key = f"staging/{record['id']}"
    try:
        store.backend.put(staged_key, upload.stream, content_type)
    except Exception as exc:
        db.session.rollback()
        log.exception("Staging %s failed", staged_key)
        raise StorageError("The file could not be stored; nothing was saved. Try again later.") from exc
    record.update(
        record_file=f"records/{script_id}/{record['id']}/{file_name}",
        file_name=file_name,
        file_content_type=content_type,
        file_status=FileStatus.PENDING,
    )
    return jobs.new_job(
        JobKind.RECORD_FILE, script_id, {"record_id": str(record["id"]), "staged_key": staged_key}, total=1
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
