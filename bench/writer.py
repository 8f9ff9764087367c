"""Measure the usage writer: records per second into the database, and what each one costs it.

    python -m bench.writer [--records 50000] [--keys 200] [--database URL]

Feeds one worker's writer (`accounts.usage.UsageWriter`) records as the gateway does
(`record()`: the journal line, the queue) and times the flushes that write them, in batches of
BATCH_SIZE: records per second, and per record the writer thread's wall time and the database
backend's CPU time (read from /proc: the server must be on this machine). Then the same batches
written straight with `usage._write`, with the records' triggers off, then the rollups', the
histograms' and the totals' added in turn: what each adds to an insert. Without `--database`, a
scratch PostgreSQL database when DATABASE_URL names a PostgreSQL server (else a SQLite file),
removed at the end. Speed is never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.dashboard import MODELS, configure

_TICKS = os.sysconf("SC_CLK_TCK")


def _backend_cpu(pid: int | None) -> float:
    """CPU seconds the database backend `pid` has used (0 when it cannot be read)."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _keys(count: int) -> list:
    from django.contrib.auth import get_user_model

    from accounts import services
    from accounts.models import ModelPrice, Team

    team = Team.objects.create(name="bench-writer-team")
    found = []
    for number in range(count):
        user = get_user_model().objects.create_user(f"bench-writer-{number:04d}")
        if number % 2:
            services.team_member_add(team=team, user=user)
        found.append(services.api_key_create(user=user, name="k", team=team if number % 2 else None)[0])
    for model in MODELS:
        ModelPrice.objects.create(model=model, provider="p", input_per_million="0.5", output_per_million="2")
    return found


def _entries(count: int, keys: list, rng: random.Random) -> list:
    from accounts.usage import UsageEntry

    now = datetime.now(UTC)
    made = []
    for n in range(count):
        key = rng.choice(keys)
        prompt, completion = rng.randint(10, 4000), rng.randint(1, 1500)
        stream = rng.random() < 0.6
        made.append(
            UsageEntry(
                id=uuid.uuid4(),
                created_at=now - timedelta(milliseconds=count - n),
                request_id=f"req-{uuid.uuid4().hex}",
                user_id=key.user_id,
                api_key_id=key.pk,
                team_id=key.team_id,
                endpoint="chat_completions",
                status=200,
                outcome="ok",
                usage_source="provider",
                latency_ms=rng.randint(200, 9000),
                upstream_attempts=1,
                provider="p",
                model_requested=rng.choice(MODELS),
                model_answered="",
                stream=stream,
                prompt_tokens=prompt,
                completion_tokens=completion,
                total_tokens=prompt + completion,
                ttft_ms=rng.randint(50, 900) if stream else None,
            )
        )
    return made


def _backend_pid() -> int | None:
    from django.db import connection

    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


async def _through_the_writer(entries: list) -> tuple[float, float]:
    """Wall seconds to record and flush `entries` with one UsageWriter, and its backend's CPU."""
    from asgiref.sync import sync_to_async

    from accounts import usage

    writer = usage.UsageWriter()
    pid = await sync_to_async(_backend_pid)()  # the writer's thread's connection
    cpu, own = _backend_cpu(pid), time.process_time()
    started = time.perf_counter()
    for entry in entries:
        writer.record(entry)
    await writer.flush()
    elapsed = time.perf_counter() - started
    cpu, own = _backend_cpu(pid) - cpu, time.process_time() - own
    await writer.stop()
    return elapsed, cpu, own


def _straight(entries: list, *, triggers: tuple[str, ...]) -> tuple[float, float]:
    """Wall seconds to write `entries` with `usage._write` in batches, and the backend's CPU,
    with only `triggers` of the records' on."""
    from django.db import connection

    from accounts import usage

    with connection.cursor() as cursor:
        for name in _triggers():
            state = "ENABLE" if name in triggers else "DISABLE"
            cursor.execute(f"ALTER TABLE accounts_usagerecord {state} TRIGGER {name}")
    pid = _backend_pid()
    cpu, own, started = _backend_cpu(pid), time.process_time(), time.perf_counter()
    for first in range(0, len(entries), usage.BATCH_SIZE):
        usage._write(entries[first : first + usage.BATCH_SIZE])
    return time.perf_counter() - started, _backend_cpu(pid) - cpu, time.process_time() - own


TRIGGERS = (
    "accounts_usage_rollup",
    "accounts_usage_histogram",
    "accounts_usage_totals",
)  # migrations 0011-0013


def _triggers() -> tuple[str, ...]:
    """Which of TRIGGERS are there to switch (PostgreSQL)."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return ()
    with connection.cursor() as cursor:
        cursor.execute("SELECT tgname FROM pg_trigger WHERE tgname = ANY(%s)", [list(TRIGGERS)])
        found = {row[0] for row in cursor.fetchall()}
    return tuple(name for name in TRIGGERS if name in found)


def _report(label: str, count: int, seconds: float, cpu: float, own: float) -> None:
    """Wall time, and CPU time per record: the worker's and the database backend's. On a busy
    machine the wall time waits for a core; the CPU times say what each record costs, and
    records/s at one core each is what one worker sustains on an idle machine."""
    per = 1e6 / count
    line = f"  {label:<38} {count / seconds:8,.0f} records/s wall  worker CPU {own * per:6.1f} µs"
    if cpu:
        line += (
            f"  backend CPU {cpu * per:6.1f} µs  -> {count / max(own, cpu):8,.0f} records/s at one core each"
        )
    print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--keys", type=int, default=200, help="distinct keys the records spread over")
    parser.add_argument("--database", help="a database URL to use (default: a scratch one)")
    options = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.support.processes import scratch_database

    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hfproxy-bench-writer-")))
        url = options.database or stack.enter_context(scratch_database(folder))
        os.environ["USAGE_JOURNAL_DIR"] = str(folder / "journal")
        configure(url)
        from django.core.management import call_command
        from django.db import connection, connections

        from accounts import usage

        call_command("migrate", verbosity=0)
        rng = random.Random(20)
        keys = _keys(options.keys)
        print(
            f"database: {connection.vendor}; {options.records:,} records over {options.keys} keys,"
            f" batches of {usage.BATCH_SIZE}"
        )
        present = _triggers()
        _straight(_entries(2 * usage.BATCH_SIZE, keys, rng), triggers=present)  # warm-up
        _report(
            "UsageWriter: record() + flush()",
            options.records,
            *asyncio.run(_through_the_writer(_entries(options.records, keys, rng))),
        )
        # Each trigger added in turn (none, the rollups', the histograms', the totals'), twice.
        steps = [present[:n] for n in range(len(present) + 1)] * 2 if present else [(), ()]
        for triggers in steps:
            figures = _straight(_entries(options.records, keys, rng), triggers=triggers)
            label = "_write, triggers: " + (
                " + ".join(t.removeprefix("accounts_usage_") for t in triggers) or "none"
            )
            _report(label if present else "_write (no triggers)", options.records, *figures)
        connections.close_all()


if __name__ == "__main__":
    main()
