"""Experiments and their seasons: two of the names a record points at."""

import uuid

from sqlalchemy import select

from webapp.errors import ValidationError
from webapp.extensions import db
from webapp.models import Experiment, Season
from webapp.services.common import commit, delete, get_or_404, update_fields
from webapp.services.names import no_experiment


def list_experiments():
    """All experiments, oldest first."""
    return select(Experiment).order_by(Experiment.created_at, Experiment.id)


def create_experiment(values: dict) -> Experiment:
    """Create an experiment; its name must be new (409), it may not end before it starts (422)."""
    _check_dates(values, "experiment")
    experiment = Experiment(**values)
    db.session.add(experiment)
    commit(f"An experiment named {values['experiment_name']!r} exists already.")
    return experiment


def get_experiment(experiment_id: uuid.UUID) -> Experiment:
    """The experiment with that id (404)."""
    return get_or_404(Experiment, experiment_id, "experiment")


def update_experiment(experiment_id: uuid.UUID, values: dict) -> Experiment:
    """Change the given fields of an experiment."""
    experiment = get_experiment(experiment_id)
    _check_dates(values, "experiment", experiment)
    update_fields(experiment, values)
    commit(f"An experiment named {values.get('experiment_name')!r} exists already.")
    return experiment


def delete_experiment(experiment_id: uuid.UUID):
    """Delete an experiment with its seasons; 409 while records reference it."""
    return delete(get_experiment(experiment_id), "Records still reference this experiment or its seasons.")


def list_all_seasons():
    """Every season of every experiment, oldest first."""
    return select(Season).order_by(Season.created_at, Season.id)


def list_seasons(experiment_id: uuid.UUID):
    """The seasons of an experiment, oldest first."""
    get_experiment(experiment_id)
    return select(Season).where(Season.experiment_id == experiment_id).order_by(Season.created_at, Season.id)


def create_season(experiment_id: uuid.UUID, values: dict) -> Season:
    """Create a season in an experiment; its name must be new within the experiment (409), it may not end before it
    starts (422)."""
    experiment = get_experiment(experiment_id)
    _check_dates(values, "season")
    season = Season(experiment=experiment, **values)
    db.session.add(season)
    commit(f"The experiment already has a season named {values['season_name']!r}.")
    return season


def get_season(season_id: uuid.UUID) -> Season:
    """The season with that id (404)."""
    return get_or_404(Season, season_id, "season")


def update_season(season_id: uuid.UUID, values: dict) -> Season:
    """Change the given fields of a season."""
    season = get_season(season_id)
    _check_dates(values, "season", season)
    update_fields(season, values)
    commit(f"The experiment already has a season named {values.get('season_name')!r}.")
    return season


def delete_season(season_id: uuid.UUID):
    """Delete a season; 409 while records reference it."""
    return delete(get_season(season_id), "Records still reference this season.")


def _check_dates(values: dict, kind: str, current=None) -> None:
    """422 when an experiment's or season's start date (given, else ``current``'s) is after its end date."""
    start_name, end_name = f"{kind}_start_date", f"{kind}_end_date"
    start, end = (values[name] if name in values else getattr(current, name, None) for name in (start_name, end_name))
    if start is not None and end is not None and start > end:
        raise ValidationError({end_name: f"The {kind} ends ({end}) before it starts ({start})."})


def experiment_by_name(experiment_name: str, field: str = "experiment_name") -> Experiment:
    """The experiment of that name; 422 on ``field`` when there is none."""
    experiment = db.session.scalar(select(Experiment).where(Experiment.experiment_name == experiment_name))
    if experiment is None:
        raise ValidationError({field: no_experiment(experiment_name)})
    return experiment
