"""Sites."""

import uuid

from flask.views import MethodView

from webapp.common.api import Blueprint
from webapp.services import sites
from webapp.sites.schemas import SiteSchema, SiteUpdateSchema

blp = Blueprint("sites", __name__, url_prefix="/api/sites", description="Sites where records are collected.")


@blp.route("")
class Sites(MethodView):
    @blp.response(200, SiteSchema(many=True))
    @blp.paginate()
    def get(self):
        """List sites, oldest first."""
        return sites.list_sites()

    @blp.arguments(SiteSchema)
    @blp.response(200, SiteSchema)
    @blp.alt_response(409, description="A site of that name exists.")
    def post(self, values):
        """Create a site."""
        return sites.create_site(values)


@blp.route("/all")
class AllSites(MethodView):
    @blp.response(200, SiteSchema(many=True))
    @blp.paginate()
    def get(self):
        """List every site, oldest first (the same list as ``/sites``, as existing clients call it)."""
        return sites.list_sites()


@blp.route("/id/<uuid:site_id>")
class SiteById(MethodView):
    @blp.response(200, SiteSchema)
    @blp.alt_response(404, description="Unknown site.")
    def get(self, site_id: uuid.UUID):
        """Get one site."""
        return sites.get_site(site_id)

    @blp.arguments(SiteUpdateSchema(partial=True), required=False)
    @blp.response(200, SiteSchema)
    @blp.alt_response(404, description="Unknown site.")
    @blp.alt_response(409, description="Another site has that name.")
    def patch(self, values, site_id: uuid.UUID):
        """Change the given fields of a site."""
        return sites.update_site(site_id, values)

    @blp.response(200, SiteSchema)
    @blp.alt_response(404, description="Unknown site.")
    @blp.alt_response(409, description="Records still reference the site.")
    def delete(self, site_id: uuid.UUID):
        """Delete a site; answers the deleted site."""
        return sites.delete_site(site_id)
