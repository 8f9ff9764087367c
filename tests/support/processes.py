"""Starting real servers on local ports, for the end-to-end tests and the benchmarks."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(url: str) -> bool:
    """Whether the PostgreSQL or Redis server at `url` takes a connection."""
    try:
        if url.startswith("redis"):
            import redis

            redis.Redis.from_url(url, socket_connect_timeout=1).ping()
        else:
            import psycopg

            psycopg.connect(url.replace("postgres://", "postgresql://", 1), connect_timeout=2).close()
        return True
    except Exception:
        return False


def require(*urls: str) -> None:
    """Skip the calling test when one of these servers does not answer; under CI, fail it
    (CI runs on a machine that has them)."""
    import pytest

    missing = [url for url in urls if not answers(url)]
    if missing and os.environ.get("CI") == "true":
        pytest.fail(f"not answering: {missing}")
    if missing:
        pytest.skip(f"not answering: {missing}")


def server_env(**overrides: str) -> dict[str, str]:
    """This process's environment for a server process, minus what only the tests use."""
    return {
        **{k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL")},
        **overrides,
    }


def proxy_env(router: str, database: str, **overrides: str) -> dict[str, str]:
    """The environment of an hfproxy server under test: production settings (DEBUG off), a
    fresh encryption key, the fake router at `router` standing in for Hugging Face."""
    from cryptography.fernet import Fernet

    defaults = {
        "ENV_FILE": "",
        "DEBUG": "false",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECRET_KEY": "server-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
        "FIELD_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "HF_TOKEN": "hf_server_token_value",
        "HF_BASE_URL": f"{router}/v1",
        "HF_INFERENCE_URL": f"{router}/hf-inference",
        "HF_HUB_URL": router,  # the fake router answers the Hub's model info too
        "DATABASE_URL": database,
        # One journal per database: a server must never replay another test's records into its own.
        "USAGE_JOURNAL_DIR": os.path.join(
            tempfile.gettempdir(), f"hfproxy-journal-{hashlib.sha256(database.encode()).hexdigest()[:16]}"
        ),
    }
    return server_env(**{**defaults, **overrides})


def start(
    args: list[str],
    env: dict[str, str] | None,
    ready_url: str,
    seconds: float = 20,
    cpus: set[int] | None = None,
    python: str = sys.executable,
    output=None,
    cwd: Path = ROOT,
) -> subprocess.Popen:
    """Run `python ARGS` from the project root (or `cwd`) and wait until `ready_url` answers.
    `cpus` pins the process (as `taskset` would) to those CPUs; `output`: a file for its
    stdout and stderr (default: ours)."""
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    process = subprocess.Popen(
        [python, *args], cwd=cwd, env=env, preexec_fn=pin, stdout=output, stderr=output
    )
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{' '.join(args)} exited with {process.returncode}")
        try:
            httpx.get(ready_url, timeout=0.5)
            return process
        except httpx.HTTPError:
            time.sleep(0.1)
    stop(process)
    raise RuntimeError(f"{ready_url} did not come up")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def scratch_database(folder: Path, base: str | None = None) -> Iterator[str]:
    """A DATABASE_URL for a server under test: a new PostgreSQL database when `base` (default:
    DATABASE_URL) names a PostgreSQL server (dropped afterwards), else a SQLite file in `folder`."""
    base = os.environ.get("DATABASE_URL", "") if base is None else base
    if not base.startswith(("postgres://", "postgresql://")):
        yield f"sqlite:///{folder / 'server.sqlite3'}"
        return
    import psycopg

    parts = urlsplit(base)
    name = f"hfproxy_scratch_{secrets.token_hex(4)}"
    admin = urlunsplit(parts._replace(scheme="postgresql"))
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def manage(*args: str, env: dict[str, str], cwd: Path = ROOT) -> str:
    """Run `manage.py ARGS` from the project root (or `cwd`); its stdout."""
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout
