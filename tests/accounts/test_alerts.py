"""Alerts (issue 17): a budget crossing 80 % and 100 % alerts its owner and the team admins once a
threshold a month, by email (a real SMTP server on localhost) and webhook (a local receiver);
a failed delivery is tried again later, never sent twice; a refused Hugging Face token alerts
its owner and the staff once."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from django.core import mail
from django.utils import timezone

from accounts import alerts, services
from accounts.models import REJECTED_TOKEN, AlertSent, Team, TeamMember, UserPolicy
from tests.support.factories import make_usage
from tests.support.processes import free_port


class Receiver(BaseHTTPRequestHandler):
    received: list[dict] = []
    failures = 0  # answer 500 this many times first

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if Receiver.failures:
            Receiver.failures -= 1
            self.send_response(500)
        else:
            Receiver.received.append(body)
            self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook(settings):
    server = HTTPServer(("127.0.0.1", free_port()), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Receiver.received, Receiver.failures = [], 0
    settings.ALERT_WEBHOOK_URL = f"http://127.0.0.1:{server.server_port}/hook"
    settings.EMAIL_URL = "smtp://localhost"  # email on (pytest-django keeps the locmem backend)
    yield Receiver
    server.shutdown()


@pytest.fixture
def alice(django_user_model, db):
    return django_user_model.objects.create_user("alice", email="alice@example.com")


def test_a_key_budget_alerts_once_at_each_threshold(alice, webhook):
    key, _ = services.api_key_create(user=alice, token_budget=100)
    make_usage(key, "m", tokens=(40, 45))
    assert alerts.check() == 1
    assert alerts.check() == 0  # never twice for one crossing
    [message] = mail.outbox
    assert message.to == ["alice@example.com"]
    assert "has used 80 % of its monthly budget (85 tokens of 100 tokens)" in message.body
    assert [hook["text"] for hook in webhook.received] == [message.body]
    make_usage(key, "m", tokens=(10, 10))
    assert alerts.check() == 1
    assert "100 %" in mail.outbox[-1].body and len(webhook.received) == 2


def test_a_users_budget_on_all_their_keys_alerts_them(alice, webhook):
    services.user_policy_save(policy=UserPolicy(user=alice, total_token_budget=100))
    first, _ = services.api_key_create(user=alice)
    second, _ = services.api_key_create(user=alice)
    make_usage(first, "m", tokens=(20, 20))
    assert alerts.check() == 0
    make_usage(second, "m", tokens=(20, 25))  # 85 of 100 over the two keys
    assert alerts.check() == 1
    [message] = mail.outbox
    assert message.to == ["alice@example.com"]
    assert "alice (all keys) has used 80 % of its monthly budget (85 tokens of 100 tokens)" in message.body


def test_a_members_cap_in_a_team_alerts_the_member_and_the_team_admins(alice, webhook, django_user_model):
    bob = django_user_model.objects.create_user("bob", email="bob@example.com")
    team = services.team_create(name="ml", member_usd_budget="2.00")
    services.team_member_add(team=team, user=alice, admin=True)
    services.team_member_add(team=team, user=bob)
    key, _ = services.api_key_create(user=bob, team=team)
    own, _ = services.api_key_create(user=bob)
    make_usage(own, "m", cost="5.00")  # not on the team: not under its cap
    make_usage(key, "m", cost="1.70", team=team)
    assert alerts.check() == 1
    [message] = mail.outbox
    assert sorted(message.to) == ["alice@example.com", "bob@example.com"]
    assert "bob in team ml has used 80 % of its monthly budget ($1.70 of $2.00)" in message.body
    make_usage(key, "m", cost="0.30", team=team)
    assert alerts.check() == 1 and "100 %" in mail.outbox[-1].body
    assert alerts.check() == 0


def test_a_team_budget_alerts_its_admins(alice, webhook, django_user_model):
    bob = django_user_model.objects.create_user("bob", email="bob@example.com")
    team = services.team_create(name="ml", usd_budget="1.00")
    services.team_member_add(team=team, user=alice, admin=True)
    services.team_member_add(team=team, user=bob)
    key, _ = services.api_key_create(user=bob, team=team)
    make_usage(key, "m", cost="0.90", team=team)
    assert alerts.check() == 1
    [message] = mail.outbox
    assert message.to == ["alice@example.com"]  # the team admins
    assert "team ml has used 80 % of its monthly budget ($0.90 of $1.00)" in message.body
    assert TeamMember.objects.count() == 2 and Team.objects.count() == 1


def test_a_failed_delivery_is_tried_again_later_and_sent_once(alice, webhook, settings):
    key, _ = services.api_key_create(user=alice, token_budget=10)
    make_usage(key, "m", tokens=(4, 4))
    webhook.failures = 1
    assert alerts.check() == 0
    assert "500" in AlertSent.objects.get().last_error
    assert alerts.check() == 0  # claimed until ALERT_RETRY_SECONDS
    later = timezone.now() + timedelta(seconds=settings.ALERT_RETRY_SECONDS + 1)
    assert alerts.check(now=later) == 1
    assert alerts.check(now=later) == 0
    assert len(webhook.received) == 1 and AlertSent.objects.get().sent_at is not None


def test_email_goes_through_a_real_smtp_server(alice, settings):
    from aiosmtpd.controller import Controller

    class Sink:
        messages: list = []

        async def handle_DATA(self, server, session, envelope):
            Sink.messages.append((envelope.rcpt_tos, envelope.content.decode()))
            return "250 OK"

    controller = Controller(Sink(), hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        settings.EMAIL_URL = f"smtp://127.0.0.1:{controller.port}"
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", controller.port
        settings.ALERT_WEBHOOK_URL = ""
        key, _ = services.api_key_create(user=alice, token_budget=10)
        make_usage(key, "m", tokens=(4, 4))
        assert alerts.check() == 1
    finally:
        controller.stop()
    [(to, content)] = Sink.messages
    assert to == ["alice@example.com"] and "80 %" in content


def test_a_refused_token_alerts_its_owner_and_the_staff_once(alice, webhook, django_user_model):
    django_user_model.objects.create_user("root", email="root@example.com", is_staff=True)
    token = services.hf_token_create(name="alice's", value="hf_alices_token_value", owner=alice)
    key, _ = services.api_key_create(user=alice, hf_token=token)
    make_usage(key, "m", outcome="upstream_error")
    from accounts.models import UsageRecord

    UsageRecord.objects.update(error_code=REJECTED_TOKEN, hf_token=token)
    assert alerts.check() == 1
    assert alerts.check() == 0
    [message] = mail.outbox
    assert sorted(message.to) == ["alice@example.com", "root@example.com"]
    assert "refused the token alice's (hf_…alue)" in message.body
    assert "hf_alices_token_value" not in message.body
