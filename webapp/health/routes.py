"""``GET /api/health``: the process can serve requests (nothing else checked). ``GET /api/ready``: its
dependencies answer too (``services/readiness.py``), for load balancers and compose to wait on."""

import marshmallow as ma
from flask.views import MethodView

from webapp.common.api import Blueprint, ResponseSchema
from webapp.services import readiness

blp = Blueprint(
    "health", __name__, url_prefix="/api", description="Liveness and readiness of the web process.", public=True
)


class HealthSchema(ResponseSchema):
    status = ma.fields.String()


class CheckSchema(ResponseSchema):
    status = ma.fields.String(metadata={"description": "`ok` or `failing`."})
    detail = ma.fields.String(
        metadata={"description": "What was seen, in words naming no host, URL or credential (and the time taken)."}
    )


class ReadySchema(ResponseSchema):
    status = ma.fields.String(metadata={"description": "`ready` when every check is ok, else `failing`."})
    checks = ma.fields.Dict(
        keys=ma.fields.String(),
        values=ma.fields.Nested(CheckSchema),
        metadata={"description": "By dependency: `database`, `object_store`, and `broker` when one is configured."},
    )


@blp.route("/health")
class Health(MethodView):
    @blp.response(200, HealthSchema)
    def get(self):
        """Say the process is up (no dependency checked)."""
        return {"status": "ok"}


@blp.route("/ready")
class Ready(MethodView):
    @blp.response(200, ReadySchema, description="The database, the object store and the broker answer.")
    @blp.alt_response(503, schema=ReadySchema, description="At least one dependency fails; its check says why.")
    def get(self):
        """Check the database (a round trip), the object store (a cheap bucket call) and the broker (a ping), each
        within SCRIPTORIUM_READY_TIMEOUT seconds; used by container health checks and load balancers."""
        answer = readiness.check_readiness()
        return answer, 200 if answer["status"] == "ready" else 503
