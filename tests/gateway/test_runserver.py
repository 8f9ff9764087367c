"""`manage.py runserver` refuses and points to `serve`."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("args", [[], ["8123", "--noreload"]])
def test_runserver_refuses_and_points_to_serve(args):
    # Under runserver the usage writer has no loop to live on: records would be lost silently.
    clean = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "manage.py", "runserver", *args],
        cwd=ROOT,
        env={**clean, "ENV_FILE": "", "DEBUG": "true"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "python manage.py serve" in result.stderr and "usage records would be lost" in result.stderr
