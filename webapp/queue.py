"""The queue seam: how a job id reaches something that runs it.

With ``BROKER_URL`` set, job ids go to Celery workers over Redis; the one Celery app is made here by
``make_celery`` and kept in ``app.extensions["celery"]``, where ``workers/`` finds it. Without a broker — the
embedded default — jobs run on a background thread of this process. Either way the runner is the function the
factory hands to ``init_app`` (``services.jobs.run_job``), so this module knows nothing of what a job does. The
jobs table, not the queue, is the truth: a lost message only delays a job until the sweeper dispatches it again.
"""

import logging
import os
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from celery import Celery, Task
from flask import Flask, current_app

log = logging.getLogger(__name__)

RUN_JOB_TASK = "scriptorium.run_job"
SWEEP_TASK = "scriptorium.sweep_jobs"


def make_celery(app: Flask) -> Celery:
    """The Celery app whose tasks run inside ``app``'s context, on the broker and queue of its config."""

    class FlaskTask(Task):
        def __call__(self, *args, **kwargs):
            with app.app_context():
                return self.run(*args, **kwargs)

    celery = Celery(app.import_name, broker=app.config["BROKER_URL"], task_cls=FlaskTask)
    celery.conf.update(
        task_default_queue=app.config["QUEUE_NAME"],
        task_ignore_result=True,
        # A task is acknowledged when it finishes, and given back if its worker dies; running it twice is
        # harmless because a job runs only under a lease and commits its progress with its checkpoint.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        beat_schedule={"sweep-jobs": {"task": SWEEP_TASK, "schedule": float(app.config["JOB_SWEEP_SECONDS"])}},
    )
    return celery


class BrokerUnavailable(Exception):
    """The broker failed a readiness check; the message says why, naming no host or credential."""


def ping_broker(url: str, timeout: float) -> str:
    """Ask the broker's Redis for a PONG, one attempt bounded by ``timeout``; BrokerUnavailable says why not."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = redis.Redis.from_url(
        url, socket_connect_timeout=timeout, socket_timeout=timeout, retry=Retry(NoBackoff(), 0)
    )
    try:
        client.ping()
    except redis.TimeoutError as exc:
        raise BrokerUnavailable(f"the broker did not answer within {timeout:g} s") from exc
    except redis.AuthenticationError as exc:
        raise BrokerUnavailable("the broker refused the credentials") from exc
    except redis.ConnectionError as exc:
        # redis-py's message names the host; the operating system's reason does not.
        reason = exc.__context__.strerror if isinstance(exc.__context__, OSError) else None
        raise BrokerUnavailable("cannot connect to the broker" + (f" ({reason})" if reason else "")) from exc
    except redis.RedisError as exc:
        raise BrokerUnavailable(f"the broker failed ({type(exc).__name__})") from exc
    finally:
        client.close()
    return "the broker answered"


class CeleryDispatcher:
    """Sends job ids to the Celery workers."""

    def __init__(self, celery: Celery):
        self.celery = celery

    def dispatch(self, job_id: uuid.UUID, delay: float = 0) -> None:
        self.celery.send_task(RUN_JOB_TASK, args=[str(job_id)], countdown=delay or None)

    def start(self) -> None:
        """Nothing to start here: the workers' beat schedule runs the sweeper."""


class ThreadDispatcher:
    """Runs jobs on one background thread of this process, and sweeps for stalled jobs periodically."""

    def __init__(self, app: Flask, run_job: Callable[[uuid.UUID, str], None], sweep: Callable[[], int]):
        self.app = app
        self.run_job = run_job
        self.sweep = sweep
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
        with self.app.app_context():
            try:
                self.run_job(job_id, self.worker_name)
            except Exception:
                log.exception("Job %s crashed its runner", job_id)

    def _sweep_forever(self) -> None:
        interval = self.app.config["JOB_SWEEP_SECONDS"]
        while not self._stopping.wait(interval):
            with self.app.app_context():
                try:
                    self.sweep()
                except Exception:
                    log.exception("Sweeping jobs failed")


class JobQueue:
    """Flask extension: ``queue.dispatch(job_id)`` hands a committed job to whatever runs jobs."""

    def init_app(self, app: Flask, run_job: Callable[[uuid.UUID, str], None], sweep: Callable[[], int]) -> None:
        """Choose Celery when a broker is configured, else the in-process thread running ``run_job``."""
        if app.config["BROKER_URL"]:
            app.extensions["celery"] = make_celery(app)
            app.extensions["job_queue"] = CeleryDispatcher(app.extensions["celery"])
        else:
            app.extensions["job_queue"] = ThreadDispatcher(app, run_job, sweep)

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
