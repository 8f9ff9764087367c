"""/metrics with two workers (`manage.py serve --workers 2`): any worker's scrape counts all."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.harness import Router, chat, launch_proxy
from tests.support.processes import scratch_database

pytestmark = pytest.mark.e2e
TOKEN = "scrape-token-for-the-workers-test"


def requests_for(text: str, model: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "hfproxy_requests_total" and sample.labels["model"] == model
    )


def test_a_scrape_of_any_worker_counts_every_worker(tmp_path):
    router = Router()
    router.start()
    with contextlib.ExitStack() as stack:
        stack.callback(router.stop)
        database = stack.enter_context(scratch_database(tmp_path))
        proxy = launch_proxy(
            router,
            database,
            tmp_path,
            WEB_CONCURRENCY="2",
            METRICS_TOKEN=TOKEN,
        )
        stack.callback(proxy.stop)
        for _ in range(20):  # a new connection each time, so that both workers take requests
            with httpx.Client(headers={**proxy.auth(), "Connection": "close"}) as client:
                assert (
                    client.post(
                        proxy.api + "/chat/completions", json=chat("meta-llama/Llama-3.1-8B-Instruct:nebius")
                    ).status_code
                    == 200
                )
        # `serve` chose the workers' shared folder, and said where.
        folder = Path(re.search(r"their metrics are summed in (\S+)", proxy.log_text()).group(1))
        writers = {path.name.rsplit("_", 1)[-1] for path in folder.glob("counter_*.db")}
        assert len(writers) == 2, writers  # both workers counted something
        for _ in range(6):  # whichever worker answers the scrape
            with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}", "Connection": "close"}) as client:
                scraped = client.get(proxy.url + "/metrics")
            assert scraped.status_code == 200
            assert requests_for(scraped.text, "meta-llama/Llama-3.1-8B-Instruct:nebius") == 20
        assert httpx.get(proxy.url + "/metrics").status_code == 403
