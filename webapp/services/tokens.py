"""API tokens: stored as SHA-256, their secret shown once, at most the role of the account they belong to.

A process keeps the grant it looked up for up to ``GRANT_CACHE_SECONDS``, so most API calls make no round trip
for their token. A revocation (or a change of the account's role) therefore takes effect at once in the process
that made it and within ``GRANT_CACHE_SECONDS`` in every other one; an expiry date is checked on every call.
"""

import hashlib
import secrets
import threading
import time
import uuid
from datetime import timedelta

from flask import current_app
from sqlalchemy import bindparam, event, select, update
from sqlalchemy.orm import Session

from webapp.errors import ForbiddenError, NotFoundError
from webapp.extensions import db
from webapp.models import Account, ApiToken, Role, utcnow
from webapp.services.common import commit

TOKEN_PREFIX = "scr_"
# The longest a revocation waits to reach every process (README, Authentication).
GRANT_CACHE_SECONDS = 5.0
# Past this many live tokens cached by one app, the cache starts over rather than grow.
GRANT_CACHE_SIZE = 10_000

# Built once: every API request looks its token up.
TOKEN_GRANT = (
    select(
        ApiToken.id,
        ApiToken.account_id,
        ApiToken.role,
        ApiToken.expires_at,
        ApiToken.revoked_at,
        ApiToken.last_used_at,
        Account.role.label("account_role"),
    )
    .join(Account, Account.id == ApiToken.account_id)
    .where(ApiToken.token_hash == bindparam("token_hash"))
)


def hash_token(secret: str) -> str:
    """The stored form of a token (tokens are long and random, so a plain SHA-256 suffices)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(
    account: Account, name: str | None = None, role: str | None = None, expires_in_days: int | None = None
):
    """A new token for ``account`` with at most its role, named ``token <UTC date>`` unless named; returns (token
    row, secret shown once)."""
    name = name or f"token {utcnow().date().isoformat()}"
    role = role or account.role
    if not Role.at_least(account.role, role):
        raise ForbiddenError(f"A token may have at most the account's role ({account.role}), not {role}.")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(
        account_id=account.id,
        name=name,
        role=role,
        token_hash=hash_token(secret),
        expires_at=utcnow() + timedelta(days=expires_in_days) if expires_in_days else None,
    )
    db.session.add(token)
    commit("The token could not be stored.")
    return token, secret


class _Changes:
    """How many times this process has changed a token or an account: a cached grant older than the last change
    is looked up again, so the process's own revocations take effect at once."""

    def __init__(self):
        self.count = 0
        self._lock = threading.Lock()

    def bump(self) -> None:
        with self._lock:
            self.count += 1


_changes = _Changes()


@event.listens_for(Session, "after_flush")
def _note_changes(session: Session, _context) -> None:
    # Counted at the commit: a lookup between the flush and the commit still reads the old row.
    if any(isinstance(item, (ApiToken, Account)) for item in (*session.new, *session.dirty, *session.deleted)):
        session.info["changes_tokens"] = True


@event.listens_for(Session, "after_commit")
def _count_changes(session: Session) -> None:
    if session.info.pop("changes_tokens", False):
        _changes.bump()


@event.listens_for(Session, "after_rollback")
def _forget_changes(session: Session) -> None:
    session.info.pop("changes_tokens", None)


def token_grant(secret: str):
    """The live token with that secret (not revoked, not expired) with its account's current role, or None.

    Looked up outside the request's transaction, and kept for ``GRANT_CACHE_SECONDS`` (see the module).
    """
    token_hash = hash_token(secret)
    cache = current_app.extensions.setdefault("token_grants", {})
    cached = cache.get(token_hash)
    if cached is not None:
        changes, loaded_at, grant = cached
        if changes == _changes.count and time.monotonic() - loaded_at < GRANT_CACHE_SECONDS:
            return grant if grant.expires_at is None or grant.expires_at > utcnow() else None
    # Read the counter before the lookup: a change committed during it makes the entry stale, never hidden.
    changes, loaded_at = _changes.count, time.monotonic()
    grant = _look_up_grant(token_hash)
    if grant is None:
        # Unknown tokens are not kept: a caller sending random ones must not grow the cache.
        cache.pop(token_hash, None)
        return None
    if len(cache) >= GRANT_CACHE_SIZE:
        cache.clear()
    cache[token_hash] = (changes, loaded_at, grant)
    return grant


def _look_up_grant(token_hash: str):
    """The live token row with that hash and its account's role, from the database; None when there is none."""
    with db.autocommit() as connection:
        grant = connection.execute(TOKEN_GRANT, {"token_hash": token_hash}).first()
        now = utcnow()
        if grant is None or grant.revoked_at is not None or (grant.expires_at and grant.expires_at <= now):
            return None
        if grant.last_used_at is None or now - grant.last_used_at > timedelta(minutes=5):
            # At most one write every few minutes per token.
            connection.execute(update(ApiToken).where(ApiToken.id == grant.id).values(last_used_at=now))
    return grant


def list_tokens(account: Account):
    """The account's tokens, oldest first."""
    return select(ApiToken).where(ApiToken.account_id == account.id).order_by(ApiToken.created_at, ApiToken.id)


def revoke_token(token_id: uuid.UUID, caller: Account | None = None) -> ApiToken:
    """Revoke a token. A caller may revoke its own (an admin anyone's; others' are a 404); without a
    caller (the operator's CLI) any token."""
    token = db.session.get(ApiToken, token_id)
    if token is None or (caller and token.account_id != caller.id and caller.role != Role.ADMIN):
        raise NotFoundError(f"No token of yours has the id {token_id}.")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        db.session.commit()
    return token
