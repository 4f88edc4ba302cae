"""``GET /api/health``: answers while the process can serve requests (no database round trip)."""

import marshmallow as ma
from flask.views import MethodView

from webapp.common.api import Blueprint, ResponseSchema

blp = Blueprint("health", __name__, url_prefix="/api/health", description="Liveness of the web process.", public=True)


class HealthSchema(ResponseSchema):
    status = ma.fields.String()


@blp.route("")
class Health(MethodView):
    @blp.response(200, HealthSchema)
    def get(self):
        """Say the process is up; used by container health checks."""
        return {"status": "ok"}
