"""Scripts, their runs, their datasets and the associations between scripts, datasets and experiments."""

import uuid

from sqlalchemy import bindparam, select

from webapp import bulk_sql
from webapp.errors import ConflictError
from webapp.extensions import db, store
from webapp.fields import new_id
from webapp.models import (
    Dataset,
    Experiment,
    Record,
    Script,
    ScriptRun,
    dataset_experiments,
    script_datasets,
    script_experiments,
)
from webapp.services.common import commit, delete, get_or_404, not_found, update_fields
from webapp.services.experiments import experiment_by_name


def get_script(script_id: uuid.UUID) -> Script:
    """The script with that id (404)."""
    return get_or_404(Script, script_id, "script")


# Built once: every GET of a script runs it.
SCRIPT_BY_ID = select(Script.__table__).where(Script.id == bindparam("script_id"))


def unknown_script(script_id: uuid.UUID) -> Exception:
    """The 404 for a script id that names no script."""
    return not_found("script", script_id)


def script_by_id(script_id: uuid.UUID):
    """The statement reading the columns of the script with that id, and its parameters."""
    return SCRIPT_BY_ID, {"script_id": script_id}


# Every script, oldest first: the list of them all is this very statement.
ALL_SCRIPTS = select(Script).order_by(Script.created_at, Script.id)


def search_scripts(filters: dict):
    """Scripts matching every given filter (exact names, info containment, associated experiment)."""
    stmt = ALL_SCRIPTS
    for name in ("script_name", "script_url", "script_extension"):
        if filters.get(name) is not None:
            stmt = stmt.where(getattr(Script, name) == filters[name])
    if filters.get("script_info"):
        stmt = stmt.where(db.contains_json(Script.script_info, filters["script_info"]))
    if filters.get("experiment_name") is not None:
        stmt = stmt.where(Script.experiments.any(Experiment.experiment_name == filters["experiment_name"]))
    return stmt


def create_script(values: dict) -> Script:
    """Create a script, associated with ``experiment_name`` when given (which must exist: 422)."""
    experiment_name = values.pop("experiment_name", None)
    script = Script(**values)
    if experiment_name is not None:
        script.experiments.append(experiment_by_name(experiment_name))
    db.session.add(script)
    commit("The script could not be stored.")
    return script


def update_script(script_id: uuid.UUID, values: dict) -> Script:
    """Change the given fields of a script; ``experiment_name`` adds an association (which must exist: 422)."""
    script = get_script(script_id)
    experiment_name = values.pop("experiment_name", None)
    experiment = experiment_by_name(experiment_name) if experiment_name is not None else None
    update_fields(script, values)
    if experiment is not None:
        associate(script.id, None, experiment.id)
    commit("The script could not be stored.")
    return script


def delete_script(script_id: uuid.UUID) -> Script:
    """Delete a script with its runs and records, then the records' stored files."""
    script = get_script(script_id)
    keys = db.session.scalars(
        select(Record.record_file).where(Record.script_id == script_id, Record.record_file.is_not(None))
    ).all()
    delete(script, "The script could not be deleted.")
    # Files go after the commit: a failed commit must not lose files, and an orphaned file is harmless.
    store.delete_quietly(*keys)
    return script


def list_script_experiments(script_id: uuid.UUID):
    """Experiments associated with a script, oldest first."""
    get_script(script_id)
    return (
        select(Experiment)
        .join(script_experiments, script_experiments.c.experiment_id == Experiment.id)
        .where(script_experiments.c.script_id == script_id)
        .order_by(Experiment.created_at, Experiment.id)
    )


def list_runs(script_id: uuid.UUID):
    """Runs of a script, oldest first."""
    get_script(script_id)
    return select(ScriptRun).where(ScriptRun.script_id == script_id).order_by(ScriptRun.created_at, ScriptRun.id)


def create_run(script_id: uuid.UUID, values: dict) -> ScriptRun:
    """Start a new run of a script."""
    run = ScriptRun(script=get_script(script_id), **values)
    db.session.add(run)
    commit("The run could not be stored.")
    return run


def list_script_datasets(script_id: uuid.UUID):
    """Datasets associated with a script, oldest first."""
    get_script(script_id)
    return (
        select(Dataset)
        .join(script_datasets, script_datasets.c.dataset_id == Dataset.id)
        .where(script_datasets.c.script_id == script_id)
        .order_by(Dataset.created_at, Dataset.id)
    )


def add_script_dataset(script_id: uuid.UUID, values: dict) -> Dataset:
    """Create the named dataset or reuse the existing one, and associate it with the script."""
    script = get_script(script_id)
    experiment = None
    if values.get("experiment_name") is not None:
        experiment = experiment_by_name(values["experiment_name"])
    dataset = find_or_create_dataset(
        values["dataset_name"],
        dataset_info=values.get("dataset_info") or {},
        collection_date=values.get("collection_date"),
    )
    associate(script.id, dataset.id, experiment.id if experiment else None)
    commit("The dataset could not be stored.")
    return dataset


def find_or_create_dataset(name: str, **values) -> Dataset:
    """The dataset of that name, created (inside the caller's transaction) when missing."""
    dataset = db.session.scalar(select(Dataset).where(Dataset.dataset_name == name))
    if dataset is not None:
        return dataset
    # A concurrent request may create the same name: insert in a savepoint and read back on conflict.
    bulk_sql.insert_new_rows(db.session, Dataset.__table__, [{"id": new_id(), "dataset_name": name, **values}])
    dataset = db.session.scalar(select(Dataset).where(Dataset.dataset_name == name))
    if dataset is None:  # pragma: no cover - the row was deleted between the two statements
        raise ConflictError(f"Dataset {name!r} changed while it was being created; try again.")
    return dataset


def associate(script_id: uuid.UUID, dataset_id: uuid.UUID | None, experiment_id: uuid.UUID | None) -> None:
    """Record the associations script–dataset, script–experiment and dataset–experiment, if missing."""
    rows = []
    if dataset_id is not None:
        rows.append((script_datasets, {"script_id": script_id, "dataset_id": dataset_id}))
    if experiment_id is not None:
        rows.append((script_experiments, {"script_id": script_id, "experiment_id": experiment_id}))
    if dataset_id is not None and experiment_id is not None:
        rows.append((dataset_experiments, {"dataset_id": dataset_id, "experiment_id": experiment_id}))
    if rows:
        bulk_sql.insert_new_row_per_table(db.session, rows)
