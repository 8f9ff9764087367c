"""docker-compose.yml up for real: `docker compose up -d --wait` with deploy/compose.standins.yml
(only the images change) and a test-only override (the .env made here, the fake router on the
host). The migrate service ran, /health answers through nginx, a chat request reaches the router
and leaves its usage record in the db container, `down` and `up` keep the records (the volume),
`stop` with open streams records them all, and nginx as published closes slowloris connections.
Marked `docker` (`pytest -m docker`); CI runs them once, in a stage of their own."""

from __future__ import annotations

import secrets
import time
import uuid
from types import SimpleNamespace

import httpx
import openai
import pytest

from tests.support.docker import REPORT, ComposeProject, bridge_gateway, fake_router, streams_while
from tests.support.processes import ROOT, free_port
from tests.support.slowclients import HALF_HEADER, connect_raw, still_open

pytestmark = pytest.mark.docker

MODEL = "openai/gpt-oss-120b:fireworks-ai"  # one the fake router serves
MESSAGES = [{"role": "user", "content": "hello"}]
NGINX_HEADER_TIMEOUT = 10  # client_header_timeout in deploy/nginx.conf
# Never in the user's compose file: the .env made by the test instead of the project's, and the
# host's address for the fake router, which listens on the host.
TEST_OVERRIDE = """\
services:
  migrate:
    env_file: !override [{env_file}]
  web:
    env_file: !override [{env_file}]
    extra_hosts: ["host.docker.internal:host-gateway"]
"""


@pytest.fixture(scope="module")
def router(image):
    # On the address `host-gateway` names: the stack's containers reach it, the network does not.
    with fake_router(bridge_gateway(), FAKE_ROUTER_SLOW="0.1") as url:  # 20 chunks in ~2 s
        yield url


@pytest.fixture(scope="module")
def stack(image, router, tmp_path_factory):
    from cryptography.fernet import Fernet

    folder = tmp_path_factory.mktemp("compose")
    port = free_port()
    upstream = "http://host.docker.internal:" + router.rpartition(":")[2]
    settings = {
        "POSTGRES_PASSWORD": secrets.token_hex(16),
        "PORT": str(port),
        "SECRET_KEY": f"compose-secret-{secrets.token_urlsafe(40)}",
        "FIELD_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "HF_TOKEN": "hf_compose_token_value",
        "HF_BASE_URL": f"{upstream}/v1",
        "HF_INFERENCE_URL": f"{upstream}/hf-inference",
        "HF_HUB_URL": upstream,
        "SHUTDOWN_TIMEOUT": "15",
    }
    env_file = folder / ".env"
    env_file.write_text("".join(f"{name}={value}\n" for name, value in settings.items()))
    override = folder / "compose.test.yml"
    override.write_text(TEST_OVERRIDE.format(env_file=env_file))
    project = ComposeProject(
        f"hfproxy-test-{secrets.token_hex(4)}",
        [ROOT / "docker-compose.yml", ROOT / "deploy" / "compose.standins.yml", override],
        env_file,
    )
    try:
        up(project)
        key = project("exec", "-T", "web", "python", "manage.py", "create_api_key", "sam", "--rpm", "1000")
        yield SimpleNamespace(
            project=project, url=f"http://127.0.0.1:{port}", key=key.stdout.splitlines()[-1], router=router
        )
    except Exception:
        print(project.logs())
        raise
    finally:
        project.down(volumes=True)


def up(project: ComposeProject) -> None:
    started = time.monotonic()
    project("up", "--detach", "--wait", "--wait-timeout", "180", timeout=240)
    REPORT.append(f"compose up --wait: {time.monotonic() - started:.0f} s")


def test_the_migrate_service_ran_and_health_answers_through_nginx(stack):
    migrate = stack.project.service("migrate")
    assert (migrate["State"], migrate["ExitCode"]) == ("exited", 0), migrate
    assert stack.project.service("web")["Health"] == "healthy"
    health = httpx.get(stack.url + "/health", timeout=10)
    assert health.status_code == 200, health.text
    assert health.headers["server"] == "nginx"  # the front server answered, server_tokens off


def test_a_chat_request_reaches_the_router_and_leaves_its_record_in_postgres(stack):
    before = httpx.get(stack.router + "/_stats").json()["attempts"].get(MODEL, 0)
    request_id = chat(stack)
    assert httpx.get(stack.router + "/_stats").json()["attempts"][MODEL] == before + 1
    assert record(stack, request_id) == [MODEL, "200", "ok"]


def test_down_and_up_again_keep_the_records(stack):
    request_id = chat(stack)
    assert record(stack, request_id)
    count = stack.project.psql("SELECT COUNT(*) FROM accounts_usagerecord")
    stack.project.down(volumes=False)  # as a user upgrading does: the named volumes stay
    assert not stack.project("ps", "--all", "--quiet").stdout.strip()
    up(stack.project)
    assert stack.project.psql("SELECT COUNT(*) FROM accounts_usagerecord") == count
    assert record(stack, request_id) == [MODEL, "200", "ok"]
    assert chat(stack)  # the key too


def test_nginx_as_published_closes_half_sent_and_dribbled_headers(stack):
    half = [connect_raw(stack, HALF_HEADER) for _ in range(50)]
    dribbled = [connect_raw(stack, b"GET /health HTTP/1.1\r\n") for _ in range(10)]
    assert all(half) and all(dribbled)
    assert httpx.get(stack.url + "/health", timeout=10).status_code == 200
    assert still_open(half + dribbled, NGINX_HEADER_TIMEOUT + 10, dribble=b"X-Slow: 1\r\n") == 0
    huge = httpx.get(stack.url + "/health", headers={"X-Big": "a" * (1024 * 1024)}, timeout=10)
    assert huge.status_code in (400, 414, 431)


def test_stop_with_open_streams_records_them_all(stack):
    request_ids, texts = streams_while(
        lambda: stack.project("stop", "--timeout", "60", timeout=240), stack.url + "/v1", stack.key
    )
    assert [len(received) for received in texts] == [20] * len(request_ids)
    web = stack.project.service("web")
    assert (web["State"], web["ExitCode"]) == ("exited", 0), web
    stack.project("start", "db")
    deadline = time.monotonic() + 60
    while stack.project.service("db")["Health"] != "healthy":
        assert time.monotonic() < deadline, "db did not turn healthy again"
        time.sleep(1)
    for request_id in request_ids:
        assert record(stack, request_id, seconds=0) == ["slow/m", "200", "ok"]


def chat(stack) -> str:
    """One chat request through nginx with the openai SDK; its request id."""
    request_id = uuid.uuid4().hex
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key=stack.key, max_retries=0, timeout=30)
    answer = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, extra_headers={"X-Request-Id": request_id}
    )
    assert answer.choices[0].message.content
    return request_id


def record(stack, request_id: str, seconds: float = 10) -> list[str]:
    """The request's usage record, read with psql in the db container: model, status, outcome."""
    query = (
        "SELECT model_requested, status, outcome FROM accounts_usagerecord "
        f"WHERE request_id = '{request_id}'"  # a uuid4 hex: nothing to quote
    )
    deadline = time.monotonic() + seconds
    while not (rows := stack.project.psql(query)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(rows) == 1, f"{len(rows)} usage records for request {request_id}"
    return rows[0]
