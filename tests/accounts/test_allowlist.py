"""Model allow-lists and expiry set per key or as a user's defaults."""

import io
import json
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.core.management import CommandError, call_command
from django.utils import timezone

from accounts import allowlist, keys, services
from accounts.models import ApiKey, UserPolicy
from tests.support.answers import completion
from tests.support.fake_router import MODELS


@pytest.mark.parametrize(
    ("allowed", "model", "ok"),
    [
        ((), "anything/at-all", True),
        (("org/m",), "org/m", True),
        (("org/m",), "org/m:fastest", True),
        (("org/m",), "org/m2", False),
        (("org/*",), "org/m:cerebras", True),
        (("org/*",), "other/m", False),
        (("*-Instruct",), "meta/Llama-3-Instruct", True),
        (("org/m:cerebras",), "org/m:cerebras", True),
        (("org/m:cerebras",), "org/m:fireworks-ai", False),
        (("org/m:cerebras",), "org/m", False),
    ],
)
def test_model_allowed(allowed, model, ok):
    assert allowlist.model_allowed(allowed, model) is ok


def test_allow_lists_are_parsed_from_what_admins_type():
    assert allowlist.parse_models(" a/b, c/*\nd ,a/b ") == ("a/b", "c/*", "d")


async def chat(anonymous_client, key, model):
    return await anonymous_client.post(
        "/v1/chat/completions",
        {"model": model, "messages": [{"role": "user", "content": "hi"}]},
        content_type="application/json",
        headers={"authorization": f"Bearer {key}"},
    )


async def test_a_model_not_allowed_is_403_without_an_upstream_call(anonymous_client, user, hf, reports):
    route = hf.post("/chat/completions").respond(200, json=completion())
    key = (await sync_to_async(services.api_key_create)(user=user, allowed_models="openai/*"))[1]
    response = await chat(anonymous_client, key, "meta-llama/Llama-3.1-8B-Instruct")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "model_not_allowed"
    assert not route.called
    assert (await chat(anonymous_client, key, "openai/gpt-oss-120b:fastest")).status_code == 200
    assert [r.outcome for r in reports] == ["refused", "ok"]


async def test_user_defaults_apply_to_keys_without_their_own(anonymous_client, user, hf):
    hf.post("/chat/completions").respond(200, json=completion())
    await UserPolicy.objects.acreate(user=user, allowed_models="meta-llama/*")
    plain = (await sync_to_async(services.api_key_create)(user=user))[1]
    own = (await sync_to_async(services.api_key_create)(user=user, allowed_models="openai/*"))[1]
    assert (await chat(anonymous_client, plain, "openai/gpt-oss-120b")).status_code == 403
    assert (await chat(anonymous_client, plain, "meta-llama/Llama-3.1-8B-Instruct")).status_code == 200
    assert (await chat(anonymous_client, own, "openai/gpt-oss-120b")).status_code == 200


async def test_models_shows_a_key_only_what_it_may_use(anonymous_client, user, hf):
    hf.get("/models").respond(200, json=MODELS)
    key = (await sync_to_async(services.api_key_create)(user=user, allowed_models="meta-llama/*"))[1]
    headers = {"authorization": f"Bearer {key}"}
    listing = (await anonymous_client.get("/v1/models", headers=headers)).json()
    assert [m["id"] for m in listing["data"]] == ["meta-llama/Llama-3.1-8B-Instruct"]
    assert (await anonymous_client.get("/v1/models/openai/gpt-oss-120b", headers=headers)).status_code == 404


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_create_api_key_takes_models_and_expiry(usage_db):
    key = run(
        "create_api_key",
        "olga",
        "--models",
        "openai/*,meta-llama/Llama-3.1-8B-Instruct",
        "--expires-in-days",
        "7",
    ).splitlines()[-1]
    stored = ApiKey.objects.get(digest=keys.digest(key))
    assert allowlist.parse_models(stored.allowed_models) == ("openai/*", "meta-llama/Llama-3.1-8B-Instruct")
    assert timedelta(days=6, hours=23) < stored.expires_at - timezone.now() <= timedelta(days=7)
    with pytest.raises(CommandError):
        run("create_api_key", "olga", "--expires-in-days", "0")


async def test_an_expired_key_is_refused_like_a_revoked_one(anonymous_client, user, hf):
    hf.post("/chat/completions").respond(200, json=completion())
    api_key, key = await sync_to_async(services.api_key_create)(user=user)
    await ApiKey.objects.filter(pk=api_key.pk).aupdate(expires_at=timezone.now() - timedelta(seconds=1))
    response = await chat(anonymous_client, key, "m")
    assert response.status_code == 401
    assert json.loads(response.content)["error"]["code"] == "invalid_api_key"
