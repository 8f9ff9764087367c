"""`python manage.py serve`: run the proxy under uvicorn on HOST:PORT."""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import signal
import sys
import tempfile

import uvicorn
from django.conf import settings
from django.core.management.base import BaseCommand

from gateway.connections import reserve_file_descriptors


class Command(BaseCommand):
    help = "Serve hfproxy with uvicorn on HOST:PORT (the settings' values unless overridden)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default=settings.HOST)
        parser.add_argument("--port", type=int, default=settings.PORT)
        parser.add_argument(
            "--workers",
            type=int,
            default=int(os.environ.get("WEB_CONCURRENCY", "1")),
            help="Worker processes (default: WEB_CONCURRENCY or 1).",
        )
        parser.add_argument(
            "--shutdown-timeout",
            type=float,
            default=settings.SHUTDOWN_TIMEOUT,
            help="Seconds in-flight requests may take to finish after SIGTERM (default: SHUTDOWN_TIMEOUT or 30).",
        )
        parser.add_argument("--reload", action="store_true", help="Restart on code changes.")
        parser.add_argument(
            "--access-log",
            action="store_true",
            help="Also log uvicorn's access line (every request already logs one report line).",
        )

    def handle(self, *args, host, port, workers, shutdown_timeout, reload, access_log, **options) -> None:
        self.stdout.write(f"hfproxy on http://{host}:{port}{settings.API_PREFIX} → {settings.HF_BASE_URL}")
        # uvicorn re-raises the SIGTERM it handled once it has shut down cleanly, with the handler
        # it found: this one makes a clean shutdown exit 0 (what Docker and systemd expect)
        # instead of dying of the signal, and a SIGTERM while the app loads end it at once.
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
        reserve_file_descriptors()
        if (workers > 1 or "PROMETHEUS_MULTIPROC_DIR" in os.environ) and not reload:
            self.stdout.write(f"{workers} worker(s); their metrics are summed in {_share_metrics()}")
        uvicorn.run(
            "hfproxy_site.asgi:application",
            host=host,
            port=port,
            workers=None if reload else workers,
            reload=reload,
            lifespan="on",
            http="gateway.connections:LimitedHttpToolsProtocol",
            # Connections the kernel queues until the worker accepts them (capped by
            # net.core.somaxconn): past it a connection's SYN is dropped and its client waits
            # 1, 3, 7… s to try again, which a stalled loop (a full GC) must not cost a burst.
            backlog=max(2048, settings.MAX_CONNECTIONS),
            access_log=access_log,
            log_level="info",
            # SIGTERM: stop accepting, let in-flight requests finish for this long, cut off the
            # rest (still recorded), then the lifespan shutdown writes the queued usage records.
            timeout_graceful_shutdown=shutdown_timeout,
            # uvicorn would believe X-Forwarded-For from 127.0.0.1 unless told otherwise.
            proxy_headers=bool(settings.FORWARDED_ALLOW_IPS),
            forwarded_allow_ips=settings.FORWARDED_ALLOW_IPS,
        )


def _share_metrics() -> str:
    """Workers write their metrics to files in one folder, so that a scrape of any of them adds
    up all (prometheus_client's multiprocess mode). Set before the workers start: they read it
    when they import the library. Files left by an earlier run are removed."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not folder:
        folder = tempfile.mkdtemp(prefix="hfproxy-metrics-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
    os.makedirs(folder, exist_ok=True)
    for stale in glob.glob(os.path.join(folder, "*.db")):
        os.remove(stale)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    return folder
