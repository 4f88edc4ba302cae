"""The production stack description stays coherent."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_compose_file_is_coherent():
    """Every dependency names a service; web waits for migrations; secrets have no default."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "objectstore", "migrate", "web", "worker", "beat"} <= set(services)
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, (name, dependency)
    assert services["web"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert ":?" in services["web"]["environment"]["SCRIPTORIUM_SECRET_KEY"]


def test_services_start_once_what_they_need_is_healthy():
    """web and the worker wait for PostgreSQL, Redis and the object store to be healthy (and the migrations to
    end), beat for Redis; web is healthy when /api/ready is, nginx waits for that; every awaited service has a
    health check; web, worker and beat log JSON; Prometheus runs only in the `metrics` profile."""
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], (name, dependency)
    needs = {
        "web": {"migrate", "postgres", "redis", "objectstore"},
        "worker": {"migrate", "postgres", "redis", "objectstore"},
        "beat": {"migrate", "redis"},
    }
    for name, dependencies in needs.items():
        depends_on = services[name]["depends_on"]
        assert set(depends_on) == dependencies, name
        for dependency in dependencies - {"migrate"}:
            assert depends_on[dependency]["condition"] == "service_healthy", (name, dependency)
        assert services[name]["environment"]["SCRIPTORIUM_LOG_FORMAT"] == "json", name
    assert "/api/ready" in " ".join(services["web"]["healthcheck"]["test"])
    assert services["worker"]["healthcheck"]["test"] == ["CMD", "scriptorium", "check"]
    assert services["nginx"]["depends_on"]["web"]["condition"] == "service_healthy"
    prometheus = services["prometheus"]
    assert prometheus["profiles"] == ["metrics"]
    assert "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]


def test_prometheus_scrapes_services_of_the_compose_file_with_what_it_mounts():
    """Each scrape job of deploy/prometheus/prometheus.yml names a compose service, and the token file it reads
    is mounted into the prometheus service."""
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    mounted = {volume["target"] for volume in services["prometheus"]["volumes"] if isinstance(volume, dict)}
    for job in config["scrape_configs"]:
        for discovery in job["dns_sd_configs"]:
            assert set(discovery["names"]) <= set(services), job["job_name"]
        if "authorization" in job:
            assert job["authorization"]["credentials_file"] in mounted, job["job_name"]


def test_the_web_health_check_fails_while_a_dependency_does(postgresql_url, tmp_path):
    """The compose file's own web health check, run against gunicorn: it passes while the broker answers and
    fails once the tests' own redis-server stops."""
    import subprocess
    import sys

    from tests.servers import free_port, gunicorn_app, redis_server

    test = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["web"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    port = free_port()
    with (
        redis_server(port, tmp_path / "redis.log") as redis,
        gunicorn_app(postgresql_url, tmp_path, broker_url=f"redis://127.0.0.1:{port}/0") as base,
    ):
        script = test[3].replace("http://127.0.0.1:5000", base)
        assert base in script
        assert subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60).returncode == 0
        redis.terminate()
        redis.wait(timeout=10)
        failing = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert failing.returncode != 0
    assert "503" in failing.stderr
