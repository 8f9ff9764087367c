"""The self-service API: a key holder sees their own keys and usage, staff who may view usage
anyone's."""

import pytest
from django.contrib.auth.models import Permission
from django.db import OperationalError
from rest_framework.test import APIClient

from accounts import keys, services
from accounts.models import ApiKey
from tests.support.factories import make_usage


def client_for(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


@pytest.fixture
def bob_key(usage_db, django_user_model) -> str:
    bob = django_user_model.objects.create_user("bob")
    return services.api_key_create(user=bob, name="bob's")[1]


def test_me_lists_my_keys_without_secrets(api_key, bob_key):
    response = client_for(api_key).get("/api/me")
    assert response.status_code == 200
    data = response.json()
    assert data["username"] == "alice" and data["current_key"] == api_key[:12]
    assert [key["prefix"] for key in data["keys"]] == [api_key[:12]]
    assert data["keys"][0]["status"] == "active"
    assert api_key not in response.content.decode()
    assert keys.digest(api_key) not in response.content.decode()


def test_usage_by_model_and_day(api_key, bob_key):
    alice_key = ApiKey.objects.get(digest=keys.digest(api_key))
    make_usage(alice_key, "m1")
    make_usage(alice_key, "m1", outcome="timeout")
    make_usage(ApiKey.objects.get(digest=keys.digest(bob_key)), "m1")
    data = client_for(api_key).get("/api/usage").json()
    assert data["user"] == "alice"
    [row] = data["usage"]
    assert (row["model"], row["requests"], row["total_tokens"], row["errors"]) == ("m1", 2, 30, 1)


def test_nobody_sees_another_users_data(api_key, bob_key):
    response = client_for(bob_key).get("/api/me?user=alice")
    assert response.status_code == 403
    assert response.json()["error"]["type"] == "permission_error"
    assert client_for(bob_key).get("/api/usage?user=alice").status_code == 403


def test_staff_may_look_at_anyone_only_with_the_view_permission_on_usage(api_key, bob_key, user):
    user.is_staff = True
    user.save()
    keys.reset()
    for path in ("/api/me?user=bob", "/api/usage?user=bob", "/api/me?user=nobody"):
        response = client_for(api_key).get(path)
        assert response.status_code == 403, path
        assert response.json()["error"]["type"] == "permission_error"
    user.user_permissions.add(Permission.objects.get(codename="view_usagerecord"))
    keys.reset()
    assert client_for(api_key).get("/api/me?user=bob").json()["username"] == "bob"
    assert client_for(api_key).get("/api/usage?user=bob").json()["user"] == "bob"
    assert client_for(api_key).get("/api/me?user=nobody").status_code == 404


@pytest.mark.parametrize("header", [None, "Bearer hfp_unknownunknownunknownunknown", "Bearer nonsense"])
def test_it_wants_a_valid_key(usage_db, header):
    client = APIClient()
    if header:
        client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get("/api/me")
    assert response.status_code == 401
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_a_bad_since_is_a_400(api_key):
    response = client_for(api_key).get("/api/usage?since=last-week")
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "`since` takes a date as YYYY-MM-DD."


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


def test_the_audit_trail_for_staff_and_a_teams_admins_only(api_key, bob_key, user, django_user_model):
    bob = django_user_model.objects.get(username="bob")
    ml, other = services.team_create(name="ml", actor=user), services.team_create(name="other")
    services.team_member_add(team=ml, user=user, admin=True, actor=user)
    services.team_member_add(team=ml, user=bob, actor=user)
    services.team_member_add(team=other, user=bob, admin=True)
    for _ in range(3):
        services.api_key_create(user=bob, team=ml, actor=bob)
    alice = client_for(api_key)
    # alice admins ml: she reads its trail, page by page, newest first.
    first = alice.get("/api/audit?team=ml&limit=4").json()
    assert [e["action"] for e in first["entries"]] == ["key_created"] * 3 + ["member_added"]
    assert {e["team"] for e in first["entries"]} == {"ml"} and first["entries"][0]["actor"] == "bob"
    rest = alice.get(f"/api/audit?team=ml&limit=4&before={first['next_before']}").json()
    assert [e["action"] for e in rest["entries"]] == ["member_added", "team_created"]
    assert rest["next_before"] is None
    assert api_key not in str(first) and bob_key not in str(first)  # never a secret
    # Not another team's, nor the whole trail; bob, a member of ml, not ml's either.
    assert alice.get("/api/audit?team=other").status_code == 403
    assert alice.get("/api/audit?team=nope").status_code == 403
    assert alice.get("/api/audit").status_code == 403
    assert client_for(bob_key).get("/api/audit?team=ml").status_code == 403
    assert client_for(bob_key).get("/api/audit?team=other").status_code == 200
    # Staff with the view permission read all of it.
    user.is_staff = True
    user.save()
    user.user_permissions.add(Permission.objects.get(codename="view_auditentry"))
    keys.reset()
    everything = client_for(api_key).get("/api/audit?limit=500").json()["entries"]
    assert {e["team"] for e in everything} == {"ml", "other", None}  # the fixtures' keys: no team
    assert client_for(api_key).get("/api/audit?team=nope").status_code == 404
    assert client_for(api_key).get("/api/audit?before=x").status_code == 400
