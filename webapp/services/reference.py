"""Experiments, seasons and sites: the reference data records point at."""

import uuid

from sqlalchemy import select

from webapp.errors import ValidationError
from webapp.extensions import db
from webapp.models import Experiment, Season, Site
from webapp.services.common import commit, delete, get_or_404, update_fields


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


def list_sites():
    """All sites, oldest first."""
    return select(Site).order_by(Site.created_at, Site.id)


def create_site(values: dict) -> Site:
    """Create a site; its name must be new (409)."""
    site = Site(**values)
    db.session.add(site)
    commit(f"A site named {values['site_name']!r} exists already.")
    return site


def get_site(site_id: uuid.UUID) -> Site:
    """The site with that id (404)."""
    return get_or_404(Site, site_id, "site")


def update_site(site_id: uuid.UUID, values: dict) -> Site:
    """Change the given fields of a site."""
    site = get_site(site_id)
    update_fields(site, values)
    commit(f"A site named {values.get('site_name')!r} exists already.")
    return site


def delete_site(site_id: uuid.UUID):
    """Delete a site; 409 while records reference it."""
    return delete(get_site(site_id), "Records still reference this site.")


def experiment_by_name(experiment_name: str, field: str = "experiment_name") -> Experiment:
    """The experiment of that name; 422 on ``field`` when there is none."""
    experiment = db.session.scalar(select(Experiment).where(Experiment.experiment_name == experiment_name))
    if experiment is None:
        raise ValidationError({field: f"No experiment is named {experiment_name!r}."})
    return experiment


def missing_names(
    experiment_name: str | None = None, season_name: str | None = None, site_name: str | None = None
) -> dict[str, str]:
    """A message for each given name that does not exist (a season is looked for in the given experiment)."""
    missing = {}
    experiment_id = None
    if experiment_name is not None:
        experiment_id = db.session.scalar(select(Experiment.id).where(Experiment.experiment_name == experiment_name))
        if experiment_id is None:
            missing["experiment_name"] = f"No experiment is named {experiment_name!r}."
    if season_name is not None and experiment_id is not None:
        found = db.session.scalar(
            select(Season.id).where(Season.experiment_id == experiment_id, Season.season_name == season_name)
        )
        if found is None:
            missing["season_name"] = f"Experiment {experiment_name!r} has no season named {season_name!r}."
    if site_name is not None and db.session.scalar(select(Site.id).where(Site.site_name == site_name)) is None:
        missing["site_name"] = f"No site is named {site_name!r}."
    return missing
