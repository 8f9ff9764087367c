"""Privileges: a staff user who may only add API keys, signed in to a running proxy's admin,
cannot mint a key that acts as someone else, however the form is posted, nor read another
user's usage through the API."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.support.harness import admin_session, chat, csrf_token, launch_proxy, send
from tests.support.processes import manage, scratch_database

ROOT_TOKEN = "hf_RootsPersonalTokenNeverEves0123456789"
TEAM_TOKEN = "hf_TheTeamsSharedTokenForEveryone987654"
EVE_PASSWORD = "eve-password-for-the-privileges-test"
KEY = re.compile(r"hfp_[A-Za-z0-9_-]{40,}")

# A superuser with a key on their personal token, a shared team token, and eve: staff with
# nothing but the permission to add API keys.
SETUP = f"""
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from accounts import services
User = get_user_model()
User.objects.filter(username="root").update(is_superuser=True, is_staff=True)
services.hf_token_create(name="team", value="{TEAM_TOKEN}")
eve = User.objects.create_user("eve", password="{EVE_PASSWORD}", is_staff=True)
eve.user_permissions.add(Permission.objects.get(codename="add_apikey"))
"""


@pytest.fixture(scope="module")
def proxy(router, tmp_path_factory):
    folder = tmp_path_factory.mktemp("privileges")
    with scratch_database(folder) as database:
        proxy = launch_proxy(router, database, folder, SECURE_COOKIES="false")
        try:
            manage("create_api_key", "root", "--hf-token", ROOT_TOKEN, env=proxy.env)
            manage("shell", "-c", SETUP, env=proxy.env)
            yield proxy
        finally:
            proxy.stop()


def options(form: str, field: str) -> set[int]:
    """The ids a form's select offers."""
    select = re.search(rf'<select name="{field}".*?</select>', form, re.S).group(0)
    return {int(value) for value in re.findall(r'<option value="(\d+)"', select)}


def user_id(proxy, username: str) -> int:
    return proxy.db.query("SELECT id FROM auth_user WHERE username = %s", username)[0]["id"]


def mint(client: httpx.Client, user: int, hf_token: int) -> httpx.Response:
    form = client.get("/admin/accounts/apikey/add/")
    assert form.status_code == 200
    return client.post(
        "/admin/accounts/apikey/add/",
        data={
            "csrfmiddlewaretoken": csrf_token(form),
            "user": str(user),
            "name": "minted",
            "hf_token": str(hf_token),
            "expires_at_0": "",
            "expires_at_1": "",
        },
    )


def keys_of(proxy, username: str) -> int:
    return proxy.db.query(
        "SELECT COUNT(*) AS n FROM accounts_apikey k JOIN auth_user u ON u.id = k.user_id WHERE u.username = %s",
        username,
    )[0]["n"]


def test_staff_with_add_apikey_cannot_mint_a_key_that_acts_as_someone_else(proxy, stats):
    root, eve = user_id(proxy, "root"), user_id(proxy, "eve")
    tokens = {
        row["name"]: row["id"] for row in proxy.db.query("SELECT id, name FROM accounts_huggingfacetoken")
    }
    with admin_session(proxy, "eve", EVE_PASSWORD) as client:
        form = client.get("/admin/accounts/apikey/add/").text
        assert options(form, "user") == {eve}
        assert options(form, "hf_token") == {tokens["team"]}
        # The attack: the ids posted directly, as a superuser with their personal token, or as
        # eve with it.
        for user, token in [(root, tokens["root"]), (root, tokens["team"]), (eve, tokens["root"])]:
            refused = mint(client, user, token)
            assert refused.status_code == 200, (user, token)
            assert "errornote" in refused.text
        assert (keys_of(proxy, "root"), keys_of(proxy, "eve")) == (1, 0)

        # What eve may do: a key of her own, calling with the team's token.
        created = mint(client, eve, tokens["team"])
        assert created.status_code == 302
        key = KEY.search(client.get(created.headers["location"]).text).group(0)
    answer = send(proxy, chat("openai/gpt-oss-120b:fireworks-ai"), key=None, headers=bearer(key))
    assert answer.status == 200
    assert stats()["last_headers"]["authorization"] == f"Bearer {TEAM_TOKEN}"

    # And with it, only her own usage.
    with httpx.Client(base_url=proxy.url, headers=bearer(key), timeout=15) as api:
        assert api.get("/api/usage").json()["user"] == "eve"
        for path in ("/api/usage?user=root", "/api/me?user=root"):
            response = api.get(path)
            assert response.status_code == 403, path
            assert response.json()["error"]["type"] == "permission_error"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
