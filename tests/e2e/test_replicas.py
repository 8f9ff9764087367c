"""Three replicas on one machine, as a deployment runs them: three `manage.py serve` processes on
their own ports behind nginx (round robin), one PostgreSQL database and one Redis. What a key
may do holds across them — exactly rpm requests a minute, tokens per minute, a monthly budget
and max-parallel — a revoked key stops working on every replica within AUTH_CACHE_TTL, and
every request is recorded once.

Runs in CI's Redis pass (REDIS_URL set: .ci/run); skipped without REDIS_URL or nginx. The
database is a scratch one on the PostgreSQL server of DATABASE_URL or TEST_POSTGRES_URL, or a
SQLite file the replicas share when no PostgreSQL answers."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tests.support.harness import Database, Router
from tests.support.nginx import nginx
from tests.support.processes import ROOT, answers, free_port, manage, proxy_env, require, scratch_database

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not os.environ.get("REDIS_URL"), reason="runs in the Redis pass (REDIS_URL=redis://…)"
    ),
    pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed"),
]

REPLICAS = 3
AUTH_CACHE_TTL = 1.0
MODEL = "openai/gpt-oss-120b:fireworks-ai"  # one the fake router serves
SLOW_MODEL = "slow/m"  # a stream of 20 chunks, one per FAKE_ROUTER_SLOW seconds
POSTGRES = os.environ.get("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")

# The keys: (username, create_api_key options), {tpm} and {budget} from _sizes().
KEYS = {
    "free": ("free", []),
    "rpm": ("rpm", ["--rpm", "9"]),
    # Refused once the minute's tokens reach tpm: 3 requests of T tokens pass, not 4.
    "tpm": ("tpm", ["--tpm", "{tpm}"]),
    # A request is admitted when its reservation fits in what is left: 3 pass, not 4.
    "budget": ("budget", ["--token-budget", "{budget}"]),
    "parallel": ("parallel", ["--max-parallel", "3"]),
    "revoked": ("revoked", []),
}
BUDGET_MAX_TOKENS = 5


@dataclass
class Deployment:
    balancer: str  # nginx's URL
    replicas: list[str]  # each replica's own URL
    processes: list[subprocess.Popen]
    db: Database
    env: dict[str, str]
    folder: Path  # the replicas' logs
    keys: dict[str, str] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)  # request id → status, of every keyed request

    def post(self, key: str, body: dict, *, url: str | None = None, timeout: float = 60) -> httpx.Response:
        """One chat request (read to its end) through the balancer, or to `url`."""
        request_id = f"replicas-{uuid.uuid4().hex}"
        response = httpx.post(
            f"{url or self.balancer}/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {self.keys[key]}", "X-Request-Id": request_id},
            timeout=timeout,
        )
        if response.status_code != 401:  # a revoked key's refusal belongs to no key: no record
            self.sent[request_id] = response.status_code
        response.request_id = request_id
        return response

    def burst(self, key: str, body: dict, count: int) -> list[httpx.Response]:
        """`count` requests at once through the balancer."""
        with ThreadPoolExecutor(count) as pool:
            return list(pool.map(lambda _: self.post(key, body), range(count)))

    def records(self, request_id: str, seconds: float = 30) -> list[dict]:
        """A request's usage records, once it has one."""
        query = "SELECT request_id, total_tokens, status FROM accounts_usagerecord WHERE request_id = %s"
        deadline = time.monotonic() + seconds
        while not (rows := self.db.query(query, request_id)) and time.monotonic() < deadline:
            time.sleep(0.05)
        return rows

    def recorded(self) -> dict[str, list[int]]:
        """Every usage record's status, by request id."""
        found: dict[str, list[int]] = {}
        for row in self.db.query("SELECT request_id, status FROM accounts_usagerecord"):
            found.setdefault(row["request_id"], []).append(row["status"])
        return found

    def logs(self) -> str:
        return "\n".join(
            path.read_text(errors="replace")[-3000:] for path in sorted(self.folder.glob("replica-*.log"))
        )

    def settled(self, response: httpx.Response) -> httpx.Response:
        """`response`, once its request is recorded: its tokens are counted by then (the
        limits are settled as the record is queued, one Redis call against a batch write)."""
        assert len(self.records(response.request_id)) == 1
        return response


def chat(model: str = MODEL, **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "hello there"}], **extra}


def upstreams(responses: list[httpx.Response]) -> set[str]:
    return {response.headers["x-upstream"] for response in responses}


def statuses(responses: list[httpx.Response]) -> list[int]:
    return sorted(response.status_code for response in responses)


def same_minute(seconds: float) -> None:
    """Start afresh if the current one-minute window ends within `seconds`."""
    if (left := 60 - time.time() % 60) < seconds:
        time.sleep(left + 0.2)


def _database(folder: Path):
    """A scratch database on PostgreSQL when one answers, else a SQLite file in `folder`."""
    base = os.environ.get("DATABASE_URL", "")
    if not base.startswith(("postgres://", "postgresql://")):
        base = POSTGRES if answers(POSTGRES) else ""
    return scratch_database(folder, base=base)


def _serve(env: dict[str, str], ports: list[int], folder: Path) -> list[subprocess.Popen]:
    """The replicas, started together; each waited for on /health."""
    processes = [
        subprocess.Popen(
            [sys.executable, "manage.py", "serve"],
            cwd=ROOT,
            env={**env, "PORT": str(port)},
            stdout=(folder / f"replica-{port}.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        for port in ports
    ]
    deadline = time.monotonic() + 60
    waiting = dict(zip(ports, processes, strict=True))
    while waiting:
        for port, process in list(waiting.items()):
            if process.poll() is not None:
                raise RuntimeError(
                    f"replica on {port} exited: {(folder / f'replica-{port}.log').read_text()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    del waiting[port]
        if time.monotonic() > deadline:
            raise RuntimeError(f"replicas on {sorted(waiting)} did not come up")
        time.sleep(0.1)
    return processes


@contextlib.contextmanager
def _nginx(folder: Path, ports: list[int]):
    """nginx on a local port, round robin over the replicas; its URL. Each answer says which
    replica gave it (X-Upstream)."""
    port = free_port()
    servers = "".join(f"    server 127.0.0.1:{p};\n" for p in ports)
    http = (
        f"  upstream hfproxy {{\n{servers}    keepalive 16;\n  }}\n"
        f"  server {{\n    listen 127.0.0.1:{port};\n    location / {{\n"
        "      proxy_pass http://hfproxy;\n      proxy_http_version 1.1;\n"
        '      proxy_set_header Connection "";\n      proxy_set_header Host $host;\n'
        "      proxy_buffering off;\n      proxy_next_upstream off;\n      proxy_read_timeout 60s;\n"
        "      add_header X-Upstream $upstream_addr always;\n    }\n  }\n"
    )
    with nginx(folder, port, http) as url:
        yield url


def _migrate_and_create_keys(env: dict[str, str], specs: dict[str, tuple[str, list[str]]]) -> dict[str, str]:
    """`migrate`, then every key, in one `manage.py shell` (one Django start-up, not one each)."""
    script = (
        "import json\nfrom django.core.management import call_command\nfrom io import StringIO\n"
        "call_command('migrate', verbosity=0)\n"
        f"specs = {json.dumps(specs)}\nkeys = {{}}\n"
        "for name, (user, options) in specs.items():\n"
        "    out = StringIO()\n"
        "    call_command('create_api_key', user, *options, stdout=out)\n"
        "    keys[name] = out.getvalue().splitlines()[-1]\n"
        "print(json.dumps(keys))\n"
    )
    return json.loads(manage("shell", "-c", script, env=env).splitlines()[-1])


def _sizes(router: Router) -> dict[str, int]:
    """The tpm and budget of the keys, from what the router says a request uses (the proxy
    records the router's usage) and what a budgeted request reserves."""
    from gateway import converter

    def tokens(body: dict) -> int:
        return httpx.post(f"{router.url}/v1/chat/completions", json=body).json()["usage"]["total_tokens"]

    plain, budgeted = tokens(chat()), tokens(chat(max_tokens=BUDGET_MAX_TOKENS))
    reservation = converter.estimate_prompt_tokens(chat()["messages"], None) + BUDGET_MAX_TOKENS
    return {
        # Between 2 and 3 requests' tokens: the fourth finds 3 T >= tpm.
        "tpm": 3 * plain - plain // 2,
        # The third fits (2 T + R), the fourth does not (3 T + R).
        "budget": reservation + 2 * budgeted + budgeted // 2,
    }


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    """The deployment, serving, with its keys."""
    redis_url = os.environ["REDIS_URL"]
    require(redis_url)
    from accounts import counters

    folder = tmp_path_factory.mktemp("replicas")
    prefix = f"hfproxy-test:replicas:{uuid.uuid4().hex}:"  # our counters only, deleted afterwards
    router = Router(FAKE_ROUTER_SLOW="0.15")
    router.start()
    try:
        with _database(folder) as database:
            env = proxy_env(
                router.url,
                database,
                HOST="127.0.0.1",
                WEB_CONCURRENCY="1",
                REDIS_URL=redis_url,
                REDIS_KEY_PREFIX=prefix,
                AUTH_CACHE_TTL=str(AUTH_CACHE_TTL),
                USAGE_FLUSH_INTERVAL="0.1",
                KEY_MAX_IN_FLIGHT="0",
                # Replicas on one host share one journal folder (docs/deployment.md).
                USAGE_JOURNAL_DIR=str(folder / "journal"),
            )
            sizes = _sizes(router)
            specs = {
                name: (user, [o.format(**sizes) for o in options]) for name, (user, options) in KEYS.items()
            }
            ports = [free_port() for _ in range(REPLICAS)]
            keys = _migrate_and_create_keys(env, specs)
            processes = _serve(env, ports, folder)
            try:
                with _nginx(folder, ports) as balancer:
                    yield Deployment(
                        balancer=balancer,
                        replicas=[f"http://127.0.0.1:{port}" for port in ports],
                        processes=processes,
                        db=Database(database),
                        env=env,
                        folder=folder,
                        keys=keys,
                    )
            finally:
                _stop_all(processes)
    finally:
        router.stop()
        counters.delete_all(redis_url, prefix)


def _stop_all(processes: list[subprocess.Popen]) -> list[int]:
    """SIGTERM to every replica at once (each drains and writes its records); their exit codes."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return [process.returncode for process in processes]


def test_rpm_and_tpm_are_exact_across_the_replicas(keyed):
    same_minute(15)
    answered = keyed.burst("rpm", chat(), 15)
    assert statuses(answered) == [200] * 9 + [429] * 6
    assert len(upstreams(answered)) == REPLICAS  # every replica took its share
    # One after another, each to the next replica: the tokens another replica counted refuse it.
    answered = [keyed.settled(keyed.post("tpm", chat())) for _ in range(5)]
    assert [response.status_code for response in answered] == [200, 200, 200, 429, 429]
    assert len(upstreams(answered[:3])) == REPLICAS
    assert answered[3].json()["error"]["code"] == "rate_limit_exceeded"


def test_a_monthly_budget_is_exact_across_the_replicas(keyed):
    body = chat(max_tokens=BUDGET_MAX_TOKENS)
    answered = [keyed.settled(keyed.post("budget", body)) for _ in range(5)]
    assert [response.status_code for response in answered] == [200, 200, 200, 429, 429]
    assert len(upstreams(answered[:3])) == REPLICAS
    assert "budget" in answered[3].json()["error"]["message"].lower()


def test_max_parallel_is_exact_across_the_replicas(keyed):
    # Nine streams of three seconds at once, three to each replica: three hold the key's slots.
    answered = keyed.burst("parallel", chat(SLOW_MODEL, stream=True), 9)
    assert statuses(answered) == [200] * 3 + [429] * 6
    assert len(upstreams(answered)) == REPLICAS
    assert all(
        response.text.rstrip().endswith("data: [DONE]") for response in answered if response.is_success
    )
    # The slots are given back: three more pass.
    answered = keyed.burst("parallel", chat(), 3)
    assert statuses(answered) == [200] * 3


def test_revocation_takes_effect_on_every_replica_within_the_cache_ttl(keyed):
    for replica in keyed.replicas:  # each has the key in its cache
        assert keyed.post("revoked", chat(), url=replica).status_code == 200
    keyed.db.execute(
        "UPDATE accounts_apikey SET revoked_at = %s WHERE user_id = (SELECT id FROM auth_user WHERE username = %s)",
        datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S+00:00"),
        "revoked",
    )
    # Every replica's cached lookup was made before the revocation: none outlives the TTL.
    time.sleep(AUTH_CACHE_TTL + 0.2)
    for replica in keyed.replicas:
        refused = keyed.post("revoked", chat(), url=replica)
        assert refused.status_code == 401, replica


def test_every_request_is_recorded_once(keyed):
    # Answers and streams on every replica; every request of this module is recorded, once the
    # writers have had their turn; then the replicas stop, and nothing is recorded twice.
    answered = keyed.burst("free", chat(), 6) + keyed.burst(
        "free", chat(stream=True, stream_options={"include_usage": True}), 6
    )
    assert statuses(answered) == [200] * 12
    assert len(upstreams(answered)) == REPLICAS
    deadline = time.monotonic() + 30
    while (recorded := keyed.recorded()).keys() != keyed.sent.keys() and time.monotonic() < deadline:
        time.sleep(0.1)
    codes = _stop_all(keyed.processes)
    recorded = keyed.recorded()
    assert {request_id: [status] for request_id, status in keyed.sent.items()} == recorded, {
        "missing": keyed.sent.keys() - recorded.keys(),
        "not sent": recorded.keys() - keyed.sent.keys(),
        "twice": {request_id: rows for request_id, rows in recorded.items() if len(rows) > 1},
    }
    assert codes == [0] * REPLICAS, keyed.logs()
