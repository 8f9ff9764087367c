"""The portal (issue 17): members make and revoke their own keys (shown once), see their own
usage and only theirs; team admins see and manage their team's, and nobody else's; in English
and in Chinese, by the browser's language."""

import csv
import io
import re
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

from accounts import keys, services
from accounts.models import ApiKey, AuditEntry, Team, TeamMember
from tests.accounts.test_admin import text_of
from tests.support.factories import make_usage

KEY_PATTERN = re.compile(r"hfp_[A-Za-z0-9_-]{40,}")


@pytest.fixture
def people(db, django_user_model):
    """alice admins team ml, bob is its member; dave admins team other; sam is staff; root is a
    superuser."""
    made = {name: django_user_model.objects.create_user(name) for name in ("alice", "bob", "dave", "sam")}
    made["sam"].is_staff = True
    made["sam"].save()
    made["root"] = django_user_model.objects.create_superuser("root")
    ml, other = services.team_create(name="ml", token_budget=1000), services.team_create(name="other")
    services.team_member_add(team=ml, user=made["alice"], admin=True)
    services.team_member_add(team=ml, user=made["bob"])
    services.team_member_add(team=other, user=made["dave"], admin=True)
    return made


def signed_in(client, user):
    client.force_login(user)
    return client


def test_a_member_creates_a_key_shown_once_and_a_reload_makes_no_other(client, people):
    client = signed_in(client, people["bob"])
    ml = Team.objects.get(name="ml")
    response = client.post("/portal/keys/", {"name": "laptop", "team": ml.pk, "expires_in_days": "30"})
    assert response.status_code == 302
    shown = client.get(response["location"])
    plaintext = KEY_PATTERN.search(shown.content.decode()).group()
    key = ApiKey.objects.get(digest=keys.digest(plaintext))
    assert (key.user, key.team, key.name) == (people["bob"], ml, "laptop") and key.expires_at
    page = shown.content.decode()
    for snippet in ("snippet-curl", "snippet-python", "snippet-codex", "snippet-claude"):
        assert f'id="{snippet}"' in page
    again = client.get(response["location"])  # a reload
    assert (
        not KEY_PATTERN.search(again.content.decode()) and 'id="key-shown-already"' in again.content.decode()
    )
    assert ApiKey.objects.count() == 1
    assert AuditEntry.objects.filter(action="key_created", actor_name="bob").count() == 1


def test_a_member_may_put_a_key_only_on_their_own_teams(client, people):
    other = Team.objects.get(name="other")
    response = signed_in(client, people["bob"]).post("/portal/keys/", {"team": other.pk})
    assert response.status_code == 200 and "Select a valid choice" in response.content.decode()
    assert ApiKey.objects.count() == 0


def test_a_members_own_caps_stay_within_the_teams_cap_per_member(client, people):
    ml = Team.objects.get(name="ml")
    ml.member_rpm = 10
    services.team_update(team=ml)
    client = signed_in(client, people["bob"])
    refused = client.post("/portal/keys/", {"team": ml.pk, "rpm": "20"})
    assert (
        refused.status_code == 200
        and "At most 10: the team&#x27;s cap per member." in refused.content.decode()
    )
    assert ApiKey.objects.count() == 0
    assert client.post("/portal/keys/", {"team": ml.pk, "rpm": "5", "token_budget": "100"}).status_code == 302
    assert ApiKey.objects.values_list("rpm", "token_budget").get() == (5, 100)


def test_a_member_sees_and_revokes_only_their_own_keys(client, people):
    bobs, _ = services.api_key_create(user=people["bob"], name="bob's")
    alices, _ = services.api_key_create(user=people["alice"], name="alice's")
    page = signed_in(client, people["bob"]).get("/portal/keys/").content.decode()
    assert bobs.prefix in page and alices.prefix not in page
    assert client.post(f"/portal/keys/{alices.pk}/revoke/").status_code == 404
    assert client.post(f"/portal/keys/{bobs.pk}/revoke/").status_code == 302
    alices.refresh_from_db(), bobs.refresh_from_db()
    assert (alices.status, bobs.status) == ("active", "revoked")


def test_my_usage_is_mine_alone_and_downloads_as_csv(client, people):
    bobs, _ = services.api_key_create(user=people["bob"])
    alices, _ = services.api_key_create(user=people["alice"])
    make_usage(bobs, "bobs-model", tokens=(3, 4))
    make_usage(alices, "alices-model")
    page = signed_in(client, people["bob"]).get("/portal/usage/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "bobs-model" in html and "alices-model" not in html
    assert page.context["totals"]["tokens"] == 7
    rows = list(csv.DictReader(io.StringIO(text_of(client.get("/portal/usage/?format=csv")))))
    assert [row["model_requested"] for row in rows] == ["bobs-model"]


@pytest.mark.parametrize(
    "who, sees", [("alice", 200), ("bob", 404), ("dave", 404), ("sam", 404), ("root", 404)]
)
def test_only_its_admins_see_a_teams_page(client, people, who, sees):
    ml = Team.objects.get(name="ml")
    assert signed_in(client, people[who]).get(f"/portal/teams/{ml.pk}/").status_code == sees


def test_a_team_admin_sees_the_teams_usage_adds_members_and_manages_their_keys(
    client, people, django_user_model
):
    ml = Team.objects.get(name="ml")
    bobs, _ = services.api_key_create(user=people["bob"], team=ml)
    elsewhere, _ = services.api_key_create(user=people["bob"])  # not on the team
    make_usage(bobs, "team-model", tokens=(100, 100), team=ml)
    make_usage(elsewhere, "private-model")
    client = signed_in(client, people["alice"])
    page = client.get(f"/portal/teams/{ml.pk}/")
    html = page.content.decode()
    assert "team-model" in html and "private-model" not in html
    assert bobs.prefix in html and elsewhere.prefix not in html
    assert page.context["budget"][0]["percent"] == 20
    django_user_model.objects.create_user("carol")
    client.post(f"/portal/teams/{ml.pk}/", {"add_member": "carol", "role": "member"})
    assert TeamMember.objects.filter(team=ml, user__username="carol").exists()
    client.post(f"/portal/teams/{ml.pk}/", {"cap_key": bobs.pk, "rpm": "30", "token_budget": ""})
    bobs.refresh_from_db()
    assert bobs.rpm == 30
    assert client.post(f"/portal/keys/{bobs.pk}/revoke/").status_code == 302
    bobs.refresh_from_db()
    assert bobs.status == "revoked"
    # A key of the member that is not on the team is not the team admin's to revoke.
    assert client.post(f"/portal/keys/{elsewhere.pk}/revoke/").status_code == 404
    actions = set(AuditEntry.objects.filter(actor_name="alice").values_list("action", flat=True))
    assert {"member_added", "key_changed", "key_revoked"} <= actions
    activity = client.get(f"/portal/teams/{ml.pk}/").content.decode()  # the team's trail, for its admin
    assert 'data-action="key_revoked"' in activity and 'data-action="member_added"' in activity


def test_another_teams_admin_cannot_touch_its_keys(client, people):
    ml = Team.objects.get(name="ml")
    bobs, _ = services.api_key_create(user=people["bob"], team=ml)
    client = signed_in(client, people["dave"])
    assert client.post(f"/portal/keys/{bobs.pk}/revoke/").status_code == 404
    assert client.post(f"/portal/teams/{ml.pk}/", {"cap_key": bobs.pk, "rpm": "1"}).status_code == 404
    bobs.refresh_from_db()
    assert (bobs.status, bobs.rpm) == ("active", None)


def test_the_portal_wants_a_sign_in(client, db):
    response = client.get("/portal/keys/")
    assert response.status_code == 302 and "login" in response["location"]


def test_the_portal_speaks_the_browsers_language(client, people):
    client = signed_in(client, people["bob"])
    chinese = client.get("/portal/keys/", headers={"accept-language": "zh-CN,zh;q=0.9"})
    assert "我的密钥" in chinese.content.decode() and chinese["Content-Language"] == "zh-hans"
    english = client.get("/portal/keys/", headers={"accept-language": "en-US"})
    assert "My keys" in english.content.decode() and "我的密钥" not in english.content.decode()


def test_the_translations_are_compiled(tmp_path):
    """locale/'s .mo is what its .po says (compilemessages was run after the last change)."""
    if not shutil.which("msgfmt"):
        pytest.skip("gettext's msgfmt is not installed")
    folder = Path(__file__).resolve().parents[2] / "locale" / "zh_Hans" / "LC_MESSAGES"
    compiled = tmp_path / "django.mo"
    subprocess.run(["msgfmt", "-o", str(compiled), str(folder / "django.po")], check=True)
    assert compiled.read_bytes() == (folder / "django.mo").read_bytes()


def test_a_team_admin_invites_by_email_and_the_invitation_is_sent(client, people, settings):
    from django.core import mail

    settings.EMAIL_URL = "smtp://localhost"  # email on (pytest-django keeps the locmem backend)
    ml = Team.objects.get(name="ml")
    client = signed_in(client, people["alice"])
    client.post(f"/portal/teams/{ml.pk}/", {"add_member": "Carol@Corp.example", "role": "admin"})
    invitation = ml.invitations.get()
    assert (invitation.email, invitation.role, invitation.invited_by) == (
        "carol@corp.example",
        "admin",
        people["alice"],
    )
    [message] = mail.outbox
    assert message.to == ["carol@corp.example"] and "http://testserver/accounts/login/" in message.body
    page = client.get(f"/portal/teams/{ml.pk}/").content.decode()
    assert 'data-email="carol@corp.example"' in page
    assert AuditEntry.objects.filter(action="member_invited", team=ml, target="carol@corp.example").exists()
    client.post(f"/portal/teams/{ml.pk}/", {"add_member": "not-a-user", "role": "member"})
    client.post(f"/portal/teams/{ml.pk}/", {"cancel_invitation": invitation.pk})
    assert not ml.invitations.exists()
    assert AuditEntry.objects.filter(action="invitation_cancelled", team=ml).exists()
    # Another team's admin cannot cancel this team's invitations.
    again = services.team_invite(team=ml, email="carol@corp.example")
    dave = signed_in(client, people["dave"])
    assert dave.post(f"/portal/teams/{ml.pk}/", {"cancel_invitation": again.pk}).status_code == 404
    assert ml.invitations.count() == 1


def test_a_team_admin_changes_roles_and_removes_members_but_not_themselves(client, people):
    ml = Team.objects.get(name="ml")
    bobs, _ = services.api_key_create(user=people["bob"], team=ml)
    client = signed_in(client, people["alice"])
    client.post(f"/portal/teams/{ml.pk}/", {"set_role": people["bob"].pk, "role": "admin"})
    assert TeamMember.objects.get(team=ml, user=people["bob"]).role == "admin"
    client.post(f"/portal/teams/{ml.pk}/", {"set_role": people["alice"].pk, "role": "member"})
    client.post(f"/portal/teams/{ml.pk}/", {"remove_member": people["alice"].pk})
    assert TeamMember.objects.get(team=ml, user=people["alice"]).role == "admin"
    client.post(f"/portal/teams/{ml.pk}/", {"remove_member": people["bob"].pk})
    assert not TeamMember.objects.filter(team=ml, user=people["bob"]).exists()
    bobs.refresh_from_db()
    assert bobs.status == "revoked"
    assert AuditEntry.objects.filter(action="member_removed", actor_name="alice").count() == 1
    # dave (another team's admin) cannot remove alice from ml.
    dave = signed_in(client, people["dave"])
    assert dave.post(f"/portal/teams/{ml.pk}/", {"remove_member": people["alice"].pk}).status_code == 404


def test_every_cap_of_a_key_stays_within_the_teams_cap_per_member(client, people):
    ml = Team.objects.get(name="ml")
    ml.member_tpm, ml.member_usd_budget = 1000, "5.00"
    services.team_update(team=ml)
    client = signed_in(client, people["bob"])
    refused = client.post("/portal/keys/", {"team": ml.pk, "tpm": "2000", "usd_budget": "9.50"})
    assert refused.content.decode().count("the team&#x27;s cap per member") == 2
    fields = {"team": ml.pk, "tpm": "500", "usd_budget": "2.50", "max_parallel": "3"}
    assert client.post("/portal/keys/", fields).status_code == 302
    key = ApiKey.objects.get()
    assert (key.tpm, str(key.usd_budget), key.max_parallel) == (500, "2.50", 3)
    # The team admin's caps on it are bounded the same way.
    alice = signed_in(client, people["alice"])
    alice.post(f"/portal/teams/{ml.pk}/", {"cap_key": key.pk, "tpm": "5000", "usd_budget": "1"})
    key.refresh_from_db()
    assert key.tpm == 500  # refused: over the member cap
    alice.post(f"/portal/teams/{ml.pk}/", {"cap_key": key.pk, "tpm": "800", "max_parallel": "2"})
    key.refresh_from_db()
    assert (key.tpm, key.usd_budget, key.max_parallel) == (800, None, 2)


def test_my_keys_shows_my_own_caps_on_all_my_keys_with_this_months_use(client, people):
    from accounts.models import UserPolicy

    services.user_policy_save(policy=UserPolicy(user=people["bob"], total_rpm=30, total_usd_budget="4.00"))
    first, _ = services.api_key_create(user=people["bob"])
    second, _ = services.api_key_create(user=people["bob"])
    make_usage(first, "m", cost="1.00")
    make_usage(second, "m", cost="2.00")
    make_usage(services.api_key_create(user=people["alice"])[0], "m", cost="9.00")  # not bob's
    page = signed_in(client, people["bob"]).get("/portal/keys/")
    assert [(row["limit"], row["used"], row["percent"]) for row in page.context["totals"]] == [
        (30, None, None),
        (Decimal("4.00"), Decimal("3.00"), 75),
    ]
    assert "$3.00 / $4.00 (75 %)" in page.content.decode()
    assert signed_in(client, people["alice"]).get("/portal/keys/").context["totals"] == []
