"""Embeddings: OpenAI's request in, HF Inference's feature-extraction call out, OpenAI's answer
back (golden data): the pure gateway.embeddings; then the endpoint's errors and usage records."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path

import httpx
import pytest
import respx
from django.conf import settings

from accounts import keys
from accounts.models import ApiKey
from gateway import embeddings, upstream
from gateway.converter import BadAnswer, InvalidRequest

GOLDEN = json.loads((Path(__file__).parent / "golden" / "embeddings.json").read_text())
DEFAULT = "sentence-transformers/all-MiniLM-L6-v2"


def parse(**fields) -> embeddings.EmbeddingsRequest:
    return embeddings.parse_embeddings_request(json.dumps(fields).encode(), DEFAULT)


def test_golden_request_and_answer():
    request = embeddings.parse_embeddings_request(json.dumps(GOLDEN["request"]).encode(), DEFAULT)
    assert json.loads(embeddings.feature_extraction_body(request)) == GOLDEN["router_body"]
    answer = embeddings.embeddings_answer(json.dumps(GOLDEN["router_answer"]).encode(), request)
    assert answer == GOLDEN["answer"]


def test_base64_is_little_endian_float32_and_round_trips():
    vector = [0.1, -0.25, 1e-7, 3.5]
    decoded = struct.unpack("<4f", base64.b64decode(embeddings.encode_base64(vector)))
    assert decoded == pytest.approx(vector, rel=1e-6)


def test_a_single_string_and_defaults():
    request = parse(input="hello")
    assert (request.model, request.inputs, request.single, request.encoding_format) == (
        DEFAULT,
        ["hello"],
        True,
        "float",
    )
    # A model answering one input with a bare vector is understood too.
    answer = embeddings.embeddings_answer(b"[0.6, 0.8]", request)
    assert answer["data"] == [{"object": "embedding", "index": 0, "embedding": [0.6, 0.8]}]
    assert answer["usage"] == {"prompt_tokens": 2, "total_tokens": 2}


def test_dimensions_truncate_and_renormalise():
    assert embeddings.shorten([0.0, 0.6, 0.8], 2) == pytest.approx([0.0, 1.0])
    with pytest.raises(InvalidRequest) as caught:
        embeddings.shorten([0.6, 0.8], 3)
    assert caught.value.param == "dimensions"


def test_the_prompt_is_counted_as_chat_text_is():
    request = parse(input=["hello there", "你好"])
    assert request.prompt_chars == 11 + 2 * 4
    assert embeddings.embeddings_answer(b"[[1.0], [1.0]]", request)["usage"]["prompt_tokens"] == 5


def test_the_hf_inference_suffix_is_dropped():
    assert parse(model="BAAI/bge-m3:hf-inference", input="x").model == "BAAI/bge-m3"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"input": [1, 2, 3]}, "input"),  # token ids
        ({"input": [[1, 2], [3]]}, "input"),
        ({"input": ""}, "input"),
        ({"input": []}, "input"),
        ({"input": ["a", 3.5]}, "input"),
        ({"input": ["a", True]}, "input"),
        ({}, "input"),
        ({"input": ["x"] * 2049}, "input"),
        ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"input": "x", "dimensions": 0}, "dimensions"),
        ({"input": "x", "dimensions": "8"}, "dimensions"),
        ({"input": "x", "user": 7}, "user"),
        ({"input": "x", "model": ""}, "model"),
        ({"input": "x", "model": "../../v1/chat/completions"}, "model"),
        ({"input": "x", "model": "org/name/extra"}, "model"),
        ({"input": "x", "model": "org/na me"}, "model"),
        ({"input": "x", "model": "org/model:together"}, "model"),
    ],
)
def test_bad_requests(fields, param):
    with pytest.raises(InvalidRequest) as caught:
        parse(**fields)
    assert caught.value.param == param


def test_token_ids_say_why():
    with pytest.raises(InvalidRequest) as caught:
        parse(input=[101, 2023, 102])
    assert "tokenizer" in caught.value.message
    # LangChain's OpenAIEmbeddings sends token ids unless told not to: the message names the fix.
    assert "check_embedding_ctx_length=False" in caught.value.message


def test_answers_are_normalised_when_the_model_did_not():
    # Real answers came back with norms of 17.6 and 6.3 despite `normalize: true`.
    answer = embeddings.embeddings_answer(b"[[3.0, 4.0], [0.6, 0.8]]", parse(input=["a", "b"]))
    assert [item["embedding"] for item in answer["data"]] == [pytest.approx([0.6, 0.8]), [0.6, 0.8]]


@pytest.mark.parametrize(
    "raw",
    [b"<html>", b'{"error": "Model is loading"}', b"[[0.1], [0.2]]", b"[[[0.1, 0.2]]]", b"[[]]", b'[["a"]]'],
)
def test_answers_that_cannot_be_relayed(raw):
    with pytest.raises(BadAnswer):
        embeddings.embeddings_answer(raw, parse(input=["only one"]))


# --- Through the endpoint -----------------------------------------------------------------------

URL = "/v1/embeddings"


@pytest.fixture
async def inference():
    """HF Inference, mocked: respx as the upstream transport."""
    router = respx.MockRouter(assert_all_called=False)
    upstream.set_transport(httpx.MockTransport(router.async_handler))
    try:
        yield router
    finally:
        await upstream.aclose()
        upstream.reset()


async def post(client, payload):
    return await client.post(URL, json.dumps(payload).encode(), content_type="application/json")


async def test_the_endpoint_calls_feature_extraction_and_records_estimated_usage(
    async_client, inference, reports
):
    route = inference.post(
        f"{settings.HF_INFERENCE_URL}/models/BAAI/bge-m3/pipeline/feature-extraction"
    ).respond(200, json=[[0.6, 0.8], [1.0, 0.0]])
    response = await post(async_client, {"model": "BAAI/bge-m3", "input": ["hello there", "你好"]})
    assert response.status_code == 200
    assert [item["embedding"] for item in response.json()["data"]] == [[0.6, 0.8], [1.0, 0.0]]
    sent = route.calls.last.request
    assert json.loads(sent.content) == {
        "inputs": ["hello there", "你好"],
        "normalize": True,
        "truncate": True,
    }
    assert sent.headers["authorization"] == f"Bearer {settings.HF_TOKEN}"
    (report,) = reports
    assert (report.endpoint, report.model_requested, report.outcome, report.usage_source) == (
        "embeddings",
        "BAAI/bge-m3",
        "ok",
        "estimated",
    )
    # 11 ASCII characters and 2 Chinese ones (a token each): 19 / 4
    assert report.usage.prompt_tokens == report.usage.total_tokens == 5
    assert report.upstream_attempts == 1


async def test_dimensions_and_base64_through_the_endpoint(async_client, inference):
    inference.post(url__startswith=settings.HF_INFERENCE_URL).respond(200, json=[[0.0, 0.6, 0.8, 0.0]])
    response = await post(
        async_client, {"model": "BAAI/bge-m3", "input": "x", "dimensions": 2, "encoding_format": "base64"}
    )
    packed = response.json()["data"][0]["embedding"]
    assert struct.unpack("<2f", base64.b64decode(packed)) == pytest.approx((0.0, 1.0))
    too_many = await post(async_client, {"model": "BAAI/bge-m3", "input": "x", "dimensions": 5})
    assert (too_many.status_code, too_many.json()["error"]["param"]) == (400, "dimensions")


async def test_errors_are_openai_errors_and_recorded(async_client, inference, reports):
    inference.post(url__startswith=settings.HF_INFERENCE_URL).respond(
        503, json={"error": "Model BAAI/bge-m3 is currently loading", "estimated_time": 20}
    )
    response = await post(async_client, {"model": "BAAI/bge-m3", "input": "x"})
    assert (response.status_code, response["Retry-After"]) == (503, "20")
    assert "currently loading" in response.json()["error"]["message"]
    bad = await post(async_client, {"input": [1, 2]})
    assert (bad.status_code, bad.json()["error"]["param"]) == (400, "input")
    too_many = await post(async_client, {"model": "BAAI/bge-m3", "input": "x", "dimensions": 99})
    assert too_many.status_code == 503  # the model is still loading
    assert [r.outcome for r in reports] == ["upstream_error", "bad_request", "upstream_error"]
    assert reports[0].upstream_attempts == 1  # the client is told when to come back instead
    # Failed or not, the pipeline is HF Inference's: the record says so.
    assert [r.provider for r in reports if r.upstream_attempts] == ["hf-inference", "hf-inference"]


async def test_a_key_limited_to_other_models_is_refused(async_client, inference, api_key):
    await ApiKey.objects.aupdate(allowed_models="org/chat-*")
    keys.reset()
    response = await post(async_client, {"model": "BAAI/bge-m3", "input": "x"})
    assert (response.status_code, response.json()["error"]["code"]) == (403, "model_not_allowed")
