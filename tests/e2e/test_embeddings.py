"""Embeddings end to end: the openai SDK (base64, its default, and float) through a real server
to the fake router's feature-extraction pipeline; the same vectors either way."""

from __future__ import annotations

import time

import openai
import pytest

from tests.support import fake_router
from tests.support.harness import router_and_proxy

pytestmark = pytest.mark.e2e
TEXTS = ["The quick brown fox", "敏捷的棕色狐狸", "🦊"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with router_and_proxy(tmp_path_factory.mktemp("embeddings")) as (router, proxy):
        yield router, proxy


def test_base64_and_float_give_the_same_vectors_through_the_sdk(served):
    _, proxy = served
    client = openai.OpenAI(base_url=proxy.api, api_key=proxy.keys["team"], max_retries=0)
    default = client.embeddings.create(model="BAAI/bge-m3", input=TEXTS)  # the SDK asks for base64
    floats = client.embeddings.create(model="BAAI/bge-m3", input=TEXTS, encoding_format="float")
    expected = [fake_router.vector(text, normalize=True) for text in TEXTS]
    for answer in (default, floats):
        assert [item.index for item in answer.data] == [0, 1, 2]
        for item, vector in zip(answer.data, expected, strict=True):
            assert item.embedding == pytest.approx(vector, rel=1e-6)  # float32 on the way
        assert answer.model == "BAAI/bge-m3"
        assert answer.usage.prompt_tokens == answer.usage.total_tokens > 0
    single = client.embeddings.create(model="BAAI/bge-m3", input="🦊", dimensions=4)
    assert len(single.data[0].embedding) == 4
    assert sum(x * x for x in single.data[0].embedding) == pytest.approx(1.0, rel=1e-5)


def test_errors_reach_the_sdk_as_openai_errors_and_everything_is_recorded(served):
    router, proxy = served
    client = openai.OpenAI(base_url=proxy.api, api_key=proxy.keys["team"], max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="BAAI/bge-m3", input=[[101, 102]])
    assert caught.value.body["param"] == "input"
    with pytest.raises(openai.InternalServerError):
        client.embeddings.create(model="fault/status-500", input="x")
    with pytest.raises(openai.InternalServerError):
        client.embeddings.create(model="fault/tokens", input="x")
    with pytest.raises(openai.BadRequestError) as caught:  # HF Inference does not serve it
        client.embeddings.create(model="nobody/embedder", input="x")
    assert "not supported" in caught.value.message
    assert router.stats()["attempts"]["fault/status-500"] == 2
    query = "SELECT model_requested, outcome FROM accounts_usagerecord WHERE endpoint = 'embeddings'"
    deadline = time.monotonic() + 10
    while len(rows := proxy.db.query(query)) < 7 and time.monotonic() < deadline:
        time.sleep(0.05)
    # The first test's three requests, then these four: the bad one before a model was known.
    assert sorted((r["model_requested"], r["outcome"]) for r in rows) == sorted(
        [("BAAI/bge-m3", "ok")] * 3
        + [
            ("", "bad_request"),
            ("fault/status-500", "upstream_error"),
            ("fault/tokens", "upstream_error"),
            ("nobody/embedder", "upstream_error"),
        ]
    )
