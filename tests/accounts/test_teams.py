"""Teams (issue 17): a team key counts against its key's limits, the team's budgets and the
team's caps per member, all in one admission; the router bills the team's organisation; the
commands that make teams. (CI runs this file on Redis too.)"""

import asyncio
import io
import json

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from accounts import keys, runtime, services
from accounts.models import ApiKey, Team, UsageRecord, UserPolicy
from accounts.usage import writer
from tests.accounts.test_admin import text_of
from tests.support.answers import completion, sse_response, standard_stream
from tests.support.factories import make_usage

MESSAGES = [{"role": "user", "content": "hi"}]


def command(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.fixture
def team(usage_db):
    command("create_team", "ml", "--token-budget", "100", "--bill-to", "ml-org")
    command("add_team_member", "ml", "alice", "--admin")
    command("add_team_member", "ml", "bob")
    return Team.objects.get(name="ml")


def team_key(username: str, *flags: str) -> str:
    return command("create_api_key", username, "--team", "ml", *flags).splitlines()[-1]


async def chat(client, key, **fields):
    return await client.post(
        "/v1/chat/completions",
        {"messages": MESSAGES, **fields},
        content_type="application/json",
        headers={"authorization": f"Bearer {key}"},
    )


def test_the_commands_make_a_team_its_members_and_their_keys(team):
    assert (team.token_budget, team.bill_to) == (100, "ml-org")
    roles = dict(team.members.values_list("user__username", "role"))
    assert roles == {"alice": "admin", "bob": "member"}
    key = ApiKey.objects.get(digest=keys.digest(team_key("bob")))
    assert key.team == team
    get_user_model().objects.create_user("carol")
    with pytest.raises(CommandError, match="not a member of the team"):
        team_key("carol")
    with pytest.raises(CommandError, match="No team is named"):
        command("create_api_key", "bob", "--team", "nope")


async def test_members_share_the_teams_budget_and_a_refusal_names_the_team(team, anonymous_client, hf):
    route = hf.post("/chat/completions").respond(200, json=completion(usage=(5, 5)))
    alice, bob = await sync_to_async(team_key)("alice"), await sync_to_async(team_key)("bob")
    # Its own records count from the database: 80 of the team's 100 tokens are used.
    alices = await ApiKey.objects.aget(digest=keys.digest(alice))
    await sync_to_async(make_usage)(alices, "m", tokens=(40, 40), team=team)
    assert (await chat(anonymous_client, bob, max_tokens=3)).status_code == 200
    await runtime.background()
    refused = await chat(anonymous_client, alice, max_tokens=50)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "insufficient_quota"
    assert refused.json()["error"]["message"].startswith("Team ml: Monthly token budget of 100: 10 left")
    assert route.call_count == 1


async def test_the_router_bills_the_teams_organisation_and_the_record_says_so(team, anonymous_client, hf):
    route = hf.post("/chat/completions").respond(200, json=completion())
    key = await sync_to_async(team_key)("bob")
    plain = await sync_to_async(services.api_key_create)(
        user=await get_user_model().objects.aget(username="bob")
    )
    assert (await chat(anonymous_client, key, max_tokens=5)).status_code == 200
    assert (await chat(anonymous_client, plain[1])).status_code == 200
    assert [call.request.headers.get("x-hf-bill-to") for call in route.calls] == ["ml-org", None]
    assert await writer.flush(10)
    records = [(r.team_id, r.bill_to) async for r in UsageRecord.objects.order_by("created_at")]
    assert records == [(team.pk, "ml-org"), (None, "")]


async def test_each_member_has_the_teams_cap_across_their_keys(team, anonymous_client, hf):
    hf.post("/chat/completions").respond(200, json=completion())
    team.member_rpm, team.token_budget = 2, None
    await sync_to_async(services.team_update)(team=team)
    first, second = await sync_to_async(team_key)("bob"), await sync_to_async(team_key)("bob")
    alice = await sync_to_async(team_key)("alice")
    statuses = [(await chat(anonymous_client, key)).status_code for key in (first, second, first, alice)]
    assert statuses == [200, 200, 429, 200]  # bob's third is over his cap; alice has her own
    refused = await chat(anonymous_client, second)
    assert (
        "Team ml (each member): Rate limit reached: 2 requests per minute."
        in refused.json()["error"]["message"]
    )


async def test_a_burst_cannot_overshoot_a_team_budget(team, anonymous_client, hf):
    def answer(request):
        return sse_response(standard_stream(usage=(5, 5)), delay=0.002)[0]

    hf.post("/chat/completions").mock(side_effect=answer)
    members = [await sync_to_async(team_key)(name) for name in ("alice", "bob", "alice", "bob")]
    in_flight = asyncio.Semaphore(6)

    async def one(i: int) -> int:
        async with in_flight:
            response = await chat(anonymous_client, members[i % 4], stream=True, max_tokens=10)
            if response.status_code == 200:
                b"".join([part async for part in response.streaming_content])
            await runtime.background()
            return response.status_code

    statuses = await asyncio.gather(*(one(i) for i in range(40)))
    assert set(statuses) == {200, 429}
    assert statuses.count(200) * 10 <= 100  # every stream used 10 tokens: the budget holds
    assert await writer.flush(10)
    used = sum([r.total_tokens or 0 async for r in UsageRecord.objects.filter(team=team)])
    assert used <= 100


async def test_a_team_key_calls_with_the_teams_token(team, anonymous_client, hf):
    route = hf.post("/chat/completions").respond(200, json=completion())
    shared = await sync_to_async(services.hf_token_create)(name="ml-shared", value="hf_team_shared_token")
    team.hf_token = shared
    await sync_to_async(services.team_update)(team=team)
    key = await sync_to_async(team_key)("bob")
    assert (await chat(anonymous_client, key, max_tokens=5)).status_code == 200
    assert route.calls.last.request.headers["authorization"] == "Bearer hf_team_shared_token"
    body = json.loads(route.calls.last.request.content)
    assert body["max_tokens"] == 5


def test_removing_a_member_revokes_their_keys_on_the_team(team):
    key = ApiKey.objects.get(digest=keys.digest(team_key("bob")))
    services.team_member_remove(team=team, user=key.user)
    key.refresh_from_db()
    assert key.status == "revoked"
    assert not team.members.filter(user=key.user).exists()


def test_team_reports_for_its_admins_and_staff_only(team, django_user_model):
    from django.contrib.auth.models import Permission
    from rest_framework.test import APIClient

    def client_for(key: str) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
        return client

    bobs = ApiKey.objects.get(digest=keys.digest(team_key("bob")))
    make_usage(bobs, "m1", tokens=(3, 4), team=team)
    make_usage(bobs, "m1", tokens=(1, 1))  # not on the team's key: not the team's
    command("create_team", "other")
    command("add_team_member", "other", "dave", "--admin")
    alice, bob = team_key("alice"), team_key("bob")
    dave = command("create_api_key", "dave").splitlines()[-1]
    staff = django_user_model.objects.create_user("sam", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_usagerecord"))
    sams = services.api_key_create(user=staff)[1]

    answer = client_for(alice).get("/api/usage?team=ml")  # a team admin
    assert answer.status_code == 200
    assert [(r["user"], r["model"], r["total_tokens"]) for r in answer.json()["usage"]] == [("bob", "m1", 7)]
    assert client_for(sams).get("/api/usage?team=ml").json()["usage"] == answer.json()["usage"]
    assert client_for(bob).get("/api/usage?team=ml").status_code == 403  # a member, not its admin
    assert client_for(dave).get("/api/usage?team=ml").status_code == 403  # another team's admin
    assert client_for(dave).get("/api/usage?team=nope").status_code == 403  # says nothing of names
    assert client_for(sams).get("/api/usage?team=nope").status_code == 404

    report = json.loads(command("usage_report", "--team", "ml", "--format", "json"))
    assert [(r["user"], r["total_tokens"]) for r in report] == [("bob", 7)]
    with pytest.raises(CommandError, match="No team is named"):
        command("usage_report", "--team", "nope")


def test_the_admin_shows_teams_with_their_members(team, admin_client):
    assert admin_client.get("/admin/accounts/team/").status_code == 200
    page = admin_client.get(f"/admin/accounts/team/{team.pk}/change/")
    assert page.status_code == 200
    assert "Caps per member" in page.content.decode() and "bob" in page.content.decode()
    assert admin_client.get("/admin/accounts/team/add/").status_code == 200
    key = ApiKey.objects.get(digest=keys.digest(team_key("bob")))
    assert admin_client.get(f"/admin/accounts/apikey/{key.pk}/change/").status_code == 200


def test_the_usage_list_filters_by_team_and_exports_it(team, admin_client):
    import csv

    bobs = ApiKey.objects.get(digest=keys.digest(team_key("bob")))
    make_usage(bobs, "on-the-team", team=team)
    make_usage(bobs, "not")
    listing = admin_client.get(f"/admin/accounts/usagerecord/?team__id__exact={team.pk}")
    assert listing.status_code == 200 and "on-the-team" in listing.content.decode()
    response = admin_client.get(f"/admin/accounts/usagerecord/export/?team__id__exact={team.pk}")
    rows = list(csv.DictReader(io.StringIO(text_of(response))))
    assert [(r["model_requested"], r["team"]) for r in rows] == [("on-the-team", "ml")]


def test_the_dashboard_shows_one_teams_usage(team, admin_client):
    bobs = ApiKey.objects.get(digest=keys.digest(team_key("bob")))
    make_usage(bobs, "team-model", tokens=(3, 4), team=team)
    make_usage(bobs, "other-model", tokens=(100, 100))
    everything = admin_client.get("/admin/accounts/usagerecord/dashboard/").context["dashboard"]
    page = admin_client.get(f"/admin/accounts/usagerecord/dashboard/?team={team.pk}")
    mine = page.context["dashboard"]
    assert (everything.requests, everything.tokens) == (2, 207)
    assert (mine.requests, mine.tokens) == (1, 7)
    assert [row["model_requested"] for row in mine.top_models] == ["team-model"]
    assert f'<option value="{team.pk}" selected>ml</option>' in page.content.decode()


def set_user_totals(username: str, **totals) -> None:
    user = get_user_model().objects.get(username=username)
    policy, _ = UserPolicy.objects.get_or_create(user=user)
    for name, value in totals.items():
        setattr(policy, name, value)
    services.user_policy_save(policy=policy)


async def test_a_users_own_limits_span_all_their_keys(team, anonymous_client, hf):
    hf.post("/chat/completions").respond(200, json=completion())
    team.token_budget = None
    await sync_to_async(services.team_update)(team=team)
    await sync_to_async(set_user_totals)("bob", total_rpm=2)
    on_team = await sync_to_async(team_key)("bob")
    own = (await sync_to_async(command)("create_api_key", "bob")).splitlines()[-1]
    alice = await sync_to_async(team_key)("alice")
    statuses = [(await chat(anonymous_client, key)).status_code for key in (on_team, own, on_team, alice)]
    assert statuses == [200, 200, 429, 200]  # bob's keys share his two; alice has no such limit
    refused = await chat(anonymous_client, own)
    assert refused.status_code == 429
    assert refused.json()["error"]["message"].startswith(
        "User bob (all keys): Rate limit reached: 2 requests per minute."
    )


async def test_a_burst_cannot_overshoot_a_users_budget_across_keys(team, anonymous_client, hf):
    def answer(request):
        return sse_response(standard_stream(usage=(5, 5)), delay=0.002)[0]

    hf.post("/chat/completions").mock(side_effect=answer)
    team.token_budget = None
    await sync_to_async(services.team_update)(team=team)
    await sync_to_async(set_user_totals)("bob", total_token_budget=60)
    bobs = [await sync_to_async(team_key)("bob")] + [
        (await sync_to_async(command)("create_api_key", "bob")).splitlines()[-1] for _ in range(2)
    ]
    # Records of an earlier key count from the database: 20 of bob's 60 tokens are used.
    earlier = await ApiKey.objects.filter(user__username="bob").alast()
    await sync_to_async(make_usage)(earlier, "m", tokens=(10, 10))
    in_flight = asyncio.Semaphore(6)

    async def one(i: int) -> int:
        async with in_flight:
            response = await chat(anonymous_client, bobs[i % 3], stream=True, max_tokens=10)
            if response.status_code == 200:
                b"".join([part async for part in response.streaming_content])
            await runtime.background()
            return response.status_code

    statuses = await asyncio.gather(*(one(i) for i in range(30)))
    assert set(statuses) == {200, 429}
    assert 20 + statuses.count(200) * 10 <= 60
    assert await writer.flush(10)
    used = sum([r.total_tokens or 0 async for r in UsageRecord.objects.filter(user__username="bob")])
    assert used <= 60
