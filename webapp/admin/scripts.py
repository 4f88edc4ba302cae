"""Scripts: the list, a script's page (runs, datasets, a records-per-day chart, its records), its form, and
bulk uploads of its records."""

import uuid

import marshmallow as ma
from flask import flash, g, redirect, render_template, request, url_for

from webapp.admin.blueprint import blp, requires
from webapp.admin.charts import bar_chart
from webapp.admin.forms import flash_errors, form_page, load_form, paged
from webapp.common.pagination import fetch_page
from webapp.errors import APIError
from webapp.models import Role
from webapp.records.schemas import BulkUploadFormSchema, RecordQueryArgsSchema
from webapp.scripts.schemas import ScriptCreateSchema, ScriptSchema
from webapp.services import bulk, overview, record_search, scripts


@blp.get("/scripts")
def script_list():
    """Scripts, searched by name or extension."""
    query = request.args.get("q", "").strip()
    items, pager = paged(overview.find_scripts(query))
    return render_template("admin/scripts.html", scripts=items, pager=pager, query=query)


@blp.route("/scripts/new", methods=["GET", "POST"])
@requires(Role.WRITER)
def script_new():
    """Create a script."""

    def save(values):
        return url_for("admin.script_detail", script_id=scripts.create_script(values).id)

    return form_page("admin/script_form.html", ScriptCreateSchema(), save, script=None)


@blp.route("/scripts/<uuid:script_id>/edit", methods=["GET", "POST"])
@requires(Role.WRITER)
def script_edit(script_id: uuid.UUID):
    """Edit a script (an emptied optional field is cleared)."""
    script = scripts.get_script(script_id)

    def save(values):
        scripts.update_script(script_id, values)
        return url_for("admin.script_detail", script_id=script_id)

    return form_page("admin/script_form.html", ScriptSchema(partial=True), save, script=script)


@blp.post("/scripts/<uuid:script_id>/delete")
@requires(Role.WRITER)
def script_delete(script_id: uuid.UUID):
    """Delete a script with its runs, records and files."""
    script = scripts.delete_script(script_id)
    flash(f"Deleted script {script.script_name} with its records.")
    return redirect(url_for("admin.script_list"))


@blp.get("/scripts/<uuid:script_id>")
def script_detail(script_id: uuid.UUID):
    """A script: runs, datasets, a records-per-day chart, and its records with filters."""
    script = scripts.get_script(script_id)
    try:
        filters = RecordQueryArgsSchema().load({k: v for k, v in request.args.items() if v and k != "page"})
        filter_errors = {}
    except ma.ValidationError as exc:
        filters, filter_errors = {}, exc.messages
    items, pager = paged(record_search.search_records(script_id, filters))
    return render_template(
        "admin/script.html",
        script=script,
        runs=fetch_page(scripts.list_runs(script_id), limit=20, offset=0)[0],
        datasets=fetch_page(scripts.list_script_datasets(script_id), limit=100, offset=0)[0],
        experiments=fetch_page(scripts.list_script_experiments(script_id), limit=100, offset=0)[0],
        records=items,
        pager=pager,
        filters=request.args,
        filter_errors=filter_errors,
        chart=bar_chart(overview.records_per_day(script_id)),
    )


@blp.post("/scripts/<uuid:script_id>/upload")
@requires(Role.WRITER)
def script_upload(script_id: uuid.UUID):
    """Queue a bulk upload from the form (its defaults read as the API reads them) and follow it on its job page."""
    back = url_for("admin.script_detail", script_id=script_id)
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        flash("Choose a file to upload.", "error")
        return redirect(back)
    # The API's own upload form less its file part: load_form reads the text fields, the file is checked above.
    defaults, errors = load_form(BulkUploadFormSchema(exclude=["file"]))
    if errors:
        flash_errors(errors)
        return redirect(back)
    try:
        job, _ = bulk.create_bulk_job(script_id, upload, defaults, requested_by=str(g.account.id))
    except APIError as exc:
        flash(exc.description, "error")
        return redirect(back)
    return redirect(url_for("admin.job_detail", job_id=job.id))
