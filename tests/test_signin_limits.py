"""Failed password sign-ins are limited per email and per client address, on HTTP Basic (POST /api/tokens) and the
admin sign-in form alike: 429 with Retry-After past the limits, for known and unknown emails; counted in memory in
the embedded default and in Redis (shared by every process) when configured."""

import base64
import os
import re
import uuid

import pytest
import redis

from config import load_settings
from tests.conftest import PASSWORD, empty_tables, make_app, make_token, token_client
from tests.servers import free_port

MACHINE_REDIS = os.environ.get("SCRIPTORIUM_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
SMALL_LIMITS = {"signin_limit_per_email": "3 per 15 minutes", "signin_limit_per_address": "5 per 15 minutes"}


def basic(email: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{email}:{password}".encode()).decode()}


def token_request(client, email: str, password: str, address: str = "192.0.2.1"):
    """POST /api/tokens with HTTP Basic from the client address ``address``."""
    return client.post(
        "/api/tokens", json={"name": "t"}, headers=basic(email, password), environ_overrides={"REMOTE_ADDR": address}
    )


def unknown_email() -> str:
    return f"nobody-{uuid.uuid4().hex[:8]}@example.org"


@pytest.fixture
def limited_app(tmp_path, database_url):
    """An app with its own counters (3 failed sign-ins per email, 5 per address) and an account."""
    from webapp.services import accounts

    app = make_app(tmp_path, database_url, **SMALL_LIMITS)
    with app.app_context():
        accounts.create_account("known@example.org", PASSWORD, "writer")
        yield app
    empty_tables(app)


def assert_throttled(response):
    """A 429 in the error shape whose Retry-After is within the window."""
    assert response.status_code == 429, response.data
    assert response.json["code"] == 429 and response.json["error"] == "Too Many Requests"
    assert "Too many failed sign-ins" in response.json["error_description"]
    assert 1 <= int(response.headers["Retry-After"]) <= 15 * 60


def test_by_default_ten_failed_sign_ins_per_email_then_429_for_known_and_unknown_emails(tmp_path, database_url):
    """The contract's default: 10 failures per email in 15 minutes; the 11th attempt is 429, even with the right
    password, and an unknown email is treated the same."""
    from webapp.services import accounts

    app = make_app(tmp_path, database_url)
    client = app.test_client()
    try:
        with app.app_context():
            accounts.create_account("victim@example.org", PASSWORD, "writer")
        stranger = unknown_email()
        for attempt in range(10):
            assert token_request(client, "victim@example.org", f"guess {attempt}").status_code == 401
            assert token_request(client, stranger, f"guess {attempt}", address="192.0.2.2").status_code == 401
        assert_throttled(token_request(client, "victim@example.org", "guess 10"))
        assert_throttled(token_request(client, "Victim@Example.org ", PASSWORD, address="192.0.2.3"))
        assert_throttled(token_request(client, stranger, "guess 10", address="192.0.2.2"))
    finally:
        empty_tables(app)


def test_by_default_a_hundred_failed_sign_ins_per_address(tmp_path, database_url, monkeypatch):
    """The contract's default per client address: 100 failures, whatever the emails, then 429."""
    from webapp.services import accounts

    app = make_app(tmp_path, database_url)
    # A cheap password check: the limit counts attempts, not hashing time.
    monkeypatch.setattr(accounts, "check_password", lambda email, password: None)
    client = app.test_client()
    for _ in range(100):
        assert token_request(client, unknown_email(), "guess", address="192.0.2.50").status_code == 401
    assert_throttled(token_request(client, unknown_email(), "guess", address="192.0.2.50"))
    assert token_request(client, unknown_email(), "guess", address="192.0.2.51").status_code == 401


def test_only_failed_sign_ins_count(limited_app):
    """Successful sign-ins, however many, use up nothing."""
    client = limited_app.test_client()
    for _ in range(8):
        assert token_request(client, "known@example.org", PASSWORD).status_code == 200
    for _ in range(3):
        assert token_request(client, "known@example.org", "wrong password").status_code == 401
    assert_throttled(token_request(client, "known@example.org", PASSWORD))


def test_the_address_limit_spans_every_email(limited_app):
    """Failures from one address with ever new emails run into the address's limit; other addresses do not."""
    client = limited_app.test_client()
    for _ in range(5):
        assert token_request(client, unknown_email(), "guess", address="198.51.100.7").status_code == 401
    assert_throttled(token_request(client, unknown_email(), "guess", address="198.51.100.7"))
    assert_throttled(token_request(client, "known@example.org", PASSWORD, address="198.51.100.7"))
    assert token_request(client, "known@example.org", PASSWORD, address="198.51.100.8").status_code == 200


def test_a_successful_sign_in_does_not_reset_another_address_count(limited_app):
    """An attacker's failures stay counted when the account's owner signs in from elsewhere."""
    client = limited_app.test_client()
    attacker, owner = "203.0.113.66", "203.0.113.10"
    for _ in range(2):
        assert token_request(client, "known@example.org", "guess", address=attacker).status_code == 401
    for _ in range(2):
        assert token_request(client, unknown_email(), "guess", address=attacker).status_code == 401
    assert token_request(client, "known@example.org", PASSWORD, address=owner).status_code == 200
    assert token_request(client, "known@example.org", "guess", address=attacker).status_code == 401
    assert_throttled(token_request(client, "known@example.org", "guess", address=attacker))
    assert_throttled(token_request(client, unknown_email(), "guess", address=attacker))


def test_token_requests_made_with_a_token_are_not_limited(limited_app):
    """Only password sign-ins count: a token creating tokens is never throttled, nor counted."""
    client = token_client(limited_app, make_token(limited_app, "writer"))
    for _ in range(6):
        assert client.post("/api/tokens", json={"name": "t"}).status_code == 200
    assert token_request(limited_app.test_client(), "known@example.org", PASSWORD).status_code == 200


def test_the_admin_form_counts_and_answers_429_as_a_page(limited_app):
    """Failures on the sign-in form and on HTTP Basic add up; past the limit the form answers a 429 page."""
    browser = limited_app.test_client()
    page = browser.get("/admin/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)

    def sign_in(password):
        form = {"email": "known@example.org", "password": password, "csrf_token": token}
        return browser.post("/admin/login", data=form, environ_overrides={"REMOTE_ADDR": "192.0.2.1"})

    assert sign_in("wrong password").status_code == 401
    assert sign_in("wrong password").status_code == 401
    assert token_request(browser, "known@example.org", "wrong password").status_code == 401
    throttled = sign_in(PASSWORD)
    assert throttled.status_code == 429
    assert throttled.mimetype == "text/html"
    assert "Too many failed sign-ins" in throttled.get_data(as_text=True)
    assert 1 <= int(throttled.headers["Retry-After"]) <= 15 * 60
    assert browser.get("/admin/").status_code == 302
    assert_throttled(token_request(browser, "known@example.org", PASSWORD))


@pytest.fixture
def machine_redis():
    """The machine's Redis; the run fails (never skips) without it. Keys of this test are deleted after it."""
    client = redis.Redis.from_url(MACHINE_REDIS)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis is needed at {MACHINE_REDIS}: {exc}")
    prefix = f"scriptorium-test-{uuid.uuid4().hex[:8]}"
    yield prefix
    for key in client.scan_iter(match=f"*{prefix}*"):
        client.delete(key)


def test_counts_kept_in_redis_are_shared_by_every_process(tmp_path, database_url, machine_redis):
    """With Redis storage, two web processes (two apps here) count the same failures."""
    from webapp.services import accounts

    settings = {**SMALL_LIMITS, "ratelimit_storage_url": MACHINE_REDIS, "ratelimit_key_prefix": machine_redis}
    first = make_app(tmp_path / "first", database_url, **settings)
    second = make_app(tmp_path / "second", database_url, **settings)
    try:
        with first.app_context():
            accounts.create_account("known@example.org", PASSWORD, "writer")
        assert token_request(first.test_client(), "known@example.org", "guess").status_code == 401
        assert token_request(second.test_client(), "known@example.org", "guess").status_code == 401
        assert token_request(first.test_client(), "known@example.org", "guess").status_code == 401
        assert_throttled(token_request(second.test_client(), "known@example.org", PASSWORD))
        assert_throttled(token_request(first.test_client(), "known@example.org", PASSWORD))
        assert redis.Redis.from_url(MACHINE_REDIS).keys(f"*{machine_redis}*")
    finally:
        empty_tables(first)


def test_an_unreachable_counter_refuses_sign_ins_with_503(tmp_path, database_url):
    """When Redis cannot be reached sign-ins are refused (503, Retry-After), not let through uncounted; tokens
    keep working."""
    app = make_app(tmp_path, database_url, ratelimit_storage_url=f"redis://127.0.0.1:{free_port()}/0")
    try:
        response = token_request(app.test_client(), "known@example.org", PASSWORD)
        assert response.status_code == 503
        assert response.json["code"] == 503 and response.headers["Retry-After"]
        assert token_client(app, make_token(app, "reader")).get("/api/sites").status_code == 200
    finally:
        empty_tables(app)


def test_limits_are_settings_that_fail_at_boot_when_malformed(tmp_path, database_url):
    """A limit that does not parse stops the app from starting."""
    with pytest.raises(ValueError):
        make_app(tmp_path, database_url, signin_limit_per_email="ten a minute or so")


def test_counts_go_to_the_brokers_redis_unless_told_otherwise(monkeypatch):
    """Redis storage follows the broker by default; the embedded default counts in memory."""
    assert load_settings().ratelimit_storage_url == "memory://"
    monkeypatch.setenv("SCRIPTORIUM_BROKER_URL", "redis://broker:6379/0")
    assert load_settings().ratelimit_storage_url == "redis://broker:6379/0"
    monkeypatch.setenv("SCRIPTORIUM_RATELIMIT_STORAGE_URL", "redis://limits:6379/3")
    assert load_settings().ratelimit_storage_url == "redis://limits:6379/3"
