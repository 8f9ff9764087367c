"""Sign-in with an OpenID Connect provider in a real browser: headless Chromium, hfproxy under
uvicorn, and a real provider on localhost (tests/support/oidc.py), through the whole
authorisation-code flow with PKCE — its login and consent pages included."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.support.browser import BROWSER, local_page, served_site
from tests.support.oidc import oidc_provider
from tests.support.processes import free_port, manage

pytestmark = BROWSER

CLIENT = {"client_id": "hfproxy-tests", "client_secret": "a-client-secret-for-the-tests-only"}
# The same provider plays Hugging Face too: its `orgs` claim with the read-memberships scope.
HF_CLIENT = {"client_id": "hfproxy-tests-hf", "client_secret": "another-client-secret-for-the-tests"}
ACCOUNTS = {
    "hf-ann": {
        "name": "Ann",
        "preferred_username": "hf-ann",
        "orgs": [{"sub": "o1", "name": "Acme", "preferred_username": "acme"}],
    },
    "ann": {"email": "ann@example.com", "email_verified": True, "name": "Ann", "preferred_username": "ann"},
    "sam": {"email": "sam@example.com", "email_verified": True, "name": "Sam", "preferred_username": "sam"},
    # The first admin's address at the provider, under another login.
    "boss-at-idp": {"email": "boss@example.com", "email_verified": True, "preferred_username": "boss-at-idp"},
    "eve": {"email": "eve@elsewhere.org", "email_verified": True, "name": "Eve", "preferred_username": "eve"},
}
SEED = (
    "from django.contrib.auth import get_user_model; from accounts.models import Team; "
    "get_user_model().objects.create_superuser('boss', 'boss@example.com', 'a-long-password-for-boss'); "
    "Team.objects.create(name='ml')"
)
USERS = (
    "import json; from django.contrib.auth import get_user_model; from django.db.models import Count; "
    "print(json.dumps({u.username: [u.email, u.links] for u in "
    "get_user_model().objects.annotate(links=Count('socialaccount'))}))"
)


def users(servers) -> dict[str, list]:
    """The server's users: username → [email, how many provider accounts are linked to it]."""
    return json.loads(manage("shell", "--verbosity", "0", "--command", USERS, env=servers["env"]))


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    provider_port = free_port()
    providers = [
        {
            "id": "local",
            "name": "Local ID",
            "server_url": f"http://localhost:{provider_port}",
            "client_id": CLIENT["client_id"],
            "secret": CLIENT["client_secret"],
        }
    ]
    with contextlib.ExitStack() as stack:
        base, env = stack.enter_context(
            served_site(
                tmp_path_factory.mktemp("db"),
                OIDC_PROVIDERS=json.dumps(providers),
                SIGNUP_EMAIL_DOMAINS="example.com",
                SIGNIN_LINK_BY_EMAIL="true",
                seed=SEED,
                HF_OAUTH_CLIENT_ID=HF_CLIENT["client_id"],
                HF_OAUTH_CLIENT_SECRET=HF_CLIENT["client_secret"],
                HF_OAUTH_SERVER_URL=f"http://localhost:{provider_port}",
                SIGNUP_HF_ORGS="acme",
                HF_ORG_TEAMS="acme:ml,nobody-else:ml",
                SECURE_COOKIES="false",
            )
        )
        clients = [
            {
                **client,
                "redirect_uris": [f"{base}/accounts/oidc/{provider}/login/callback/"],
                "token_endpoint_auth_method": "client_secret_post",
            }
            for provider, client in (("local", CLIENT), ("huggingface", HF_CLIENT))
        ]
        issuer = stack.enter_context(oidc_provider(provider_port, clients=clients, accounts=ACCOUNTS))
        yield {"site": base, "issuer": issuer, "env": env}


@pytest.fixture
def page(servers):
    # The site and the provider, nothing else (the provider's development pages ask for a web
    # font: refused, and no fault of hfproxy's).
    with local_page(
        servers["site"],
        servers["issuer"],
        ignored=("https://fonts.googleapis.com/",),
        viewport={"width": 900, "height": 700},
    ) as page:
        yield page


def screenshot(page, tmp_path, name: str) -> None:
    folder = Path(os.environ.get("BROWSER_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / name), full_page=True)


def authorize_requests(page) -> list[dict]:
    """The query of each request the browser makes to the provider's authorisation endpoint."""
    seen: list[dict] = []

    def record(request) -> None:
        if "/auth?" in request.url:
            seen.append(parse_qs(urlsplit(request.url).query))

    page.on("request", record)
    return seen


def sign_in_at_the_provider(page, servers, login: str, provider: str = "local") -> None:
    page.click(f"button[data-provider={provider}]")
    page.wait_for_url(servers["issuer"] + "/interaction/**")
    page.fill("input[name=login]", login)
    page.fill("input[name=password]", "any password: the test provider takes it")
    page.click("button[type=submit]")  # its login page
    page.wait_for_url(servers["issuer"] + "/interaction/**")
    assert page.locator("input[name=prompt][value=consent]").count() == 1
    page.click("button[type=submit]")  # its consent page


def test_it_signs_in_with_the_provider_and_lands_on_the_portal(servers, page, tmp_path):
    authorizations = authorize_requests(page)
    page.goto(servers["site"] + "/portal/")
    page.wait_for_url("**/accounts/login/?next=/portal/")
    screenshot(page, tmp_path, "signin-page.png")
    sign_in_at_the_provider(page, servers, "ann")
    page.wait_for_url(servers["site"] + "/portal/")
    assert "Signed in as ann." in page.locator(".signed-in").inner_text()
    screenshot(page, tmp_path, "signin-portal.png")

    (query,) = authorizations  # one authorisation request, with PKCE (S256)
    assert query["response_type"] == ["code"] and query["code_challenge_method"] == ["S256"]
    assert len(query["code_challenge"][0]) >= 43
    assert users(servers)["ann"] == ["ann@example.com", 1]

    # Signed out and in again: the provider remembers Ann (no login, no consent), and hfproxy
    # the user it made the first time.
    page.click("text=Sign out")
    page.wait_for_url("**/accounts/login/")
    page.click("button[data-provider=local]")
    page.wait_for_url(servers["site"] + "/portal/")
    assert "Signed in as ann." in page.locator(".signed-in").inner_text()
    assert len(authorizations) == 2 and authorizations[1]["code_challenge"] != query["code_challenge"]
    everyone = users(servers)
    assert everyone["ann"] == ["ann@example.com", 1]  # the same user, the same link
    assert [name for name, (email, _) in everyone.items() if email == "ann@example.com"] == ["ann"]


def test_it_refuses_someone_outside_the_allowed_domains(servers, page, tmp_path):
    page.goto(servers["site"] + "/accounts/login/")
    sign_in_at_the_provider(page, servers, "eve")
    page.wait_for_url(servers["site"] + "/accounts/oidc/local/login/callback/**")
    assert page.locator(".refusal").get_attribute("data-reason") == "not_allowed"
    assert "You cannot sign in here" in page.locator("h1").inner_text()
    screenshot(page, tmp_path, "signin-refused.png")
    assert "eve" not in users(servers)
    page.goto(servers["site"] + "/portal/")
    page.wait_for_url("**/accounts/login/?next=/portal/")  # not signed in


def test_it_admits_a_member_of_the_hugging_face_organisation(servers, page, tmp_path):
    authorizations = authorize_requests(page)
    page.goto(servers["site"] + "/accounts/login/")
    sign_in_at_the_provider(page, servers, "hf-ann", provider="huggingface")
    page.wait_for_url(servers["site"] + "/portal/")
    assert "Signed in as hf-ann." in page.locator(".signed-in").inner_text()
    (query,) = authorizations
    assert set(query["scope"][0].split()) == {"openid", "profile", "read-memberships"}
    assert query["code_challenge_method"] == ["S256"]
    assert users(servers)["hf-ann"] == ["", 1]
    # Her organisation's team (HF_ORG_TEAMS), as a member.
    members = "from accounts.models import TeamMember; print(list(TeamMember.objects.values_list('team__name', 'user__username', 'role')))"
    assert (
        manage("shell", "--verbosity", "0", "--command", members, env=servers["env"]).strip()
        == "[('ml', 'hf-ann', 'member')]"
    )


def test_staff_reach_the_admin_through_the_same_sign_in(servers, page, tmp_path):
    page.goto(servers["site"] + "/admin/")
    page.wait_for_url("**/admin/login/?next=/admin/")
    assert page.locator("#id_username").count() == 1  # the password form stays (PASSWORD_LOGIN=everyone)
    screenshot(page, tmp_path, "signin-admin-login.png")
    sign_in_at_the_provider(page, servers, "sam")
    page.wait_for_url(servers["site"] + "/admin/**")
    assert "not authorized" in page.content()  # signed in, but not staff yet
    promote = "from django.contrib.auth.models import User; User.objects.filter(username='sam').update(is_staff=True)"
    manage("shell", "--verbosity", "0", "--command", promote, env=servers["env"])
    page.goto(servers["site"] + "/admin/")
    assert page.locator("#site-name").count() == 1 and "/admin/login/" not in page.url


def test_the_first_admin_signs_in_with_the_provider_as_themselves(servers, page, tmp_path):
    # SIGNIN_LINK_BY_EMAIL: the provider's verified address is the superuser's, so it is them.
    page.goto(servers["site"] + "/admin/login/?next=/admin/")
    sign_in_at_the_provider(page, servers, "boss-at-idp")
    page.wait_for_url(servers["site"] + "/admin/")
    assert page.locator("#site-name").count() == 1
    everyone = users(servers)
    assert everyone["boss"] == ["boss@example.com", 1] and "boss-at-idp" not in everyone
