"""Rows and values to start a test from: a usage record as the writer would leave it, the
caller an authenticated key becomes."""

from __future__ import annotations

from datetime import UTC, datetime

from accounts.keys import Caller
from accounts.models import ApiKey, UsageRecord


def make_usage(
    api_key: ApiKey, model: str, outcome: str = "ok", tokens=(10, 5), when=None, cost=None, team=None
) -> None:
    UsageRecord.objects.create(
        team=team,
        created_at=when or datetime.now(UTC),
        request_id="r",
        user=api_key.user,
        api_key=api_key,
        endpoint="chat_completions",
        model_requested=model,
        status=200 if outcome == "ok" else 502,
        outcome=outcome,
        prompt_tokens=tokens[0],
        completion_tokens=tokens[1],
        total_tokens=sum(tokens),
        usage_source="provider",
        latency_ms=10,
        cost_usd=cost,
    )


def caller(**changes) -> Caller:
    fields = {
        "key_id": 7,
        "key_prefix": "hfp_abcdefgh",
        "user_id": 3,
        "username": "alice",
        "is_staff": False,
        "token_name": "HF_TOKEN",
        "upstream_token": "hf_secret",
        **changes,
    }
    return Caller(**fields)
