"""Measure the admin's usage dashboard against many usage rows.

    python -m bench.dashboard [--rows 1000000] [--days 30] [--database URL] [--repeat 3]

Fills a scratch database with synthetic usage rows (bulk_create in batches, spread evenly
over the last `--days` days, as the gateway would have written them), then times each of the
dashboard's queries, the whole dashboard and the admin pages over usage, and prints the
figures. Without `--database` the scratch database is a SQLite file in a temporary folder, or
a new PostgreSQL database when DATABASE_URL names a PostgreSQL server; either is removed at the
end. With `--database URL` that database is kept, and refilled only when its row count differs
from `--rows` (so a second run starts at once). Speed is never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

BATCH = 5_000
USERS = 40
KEYS_PER_USER = 2
MODELS = [
    "openai/gpt-oss-120b",
    "openai/gpt-oss-20b",
    "meta-llama/Llama-3.3-70B-Instruct",
    "Qwen/Qwen3-Coder-480B-A35B-Instruct",
    "deepseek-ai/DeepSeek-V3.1",
    "moonshotai/Kimi-K2-Instruct",
    "google/gemma-3-27b-it",
    "mistralai/Mistral-Small-3.2-24B-Instruct",
]


def configure(database_url: str) -> None:
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "hfproxy_site.settings",
            "ENV_FILE": "",
            "DEBUG": "false",
            "DATABASE_URL": database_url,
            "ALLOWED_HOSTS": "testserver",
        }
    )
    os.environ.setdefault("SECRET_KEY", "bench-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz")
    os.environ.setdefault("FIELD_ENCRYPTION_KEY", "Jl5dCJQpxBfIsBZV8vsj0mD8Q4QOEbbS3bQw9Dt1Rmo=")
    import django

    django.setup()


def fill(rows: int, days: int) -> None:
    from django.contrib.auth import get_user_model
    from django.db import transaction
    from django.utils import timezone

    from accounts import services
    from accounts.models import ApiKey, Outcome, UsageRecord, UsageSource

    UsageRecord.objects.all().delete()
    ApiKey.objects.all().delete()
    get_user_model().objects.filter(username__startswith="bench-").delete()
    keys = []
    for number in range(USERS):
        user = get_user_model().objects.create_user(f"bench-{number:03d}")
        keys += [services.api_key_create(user=user, name=f"k{k}")[0] for k in range(KEYS_PER_USER)]

    rng = random.Random(3)
    now = timezone.now()
    start = now - timedelta(days=days)
    step = (now - start) / rows
    # A few heavy users and models, as in a real team.
    key_weights = [1 / (rank + 1) for rank in range(len(keys))]
    model_weights = [1 / (rank + 1) for rank in range(len(MODELS))]
    outcomes = [Outcome.OK, Outcome.UPSTREAM_ERROR, Outcome.CLIENT_DISCONNECTED, Outcome.TIMEOUT]
    started = time.perf_counter()
    for first in range(0, rows, BATCH):
        count = min(BATCH, rows - first)
        picked_keys = rng.choices(keys, key_weights, k=count)
        picked_models = rng.choices(MODELS, model_weights, k=count)
        picked_outcomes = rng.choices(outcomes, [95, 3, 1.5, 0.5], k=count)
        batch = []
        for offset in range(count):
            key, outcome = picked_keys[offset], picked_outcomes[offset]
            stream = rng.random() < 0.6
            prompt, completion = rng.randint(10, 4000), rng.randint(1, 1500)
            ok = outcome == Outcome.OK
            batch.append(
                UsageRecord(
                    id=uuid.UUID(int=rng.getrandbits(128), version=4),
                    created_at=start + step * (first + offset),
                    request_id=f"bench-{first + offset}",
                    user_id=key.user_id,
                    api_key_id=key.pk,
                    endpoint="chat_completions",
                    model_requested=picked_models[offset],
                    model_answered=picked_models[offset],
                    stream=stream,
                    status=200 if ok else 502,
                    outcome=outcome,
                    prompt_tokens=prompt if ok else None,
                    completion_tokens=completion if ok else None,
                    total_tokens=prompt + completion if ok else None,
                    usage_source=UsageSource.PROVIDER if ok else UsageSource.MISSING,
                    latency_ms=int(rng.lognormvariate(7, 0.8)),
                    ttft_ms=int(rng.lognormvariate(5.5, 0.6)) if stream else None,
                )
            )
        with transaction.atomic():
            UsageRecord.objects.bulk_create(batch)
        if (first // BATCH) % 20 == 0:
            print(f"  {first + count:>9,} rows  {time.perf_counter() - started:6.1f} s", flush=True)
    print(f"filled {rows:,} rows in {time.perf_counter() - started:.1f} s")


def timed(function: Callable[[], object], repeat: int) -> float:
    """The median wall time of `function`, in milliseconds (after one warm-up call)."""
    function()
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        runs.append((time.perf_counter() - started) * 1000)
    return statistics.median(runs)


def measure_period(key: str, now, repeat: int) -> None:
    from accounts import dashboard

    period = dashboard.PERIODS[key]
    since = now - period.span
    records = dashboard.usage_in(since=since)
    count, with_ttft = records.count(), records.filter(ttft_ms__isnull=False).count()
    figures = {
        "series": lambda: dashboard.usage_series(since=since, until=now, step=period.step),
        "top users": lambda: dashboard.usage_top(since=since, by="user_id"),
        "top models": lambda: dashboard.usage_top(since=since, by="model_requested"),
    }
    for name, fraction in (("p50", 0.5), ("p95", 0.95)):
        figures[f"latency {name}"] = lambda f=fraction: dashboard.percentile(records, "latency_ms", f, count)
        figures[f"ttft {name}"] = lambda f=fraction: dashboard.percentile(records, "ttft_ms", f, with_ttft)
    figures["whole dashboard"] = lambda: dashboard.usage_dashboard(period=key, now=now)
    print(f"\n{key} ({count:,} rows in the period)")
    for name, function in figures.items():
        print(f"  {name:<20} {timed(function, repeat):8.1f}")


def measure(repeat: int) -> None:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.utils import timezone

    from accounts import dashboard
    from accounts.models import UsageRecord

    print(
        f"database: {connection.vendor}, {UsageRecord.objects.count():,} usage rows; median of {repeat}, ms"
    )
    now = timezone.now()
    for key in dashboard.PERIODS:
        measure_period(key, now, repeat)

    admin, _ = get_user_model().objects.get_or_create(
        username="bench-admin", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(admin)
    pages = {
        "dashboard page 24h": "/admin/accounts/usagerecord/dashboard/?period=24h",
        "dashboard page 7d": "/admin/accounts/usagerecord/dashboard/?period=7d",
        "dashboard page 30d": "/admin/accounts/usagerecord/dashboard/?period=30d",
        "API key list": "/admin/accounts/apikey/",
        "usage list": "/admin/accounts/usagerecord/",
        "usage list, 1 day": "/admin/accounts/usagerecord/?created_at__gte="
        + (now - timedelta(days=1)).strftime("%Y-%m-%d+00:00:00%%2B00:00"),
    }
    print("\nadmin pages (whole request)")
    for name, url in pages.items():

        def get(url=url):
            response = client.get(url)
            assert response.status_code == 200, (url, response.status_code)

        print(f"  {name:<20} {timed(get, repeat):8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--database", help="a database URL to use and keep (default: a scratch one)")
    options = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.support.processes import scratch_database

    with contextlib.ExitStack() as stack:
        url = options.database
        if url is None:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hfproxy-bench-")))
            url = stack.enter_context(scratch_database(folder))
        configure(url)
        from django.core.management import call_command
        from django.db import connections

        from accounts.models import UsageRecord

        call_command("migrate", verbosity=0)
        if UsageRecord.objects.count() != options.rows:
            fill(options.rows, options.days)
        if connections["default"].vendor == "postgresql":
            # What autovacuum does soon after a load: statistics, and the visibility map
            # that index-only scans need.
            with connections["default"].cursor() as cursor:
                cursor.execute("VACUUM ANALYZE accounts_usagerecord")
        measure(options.repeat)
        connections.close_all()  # before a scratch PostgreSQL database is dropped


if __name__ == "__main__":
    main()
