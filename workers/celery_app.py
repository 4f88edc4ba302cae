"""The Celery app, bound to a Flask app's config in one small function."""

from celery import Celery, Task
from flask import Flask


def make_celery(app: Flask) -> Celery:
    """A Celery app whose tasks run inside ``app``'s context, on the broker and queue of its config."""

    class FlaskTask(Task):
        def __call__(self, *args, **kwargs):
            with app.app_context():
                return self.run(*args, **kwargs)

    celery = Celery(app.import_name, broker=app.config["BROKER_URL"], task_cls=FlaskTask)
    queue = app.config["QUEUE_NAME"]
    celery.conf.update(
        task_default_queue=queue,
        task_ignore_result=True,
        # A task is acknowledged when it finishes, and given back if its worker dies; running it twice is
        # harmless because a job runs only under a lease and commits its progress with its checkpoint.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        beat_schedule={
            "sweep-jobs": {"task": "scriptorium.sweep_jobs", "schedule": float(app.config["JOB_SWEEP_SECONDS"])}
        },
    )
    return celery
