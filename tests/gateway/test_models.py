"""/v1/models: the router's list in OpenAI's format, cached; one model; failures mapped; a Hugging
Face token that cannot be decrypted refused, never sent upstream."""

from asgiref.sync import sync_to_async
from cryptography.fernet import Fernet
from django.conf import settings

from accounts import crypto, services
from tests.support.fake_router import MODELS


async def test_it_lists_models_in_openai_format_with_the_router_extras(async_client, hf):
    hf.get("/models").respond(200, json=MODELS)
    response = await async_client.get("/v1/models")
    assert response.status_code == 200
    listing = response.json()
    assert listing["object"] == "list"
    first = listing["data"][0]
    assert {"id", "object", "created", "owned_by"} <= first.keys()
    assert first["providers"][0]["pricing"] == {"input": 0.15, "output": 0.6}
    assert first["providers"][0]["context_length"] == 131072


async def test_it_caches_the_list(async_client, hf, settings):
    route = hf.get("/models").respond(200, json=MODELS)
    await async_client.get("/v1/models")
    await async_client.get("/v1/models")
    await async_client.get("/v1/models/openai/gpt-oss-120b")
    assert route.call_count == 1
    settings.MODELS_CACHE_TTL = 0
    await async_client.get("/v1/models")
    assert route.call_count == 2


async def test_it_shows_one_model(async_client, hf):
    hf.get("/models").respond(200, json=MODELS)
    response = await async_client.get("/v1/models/meta-llama/Llama-3.1-8B-Instruct")
    assert response.status_code == 200
    assert response.json()["id"] == "meta-llama/Llama-3.1-8B-Instruct"
    suffixed = await async_client.get("/v1/models/meta-llama/Llama-3.1-8B-Instruct:cerebras")
    assert suffixed.json()["id"] == "meta-llama/Llama-3.1-8B-Instruct"


async def test_it_answers_404_for_an_unknown_model(async_client, hf):
    hf.get("/models").respond(200, json=MODELS)
    response = await async_client.get("/v1/models/nobody/nothing")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


async def test_router_failures_are_mapped(async_client, hf):
    hf.get("/models").respond(500, text="boom")
    response = await async_client.get("/v1/models")
    assert response.status_code == 502
    assert response.json()["error"]["type"] == "server_error"


async def test_it_sends_the_token(async_client, hf):
    route = hf.get("/models").respond(200, json=MODELS)
    await async_client.get("/v1/models")
    assert route.calls.last.request.headers["authorization"] == f"Bearer {settings.HF_TOKEN}"


async def test_models_fails_closed_on_an_unusable_token(anonymous_client, user, hf, settings):
    route = hf.get("/models").respond(200, json={"data": []})
    token = await sync_to_async(services.hf_token_create)(name="team", value="hf_teamteamteam")
    key = (await sync_to_async(services.api_key_create)(user=user, hf_token=token))[1]
    settings.FIELD_ENCRYPTION_KEY = Fernet.generate_key().decode()
    crypto.reset()
    try:
        response = await anonymous_client.get("/v1/models", headers={"authorization": f"Bearer {key}"})
    finally:
        crypto.reset()
    assert response.status_code == 500
    assert not route.called
