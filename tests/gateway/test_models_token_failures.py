"""/v1/models with a Hugging Face token that cannot be decrypted: refused, never sent upstream."""

from asgiref.sync import sync_to_async
from cryptography.fernet import Fernet

from accounts import crypto, services


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
