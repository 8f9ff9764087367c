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
