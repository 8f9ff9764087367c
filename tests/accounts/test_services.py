"""The write operations: what each one stores, the rules it enforces, and that the key lookups
and prices cached in this process see the change at once (not after their TTL)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import connection

from accounts import keys, prices, services
from accounts.models import ApiKey, HuggingFaceToken, ModelPrice, UserPolicy

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _long_ttls(settings):
    # A change seen at once is the service's doing, not an expired cache.
    settings.AUTH_CACHE_TTL = settings.PRICES_CACHE_TTL = 3600
    prices.reset()
    yield
    prices.reset()


@pytest.fixture
def alice():
    return get_user_model().objects.create_user("alice")


@pytest.fixture
def bob():
    return get_user_model().objects.create_user("bob")


@pytest.fixture
def key(alice) -> tuple[ApiKey, str]:
    return services.api_key_create(user=alice, name="laptop")


def test_user_get_or_create_finds_the_same_user_twice():
    first = services.user_get_or_create(username="carol")
    assert services.user_get_or_create(username="carol") == first


def test_a_saved_user_is_seen_by_the_next_lookup(alice, key):
    assert keys.resolve(key[1]).username == "alice"
    alice.username = "alicia"
    services.user_save(user=alice)
    assert keys.resolve(key[1]).username == "alicia"


def test_new_defaults_apply_to_the_next_lookup(alice, key):
    assert keys.resolve(key[1]).limits.rpm is None
    services.user_policy_save(policy=UserPolicy(user=alice, rpm=7))
    assert keys.resolve(key[1]).limits.rpm == 7


def test_deactivating_a_user_revokes_their_keys_and_stops_them_at_once(alice, bob, key):
    other = services.api_key_create(user=alice)[1]
    services.api_key_revoke(api_key=ApiKey.objects.get(digest=keys.digest(other)))
    bobs = services.api_key_create(user=bob)[1]
    assert keys.resolve(key[1]) is not None
    assert services.user_deactivate(user=alice) == 1  # the one not revoked already
    alice.refresh_from_db()
    assert not alice.is_active
    assert not ApiKey.objects.filter(user=alice, revoked_at__isnull=True).exists()
    assert keys.resolve(key[1]) is None
    assert keys.resolve(bobs) is not None


def test_a_key_may_use_a_shared_token_or_its_users_own(alice, bob):
    shared = services.hf_token_create(name="team", value="hf_teamteamteam")
    bobs = services.hf_token_create(name="bobs", value="hf_bobbobbobbob", owner=bob)
    services.api_key_create(user=alice, hf_token=shared)
    services.api_key_create(user=bob, hf_token=bobs)
    services.api_key_create(user=alice)
    with pytest.raises(ValidationError, match="belongs to another user"):
        services.api_key_create(user=alice, hf_token=bobs)
    assert ApiKey.objects.count() == 3


def test_an_updated_key_is_seen_by_the_next_lookup_and_keeps_to_the_token_rule(alice, bob, key):
    api_key, plaintext = key
    assert keys.resolve(plaintext).token_name == "HF_TOKEN"
    api_key.hf_token = services.hf_token_create(name="team", value="hf_teamteamteam")
    services.api_key_update(api_key=api_key)
    assert keys.resolve(plaintext).token_name == "team"
    api_key.hf_token = services.hf_token_create(name="bobs", value="hf_bobbobbobbob", owner=bob)
    with pytest.raises(ValidationError):
        services.api_key_update(api_key=api_key)
    assert ApiKey.objects.get(pk=api_key.pk).hf_token.name == "team"


def test_a_token_with_a_new_value_is_used_by_the_next_lookup(alice):
    token = services.hf_token_create(name="team", value="hf_teamteamteam")
    plaintext = services.api_key_create(user=alice, hf_token=token)[1]
    assert keys.resolve(plaintext).upstream_token == "hf_teamteamteam"
    services.hf_token_save(hf_token=token, value="  hf_newnewnewnew ")
    assert keys.resolve(plaintext).upstream_token == "hf_newnewnewnew"
    token.name = "renamed"
    services.hf_token_save(hf_token=token)  # no value: the stored one stays
    assert HuggingFaceToken.objects.get(pk=token.pk).value() == "hf_newnewnewnew"


def test_a_token_saved_refuses_a_bad_value_or_an_owner_its_keys_do_not_share(alice, bob):
    with pytest.raises(ValidationError, match="printable ASCII"):
        services.hf_token_save(hf_token=HuggingFaceToken(name="bad"), value="hf_ with spaces")
    token = services.hf_token_save(hf_token=HuggingFaceToken(name="team"), value="hf_teamteamteam")
    services.api_key_create(user=alice, hf_token=token)
    token.owner = bob
    with pytest.raises(ValidationError, match="Keys of other users use this token"):
        services.hf_token_save(hf_token=token)
    token.owner = alice
    services.hf_token_save(hf_token=token)
    assert HuggingFaceToken.objects.get(pk=token.pk).owner == alice


def test_a_price_set_by_an_admin_is_custom_and_priced_with_at_once():
    assert prices.table() == {}
    price = services.model_price_save(
        price=ModelPrice(
            model="m",
            provider="p",
            input_per_million=1,
            output_per_million=2,
            source=ModelPrice.Source.ROUTER,
        )
    )
    assert ModelPrice.objects.get(pk=price.pk).source == ModelPrice.Source.CUSTOM
    assert prices.table()["m"]["p"].input == Decimal(1)
    services.model_prices_delete(model_prices=ModelPrice.objects.filter(model="m"))
    assert prices.table() == {}


def test_no_table_holds_a_key_or_a_stored_token_in_the_clear(admin_client, usage_db):
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
