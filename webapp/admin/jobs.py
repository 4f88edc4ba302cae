"""Jobs: the list, and one job's page that follows it live."""

import uuid

from flask import current_app, render_template

from webapp.admin.blueprint import blp
from webapp.admin.forms import paged
from webapp.services import jobs, overview


@blp.get("/jobs")
def job_list():
    """Jobs, newest first."""
    items, pager = paged(overview.jobs_newest_first())
    return render_template("admin/jobs.html", jobs=items, pager=pager)


@blp.get("/jobs/<uuid:job_id>")
def job_detail(job_id: uuid.UUID):
    """One job; the page follows its progress live through the jobs API."""
    return render_template(
        "admin/job.html", job=jobs.get_job(job_id), poll_ms=current_app.config.get("ADMIN_POLL_MS", 1000)
    )
