"""One fake router and one hfproxy (DEBUG off, LOG_LEVEL=DEBUG) for the whole fault suite."""

from __future__ import annotations

import contextlib
import time

import pytest

from tests.support.harness import Proxy, Router, launch_proxy
from tests.support.processes import scratch_database


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/faults/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def router():
    router = Router()
    router.start()
    try:
        yield router
    finally:
        router.stop()


@pytest.fixture(scope="session")
def proxy(router, tmp_path_factory):
    folder = tmp_path_factory.mktemp("faults")
    with contextlib.ExitStack() as stack:
        database = stack.enter_context(scratch_database(folder))
        # One key plays many clients here (test_data.py's burst of 500): no share per key
        # (test_saturation.py has its own proxies for that).
        proxy: Proxy = launch_proxy(router, database, folder, LOG_LEVEL="DEBUG", KEY_MAX_IN_FLIGHT="0")
        stack.callback(proxy.stop)
        yield proxy
        time.sleep(0.3)  # a second record of anything would have been written by now
        assert proxy.duplicates() == [], "requests with more than one usage record"


@pytest.fixture
def stats(router):
    """The router's counters, from zero for this test."""
    router.reset()
    return router.stats
