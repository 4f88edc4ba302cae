"""Celery tasks: thin wrappers handing job ids to the service layer (the code the embedded default runs too)."""

import os
import socket
import uuid

from celery import shared_task

from webapp.queue import RUN_JOB_TASK, SWEEP_TASK
from webapp.services import jobs


@shared_task(name=RUN_JOB_TASK)
def run_job(job_id: str) -> None:
    """Run (or resume) one job; a job already finished or leased elsewhere is left alone."""
    jobs.run_job(uuid.UUID(job_id), worker=f"{socket.gethostname()}:{os.getpid()}")


@shared_task(name=SWEEP_TASK)
def sweep_jobs() -> None:
    """Dispatch again queued jobs whose message was lost and running jobs whose worker died."""
    jobs.sweep()
