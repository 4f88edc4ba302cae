"""Sites."""

import uuid

from flask import flash, redirect, render_template, url_for

from webapp.admin.blueprint import blp, requires
from webapp.admin.forms import form_page, paged
from webapp.errors import APIError
from webapp.models import Role
from webapp.services import sites
from webapp.sites.schemas import SiteSchema


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
