"""Failure paths found in review: a record the database refuses, errors while failing,
the self-service API during an outage, and /v1/models with an unusable token."""

import logging

from asgiref.sync import sync_to_async
from cryptography.fernet import Fernet
from django.db import OperationalError
from rest_framework.test import APIClient

from accounts import crypto, keys, services, usage
from accounts.models import ApiKey, UsageRecord
from gateway import errors
from tests.accounts.test_usage import entry
from tests.clients import AsyncClient


async def test_a_record_the_database_refuses_does_not_hold_back_the_others(api_key, caplog):
    key = await ApiKey.objects.aget(digest=keys.digest(api_key))
    poison = entry(key, api_key_id=key.pk + 1000)  # a key that does not exist
    usage.writer.record(poison)
    usage.writer.record(entry(key))
    with caplog.at_level(logging.ERROR, logger="hfproxy.usage"):
        assert await usage.writer.flush(deadline=15)
    assert await UsageRecord.objects.acount() == 1
    assert any("refuses" in r.getMessage() and str(poison.id) in r.getMessage() for r in caplog.records)


async def test_an_error_while_failing_still_leaves_one_record(api_key, hf, reports, monkeypatch):
    hf.post("/chat/completions").respond(400, json={"error": "no"})

    def broken(exc, token_name=""):
        raise RuntimeError("the error mapping itself failed")

    monkeypatch.setattr(errors, "from_exception", broken)
    client = AsyncClient(authorization=f"Bearer {api_key}", raise_request_exception=False)
    response = await client.post(
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "x"}]},
        content_type="application/json",
    )
    assert response.status_code == 500
    assert [(r.status, r.outcome) for r in reports] == [(500, "proxy_error")]


def test_the_api_answers_503_when_the_database_is_down(api_key, monkeypatch):
    def down(digest):
        raise OperationalError("no database")

    monkeypatch.setattr(keys, "_load", down)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key}")
    response = client.get("/api/me")
    assert response.status_code == 503
    assert response["Retry-After"]
    assert response.json()["error"]["code"] == "service_unavailable"
    assert APIClient().get("/api/me").json()["error"]["code"] == "invalid_api_key"


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


def test_no_table_holds_a_key_or_a_stored_token_in_the_clear(admin_client, usage_db):
    from django.db import connection

    response = admin_client.post(
        "/admin/accounts/huggingfacetoken/add/", {"name": "pers", "value": "hf_personalSECRET99"}
    )
    assert response.status_code in (200, 302)
    token = services.hf_token_create(name="other", value="hf_otherSECRET77")
    plaintext = services.api_key_create(
        user=token.owner or ApiKey._meta.get_field("user").related_model.objects.first(), hf_token=token
    )[1]
    with connection.cursor() as cursor:
        dump = []
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT * FROM "{table}"')
            dump.append(repr(cursor.fetchall()))
    everything = "\n".join(dump)
    for secret in ("hf_personalSECRET99", "hf_otherSECRET77", plaintext):
        assert secret not in everything
