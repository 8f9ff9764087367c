"""The reads: a key named by an admin, a key's allow-list, and the keys' recent usage."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.utils import timezone

from accounts import selectors, services
from accounts.models import ApiKey, Outcome, UsageRecord, UsageSource, UserPolicy

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice():
    return get_user_model().objects.create_user("alice")


def test_api_key_find_takes_the_key_or_its_prefix(alice):
    api_key, plaintext = services.api_key_create(user=alice)
    assert selectors.api_key_find(plaintext) == api_key
    assert selectors.api_key_find(api_key.prefix) == api_key
    with pytest.raises(ValidationError, match="No API key matches"):
        selectors.api_key_find("hfp_" + "z" * 44)


def test_api_key_find_refuses_a_prefix_that_names_several(alice):
    keys = [services.api_key_create(user=alice)[0] for _ in range(2)]
    ApiKey.objects.filter(pk=keys[1].pk).update(prefix=keys[0].prefix)
    with pytest.raises(ValidationError, match="Several API keys match"):
        selectors.api_key_find(keys[0].prefix)


def test_a_keys_allowed_models_are_its_own_else_its_users(alice):
    plain = services.api_key_create(user=alice)[0]
    own = services.api_key_create(user=alice, allowed_models="openai/*, m")[0]
    assert selectors.api_key_allowed_models(plain) == ()
    UserPolicy.objects.create(user=alice, allowed_models="meta-llama/*")
    assert selectors.api_key_allowed_models(plain) == ("meta-llama/*",)
    assert selectors.api_key_allowed_models(own) == ("openai/*", "m")


def record(api_key: ApiKey, when, tokens: int) -> UsageRecord:
    return UsageRecord.objects.create(
        created_at=when,
        request_id="r",
        user_id=api_key.user_id,
        api_key=api_key,
        endpoint="chat_completions",
        status=200,
        outcome=Outcome.OK,
        total_tokens=tokens,
        usage_source=UsageSource.PROVIDER,
        latency_ms=1,
    )


def test_with_recent_usage_counts_the_last_30_days_and_this_month(alice):
    used, unused = (services.api_key_create(user=alice)[0] for _ in range(2))
    now = timezone.now()
    record(used, now, 10)
    record(used, now - timedelta(days=29), 100)
    record(used, now - timedelta(days=31), 1000)  # too old for either
    listed = {key.pk: key for key in selectors.with_recent_usage(ApiKey.objects.all())}
    assert (listed[used.pk].requests_30d, listed[used.pk].tokens_30d) == (2, 110)
    assert listed[used.pk].tokens_this_month == (110 if (now - timedelta(days=29)).month == now.month else 10)
    assert (
        listed[unused.pk].requests_30d,
        listed[unused.pk].tokens_30d,
        listed[unused.pk].tokens_this_month,
    ) == (
        0,
        0,
        0,
    )
