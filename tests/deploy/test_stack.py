"""The production stack's files, checked without a Docker engine (test_image.py and test_compose.py
run them in one)."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
NGINX = ROOT / "deploy" / "nginx.conf"
STANDINS = ROOT / "deploy" / "compose.standins.yml"


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


def test_the_standins_override_changes_only_the_pulled_images(compose):
    assert validate_compose(STANDINS).returncode == 0
    override = yaml.safe_load(STANDINS.read_text())
    assert set(override) == {"services"}
    pulled = {name for name, service in compose["services"].items() if "build" not in service}
    assert set(override["services"]) == pulled == {"db", "redis", "nginx"}
    for name, service in override["services"].items():
        assert service == {
            "image": f"hfproxy-standin/{compose['services'][name]['image']}",
            "pull_policy": "never",
        }


def test_local_base_builds_every_standin_the_tests_use():
    from tests.support import docker

    script = (ROOT / "deploy" / "local-base.sh").read_text()
    assert docker.BASE == "hfproxy-standin/python:3.11-slim" and f"BASE={docker.BASE}" in script
    for image in docker.STANDINS[1:]:
        name = image.removeprefix("hfproxy-standin/")
        assert name in script, name
        dockerfile = (ROOT / "deploy" / "standins" / name.split(":")[0] / "Dockerfile").read_text()
        assert f"ARG BASE={docker.BASE}\nFROM ${{BASE}}\n" in dockerfile, name


def test_services_and_their_wiring(compose):
    services = compose["services"]
    assert set(services) == {"db", "redis", "migrate", "web", "nginx"}
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
    assert "ports" not in web, "uvicorn must not be published: nginx is the front server"
    assert web["environment"]["PORT"] == "8000"  # the container's own port, whatever .env says
    assert web["restart"] == "unless-stopped"


def test_nginx_is_the_only_published_server(compose):
    nginx = compose["services"]["nginx"]
    assert [name for name, service in compose["services"].items() if "ports" in service] == ["nginx"]
    assert nginx["ports"] == ["${PORT:-8000}:80"]
    assert re.fullmatch(r"nginx:[\d.]+-alpine", nginx["image"])  # the official image, a pinned line
    assert nginx["volumes"] == ["./deploy/nginx.conf:/etc/nginx/conf.d/default.conf:ro"]
    assert nginx["depends_on"] == {"web": {"condition": "service_healthy", "restart": True}}
    assert nginx["restart"] == "unless-stopped"
    # hfproxy believes nginx's X-Forwarded-For (and nginx writes it, never the client).
    assert compose["services"]["web"]["environment"]["FORWARDED_ALLOW_IPS"] == "*"


def _directives(config: str) -> dict[str, list[str]]:
    """nginx directives by name: the value of each occurrence (comments dropped)."""
    found: dict[str, list[str]] = {}
    for statement in re.sub(r"#[^\n]*", "", config).replace("{", ";").replace("}", ";").split(";"):
        if statement.strip():
            name, _, value = statement.strip().partition(" ")
            found.setdefault(name, []).append(" ".join(value.split()))
    return found


def _seconds(value: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(s|m)?", value).groups()
    return int(number) * (60 if unit == "m" else 1)


def test_nginx_bounds_headers_bodies_and_connections_and_streams_unbuffered():
    from hfproxy_site import settings

    nginx = _directives(NGINX.read_text())
    [header_timeout] = nginx["client_header_timeout"]
    assert _seconds(header_timeout) <= settings.HEADER_TIMEOUT
    [body_timeout] = nginx["client_body_timeout"]
    assert _seconds(body_timeout) <= settings.CLIENT_BODY_TIMEOUT
    [buffers] = nginx["large_client_header_buffers"]
    count, size = buffers.split()
    assert int(count) * int(size.removesuffix("k")) * 1024 <= settings.MAX_HEADER_BYTES
    assert nginx["client_max_body_size"] == [f"{settings.MAX_REQUEST_BYTES // 2**20}m"]
    assert nginx["limit_conn_zone"] and nginx["limit_conn"]
    assert nginx["reset_timedout_connection"] == ["on"]
    assert nginx["proxy_buffering"] == ["off"]
    [read_timeout] = nginx["proxy_read_timeout"]
    assert _seconds(read_timeout) > settings.REQUEST_TIMEOUT
    assert nginx["server"][0] == "web:8000"
    headers = dict(value.split(" ", 1) for value in nginx["proxy_set_header"])
    assert headers["X-Forwarded-For"] == "$remote_addr"  # replaced: what the client sent is gone
    assert headers["X-Forwarded-Proto"] == "$scheme"


def test_nginx_answers_its_own_errors_in_the_apis_format():
    from hfproxy_site import settings

    config = NGINX.read_text()
    pages = dict(re.findall(r"error_page (\d+) (\S+);", config))
    # Every status nginx answers itself (494: its headers too large, sent as a 400).
    assert set(pages) == {"400", "404", "408", "413", "414", "429", "494", "500", "502", "503", "504"}
    for status, uri in pages.items():
        location = re.search(rf"location = {re.escape(uri)} {{(.*?)\n    }}", config, re.S)[1]
        assert "internal;" in location and "default_type application/json;" in location
        code, body = re.search(r"return (\d+) '(.*)';", location).groups()
        assert code == ("400" if status == "494" else status)
        error = json.loads(body.removesuffix("\\n"))["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["param"] is None
    assert f"limit of {settings.MAX_REQUEST_BYTES} bytes" in config  # the 413's, as hfproxy's
    assert "proxy_intercept_errors" not in re.sub(r"#[^\n]*", "", config)  # hfproxy's own pass


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
def test_nginx_accepts_the_config(tmp_path):
    # Included in `http {}` as the image does; `web` resolved as here it cannot be.
    (tmp_path / "default.conf").write_text(
        NGINX.read_text().replace("server web:8000", "server 127.0.0.1:8000")
    )
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log stderr;\nevents {{}}\n"
        f"http {{\n  access_log off;\n  client_body_temp_path {tmp_path};\n  proxy_temp_path {tmp_path};\n"
        f"  include {tmp_path}/default.conf;\n}}\n"
    )
    result = subprocess.run(
        ["nginx", "-t", "-c", str(tmp_path / "nginx.conf")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


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
    stages: list[list[str]] = [[]]  # the first: what comes before any FROM (global ARGs)
    for line in lines:
        if line.startswith("FROM "):
            stages.append([])
        stages[-1].append(line)
    return stages


def test_the_image_is_small_non_root_and_self_checking():
    arguments, build, final = _stages((ROOT / "Dockerfile").read_text())
    # The official base by default; CI passes its stand-in (deploy/local-base.sh) instead.
    assert arguments == ["ARG PYTHON_IMAGE=python:3.11-slim"]
    assert build[0] == "FROM ${PYTHON_IMAGE} AS build"
    assert final[0] == "FROM ${PYTHON_IMAGE}"
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
        "portal",
        "locale",
    }
