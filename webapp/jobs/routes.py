"""Jobs: progress of background work, and cancellation."""

import uuid

from flask.views import MethodView

from webapp.common.api import Blueprint
from webapp.jobs.schemas import JobQueryArgsSchema, JobSchema
from webapp.services import jobs

blp = Blueprint("jobs", __name__, url_prefix="/api/jobs", description="Background jobs and their progress.")


@blp.route("")
class Jobs(MethodView):
    @blp.arguments(JobQueryArgsSchema, location="query")
    @blp.response(200, JobSchema(many=True))
    @blp.paginate()
    def get(self, filters):
        """List jobs, oldest first, optionally by state, kind and script."""
        return jobs.list_jobs(filters)


@blp.route("/<uuid:job_id>")
class JobById(MethodView):
    @blp.response(200, JobSchema)
    @blp.alt_response(404, description="Unknown job.")
    def get(self, job_id: uuid.UUID):
        """Get a job's state and counts (poll this to follow a bulk upload)."""
        return jobs.get_job(job_id)


@blp.route("/<uuid:job_id>/cancel")
class JobCancel(MethodView):
    @blp.response(200, JobSchema)
    @blp.alt_response(404, description="Unknown job.")
    @blp.alt_response(409, description="The job has already ended.")
    def post(self, job_id: uuid.UUID):
        """Cancel a queued or running job: rows already stored stay, the staged upload is deleted, and a
        record whose file job is cancelled says its file failed."""
        return jobs.cancel_job(job_id)
