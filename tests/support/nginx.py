"""nginx from Debian's package, started by a test in front of local servers (where installed)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path

import httpx


@contextlib.contextmanager
def nginx(folder: Path, port: int, http: str):
    """nginx in the foreground with its files in `folder` and `http` inside its http block,
    answering `/health` on `port` (what `http` proxies); its URL. Stopped afterwards."""
    user = "user root;\n" if os.geteuid() == 0 else ""  # its workers write the temporary files
    (folder / "nginx.conf").write_text(
        f"{user}daemon off;\npid {folder}/nginx.pid;\nerror_log {folder}/nginx-error.log;\n"
        "events {}\nhttp {\n  access_log off;\n"
        f"  client_body_temp_path {folder}/body;\n  proxy_temp_path {folder}/proxy;\n{http}}}\n"
    )
    process = subprocess.Popen(["nginx", "-c", str(folder / "nginx.conf")], stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(url + "/health", timeout=1)
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not come up: {process.stderr.read().decode()}")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(10)
