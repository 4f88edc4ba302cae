"""Worker entry point: ``celery -A workers.worker worker`` (add ``-B`` or run ``beat`` for the sweeper)."""

from webapp import create_app
from workers.celery_app import make_celery

flask_app = create_app()
celery = make_celery(flask_app)
celery.set_default()

import workers.tasks  # noqa: E402,F401  (registers the tasks on this app)
