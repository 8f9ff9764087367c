"""Keys and tokens: how they are stored, recognised, cached and revoked."""

import asyncio
import threading
import time

import psycopg
import pytest
from asgiref.sync import sync_to_async
from cryptography.fernet import Fernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import OperationalError, connection

from accounts import crypto, keys, offloop, selectors, services
from accounts.models import ApiKey, HuggingFaceToken
from tests.support.answers import completion

MESSAGES = [{"role": "user", "content": "hi"}]


def raw_rows(table: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {table}")
        return repr(cursor.fetchall())


def test_a_key_is_stored_only_as_a_digest(user):
    api_key, plaintext = services.api_key_create(user=user, name="laptop")
    assert plaintext.startswith("hfp_") and len(plaintext) >= 4 + 22  # >= 128 bits
    assert api_key.prefix == plaintext[:12]
    assert plaintext not in raw_rows("accounts_apikey")
    assert plaintext[12:] not in raw_rows("accounts_apikey")
    assert plaintext not in str(api_key) and plaintext not in repr(api_key)


def test_a_token_is_stored_only_encrypted(user):
    token = services.hf_token_create(name="team", value="hf_supersecretvalue1234")
    rows = raw_rows("accounts_huggingfacetoken")
    assert "hf_supersecretvalue1234" not in rows
    assert token.masked == "hf_…1234"
    assert "supersecret" not in str(token)
    assert HuggingFaceToken.objects.get(pk=token.pk).value() == "hf_supersecretvalue1234"


@pytest.mark.parametrize("bad", ["", "hf_ with space", "hf_\tx", "short"])
def test_a_token_must_look_like_one(user, bad):
    with pytest.raises(ValidationError):
        services.hf_token_create(name="bad", value=bad)


def test_a_key_cannot_use_another_users_personal_token(user, django_user_model):
    bob = django_user_model.objects.create_user("bob")
    token = services.hf_token_create(name="bobs", value="hf_bobbobbobbob", owner=bob)
    with pytest.raises(ValidationError):
        services.api_key_create(user=user, hf_token=token)


def test_rotation_keeps_old_tokens_readable_and_reencrypts(settings, user):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEY = old
    crypto.reset()
    token = services.hf_token_create(name="team", value="hf_rotatemerotateme")
    settings.FIELD_ENCRYPTION_KEY = f"{new},{old}"
    crypto.reset()
    assert HuggingFaceToken.objects.get(pk=token.pk).value() == "hf_rotatemerotateme"
    assert services.hf_tokens_reencrypt() == 1
    settings.FIELD_ENCRYPTION_KEY = new
    crypto.reset()
    assert HuggingFaceToken.objects.get(pk=token.pk).value() == "hf_rotatemerotateme"
    crypto.reset()


def test_a_wrong_key_fails_closed(settings, user):
    token = services.hf_token_create(name="team", value="hf_rotatemerotateme")
    settings.FIELD_ENCRYPTION_KEY = Fernet.generate_key().decode()
    crypto.reset()
    try:
        with pytest.raises(crypto.DecryptionError):
            HuggingFaceToken.objects.get(pk=token.pk).value()
    finally:
        crypto.reset()


def test_without_a_key_only_debug_derives_one(settings):
    settings.FIELD_ENCRYPTION_KEY = ""
    settings.DEBUG = False
    crypto.reset()
    with pytest.raises(ImproperlyConfigured):
        crypto.encrypt("x")
    settings.DEBUG = True
    crypto.reset()
    assert crypto.decrypt(crypto.encrypt("hf_x")) == "hf_x"
    crypto.reset()


def test_the_one_check_of_field_encryption_key():
    good = Fernet.generate_key().decode()
    assert len(crypto.fernet_keys(f" {good} , {Fernet.generate_key().decode()},", debug=False)) == 2
    assert crypto.fernet_keys("", debug=True) == []  # DEBUG derives one from SECRET_KEY
    with pytest.raises(ImproperlyConfigured, match="FIELD_ENCRYPTION_KEY is not set"):
        crypto.fernet_keys(" , ", debug=False)
    with pytest.raises(ImproperlyConfigured, match="must be Fernet keys"):
        crypto.fernet_keys(f"{good},not-a-key", debug=True)


# --- Authentication on /v1 ---------------------------------------------------------------------


async def call(anonymous_client, **headers):
    return await anonymous_client.post(
        "/v1/chat/completions", {"messages": MESSAGES}, content_type="application/json", headers=headers
    )


async def test_bearer_and_x_api_key_both_work(anonymous_client, api_key, hf):
    hf.post("/chat/completions").respond(200, json=completion())
    assert (await call(anonymous_client, authorization=f"Bearer {api_key}")).status_code == 200
    assert (await call(anonymous_client, authorization=f"bearer {api_key}")).status_code == 200
    assert (await call(anonymous_client, x_api_key=api_key)).status_code == 200


async def test_every_bad_key_gets_the_same_401_and_no_upstream_call(anonymous_client, api_key, user, hf):
    route = hf.post("/chat/completions").respond(200, json=completion())
    revoked = await sync_to_async(services.api_key_create)(user=user, name="old")
    await sync_to_async(services.api_key_revoke)(api_key=revoked[0])
    expired = await sync_to_async(services.api_key_create)(user=user, name="past")
    await ApiKey.objects.filter(pk=expired[0].pk).aupdate(expires_at="2020-01-01T00:00:00Z")
    digest = keys.digest(api_key)
    attempts = [
        {},
        {"authorization": "Basic abc"},
        {"authorization": "Bearer"},
        {"authorization": "Bearer hfp_unknownunknownunknownunknown"},
        {"authorization": f"Bearer {revoked[1]}"},
        {"authorization": f"Bearer {expired[1]}"},
        {"authorization": f"Bearer {digest}"},
        {"authorization": f"Bearer hfp_{digest}"},
        {"x-api-key": "sk-not-ours"},
    ]
    bodies = set()
    for headers in attempts:
        response = await call(anonymous_client, **headers)
        assert response.status_code == 401, headers
        assert response.json()["error"]["code"] == "invalid_api_key"
        bodies.add(response.content)
    assert len(bodies) == 1
    assert not route.called


async def test_each_users_token_goes_upstream(anonymous_client, user, django_user_model, hf):
    route = hf.post("/chat/completions").respond(200, json=completion())
    bob = await django_user_model.objects.acreate(username="bob")
    alice_token = await sync_to_async(services.hf_token_create)(
        name="alice", value="hf_aliceAAAAAAAA", owner=user
    )
    alice_key = (await sync_to_async(services.api_key_create)(user=user, hf_token=alice_token))[1]
    bob_key = (await sync_to_async(services.api_key_create)(user=bob))[1]  # the server's HF_TOKEN
    await call(anonymous_client, authorization=f"Bearer {alice_key}")
    assert route.calls.last.request.headers["authorization"] == "Bearer hf_aliceAAAAAAAA"
    await call(anonymous_client, authorization=f"Bearer {bob_key}")
    assert route.calls.last.request.headers["authorization"] == f"Bearer {settings.HF_TOKEN}"
    for request in (call.request for call in route.calls):
        assert alice_key not in str(request.headers) and bob_key not in str(request.headers)


async def test_an_undecryptable_token_fails_closed_and_is_recorded(
    anonymous_client, user, hf, settings, reports
):
    route = hf.post("/chat/completions").respond(200, json=completion())
    token = await sync_to_async(services.hf_token_create)(name="team", value="hf_teamteamteam", owner=None)
    key = (await sync_to_async(services.api_key_create)(user=user, hf_token=token))[1]
    settings.FIELD_ENCRYPTION_KEY = Fernet.generate_key().decode()
    crypto.reset()
    try:
        response = await call(anonymous_client, authorization=f"Bearer {key}")
    finally:
        crypto.reset()
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "upstream_token_unreadable"
    assert "'team'" in response.json()["error"]["message"]
    assert not route.called
    assert [r.outcome for r in reports] == ["proxy_error"]


class Clock:
    """accounts.keys' view of time: `monotonic` moves only when the test says so, so that a busy
    machine cannot age a cached lookup (the event loop keeps the real clock)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    time = staticmethod(time.time)


async def test_lookups_are_cached_and_revocation_lands_within_the_ttl(
    anonymous_client, api_key, hf, settings, monkeypatch
):
    hf.post("/chat/completions").respond(200, json=completion())
    settings.AUTH_CACHE_TTL = 30
    clock = Clock()
    monkeypatch.setattr(keys, "time", clock)
    assert (await call(anonymous_client, authorization=f"Bearer {api_key}")).status_code == 200
    # Revoked in the database by another process: this one's cache does not know yet.
    await ApiKey.objects.filter(digest=keys.digest(api_key)).aupdate(revoked_at="2020-01-01T00:00:00Z")
    assert (await call(anonymous_client, authorization=f"Bearer {api_key}")).status_code == 200
    looked_up = clock.now
    clock.now = looked_up + 29.9  # still within the TTL, however long the requests took
    assert (await call(anonymous_client, authorization=f"Bearer {api_key}")).status_code == 200
    clock.now = looked_up + 30  # the TTL is up: the next request reads the revocation
    assert (await call(anonymous_client, authorization=f"Bearer {api_key}")).status_code == 401


async def test_a_cache_hit_costs_no_query(api_key):
    assert await keys.aresolve(api_key) is not None
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(keys, "_load", lambda digest: pytest.fail("a cache hit must not query"))
        assert await keys.aresolve(api_key) is not None


async def test_the_requests_that_miss_together_share_one_query(api_key, monkeypatch):
    calls, load = [], keys._load

    def counted(digest):
        calls.append(digest)
        time.sleep(0.1)  # the query takes a while: the others miss meanwhile
        return load(digest)

    monkeypatch.setattr(keys, "_load", counted)
    callers = await asyncio.gather(*(keys.aresolve(api_key) for _ in range(20)))
    assert len(calls) == 1 and all(caller is not None for caller in callers)
    assert await keys.aresolve(api_key) is callers[0]  # and it was cached


async def test_a_lookup_begun_before_a_revocation_is_not_joined(monkeypatch):
    calls, querying = [], threading.Event()

    def slow(digest):
        calls.append(digest)
        querying.set()
        time.sleep(0.2)

    monkeypatch.setattr(keys, "_load", slow)
    key = "hfp_" + "r" * 44
    before = asyncio.ensure_future(keys.aresolve(key))
    assert await asyncio.to_thread(querying.wait, 10)
    keys.reset()  # a revocation: what the first lookup read may be stale
    await asyncio.gather(before, keys.aresolve(key))
    assert len(calls) == 2


async def test_expiry_is_checked_on_every_request_even_when_cached(api_key):
    caller = await keys.aresolve(api_key)
    key_digest = keys.digest(api_key)
    expires_soon = type(caller)(**{**caller.__dict__, "expires_at": time.time() - 1})
    keys._lookups.entries[key_digest] = (time.monotonic() + 60, expires_soon)
    assert await keys.aresolve(api_key) is None


async def test_a_database_outage_is_503_never_401(anonymous_client, api_key, hf, monkeypatch):
    route = hf.post("/chat/completions").respond(200, json=completion())

    def down(digest):
        raise OperationalError("could not connect to server")

    monkeypatch.setattr(keys, "_load", down)
    response = await call(anonymous_client, authorization=f"Bearer {api_key}")
    assert response.status_code == 503
    assert response["Retry-After"]
    assert response.json()["error"]["code"] == "service_unavailable"
    assert not route.called


def _unreachable() -> OperationalError:
    # As Django raises it when psycopg cannot connect (no SQLSTATE: the server never answered).
    try:
        raise OperationalError("connection refused") from psycopg.OperationalError("connection refused")
    except OperationalError as error:
        return error


async def test_with_the_database_unreachable_lookups_fail_fast_and_one_probes(monkeypatch):
    calls = []

    def down(digest):
        calls.append(digest)
        time.sleep(0.2)  # as a pool waiting for a connection would, only shorter
        raise _unreachable()

    monkeypatch.setattr(keys, "_load", down)
    started = time.monotonic()
    results = await asyncio.gather(
        *(keys.aresolve("hfp_" + f"{i:02d}" * 22) for i in range(20)), return_exceptions=True
    )
    # The four lookup threads each waited once; the rest failed at once instead of queueing.
    assert all(isinstance(result, OperationalError) for result in results)
    assert len(calls) <= 4 and time.monotonic() - started < 0.6
    assert sum(isinstance(result, offloop.DatabaseDown) for result in results) >= 16

    # After DOWN_FOR: one lookup probes while the others still fail at once.
    monkeypatch.setattr(offloop._breaker, "down_until", time.monotonic() - 0.01)
    calls.clear()
    results = await asyncio.gather(
        *(keys.aresolve("hfp_" + f"{i:02d}" * 22) for i in range(20, 30)), return_exceptions=True
    )
    assert len(calls) == 1 and sum(isinstance(result, offloop.DatabaseDown) for result in results) == 9

    # The database answers again: the probe gets through and everyone after it.
    monkeypatch.setattr(keys, "_load", lambda digest: None)
    monkeypatch.setattr(offloop._breaker, "down_until", time.monotonic() - 0.01)
    assert await keys.aresolve("hfp_" + "y" * 44) is None
    assert await keys.aresolve("hfp_" + "z" * 44) is None


async def test_one_failing_statement_does_not_stop_every_lookup(monkeypatch):
    def locked(digest):
        raise OperationalError("database is locked")  # SQLite busy: the server is not down

    monkeypatch.setattr(keys, "_load", locked)
    for i in range(3):
        with pytest.raises(OperationalError) as caught:
            await keys.aresolve("hfp_" + f"{i:02d}" * 22)
        assert not isinstance(caught.value, offloop.DatabaseDown)


def test_revoke_by_prefix_and_refuse_ambiguity(user):
    api_key, plaintext = services.api_key_create(user=user)
    assert selectors.api_key_find(plaintext) == api_key
    assert selectors.api_key_find(api_key.prefix) == api_key
    with pytest.raises(ValidationError):
        selectors.api_key_find("hfp_")  # too short to name one key
    services.api_key_revoke(api_key=api_key)
    assert ApiKey.objects.get(pk=api_key.pk).status == "revoked"
    assert not ApiKey.objects.active().filter(pk=api_key.pk).exists()
