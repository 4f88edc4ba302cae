"""Worker entry point: ``celery -A workers.worker worker`` (add ``-B`` or run ``beat`` for the sweeper; add
``--metrics-port N`` to serve Prometheus metrics).

The Celery app is the one the factory made for the Flask app (``webapp/queue.py``); importing the tasks
registers them on it. Before the app is imported, this process (and its pool processes) are given a folder of
their own for their Prometheus values.
"""

from config import load_settings, multiprocess

multiprocess.use_folder(multiprocess.worker_folder(load_settings().metrics_dir))

from webapp import create_app  # noqa: E402  (after the metrics folder is set)
from workers import metrics, tasks  # noqa: E402, F401  (tasks: registers the tasks)

flask_app = create_app()
celery = flask_app.extensions["celery"]
metrics.install(celery)
celery.set_default()
