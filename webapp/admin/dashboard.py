"""The admin pages' front page."""

from flask import render_template

from webapp.admin.blueprint import blp
from webapp.services import overview


@blp.get("/")
def dashboard():
    """Counts and recent jobs."""
    return render_template("admin/dashboard.html", counts=overview.dashboard_counts(), jobs=overview.recent_jobs())
