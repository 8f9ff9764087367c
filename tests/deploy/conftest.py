"""The image, built once per session for the container tests, and what they measured."""

from __future__ import annotations

import pytest

from tests.support import docker


@pytest.fixture(scope="session")
def image() -> str:
    docker.require_engine()
    return docker.build_image()


def pytest_terminal_summary(terminalreporter):
    if docker.REPORT:
        terminalreporter.section("containers")
        for line in docker.REPORT:
            terminalreporter.write_line(line)
