"""The Docker engine for the container tests (tests/deploy/test_image.py, test_compose.py): the
image built once per session on the stand-in base (deploy/local-base.sh), containers and compose
projects that are always removed, and the fake router where containers reach it."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import socket
import struct
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai

from tests.support.processes import ROOT, free_port, server_env, start, stop

IMAGE = "hfproxy:latest"  # docker-compose.yml's name for it: `up` then finds it built
BASE = "hfproxy-standin/python:3.11-slim"
STANDINS = [
    BASE,
    "hfproxy-standin/postgres:16-alpine",
    "hfproxy-standin/redis:7-alpine",
    "hfproxy-standin/nginx:1.28-alpine",
]
SIOCGIFADDR = 0x8915  # an interface's IPv4 address (linux/sockios.h)
# Lines for the end of the test session's report (tests/deploy/conftest.py prints them).
REPORT: list[str] = []


def docker(*args: str, check: bool = True, timeout: float = 300, **options) -> subprocess.CompletedProcess:
    """Run the docker CLI; its output as text. A failure raises with what docker said."""
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, **options)
    if check and result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result


def engine_answers() -> bool:
    try:
        return docker("info", check=False, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def require_engine() -> None:
    """Skip the calling test when no Docker engine answers, or the stand-in images are missing;
    under CI, fail it (CI installs and starts the engine and runs deploy/local-base.sh)."""
    import pytest

    problem = None
    if not engine_answers():
        problem = "no Docker engine answers (`docker info`)"
    elif missing := [image for image in STANDINS if not image_exists(image)]:
        problem = f"stand-in images missing (run deploy/local-base.sh as root): {missing}"
    if problem and os.environ.get("CI") == "true":
        pytest.fail(problem)
    if problem:
        pytest.skip(problem)


def image_exists(image: str) -> bool:
    return docker("image", "inspect", image, check=False).returncode == 0


def build_image() -> str:
    """docker build of the project's Dockerfile on the stand-in base, tagged as docker-compose.yml
    names it; its time and size go in the report."""
    started = time.monotonic()
    docker(
        "build", "--quiet", "--network", "host", "--build-arg", f"PYTHON_IMAGE={BASE}", "-t", IMAGE, str(ROOT)
    )
    seconds = time.monotonic() - started
    size = int(docker("image", "inspect", "-f", "{{.Size}}", IMAGE).stdout)
    REPORT.append(f"image {IMAGE}: docker build {seconds:.0f} s, {size / 1e6:.0f} MB, on {BASE}")
    return IMAGE


def bridge_gateway() -> str:
    """The host's address on Docker's default bridge: what `host-gateway` resolves to."""
    network = json.loads(docker("network", "inspect", "bridge").stdout)[0]
    if gateway := network["IPAM"]["Config"][0].get("Gateway"):
        return gateway
    # Docker 20.10 leaves it out: the bridge interface's own address is the gateway.
    interface = network["Options"].get("com.docker.network.bridge.name", "docker0")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        request = struct.pack("256s", interface.encode()[:15])
        return socket.inet_ntoa(fcntl.ioctl(probe.fileno(), SIOCGIFADDR, request)[20:24])


@contextlib.contextmanager
def fake_router(host: str = "127.0.0.1", **env: str) -> Iterator[str]:
    """The fake Hugging Face router on `host` (an address containers reach); its URL."""
    port = free_port()
    url = f"http://{host}:{port}"
    process = start(
        ["-m", "tests.support.fake_router", "--host", host, "--port", str(port)],
        server_env(**env),
        url + "/_stats",
    )
    try:
        yield url
    finally:
        stop(process)


def proxy_settings(router: str, database: str, **overrides: str) -> dict[str, str]:
    """What a container of the image needs (proxy_env's settings, without this process's
    environment): production settings, the fake router at `router` standing in for Hugging Face."""
    from cryptography.fernet import Fernet

    return {
        "DEBUG": "false",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECRET_KEY": f"container-secret-{secrets.token_urlsafe(40)}",
        "FIELD_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "HF_TOKEN": "hf_container_token_value",
        "HF_BASE_URL": f"{router}/v1",
        "HF_INFERENCE_URL": f"{router}/hf-inference",
        "HF_HUB_URL": router,
        "DATABASE_URL": database,
        **overrides,
    }


def env_options(settings: dict[str, str]) -> list[str]:
    return [option for name, value in settings.items() for option in ("-e", f"{name}={value}")]


class Container:
    """A detached container of the image on the host's network, removed (with its anonymous
    volumes) by `remove()`."""

    def __init__(self, name: str) -> None:
        self.name = name

    @classmethod
    def run(cls, image: str, settings: dict[str, str], *options: str) -> Container:
        name = f"hfproxy-test-{secrets.token_hex(4)}"
        docker(
            "run", "--detach", "--name", name, "--network", "host", *env_options(settings), *options, image
        )
        return cls(name)

    def inspect(self, template: str) -> str:
        return docker("inspect", "-f", template, self.name).stdout.strip()

    def exec(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        return docker("exec", self.name, *command, check=check)

    def logs(self) -> str:
        result = docker("logs", self.name, check=False)
        return result.stdout + result.stderr

    def wait_until_answers(self, url: str, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.inspect("{{.State.Running}}") != "true":
                raise RuntimeError(f"{self.name} exited:\n{self.logs()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=1).status_code == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{url} did not answer:\n{self.logs()}")

    def remove(self) -> None:
        docker("rm", "--force", "--volumes", self.name, check=False)


def run_once(image: str, settings: dict[str, str], *command: str) -> str:
    """`docker run --rm` of a command on the host's network; its output."""
    return docker("run", "--rm", "--network", "host", *env_options(settings), image, *command).stdout


class ComposeProject:
    """docker compose on `files`, as a project of its own (`name`), with `env` for interpolation."""

    def __init__(self, name: str, files: list[Path], env_file: Path) -> None:
        self.name = name
        self.files = files
        self.env_file = env_file

    def __call__(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        files = [option for path in self.files for option in ("-f", str(path))]
        command = [
            "compose",
            "-p",
            self.name,
            "--project-directory",
            str(ROOT),
            "--env-file",
            str(self.env_file),
        ]
        return docker(*command, *files, *args, check=check, timeout=timeout, cwd=ROOT)

    def down(self, *, volumes: bool) -> None:
        """`docker compose down`; the anonymous volumes its containers had (the redis image's
        /data) are removed even when the named ones are kept: nothing of the test's is left."""
        anonymous = self.anonymous_volumes()
        self("down", "--remove-orphans", "--timeout", "60", *(["--volumes"] if volumes else []), check=False)
        if anonymous:
            docker("volume", "rm", "--force", *anonymous, check=False)

    def anonymous_volumes(self) -> list[str]:
        containers = self("ps", "--all", "--quiet", check=False).stdout.split()
        if not containers:
            return []
        template = '{{range .Mounts}}{{if eq .Type "volume"}}{{.Name}} {{end}}{{end}}'
        names = docker("inspect", "-f", template, *containers, check=False).stdout.split()
        return [name for name in names if re.fullmatch(r"[0-9a-f]{64}", name)]

    def service(self, name: str) -> dict:
        """`docker compose ps` of one service (stopped ones included)."""
        output = self("ps", "--all", "--format", "json", name).stdout.strip()
        rows = [json.loads(line) for line in output.splitlines() if line.strip()]
        [row] = rows
        return row

    def psql(self, sql: str) -> list[list[str]]:
        """Rows of a query in the db container, as psql prints them unaligned (`|` between fields)."""
        output = self("exec", "-T", "db", "psql", "-U", "hfproxy", "-d", "hfproxy", "-At", "-c", sql).stdout
        return [line.split("|") for line in output.splitlines() if line]

    def logs(self) -> str:
        result = self("logs", "--no-color", "--tail", "200", check=False)
        return result.stdout + result.stderr


def streams_while(action, api: str, key: str, streams: int = 6) -> tuple[list[str], list[list[str]]]:
    """`streams` slow streams (the fake router's slow/m, with the openai SDK at `api`); once each
    has begun, `action()` (a stop); each stream's request id and texts, as far as they came."""
    client = openai.OpenAI(base_url=api, api_key=key, max_retries=0, timeout=90)
    begun = threading.Barrier(streams + 1)
    request_ids = [uuid.uuid4().hex for _ in range(streams)]
    texts: list[list[str]] = [[] for _ in range(streams)]

    def stream(n: int) -> None:
        try:
            chunks = client.chat.completions.create(
                model="slow/m",
                messages=[{"role": "user", "content": "hello"}],
                stream=True,
                extra_headers={"X-Request-Id": request_ids[n]},
            )
            for i, chunk in enumerate(chunks):
                if i == 0:
                    begun.wait(20)
                if chunk.choices and chunk.choices[0].delta.content:
                    texts[n].append(chunk.choices[0].delta.content)
        except (openai.APIError, threading.BrokenBarrierError):
            pass  # cut off: what arrived is in texts[n]

    threads = [threading.Thread(target=stream, args=(n,)) for n in range(streams)]
    for thread in threads:
        thread.start()
    begun.wait(20)
    action()
    for thread in threads:
        thread.join(60)
    return request_ids, texts
