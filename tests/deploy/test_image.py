"""The production image, built on the stand-in base (deploy/local-base.sh) and run as a user runs
it (`docker run`, the image's CMD) against this machine's PostgreSQL and the fake router:
migrate, serve, /health, a chat request with the openai SDK; the non-root user, a read-only root
file system, the HEALTHCHECK; SIGTERM while streams are open. Marked `docker` (`pytest -m
docker`); CI runs them once, in a stage of their own."""

from __future__ import annotations

import os
import time
import uuid

import httpx
import openai
import pytest

from tests.support.docker import Container, docker, fake_router, proxy_settings, run_once, streams_while
from tests.support.harness import Database
from tests.support.processes import free_port, require, scratch_database

pytestmark = pytest.mark.docker

POSTGRES = os.environ.get("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
MODEL = "openai/gpt-oss-120b:fireworks-ai"  # one the fake router serves
MESSAGES = [{"role": "user", "content": "hello"}]
JOURNAL = "/var/lib/hfproxy/usage-journal"  # the Dockerfile's USAGE_JOURNAL_DIR
# Read-only everywhere but the journal (a volume, as in docker-compose.yml) and /tmp (serve shares
# its workers' metrics in a temporary folder).
READ_ONLY = ["--read-only", "--tmpfs", "/tmp", "--mount", f"type=volume,destination={JOURNAL}"]


@pytest.fixture(scope="module")
def router():
    with fake_router(FAKE_ROUTER_SLOW="0.1") as url:  # a 20-chunk stream takes ~2 s
        yield url


@pytest.fixture(scope="module")
def database(image, tmp_path_factory):
    require(POSTGRES)
    with scratch_database(tmp_path_factory.mktemp("image"), POSTGRES) as url:
        yield url


@pytest.fixture(scope="module")
def migrated(image, router, database):
    """The settings of a container on `database`, migrated by the image, and a key made by it."""
    settings = proxy_settings(router, database, HOST="127.0.0.1", WEB_CONCURRENCY="2")
    run_once(image, settings, "python", "manage.py", "migrate", "--noinput")
    key = run_once(
        image,
        settings,
        "python",
        "manage.py",
        "create_api_key",
        "sam",
        "--rpm",
        "1000",
        "--max-parallel",
        "20",
    ).splitlines()[-1]
    return settings, key


def serve(image, settings: dict[str, str]) -> tuple[Container, str]:
    """The image's CMD on a free port, read-only, once /health answers: (container, URL)."""
    port = free_port()
    container = Container.run(image, {**settings, "PORT": str(port)}, *READ_ONLY)
    url = f"http://127.0.0.1:{port}"
    try:
        container.wait_until_answers(url + "/health")
    except Exception:
        container.remove()
        raise
    return container, url


@pytest.fixture(scope="module")
def server(image, migrated):
    settings, key = migrated
    container, url = serve(image, settings)
    try:
        yield container, url, key
    finally:
        container.remove()


def test_it_serves_health_and_a_chat_request_with_the_openai_sdk(server, database):
    _, url, key = server
    health = httpx.get(url + "/health")
    assert health.status_code == 200, health.text
    client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
    request_id = uuid.uuid4().hex
    answer = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, extra_headers={"X-Request-Id": request_id}
    )
    assert answer.choices[0].message.content
    record = _record(Database(database), request_id)
    assert (record["model_requested"], record["status"], record["outcome"]) == (MODEL, 200, "ok")


def test_it_runs_as_the_non_root_user(server):
    container, _, _ = server
    assert container.inspect("{{.Config.User}}") == "hfproxy"
    # Every process, seen from the host: the server and its workers (the Dockerfile's useradd).
    processes = docker("top", container.name, "-eo", "pid,uid,args").stdout.splitlines()[1:]
    assert len(processes) >= 3, processes  # serve and WEB_CONCURRENCY (2) workers
    assert {line.split()[1] for line in processes} == {"10001"}, processes


def test_the_root_file_system_is_read_only_but_the_journal_and_tmp(server):
    container, _, _ = server
    assert container.inspect("{{.HostConfig.ReadonlyRootfs}}") == "true"  # and it serves
    for path in ("/app/written", "/venv/written", "/var/lib/hfproxy/written"):
        refused = container.exec("touch", path, check=False)
        assert refused.returncode != 0 and "Read-only file system" in refused.stderr, path
    for folder in (JOURNAL, "/tmp"):
        container.exec("touch", f"{folder}/written")
        container.exec("rm", f"{folder}/written")


def test_the_healthcheck_turns_healthy(server):
    container, _, _ = server
    # The image's HEALTHCHECK: the first check runs one interval (15 s) after the start.
    deadline = time.monotonic() + 60
    while (status := container.inspect("{{.State.Health.Status}}")) != "healthy":
        assert status == "starting" and time.monotonic() < deadline, (status, container.logs())
        time.sleep(1)


def test_sigterm_with_open_streams_writes_every_record_and_exits_0(image, migrated, database):
    settings, key = migrated
    container, url = serve(image, {**settings, "SHUTDOWN_TIMEOUT": "15"})
    try:
        request_ids, texts = streams_while(lambda: _stop(container), url + "/v1", key)
        assert container.inspect("{{.State.ExitCode}}") == "0", container.logs()
    finally:
        container.remove()
    assert all(len(received) == 20 for received in texts), [len(received) for received in texts]
    db = Database(database)
    for request_id in request_ids:
        record = _record(db, request_id)
        assert (record["model_requested"], record["status"], record["outcome"]) == ("slow/m", 200, "ok")


def _stop(container: Container) -> None:
    docker("stop", "--time", "60", container.name, timeout=90)  # SIGTERM, then SIGKILL after 60 s


def _record(db: Database, request_id: str, seconds: float = 10) -> dict:
    deadline = time.monotonic() + seconds
    while not (rows := db.query("SELECT * FROM accounts_usagerecord WHERE request_id = %s", request_id)):
        assert time.monotonic() < deadline, f"no usage record for request {request_id}"
        time.sleep(0.1)
    assert len(rows) == 1, rows
    return rows[0]
