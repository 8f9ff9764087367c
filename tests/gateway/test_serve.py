"""`manage.py serve`: uvicorn with the settings' host, port, workers and shutdown timeout."""

import pytest
from django.core.management import call_command


@pytest.mark.parametrize(
    ("args", "host", "port"), [((), "0.0.0.0", 8000), (("--port", "9001"), "0.0.0.0", 9001)]
)
def test_serve_runs_uvicorn_on_host_and_port(monkeypatch, args, host, port):
    calls = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kwargs: calls.append((app, kwargs)))
    call_command("serve", *args)
    [(app, kwargs)] = calls
    assert app == "hfproxy_site.asgi:application"
    assert (kwargs["host"], kwargs["port"], kwargs["lifespan"]) == (host, port, "on")
    assert kwargs["timeout_graceful_shutdown"] == 30


def test_serve_takes_the_workers_and_the_shutdown_timeout(monkeypatch, settings):
    settings.SHUTDOWN_TIMEOUT = 12.5
    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    calls = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kwargs: calls.append(kwargs))
    call_command("serve")
    call_command("serve", "--workers", "2", "--shutdown-timeout", "5")
    assert [(c["workers"], c["timeout_graceful_shutdown"]) for c in calls] == [(3, 12.5), (2, 5)]


def _options(monkeypatch) -> dict:
    calls = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kwargs: calls.append(kwargs))
    call_command("serve")
    return calls[0]


def test_serve_limits_connections_with_its_own_protocol(monkeypatch):
    assert _options(monkeypatch)["http"] == "gateway.connections:LimitedHttpToolsProtocol"


def test_serve_queues_as_many_new_connections_as_it_may_hold(monkeypatch, settings):
    settings.MAX_CONNECTIONS = 5000
    assert _options(monkeypatch)["backlog"] == 5000
    settings.MAX_CONNECTIONS = 300
    assert _options(monkeypatch)["backlog"] == 2048  # uvicorn's own, at least


def test_serve_believes_forwarded_headers_only_from_forwarded_allow_ips(monkeypatch, settings):
    settings.FORWARDED_ALLOW_IPS = []
    assert _options(monkeypatch)["proxy_headers"] is False  # uvicorn's default trusts 127.0.0.1
    settings.FORWARDED_ALLOW_IPS = ["172.18.0.0/16"]
    options = _options(monkeypatch)
    assert options["proxy_headers"] is True and options["forwarded_allow_ips"] == ["172.18.0.0/16"]


def test_serve_refuses_more_connections_than_it_may_open_files(monkeypatch, settings):
    import resource

    from django.core.management.base import CommandError

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no limit on open files here")
    settings.MAX_CONNECTIONS = hard
    with pytest.raises(CommandError, match="lower MAX_CONNECTIONS"):
        _options(monkeypatch)
