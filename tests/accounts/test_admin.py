"""The admin: every page renders for staff and refuses anonymous users, keys are shown once,
tokens are write-only, usage is read-only and exports as CSV, and no page shows a secret."""

from __future__ import annotations

import csv
import html
import io
import re
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts import keys, services
from accounts.models import ApiKey, HuggingFaceToken, Outcome, UsageRecord, UsageSource, UserPolicy

pytestmark = pytest.mark.django_db

HF_VALUE = "hf_SecretTokenValueForAdminTests1234"
KEY_PATTERN = re.compile(r"hfp_[A-Za-z0-9_-]{40,}")


def record(api_key: ApiKey, **fields) -> UsageRecord:
    values = {
        "request_id": f"req-{UsageRecord.objects.count()}",
        "user_id": api_key.user_id,
        "api_key": api_key,
        "endpoint": "chat_completions",
        "model_requested": "openai/gpt-oss-120b",
        "model_answered": "openai/gpt-oss-120b",
        "status": 200,
        "outcome": Outcome.OK,
        "prompt_tokens": 5,
        "completion_tokens": 3,
        "total_tokens": 8,
        "usage_source": UsageSource.PROVIDER,
        "latency_ms": 120,
        **fields,
    }
    return UsageRecord.objects.create(**values)


@pytest.fixture
def alice():
    return get_user_model().objects.create_user("alice", password="alice-password-123")


@pytest.fixture
def hf_token(alice) -> HuggingFaceToken:
    return services.hf_token_create(name="team", value=HF_VALUE)


@pytest.fixture
def key_and_plaintext(alice, hf_token) -> tuple[ApiKey, str]:
    return services.api_key_create(user=alice, name="laptop", hf_token=hf_token)


@pytest.fixture
def secrets_(key_and_plaintext, hf_token) -> list[str]:
    """Everything that must never appear on a page or in a CSV."""
    api_key, plaintext = key_and_plaintext
    hf_token.refresh_from_db()
    return [plaintext, api_key.digest, HF_VALUE, hf_token.encrypted_value]


def text_of(response) -> str:
    if not response.streaming:
        return response.content.decode()

    # Read as the ASGI server would: the CSV's rows come from an async iterator.
    async def collect() -> bytes:
        return b"".join([chunk async for chunk in response.streaming_content])

    return async_to_sync(collect)().decode()


def admin_urls(api_key: ApiKey, hf_token: HuggingFaceToken, usage: UsageRecord) -> list[str]:
    return [
        "/admin/",
        "/admin/accounts/",
        "/admin/auth/user/",
        f"/admin/auth/user/{api_key.user_id}/change/",
        "/admin/accounts/apikey/",
        "/admin/accounts/apikey/add/",
        f"/admin/accounts/apikey/{api_key.pk}/change/",
        f"/admin/accounts/apikey/{api_key.pk}/history/",
        "/admin/accounts/huggingfacetoken/",
        "/admin/accounts/huggingfacetoken/add/",
        f"/admin/accounts/huggingfacetoken/{hf_token.pk}/change/",
        "/admin/accounts/usagerecord/",
        f"/admin/accounts/usagerecord/{usage.pk}/change/",
        "/admin/accounts/usagerecord/dashboard/",
        "/admin/accounts/usagerecord/export/",
    ]


def test_it_renders_every_page_for_staff_without_a_secret(
    admin_client, key_and_plaintext, hf_token, secrets_
):
    api_key = key_and_plaintext[0]
    usage = record(api_key, model_requested="=HYPERLINK(1)")
    for url in admin_urls(api_key, hf_token, usage):
        response = admin_client.get(url)
        assert response.status_code == 200, url
        body = text_of(response)
        for secret in secrets_:
            assert secret not in body, url


def test_it_refuses_anonymous_users(client, key_and_plaintext, hf_token):
    usage = record(key_and_plaintext[0])
    for url in admin_urls(key_and_plaintext[0], hf_token, usage):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["location"].startswith("/admin/login/"), url


def test_it_refuses_staff_without_permission_on_usage(client, key_and_plaintext):
    staff = get_user_model().objects.create_user("bob", password="bob-password-123", is_staff=True)
    client.force_login(staff)
    assert client.get("/admin/accounts/usagerecord/dashboard/").status_code == 403
    assert client.get("/admin/accounts/usagerecord/export/").status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_usagerecord"))
    assert client.get("/admin/accounts/usagerecord/dashboard/").status_code == 200


def test_the_index_links_to_the_dashboard(admin_client):
    assert b'href="/admin/accounts/usagerecord/dashboard/"' in admin_client.get("/admin/").content


def words_of(response) -> str:
    """A page's text without its tags, in single spaces."""
    return " ".join(re.sub(r"<[^>]+>", " ", text_of(response)).split())


def test_a_token_the_router_refused_shows_until_it_works_again(admin_client, key_and_plaintext, hf_token):
    api_key, _ = key_and_plaintext
    refused = {"status": 502, "outcome": Outcome.UPSTREAM_ERROR, "error_code": "upstream_auth_failed"}
    record(api_key, **refused, hf_token=hf_token)
    record(api_key, **refused)  # with the server's HF_TOKEN
    index = words_of(admin_client.get("/admin/"))
    assert "Hugging Face refused the token team 1 time in the last 24 hours" in index
    assert "Hugging Face refused the token HF_TOKEN (the server's) 1 time" in index
    assert "replace its value" in text_of(admin_client.get("/admin/accounts/huggingfacetoken/"))

    record(api_key)  # HF_TOKEN works again (an admin replaced it and restarted)
    index = words_of(admin_client.get("/admin/"))
    assert "HF_TOKEN" not in index and "token team" in index

    record(api_key, hf_token=hf_token, outcome=Outcome.OK)  # so did the team token (a blip)
    assert "token team" not in words_of(admin_client.get("/admin/"))
    assert "replace its value" not in text_of(admin_client.get("/admin/accounts/huggingfacetoken/"))
    record(api_key, **refused, hf_token=hf_token)  # refused again
    assert "token team" in words_of(admin_client.get("/admin/"))

    hf_token.set_value("hf_TheNewValueOfTheTeamToken987")
    hf_token.save()
    assert "token team" not in words_of(admin_client.get("/admin/"))
    assert "replace its value" not in text_of(admin_client.get("/admin/accounts/huggingfacetoken/"))


# --- API keys ----------------------------------------------------------------------------------


def add_key(admin_client, user, name="ci"):
    return admin_client.post(
        "/admin/accounts/apikey/add/",
        {"user": user.pk, "name": name, "hf_token": "", "expires_at_0": "", "expires_at_1": ""},
    )


def test_adding_a_key_shows_it_once_and_stores_only_its_digest(admin_client, alice):
    posted = add_key(admin_client, alice)
    api_key = ApiKey.objects.get()
    assert posted.status_code == 302
    assert posted["location"] == f"/admin/accounts/apikey/{api_key.pk}/created/"
    assert not KEY_PATTERN.search(str(dict(admin_client.session)))  # waits there encrypted only
    response = admin_client.get(posted["location"])
    assert response.status_code == 200
    assert "no-store" in response["cache-control"]
    shown = KEY_PATTERN.findall(response.content.decode())
    assert len(set(shown)) == 1
    plaintext = shown[0]
    assert (api_key.user, api_key.name) == (alice, "ci")
    assert api_key.digest == keys.digest(plaintext)
    assert plaintext.startswith(api_key.prefix)
    assert keys.resolve(plaintext).user_id == alice.pk
    # Nowhere else: no message, nothing in the session, the log or any later page.
    assert not list(response.wsgi_request._messages)
    assert plaintext not in str(dict(admin_client.session))
    assert all(plaintext not in str(row) for row in ApiKey.objects.values_list())
    entry = LogEntry.objects.get()
    assert plaintext not in entry.object_repr + entry.change_message
    for url in ("/admin/accounts/apikey/", f"/admin/accounts/apikey/{api_key.pk}/change/"):
        assert plaintext not in admin_client.get(url).content.decode()


def test_reloading_the_created_page_neither_creates_a_key_nor_shows_it_again(admin_client, alice):
    first = add_key(admin_client, alice, "ci")
    assert KEY_PATTERN.search(admin_client.get(first["location"]).content.decode())
    reloaded = admin_client.get(first["location"])
    assert reloaded.status_code == 200
    assert not KEY_PATTERN.search(reloaded.content.decode())
    assert "was shown already" in words_of(reloaded)
    assert ApiKey.objects.count() == 1


def snippet(response, snippet_id: str) -> str:
    found = re.search(rf'<pre id="{snippet_id}">(.*?)</pre>', response.content.decode(), re.DOTALL)
    assert found, snippet_id
    return html.unescape(found.group(1))


def test_the_created_page_says_how_to_use_the_key(admin_client, alice, settings):
    settings.DEFAULT_MODEL = "org/default-model"
    response = admin_client.get(add_key(admin_client, alice)["location"])
    plaintext = KEY_PATTERN.search(response.content.decode()).group()
    assert "it will not be shown again" in words_of(response)
    assert snippet(response, "base-url") == "http://testserver/v1"
    curl = snippet(response, "snippet-curl")
    assert curl.startswith("curl http://testserver/v1/chat/completions")
    assert f'-H "Authorization: Bearer {plaintext}"' in curl
    assert '"model": "org/default-model"' in curl
    python = snippet(response, "snippet-python")
    assert f'OpenAI(base_url="http://testserver/v1", api_key="{plaintext}")' in python
    compile(python, "snippet", "exec")
    assert snippet(response, "snippet-env").splitlines() == [
        "export OPENAI_BASE_URL=http://testserver/v1",
        f"export OPENAI_API_KEY={plaintext}",
    ]
    assert snippet(response, "snippet-claude").splitlines() == [
        "export ANTHROPIC_BASE_URL=http://testserver",  # Claude Code adds /v1/messages
        f"export ANTHROPIC_AUTH_TOKEN={plaintext}",
        "export ANTHROPIC_MODEL=org/default-model",
    ]
    codex = snippet(response, "snippet-codex")
    import tomllib

    config = tomllib.loads(codex)
    assert config["model_providers"]["hfproxy"]["base_url"] == "http://testserver/v1"
    assert (config["model_provider"], config["model"]) == ("hfproxy", "org/default-model")
    assert f"export HFPROXY_KEY={plaintext}" in codex
    copy_buttons = re.findall(
        r'<button type="button" class="button" data-copy="([\w-]+)"', response.content.decode()
    )
    assert copy_buttons == [
        "new-api-key",
        "base-url",
        "snippet-curl",
        "snippet-python",
        "snippet-env",
        "snippet-codex",
        "snippet-claude",
    ]
    assert 'src="/static/accounts/copy.js"' in response.content.decode()


def test_the_snippets_use_a_model_the_key_may_use(admin_client, alice, settings):
    settings.DEFAULT_MODEL = "org/default-model"
    UserPolicy.objects.create(user=alice, allowed_models="org/team-*, org/team-small")
    response = admin_client.get(add_key(admin_client, alice)["location"])
    assert '"model": "org/team-small"' in snippet(response, "snippet-curl")


def test_a_new_key_is_shown_only_in_the_session_that_created_it(admin_client, client, alice):
    location = add_key(admin_client, alice)["location"]
    other_admin = get_user_model().objects.create_superuser("root", password="root-password-123")
    client.force_login(other_admin)
    assert not KEY_PATTERN.search(client.get(location).content.decode())
    assert KEY_PATTERN.search(admin_client.get(location).content.decode())


def test_the_add_form_refuses_another_users_token(admin_client, alice):
    bob = get_user_model().objects.create_user("bob")
    bobs = services.hf_token_create(name="bob's", value=HF_VALUE, owner=bob)
    response = admin_client.post(
        "/admin/accounts/apikey/add/",
        {"user": alice.pk, "name": "", "hf_token": bobs.pk, "expires_at_0": "", "expires_at_1": ""},
    )
    assert response.status_code == 200
    assert "belongs to another user" in response.content.decode()
    assert not ApiKey.objects.exists()


# --- Whose keys staff may create and change -----------------------------------------------------


def staff_client(client, username: str, *codenames: str):
    """`client` logged in as a new staff user holding only the permissions `codenames`."""
    staff = get_user_model().objects.create_user(username, password=f"{username}-password-123", is_staff=True)
    staff.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    client.force_login(staff)
    client.user = staff
    return client


@pytest.fixture
def root():
    return get_user_model().objects.create_superuser("root", password="root-password-123")


@pytest.fixture
def personal_tokens(alice, root) -> dict[str, HuggingFaceToken]:
    return {
        "shared": services.hf_token_create(name="team", value=HF_VALUE),
        "alice": services.hf_token_create(name="alice's", value=HF_VALUE, owner=alice),
        "root": services.hf_token_create(name="root's", value=HF_VALUE, owner=root),
    }


def post_key(client, user, hf_token: HuggingFaceToken | None = None):
    return client.post(
        "/admin/accounts/apikey/add/",
        {
            "user": user.pk,
            "name": "minted",
            "hf_token": hf_token.pk if hf_token else "",
            "expires_at_0": "",
            "expires_at_1": "",
        },
    )


def choices(response, field: str) -> set[str]:
    return {str(value) for value, _ in response.context["adminform"].form.fields[field].choices if value}


def keys_made() -> set[tuple[str, str | None]]:
    return {
        (key.user.username, key.hf_token.name if key.hf_token else None)
        for key in ApiKey.objects.select_related("user", "hf_token")
    }


def test_staff_with_add_apikey_only_create_keys_for_themselves(client, alice, root, personal_tokens):
    client = staff_client(client, "eve", "add_apikey")
    eve = client.user
    evens = services.hf_token_create(name="eve's", value=HF_VALUE, owner=eve)
    form = client.get("/admin/accounts/apikey/add/")
    assert choices(form, "user") == {str(eve.pk)}
    assert choices(form, "hf_token") == {str(personal_tokens["shared"].pk), str(evens.pk)}
    # Posting the ids of other users or their tokens directly does not get around the form.
    for user, token in [
        (root, personal_tokens["root"]),
        (root, personal_tokens["shared"]),
        (alice, None),
        (eve, personal_tokens["alice"]),
        (eve, personal_tokens["root"]),
    ]:
        assert post_key(client, user, token).status_code == 200, (user, token)
    assert keys_made() == set()
    assert post_key(client, eve, evens).status_code == 302
    assert post_key(client, eve, personal_tokens["shared"]).status_code == 302
    assert post_key(client, eve).status_code == 302
    assert keys_made() == {("eve", "eve's"), ("eve", "team"), ("eve", None)}


def test_staff_who_may_add_keys_for_others_cannot_for_a_superuser_or_with_anothers_token(
    client, alice, root, personal_tokens
):
    client = staff_client(client, "eve", "add_apikey", "add_apikey_for_others")
    form = client.get("/admin/accounts/apikey/add/")
    assert str(alice.pk) in choices(form, "user") and str(root.pk) not in choices(form, "user")
    assert str(personal_tokens["root"].pk) not in choices(form, "hf_token")
    refused = post_key(client, alice, personal_tokens["root"])
    assert refused.status_code == 200
    assert post_key(client, root, personal_tokens["shared"]).status_code == 200
    assert post_key(client, client.user, personal_tokens["alice"]).status_code == 200
    assert keys_made() == set()
    assert post_key(client, alice, personal_tokens["alice"]).status_code == 302
    assert post_key(client, alice, personal_tokens["shared"]).status_code == 302
    assert keys_made() == {("alice", "alice's"), ("alice", "team")}


def test_superusers_create_keys_for_anyone_but_only_with_their_own_or_a_shared_token(
    client, alice, root, personal_tokens
):
    other_root = get_user_model().objects.create_superuser("other-root", password="x-password-123")
    client.force_login(root)
    assert post_key(client, other_root, personal_tokens["shared"]).status_code == 302
    assert post_key(client, alice, personal_tokens["alice"]).status_code == 302
    refused = post_key(client, alice, personal_tokens["root"])
    assert refused.status_code == 200 and "belongs to another user" in refused.content.decode()
    assert post_key(client, other_root, personal_tokens["root"]).status_code == 200
    assert keys_made() == {("other-root", "team"), ("alice", "alice's")}


def test_the_service_itself_refuses_what_the_form_does(alice, root, personal_tokens):
    eve = get_user_model().objects.create_user("eve", is_staff=True)
    eve.user_permissions.add(*Permission.objects.filter(codename__in=["add_apikey", "add_apikey_for_others"]))
    eve = get_user_model().objects.get(pk=eve.pk)  # no stale permission cache
    with pytest.raises(PermissionDenied):
        services.api_key_create(user=root, actor=eve)
    with pytest.raises(ValidationError, match="belongs to another user"):
        services.api_key_create(user=eve, actor=eve, hf_token=personal_tokens["alice"])
    services.api_key_create(user=alice, actor=eve, hf_token=personal_tokens["alice"])
    assert keys_made() == {("alice", "alice's")}


def test_staff_cannot_change_or_revoke_a_superusers_key(client, alice, root, personal_tokens):
    roots, _ = services.api_key_create(user=root, hf_token=personal_tokens["root"])
    alices, _ = services.api_key_create(user=alice)
    client = staff_client(client, "eve", "view_apikey", "change_apikey")
    url = f"/admin/accounts/apikey/{roots.pk}/change/"
    assert client.get(url).status_code == 200  # shown, read-only
    change = {
        "name": "taken",
        "hf_token": personal_tokens["shared"].pk,
        "expires_at_0": "",
        "expires_at_1": "",
    }
    assert client.post(url, change).status_code == 403
    client.post(
        "/admin/accounts/apikey/",
        {"action": "revoke_selected", "_selected_action": [roots.pk, alices.pk], "index": 0},
    )
    roots.refresh_from_db()
    alices.refresh_from_db()
    assert (roots.name, roots.hf_token, roots.status) == ("", personal_tokens["root"], "active")
    assert alices.status == "revoked"


def test_a_key_cannot_be_rebound_to_another_users_token(client, alice, root, personal_tokens):
    alices, _ = services.api_key_create(user=alice)
    client.force_login(root)
    url = f"/admin/accounts/apikey/{alices.pk}/change/"
    assert choices(client.get(url), "hf_token") == {
        str(personal_tokens["shared"].pk),
        str(personal_tokens["alice"].pk),
    }
    change = {"name": "", "user": root.pk, "expires_at_0": "", "expires_at_1": ""}
    assert client.post(url, {**change, "hf_token": personal_tokens["root"].pk}).status_code == 200
    assert client.post(url, {**change, "hf_token": personal_tokens["alice"].pk}).status_code == 302
    assert keys_made() == {("alice", "alice's")}  # and the posted user changed nothing


def test_the_key_list_shows_usage_only_to_staff_who_may_view_it(client, key_and_plaintext):
    client = staff_client(client, "eve", "view_apikey")
    columns = ("Requests (30 d)", "Tokens (30 d)", "Budget (this month)")
    page = client.get("/admin/accounts/apikey/").content.decode()
    assert not any(column in page for column in columns)
    client.user.user_permissions.add(Permission.objects.get(codename="view_usagerecord"))
    page = client.get("/admin/accounts/apikey/").content.decode()
    assert all(column in page for column in columns)


def test_the_key_list_shows_usage_of_the_last_30_days(admin_client, key_and_plaintext):
    api_key = key_and_plaintext[0]
    record(api_key, total_tokens=100)
    record(api_key, total_tokens=None, prompt_tokens=None, completion_tokens=None, usage_source="missing")
    record(api_key, total_tokens=1000, created_at=timezone.now() - timedelta(days=31))
    response = admin_client.get("/admin/accounts/apikey/")
    row = response.context["cl"].result_list[0]
    assert (row.requests_30d, row.tokens_30d) == (2, 100)
    html = response.content.decode()
    for column in ("Requests (30 d)", "Tokens (30 d)", "active", api_key.prefix, "alice"):
        assert column in html


def test_the_key_list_costs_the_same_queries_for_more_keys(admin_client, alice):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert admin_client.get("/admin/accounts/apikey/").status_code == 200
        return len(captured)

    record(services.api_key_create(user=alice)[0])
    few = queries()
    for number in range(10):
        record(services.api_key_create(user=alice, name=f"k{number}")[0])
    assert queries() == few


def test_the_revoke_action_revokes_the_selected_keys(admin_client, alice):
    (kept, kept_plain), (gone, gone_plain) = (services.api_key_create(user=alice) for _ in range(2))
    response = admin_client.post(
        "/admin/accounts/apikey/",
        {"action": "revoke_selected", "_selected_action": [gone.pk], "index": 0},
        follow=True,
    )
    assert "Revoked 1 key." in response.content.decode()
    gone.refresh_from_db()
    kept.refresh_from_db()
    assert (gone.status, kept.status) == ("revoked", "active")
    assert keys.resolve(gone_plain) is None
    assert keys.resolve(kept_plain) is not None
    assert LogEntry.objects.get().change_message == "Revoked."


def test_keys_cannot_be_deleted(admin_client, key_and_plaintext):
    api_key = key_and_plaintext[0]
    assert admin_client.get(f"/admin/accounts/apikey/{api_key.pk}/delete/").status_code == 403
    assert "delete_selected" not in admin_client.get("/admin/accounts/apikey/").content.decode()
    assert ApiKey.objects.filter(pk=api_key.pk).exists()


def test_the_user_page_lists_their_keys(admin_client, key_and_plaintext, alice):
    api_key = key_and_plaintext[0]
    html = admin_client.get(f"/admin/auth/user/{alice.pk}/change/").content.decode()
    assert api_key.prefix in html
    assert f"/admin/accounts/apikey/{api_key.pk}/change/" in html
    users = admin_client.get("/admin/auth/user/").content.decode()
    assert f"/admin/accounts/apikey/?user__id__exact={alice.pk}" in users


def test_deleting_a_user_with_usage_says_to_deactivate_instead_and_offers_it(admin_client, key_and_plaintext):
    api_key, plaintext = key_and_plaintext
    record(api_key)
    page = admin_client.get(f"/admin/auth/user/{api_key.user_id}/delete/")
    text = words_of(page)
    assert "Cannot delete user" in text  # Django's own refusal, still there
    assert "Users who have API keys or usage cannot be deleted" in text
    assert "uncheck “Active” on the user's page, and revoke the keys" in text
    assert 'value="deactivate_and_revoke_keys"' in page.content.decode()

    done = admin_client.post(
        "/admin/auth/user/",
        {"action": "deactivate_and_revoke_keys", "_selected_action": [api_key.user_id], "index": 0},
        follow=True,
    )
    assert "Deactivated 1 user(s) and revoked 1 API key(s)" in words_of(done)
    api_key.refresh_from_db()
    assert api_key.status == "revoked" and not api_key.user.is_active
    assert keys.resolve(plaintext) is None
    assert UsageRecord.objects.filter(api_key=api_key).exists()


def test_deleting_users_with_keys_only_says_to_deactivate_instead(admin_client, key_and_plaintext, alice):
    single = words_of(admin_client.get(f"/admin/auth/user/{alice.pk}/delete/"))
    assert "doesn't have permission to delete the following types of objects" in single
    assert "Users who have API keys or usage cannot be deleted" in single
    bulk = admin_client.post(
        "/admin/auth/user/", {"action": "delete_selected", "_selected_action": [alice.pk], "index": 0}
    )
    assert "Users who have API keys or usage cannot be deleted" in words_of(bulk)
    assert f'name="_selected_action" value="{alice.pk}"' in bulk.content.decode()


def test_a_user_without_keys_or_usage_can_still_be_deleted(admin_client):
    bob = get_user_model().objects.create_user("bob")
    page = words_of(admin_client.get(f"/admin/auth/user/{bob.pk}/delete/"))
    assert "Are you sure" in page and "cannot be deleted" not in page
    assert admin_client.post(f"/admin/auth/user/{bob.pk}/delete/", {"post": "yes"}).status_code == 302
    assert not get_user_model().objects.filter(pk=bob.pk).exists()


def test_admins_cannot_deactivate_themselves(admin_client):
    me = get_user_model().objects.get(username="admin")
    done = admin_client.post(
        "/admin/auth/user/",
        {"action": "deactivate_and_revoke_keys", "_selected_action": [me.pk], "index": 0},
        follow=True,
    )
    assert "You cannot deactivate yourself" in words_of(done)
    me.refresh_from_db()
    assert me.is_active


# --- Hugging Face tokens -----------------------------------------------------------------------


def test_the_token_form_never_renders_the_value_back(admin_client):
    taken = services.hf_token_create(name="taken", value="hf_AnotherValue99")
    response = admin_client.post(
        "/admin/accounts/huggingfacetoken/add/", {"name": "taken", "owner": "", "value": HF_VALUE}
    )
    assert response.status_code == 200  # the name is taken: the form comes back
    assert HF_VALUE not in response.content.decode()
    assert 'type="password"' in response.content.decode()

    response = admin_client.post(
        "/admin/accounts/huggingfacetoken/add/", {"name": "shared", "owner": "", "value": HF_VALUE}
    )
    assert response.status_code == 302
    token = HuggingFaceToken.objects.get(name="shared")
    assert token.value() == HF_VALUE
    assert HF_VALUE not in token.encrypted_value
    assert HF_VALUE not in LogEntry.objects.get().change_message

    page = admin_client.get(f"/admin/accounts/huggingfacetoken/{token.pk}/change/").content.decode()
    assert HF_VALUE not in page and token.encrypted_value not in page
    assert "hf_…1234" in page
    assert (
        "hf_AnotherValue99"
        not in admin_client.get(f"/admin/accounts/huggingfacetoken/{taken.pk}/change/").content.decode()
    )


def test_a_token_keeps_its_value_unless_a_new_one_is_given(admin_client, hf_token):
    url = f"/admin/accounts/huggingfacetoken/{hf_token.pk}/change/"
    assert admin_client.post(url, {"name": "renamed", "owner": "", "value": ""}).status_code == 302
    hf_token.refresh_from_db()
    assert (hf_token.name, hf_token.value()) == ("renamed", HF_VALUE)
    assert (
        admin_client.post(url, {"name": "renamed", "owner": "", "value": "hf_TheNewValue5678"}).status_code
        == 302
    )
    hf_token.refresh_from_db()
    assert (hf_token.value(), hf_token.masked) == ("hf_TheNewValue5678", "hf_…5678")


def test_only_a_superuser_gives_a_personal_token_to_someone_else_or_shares_it(
    client, alice, root, personal_tokens
):
    alices = personal_tokens["alice"]
    tokens = ("add_huggingfacetoken", "change_huggingfacetoken", "view_huggingfacetoken")
    client = staff_client(client, "eve", "add_apikey", *tokens)
    eve = client.user
    url = f"/admin/accounts/huggingfacetoken/{alices.pk}/change/"
    for owner in ("", eve.pk, root.pk):  # shared, then usable by eve; or given away
        assert client.post(url, {"name": "taken", "owner": owner, "value": ""}).status_code == 200, owner
    alices.refresh_from_db()
    assert (alices.name, alices.owner) == ("alice's", alice)
    assert (
        client.post(url, {"name": "alice's", "owner": alice.pk, "value": "hf_ANewValue9876"}).status_code
        == 302
    )
    alices.refresh_from_db()
    assert (alices.owner, alices.masked) == (alice, "hf_…9876")  # a new value, still hers
    add = "/admin/accounts/huggingfacetoken/add/"
    assert client.post(add, {"name": "for root", "owner": root.pk, "value": HF_VALUE}).status_code == 200
    assert client.post(add, {"name": "eve's", "owner": eve.pk, "value": HF_VALUE}).status_code == 302
    assert client.post(add, {"name": "shared", "owner": "", "value": HF_VALUE}).status_code == 302
    client.force_login(root)
    assert client.post(url, {"name": "alice's", "owner": "", "value": ""}).status_code == 302
    alices.refresh_from_db()
    assert alices.is_shared


def test_the_token_form_validates_the_value(admin_client):
    response = admin_client.post(
        "/admin/accounts/huggingfacetoken/add/", {"name": "bad", "owner": "", "value": "hf_ with spaces"}
    )
    assert response.status_code == 200
    assert "printable ASCII" in response.content.decode()
    assert not HuggingFaceToken.objects.exists()


def test_the_token_list_shows_owner_or_shared_and_keys_using_it(admin_client, key_and_plaintext, alice):
    services.hf_token_create(name="personal", value="hf_PersonalValue42", owner=alice)
    response = admin_client.get("/admin/accounts/huggingfacetoken/")
    rows = {token.name: token for token in response.context["cl"].result_list}
    assert (rows["team"].keys_using, rows["personal"].keys_using) == (1, 0)
    html = response.content.decode()
    assert "shared" in html and "hf_…ue42" in html and "hf_…1234" in html


# --- Usage -------------------------------------------------------------------------------------


def test_usage_is_read_only(admin_client, key_and_plaintext):
    usage = record(key_and_plaintext[0])
    assert admin_client.get("/admin/accounts/usagerecord/add/").status_code == 403
    page = admin_client.get(f"/admin/accounts/usagerecord/{usage.pk}/change/")
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    assert admin_client.post(f"/admin/accounts/usagerecord/{usage.pk}/change/", {}).status_code == 403
    assert admin_client.get(f"/admin/accounts/usagerecord/{usage.pk}/delete/").status_code == 403
    assert "delete_selected" not in admin_client.get("/admin/accounts/usagerecord/").content.decode()


def test_the_usage_list_filters_searches_and_drills_down_by_date(admin_client, key_and_plaintext):
    api_key = key_and_plaintext[0]
    record(api_key, request_id="wanted", model_requested="m/one", outcome=Outcome.TIMEOUT, status=504)
    record(api_key, request_id="other", model_requested="m/two")
    today = timezone.now()

    def listed(query: str) -> set[str]:
        response = admin_client.get("/admin/accounts/usagerecord/" + query)
        assert response.status_code == 200, query
        return {usage.request_id for usage in response.context["cl"].result_list}

    assert listed("?outcome__exact=timeout") == {"wanted"}
    assert listed("?model_requested=m/one") == {"wanted"}
    assert listed(f"?api_key__id__exact={api_key.pk}&user__id__exact={api_key.user_id}") == {
        "wanted",
        "other",
    }
    assert listed("?q=wanted") == {"wanted"}
    assert listed(f"?created_at__year={today.year}&created_at__month={today.month}") == {"wanted", "other"}
    assert listed(f"?created_at__year={today.year - 1}") == set()
    drill = admin_client.get("/admin/accounts/usagerecord/").content.decode()
    assert f"created_at__day={today.day}" in drill  # one month of data: the days are offered


def test_the_usage_list_costs_the_same_queries_for_more_rows(admin_client, key_and_plaintext):
    api_key = key_and_plaintext[0]

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert admin_client.get("/admin/accounts/usagerecord/").status_code == 200
        return len(captured)

    record(api_key)
    few = queries()
    other = services.api_key_create(user=get_user_model().objects.create_user("bob"))[0]
    for _ in range(30):
        record(other)
    assert queries() == few


def test_the_usage_list_counts_its_rows_exactly_while_that_is_quick(admin_client, key_and_plaintext):
    for _ in range(3):
        record(key_and_plaintext[0])
    response = admin_client.get("/admin/accounts/usagerecord/?outcome__exact=ok")
    assert (response.context["cl"].result_count, response.context["cl"].paginator.estimated) == (3, False)
    assert re.search(r"\n3 usage records", response.content.decode())
    assert "about" not in response.content.decode()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite always counts exactly")
def test_a_slow_count_gives_way_to_the_planners_estimate(admin_client, key_and_plaintext, monkeypatch):
    from django.db.models import QuerySet

    for _ in range(3):
        record(key_and_plaintext[0])
    exact = QuerySet.count

    def slow(queryset):
        if queryset.model is UsageRecord:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_sleep(2)")
        return exact(queryset)

    monkeypatch.setattr(QuerySet, "count", slow)
    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        before = cursor.fetchone()[0]
    response = admin_client.get("/admin/accounts/usagerecord/?outcome__exact=ok")
    changelist = response.context["cl"]
    assert changelist.paginator.estimated and changelist.result_count >= 1
    assert len(changelist.result_list) == 3  # the page itself is read as ever
    assert f"about {changelist.result_count} usage record" in response.content.decode()
    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone()[0] == before


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite always counts exactly")
def test_a_list_the_planner_expects_long_is_not_counted(admin_client, key_and_plaintext, monkeypatch):
    from accounts.admin import paginator

    for _ in range(3):
        record(key_and_plaintext[0])
    monkeypatch.setattr(paginator, "ESTIMATE_ABOVE", 1)
    with CaptureQueriesContext(connection) as captured:
        response = admin_client.get("/admin/accounts/usagerecord/")
    assert response.context["cl"].paginator.estimated
    assert len(response.context["cl"].result_list) == 3
    assert not any("COUNT(*)" in query["sql"] for query in captured.captured_queries)


def csv_rows(response) -> list[dict]:
    assert response["content-type"] == "text/csv; charset=utf-8"
    assert response["content-disposition"].startswith('attachment; filename="usage-')
    return list(csv.DictReader(io.StringIO(text_of(response))))


def test_it_exports_the_selected_records_as_csv(admin_client, key_and_plaintext, secrets_):
    api_key = key_and_plaintext[0]
    wanted = record(api_key, request_id="wanted", model_requested="=cmd|' /C calc'!A0", ttft_ms=40)
    record(api_key, request_id="other")
    response = admin_client.post(
        "/admin/accounts/usagerecord/",
        {"action": "export_selected_csv", "_selected_action": [wanted.pk], "index": 0},
    )
    [row] = csv_rows(response)
    assert row["request_id"] == "wanted"
    assert row["user"] == "alice"
    assert row["api_key"] == api_key.prefix
    assert row["model_requested"] == "'=cmd|' /C calc'!A0"  # never a spreadsheet formula
    assert (row["total_tokens"], row["ttft_ms"], row["outcome"]) == ("8", "40", "ok")
    assert row["created_at"] == wanted.created_at.isoformat()
    assert "digest" not in row


def test_the_model_filter_lists_only_successful_models_and_few_of_them(admin_client, key_and_plaintext):
    from accounts.admin.usage import ModelFilter

    api_key = key_and_plaintext[0]
    UsageRecord.objects.bulk_create(
        UsageRecord(
            request_id=f"refused-{number}",
            user_id=api_key.user_id,
            api_key=api_key,
            endpoint="chat_completions",
            model_requested=f"made/up-{number:05}",
            status=403,
            outcome=Outcome.REFUSED,
            usage_source=UsageSource.MISSING,
            latency_ms=1,
        )
        for number in range(2_000)
    )
    for number in range(ModelFilter.MODEL_CHOICES + 5):
        record(api_key, model_requested=f"org/served-{number:03}")
    page = admin_client.get("/admin/accounts/usagerecord/")
    assert page.status_code == 200
    text = page.content.decode()
    offered = re.findall(r"model_requested=([^&\"]+)", text)
    assert offered == [f"org%2Fserved-{n:03}" for n in range(ModelFilter.MODEL_CHOICES)], offered[:3]
    assert len(page.content) < 200_000
    found = admin_client.get("/admin/accounts/usagerecord/?q=made/up-01234")
    assert "made/up-01234" in found.content.decode()  # the search finds any


SPLIT_ON = (",", ";", "\t", "|", "\n")
FORMULAS = ["x;=1+1", "a, @SUM(1)", "m\t-2+3", 'x;"=1+1"', "a; \t+b", "x|=cmd", "two\nlines\n=1", "=x"]


def test_no_piece_of_an_exported_cell_is_a_formula_whatever_a_spreadsheet_splits_on(
    admin_client, key_and_plaintext, secrets_
):
    api_key = key_and_plaintext[0]
    for number, model in enumerate(FORMULAS):
        record(api_key, request_id=f"f{number}", model_requested=model, model_answered="meta-llama/x-1")
    body = text_of(admin_client.get("/admin/accounts/usagerecord/export/"))
    for separator in SPLIT_ON:
        for piece in body.replace("\r\n", "\n").split(separator):
            assert piece.lstrip(' \t"')[:1] not in ("=", "+", "-", "@"), (separator, piece)
    assert "meta-llama/x-1" in body  # a hyphen inside a name is no formula


def test_it_exports_the_filtered_list_as_csv_page_by_page(
    admin_client, key_and_plaintext, secrets_, monkeypatch
):
    from accounts.admin import export

    monkeypatch.setattr(export, "CSV_PAGE", 3)  # several pages, one row repeated never
    api_key = key_and_plaintext[0]
    now = timezone.now()
    for number in range(7):
        record(api_key, request_id=f"ok-{number}", created_at=now - timedelta(minutes=number % 3))
    record(api_key, request_id="failed", outcome=Outcome.UPSTREAM_ERROR, status=502)
    response = admin_client.get("/admin/accounts/usagerecord/export/?outcome__exact=ok")
    body = text_of(response)
    assert all(secret not in body for secret in secrets_)
    rows = list(csv.DictReader(io.StringIO(body)))
    assert sorted(row["request_id"] for row in rows) == [f"ok-{number}" for number in range(7)]
    assert [row["created_at"] for row in rows] == sorted((row["created_at"] for row in rows), reverse=True)


def test_the_usage_list_links_to_the_export_with_its_filters(admin_client, key_and_plaintext):
    html = admin_client.get("/admin/accounts/usagerecord/?outcome__exact=ok").content.decode()
    assert "/admin/accounts/usagerecord/export/?outcome__exact=ok" in html
    assert "/admin/accounts/usagerecord/dashboard/" in html


# --- Layout: lists that fit a laptop's screen, times as people read them -------------------------


def test_the_admin_is_branded_hfproxy(admin_client):
    page = admin_client.get("/admin/").content.decode()
    assert "<title>Keys, tokens and usage | hfproxy admin</title>" in page
    assert "hfproxy administration" in page
    assert "Django administration" not in page


def test_the_lists_keep_to_what_fits_a_laptop_screen(admin_client, key_and_plaintext):
    record(key_and_plaintext[0])
    keys_list = admin_client.get("/admin/accounts/apikey/")
    usage_list = admin_client.get("/admin/accounts/usagerecord/")
    assert len(keys_list.context["cl"].list_display) <= 10  # with the checkbox
    assert len(usage_list.context["cl"].list_display) <= 10
    for response in (keys_list, usage_list):
        assert "accounts/admin.css" in response.content.decode()  # one line a row, ellipses
    assert 'class="shortened"' in usage_list.content.decode()  # the model, whole in its title
    assert 'title="openai/gpt-oss-120b"' in usage_list.content.decode()


def test_stream_shows_as_text_not_a_failure_icon(admin_client, key_and_plaintext):
    api_key = key_and_plaintext[0]
    plain, streamed = record(api_key), record(api_key, stream=True)
    html = admin_client.get("/admin/accounts/usagerecord/").content.decode()
    assert "icon-no.svg" not in html and "icon-yes.svg" not in html
    cells = re.findall(r'<td class="field-streamed">([^<]*)</td>', html)
    assert sorted(cells) == ["-", "stream"]
    for row in (plain, streamed):
        page = admin_client.get(f"/admin/accounts/usagerecord/{row.pk}/change/").content.decode()
        assert "icon-no.svg" not in page and "icon-yes.svg" not in page


def test_times_show_as_people_read_them(admin_client, key_and_plaintext):
    api_key = key_and_plaintext[0]
    when = timezone.now().replace(year=2026, month=3, day=4, hour=14, minute=5)
    record(api_key, created_at=when)
    ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=when)
    for url in (
        "/admin/accounts/usagerecord/",
        "/admin/accounts/apikey/",
        f"/admin/accounts/apikey/{api_key.pk}/change/",
        f"/admin/auth/user/{api_key.user_id}/change/",
    ):
        page = admin_client.get(url).content.decode()
        assert f'<time datetime="{when.isoformat()}" title="' in page, url
        assert ">2026-03-04 14:05</time>" in page, url
        assert "(UTC)" in page, url  # the zone, in the column's label
        assert "p.m." not in page and "a.m." not in page, url
