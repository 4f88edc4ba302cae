"""Fuzzing: schemathesis sends generated requests to every operation of the app's own OpenAPI document.

Every operation, on PostgreSQL and on SQLite, authenticated as an admin, positive and negative data, with every
check schemathesis has: no 5xx, only documented status codes, headers and content types, bodies that match the
documented schemas (and each line of an NDJSON stream, which schemathesis does not read, matches its schema),
invalid data rejected, valid data not refused with a 4xx the schema does not explain, auth enforced, undocumented
methods answered 405 with ``Allow``.

The requests go over loopback sockets to the production stack, not to the WSGI app: the shipped nginx config in
front of gunicorn, as docker-compose runs them. The contract is HTTP, and a generated request (odd header
values, over-long request lines, percent-encoded paths, multipart bodies) must get through nginx and gunicorn
parsing it, the app's in-process job thread and streamed responses exactly as a client's would, errors that
nginx answers itself included. A server error's traceback is in gunicorn's log, whose new lines are attached to
the failure.

The seed is fixed, so ``make test`` repeats the same cases; ``SCRIPTORIUM_TEST_FUZZ_EXAMPLES`` sets how many
cases the fuzzing phase generates per operation (``make fuzz`` runs many more). Reference data (an experiment
with a season, a site, a script with a run, a dataset and a record with a file, a bulk job, a spare token) is
created first and after any request that deleted or renamed it; generated path ids and names are swapped for
those of the reference data on about half of the cases, so requests get past "not found".
"""

import contextlib
import copy
import os
import tempfile
import time
import uuid
import zlib
from collections import Counter
from pathlib import Path

import jsonschema_rs
import orjson
import pytest
import requests
import schemathesis

from config import load_settings
from tests.conftest import empty_tables, make_token
from tests.servers import gunicorn_app, nginx_proxy, wait_until
from webapp import create_app

EXAMPLES = int(os.environ.get("SCRIPTORIUM_TEST_FUZZ_EXAMPLES", "25"))
SEED = int(os.environ.get("SCRIPTORIUM_TEST_FUZZ_SEED", "20261201"))

EXPERIMENT, SEASON, SITE, SCRIPT, DATASET = "fuzz-experiment", "fuzz-season", "fuzz-site", "fuzz-script", "fuzz-data"
RECORD_TIMESTAMP = "2024-05-01T12:00:00+00:00"


def openapi_document() -> dict:
    """The document the app serves at ``/api/openapi.json`` (built without a database)."""
    with tempfile.TemporaryDirectory() as folder:
        unused = f"sqlite:///{folder}/unused.db"
        settings = load_settings(instance_path=folder, database_url=unused, secret_key="fuzz", storage_backend="local")
        app = create_app(settings)
        with app.app_context():
            return app.extensions["api"].spec.to_dict()


DOCUMENT = openapi_document()
# The proxy's limits on a request's size (nginx answers 414, 431), which the schema cannot express: valid data
# may meet them, and they refuse invalid data as well as a 400 or 422 would. Otherwise schemathesis's defaults.
SIZE_LIMITS = ["414", "431"]
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx", *SIZE_LIMITS]
REJECTED = ["400", "401", "403", "404", "405", "406", "409", "415", "422", "428", "429", "5xx", *SIZE_LIMITS]
schema = schemathesis.openapi.from_dict(
    copy.deepcopy(DOCUMENT),  # schemathesis adds the links it infers to the document it is given
    config=schemathesis.Config.from_dict(
        {
            "seed": SEED,
            # Credentials are real (an admin token sent with every case), not generated; `ignored_auth` still
            # sends each operation without them and with wrong ones.
            "generation": {"mode": "all", "max-examples": EXAMPLES, "with-security-parameters": False},
            "checks": {
                "enabled": True,
                "positive_data_acceptance": {"expected-statuses": ACCEPTED},
                "negative_data_rejection": {"expected-statuses": REJECTED},
            },
            # On writes, valid data may also meet a 422: a name that must exist (experiment, season, site), a
            # start date after the end date.
            "operations": [
                {
                    "include-method": ["POST", "PATCH"],
                    "checks": {"positive_data_acceptance": {"expected-statuses": [*ACCEPTED, "422"]}},
                }
            ],
        }
    ),
)


def stream_line_schemas() -> dict:
    """The document's schemas as the lines of an NDJSON stream carry them: null fields left out, not null."""
    schemas = {}
    for name, component in DOCUMENT["components"]["schemas"].items():
        nullable = {key for key, prop in component.get("properties", {}).items() if prop.get("nullable")}
        line = {**component, "properties": dict(component.get("properties", {}))}
        for key in nullable:
            line["properties"][key] = {k: v for k, v in line["properties"][key].items() if k != "nullable"}
        if "required" in line:
            line["required"] = [key for key in line["required"] if key not in nullable]
        schemas[name] = line
    return {"components": {"schemas": schemas}}


STREAM_SCHEMAS = stream_line_schemas()


def ndjson_lines_conform(ctx, response, case):
    """Each line of an NDJSON stream is one JSON object matching the documented schema, nulls left out (the
    contract's stream form). schemathesis skips the bodies of media types it cannot parse, NDJSON among them; a
    stream that failed midway ends with an error line, which no record schema matches."""
    content_type = next((values[0] for key, values in response.headers.items() if key.lower() == "content-type"), "")
    if not content_type.startswith("application/x-ndjson"):
        return None
    content = DOCUMENT["paths"][case.operation.path][case.method.lower()]["responses"][str(response.status_code)]
    schema = {**STREAM_SCHEMAS, **content["content"]["application/x-ndjson"]["schema"]}
    validator = jsonschema_rs.Draft4Validator(schema, validate_formats=True)
    for number, line in enumerate(response.content.splitlines(), start=1):
        item = orjson.loads(line)
        errors = [error.message for error in validator.iter_errors(item)]
        assert not errors, f"line {number} of the stream does not match its schema: {errors}: {line[:500]!r}"
    return None


class Target:
    """The server under test, its admin credentials and the reference data it holds."""

    def __init__(self, base: str, token: str, log_path: Path):
        self.base, self.token, self.log_path = base, token, log_path
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {token}"
        self.ids: dict[str, str] = {}
        self.cases = 0
        self.statuses: Counter[int] = Counter()
        self.names = {
            "experiment_name": EXPERIMENT,
            "season_name": SEASON,
            "site_name": SITE,
            "script_name": SCRIPT,
            "dataset_name": DATASET,
        }

    def call(self, method: str, path: str, **kwargs) -> requests.Response:
        return self.http.request(method, self.base + path, timeout=30, **kwargs)

    def _existing(self, kind: str, path: str, name_field: str, name: str) -> bool:
        """Whether the remembered ``kind`` still exists under its reference name (renamed back if need be)."""
        if kind not in self.ids:
            return False
        found = self.call("GET", f"{path}/{self.ids[kind]}")
        if found.status_code == 404:
            return False
        assert found.status_code == 200, found.text
        if found.json()[name_field] != name:
            renamed = self.call("PATCH", f"{path}/{self.ids[kind]}", json={name_field: name})
            assert renamed.status_code == 200, renamed.text
        return True

    def ensure_reference_data(self) -> None:
        """Create what is missing of the reference data (the first time, or after a case deleted some)."""
        if not self._existing("experiment_id", "/api/experiments/id", "experiment_name", EXPERIMENT):
            self.ids["experiment_id"] = self._create("/api/experiments", {"experiment_name": EXPERIMENT})
            self.ids.pop("season_id", None)
        if not self._existing("season_id", "/api/seasons/id", "season_name", SEASON):
            path = f"/api/experiments/id/{self.ids['experiment_id']}/seasons"
            self.ids["season_id"] = self._create(path, {"season_name": SEASON})
        if not self._existing("site_id", "/api/sites/id", "site_name", SITE):
            self.ids["site_id"] = self._create("/api/sites", {"site_name": SITE})
        if not self._existing("script_id", "/api/scripts/id", "script_name", SCRIPT):
            self.ids["script_id"] = self._create("/api/scripts", {"script_name": SCRIPT, "script_extension": "py"})
            for kind in ("record_id", "script_run_id", "job_id"):
                self.ids.pop(kind, None)
        script = f"/api/scripts/id/{self.ids['script_id']}"
        # Associations and the dataset are created again by these (idempotent) calls.
        self._create(script, {"experiment_name": EXPERIMENT}, method="PATCH")
        self._create(f"{script}/datasets", {"dataset_name": DATASET, "experiment_name": EXPERIMENT})
        if "script_run_id" not in self.ids:
            self.ids["script_run_id"] = self._create(f"{script}/runs", {"script_run_info": {"fuzz": True}})
        self._ensure_record(script)
        if "job_id" not in self.ids:
            rows = b'{"timestamp": "2024-05-02T12:00:00Z", "script_data": {"height_cm": 43}}\n'
            form = {"experiment_name": EXPERIMENT, "season_name": SEASON, "site_name": SITE}
            job = self.call("POST", f"{script}/records/bulk", data=form, files={"file": ("rows.ndjson", rows)})
            assert job.status_code == 202, job.text
            self.ids["job_id"] = job.json()["id"]
        if "token_id" not in self.ids or self._revoked(self.ids["token_id"]):
            self.ids["token_id"] = self._create("/api/tokens", {"name": "fuzz spare"})

    def _ensure_record(self, script: str) -> None:
        """The reference record with a file, created when missing; waits until the file is stored."""
        if "record_id" in self.ids:
            found = self.call("GET", f"/api/scripts/records/id/{self.ids['record_id']}")
            if found.status_code == 200:
                return
        form = {
            "timestamp": RECORD_TIMESTAMP,
            "experiment_name": EXPERIMENT,
            "season_name": SEASON,
            "site_name": SITE,
            "dataset_name": DATASET,
            "script_data": '{"height_cm": 41.5}',
        }
        created = self.call("POST", f"{script}/records", data=form, files={"record_file": ("leaf.txt", b"leaf")})
        assert created.status_code == 200, created.text
        self.ids["record_id"] = created.json()["id"]
        wait_until(
            lambda: self.call("GET", f"/api/scripts/records/id/{self.ids['record_id']}").json(),
            lambda record: record["file_status"] != "pending",
        )

    def _revoked(self, token_id: str) -> bool:
        tokens = self.call("GET", "/api/tokens", params={"limit": 1000}).json()
        return not any(t["id"] == token_id and t["revoked_at"] is None for t in tokens)

    def _create(self, path: str, body: dict, method: str = "POST") -> str:
        response = self.call(method, path, json=body)
        assert response.status_code == 200, f"{method} {path}: {response.status_code} {response.text}"
        return response.json()["id"]

    def aim(self, values):
        """``values`` (path, query or body) with, on about half of the cases, every valid generated id and name
        swapped for the reference data's (all together: a record needs its experiment, season and site)."""
        if not isinstance(values, dict) or zlib.crc32(repr(values).encode()) % 2:
            return values
        aimed = dict(values)
        for key, value in values.items():
            known, valid = (self.ids.get(key), _uuid) if key in self.ids else (self.names.get(key), _name)
            if known is not None and valid(value):
                aimed[key] = known
        return aimed

    def log_offset(self) -> int:
        return self.log_path.stat().st_size

    def log_since(self, offset: int) -> str:
        with self.log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")[-8000:]


# What the swap may replace: valid values only, so that an invalid (negative) case stays invalid.
def _name(value) -> bool:
    return isinstance(value, str) and 1 <= len(value) <= 255 and "\x00" not in value


def _uuid(value) -> bool:
    try:
        uuid.UUID(value)
    except (TypeError, ValueError, AttributeError):
        return False
    return True


@pytest.fixture(scope="module")
def target(request, session_app, database_url, tmp_path_factory):
    """nginx and gunicorn serving the app on this database, with an admin token and the reference data."""
    token = make_token(session_app)
    instance = tmp_path_factory.mktemp("fuzz")
    started = time.monotonic()
    # The fuzzer's wrong-password probes of POST /api/tokens are thousands of failed sign-ins from one address:
    # throttled (429) past the contract's default limits, which are not what is under test here.
    limits = {"signin_limit_per_email": "1000000 per minute", "signin_limit_per_address": "1000000 per minute"}
    try:
        with contextlib.ExitStack() as stack:
            with pytest.MonkeyPatch.context() as patch:
                # Production's gunicorn settings behind nginx (deploy/nginx, docker-compose).
                patch.setenv("GUNICORN_CMD_ARGS", "--limit-request-fields 32768")
                upstream = stack.enter_context(gunicorn_app(database_url, instance, proxy_count=1, **limits))
            base = stack.enter_context(nginx_proxy(upstream, instance))
            served = requests.get(f"{base}/api/openapi.json", timeout=30).json()
            assert served == DOCUMENT, "the fuzzed document differs from the one the server serves"
            server = Target(base, token, instance / "gunicorn.log")
            server.ensure_reference_data()
            global _current
            _current = server
            yield server
    finally:
        _current = None
        empty_tables(session_app)
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        dialect = database_url.split(":", 1)[0].split("+", 1)[0]
        answered = ", ".join(f"{status}xx {count}" for status, count in sorted(server.statuses.items()))
        with capture.global_and_fixture_disabled():
            reporter.write_line(
                f"\nfuzz on {dialect}: {server.cases} cases ({answered}; {EXAMPLES} fuzzed per operation, "
                f"seed {SEED}) in {time.monotonic() - started:.0f} s"
            )


_current: Target | None = None


def _aimed(strategy):
    """Aim what ``strategy`` generates at the current target's reference data. Done while generating, so the
    case's record of what is valid and what is not describes what is sent."""
    return strategy.map(lambda values: _current.aim(values) if _current is not None else values)


@schema.hook
def before_generate_path_parameters(context, strategy):
    return _aimed(strategy)


@schema.hook
def before_generate_query(context, strategy):
    return _aimed(strategy)


@schema.hook
def before_generate_body(context, strategy):
    return _aimed(strategy)


@schema.parametrize()
def test_api(case, target):
    """Every generated request gets a documented answer, never a server error."""
    target.cases += 1
    offset = target.log_offset()
    try:
        response = case.call_and_validate(
            base_url=target.base,
            headers={"Authorization": f"Bearer {target.token}"},
            additional_checks=[ndjson_lines_conform],
        )
    except BaseException as failure:  # schemathesis raises its findings as a BaseExceptionGroup
        failure.add_note(f"gunicorn log:\n{target.log_since(offset)}")
        raise
    target.statuses[response.status_code // 100] += 1
    if case.method in ("DELETE", "PATCH") and response.status_code == 200:
        target.ensure_reference_data()
