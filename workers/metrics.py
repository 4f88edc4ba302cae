"""The worker's metrics (the durations of the jobs it runs, the rows it stores): served over HTTP by the worker's
main process on ``--metrics-port`` (a Celery option added here; 0, the default, serves none), summed over its pool
processes, which write their values into a folder of this worker's own (``config/multiprocess.py``)."""

import os

import click
from celery import Celery, bootsteps, signals
from prometheus_client import multiprocess, start_http_server

from webapp import telemetry


class MetricsServer(bootsteps.StartStopStep):
    """Serves ``/metrics`` (any path, in fact) on the worker's ``--metrics-port``."""

    def __init__(self, parent, metrics_port: int = 0, **options):
        super().__init__(parent, **options)
        self.port = metrics_port
        self.server = None

    def start(self, parent) -> None:
        if self.port:
            self.server, _thread = start_http_server(self.port, registry=telemetry.registry())

    def stop(self, parent) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None


def install(celery: Celery) -> None:
    """Add ``--metrics-port`` to ``celery worker`` and the step that serves the metrics there."""
    celery.user_options["worker"].add(
        click.Option(["--metrics-port"], type=int, default=0, help="Serve Prometheus metrics on this port (0: off).")
    )
    celery.steps["worker"].add(MetricsServer)


@signals.worker_process_shutdown.connect
def _forget_pool_process(**kwargs) -> None:
    """A pool process that exits leaves its counters, not its live gauges."""
    if telemetry.multiprocess_dir():
        multiprocess.mark_process_dead(os.getpid())


@signals.setup_logging.connect
def _keep_our_logging(**kwargs) -> None:
    """The app configured logging already (text or JSON, ``LOG_FORMAT``): Celery adds no handler of its own."""
