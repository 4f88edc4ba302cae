"""The names a record points at (experiment, season, site): which of them exist.

Its own module because it spans experiments, seasons and sites, and both single records and bulk defaults ask it.
"""

from sqlalchemy import select

from webapp.extensions import db
from webapp.models import Experiment, Season, Site


def no_experiment(experiment_name: str) -> str:
    """The message for an experiment name that does not exist."""
    return f"No experiment is named {experiment_name!r}."


def missing_names(
    experiment_name: str | None = None, season_name: str | None = None, site_name: str | None = None
) -> dict[str, str]:
    """A message for each given name that does not exist (a season is looked for in the given experiment)."""
    missing = {}
    experiment_id = None
    if experiment_name is not None:
        experiment_id = db.session.scalar(select(Experiment.id).where(Experiment.experiment_name == experiment_name))
        if experiment_id is None:
            missing["experiment_name"] = no_experiment(experiment_name)
    if season_name is not None and experiment_id is not None:
        found = db.session.scalar(
            select(Season.id).where(Season.experiment_id == experiment_id, Season.season_name == season_name)
        )
        if found is None:
            missing["season_name"] = f"Experiment {experiment_name!r} has no season named {season_name!r}."
    if site_name is not None and db.session.scalar(select(Site.id).where(Site.site_name == site_name)) is None:
        missing["site_name"] = f"No site is named {site_name!r}."
    return missing
