"""Experiments and their seasons."""

import uuid

from flask.views import MethodView

from webapp.common.api import Blueprint
from webapp.experiments.schemas import (
    ExperimentSchema,
    ExperimentUpdateSchema,
    SeasonSchema,
    SeasonUpdateSchema,
)
from webapp.services import experiments

blp = Blueprint("experiments", __name__, url_prefix="/api", description="Experiments and their seasons.")


@blp.route("/experiments")
class Experiments(MethodView):
    @blp.response(200, ExperimentSchema(many=True))
    @blp.paginate()
    def get(self):
        """List experiments, oldest first."""
        return experiments.list_experiments()

    @blp.arguments(ExperimentSchema)
    @blp.response(200, ExperimentSchema)
    @blp.alt_response(409, description="An experiment of that name exists.")
    def post(self, values):
        """Create an experiment."""
        return experiments.create_experiment(values)


@blp.route("/experiments/all")
class AllExperiments(MethodView):
    @blp.response(200, ExperimentSchema(many=True))
    @blp.paginate()
    def get(self):
        """List every experiment, oldest first (the same list as ``/experiments``, as existing clients call it)."""
        return experiments.list_experiments()


@blp.route("/seasons/all")
class AllSeasons(MethodView):
    @blp.response(200, SeasonSchema(many=True))
    @blp.paginate()
    def get(self):
        """List every season of every experiment, oldest first."""
        return experiments.list_all_seasons()


@blp.route("/experiments/id/<uuid:experiment_id>")
class ExperimentById(MethodView):
    @blp.response(200, ExperimentSchema)
    @blp.alt_response(404, description="Unknown experiment.")
    def get(self, experiment_id: uuid.UUID):
        """Get one experiment."""
        return experiments.get_experiment(experiment_id)

    @blp.arguments(ExperimentUpdateSchema(partial=True), required=False)
    @blp.response(200, ExperimentSchema)
    @blp.alt_response(404, description="Unknown experiment.")
    @blp.alt_response(409, description="Another experiment has that name.")
    def patch(self, values, experiment_id: uuid.UUID):
        """Change the given fields of an experiment."""
        return experiments.update_experiment(experiment_id, values)

    @blp.response(200, ExperimentSchema)
    @blp.alt_response(404, description="Unknown experiment.")
    @blp.alt_response(409, description="Records still reference the experiment or its seasons.")
    def delete(self, experiment_id: uuid.UUID):
        """Delete an experiment and its seasons; answers the deleted experiment."""
        return experiments.delete_experiment(experiment_id)


@blp.route("/experiments/id/<uuid:experiment_id>/seasons")
class ExperimentSeasons(MethodView):
    @blp.response(200, SeasonSchema(many=True))
    @blp.alt_response(404, description="Unknown experiment.")
    @blp.paginate()
    def get(self, experiment_id: uuid.UUID):
        """List the seasons of an experiment, oldest first."""
        return experiments.list_seasons(experiment_id)

    @blp.arguments(SeasonSchema)
    @blp.response(200, SeasonSchema)
    @blp.alt_response(404, description="Unknown experiment.")
    @blp.alt_response(409, description="The experiment has a season of that name.")
    def post(self, values, experiment_id: uuid.UUID):
        """Create a season in an experiment."""
        return experiments.create_season(experiment_id, values)


@blp.route("/seasons/id/<uuid:season_id>")
class SeasonById(MethodView):
    @blp.response(200, SeasonSchema)
    @blp.alt_response(404, description="Unknown season.")
    def get(self, season_id: uuid.UUID):
        """Get one season."""
        return experiments.get_season(season_id)

    @blp.arguments(SeasonUpdateSchema(partial=True), required=False)
    @blp.response(200, SeasonSchema)
    @blp.alt_response(404, description="Unknown season.")
    @blp.alt_response(409, description="The experiment has another season of that name.")
    def patch(self, values, season_id: uuid.UUID):
        """Change the given fields of a season."""
        return experiments.update_season(season_id, values)

    @blp.response(200, SeasonSchema)
    @blp.alt_response(404, description="Unknown season.")
    @blp.alt_response(409, description="Records still reference the season.")
    def delete(self, season_id: uuid.UUID):
        """Delete a season; answers the deleted season."""
        return experiments.delete_season(season_id)
