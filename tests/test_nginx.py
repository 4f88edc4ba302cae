"""gunicorn behind the shipped nginx config (deploy/nginx), both real processes on loopback, run as docker-compose
runs them: slow clients, oversize and malformed requests, a dead upstream, a long stream and a 1 GB upload."""

import hashlib
import http.client
import json
import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
import yaml
from click.testing import CliRunner
from werkzeug.middleware.proxy_fix import ProxyFix

from bench.support import RssWatch, worker_pid
from tests.conftest import empty_tables, make_app, make_token
from tests.servers import free_port, gunicorn_app, nginx_proxy, render_nginx_config, wait_until

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
MB = 1024 * 1024
START = datetime(2024, 6, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, postgresql_url):
    """gunicorn on PostgreSQL behind nginx, with web's settings from docker-compose; yields (nginx URL, gunicorn
    URL, admin token)."""
    tmp = tmp_path_factory.mktemp("nginx")
    app = make_app(tmp, postgresql_url)
    token = make_token(app)
    web = COMPOSE["services"]["web"]["environment"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GUNICORN_CMD_ARGS", web["GUNICORN_CMD_ARGS"])
        with (
            gunicorn_app(postgresql_url, tmp, proxy_count=web["SCRIPTORIUM_PROXY_COUNT"]) as upstream,
            nginx_proxy(upstream, tmp) as base,
        ):
            yield base, upstream, token
    empty_tables(app)


@pytest.fixture(scope="module")
def reference(stack):
    """An experiment with a season, a site and a script, created through nginx; the names and the script id."""
    base, _, token = stack
    http = authorized(token)
    names = {"experiment_name": "E", "season_name": "S", "site_name": "X"}
    experiment = http.post(f"{base}/api/experiments", json={"experiment_name": "E"}).json()
    http.post(f"{base}/api/experiments/id/{experiment['id']}/seasons", json={"season_name": "S"})
    http.post(f"{base}/api/sites", json={"site_name": "X"})
    script = http.post(f"{base}/api/scripts", json={"script_name": "through-nginx", "experiment_name": "E"}).json()
    return {"script_id": script["id"], **names}


def authorized(token: str) -> requests.Session:
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {token}"
    return http


def address(base: str) -> tuple[str, int]:
    parts = urlsplit(base)
    return parts.hostname, parts.port


def raw_request(base: str, request: bytes) -> tuple[int, dict, bytes]:
    """Send ``request`` as bytes, exactly as written; the status, headers and body of the answer."""
    with socket.create_connection(address(base), timeout=30) as sock:
        sock.sendall(request)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def assert_error_shape(status: int, headers: dict, body: bytes, code: int) -> None:
    """The answer is ``code`` with a JSON body in the API's error shape."""
    assert status == code, body
    assert headers["content-type"] == "application/json"
    error = json.loads(body)
    assert error["code"] == code
    assert error["error"] and error["error_description"]


def test_slow_clients_leave_health_probes_answering(stack):
    """200 connections trickling a body for 20 s leave every health probe through nginx answering, and each slow
    request is still served once its body is complete."""
    base, _, token = stack
    host, port = address(base)
    steps, step_bytes = 20, 2
    bodies = [json.dumps({"script_name": f"slow-{i}"}).rjust(steps * step_bytes).encode() for i in range(200)]
    connections = []
    for body in bodies:
        sock = socket.create_connection((host, port), timeout=30)
        sock.sendall(
            f"POST /api/scripts HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        )
        connections.append(sock)

    probes: list[int | str] = []
    done = threading.Event()

    def probe() -> None:
        while not done.is_set() and len(probes) < 1000:
            try:
                probes.append(requests.get(f"{base}/api/health", timeout=10).status_code)
            except requests.RequestException as exc:
                probes.append(type(exc).__name__)
            done.wait(0.25)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        for step in range(steps):
            for sock, body in zip(connections, bodies, strict=True):
                sock.sendall(body[step * step_bytes : (step + 1) * step_bytes])
            time.sleep(1)
    finally:
        done.set()
        prober.join()
    answers = []
    for sock in connections:
        response = http.client.HTTPResponse(sock)
        response.begin()
        answers.append((response.status, json.loads(response.read())["script_name"]))
        sock.close()

    assert probes and set(probes) == {200}, probes
    assert answers == [(200, f"slow-{i}") for i in range(200)]


@pytest.mark.parametrize(
    ("request_bytes", "code"),
    [
        pytest.param(b"GET /api/health?q=" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, id="100 KB URL"),
        pytest.param(
            b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n", 431, id="5 KB header"
        ),
        pytest.param(
            b"GET /api/health HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 3000) for i in range(7))
            + b"\r\n",
            431,
            id="21 KB of headers",
        ),
        pytest.param(b"GET /api/health HTTP/1.1\r\n\r\n", 400, id="no Host"),
        pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\r\n\r\n", 400, id="TLS to the HTTP port"),
        pytest.param("GET /api/sites/é HTTP/1.1\r\nHost: x\r\n\r\n".encode(), 400, id="raw UTF-8 in the URL"),
        pytest.param(b"GET /api/health HTTP/2.0\r\nHost: x\r\n\r\n", 505, id="HTTP/2.0 request line"),
        pytest.param(
            b"POST /api/scripts HTTP/1.1\r\nHost: x\r\nContent-Length: 6000000000\r\n\r\n", 413, id="over 5 GiB"
        ),
        pytest.param(
            b"POST /api/scripts HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400, id="bad chunk"
        ),
        pytest.param(
            b"POST /api/scripts HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501, id="unknown coding"
        ),
    ],
)
def test_requests_nginx_refuses_get_json_errors(stack, request_bytes, code):
    """Requests nginx refuses itself get the API's error shape as JSON, never nginx's HTML page."""
    assert_error_shape(*raw_request(stack[0], request_bytes), code)


def test_unknown_method_is_json_405_with_allow(stack):
    """A method the API does not serve is a JSON 405 from nginx that lists the methods it does serve."""
    status, headers, body = raw_request(stack[0], b"BREW /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert_error_shape(status, headers, body, 405)
    assert headers["allow"] == "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"


def test_headers_within_nginx_limits_reach_the_app(stack):
    """200 small header fields pass nginx and are not refused by gunicorn (which would answer HTML past 100)."""
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(200))
    status, _, body = raw_request(stack[0], b"GET /api/health HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert (status, json.loads(body)) == (200, {"status": "ok"})


def test_body_over_the_configured_limit_is_json_413(stack, tmp_path):
    """A body over the config's limit is a JSON 413, sent with Content-Length or chunked; one under it passes."""
    _, upstream, token = stack
    with nginx_proxy(upstream, tmp_path, max_body_size=4096) as base:
        http = authorized(token)
        small = http.post(f"{base}/api/scripts", json={"script_name": "small", "script_info": {"x": "y" * 3000}})
        assert small.status_code == 200, small.text
        big = {"script_name": "big", "script_info": {"x": "y" * 5000}}
        sized = http.post(f"{base}/api/scripts", json=big)
        chunked = http.post(
            f"{base}/api/scripts",
            data=iter([json.dumps(big).encode()]),
            headers={"Content-Type": "application/json"},
        )
    for response in (sized, chunked):
        assert_error_shape(
            response.status_code, {"content-type": response.headers["Content-Type"]}, response.content, 413
        )
        assert "4096 bytes" in response.json()["error_description"]


def test_gunicorn_down_is_json_502(tmp_path):
    """With nothing listening where gunicorn should be, nginx answers a JSON 502 that says to retry."""
    with nginx_proxy(f"http://127.0.0.1:{free_port()}", tmp_path) as base:
        response = requests.get(f"{base}/api/health", timeout=30)
    assert_error_shape(response.status_code, {"content-type": response.headers["Content-Type"]}, response.content, 502)
    assert response.headers["Retry-After"] == "1"


def test_long_ndjson_stream_passes_whole(stack, reference):
    """A record stream of several MB (far past nginx's memory buffers) arrives whole, line by line, as NDJSON."""
    base, _, token = stack
    http = authorized(token)
    rows = "".join(
        json.dumps({"timestamp": (START + timedelta(seconds=i)).isoformat(), "script_data": {"i": i, "pad": "p" * 400}})
        + "\n"
        for i in range(20_000)
    )
    names = {k: v for k, v in reference.items() if k != "script_id"}
    upload = http.post(
        f"{base}/api/scripts/id/{reference['script_id']}/records/bulk",
        data=names,
        files={"file": ("rows.ndjson", rows.encode(), "application/x-ndjson")},
    )
    assert upload.status_code == 202, upload.text
    job = wait_until(
        lambda: http.get(base + upload.headers["Location"]).json(),
        lambda j: j["state"] not in ("queued", "running"),
        timeout=300,
    )
    assert job["state"] == "succeeded", job
    with http.get(f"{base}/api/scripts/id/{reference['script_id']}/records", stream=True, timeout=300) as stream:
        assert stream.headers["Content-Type"].startswith("application/x-ndjson")
        received = [json.loads(line)["script_data"]["i"] for line in stream.iter_lines() if line]
    assert sorted(received) == list(range(20_000))


def test_1gb_upload_streams_through_with_flat_worker_memory(stack, reference):
    """A 1 GB record file, sent chunked through nginx, is stored intact while the gunicorn worker grows < 50 MB."""
    base, upstream, token = stack
    block = os.urandom(MB)
    blocks = 1024
    digest = hashlib.sha256()
    for _ in range(blocks):
        digest.update(block)
    boundary = uuid.uuid4().hex
    fields = {"timestamp": "2024-06-02T00:00:00Z", **{k: v for k, v in reference.items() if k != "script_id"}}

    def body():
        for name, value in fields.items():
            yield f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="record_file"; filename="big.bin"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        for _ in range(blocks):
            yield block
        yield f"\r\n--{boundary}--\r\n".encode()

    http = authorized(token)
    with RssWatch(gunicorn_worker(upstream)) as rss:
        response = http.post(
            f"{base}/api/scripts/id/{reference['script_id']}/records",
            data=body(),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
            timeout=(10, 1800),
        )
        assert response.status_code == 200, response.text
        record = wait_until(
            lambda: http.get(f"{base}/api/scripts/records/id/{response.json()['id']}").json(),
            lambda r: r["file_status"] != "pending",
            timeout=900,
            interval=1,
        )
    assert (record["file_status"], record["file_size"]) == ("ready", blocks * MB)
    assert record["file_sha256"] == digest.hexdigest()
    assert rss.growth < 50 * MB, rss.describe()


def gunicorn_worker(upstream: str) -> int:
    """The pid of the one worker of the gunicorn master serving ``upstream``."""
    bind = f"--bind\0{urlsplit(upstream).netloc}\0".encode()
    matches = {}
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and bind in (entry / "cmdline").read_bytes():
                matches[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:  # a process that ended while we looked
            continue
    masters = [pid for pid, parent in matches.items() if parent not in matches]
    assert len(masters) == 1, matches
    return worker_pid(masters[0])


def test_forwarded_headers_are_believed_only_from_the_configured_proxies(tmp_path, sqlite_url):
    """With SCRIPTORIUM_PROXY_COUNT=1 the client's address, scheme and host are the last X-Forwarded-* values (the
    ones nginx adds); with the default 0 the app believes none of them."""
    seen = {}

    def capture(environ, start_response):
        seen.update({k: environ.get(k) for k in ("REMOTE_ADDR", "wsgi.url_scheme", "HTTP_HOST")})
        start_response("204 No Content", [])
        return []

    headers = {
        "X-Forwarded-For": "203.0.113.9, 198.51.100.7",
        "X-Forwarded-Proto": "http, https",
        "X-Forwarded-Host": "evil.example, api.example.org",
    }
    behind_nginx = make_app(tmp_path, sqlite_url, proxy_count=1)
    assert isinstance(behind_nginx.wsgi_app, ProxyFix)
    behind_nginx.wsgi_app.app = capture
    behind_nginx.test_client().get("/", headers=headers)
    assert seen == {"REMOTE_ADDR": "198.51.100.7", "wsgi.url_scheme": "https", "HTTP_HOST": "api.example.org"}

    direct = make_app(tmp_path, sqlite_url)
    assert not isinstance(direct.wsgi_app, ProxyFix)


def test_compose_puts_nginx_in_front_of_web():
    """docker-compose publishes nginx, not web; mounts the shipped config with a value for each placeholder; and
    tells web to believe one proxy, with the same body limit on both."""
    services = COMPOSE["services"]
    web, nginx = services["web"], services["nginx"]
    assert "ports" not in web and nginx["ports"]
    assert web["environment"]["SCRIPTORIUM_PROXY_COUNT"] == "1"
    assert (
        "./deploy/nginx/scriptorium.conf.template:/etc/nginx/templates/scriptorium.conf.template:ro" in nginx["volumes"]
    )
    assert nginx["environment"]["NGINX_UPSTREAM"].split(":")[0] == "web"
    limit = nginx["environment"]["SCRIPTORIUM_MAX_CONTENT_LENGTH"]
    assert web["environment"]["SCRIPTORIUM_MAX_CONTENT_LENGTH"] == limit
    render_nginx_config(**nginx["environment"])  # refuses a placeholder without a value


def test_serve_says_it_serves_on_loopback_only(monkeypatch):
    """`scriptorium serve` binds 127.0.0.1 unless told otherwise and says that nginx (deploy/nginx) exposes it."""
    from webapp.cli import main

    started = []
    monkeypatch.setattr(os, "execv", lambda path, args: started.append(args))
    default = CliRunner().invoke(main, ["serve", "--port", "5123"])
    everywhere = CliRunner().invoke(main, ["serve", "--port", "5123", "--host", "0.0.0.0"])
    assert started[0][started[0].index("--bind") + 1] == "127.0.0.1:5123"
    assert "loopback only" in default.output and "deploy/nginx" in default.output
    assert "loopback" not in everywhere.output


def test_serve_names_the_port_variable_when_the_port_is_taken_and_says_how_to_get_a_token(monkeypatch):
    """A taken port is a clear error naming PORT, not gunicorn's traceback; every start says how to get a token."""
    import socket

    from webapp.cli import main

    monkeypatch.setattr(os, "execv", lambda path, args: None)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        refused = CliRunner().invoke(main, ["serve", "--port", str(port)])
    assert refused.exit_code == 1
    assert f"Port {port} on 127.0.0.1 is taken" in refused.output and "set PORT" in refused.output
    started = CliRunner().invoke(main, ["serve", "--port", str(port)])
    assert started.exit_code == 0
    assert "tokens create admin@localhost" in started.output


def test_the_access_log_never_shows_a_download_token(stack, reference, tmp_path_factory):
    """A local-store download through nginx works, and nginx's access log shows its route, not the signed token."""
    base, _, token = stack
    http = authorized(token)
    names = {k: v for k, v in reference.items() if k != "script_id"}
    # A time no other test of the module's shared script uses.
    form = {"timestamp": "2031-01-01T00:00:00Z", **names}
    posted = http.post(
        f"{base}/api/scripts/id/{reference['script_id']}/records",
        data=form,
        files={"record_file": ("plot.txt", b"leaf area 41.5\n", "text/plain")},
    )
    assert posted.status_code == 200, posted.text
    record = posted.json()
    wait_until(
        lambda: http.get(f"{base}/api/scripts/records/id/{record['id']}").json(),
        lambda r: r["file_status"] != "pending",
    )
    redirect = http.get(f"{base}/api/scripts/records/id/{record['id']}/download", allow_redirects=False)
    assert redirect.status_code == 307
    signed = urlsplit(redirect.headers["Location"]).path
    assert signed.startswith("/files/")
    assert requests.get(base + signed, timeout=30).content == b"leaf area 41.5\n"
    (log,) = tmp_path_factory.getbasetemp().glob(f"nginx[0-9]*/nginx-{urlsplit(base).port}.log")
    logged = wait_until(log.read_text, lambda text: "/files/<token>" in text, timeout=10)
    assert "/files/<token>" in logged
    assert signed.removeprefix("/files/") not in logged
