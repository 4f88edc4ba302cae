"""``GET /metrics``: Prometheus text format. HTTP metrics are summed over every web process of the host (their
multiprocess files); job metrics are read from the jobs table at scrape time, so they count every worker's work.

Needs an admin token unless ``METRICS_PUBLIC``; the blueprint is made per app since that setting decides its
access and its documentation.
"""

from datetime import UTC, datetime

from flask import Response
from flask.views import MethodView
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from webapp import telemetry
from webapp.auth import requires
from webapp.common.api import Blueprint
from webapp.models import Role
from webapp.services import jobs

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
METRICS_DOC = (
    "Prometheus text format: `scriptorium_http_requests_total{method,endpoint,status}`, "
    "`scriptorium_http_request_duration_seconds{method,endpoint}`, `scriptorium_http_requests_in_flight`, "
    "`scriptorium_jobs{kind,state}`, `scriptorium_job_rows_total{outcome}`, "
    "`scriptorium_oldest_queued_job_age_seconds`, `scriptorium_job_duration_seconds{kind,outcome}` (jobs this "
    "host's web processes ran), `scriptorium_db_pool_connections_in_use`, `scriptorium_db_pool_size`."
)


class JobsTable:
    """Collector of what the jobs table says at scrape time."""

    def collect(self):
        snapshot = jobs.snapshot()
        by_state = GaugeMetricFamily(
            "scriptorium_jobs", "Jobs in the jobs table, by kind and state.", None, ["kind", "state"]
        )
        for (kind, state), count in sorted(snapshot.counts.items()):
            by_state.add_metric([kind, state], count)
        yield by_state
        rows = CounterMetricFamily(
            "scriptorium_job_rows", "Bulk rows the jobs in the table handled, by outcome.", labels=["outcome"]
        )
        for outcome, count in snapshot.rows.items():
            rows.add_metric([outcome], count)
        yield rows
        age = 0.0
        if snapshot.oldest_queued is not None:
            age = max((datetime.now(UTC) - snapshot.oldest_queued).total_seconds(), 0.0)
        yield GaugeMetricFamily(
            "scriptorium_oldest_queued_job_age_seconds", "Age of the oldest queued job (0 when none is).", value=age
        )


def make_blueprint(public: bool) -> Blueprint:
    """The ``/metrics`` blueprint, open to everyone when ``public``, else to admins only."""
    blp = Blueprint("metrics", __name__, url_prefix="/metrics", description="Prometheus metrics.", public=public)

    def metrics(self):
        """The metrics of this host's web processes and of the jobs table, in Prometheus text format."""
        return Response(telemetry.exposition(telemetry.registry(JobsTable())), content_type=CONTENT_TYPE)

    view = blp.response(200, description=METRICS_DOC)(metrics)
    view = blp.doc(responses={"200": {"content": {"text/plain": {"schema": {"type": "string"}}}}})(view)
    if not public:
        view = blp.alt_response(403, description="The token is not an admin's.")(view)
    view = type("Metrics", (MethodView,), {"get": view})
    if not public:
        view = requires(Role.ADMIN)(view)
    blp.route("")(view)
    return blp
