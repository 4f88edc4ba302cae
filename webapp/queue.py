"""The queue seam: how a job id reaches something that runs it.

With ``BROKER_URL`` set, job ids go to Celery workers over Redis (``workers/``). Without one — the embedded
default — they run on a background thread of this process, through the very same ``jobs.run_job``. The jobs
table, not the queue, is the truth: a lost message only delays a job until the sweeper dispatches it again.
"""

import logging
import os
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

from flask import Flask, current_app

log = logging.getLogger(__name__)


class CeleryDispatcher:
    """Sends job ids to the Celery workers."""

    def __init__(self, app: Flask):
        from workers.celery_app import make_celery

        self.celery = make_celery(app)

    def dispatch(self, job_id: uuid.UUID, delay: float = 0) -> None:
        self.celery.send_task("scriptorium.run_job", args=[str(job_id)], countdown=delay or None)

    def start(self) -> None:
        """Nothing to start here: the workers' beat schedule runs the sweeper."""


class ThreadDispatcher:
    """Runs jobs on one background thread of this process, and sweeps for stalled jobs periodically."""

    def __init__(self, app: Flask):
        self.app = app
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scriptorium-job")
        self.worker_name = f"in-process-{os.getpid()}"
        self._started = False
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def dispatch(self, job_id: uuid.UUID, delay: float = 0) -> None:
        self.start()
        if delay:
            timer = threading.Timer(delay, self.executor.submit, args=(self._run, job_id))
            timer.daemon = True
            timer.start()
        else:
            self.executor.submit(self._run, job_id)

    def drain(self, timeout: float = 60) -> None:
        """Wait until the jobs dispatched so far have run (delayed retries excepted)."""
        self.executor.submit(lambda: None).result(timeout=timeout)

    def stop(self) -> None:
        """Stop sweeping and wait for the running job (a process shutting down, or a test session ending)."""
        self._stopping.set()
        self.executor.shutdown(wait=True, cancel_futures=True)

    def start(self) -> None:
        """Start the sweeper once per process (it also resumes jobs left unfinished by a restart)."""
        with self._lock:
            if self._started:
                return
            self._started = True
        threading.Thread(target=self._sweep_forever, name="scriptorium-sweeper", daemon=True).start()

    def _run(self, job_id: uuid.UUID) -> None:
        from webapp.services import jobs

        with self.app.app_context():
            try:
                jobs.run_job(job_id, self.worker_name)
            except Exception:
                log.exception("Job %s crashed its runner", job_id)

    def _sweep_forever(self) -> None:
        from webapp.services import jobs

        interval = self.app.config["JOB_SWEEP_SECONDS"]
        while not self._stopping.wait(interval):
            with self.app.app_context():
                try:
                    jobs.sweep()
                except Exception:
                    log.exception("Sweeping jobs failed")


class JobQueue:
    """Flask extension: ``queue.dispatch(job_id)`` hands a committed job to whatever runs jobs."""

    def init_app(self, app: Flask) -> None:
        """Choose Celery when a broker is configured, else the in-process thread."""
        dispatcher = CeleryDispatcher(app) if app.config["BROKER_URL"] else ThreadDispatcher(app)
        app.extensions["job_queue"] = dispatcher

    @property
    def dispatcher(self):
        return current_app.extensions["job_queue"]

    def dispatch(self, job_id: uuid.UUID, delay: float = 0) -> None:
        """Send ``job_id`` to be run (after ``delay`` seconds); call only after the job's row is committed."""
        try:
            self.dispatcher.dispatch(job_id, delay)
        except Exception:
            # The job stays queued in the table; the sweeper dispatches it again.
            log.exception("Could not dispatch job %s; the sweeper will retry", job_id)

    def start(self) -> None:
        """Start background machinery of the in-process queue (idempotent)."""
        self.dispatcher.start()
