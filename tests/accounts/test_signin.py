"""Sign-in rules (accounts.signin, accounts.adapters, accounts.backends): who joins through a
provider, who may use a password, and django-axes' lockout of password guessing."""

from __future__ import annotations

import logging

import pytest
from allauth.core.exceptions import ImmediateHttpResponse
from allauth.socialaccount.models import SocialAccount, SocialLogin
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.test import RequestFactory

from accounts import signin
from accounts.adapters import AccountAdapter, SocialAccountAdapter
from accounts.providers import openid_connect_apps

PASSWORD = "a-password-for-the-tests"


@pytest.fixture
def providers(settings, db):
    """Hugging Face (with read-memberships) and a company provider that sends email_verified."""
    settings.SOCIALACCOUNT_PROVIDERS = {
        "openid_connect": {
            "APPS": openid_connect_apps(
                oidc_providers='[{"id": "corp", "name": "Corp", "server_url": "https://id.example.com",'
                ' "client_id": "c", "secret": "s"}]',
                hf_client_id="hf-client",
                hf_client_secret="hf-secret",
                hf_server_url="https://huggingface.co",
                hf_scopes=["openid", "profile"],
                hf_orgs=["acme"],
            )
        }
    }
    settings.SIGNUP_EMAIL_DOMAINS = ["example.com"]
    settings.SIGNUP_HF_ORGS = ["acme"]
    settings.SIGNUP_OPEN = False
    return settings


def sociallogin(provider: str, **userinfo) -> SocialLogin:
    account = SocialAccount(provider=provider, uid="1", extra_data={"userinfo": {"sub": "1", **userinfo}})
    return SocialLogin(account=account)


def refusal(login: SocialLogin) -> str | None:
    return signin.refusal(signin.Claims.from_sociallogin(login))


def test_it_admits_a_verified_address_of_an_allowed_domain(providers):
    assert refusal(sociallogin("corp", email="Ann@Example.com", email_verified=True)) is None


def test_it_refuses_another_domain_and_an_unverified_address(providers):
    assert refusal(sociallogin("corp", email="ann@elsewhere.org", email_verified=True)) == "not_allowed"
    assert refusal(sociallogin("corp", email="ann@example.com", email_verified=False)) == "not_allowed"
    assert refusal(sociallogin("corp", email="ann@example.com")) == "not_allowed"
    # A domain's look-alike is another domain.
    assert refusal(sociallogin("corp", email="ann@badexample.com", email_verified=True)) == "not_allowed"


def test_it_admits_a_member_of_an_allowed_hugging_face_organisation(providers):
    orgs = [{"sub": "o1", "name": "Acme Inc.", "preferred_username": "Acme"}]
    assert refusal(sociallogin("huggingface", preferred_username="ann", orgs=orgs)) is None


def test_it_refuses_a_hugging_face_user_outside_the_organisations(providers):
    orgs = [{"sub": "o2", "name": "Acme", "preferred_username": "not-acme"}]
    assert refusal(sociallogin("huggingface", preferred_username="ann", orgs=orgs)) == "not_allowed"
    assert refusal(sociallogin("huggingface", preferred_username="ann")) == "not_allowed"
    # An organisation's display name is not its handle.
    orgs = [{"sub": "o3", "name": "acme", "preferred_username": "acme-fans"}]
    assert refusal(sociallogin("huggingface", preferred_username="ann", orgs=orgs)) == "not_allowed"


def test_it_trusts_hugging_faces_addresses(providers):
    # Hugging Face sends no email_verified without the email scope's claims, and verifies all.
    assert refusal(sociallogin("huggingface", email="ann@example.com")) is None


def test_it_refuses_everyone_without_a_rule_unless_signup_is_open(providers):
    providers.SIGNUP_EMAIL_DOMAINS = []
    providers.SIGNUP_HF_ORGS = []
    assert refusal(sociallogin("corp", email="ann@example.com", email_verified=True)) == "closed"
    providers.SIGNUP_OPEN = True
    assert refusal(sociallogin("corp", email="ann@elsewhere.org")) is None


def test_it_refuses_with_a_page_that_says_why(providers):
    request = RequestFactory().get("/accounts/oidc/corp/login/callback/")
    with pytest.raises(ImmediateHttpResponse) as refused:
        SocialAccountAdapter().pre_social_login(request, sociallogin("corp", email="ann@elsewhere.org"))
    assert refused.value.response.status_code == 403
    assert b"cannot sign in here" in refused.value.response.content
    assert not SocialAccountAdapter().is_open_for_signup(
        request, sociallogin("corp", email="x@elsewhere.org")
    )
    admitted = sociallogin("corp", email="ann@example.com", email_verified=True)
    SocialAccountAdapter().pre_social_login(request, admitted)  # no refusal
    assert SocialAccountAdapter().is_open_for_signup(request, admitted)


def test_it_takes_no_password_sign_ups():
    assert not AccountAdapter().is_open_for_signup(RequestFactory().get("/"))


def test_it_asks_hugging_face_for_memberships_only_when_organisations_are_named():
    def scopes(orgs):
        apps = openid_connect_apps(
            oidc_providers="",
            hf_client_id="id",
            hf_client_secret="secret",
            hf_server_url="https://huggingface.co",
            hf_scopes=["openid", "profile"],
            hf_orgs=orgs,
        )
        assert apps[0]["settings"]["server_url"] == "https://huggingface.co"
        assert apps[0]["settings"]["oauth_pkce_enabled"] is True
        return apps[0]["settings"]["scope"]

    assert scopes([]) == ["openid", "profile"]
    assert scopes(["acme"]) == ["openid", "profile", "read-memberships"]


@pytest.mark.parametrize(
    "value",
    [
        "not json",
        '{"id": "corp"}',
        '[{"id": "corp", "name": "Corp"}]',
        '[{"id": "Corp Inc", "name": "C", "server_url": "u", "client_id": "c", "secret": "s"}]',
        '[{"id": "huggingface", "name": "C", "server_url": "u", "client_id": "c", "secret": "s"}]',
        '[{"id": "c", "name": "C", "server_url": "u", "client_id": "c", "secret": "s", "scope": "openid"}]',
    ],
)
def test_it_refuses_to_start_on_a_bad_provider_list(value):
    with pytest.raises(ImproperlyConfigured, match="OIDC_PROVIDERS"):
        openid_connect_apps(
            oidc_providers=value,
            hf_client_id="",
            hf_client_secret="",
            hf_server_url="",
            hf_scopes=[],
            hf_orgs=[],
        )


# --- Password sign-in ----------------------------------------------------------------------


@pytest.fixture
def people(db):
    users = get_user_model().objects
    return {
        "root": users.create_superuser("root", "root@example.com", PASSWORD),
        "staff": users.create_user("staff", password=PASSWORD, is_staff=True),
        "member": users.create_user("member", password=PASSWORD),
    }


def sign_in(client, username: str, path: str = "/accounts/login/"):
    return client.post(path, {"username": username, "password": PASSWORD})


def signed_in(client) -> str | None:
    response = client.get("/portal/keys/")
    return response.context["user"].get_username() if response.status_code == 200 else None


def test_everyone_with_a_password_signs_in_by_default(client, people, settings):
    assert settings.PASSWORD_LOGIN == "everyone"
    response = sign_in(client, "member")
    assert response.status_code == 302 and response["Location"] == "/portal/"
    assert signed_in(client) == "member"
    page = client.get("/portal/keys/")
    assert b"member" in page.content and b'action="/accounts/logout/"' in page.content


@pytest.mark.parametrize("path", ["/accounts/login/", "/admin/login/"])
def test_superusers_only_refuses_everyone_elses_password(client, people, settings, path):
    settings.PASSWORD_LOGIN = "superusers"
    for name in ("staff", "member"):
        assert sign_in(client, name, path).status_code == 200  # the form again, with its error
        assert signed_in(client) is None
    assert sign_in(client, "root", path).status_code == 302
    assert signed_in(client) == "root"


def test_off_refuses_every_password_and_hides_the_forms(client, people, settings):
    settings.PASSWORD_LOGIN = "off"
    assert sign_in(client, "root").status_code == 403
    assert sign_in(client, "root", "/admin/login/").status_code == 200
    assert signed_in(client) is None
    assert b'type="password"' not in client.get("/accounts/login/").content
    assert b'type="password"' not in client.get("/admin/login/").content


def test_the_sign_in_pages_offer_the_providers(client, providers):
    for path in ("/accounts/login/", "/admin/login/?next=/admin/"):
        page = client.get(path).content.decode()
        assert 'action="/accounts/oidc/huggingface/login/' in page
        assert "Sign in with Hugging Face" in page and "Sign in with Corp" in page
    assert "next=%2Fadmin%2F" in client.get("/admin/login/?next=/admin/").content.decode()


def test_the_portal_asks_to_sign_in(client, db):
    response = client.get("/portal/")
    assert response.status_code == 302 and response["Location"] == "/accounts/login/?next=/portal/"


# --- django-axes ---------------------------------------------------------------------------


def test_it_locks_out_a_username_after_too_many_failures(client, people, settings):
    settings.AXES_FAILURE_LIMIT = 3
    for _ in range(2):
        response = client.post("/accounts/login/", {"username": "root", "password": "wrong"})
        assert response.status_code == 200
    locked = client.post("/accounts/login/", {"username": "root", "password": "wrong"})
    assert locked.status_code == 429
    assert b"Too many failed sign-ins" in locked.content
    # Now even the right password is refused, on the admin's form too.
    assert sign_in(client, "root").status_code == 429
    assert sign_in(client, "root", "/admin/login/").status_code == 429
    assert signed_in(client) is None
    # Another username from the same address is not locked.
    assert sign_in(client, "member").status_code == 302


def test_a_refused_password_counts_as_a_failure(client, people, settings):
    settings.AXES_FAILURE_LIMIT = 2
    settings.PASSWORD_LOGIN = "superusers"
    assert sign_in(client, "staff").status_code == 200
    assert sign_in(client, "staff").status_code == 429


@pytest.mark.django_db(transaction=True)
async def test_it_locks_out_under_asgi_too(anonymous_client, settings):
    # Under ASGI axes' middleware takes its async path, which renders the lockout page apart.
    settings.AXES_FAILURE_LIMIT = 2
    await get_user_model().objects.acreate_user("ann", password=PASSWORD)
    wrong = {"username": "ann", "password": "wrong"}
    assert (await anonymous_client.post("/accounts/login/", wrong)).status_code == 200
    locked = await anonymous_client.post("/accounts/login/", wrong)
    assert locked.status_code == 429 and b"Too many failed sign-ins" in locked.content
    right = await anonymous_client.post("/accounts/login/", {"username": "ann", "password": PASSWORD})
    assert right.status_code == 429


# --- The site's stack, not the API's -------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_the_sign_in_middleware_runs_async_and_on_the_site_only(anonymous_client, settings, caplog):
    settings.DEBUG = True  # Django logs middleware adaptation only in debug mode
    with caplog.at_level(logging.DEBUG, logger="django.request"):
        page = await anonymous_client.get("/accounts/login/")
    assert page.status_code == 200
    assert not [r for r in caplog.records if "adapted for middleware" in r.getMessage()]
    assert {"allauth.account.middleware.AccountMiddleware", "axes.middleware.AxesMiddleware"} <= set(
        settings.MIDDLEWARE
    )
    assert not [path for path in settings.API_MIDDLEWARE if path.startswith(("allauth", "axes"))]


def test_a_hugging_face_sign_in_joins_its_organisations_teams(settings, django_user_model, db):
    from accounts import services, signin
    from accounts.models import TeamMember

    settings.HF_ORG_TEAMS = ["acme:ml", "Acme-Research:research", "acme:no-such-team"]
    ml, research = services.team_create(name="ml"), services.team_create(name="research")
    ann = django_user_model.objects.create_user("ann")
    services.team_member_add(team=research, user=ann, admin=True)
    hugging_face = signin.Claims(provider=signin.HUGGING_FACE_ID, orgs=frozenset({"acme", "acme-research"}))
    assert signin.join_teams(ann, hugging_face) == ["ml"]
    assert signin.join_teams(ann, hugging_face) == []  # once
    roles = dict(TeamMember.objects.filter(user=ann).values_list("team__name", "role"))
    assert roles == {"ml": "member", "research": "admin"}  # a role held already stays
    other = signin.Claims(provider="local", orgs=frozenset({"acme"}))
    bob = django_user_model.objects.create_user("bob")
    assert signin.join_teams(bob, other) == [] and not TeamMember.objects.filter(user=bob).exists()
    assert ml.members.count() == 1


def test_an_invited_address_may_join_whatever_the_rules(providers):
    from accounts import services
    from accounts.models import Team

    team = services.team_create(name="guests")
    services.team_invite(team=team, email="Guest@Elsewhere.org")
    assert refusal(sociallogin("corp", email="guest@elsewhere.org", email_verified=True)) is None
    assert refusal(sociallogin("corp", email="guest@elsewhere.org")) == "not_allowed"  # not verified
    assert refusal(sociallogin("corp", email="other@elsewhere.org", email_verified=True)) == "not_allowed"
    assert Team.objects.count() == 1


def test_signing_in_accepts_the_invitations_of_a_verified_address(client, people):
    from allauth.account.models import EmailAddress

    from accounts import services
    from accounts.models import AuditEntry, TeamMember

    ml, other = services.team_create(name="ml"), services.team_create(name="other")
    services.team_invite(team=ml, email="ann@corp.example", admin=True, actor=people["root"])
    services.team_invite(team=other, email="unverified@corp.example")
    ann = get_user_model().objects.create_user("ann", password=PASSWORD)
    SocialAccount.objects.create(user=ann, provider="corp", uid="ann")
    EmailAddress.objects.create(user=ann, email="ANN@corp.example", verified=True)
    EmailAddress.objects.create(user=ann, email="unverified@corp.example", verified=False)
    sign_in(client, "ann")
    assert signed_in(client) == "ann"
    assert list(TeamMember.objects.filter(user=ann).values_list("team__name", "role")) == [("ml", "admin")]
    assert ml.invitations.get().accepted_by == ann and other.invitations.get().accepted_at is None
    entry = AuditEntry.objects.get(action="member_added", team=ml)
    assert (entry.actor_name, entry.target) == ("root", "user ann")
    client.logout()
    sign_in(client, "ann")  # accepted once
    assert AuditEntry.objects.filter(action="member_added").count() == 1
