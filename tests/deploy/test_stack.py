"""The production stack's files, checked without a Docker engine (there is none here)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"


def validate_compose(path: Path) -> subprocess.CompletedProcess:
    """Validate against the Compose specification's JSON schema (vendored by check-jsonschema)."""
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
    )


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())  # resolves the `<<: *hfproxy` merges


def test_the_compose_file_follows_the_compose_specification():
    result = validate_compose(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_validator_does_refuse_a_broken_file(tmp_path):
    broken = tmp_path / "docker-compose.yml"
    broken.write_text("services:\n  web:\n    image: x\n    ports: 8000\n    stop_grace_period: [1]\n")
    assert validate_compose(broken).returncode != 0


def test_services_and_their_wiring(compose):
    services = compose["services"]
    assert set(services) == {"db", "redis", "migrate", "web"}
    for name in ("db", "redis"):
        assert services[name]["healthcheck"]["test"], name
        assert "ports" not in services[name], f"{name} must not be published to the host"
    # Over TCP: the postgres image's first, socket-only start must not count as ready.
    assert "-h 127.0.0.1" in services["db"]["healthcheck"]["test"][1]
    assert services["db"]["volumes"] == ["pgdata:/var/lib/postgresql/data"]
    assert "pgdata" in compose["volumes"]

    web, migrate = services["web"], services["migrate"]
    assert web["depends_on"] == {
        "db": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
        "migrate": {"condition": "service_completed_successfully"},
    }
    assert migrate["command"] == ["python", "manage.py", "migrate", "--noinput"]
    assert migrate["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert migrate["restart"] == "no"
    for service in (web, migrate):
        assert service["build"] == "."
        assert service["env_file"] == ".env"
        assert service["environment"]["DATABASE_URL"].endswith("@db:5432/hfproxy")
        assert service["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    assert web["ports"] == ["${PORT:-8000}:8000"]
    assert web["environment"]["PORT"] == "8000"  # the container's own port, whatever .env says
    assert web["restart"] == "unless-stopped"


def test_docker_waits_longer_than_the_drain_and_the_usage_flush(compose):
    from hfproxy_site import settings

    grace = compose["services"]["web"]["stop_grace_period"]
    seconds = int(re.fullmatch(r"\$\{STOP_GRACE_PERIOD:-(\d+)s\}", grace).group(1))  # the default
    assert seconds > settings.SHUTDOWN_TIMEOUT + settings.USAGE_SHUTDOWN_TIMEOUT


def test_the_env_example_has_what_compose_needs():
    names = {
        line.split("=", 1)[0] for line in (ROOT / ".env.example").read_text().splitlines() if "=" in line
    }
    assert {"POSTGRES_PASSWORD", "SECRET_KEY", "FIELD_ENCRYPTION_KEY", "ALLOWED_HOSTS", "HF_TOKEN"} <= names


def _stages(dockerfile: str) -> list[list[str]]:
    """The Dockerfile's instructions (continuations joined), split into build stages."""
    text = re.sub(r"\\\n\s*", " ", dockerfile)
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    stages: list[list[str]] = []
    for line in lines:
        if line.startswith("FROM "):
            stages.append([])
        stages[-1].append(line)
    return stages


def test_the_image_is_small_non_root_and_self_checking():
    build, final = _stages((ROOT / "Dockerfile").read_text())
    assert re.fullmatch(r"FROM python:3\.11-slim AS build", build[0])
    assert re.fullmatch(r"FROM python:3\.11-slim", final[0])
    everything = "\n".join(build + final)
    assert "apt-get" not in everything and "build-essential" not in everything  # wheels only
    assert any("--only-binary=:all:" in line for line in build)
    # Only the virtual environment crosses from the build stage.
    assert [line for line in final if "--from=build" in line] == ["COPY --from=build /venv /venv"]
    user = [line for line in final if line.startswith("USER ")]
    assert user == ["USER hfproxy"] and any("useradd" in line for line in final)
    assert any("collectstatic" in line for line in final)
    [healthcheck] = [line for line in final if line.startswith("HEALTHCHECK ")]
    assert "/health" in healthcheck
    [cmd] = [line for line in final if line.startswith("CMD ")]
    assert json.loads(cmd.removeprefix("CMD ")) == ["python", "manage.py", "serve"]
    env = " ".join(line for line in final if line.startswith("ENV "))
    assert "WEB_CONCURRENCY=2" in env and "SHUTDOWN_TIMEOUT=" in env and "STATIC_ROOT=" in env


def test_the_image_gets_only_what_it_needs():
    ignored = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    assert ignored[0] == "*"  # everything out, then only what the Dockerfile copies back in
    back_in = {line[1:].rstrip("/") for line in ignored if line.startswith("!")}
    assert back_in == {
        "requirements.txt",
        "constraints.txt",
        "manage.py",
        "hfproxy_site",
        "gateway",
        "accounts",
    }
