"""The audit trail (issue 17): one entry for each key created, revoked or changed, team created or
changed, member added or removed, sign-in and failed sign-in — from the admin, the commands and
the services alike — saying who, what, when and from where, and never a secret."""

import io
import json

import pytest
from django.core.management import call_command

from accounts import keys, services
from accounts.models import ApiKey, AuditEntry, Team


def command(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def trail() -> list[tuple[str, str, str, str]]:
    return [(e.actor_name, e.action, e.target, e.source) for e in AuditEntry.objects.order_by("at", "pk")]


@pytest.mark.django_db
def test_the_commands_leave_a_trail_without_secrets():
    plaintext = command("create_api_key", "bob", "--rpm", "5", "--hf-token", "hf_secret_of_bob").splitlines()[
        -1
    ]
    command("create_team", "ml", "--token-budget", "100")
    command("add_team_member", "ml", "bob", "--admin")
    command("revoke_api_key", plaintext[:12])
    prefix = plaintext[:12]
    assert trail() == [
        ("", "key_created", f"key {prefix} of bob", "manage.py"),
        ("", "team_created", "team ml", "manage.py"),
        ("", "member_added", "user bob", "manage.py"),
        ("", "key_revoked", f"key {prefix} of bob", "manage.py"),
    ]
    assert AuditEntry.objects.get(action="key_created").detail == {"user": "bob", "rpm": "5"}
    everything = json.dumps(list(AuditEntry.objects.values()), default=str)
    assert plaintext not in everything and "hf_secret_of_bob" not in everything
    assert keys.digest(plaintext) not in everything


@pytest.mark.django_db
def test_the_admin_leaves_a_trail_with_the_actor_and_the_address(admin_client, admin_user, django_user_model):
    bob = django_user_model.objects.create_user("bob")
    key, _ = services.api_key_create(user=bob, name="b")
    page = admin_client.get(f"/admin/accounts/apikey/{key.pk}/change/")
    assert page.status_code == 200
    form = {
        "name": "renamed",
        "team": "",
        "hf_token": "",
        "expires_at_0": "",
        "expires_at_1": "",
        "allowed_models": "",
        "rpm": "7",
        "tpm": "",
        "token_budget": "",
        "lifetime_token_budget": "",
        "usd_budget": "",
        "max_parallel": "",
    }
    response = admin_client.post(f"/admin/accounts/apikey/{key.pk}/change/", form, REMOTE_ADDR="203.0.113.9")
    assert response.status_code == 302, response.content.decode()[:2000]
    changed = AuditEntry.objects.get(action="key_changed")
    assert (changed.actor_name, changed.source) == (admin_user.get_username(), "203.0.113.9")
    assert changed.detail == {"name": ["b", "renamed"], "rpm": [None, "7"]}
    admin_client.post(
        "/admin/accounts/apikey/",
        {"action": "revoke_selected", "_selected_action": [key.pk], "index": 0},
        REMOTE_ADDR="203.0.113.9",
    )
    assert AuditEntry.objects.filter(action="key_revoked", actor_name=admin_user.get_username()).count() == 1


@pytest.mark.django_db
def test_team_changes_from_the_admin_are_in_the_trail(admin_client, django_user_model):
    bob = django_user_model.objects.create_user("bob")
    command("create_team", "ml")
    team = Team.objects.get()
    form = {
        "name": "ml",
        "hf_token": "",
        "bill_to": "",
        "allowed_models": "",
        "token_budget": "500",
        "usd_budget": "",
        "member_rpm": "",
        "member_tpm": "",
        "member_token_budget": "",
        "member_usd_budget": "",
        "members-TOTAL_FORMS": "1",
        "members-INITIAL_FORMS": "0",
        "members-MIN_NUM_FORMS": "0",
        "members-MAX_NUM_FORMS": "1000",
        "members-0-user": str(bob.pk),
        "members-0-role": "member",
        "members-0-team": str(team.pk),
    }
    response = admin_client.post(f"/admin/accounts/team/{team.pk}/change/", form)
    assert response.status_code == 302, response.content.decode()[:3000]
    actions = [e.action for e in AuditEntry.objects.exclude(action="signed_in").order_by("at", "pk")]
    assert actions == ["team_created", "team_changed", "member_added"]
    assert AuditEntry.objects.get(action="team_changed").detail == {"token_budget": [None, "500"]}
    services.team_member_remove(team=team, user=bob)
    assert AuditEntry.objects.filter(action="member_removed", team=team).count() == 1


@pytest.mark.django_db
def test_sign_ins_and_failed_ones_are_in_the_trail(client, django_user_model):
    django_user_model.objects.create_user("carol", password="right-password-123", is_staff=True)
    client.post("/admin/login/", {"username": "carol", "password": "wrong"}, REMOTE_ADDR="198.51.100.7")
    client.post("/admin/login/", {"username": "carol", "password": "right-password-123"})
    failed, signed_in = AuditEntry.objects.order_by("at", "pk")
    assert (failed.action, failed.target, failed.detail["address"]) == (
        "sign_in_failed",
        "user carol",
        "198.51.100.7",
    )
    assert (signed_in.action, signed_in.actor_name) == ("signed_in", "carol")
    assert "wrong" not in json.dumps(failed.detail) and "right-password" not in json.dumps(signed_in.detail)


def test_the_trail_is_read_only_in_the_admin(admin_client):
    command("create_team", "ml")
    entry = AuditEntry.objects.get(action="team_created")
    assert admin_client.get("/admin/accounts/auditentry/").status_code == 200
    assert admin_client.get(f"/admin/accounts/auditentry/{entry.pk}/change/").status_code == 200
    assert (
        admin_client.post(f"/admin/accounts/auditentry/{entry.pk}/delete/", {"post": "yes"}).status_code
        == 403
    )
    assert ApiKey.objects.count() == 0 and AuditEntry.objects.filter(pk=entry.pk).exists()


@pytest.mark.django_db
def test_a_users_limits_changed_are_in_the_trail(django_user_model):
    from accounts.models import UserPolicy

    root, alice = (
        django_user_model.objects.create_superuser("root"),
        django_user_model.objects.create_user("alice"),
    )
    policy = services.user_policy_save(policy=UserPolicy(user=alice, rpm=10), actor=root)
    policy.total_usd_budget, policy.rpm = "50.00", 10
    services.user_policy_save(policy=policy, actor=root)
    services.user_policy_save(policy=policy, actor=root)  # nothing changed: no entry
    entries = AuditEntry.objects.filter(action="user_limits_changed").order_by("pk")
    assert [(e.actor_name, e.target) for e in entries] == [("root", "user alice")] * 2
    assert entries[0].detail == {"rpm": [None, "10"]}
    assert entries[1].detail == {"total_usd_budget": [None, "50.00"]}
