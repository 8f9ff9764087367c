"""OpenAI's image generation API in, Hugging Face's text-to-image out, and back.

Pure like the converter: no I/O. `parse_request` reads the client's request, `choose_route` picks
the provider (from the model's suffix, or the Hub's `inferenceProviderMapping`), `provider_call`
builds what to send it, `images_from` reads its answer and `images_answer` writes OpenAI's. Bad
client input raises `InvalidRequest`, an unusable answer `BadAnswer` (both `gateway.converter`).

The providers: HF Inference (`/hf-inference/models/{model}`, answering with the image's bytes),
and those whose text-to-image routes are OpenAI-shaped already, sent what huggingface_hub and
huggingface.js send them. The rest (fal-ai, replicate and other queue-based APIs) are refused.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Any

from accounts.prices import ROUTING_POLICIES, split_route
from gateway.converter import (
    BadAnswer,
    InvalidRequest,
    check_model,
    drop_control_fields,
    dump_json,
    is_integer,
    is_model_id,
    parse_answer,
    parse_json_object,
)

TASK = "text-to-image"
HF_INFERENCE = "hf-inference"
# n > 1 costs n images at the provider (n calls at once, where a call makes one): a cap keeps
# one request from running up a bill or a rate limit.
MAX_IMAGES = 4
MIN_SIDE, MAX_SIDE = 64, 4096


@dataclass(frozen=True)
class _Style:
    """How a provider with an OpenAI-shaped route (`/{provider}/v1/images/generations`) takes a
    request: as huggingface_hub and huggingface.js send it."""

    response_format: str  # its word for a base64 answer
    takes_n: bool = False  # makes `n` images in one call (else one call an image)
    size: bool = False  # `size: "WxH"` rather than `width` and `height`
    renamed: dict[str, str] = field(default_factory=dict)
    dropped: tuple[str, ...] = ()


_OPENAI_SHAPED = {
    "together": _Style("base64", takes_n=True, renamed={"num_inference_steps": "steps"}),
    "nebius": _Style("b64_json", dropped=("guidance_scale",)),
    "nscale": _Style("b64_json", size=True, dropped=("num_inference_steps",)),
}
SUPPORTED_PROVIDERS = (HF_INFERENCE, *_OPENAI_SHAPED)

# OpenAI's hints that Hugging Face's text-to-image has no counterpart for: taken and ignored
# (LangChain's DALL-E wrapper always sends `quality`).
IGNORED = ("quality", "style", "user", "moderation")
# OpenAI's options that cannot be honoured, with the value that asks for nothing: any other is
# refused, since the answer would not be what was asked for.
_REFUSED = {
    "stream": False,
    "partial_images": 0,
    "background": "auto",
    "output_format": None,
    "output_compression": None,
}
# Hugging Face's own text-to-image parameters, which a client may add (the openai SDK's
# `extra_body`): passed on as each provider takes them.
_PARAMETERS = {
    "negative_prompt": (lambda v: isinstance(v, str), "a string"),
    "num_inference_steps": (lambda v: is_integer(v) and v > 0, "a positive integer"),
    "guidance_scale": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    "seed": (is_integer, "an integer"),
}
_KNOWN = {"model", "prompt", "n", "size", "response_format", *IGNORED, *_REFUSED, *_PARAMETERS}
_SIZE = re.compile(r"(\d{1,5})x(\d{1,5})")


@dataclass(frozen=True)
class ImagesRequest:
    model: str  # as asked, suffix and all: what allow-lists and records see
    base_model: str  # the Hugging Face model id
    provider: str  # the provider the suffix names; "" for none or a routing policy (`:fastest`)
    prompt: str
    n: int = 1
    width: int | None = None
    height: int | None = None
    response_format: str = "b64_json"
    parameters: dict[str, Any] = field(default_factory=dict)


def parse_request(raw: bytes, default_model: str) -> ImagesRequest:
    """OpenAI's `POST /v1/images/generations` body, checked."""
    body = parse_json_object(raw)
    drop_control_fields(body)
    unknown = sorted(set(body) - _KNOWN)
    if unknown:
        raise InvalidRequest(f"Unknown parameter: `{unknown[0]}`.", unknown[0])
    model = body.get("model", default_model)
    check_model(model)
    base_model, suffix = split_route(model)
    if not is_model_id(base_model):
        raise InvalidRequest(
            "`model` must be a Hugging Face model id such as `org/name`, optionally with a provider "
            "suffix (`org/name:together`).",
            "model",
        )
    provider = "" if suffix in ROUTING_POLICIES else suffix
    if provider and provider not in SUPPORTED_PROVIDERS:
        raise InvalidRequest(
            f"Images cannot be generated through `{provider}` here. hfproxy maps Hugging Face's "
            f"text-to-image on {_names(SUPPORTED_PROVIDERS)} (fal-ai, replicate and the other "
            "providers' queue-based APIs are not mapped): name one of these, or no provider to let "
            "the Hub's list choose.",
            "model",
        )

    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidRequest("`prompt` must be a non-empty string.", "prompt")
    n = body.get("n")
    n = 1 if n is None else n
    if not is_integer(n) or not 1 <= n <= MAX_IMAGES:
        raise InvalidRequest(f"`n` must be an integer from 1 to {MAX_IMAGES}.", "n")
    width, height = _size(body.get("size"))
    response_format = body.get("response_format") or "b64_json"
    if response_format not in ("b64_json", "url"):
        raise InvalidRequest("`response_format` must be `b64_json` or `url`.", "response_format")

    for name, asks_nothing in _REFUSED.items():
        value = body.get(name)
        if value is not None and value != asks_nothing:
            raise InvalidRequest(
                f"`{name}` cannot be honoured: Hugging Face's text-to-image has no such option "
                "(the model decides the image's format and background, and images are not streamed).",
                name,
            )
    parameters = {}
    for name, (fits, kind) in _PARAMETERS.items():
        value = body.get(name)
        if value is None:
            continue
        if not fits(value):
            raise InvalidRequest(f"`{name}` must be {kind}.", name)
        parameters[name] = value
    return ImagesRequest(
        model=model,
        base_model=base_model,
        provider=provider,
        prompt=prompt,
        n=int(n),
        width=width,
        height=height,
        response_format=response_format,
        parameters=parameters,
    )


def _size(size: Any) -> tuple[int | None, int | None]:
    if size is None or size == "auto":  # the model's own default
        return None, None
    match = _SIZE.fullmatch(size) if isinstance(size, str) else None
    if match is None:
        raise InvalidRequest(
            "`size` must be `WIDTHxHEIGHT` in pixels (such as `1024x1024`) or `auto`.", "size"
        )
    width, height = int(match[1]), int(match[2])
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
        raise InvalidRequest(f"`size`: each side must be from {MIN_SIDE} to {MAX_SIDE} pixels.", "size")
    return width, height


def _names(providers: Any) -> str:
    return ", ".join(f"`{name}`" for name in providers)


# --- Which provider ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProviderOffer:
    """One line of the Hub's `inferenceProviderMapping`: a provider serving the model."""

    provider: str
    provider_id: str  # the model's id at that provider
    status: str = "live"  # or "staging", "error"
    task: str = TASK


def provider_mapping(answer: Any) -> list[ProviderOffer]:
    """The providers of the Hub's model info (`?expand[]=inferenceProviderMapping`), in the Hub's
    order. The Hub has sent it as an object by provider (`{"together": {"providerId", "status",
    "task"}}`) and as a list (`[{"provider", "providerId", "status", "task"}]`)."""
    if not isinstance(answer, dict):
        raise BadAnswer("the Hub's model info is not an object")
    mapping = answer.get("inferenceProviderMapping")
    if isinstance(mapping, dict):
        entries = [{**entry, "provider": name} for name, entry in mapping.items() if isinstance(entry, dict)]
    elif isinstance(mapping, list):
        entries = [entry for entry in mapping if isinstance(entry, dict)]
    elif mapping is None:
        entries = []
    else:
        raise BadAnswer("the Hub's inferenceProviderMapping is neither an object nor a list")
    offers = []
    for entry in entries:
        provider, provider_id = entry.get("provider"), entry.get("providerId")
        if isinstance(provider, str) and provider and isinstance(provider_id, str) and provider_id:
            status, task = entry.get("status"), entry.get("task")
            offers.append(
                ProviderOffer(
                    provider,
                    provider_id,
                    status if isinstance(status, str) else "",
                    task if isinstance(task, str) else "",
                )
            )
    return offers


@dataclass(frozen=True)
class Route:
    provider: str
    provider_model: str  # the model's id at the provider


def needs_mapping(request: ImagesRequest) -> bool:
    """Only HF Inference takes the Hugging Face model id as it is."""
    return request.provider != HF_INFERENCE


def choose_route(request: ImagesRequest, offers: list[ProviderOffer] | None) -> Route:
    """The provider to call, and the model's id there.

    A suffix names the provider; without one (or with a policy such as `:fastest`, which only the
    router's chat route implements), the first provider the Hub lists for text-to-image that
    hfproxy maps, a live one before one whose status is not; HF Inference when the Hub lists none.
    """
    if request.provider == HF_INFERENCE:
        return Route(HF_INFERENCE, request.base_model)
    offers = offers or []
    model = request.base_model
    if request.provider:
        offer = next((o for o in offers if o.provider == request.provider), None)
        if offer is None:
            listed = _names(o.provider for o in offers if o.task == TASK) or "none"
            raise InvalidRequest(
                f"`{request.provider}` does not serve `{model}` (the Hub lists these providers for its "
                f"text-to-image: {listed}).",
                "model",
            )
        if offer.task != TASK:
            raise InvalidRequest(
                f"`{request.provider}` serves `{model}` for {offer.task}, not for text-to-image.", "model"
            )
        return Route(offer.provider, offer.provider_id)
    for_images = [o for o in offers if o.task == TASK]
    mapped = [o for o in for_images if o.provider in SUPPORTED_PROVIDERS]
    if mapped:
        chosen = next((o for o in mapped if o.status == "live"), mapped[0])
        return Route(chosen.provider, chosen.provider_id)
    if for_images:
        raise InvalidRequest(
            f"`{model}` generates images only on {_names(o.provider for o in for_images)}, whose APIs "
            f"hfproxy does not map (it maps {_names(SUPPORTED_PROVIDERS)}).",
            "model",
        )
    return Route(HF_INFERENCE, model)  # which answers for itself if it does not serve the model


# --- The call and its answer ---------------------------------------------------------------------


@dataclass(frozen=True)
class ProviderCall:
    path: str  # under HF_INFERENCE_URL for HF Inference, else under the router's root
    body: bytes
    accept: str | None  # None: JSON
    calls: int  # how many such calls make the request's `n` images


def provider_call(request: ImagesRequest, route: Route) -> ProviderCall:
    """What to send the provider, and how many times."""
    if route.provider == HF_INFERENCE:
        if not is_model_id(route.provider_model):
            raise BadAnswer(f"the Hub's id for {HF_INFERENCE} is not a model id")
        parameters = {**_dimensions(request), **request.parameters}
        body = dump_json({"inputs": request.prompt, "parameters": parameters})
        return ProviderCall(f"/models/{route.provider_model}", body, "image/png", request.n)
    style = _OPENAI_SHAPED[route.provider]
    fields: dict[str, Any] = {
        "model": route.provider_model,
        "prompt": request.prompt,
        "response_format": style.response_format,
    }
    if request.width is not None:
        fields.update({"size": f"{request.width}x{request.height}"} if style.size else _dimensions(request))
    if style.takes_n:
        fields["n"] = request.n
    for name, value in request.parameters.items():
        if name not in style.dropped:
            fields[style.renamed.get(name, name)] = value
    path = f"/{route.provider}/v1/images/generations"
    return ProviderCall(path, dump_json(fields), None, 1 if style.takes_n else request.n)


def _dimensions(request: ImagesRequest) -> dict[str, int]:
    return {} if request.width is None else {"width": request.width, "height": request.height}


def images_from(raw: bytes, route: Route, content_type: str = "") -> list[str]:
    """The images of one answer, base64-encoded: HF Inference's image bytes, or an OpenAI-shaped
    provider's `data[].b64_json`."""
    if route.provider == HF_INFERENCE:
        if not (content_type.startswith("image/") or image_type(raw)):
            answer = _json_or_none(raw)
            raise BadAnswer("the answer is not an image", error=answer if isinstance(answer, dict) else None)
        if not raw:
            raise BadAnswer("the image is empty")
        return [base64.b64encode(raw).decode()]
    answer = parse_answer(raw)
    data = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(data, list) or not data:
        error = answer if isinstance(answer, dict) and "error" in answer else None
        raise BadAnswer("the answer holds no images", error=error)
    images = [item.get("b64_json") if isinstance(item, dict) else None for item in data]
    if not all(isinstance(image, str) and image for image in images):
        raise BadAnswer("an image came without its `b64_json` (a URL instead?)")
    return images


def _json_or_none(raw: bytes) -> Any:
    try:
        return parse_answer(raw)
    except BadAnswer:
        return None


_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF8", "image/gif"),
)


def image_type(data: bytes) -> str | None:
    """The image's media type from its first bytes (PNG, JPEG, WebP, GIF), or None."""
    for signature, media_type in _SIGNATURES:
        if data.startswith(signature):
            return media_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def data_url(image: str) -> str:
    """A base64 image as a `data:` URL, typed by its first bytes (providers send JPEG and WebP
    as well as PNG)."""
    try:
        head = base64.b64decode(image[:24])
    except (binascii.Error, ValueError):
        raise BadAnswer("an image is not valid base64") from None
    return f"data:{image_type(head) or 'application/octet-stream'};base64,{image}"


def images_answer(images: list[str], response_format: str, created: int) -> dict[str, Any]:
    """OpenAI's answer. A `url` is a `data:` URL: hfproxy keeps no images to link to."""
    if response_format == "url":
        return {"created": created, "data": [{"url": data_url(image)} for image in images]}
    return {"created": created, "data": [{"b64_json": image} for image in images]}
