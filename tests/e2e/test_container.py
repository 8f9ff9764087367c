"""What the `web` container runs — migrate, then `manage.py serve` with 2 workers — on the local
PostgreSQL and Redis, driven with the openai SDK; SIGTERM while streams are open."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import openai
import pytest
import yaml

from tests.support.processes import (
    free_port,
    manage,
    proxy_env,
    require,
    scratch_database,
    server_env,
    start,
    stop,
)

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
POSTGRES = os.environ.get("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/14")
MESSAGES = [{"role": "user", "content": "hello"}]
MODEL = "openai/gpt-oss-120b:fireworks-ai"  # one the fake router serves


def container_commands() -> tuple[list[str], list[str]]:
    """The migrate service's command and the image's CMD, as the stack runs them."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    cmd = next(line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("CMD "))
    return compose["services"]["migrate"]["command"], json.loads(cmd.removeprefix("CMD "))


@pytest.fixture
def services():
    require(POSTGRES, REDIS_URL)
    from accounts import counters

    counters.delete_all(REDIS_URL)  # our counters only: never the rest of that database


def test_sigterm_lets_open_streams_finish_and_loses_no_record(services, tmp_path):
    results, exit_code, rows = run_stack(tmp_path, shutdown_timeout=15)
    assert exit_code == 0  # a clean exit, after the streams
    assert all(len(texts) == 20 for texts in results.values()), {n: len(t) for n, t in results.items()}
    assert {row["model"]: (row["requests"], row["errors"]) for row in rows} == {
        MODEL: (1, 0),
        "slow/m": (6, 0),
    }


def test_streams_cut_off_at_the_drain_timeout_are_still_recorded(services, tmp_path):
    results, exit_code, rows = run_stack(tmp_path, shutdown_timeout=0.5)
    assert exit_code == 0
    assert all(len(texts) < 20 for texts in results.values())  # cut short, as configured
    assert {row["model"]: (row["requests"], row["errors"]) for row in rows} == {
        MODEL: (1, 0),
        "slow/m": (6, 6),
    }


def run_stack(tmp_path, shutdown_timeout: float):
    """Migrate, serve with 2 workers, one request and 6 slow streams, SIGTERM while they run.
    Each stream's text (as far as it came), the server's exit code, and the usage report."""
    migrate, serve = container_commands()
    assert migrate[:2] == serve[:2] == ["python", "manage.py"]
    router_port, port = free_port(), free_port()
    router = start(
        ["-m", "tests.support.fake_router", "--port", str(router_port)],
        server_env(FAKE_ROUTER_SLOW="0.1"),  # a 20-chunk stream takes ~2 s
        f"http://127.0.0.1:{router_port}/_stats",
    )
    try:
        with scratch_database(tmp_path, POSTGRES) as database:
            env = proxy_env(
                f"http://127.0.0.1:{router_port}",
                database,
                REDIS_URL=REDIS_URL,
                HOST="127.0.0.1",
                PORT=str(port),
                WEB_CONCURRENCY="2",
                SHUTDOWN_TIMEOUT=str(shutdown_timeout),
            )
            manage(*migrate[2:], env=env)
            key = manage(
                "create_api_key", "sam", "--rpm", "100", "--max-parallel", "20", env=env
            ).splitlines()[-1]
            server = start(serve[1:], env, f"http://127.0.0.1:{port}/health")
            try:
                results, exit_code = _drive_and_stop(server, port, key)
            finally:
                stop(server)
            return results, exit_code, json.loads(manage("usage_report", "--format", "json", env=env))
    finally:
        stop(router)


def _drive_and_stop(server, port: int, key: str) -> tuple[dict[int, list[str]], int]:
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0)
    assert client.chat.completions.create(model=MODEL, messages=MESSAGES).choices[0].message.content

    streaming = threading.Barrier(6 + 1)
    results: dict[int, list[str]] = {}

    def stream(n: int) -> None:
        texts = results.setdefault(n, [])
        chunks = client.chat.completions.create(model="slow/m", messages=MESSAGES, stream=True)
        try:
            for i, chunk in enumerate(chunks):
                if i == 0:
                    streaming.wait(10)
                if chunk.choices and chunk.choices[0].delta.content:
                    texts.append(chunk.choices[0].delta.content)
        except (openai.APIError, threading.BrokenBarrierError):
            pass  # cut off: what arrived is in `texts`

    threads = [threading.Thread(target=stream, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    streaming.wait(10)  # every stream has begun
    server.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join(30)
    return results, server.wait(30)
