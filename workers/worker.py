"""Worker entry point: ``celery -A workers.worker worker`` (add ``-B`` or run ``beat`` for the sweeper).

The Celery app is the one the factory made for the Flask app (``webapp/queue.py``); importing the tasks
registers them on it.
"""

from webapp import create_app
from workers import tasks  # noqa: F401  (registers the tasks)

flask_app = create_app()
celery = flask_app.extensions["celery"]
celery.set_default()
