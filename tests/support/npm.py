"""The npm packages some tests drive (openai-node in a browser, the coding agents' CLIs): pinned in
a folder's package.json and package-lock.json, installed there by `npm ci` when missing or stale."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import NoReturn

import pytest


def missing(what: str) -> NoReturn:
    """Skip the calling test for lack of `what`; under CI, fail it (CI installs what it needs)."""
    if os.environ.get("CI") == "true":
        pytest.fail(what)
    pytest.skip(what)


def installed(folder: Path, package: str) -> str | None:
    """The version of `package` in `folder`'s node_modules, None when it is not there."""
    with contextlib.suppress(FileNotFoundError):
        return json.loads((folder / "node_modules" / package / "package.json").read_text())["version"]
    return None


def npm_ci(folder: Path, *packages: str) -> dict[str, str]:
    """Make `folder`'s node_modules hold the versions of `packages` its lock file pins (`npm ci`
    when one differs); those versions."""
    lock = json.loads((folder / "package-lock.json").read_text())
    pinned = {package: lock["packages"][f"node_modules/{package}"]["version"] for package in packages}
    if all(installed(folder, package) == version for package, version in pinned.items()):
        return pinned
    npm = shutil.which("npm")
    if npm is None:
        missing(f"npm is missing (apt-get install npm), needed to install {', '.join(packages)}")
    # Node.js engine ranges do not matter here: openai-node runs in the browser, the agents'
    # CLIs are native binaries that npm only carries.
    command = [npm, "ci", "--no-audit", "--no-fund", "--engine-strict=false"]
    result = subprocess.run(command, cwd=folder, capture_output=True, text=True, check=False)
    if result.returncode != 0 or any(installed(folder, p) != v for p, v in pinned.items()):
        missing(f"`npm ci` in {folder.name} failed:\n{result.stderr[-2000:]}")
    return pinned
