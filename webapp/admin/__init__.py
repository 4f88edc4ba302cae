"""Admin pages: sign-in, dashboard, scripts with their records and chart, experiments and sites, uploads, jobs,
accounts — one module per area, every page registered on the one ``blp`` (``webapp/admin/blueprint.py``).

Views are thin: they read the form through the API's own schemas, call the same services as the API, and
render. Every form carries the session's CSRF token; a page needing a higher role answers 403.
"""

# Importing an area registers its pages on blp.
from webapp.admin import accounts, dashboard, experiments, jobs, scripts, signin, sites  # noqa: F401
from webapp.admin.blueprint import blp

__all__ = ["blp"]
