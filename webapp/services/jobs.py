"""Jobs: one model for every kind of background work, leased to one runner at a time.

A job is created in the transaction of the request that asks for it and dispatched after that commits. A runner
claims it with a lease (``JOB_LEASE_SECONDS``) and renews the lease each time it commits progress; progress,
checkpoint and lease renewal share one transaction, guarded by lease ownership, so work is never committed twice.
The sweeper dispatches again queued jobs whose message was lost and running jobs whose lease expired (their
worker died); a job claimed more than ``JOB_MAX_ATTEMPTS`` times fails, so nothing stays running forever.
"""

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import bindparam, case, func, or_, select, update
from sqlalchemy.exc import DBAPIError

from webapp import logs, telemetry
from webapp.errors import ConflictError
from webapp.extensions import db, queue, store
from webapp.fields import new_id
from webapp.models import Job, JobKind, JobState, UTCDateTime, utcnow
from webapp.services.common import get_or_404

log = logging.getLogger(__name__)

MAX_REPORTED_ERRORS = 100
# A job whose runner vanished this many times in a row at the same checkpoint (killed, e.g. by the kernel for its
# memory) fails instead of being handed to the next worker to kill.
MAX_LOST_RUNS = 2


class LeaseLost(Exception):
    """The job was cancelled, or another runner holds it now: stop without committing."""


class JobFailed(Exception):
    """The job cannot finish (e.g. its file is unreadable): it fails with this description."""


class RetryLater(Exception):
    """A transient failure (e.g. the object store is unreachable): run the job again after a backoff."""


@dataclass(frozen=True)
class JobHandler:
    """What a kind of job does: ``run(job, worker)`` does the work; ``abandon(job)`` tidies up, in the session's
    transaction, after the job failed or was cancelled, and returns the staged keys to delete once that commits."""

    run: Callable[[Job, str], None]
    abandon: Callable[[Job], list[str]]


def _handler(kind: str) -> JobHandler:
    # Handed to the app by the factory (services/job_kinds.py): this module knows no kind of job.
    return current_app.extensions["job_handlers"][kind]


def _abandon(job: Job) -> list[str]:
    """Tidy up after a job that failed or was cancelled; the staged keys to delete once that is committed."""
    return _handler(job.kind).abandon(job)


def new_job(kind: str, script_id: uuid.UUID | None, params: dict, **fields) -> Job:
    """A queued job, added to the session (the caller commits, then calls ``dispatch``); it keeps the id of the
    request creating it."""
    fields.setdefault("id", new_id())
    fields.setdefault("request_id", logs.current_request_id())
    job = Job(kind=kind, script_id=script_id, params=params, dispatched_at=utcnow(), **fields)
    db.session.add(job)
    return job


def dispatch(job: Job) -> None:
    """Hand a committed job to the queue."""
    queue.dispatch(job.id)


def get_job(job_id: uuid.UUID) -> Job:
    """The job with that id (404)."""
    return get_or_404(Job, job_id, "job")


def list_jobs(filters: dict):
    """Jobs matching the filters, oldest first."""
    stmt = select(Job).order_by(Job.created_at, Job.id)
    for name in ("state", "kind", "script_id"):
        if filters.get(name) is not None:
            stmt = stmt.where(getattr(Job, name) == filters[name])
    return stmt


def cancel_job(job_id: uuid.UUID) -> Job:
    """Cancel a queued or running job; rows already stored stay. 409 once the job has ended."""
    job = get_job(job_id)
    result = db.session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state.in_(JobState.ACTIVE))
        .values(state=JobState.CANCELLED, finished_at=utcnow(), lease_owner=None, lease_expires_at=None)
    )
    if result.rowcount != 1:
        db.session.rollback()
        db.session.refresh(job)
        raise ConflictError(f"The job has already ended ({job.state}); there is nothing to cancel.")
    staged = _abandon(job)
    db.session.commit()
    store.delete_quietly(*staged)
    db.session.refresh(job)
    return job


def _lease_seconds() -> int:
    return current_app.config["JOB_LEASE_SECONDS"]


def claim(job_id: uuid.UUID, worker: str) -> Job | None:
    """Take the lease of an active job whose lease is free or expired; None when someone else has it."""
    now = utcnow()
    # Still running with an expired lease: the last runner vanished without ending or retrying the job.
    lost = Job.state == JobState.RUNNING
    result = db.session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.state.in_(JobState.ACTIVE),
            or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < now),
        )
        .values(
            lost_runs=case(
                (lost & (Job.checkpoint == Job.lost_at_checkpoint), Job.lost_runs + 1), (lost, 1), else_=Job.lost_runs
            ),
            lost_at_checkpoint=case((lost, Job.checkpoint), else_=Job.lost_at_checkpoint),
            state=JobState.RUNNING,
            lease_owner=worker,
            lease_expires_at=now + timedelta(seconds=_lease_seconds()),
            attempts=Job.attempts + 1,
            started_at=func.coalesce(Job.started_at, bindparam("started", value=now, type_=UTCDateTime())),
        )
    )
    db.session.commit()
    if result.rowcount != 1:
        return None
    job = db.session.get(Job, job_id)
    db.session.refresh(job)
    return job


def renew_lease(job: Job, worker: str, **counters) -> None:
    """Inside the caller's transaction: add ``counters`` to the job and renew its lease.

    Raises ``LeaseLost`` (and rolls back) when the job was cancelled or is leased by another runner, so the
    caller's uncommitted work is dropped. ``errors`` is a list of new row errors (the first 100 are kept);
    ``checkpoint`` and the count fields are increments; ``total`` is set as given.
    """
    values = {"lease_expires_at": utcnow() + timedelta(seconds=_lease_seconds())}
    for name in ("processed", "inserted", "duplicates", "failed", "checkpoint"):
        if counters.get(name):
            values[name] = getattr(Job, name) + counters[name]
    if counters.get("total") is not None:
        values["total"] = counters["total"]
    result = db.session.execute(
        update(Job)
        .where(Job.id == job.id, Job.state == JobState.RUNNING, Job.lease_owner == worker)
        .values(**values)
        .returning(Job.errors)
    )
    row = result.first()
    if row is None:
        db.session.rollback()
        raise LeaseLost(job.id)
    new_errors = counters.get("errors") or []
    if new_errors and len(row.errors) < MAX_REPORTED_ERRORS:
        kept = row.errors + new_errors[: MAX_REPORTED_ERRORS - len(row.errors)]
        db.session.execute(update(Job).where(Job.id == job.id).values(errors=kept))


def _finish(job_id: uuid.UUID, worker: str, state: str, description: str | None = None) -> bool:
    """End the job if ``worker`` still holds it, committing with whatever the session holds; else roll back."""
    result = db.session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state == JobState.RUNNING, Job.lease_owner == worker)
        .values(
            state=state,
            error_description=description,
            finished_at=utcnow(),
            lease_owner=None,
            lease_expires_at=None,
        )
    )
    if result.rowcount != 1:
        db.session.rollback()
        return False
    db.session.commit()
    return True


def _retry_later(job: Job, worker: str, reason: str) -> None:
    backoff = min(2 ** (job.attempts - 1), 60)
    result = db.session.execute(
        update(Job)
        .where(Job.id == job.id, Job.state == JobState.RUNNING, Job.lease_owner == worker)
        .values(
            state=JobState.QUEUED,
            lease_owner=None,
            lease_expires_at=None,
            error_description=reason,
            dispatched_at=utcnow() + timedelta(seconds=backoff),
        )
    )
    db.session.commit()
    if result.rowcount == 1:
        log.warning("Job %s will be retried in %s s: %s", job.id, backoff, reason)
        queue.dispatch(job.id, delay=backoff)


def _give_up(job: Job, worker: str, description: str) -> None:
    # The tidy-up commits with the job's end, and only for the runner that ends it: one whose lease was
    # taken over leaves the work alone.
    staged = _abandon(job)
    if _finish(job.id, worker, JobState.FAILED, description):
        store.delete_quietly(*staged)


def _run_handler(job: Job, worker: str) -> None:
    """Run the job's handler; a database failure a retry may cure (a lost connection, a deadlock) is to be
    retried later, like an object store failure, not the end of the job."""
    try:
        _handler(job.kind).run(job, worker)
    except DBAPIError as exc:
        if not db.is_transient(exc):
            raise
        raise RetryLater(f"The database failed meanwhile ({type(exc.orig).__name__}).") from exc


def run_job(job_id: uuid.UUID, worker: str) -> None:
    """Claim the job and run its handler to the end, a retry, or a failure; idempotent. Its log lines carry the
    job and the id of the request that created it; its end is logged with its rows and counted in the metrics."""
    started = time.perf_counter()
    job = claim(job_id, worker)
    if job is None:
        return
    with logs.bound(job_id=str(job.id), kind=job.kind, attempt=job.attempts, request_id=job.request_id):
        log.info("Job %s (%s) starts, attempt %s", job.id, job.kind, job.attempts)
        outcome = _run_claimed(job, worker)
        seconds = time.perf_counter() - started
        telemetry.observe_job_run(job.kind, outcome, seconds)
        _log_end(job.id, outcome, seconds)


def _log_end(job_id: uuid.UUID, outcome: str, seconds: float) -> None:
    """Log how the run ended, with the job's state and row counts as the table has them now."""
    state, rows = None, {}
    try:
        job = db.session.get(Job, job_id, populate_existing=True)
        if job is not None:
            state = job.state
            rows = {name: getattr(job, name) for name in ("processed", "inserted", "duplicates", "failed")}
    except DBAPIError:
        pass  # the end is logged all the same, without its counts
    finally:
        db.session.rollback()
    log.info(
        "Job %s ends: %s in %.3f s, rows %s",
        job_id,
        outcome,
        seconds,
        " ".join(f"{name}={count}" for name, count in rows.items()) or "unknown",
        extra={"outcome": outcome, "state": state, "rows": rows, "duration_ms": round(seconds * 1000, 3)},
    )


def _run_claimed(job: Job, worker: str) -> str:
    """Run a claimed job; how this run ended: ``succeeded``, ``failed``, ``retry`` or ``stopped`` (cancelled or
    taken over)."""
    job_id = job.id
    max_attempts = current_app.config["JOB_MAX_ATTEMPTS"]
    if job.attempts > max_attempts:
        _give_up(job, worker, job.error_description or f"The job was started {max_attempts} times without ending.")
        return "failed"
    if job.lost_runs >= MAX_LOST_RUNS:
        _give_up(
            job,
            worker,
            f"Its worker vanished {job.lost_runs} times at the same point ({job.checkpoint} rows done), e.g. "
            "killed for the memory it used; the job is not resumed again.",
        )
        return "failed"
    try:
        _run_handler(job, worker)
    except LeaseLost:
        db.session.rollback()
        log.info("Job %s was cancelled or taken over; stopping", job_id)
        return "stopped"
    except RetryLater as exc:
        db.session.rollback()
        if job.attempts >= max_attempts:
            _give_up(job, worker, f"{exc} (gave up after {job.attempts} attempts)")
            return "failed"
        _retry_later(job, worker, str(exc))
        return "retry"
    except JobFailed as exc:
        db.session.rollback()
        _give_up(job, worker, str(exc))
        return "failed"
    except Exception:
        db.session.rollback()
        log.exception("Job %s failed", job_id)
        _give_up(job, worker, "The job stopped on an unexpected error; it has been logged.")
        return "failed"
    return "succeeded" if _finish(job_id, worker, JobState.SUCCEEDED) else "stopped"


def sweep(limit: int = 100) -> int:
    """Dispatch again jobs that nobody is running: lost queue messages and expired leases. Returns how many."""
    now = utcnow()
    stale = now - timedelta(seconds=_lease_seconds())
    ids = db.session.scalars(
        select(Job.id)
        .where(
            Job.state.in_(JobState.ACTIVE),
            or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < now),
            or_(Job.dispatched_at.is_(None), Job.dispatched_at < stale),
        )
        .order_by(Job.created_at)
        .limit(limit)
    ).all()
    if not ids:
        db.session.rollback()
        return 0
    db.session.execute(update(Job).where(Job.id.in_(ids)).values(dispatched_at=now))
    db.session.commit()
    for job_id in ids:
        log.info("Sweeper dispatches job %s again", job_id)
        queue.dispatch(job_id)
    return len(ids)


@dataclass
class JobsSnapshot:
    """What the jobs table says at one moment, for the metrics: jobs by (kind, state), bulk rows by outcome, the
    oldest queued job's creation time."""

    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    oldest_queued: datetime | None = None


def snapshot() -> JobsSnapshot:
    """Count the jobs by kind and state (every known pair, zero included), their rows, the oldest queued job."""
    counts = {(kind, state): 0 for kind in (JobKind.BULK_RECORDS, JobKind.RECORD_FILE) for state in _STATES}
    for kind, state, count in db.session.execute(
        select(Job.kind, Job.state, func.count()).group_by(Job.kind, Job.state)
    ):
        counts[(kind, state)] = count
    sums = db.session.execute(
        select(
            func.coalesce(func.sum(Job.inserted), 0),
            func.coalesce(func.sum(Job.duplicates), 0),
            func.coalesce(func.sum(Job.failed), 0),
        )
    ).one()
    oldest = db.session.scalar(select(func.min(Job.created_at)).where(Job.state == JobState.QUEUED))
    db.session.rollback()
    return JobsSnapshot(counts, dict(zip(("inserted", "duplicate", "failed"), map(int, sums), strict=True)), oldest)


_STATES = (JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)
