"""Images: OpenAI's request in, Hugging Face's text-to-image out (HF Inference, or a provider's
OpenAI-shaped route chosen from the Hub's mapping), OpenAI's answer back: the pure gateway.images;
then the endpoint, its Hub cache, its errors and its usage records."""

from __future__ import annotations

import asyncio
import base64
import json
from decimal import Decimal

import httpx
import pytest
from django.conf import settings

from accounts import keys
from accounts.models import ApiKey
from gateway import images
from gateway.converter import BadAnswer, InvalidRequest
from gateway.images import ProviderOffer, Route

DEFAULT = "black-forest-labs/FLUX.1-schnell"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 40
WEBP = b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"\x00" * 40


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def parse(**fields) -> images.ImagesRequest:
    return images.parse_request(json.dumps({"prompt": "a cat", **fields}).encode(), DEFAULT)


def sent(request: images.ImagesRequest, route: Route) -> tuple[dict, images.ProviderCall]:
    call = images.provider_call(request, route)
    return json.loads(call.body), call


def test_defaults():
    request = parse()
    assert (request.model, request.base_model, request.provider, request.n) == (DEFAULT, DEFAULT, "", 1)
    assert (request.width, request.height, request.response_format) == (None, None, "b64_json")


def test_suffixes_name_a_provider_and_policies_leave_the_choice_to_the_hub():
    assert parse(model="org/m:together").provider == "together"
    assert parse(model="org/m:fastest").provider == ""
    assert parse(model="org/m:hf-inference").base_model == "org/m"


def test_sizes_and_hints():
    request = parse(size="512x768", quality="hd", style="vivid", user="u", n=3)
    assert (request.width, request.height, request.n) == (512, 768, 3)
    assert parse(size="auto").width is None
    # What a client library adds for itself never reaches a provider.
    assert parse(api_key="sk-x").parameters == {}


def test_hugging_faces_parameters_are_taken():
    request = parse(negative_prompt="blur", num_inference_steps=4, guidance_scale=3.5, seed=7)
    assert request.parameters == {
        "negative_prompt": "blur",
        "num_inference_steps": 4,
        "guidance_scale": 3.5,
        "seed": 7,
    }


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": None}, "prompt"),
        ({"n": 0}, "n"),
        ({"n": images.MAX_IMAGES + 1}, "n"),
        ({"n": "2"}, "n"),
        ({"size": "1024"}, "size"),
        ({"size": "1024x99999"}, "size"),
        ({"size": "8x8"}, "size"),
        ({"response_format": "png"}, "response_format"),
        ({"model": ""}, "model"),
        ({"model": "../../v1/chat/completions"}, "model"),
        ({"model": "org/m:fal-ai"}, "model"),
        ({"stream": True}, "stream"),
        ({"output_format": "webp"}, "output_format"),
        ({"background": "transparent"}, "background"),
        ({"seed": "x"}, "seed"),
        ({"num_inference_steps": 0}, "num_inference_steps"),
        ({"loras": []}, "loras"),
    ],
)
def test_bad_requests(fields, param):
    with pytest.raises(InvalidRequest) as caught:
        parse(**fields)
    assert caught.value.param == param


def test_an_unmapped_provider_is_refused_naming_the_ones_that_work():
    with pytest.raises(InvalidRequest) as caught:
        parse(model="org/m:replicate")
    assert all(name in caught.value.message for name in images.SUPPORTED_PROVIDERS)
    # Asking for the defaults of options we cannot honour is no reason to refuse.
    assert parse(stream=False, background="auto", partial_images=0).n == 1


# --- The Hub's mapping and the choice of provider ------------------------------------------------


def test_the_hubs_mapping_in_both_its_forms():
    as_object = {
        "inferenceProviderMapping": {
            "fal-ai": {"status": "live", "providerId": "fal-ai/flux/schnell", "task": "text-to-image"},
            "together": {"status": "live", "providerId": "flux-free", "task": "text-to-image"},
            "broken": {"status": "live"},
        }
    }
    as_list = {
        "inferenceProviderMapping": [
            {
                "provider": "fal-ai",
                "status": "live",
                "providerId": "fal-ai/flux/schnell",
                "task": "text-to-image",
            },
            {"provider": "together", "status": "live", "providerId": "flux-free", "task": "text-to-image"},
            "nonsense",
        ]
    }
    expected = [ProviderOffer("fal-ai", "fal-ai/flux/schnell"), ProviderOffer("together", "flux-free")]
    assert images.provider_mapping(as_object) == images.provider_mapping(as_list) == expected
    assert images.provider_mapping({"id": "org/m"}) == []  # served by no provider
    with pytest.raises(BadAnswer):
        images.provider_mapping({"inferenceProviderMapping": "x"})


def test_without_a_suffix_the_first_live_provider_hfproxy_maps():
    offers = [
        ProviderOffer("fal-ai", "fal/x"),  # listed first, not mapped
        ProviderOffer("nebius", "neb/x", status="error"),
        ProviderOffer("together", "tog/x"),
        ProviderOffer("nscale", "ns/x"),
    ]
    assert images.choose_route(parse(model="org/m"), offers) == Route("together", "tog/x")
    assert images.choose_route(parse(model="org/m:cheapest"), offers) == Route("together", "tog/x")
    # None of them live: the first one mapped all the same.
    assert images.choose_route(parse(model="org/m"), offers[:2]) == Route("nebius", "neb/x")
    # The Hub lists nobody: HF Inference, with the model's own id.
    assert images.choose_route(parse(model="org/m"), []) == Route("hf-inference", "org/m")


def test_a_model_only_unmapped_providers_serve_is_refused_naming_them():
    with pytest.raises(InvalidRequest) as caught:
        images.choose_route(
            parse(model="org/m"), [ProviderOffer("fal-ai", "f"), ProviderOffer("replicate", "r")]
        )
    assert "`fal-ai`, `replicate`" in caught.value.message and "`together`" in caught.value.message


def test_a_named_provider_must_serve_the_model_for_text_to_image():
    offers = [ProviderOffer("together", "tog/x", task="conversational"), ProviderOffer("nebius", "neb/x")]
    assert images.choose_route(parse(model="org/m:nebius"), offers) == Route("nebius", "neb/x")
    with pytest.raises(InvalidRequest) as caught:
        images.choose_route(parse(model="org/m:together"), offers)
    assert "for conversational" in caught.value.message
    with pytest.raises(InvalidRequest) as caught:
        images.choose_route(parse(model="org/m:nscale"), offers)
    assert "`nscale` does not serve `org/m`" in caught.value.message and "`nebius`" in caught.value.message
    # HF Inference takes the Hugging Face id as it is: no mapping needed.
    assert not images.needs_mapping(parse(model="org/m:hf-inference"))
    assert images.choose_route(parse(model="org/m:hf-inference"), None) == Route("hf-inference", "org/m")


# --- What each provider is sent (as huggingface_hub 2.4 sends it, with `n` for Together) ---------

PARAMETERS = {"size": "512x768", "num_inference_steps": 4, "guidance_scale": 3.5, "seed": 7}


def test_hf_inference_is_sent_inputs_and_parameters_once_an_image():
    body, call = sent(parse(n=2, **PARAMETERS), Route("hf-inference", "org/m"))
    assert body == {
        "inputs": "a cat",
        "parameters": {
            "width": 512,
            "height": 768,
            "num_inference_steps": 4,
            "guidance_scale": 3.5,
            "seed": 7,
        },
    }
    assert (call.path, call.accept, call.calls) == ("/models/org/m", "image/png", 2)
    with pytest.raises(BadAnswer):  # the Hub's id goes into a path: it must be one
        images.provider_call(parse(), Route("hf-inference", "../x"))


def test_together_takes_n_in_one_call():
    body, call = sent(parse(n=3, **PARAMETERS), Route("together", "tog/x"))
    assert body == {
        "model": "tog/x",
        "prompt": "a cat",
        "response_format": "base64",
        "width": 512,
        "height": 768,
        "n": 3,
        "steps": 4,
        "guidance_scale": 3.5,
        "seed": 7,
    }
    assert (call.path, call.accept, call.calls) == ("/together/v1/images/generations", None, 1)


def test_nebius_and_nscale_make_one_image_a_call():
    body, call = sent(parse(n=2, **PARAMETERS), Route("nebius", "neb/x"))
    assert body == {
        "model": "neb/x",
        "prompt": "a cat",
        "response_format": "b64_json",
        "width": 512,
        "height": 768,
        "num_inference_steps": 4,
        "seed": 7,
    }
    assert (call.path, call.calls) == ("/nebius/v1/images/generations", 2)
    body, call = sent(parse(n=2, **PARAMETERS), Route("nscale", "ns/x"))
    assert body == {
        "model": "ns/x",
        "prompt": "a cat",
        "response_format": "b64_json",
        "size": "512x768",
        "guidance_scale": 3.5,
        "seed": 7,
    }
    assert (call.path, call.calls) == ("/nscale/v1/images/generations", 2)


# --- Answers -------------------------------------------------------------------------------------


def test_answers_become_base64_images_and_openais_shape():
    hf_inference, together = Route("hf-inference", "org/m"), Route("together", "tog/x")
    assert images.images_from(PNG, hf_inference, "image/png") == [b64(PNG)]
    assert images.images_from(JPEG, hf_inference, "") == [b64(JPEG)]  # known by its bytes
    answer = {"data": [{"index": 0, "b64_json": b64(JPEG)}, {"index": 1, "b64_json": b64(WEBP)}]}
    found = images.images_from(json.dumps(answer).encode(), together)
    assert found == [b64(JPEG), b64(WEBP)]
    assert images.images_answer(found, "b64_json", 7) == {
        "created": 7,
        "data": [{"b64_json": b64(JPEG)}, {"b64_json": b64(WEBP)}],
    }
    # No storage to link to: a `url` is a data: URL, of the type the image is.
    assert images.images_answer(found, "url", 7)["data"] == [
        {"url": f"data:image/jpeg;base64,{b64(JPEG)}"},
        {"url": f"data:image/webp;base64,{b64(WEBP)}"},
    ]


@pytest.mark.parametrize(
    ("raw", "route", "content_type"),
    [
        (b'{"error": "Model is loading"}', Route("hf-inference", "m"), "application/json"),
        (b"<html>", Route("hf-inference", "m"), "text/html"),
        (b"", Route("hf-inference", "m"), "image/png"),
        (b'{"data": []}', Route("together", "m"), "application/json"),
        (b'{"data": [{"url": "https://x"}]}', Route("together", "m"), "application/json"),
        (b'{"error": {"message": "no"}}', Route("nebius", "m"), "application/json"),
    ],
)
def test_answers_that_cannot_be_relayed(raw, route, content_type):
    with pytest.raises(BadAnswer):
        images.images_from(raw, route, content_type)


# --- Through the endpoint -----------------------------------------------------------------------

URL = "/v1/images/generations"
HUB = f"{settings.HF_HUB_URL}/api/models/{DEFAULT}"
MAPPING = {
    "_id": "x",
    "id": DEFAULT,
    "inferenceProviderMapping": {
        "fal-ai": {"status": "live", "providerId": "fal-ai/flux/schnell", "task": "text-to-image"},
        "together": {
            "status": "live",
            "providerId": "black-forest-labs/FLUX.1-schnell-Free",
            "task": "text-to-image",
        },
    },
}


async def post(client, **payload):
    body = json.dumps({"prompt": "a cat", **payload}).encode()
    return await client.post(URL, body, content_type="application/json")


async def test_hf_inference_makes_n_images_in_n_calls_and_one_record(async_client, hf, reports):
    route = hf.post(f"{settings.HF_INFERENCE_URL}/models/{DEFAULT}").respond(
        200, content=PNG, headers={"content-type": "image/png"}
    )
    response = await post(async_client, model=f"{DEFAULT}:hf-inference", n=2, size="512x512")
    assert response.status_code == 200
    answer = response.json()
    assert [base64.b64decode(item["b64_json"]) for item in answer["data"]] == [PNG, PNG]
    assert isinstance(answer["created"], int)
    assert route.call_count == 2
    request = route.calls.last.request
    assert json.loads(request.content) == {"inputs": "a cat", "parameters": {"width": 512, "height": 512}}
    assert (request.headers["accept"], request.headers["authorization"]) == (
        "image/png",
        f"Bearer {settings.HF_TOKEN}",
    )
    (report,) = reports
    assert (report.endpoint, report.model_requested, report.provider, report.outcome) == (
        "image_generations",
        f"{DEFAULT}:hf-inference",
        "hf-inference",
        "ok",
    )
    assert (report.units, report.usage_source, report.upstream_attempts) == (Decimal(2), "provider", 2)


async def test_without_a_suffix_the_hub_chooses_and_is_asked_once(async_client, hf, reports):
    async def slow_hub(request):
        await asyncio.sleep(0.05)  # long enough for the three requests to miss together
        return httpx.Response(200, json=MAPPING)

    hub = hf.get(HUB, params={"expand[]": "inferenceProviderMapping"}).mock(side_effect=slow_hub)
    together = hf.post(f"{settings.HF_ROUTER_URL}/together/v1/images/generations").respond(
        200, json={"id": "t", "model": "x", "object": "list", "data": [{"index": 0, "b64_json": b64(JPEG)}]}
    )
    responses = await asyncio.gather(*(post(async_client, response_format="url") for _ in range(3)))
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert responses[0].json()["data"] == [{"url": f"data:image/jpeg;base64,{b64(JPEG)}"}]
    assert await post(async_client) is not None  # and later, from the cache
    assert hub.call_count == 1 and together.call_count == 4
    assert hub.calls.last.request.headers["authorization"] == f"Bearer {settings.HF_TOKEN}"
    assert json.loads(together.calls.last.request.content) == {
        "model": "black-forest-labs/FLUX.1-schnell-Free",
        "prompt": "a cat",
        "response_format": "base64",
        "n": 1,
    }
    assert {(r.provider, r.model_answered, r.units, r.upstream_attempts) for r in reports} == {
        ("together", "black-forest-labs/FLUX.1-schnell-Free", Decimal(1), 1)
    }


async def test_the_routers_and_the_hubs_failures_are_openai_errors_and_recorded(async_client, hf, reports):
    inference = f"{settings.HF_INFERENCE_URL}/models/{DEFAULT}"
    hf.post(inference).mock(
        side_effect=[
            httpx.Response(503, json={"error": "Model is currently loading", "estimated_time": 20}),
            httpx.Response(404, json={"error": "Model org/none does not exist"}),
        ]
    )
    loading = await post(async_client, model=f"{DEFAULT}:hf-inference")
    assert (loading.status_code, loading["Retry-After"]) == (503, "20")
    assert loading.json()["error"]["code"] == "model_loading"
    unknown = await post(async_client, model=f"{DEFAULT}:hf-inference")
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "model_not_found")

    hf.get(f"{settings.HF_HUB_URL}/api/models/org/none").respond(
        401, json={"error": "Repository not found"}, headers={"x-error-code": "RepoNotFound"}
    )
    no_repo = await post(async_client, model="org/none")
    assert (no_repo.status_code, no_repo.json()["error"]["code"]) == (404, "model_not_found")
    assert "org/none" in no_repo.json()["error"]["message"]

    queue_based = await post(async_client, model=f"{DEFAULT}:fal-ai")
    assert (queue_based.status_code, queue_based.json()["error"]["param"]) == (400, "model")
    assert [r.outcome for r in reports] == ["upstream_error", "upstream_error", "bad_request", "bad_request"]
    assert [r.provider for r in reports[:2]] == ["hf-inference", "hf-inference"]
    assert all(r.units is None for r in reports)


async def test_images_made_before_a_failure_are_counted(async_client, hf, reports):
    image = httpx.Response(200, content=PNG, headers={"content-type": "image/png"})
    hf.post(f"{settings.HF_INFERENCE_URL}/models/{DEFAULT}").mock(
        side_effect=[image, httpx.Response(400, json={"error": "bad seed"}), image]
    )
    response = await post(async_client, model=f"{DEFAULT}:hf-inference", n=3)
    assert (response.status_code, response.json()["error"]["message"]) == (400, "bad seed")
    # The provider made (and bills) two images: the record says so, for the key's budget.
    (report,) = reports
    assert (report.outcome, report.units, report.usage_source) == ("upstream_error", Decimal(2), "provider")


async def test_a_key_limited_to_other_models_is_refused_before_any_call(async_client, hf, api_key, reports):
    await ApiKey.objects.aupdate(allowed_models="org/chat-*")
    keys.reset()
    hub = hf.get(HUB).respond(200, json=MAPPING)
    response = await post(async_client)
    assert (response.status_code, response.json()["error"]["code"]) == (403, "model_not_allowed")
    assert hub.call_count == 0
    assert reports[0].model_requested == DEFAULT
