"""The Scripts API: scripts, their experiments, runs and datasets."""

import uuid

from flask.views import MethodView

from webapp.common.api import Blueprint
from webapp.experiments.schemas import ExperimentSchema
from webapp.scripts.schemas import (
    DatasetCreateSchema,
    DatasetSchema,
    ScriptCreateSchema,
    ScriptQueryArgsSchema,
    ScriptRunSchema,
    ScriptSchema,
    ScriptUpdateSchema,
)
from webapp.services import scripts

blp = Blueprint("scripts", __name__, url_prefix="/api/scripts", description="Analysis scripts.")


@blp.route("/all")
class AllScripts(MethodView):
    @blp.response(200, ScriptSchema(many=True))
    @blp.alt_response(404, description="There are no scripts at all.")
    @blp.paginate(not_found="There are no scripts yet.", rows_as=ScriptSchema, constant=True)
    def get(self):
        """List every script, oldest first."""
        return scripts.ALL_SCRIPTS


@blp.route("")
class Scripts(MethodView):
    @blp.arguments(ScriptQueryArgsSchema, location="query")
    @blp.response(200, ScriptSchema(many=True))
    @blp.alt_response(404, description="No script matches.")
    @blp.paginate(not_found="No script matches the search.", rows_as=ScriptSchema)
    def get(self, filters):
        """Search scripts; the given parameters combine with AND."""
        return scripts.search_scripts(filters)

    @blp.arguments(ScriptCreateSchema)
    @blp.response(200, ScriptSchema)
    def post(self, values):
        """Create a script, optionally associated with an experiment."""
        return scripts.create_script(values)


@blp.route("/id/<uuid:script_id>")
class ScriptById(MethodView):
    @blp.response(200, ScriptSchema)
    @blp.alt_response(404, description="Unknown script.")
    @blp.row(rows_as=ScriptSchema, not_found=scripts.unknown_script)
    def get(self, script_id: uuid.UUID):
        """Get one script."""
        return scripts.script_by_id(script_id)

    @blp.arguments(ScriptUpdateSchema(partial=True), required=False)
    @blp.response(200, ScriptSchema)
    @blp.alt_response(404, description="Unknown script.")
    def patch(self, values, script_id: uuid.UUID):
        """Change the given fields of a script; ``null`` clears an optional field."""
        return scripts.update_script(script_id, values)

    @blp.response(200, ScriptSchema)
    @blp.alt_response(404, description="Unknown script.")
    def delete(self, script_id: uuid.UUID):
        """Delete a script with its runs, its records and their stored files; answers the deleted script."""
        return scripts.delete_script(script_id)


@blp.route("/id/<uuid:script_id>/experiments")
class ScriptExperiments(MethodView):
    @blp.response(200, ExperimentSchema(many=True))
    @blp.alt_response(404, description="Unknown script, or a script with no experiment.")
    @blp.paginate(not_found="The script has no experiments.")
    def get(self, script_id: uuid.UUID):
        """List the experiments a script is associated with."""
        return scripts.list_script_experiments(script_id)


@blp.route("/id/<uuid:script_id>/runs")
class ScriptRuns(MethodView):
    @blp.response(200, ScriptRunSchema(many=True))
    @blp.alt_response(404, description="Unknown script, or a script with no runs.")
    @blp.paginate(not_found="The script has no runs.")
    def get(self, script_id: uuid.UUID):
        """List the runs of a script, oldest first."""
        return scripts.list_runs(script_id)

    @blp.arguments(ScriptRunSchema, required=False)
    @blp.response(200, ScriptRunSchema)
    @blp.alt_response(404, description="Unknown script.")
    def post(self, values, script_id: uuid.UUID):
        """Start a new run of a script (every POST creates one)."""
        return scripts.create_run(script_id, values)


@blp.route("/id/<uuid:script_id>/datasets")
class ScriptDatasets(MethodView):
    @blp.response(200, DatasetSchema(many=True))
    @blp.alt_response(404, description="Unknown script, or a script with no datasets.")
    @blp.paginate(not_found="The script has no datasets.")
    def get(self, script_id: uuid.UUID):
        """List the datasets a script is associated with."""
        return scripts.list_script_datasets(script_id)

    @blp.arguments(DatasetCreateSchema)
    @blp.response(200, DatasetSchema)
    @blp.alt_response(404, description="Unknown script.")
    def post(self, values, script_id: uuid.UUID):
        """Create a dataset, or reuse the one of that name, and associate it with the script."""
        return scripts.add_script_dataset(script_id, values)
