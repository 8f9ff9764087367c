"""Usage rollups and histograms: after random traffic, retried batches and pruning, their sums
and counts are the records'."""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model

from accounts import histograms, retention, services, usage
from accounts.models import (
    ApiKey,
    ModelPrice,
    Outcome,
    Team,
    UsageHistogram,
    UsageRecord,
    UsageRollup,
)
from accounts.prices import CENT_MILLIONTHS

NOW = datetime.now(UTC).replace(minute=30, second=0, microsecond=0)
MODELS = ["m/a", "m/b", "m/c", ""]
ENDPOINTS = ["chat_completions", "responses", "embeddings"]
SUMS = (
    "requests",
    "streams",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost_usd",
    "latency_ms",
    "ttft_ms",
    "with_ttft",
)


def _keys() -> list[ApiKey]:
    teams = [Team.objects.create(name=f"t{n}") for n in range(2)]
    found = []
    for number in range(4):
        user = get_user_model().objects.create_user(f"u{number}")
        for k in range(2):
            team = teams[(number + k) % 2] if k or number % 2 else None
            if team is not None:
                services.team_member_add(team=team, user=user)
            found.append(services.api_key_create(user=user, name=f"k{k}", team=team)[0])
    return found


def _entry(rng: random.Random, key: ApiKey) -> usage.UsageEntry:
    outcome = rng.choice([Outcome.OK] * 6 + list(Outcome))
    counted = outcome == Outcome.OK or rng.random() < 0.2
    prompt, completion = rng.randint(0, 5000), rng.randint(0, 2000)
    stream = rng.random() < 0.5
    return usage.UsageEntry(
        id=uuid.uuid4(),
        # Over 60 days, to the microsecond: hours' and days' edges are crossed everywhere.
        created_at=NOW - timedelta(microseconds=rng.randint(0, 60 * 86400 * 10**6)),
        request_id="r",
        user_id=key.user_id,
        api_key_id=key.pk,
        team_id=key.team_id,
        endpoint=rng.choice(ENDPOINTS),
        model_requested=rng.choice(MODELS),
        status=200,
        outcome=outcome,
        usage_source="provider" if counted else "missing",
        latency_ms=rng.randint(1, 90_000),
        stream=stream,
        prompt_tokens=prompt if counted else None,
        completion_tokens=completion if counted else None,
        total_tokens=prompt + completion if counted else None,
        cached_tokens=rng.randint(0, prompt) if counted and rng.random() < 0.3 else None,
        reasoning_tokens=rng.randint(0, completion) if counted and rng.random() < 0.3 else None,
        ttft_ms=rng.randint(1, 20_000) if stream and rng.random() < 0.9 else None,
    )


def _expected(records) -> dict[tuple, dict]:
    """The rollup rows `records` (UsageRecord-like) make, summed in Python."""
    rows: dict[tuple, dict] = defaultdict(lambda: dict.fromkeys(SUMS, 0))
    for record in records:
        hour = record.created_at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        group = (record.api_key_id, record.user_id, record.team_id or 0, record.endpoint)
        group += (record.model_requested, record.outcome)
        every_key = (0, 0, record.team_id or 0, "", "", record.outcome)
        day = hour.replace(hour=0)
        for span, start, grouped in (
            ("h", hour, group),
            ("d", day, group),
            ("H", hour, every_key),
            ("D", day, every_key),
        ):
            row = rows[(span, start, *grouped)]
            row["requests"] += 1
            row["streams"] += int(record.stream)
            row["with_ttft"] += int(record.ttft_ms is not None)
            for name in SUMS[2:-1]:
                row[name] += getattr(record, name) or 0
    return rows


def _rollups() -> dict[tuple, dict]:
    return {
        tuple(row[name] for name in UsageRollup.GROUP): {
            **row,
            "cost_usd": Decimal(row["cost_usd"]).quantize(CENT_MILLIONTHS),  # SQLite: a float
        }
        for row in UsageRollup.objects.values(
            *(f"{n}_id" if n in ("api_key", "user") else n for n in UsageRollup.GROUP), *SUMS
        )
        for row in [{**row, "api_key": row.pop("api_key_id"), "user": row.pop("user_id")}]
    }


def _expected_histograms(records) -> dict[tuple, int]:
    """(span, start, team, metric, bucket): how many of `records` (UsageRecord-like) it holds."""
    found: dict[tuple, int] = defaultdict(int)
    for record in records:
        hour = record.created_at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        for metric in histograms.METRICS:
            value = getattr(record, metric)
            if value is None:
                continue
            for span, start in (("h", hour), ("d", hour.replace(hour=0))):
                found[(span, start, record.team_id or 0, metric, histograms.bucket_of(value))] += 1
    return dict(found)


def _histograms() -> dict[tuple, int]:
    return {
        (row["span"], row["start"], row["team_id"], row["metric"], bucket): count
        for row in UsageHistogram.objects.values()
        for bucket, count in histograms.in_band(row).items()
    }


def _sums_only(rows: dict[tuple, dict]) -> dict[tuple, dict]:
    return {group: {name: row[name] for name in SUMS} for group, row in rows.items()}


@pytest.mark.django_db(transaction=True)
def test_the_rollups_and_histograms_are_the_records_after_random_traffic_retries_and_pruning():
    rng = random.Random(19)
    ModelPrice.objects.create(model="m/a", provider="p", input_per_million="0.15", output_per_million="0.6")
    ModelPrice.objects.create(model="m/b", provider="p", input_per_million="3", output_per_million="15")
    api_keys = _keys()
    written: list[usage.UsageEntry] = []
    while len(written) < 800:
        batch = [_entry(rng, rng.choice(api_keys)) for _ in range(rng.randint(1, 120))]
        usage._write(batch)
        if rng.random() < 0.2:  # a batch retried after its commit was lost: nothing twice
            usage._write(batch[: rng.randint(1, len(batch))])
        written += batch
        if rng.random() < 0.05:  # a key changes team: its later records count for the new one
            moved = rng.choice(api_keys)
            moved.team_id = None if moved.team_id else Team.objects.first().pk
            ApiKey.objects.filter(pk=moved.pk).update(team_id=moved.team_id)
    written += [usage._write_each([_entry(rng, api_keys[0])])[0][0] for _ in range(3)]  # one at a time

    expected = _expected(written)  # the entries carry the cost the writer priced them at
    assert any(entry.cost_usd for entry in written)
    assert _sums_only(_rollups()) == expected
    counted = _expected_histograms(written)
    assert _histograms() == counted

    pruned = retention.prune(35, now=NOW)
    assert pruned.records > 150 and UsageRecord.objects.count() > 250
    assert _sums_only(_rollups()) == expected, "pruning changed the rollups"
    assert _histograms() == counted, "pruning changed the histograms"


@pytest.mark.django_db(transaction=True)
def test_records_inserted_by_any_means_are_rolled_up():
    user = get_user_model().objects.create_user("alice")
    key = services.api_key_create(user=user, name="k")[0]
    when = datetime(2026, 5, 4, 23, 59, 59, 999999, tzinfo=UTC)
    UsageRecord.objects.create(
        created_at=when, request_id="r", user=user, api_key=key, endpoint="chat_completions",
        model_requested="m", status=200, outcome="ok", usage_source="provider", latency_ms=7,
        prompt_tokens=1, completion_tokens=2, total_tokens=3, cost_usd=Decimal("0.00000001"),
    )  # fmt: skip
    hour = UsageRollup.objects.get(span="h")
    assert hour.start == when.replace(minute=0, second=0, microsecond=0)
    assert (hour.requests, hour.total_tokens, hour.latency_ms, hour.team_id) == (1, 3, 7, 0)
    assert UsageRollup.objects.get(span="d").start == datetime(2026, 5, 4, tzinfo=UTC)
