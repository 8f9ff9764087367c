"""Images end to end: the openai SDK's `images.generate` through a real server to the fake
router: the Hub's mapping choosing the provider (Together, listed after fal-ai), HF Inference
named by its suffix with `n` calls at once, `url` answers as data: URLs; one record a request
counting its images, and the refusals as the SDK's errors."""

from __future__ import annotations

import base64
from decimal import Decimal

import openai
import pytest

from tests.support.harness import router_and_proxy

pytestmark = pytest.mark.e2e
MODEL = "black-forest-labs/FLUX.1-schnell"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with router_and_proxy(tmp_path_factory.mktemp("images")) as (router, proxy):
        yield router, proxy


def png_size(image: bytes) -> tuple[int, int]:
    assert image.startswith(b"\x89PNG\r\n\x1a\n")
    return int.from_bytes(image[16:20], "big"), int.from_bytes(image[20:24], "big")


def records(proxy, count: int) -> list[dict]:
    return proxy.endpoint_records(
        "image_generations", count, "model_requested, model_answered, outcome, units, usage_source, provider"
    )


def test_the_sdk_generates_images_and_each_request_is_recorded(served):
    router, proxy = served
    client = openai.OpenAI(base_url=proxy.api, api_key=proxy.keys["team"], max_retries=0)

    chosen = client.images.generate(model=MODEL, prompt="A lighthouse at dawn", size="256x128")
    (image,) = chosen.data
    assert png_size(base64.b64decode(image.b64_json)) == (256, 128)
    assert router.stats()["last_image"] == {
        "path": "/together/v1/images/generations",
        "body": {
            "model": "black-forest-labs/FLUX.1-schnell-Free",
            "prompt": "A lighthouse at dawn",
            "response_format": "base64",
            "width": 256,
            "height": 128,
            "n": 1,
        },
    }

    linked = client.images.generate(
        model=f"{MODEL}:hf-inference",
        prompt="A lighthouse at dawn",
        n=2,
        size="64x64",
        response_format="url",
        extra_body={"num_inference_steps": 4},
    )
    assert [item.url.partition(",")[0] for item in linked.data] == ["data:image/png;base64"] * 2
    assert png_size(base64.b64decode(linked.data[0].url.partition(",")[2])) == (64, 64)
    assert router.stats()["attempts"][MODEL] == 2  # one image a call, at once
    assert router.stats()["last_image"]["body"] == {
        "inputs": "A lighthouse at dawn",
        "parameters": {"width": 64, "height": 64, "num_inference_steps": 4},
    }

    rows = records(proxy, 2)
    assert [
        (r["model_requested"], r["model_answered"], r["outcome"], r["usage_source"], r["provider"])
        for r in rows
    ] == [
        (MODEL, "black-forest-labs/FLUX.1-schnell-Free", "ok", "provider", "together"),
        (f"{MODEL}:hf-inference", MODEL, "ok", "provider", "hf-inference"),
    ]
    assert [Decimal(str(r["units"])) for r in rows] == [1, 2]


def test_refusals_reach_the_sdk_as_openai_errors(served):
    _, proxy = served
    client = openai.OpenAI(base_url=proxy.api, api_key=proxy.keys["team"], max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:  # a queue-based provider
        client.images.generate(model=f"{MODEL}:fal-ai", prompt="x")
    assert caught.value.body["param"] == "model" and "together" in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:  # only queue-based providers serve it
        client.images.generate(model="Qwen/Qwen-Image", prompt="x")
    assert "`fal-ai`, `replicate`" in caught.value.message
    with pytest.raises(openai.NotFoundError):  # the Hub has no such model
        client.images.generate(model="nobody/none", prompt="x")
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(model=MODEL, prompt="x", n=5)
    assert caught.value.body["param"] == "n"
