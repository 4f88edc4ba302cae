"""gunicorn's configuration (``gunicorn -c python:config.gunicorn 'webapp:create_app()'``, as ``scriptorium
serve`` runs it): the workers write their Prometheus values into ``SCRIPTORIUM_METRICS_DIR``, so ``/metrics``
sums every worker of the host; the folder is emptied when gunicorn starts and a worker that exits is marked dead
(its live gauges drop out). With ``SCRIPTORIUM_LOG_FORMAT=json`` gunicorn's own lines are JSON too.

Every other gunicorn setting stays on the command line (or ``GUNICORN_CMD_ARGS``).
"""

from config import multiprocess
from config.settings import load_settings

_settings = load_settings()
# Here, in the master, before any worker imports the app and with it prometheus-client.
multiprocess.use_folder(_settings.metrics_dir)


def on_starting(server) -> None:
    """Forget the values of an earlier run."""
    multiprocess.empty_folder(_settings.metrics_dir)


def child_exit(server, worker) -> None:
    """Drop the live gauges (requests in flight, pool use) of a worker that exited."""
    from prometheus_client import multiprocess as prometheus_multiprocess

    prometheus_multiprocess.mark_process_dead(worker.pid)


if _settings.log_format == "json":
    # The fields of webapp/logs.py's JSON lines; gunicorn configures its loggers before the app exists.
    logconfig_dict = {
        "formatters": {
            "generic": {
                "()": "pythonjsonlogger.json.JsonFormatter",
                "fmt": "%(levelname)s %(name)s %(message)s",
                "rename_fields": {"levelname": "level", "name": "logger"},
                "timestamp": "time",
            }
        },
        # gunicorn's lines once (not again through the app's root handler, which the app sets up itself); no access
        # log, as on the command line.
        "root": {"level": "INFO", "handlers": []},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": False},
            "gunicorn.access": {"level": "CRITICAL", "handlers": [], "propagate": False},
        },
    }
