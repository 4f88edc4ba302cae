"""Accounts: passwords hashed with scrypt under one policy, admin sessions that end on the server."""

import functools
import secrets
from pathlib import Path

from sqlalchemy import func, select
from werkzeug.security import check_password_hash, generate_password_hash

from webapp.errors import ValidationError
from webapp.extensions import db
from webapp.models import Account, Role
from webapp.services.common import commit

MIN_PASSWORD_LENGTH = 12
# Shorter local parts ("a@…", "ops@…") would refuse too many good passwords that merely contain them.
MIN_EMAIL_NAME_IN_PASSWORD = 4
COMMON_PASSWORDS_FILE = Path(__file__).with_name("common_passwords.txt")
# Checked against when the email is unknown, so a wrong email costs the same hashing time as a wrong password.
_UNKNOWN_ACCOUNT_HASH = generate_password_hash(secrets.token_urlsafe(16))


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
