"""Summaries for the admin pages: counts, a human search of scripts, records per day."""

import uuid

from sqlalchemy import func, select

from webapp.extensions import db
from webapp.models import Account, ApiToken, Experiment, Job, JobState, Record, Script, Site


def dashboard_counts() -> dict[str, int]:
    """How many scripts, records, experiments, sites and active jobs there are."""
    count = lambda stmt: db.session.scalar(stmt) or 0  # noqa: E731
    return {
        "scripts": count(select(func.count(Script.id))),
        "records": count(select(func.count(Record.id))),
        "experiments": count(select(func.count(Experiment.id))),
        "sites": count(select(func.count(Site.id))),
        "active jobs": count(select(func.count(Job.id)).where(Job.state.in_(JobState.ACTIVE))),
    }


def recent_jobs(limit: int = 10) -> list[Job]:
    """The newest jobs."""
    return list(db.session.scalars(jobs_newest_first().limit(limit)))


def find_scripts(text: str | None):
    """Scripts whose name or extension contains ``text`` (any case), oldest first; all without text."""
    stmt = select(Script).order_by(Script.created_at, Script.id)
    if text:
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        stmt = stmt.where(
            Script.script_name.ilike(pattern, escape="\\") | Script.script_extension.ilike(pattern, escape="\\")
        )
    return stmt


def records_per_day(script_id: uuid.UUID, limit: int = 366) -> list[tuple]:
    """(collection date, record count) of a script's last ``limit`` collection days, oldest first."""
    rows = db.session.execute(
        select(Record.collection_date, func.count(Record.id))
        .where(Record.script_id == script_id)
        .group_by(Record.collection_date)
        .order_by(Record.collection_date.desc())
        .limit(limit)
    ).all()
    return list(reversed(rows))


def jobs_newest_first():
    """All jobs, newest first (the admin list)."""
    return select(Job).order_by(Job.created_at.desc(), Job.id.desc())


def accounts_with_tokens() -> list[tuple[Account, list[ApiToken]]]:
    """Every account with its tokens, oldest first."""
    tokens: dict = {}
    for token in db.session.scalars(select(ApiToken).order_by(ApiToken.created_at)):
        tokens.setdefault(token.account_id, []).append(token)
    return [(a, tokens.get(a.id, [])) for a in db.session.scalars(select(Account).order_by(Account.created_at))]
