"""Admin pages: sign-in, dashboard, scripts with their records and chart, reference data, uploads, jobs.

Views are thin: they read the form through the API's own schemas, call the same services as the API, and
render. Every form carries the session's CSRF token; a page needing a higher role answers 403.
"""

import uuid
from datetime import UTC, datetime, timedelta
from functools import wraps
from urllib.parse import urlsplit

import marshmallow as ma
from flask import Blueprint, abort, current_app, flash, g, redirect, render_template, request, session, url_for

from webapp.admin.charts import bar_chart
from webapp.auth import csrf_token, end_session, sign_in_with_password, start_session, valid_csrf
from webapp.common.pagination import fetch_page
from webapp.errors import APIError
from webapp.experiments.schemas import ExperimentSchema, SeasonSchema
from webapp.models import Role
from webapp.records.schemas import RecordQueryArgsSchema
from webapp.scripts.schemas import ScriptCreateSchema, ScriptSchema
from webapp.services import accounts, bulk, experiments, jobs, overview, records, scripts, sites, tokens
from webapp.sites.schemas import SiteSchema

blp = Blueprint("admin", __name__, url_prefix="/admin", template_folder="../templates", static_folder="../static")

PAGE_SIZE = 50
SESSION_LIFETIME = timedelta(hours=8)


@blp.record_once
def register_template_globals(state):
    # Globals, not context: the form macros are imported without the template's context.
    state.app.jinja_env.globals.update(csrf_token=csrf_token, Role=Role)
    state.app.jinja_env.tests["web_url"] = is_web_url


def is_web_url(value) -> bool:
    """True for an absolute http(s) URL: the only kind of stored URL the pages render as a link (autoescaping
    keeps ``javascript:`` or ``data:`` URLs as they are, and a browser would run them)."""
    try:
        parts = urlsplit(str(value))
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


def safe_next(target: str) -> str | None:
    """``target`` when it is a path on this site, else None. Browsers read ``//host`` and ``/\\host`` as another
    site and drop tabs and newlines inside URLs, so those are refused along with every control character."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    return None if any(ord(char) < 0x20 or ord(char) == 0x7F for char in target) else target


@blp.before_request
def require_session_and_csrf():
    """Sign-in for every page but the sign-in page; a valid CSRF token on every form post."""
    if request.endpoint in ("admin.login", "admin.static"):
        pass
    elif g.account is None or _session_expired():
        session.clear()
        return redirect(url_for("admin.login", next=request.full_path))
    if request.method == "POST" and not valid_csrf(request.form.get("csrf_token")):
        abort(400, description="The form has expired or did not come from this site; reload the page and try again.")
    return None


def _session_expired() -> bool:
    signed_in = session.get("signed_in_at")
    return signed_in is None or datetime.now(UTC) - datetime.fromisoformat(signed_in) > SESSION_LIFETIME


def requires(role: str):
    """Only accounts with at least ``role`` see the page (403 for the others)."""

    def decorator(view):
        @wraps(view)
        def checked(*args, **kwargs):
            if not Role.at_least(g.role, role):
                abort(403, description=f"This page needs the {role} role.")
            return view(*args, **kwargs)

        return checked

    return decorator


def page_number() -> int:
    try:
        return max(int(request.args.get("page", 1)), 1)
    except ValueError:
        return 1


def paged(stmt):
    """One page of ``stmt`` with what the pager template needs."""
    page = page_number()
    items, total = fetch_page(stmt, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    return items, {"page": page, "total": total, "pages": max((total + PAGE_SIZE - 1) // PAGE_SIZE, 1)}


def load_form(schema: ma.Schema):
    """(values, errors) of the posted form through an API schema. An emptied field is null where the field
    allows it (so editing can clear it) and absent otherwise."""
    data = {}
    for name, value in request.form.items():
        field = schema.fields.get(name)
        if name == "csrf_token" or (value == "" and not (field and field.allow_none)):
            continue
        data[name] = None if value == "" else value
    try:
        return schema.load(data), {}
    except ma.ValidationError as exc:
        return None, exc.messages


def form_page(template: str, schema: ma.Schema, save, **context):
    """Render ``template``; on POST load the form through ``schema`` and call ``save(values)``, which returns
    where to go next. Invalid input, or a service's refusal (e.g. a taken name), is shown on the form (422)."""
    errors = {}
    if request.method == "POST":
        values, errors = load_form(schema)
        if not errors:
            try:
                target = save(values)
                flash("Saved.")
                return redirect(target)
            except APIError as exc:
                errors = exc.errors or {"_": [exc.description]}
    return render_template(template, form=request.form, errors=errors, **context), 422 if errors else 200


# --- sign-in ------------------------------------------------------------------------------------------------


@blp.route("/login", methods=["GET", "POST"])
def login():
    """Sign in with email and password (one message for any mistake)."""
    if request.method == "GET":
        return render_template("admin/login.html", error=None)
    try:
        account = sign_in_with_password(request.form.get("email", ""), request.form.get("password", ""))
    except APIError as exc:  # too many failed attempts (429), or their counter is unreachable (503)
        return render_template("admin/login.html", error=exc.description), exc.status_code, exc.headers
    if account is None:
        return render_template("admin/login.html", error="Wrong email or password."), 401
    start_session(account)
    # Only paths of this site: never redirect a signed-in user to another one.
    return redirect(safe_next(request.args.get("next", "")) or url_for("admin.dashboard"))


@blp.post("/logout")
def logout():
    """Sign out: this session, and every other of the account, ends on the server."""
    end_session()
    flash("Signed out.")
    return redirect(url_for("admin.login"))


@blp.get("/")
def dashboard():
    """Counts and recent jobs."""
    return render_template("admin/dashboard.html", counts=overview.dashboard_counts(), jobs=overview.recent_jobs())


# --- scripts ------------------------------------------------------------------------------------------------


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
    items, pager = paged(records.search_records(script_id, filters))
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
    """Queue a bulk upload from the form and follow it on its job page."""
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        flash("Choose a file to upload.", "error")
        return redirect(url_for("admin.script_detail", script_id=script_id))
    defaults = {
        name: request.form[name]
        for name in ("experiment_name", "season_name", "site_name", "dataset_name")
        if request.form.get(name)
    }
    try:
        job, _ = bulk.create_bulk_job(script_id, upload, defaults, requested_by=str(g.account.id))
    except APIError as exc:
        flash(exc.description, "error")
        return redirect(url_for("admin.script_detail", script_id=script_id))
    return redirect(url_for("admin.job_detail", job_id=job.id))


# --- experiments, seasons, sites ----------------------------------------------------------------------------


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
    for field, messages in errors.items():
        flash(f"{field}: {' '.join(map(str, messages))}", "error")
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


@blp.get("/sites")
def site_list():
    """Sites."""
    items, pager = paged(sites.list_sites())
    return render_template("admin/sites.html", sites=items, pager=pager)


@blp.route("/sites/new", methods=["GET", "POST"])
@blp.route("/sites/<uuid:site_id>/edit", methods=["GET", "POST"])
@requires(Role.WRITER)
def site_form(site_id: uuid.UUID | None = None):
    """Create or edit a site."""
    site = sites.get_site(site_id) if site_id else None

    def save(values):
        if site:
            sites.update_site(site_id, values)
        else:
            sites.create_site(values)
        return url_for("admin.site_list")

    return form_page("admin/site_form.html", SiteSchema(partial=site is not None), save, site=site)


@blp.post("/sites/<uuid:site_id>/delete")
@requires(Role.WRITER)
def site_delete(site_id: uuid.UUID):
    """Delete a site (refused while records use it)."""
    try:
        sites.delete_site(site_id)
        flash("Deleted the site.")
    except APIError as exc:
        flash(exc.description, "error")
    return redirect(url_for("admin.site_list"))


# --- jobs ---------------------------------------------------------------------------------------------------


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


# --- accounts (admins only) ---------------------------------------------------------------------------------


@blp.route("/accounts", methods=["GET", "POST"])
@requires(Role.ADMIN)
def account_list():
    """Accounts and their tokens; admins create accounts here."""
    errors = {}
    if request.method == "POST":
        email, password, role = (request.form.get(k, "") for k in ("email", "password", "role"))
        try:
            account = accounts.create_account(email, password, role)
            flash(f"Created {account.email}.")
            return redirect(url_for("admin.account_list"))
        except APIError as exc:  # the policy names the field; a taken email does not
            errors = exc.errors or {"email": [exc.description]}
    return render_template(
        "admin/accounts.html", accounts=overview.accounts_with_tokens(), errors=errors
    ), 422 if errors else 200


@blp.post("/tokens/<uuid:token_id>/revoke")
@requires(Role.ADMIN)
def token_revoke(token_id: uuid.UUID):
    """Revoke anyone's token."""
    tokens.revoke_token(token_id, g.account)
    flash("Token revoked.")
    return redirect(url_for("admin.account_list"))


@blp.errorhandler(APIError)
def api_error_page(error: APIError):
    page = render_template("admin/error.html", code=error.status_code, message=error.description)
    return page, error.status_code, error.headers


@blp.errorhandler(400)
@blp.errorhandler(403)
@blp.errorhandler(404)
def http_error_page(error):
    return render_template("admin/error.html", code=error.code, message=error.description), error.code
