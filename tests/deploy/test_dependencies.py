"""Dependencies: ranges with an upper bound at the majors the code was tested with, and one
constraints file with the exact versions, used by the README's commands, CI and the image.

A new major (redis-py 8's pool that raised instead of waiting) must arrive as a reviewed change
of constraints.txt, not on the day someone installs."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def _lines(name: str) -> list[str]:
    lines = (line.split("#")[0].strip() for line in (ROOT / name).read_text().splitlines())
    return [line for line in lines if line and not line.startswith("-r ")]


def _requirements() -> list[Requirement]:
    return [
        Requirement(line) for name in ("requirements.txt", "requirements-dev.txt") for line in _lines(name)
    ]


def _pins() -> dict[str, str]:
    pins = {}
    for line in _lines("constraints.txt"):
        name, version = line.split("==")
        pins[canonicalize_name(name)] = version
    return pins


def test_every_requirement_has_an_upper_bound():
    unbounded = [
        str(r) for r in _requirements() if not any(s.operator in ("<", "<=", "==", "~=") for s in r.specifier)
    ]
    assert unbounded == []


def test_the_constraints_pin_every_requirement_within_its_range():
    pins = _pins()
    for requirement in _requirements():
        version = pins.get(canonicalize_name(requirement.name))
        assert version is not None, f"{requirement.name} is not in constraints.txt"
        assert requirement.specifier.contains(version, prereleases=True), f"{requirement.name}=={version}"


def test_this_environment_is_the_pinned_one():
    """What runs these tests was installed with the constraints (as the README says)."""
    pins = _pins()
    ignored = {"pip", "setuptools", "wheel"}
    drift = {}
    for dist in metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"])
        if name not in ignored and pins.get(name) != dist.version:
            drift[name] = (dist.version, pins.get(name))
    assert drift == {}, "installed (version, pinned): regenerate constraints.txt (see its header)"


def test_every_install_uses_the_constraints():
    readme = (ROOT / "README.md").read_text()
    installs = re.findall(r"pip install -r requirements[-a-z]*\.txt[^&\n]*", readme)
    assert len(installs) >= 4 and all("-c constraints.txt" in line for line in installs)
    assert "-c constraints.txt" in (ROOT / ".ci" / "run").read_text()
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"pip install .*-r /tmp/requirements\.txt -c /tmp/constraints\.txt", dockerfile)
