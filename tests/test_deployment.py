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
