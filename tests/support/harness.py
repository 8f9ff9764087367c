"""A real hfproxy in front of the fake router, for the fault suite, the end-to-end tests and the
README's walk-through: the fake router in its own process, hfproxy as production runs it
(`manage.py serve`, DEBUG off, its own database), a private PostgreSQL that can really be
stopped, readers of what each left behind (router stats, usage rows, the proxy's log), and the
requests the scenarios send."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from tests.support.processes import free_port, manage, proxy_env, scratch_database, server_env, start, stop

# Settings of every proxy under test: short limits, so that timeouts are seconds, not minutes.
TIMEOUTS = {"CONNECT_TIMEOUT": "1", "READ_TIMEOUT": "1", "REQUEST_TIMEOUT": "3", "CLIENT_BODY_TIMEOUT": "1"}
MAX_REQUEST_BYTES = 300_000
CANARY_TOKEN = "hf_CanaryTokenDoNotLeak0123456789abcdef"


class Router:
    """The fake router in its own process; `stop()` and `start()` make it refuse connections."""

    def __init__(self, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = server_env(**{"FAKE_ROUTER_DRIP": "0.2", "FAKE_ROUTER_SLOW": "0.05", **env})
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = start(
            ["-m", "tests.support.fake_router", "--port", str(self.port)], self.env, self.url + "/_stats"
        )

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            self.process = None

    def stats(self) -> dict[str, Any]:
        return httpx.get(self.url + "/_stats").json()

    def reset(self) -> None:
        httpx.post(self.url + "/_reset")

    def attempts(self, model: str) -> int:
        return self.stats()["attempts"].get(model, 0)


class Database:
    """Plain SQL on a server's database (SQLite file or PostgreSQL), from outside the server."""

    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        if self.url.startswith("sqlite"):
            with contextlib.closing(sqlite3.connect(self.url.removeprefix("sqlite:///"))) as connection:
                connection.row_factory = sqlite3.Row
                return [dict(row) for row in connection.execute(sql.replace("%s", "?"), params)]
        import psycopg
        from psycopg.rows import dict_row

        url = self.url.replace("postgres://", "postgresql://", 1)
        with psycopg.connect(url, row_factory=dict_row, connect_timeout=3) as connection:
            return connection.execute(sql, params).fetchall()

    def execute(self, sql: str, *params: Any) -> None:
        if self.url.startswith("sqlite"):
            with contextlib.closing(sqlite3.connect(self.url.removeprefix("sqlite:///"))) as connection:
                connection.execute(sql.replace("%s", "?"), params)
                connection.commit()
            return
        import psycopg

        with psycopg.connect(self.url.replace("postgres://", "postgresql://", 1)) as connection:
            connection.execute(sql, params)


@dataclass
class Proxy:
    """hfproxy serving on a local port, with the keys the scenarios use."""

    url: str
    env: dict[str, str]
    log: Path
    db: Database
    keys: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = None

    @property
    def api(self) -> str:
        return self.url + "/v1"

    def auth(self, key: str = "canary") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[key]}"}

    def records(self, request_id: str) -> list[dict[str, Any]]:
        return self.db.query("SELECT * FROM accounts_usagerecord WHERE request_id = %s", request_id)

    def record(self, request_id: str, seconds: float = 10) -> dict[str, Any]:
        """The usage record of a request, once written. (That no request has two is checked
        for the whole session when the proxy stops: `duplicates()`.)"""
        deadline = time.monotonic() + seconds
        while not (rows := self.records(request_id)):
            if time.monotonic() > deadline:
                raise AssertionError(f"no usage record for request {request_id}")
            time.sleep(0.05)
        assert len(rows) == 1, f"{len(rows)} usage records for request {request_id}"
        return rows[0]

    def endpoint_records(self, endpoint: str, count: int, columns: str, seconds: float = 10) -> list[dict]:
        """An endpoint's records (`columns`, oldest first), once `count` of them are written (or
        what is there after `seconds`)."""
        query = f"SELECT {columns} FROM accounts_usagerecord WHERE endpoint = %s ORDER BY created_at"
        deadline = time.monotonic() + seconds
        while len(rows := self.db.query(query, endpoint)) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return rows

    def duplicates(self) -> list[dict[str, Any]]:
        """Request ids with more than one usage record."""
        return self.db.query(
            "SELECT request_id, COUNT(*) AS n FROM accounts_usagerecord GROUP BY request_id HAVING COUNT(*) > 1"
        )

    def count_records(self) -> int:
        return self.db.query("SELECT COUNT(*) AS n FROM accounts_usagerecord")[0]["n"]

    def rss_mib(self) -> float:
        """Resident memory of the serving process (and its workers), MiB."""
        pids = [self.process.pid, *_children(self.process.pid)]
        total = 0
        for pid in pids:
            with contextlib.suppress(FileNotFoundError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        return total / 1024

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.process is None:
            return 0
        stop(self.process)
        code, self.process = self.process.returncode, None
        return code


def _children(pid: int) -> list[int]:
    found = []
    with contextlib.suppress(FileNotFoundError):
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            found += [int(child), *_children(int(child))]
    return found


def launch_proxy(router: Router, database: str, folder: Path, **settings: str) -> Proxy:
    """Migrate `database`, create the scenarios' keys, and serve as production does."""
    port = free_port()
    env = proxy_env(
        router.url,
        database,
        HOST="127.0.0.1",
        PORT=str(port),
        **{
            "WEB_CONCURRENCY": "1",
            "MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES),
            "USAGE_FLUSH_INTERVAL": "0.1",
            "AUTH_CACHE_TTL": "1",
            # With the database: a proxy started again in `folder` replays what one left.
            "USAGE_JOURNAL_DIR": str(folder / "journal"),
            **TIMEOUTS,
            **settings,
        },
    )
    manage("migrate", "--verbosity", "0", env=env)
    keys = {
        "canary": _key(env, "canary", "--hf-token", CANARY_TOKEN, "--name", "canary key"),
        "team": _key(env, "teammate"),
        "revoked": _key(env, "teammate", "--name", "to revoke"),
        "expired": _key(env, "teammate", "--name", "to expire", "--expires-in-days", "1"),
    }
    manage("revoke_api_key", keys["revoked"][:12], env=env)
    db = Database(database)
    db.execute(
        "UPDATE accounts_apikey SET expires_at = %s WHERE name = %s", "2000-01-01 00:00:00+00:00", "to expire"
    )
    log = folder / f"proxy-{port}.log"
    proxy = Proxy(url=f"http://127.0.0.1:{port}", env=env, log=log, db=db, keys=keys)
    proxy.process = start(["manage.py", "serve"], env, proxy.url + "/health", output=log.open("ab"))
    return proxy


@contextlib.contextmanager
def scratch_proxy(router: Router, folder: Path, **settings: str):
    """A proxy in front of `router` on a scratch database, stopped afterwards."""
    with scratch_database(folder) as database:
        proxy = launch_proxy(router, database, folder, **settings)
        try:
            yield proxy
        finally:
            proxy.stop()


@contextlib.contextmanager
def router_and_proxy(folder: Path, **settings: str):
    """A fake router and a proxy in front of it on a scratch database: (router, proxy)."""
    router = Router()
    router.start()
    try:
        with scratch_proxy(router, folder, **settings) as proxy:
            yield router, proxy
    finally:
        router.stop()


def _key(env: dict[str, str], username: str, *options: str) -> str:
    return manage("create_api_key", username, *options, env=env).splitlines()[-1]


def request_id() -> str:
    return uuid.uuid4().hex


def chat(model: str, stream: bool = False, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "hello there"}],
        "stream": stream,
        **extra,
    }


@dataclass
class Answer:
    """What a client saw: status, headers, body (a stream's events), and how long it took."""

    request_id: str
    status: int
    headers: httpx.Headers
    body: bytes
    seconds: float

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def events(self) -> list[str]:
        return [line[6:] for line in self.body.decode().splitlines() if line.startswith("data: ")]


def send(
    proxy: Proxy,
    body: Any = None,
    *,
    key: str | None = "canary",
    path: str = "/chat/completions",
    method: str = "POST",
    headers: dict[str, str] | None = None,
    content: bytes | None = None,
    timeout: float = 15,
) -> Answer:
    """One request to the proxy, read to its end, with a fresh request id."""
    rid = request_id()
    sent = {"X-Request-Id": rid, **(proxy.auth(key) if key else {}), **(headers or {})}
    if content is None and body is not None:
        content, sent["Content-Type"] = json.dumps(body).encode(), "application/json"
    started = time.monotonic()
    with httpx.Client(timeout=timeout) as client:
        response = client.request(method, proxy.api + path, content=content, headers=sent)
    return Answer(rid, response.status_code, response.headers, response.content, time.monotonic() - started)


CSRF_FIELD = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


def csrf_token(page: httpx.Response) -> str:
    """The CSRF token of an admin form page, to post it back."""
    return CSRF_FIELD.search(page.text).group(1)


@contextlib.contextmanager
def admin_session(proxy: Proxy, username: str, password: str):
    """An HTTP client signed in to the proxy's admin as `username` (the proxy needs
    SECURE_COOKIES=false: its cookies travel over plain HTTP here)."""
    with httpx.Client(base_url=proxy.url, timeout=15) as client:
        login = client.get("/admin/login/")
        signed_in = client.post(
            "/admin/login/?next=/admin/",
            data={"username": username, "password": password, "csrfmiddlewaretoken": csrf_token(login)},
        )
        assert signed_in.status_code == 302, signed_in.text[:500]
        yield client


def open_request(proxy, body: dict, rid: str, *, rcvbuf: int | None = None) -> socket.socket:
    """A raw connection that has sent a chat request; the caller decides when to leave."""
    host, port = proxy.url.removeprefix("http://").split(":")
    connection = socket.socket()
    if rcvbuf:
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    connection.connect((host, int(port)))
    raw = json.dumps(body).encode()
    connection.sendall(
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {proxy.keys['canary']}\r\nX-Request-Id: {rid}\r\n"
        f"Content-Length: {len(raw)}\r\n\r\n".encode()
        + raw
    )
    return connection


# --- A TCP relay that can fall silent ------------------------------------------------------------


class SilentRelay:
    """Relays TCP connections to `target` (host, port) until `silence()`: from then on it accepts
    connections and reads what comes but passes nothing on, either way — a server whose packets
    are dropped, which neither refuses nor closes anything. `resume()` passes on again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.silent = threading.Event()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, database_url: str) -> str:
        """`database_url` with this relay's address in place of the server's."""
        parts = urlsplit(database_url)
        netloc = parts.netloc.rpartition("@")[0]
        return urlunsplit(
            parts._replace(netloc=f"{netloc}@127.0.0.1:{self.port}" if netloc else f"127.0.0.1:{self.port}")
        )

    def silence(self) -> None:
        self.silent.set()

    def resume(self) -> None:
        self.silent.clear()

    def close(self) -> None:
        for sock in [self.listener, *self.sockets]:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                server = socket.create_connection(self.target)
                self.sockets += [client, server]
                for source, sink in ((client, server), (server, client)):
                    threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                while self.silent.is_set():
                    time.sleep(0.05)
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


# --- A PostgreSQL of our own, to stop and start ---------------------------------------------------


class PrivatePostgres:
    """A throwaway PostgreSQL cluster (initdb) on a free port: stopping it stops nothing else."""

    def __init__(self) -> None:
        self.bin = _postgres_bin()
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="hfproxy-pg-"))
        self.data = self.folder / "data"
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres"
        self._as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as_postgres:
            shutil.chown(self.folder, "postgres", "postgres")

    @staticmethod
    def available() -> bool:
        return _postgres_bin() is not None

    @classmethod
    @contextlib.contextmanager
    def running(cls):
        """A started private cluster, removed afterwards, for a test of the PostgreSQL pass:
        skipped on SQLite, and where PostgreSQL's server programs are missing (failed in CI)."""
        import pytest

        if not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
            pytest.skip("runs in the PostgreSQL pass (DATABASE_URL=postgres://…)")
        if not cls.available():
            if os.environ.get("CI") == "true":
                pytest.fail("PostgreSQL's server programs (initdb, pg_ctl) are needed for this test")
            pytest.skip("PostgreSQL's server programs (initdb, pg_ctl) are not installed")
        postgres = cls()
        try:
            postgres.init()
            postgres.start()
            yield postgres
        finally:
            postgres.remove()

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as_postgres, *args], check=True, capture_output=True)

    def init(self) -> None:
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.folder / "log"),
            "-w",
            "start",
        )

    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def _postgres_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return versions[-1].parent if versions else None
