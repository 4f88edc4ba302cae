"""Experiments and their seasons."""

import uuid

from flask import flash, redirect, render_template, url_for

from webapp.admin.blueprint import blp, requires
from webapp.admin.forms import flash_errors, form_page, load_form, paged
from webapp.common.pagination import fetch_page
from webapp.errors import APIError
from webapp.experiments.schemas import ExperimentSchema, SeasonSchema
from webapp.models import Role
from webapp.services import experiments


@blp.get("/experiments")
def experiment_list():
    """Experiments."""
    items, pager = paged(experiments.list_experiments())
    return render_template("admin/experiments.html", experiments=items, pager=pager)


@blp.route("/experiments/new", methods=["GET", "POST"])
@blp.route("/experiments/<uuid:experiment_id>/edit", methods=["GET", "POST"])
@requires(Role.WRITER)
def experiment_form(experiment_id: uuid.UUID | None = None):
    """Create or edit an experiment."""
    experiment = experiments.get_experiment(experiment_id) if experiment_id else None

    def save(values):
        saved = (
            experiments.update_experiment(experiment_id, values)
            if experiment
            else experiments.create_experiment(values)
        )
        return url_for("admin.experiment_detail", experiment_id=saved.id)

    schema = ExperimentSchema(partial=experiment is not None)
    return form_page("admin/experiment_form.html", schema, save, experiment=experiment)


@blp.get("/experiments/<uuid:experiment_id>")
def experiment_detail(experiment_id: uuid.UUID):
    """An experiment and its seasons."""
    experiment = experiments.get_experiment(experiment_id)
    seasons, _ = fetch_page(experiments.list_seasons(experiment_id), limit=1000, offset=0)
    return render_template("admin/experiment.html", experiment=experiment, seasons=seasons, form={}, errors={})


@blp.post("/experiments/<uuid:experiment_id>/delete")
@requires(Role.WRITER)
def experiment_delete(experiment_id: uuid.UUID):
    """Delete an experiment (refused while records use it)."""
    try:
        experiments.delete_experiment(experiment_id)
        flash("Deleted the experiment.")
    except APIError as exc:
        flash(exc.description, "error")
        return redirect(url_for("admin.experiment_detail", experiment_id=experiment_id))
    return redirect(url_for("admin.experiment_list"))


@blp.post("/experiments/<uuid:experiment_id>/seasons")
@requires(Role.WRITER)
def season_new(experiment_id: uuid.UUID):
    """Add a season to an experiment."""
    values, errors = load_form(SeasonSchema())
    if not errors:
        try:
            experiments.create_season(experiment_id, values)
            flash("Season added.")
        except APIError as exc:
            errors = {"season_name": [exc.description]}
    flash_errors(errors)
    return redirect(url_for("admin.experiment_detail", experiment_id=experiment_id))


@blp.route("/seasons/<uuid:season_id>/edit", methods=["GET", "POST"])
@requires(Role.WRITER)
def season_edit(season_id: uuid.UUID):
    """Edit a season."""
    season = experiments.get_season(season_id)

    def save(values):
        experiments.update_season(season_id, values)
        return url_for("admin.experiment_detail", experiment_id=season.experiment_id)

    return form_page("admin/season_form.html", SeasonSchema(partial=True), save, season=season)


@blp.post("/seasons/<uuid:season_id>/delete")
@requires(Role.WRITER)
def season_delete(season_id: uuid.UUID):
    """Delete a season (refused while records use it)."""
    season = experiments.get_season(season_id)
    try:
        experiments.delete_season(season_id)
        flash("Deleted the season.")
    except APIError as exc:
        flash(exc.description, "error")
    return redirect(url_for("admin.experiment_detail", experiment_id=season.experiment_id))
