"""Accounts and API tokens: passwords hashed with scrypt under one policy, tokens stored as SHA-256 and shown once."""

import functools
import hashlib
import secrets
import uuid
from datetime import timedelta
from pathlib import Path

from sqlalchemy import bindparam, func, select, update
from werkzeug.security import check_password_hash, generate_password_hash

from webapp.errors import ForbiddenError, NotFoundError, ValidationError
from webapp.extensions import db
from webapp.models import Account, ApiToken, Role, utcnow
from webapp.services.common import commit

TOKEN_PREFIX = "scr_"
MIN_PASSWORD_LENGTH = 12
# Shorter local parts ("a@…", "ops@…") would refuse too many good passwords that merely contain them.
MIN_EMAIL_NAME_IN_PASSWORD = 4
COMMON_PASSWORDS_FILE = Path(__file__).with_name("common_passwords.txt")
# Checked against when the email is unknown, so a wrong email costs the same hashing time as a wrong password.
_UNKNOWN_ACCOUNT_HASH = generate_password_hash(secrets.token_urlsafe(16))


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


def normalise_email(email: str) -> str:
    return email.strip().lower()


@functools.cache
def common_passwords() -> frozenset[str]:
    """The shipped list of common passwords (read once per process)."""
    lines = COMMON_PASSWORDS_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(line for line in lines if line and not line.startswith("#"))


def password_problem(email: str, password: str) -> str | None:
    """What makes ``password`` unacceptable for the account ``email`` under the policy, or None."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"A password needs at least {MIN_PASSWORD_LENGTH} characters."
    folded, email = password.casefold(), normalise_email(email).casefold()
    name = email.partition("@")[0]
    if folded == email or (len(name) >= MIN_EMAIL_NAME_IN_PASSWORD and name in folded):
        return "A password may not be or contain the account's email."
    if "".join(folded.split()) in common_passwords():
        return "This password is too common; choose a longer or less predictable one (a few unrelated words work)."
    return None


def check_password_policy(email: str, password: str) -> None:
    """Refuse (422) a password the policy does not accept."""
    problem = password_problem(email, password)
    if problem:
        raise ValidationError({"password": problem})


def random_password(email: str) -> str:
    """A random password that the policy accepts for ``email``."""
    while True:
        candidate = secrets.token_urlsafe(18)
        if password_problem(email, candidate) is None:
            return candidate


def create_account(email: str, password: str | None, role: str) -> Account:
    """Create an account (no password: it only owns tokens); 422 for a bad email, role or password, 409 when the
    email is taken."""
    email = normalise_email(email)
    if "@" not in email.strip("@"):
        raise ValidationError({"email": "Give an email address (name@host)."})
    if role not in Role.ORDER:
        raise ValidationError({"role": f"The role is one of {', '.join(Role.ORDER)}."})
    if password is not None:
        check_password_policy(email, password)
    account = Account(
        email=email, password_hash=generate_password_hash(password) if password is not None else None, role=role
    )
    db.session.add(account)
    commit(f"An account for {email!r} exists already.")
    return account


def set_password(account: Account, password: str) -> None:
    """Give ``account`` a new password (under the policy); every admin session of the account ends."""
    check_password_policy(account.email, password)
    account.password_hash = generate_password_hash(password)
    end_sessions(account)


def end_sessions(account: Account) -> None:
    """End every admin session of ``account``: their stored generation no longer matches."""
    # Incremented by the database, so two sign-outs at once both count; the attribute reloads on next use.
    account.session_generation = Account.session_generation + 1
    db.session.commit()


def ensure_admin(email: str, password: str) -> Account:
    """The admin account of that email, created (or promoted and given that password) as needed."""
    check_password_policy(email, password)
    account = account_by_email(email)
    if account is None:
        return create_account(email, password, Role.ADMIN)
    if account.role != Role.ADMIN:
        account.role = Role.ADMIN
        db.session.commit()
    if not check_password_hash(account.password_hash or "", password):
        set_password(account, password)
    return account


def account_by_email(email: str) -> Account | None:
    return db.session.scalar(select(Account).where(Account.email == normalise_email(email)))


def count_accounts() -> int:
    return db.session.scalar(select(func.count(Account.id)))


def check_password(email: str, password: str) -> Account | None:
    """The account when email and password match, else None — in the same time for an unknown email."""
    account = account_by_email(email)
    if account is None or not account.password_hash:
        check_password_hash(_UNKNOWN_ACCOUNT_HASH, password)
        return None
    return account if check_password_hash(account.password_hash, password) else None


def create_token(account: Account, name: str, role: str | None = None, expires_in_days: int | None = None):
    """A new token for ``account`` with at most its role; returns (token row, secret shown once)."""
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


def token_grant(secret: str):
    """The live token with that secret (not revoked, not expired) with its account's current role, or None.

    Read outside the request's transaction: one round trip on every API call.
    """
    with db.autocommit() as connection:
        grant = connection.execute(TOKEN_GRANT, {"token_hash": hash_token(secret)}).first()
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
