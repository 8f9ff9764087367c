"""The management commands' interface: scripts depend on it."""

import io
import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from accounts import keys
from accounts.models import ApiKey, HuggingFaceToken
from tests.support.factories import make_usage


def run(*args, stdin: str = "") -> str:
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdin", io.StringIO(stdin))
        call_command(*args, stdout=out, stderr=err)
    return out.getvalue()


def test_create_api_key_creates_the_user_and_prints_the_key_last(usage_db, django_user_model):
    output = run("create_api_key", "carol", "--name", "laptop")
    key = output.splitlines()[-1]
    assert keys.looks_like_a_key(key)
    stored = ApiKey.objects.get(digest=keys.digest(key))
    assert (stored.user.username, stored.name, stored.hf_token) == ("carol", "laptop", None)
    assert django_user_model.objects.filter(username="carol").count() == 1
    run("create_api_key", "carol")  # an existing user gets another key
    assert ApiKey.objects.filter(user__username="carol").count() == 2


def test_create_api_key_with_a_personal_token(usage_db):
    key = run("create_api_key", "dave", "--hf-token", "hf_davedavedave1").splitlines()[-1]
    stored = ApiKey.objects.select_related("hf_token").get(digest=keys.digest(key))
    assert stored.hf_token.owner.username == "dave"
    assert stored.hf_token.value() == "hf_davedavedave1"


def test_create_api_key_reads_the_token_from_stdin(usage_db):
    key = run("create_api_key", "erin", "--hf-token", "-", stdin="hf_erinerinerin\n").splitlines()[-1]
    assert ApiKey.objects.get(digest=keys.digest(key)).hf_token.value() == "hf_erinerinerin"


def test_create_api_key_with_a_shared_token(usage_db):
    run("create_api_key", "frank", "--hf-token", "hf_frankfrankfrank")
    HuggingFaceToken.objects.filter(name="frank").update(owner=None)
    key = run("create_api_key", "gina", "--hf-token-name", "frank").splitlines()[-1]
    assert ApiKey.objects.get(digest=keys.digest(key)).hf_token.name == "frank"
    with pytest.raises(CommandError):
        run("create_api_key", "gina", "--hf-token-name", "nobody")


@pytest.mark.parametrize("username", ["<b>evil</b>", "a b", "x" * 151, "nul\x00"])
def test_create_api_key_refuses_a_username_the_user_model_refuses(usage_db, django_user_model, username):
    with pytest.raises(CommandError):
        run("create_api_key", username)
    assert not django_user_model.objects.exists()


def test_create_api_key_refuses_both_token_options(usage_db):
    with pytest.raises(CommandError):
        run("create_api_key", "hank", "--hf-token", "hf_x1234567", "--hf-token-name", "y")


def test_revoke_api_key_by_key_or_prefix(usage_db):
    key = run("create_api_key", "ivan").splitlines()[-1]
    assert "is revoked" in run("revoke_api_key", key[:12])
    assert ApiKey.objects.get(digest=keys.digest(key)).status == "revoked"
    assert "already revoked" in run("revoke_api_key", key)
    with pytest.raises(CommandError):
        run("revoke_api_key", "hfp_nothingmatches")


@pytest.fixture
def usage_rows(usage_db):
    alice = ApiKey.objects.get(digest=keys.digest(run("create_api_key", "alice").splitlines()[-1]))
    bob = ApiKey.objects.get(digest=keys.digest(run("create_api_key", "bob").splitlines()[-1]))
    make_usage(alice, "m1", cost=Decimal("0.00012345"))
    make_usage(alice, "m1", outcome="upstream_error", cost=Decimal("0.1"))
    make_usage(alice, "m2", tokens=(1, 1))
    # Answered by the proxy itself: a refusal is counted as one, a bad request as neither.
    make_usage(alice, "m2", outcome="refused", tokens=(0, 0))
    make_usage(alice, "m2", outcome="bad_request", tokens=(0, 0))
    make_usage(bob, "m1", tokens=(100, 50), cost=Decimal("1.5"))
    make_usage(bob, "m1", when=datetime(2020, 1, 1, tzinfo=UTC))


def test_usage_report_as_json(usage_rows):
    rows = json.loads(run("usage_report", "--format", "json", "--since", "2021-01-01"))
    assert rows == [
        {
            "user": "alice",
            "model": "m1",
            "requests": 2,
            "prompt_tokens": 20,
            "completion_tokens": 10,
            "total_tokens": 30,
            "cost_usd": "0.10012345",
            "errors": 1,
            "refused": 0,
        },
        {
            "user": "alice",
            "model": "m2",
            "requests": 3,
            "prompt_tokens": 1,
            "completion_tokens": 1,
            "total_tokens": 2,
            "cost_usd": "0.00000000",
            "errors": 0,
            "refused": 1,
        },
        {
            "user": "bob",
            "model": "m1",
            "requests": 1,
            "prompt_tokens": 100,
            "completion_tokens": 50,
            "total_tokens": 150,
            "cost_usd": "1.50000000",
            "errors": 0,
            "refused": 0,
        },
    ]
    assert [
        row["requests"] for row in json.loads(run("usage_report", "--format", "json", "--user", "bob"))
    ] == [2]


def test_usage_report_as_a_table(usage_rows):
    lines = run("usage_report", "--user", "alice").splitlines()
    assert lines[0].split() == [
        "user",
        "model",
        "requests",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "cost_usd",
        "errors",
        "refused",
    ]
    assert lines[2].split() == ["alice", "m1", "2", "20", "10", "30", "0.10012345", "1", "0"]


def test_usage_report_refuses_bad_arguments(usage_db):
    with pytest.raises(CommandError):
        run("usage_report", "--since", "yesterday")
    with pytest.raises(CommandError):
        run("usage_report", "--user", "nobody")


def test_reencrypt_tokens(usage_db):
    run("create_api_key", "kim", "--hf-token", "hf_kimkimkimkim")
    assert "Re-encrypted 1" in run("reencrypt_tokens")
    assert HuggingFaceToken.objects.get(name="kim").value() == "hf_kimkimkimkim"
