"""Hugging Face tasks behind OpenAI's endpoints, converted both ways: embeddings
(feature-extraction), transcriptions (automatic-speech-recognition) and images (text-to-image).
The shapes are `gateway.embeddings`, `gateway.audio` and `gateway.images`; this is their I/O."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpResponse

from accounts.models import UsageSource
from gateway import audio, catalog, converter, upstream
from gateway import images as images_api
from gateway.converter import Usage
from gateway.embeddings import EmbeddingsRequest, embeddings_answer, feature_extraction_body
from gateway.exchange import Exchange
from gateway.relay import may_call


async def embeddings(request: EmbeddingsRequest, exchange: Exchange) -> HttpResponse:
    """Embeddings through HF Inference's feature-extraction pipeline, in OpenAI's shape."""
    # The pipeline is HF Inference's: it answers, or fails, as that provider.
    exchange.model_requested, exchange.provider = request.model, "hf-inference"
    may_call(exchange, request.model)
    deadline = upstream.deadline()
    response = await exchange.send(
        "POST",
        f"/models/{request.model}/pipeline/feature-extraction",
        deadline,
        base=settings.HF_INFERENCE_URL,
        body=feature_extraction_body(request),
    )
    raw = await exchange.read(response, deadline)
    if len(raw) < 256 * 1024:
        body, usage = _embeddings_body(raw, request)
    else:  # thousands of vectors take a while to convert: not on the loop, where streams wait
        body, usage = await sync_to_async(_embeddings_body, thread_sensitive=False)(raw, request)
    exchange.model_answered = request.model
    # The pipeline counts no tokens: the estimate is the answer's usage, and the record's.
    exchange.note_usage(None, usage)
    return HttpResponse(body, content_type="application/json")


def _embeddings_body(raw: bytes, request: EmbeddingsRequest) -> tuple[bytes, Usage]:
    answer = embeddings_answer(raw, request)
    tokens = answer["usage"]["prompt_tokens"]
    return converter.dump_json(answer), Usage(tokens, 0, tokens)


async def transcription(request: audio.TranscriptionRequest, exchange: Exchange) -> HttpResponse:
    """Speech to text through HF Inference's automatic-speech-recognition, in OpenAI's shape.
    Counted in seconds of audio, as read from the file."""
    exchange.model_requested, exchange.provider = request.model, audio.PROVIDER
    may_call(exchange, f"{request.model}:{audio.PROVIDER}")  # the route it takes, whatever was asked
    if len(request.audio) < 256 * 1024:
        body, content_type = audio.asr_body(request)
    else:  # base64-encoding megabytes of audio: not on the loop
        body, content_type = await sync_to_async(audio.asr_body, thread_sensitive=False)(request)
    deadline = upstream.deadline()
    response = await exchange.send(
        "POST",
        f"/models/{request.model}",
        deadline,
        base=settings.HF_INFERENCE_URL,
        body=body,
        content_type=content_type,
    )
    answer, answer_type = audio.transcription_answer(await exchange.read(response, deadline), request)
    exchange.model_answered = request.model
    # Only an answered request counts its seconds. The pipeline counts nothing: the proxy read
    # them from the file (estimated); a format whose duration it cannot read has none (missing).
    if request.seconds is not None:
        exchange.units, exchange.usage_source = request.seconds, UsageSource.ESTIMATED
    return HttpResponse(answer, content_type=answer_type)


async def images(request: images_api.ImagesRequest, exchange: Exchange) -> HttpResponse:
    """Images from Hugging Face's text-to-image, in OpenAI's shape. Where the provider makes one
    image a call, the `n` calls run at once; the record counts the images that came back."""
    exchange.model_requested = request.model
    may_call(exchange, request.model)
    offers = (
        await catalog.provider_mapping(exchange, request.base_model)
        if images_api.needs_mapping(request)
        else None
    )
    route = images_api.choose_route(request, offers)
    exchange.provider = route.provider
    call = images_api.provider_call(request, route)
    base = settings.HF_INFERENCE_URL if route.provider == images_api.HF_INFERENCE else settings.HF_ROUTER_URL
    deadline = upstream.deadline()

    async def generate() -> list[str]:
        response = await exchange.send(
            "POST", call.path, deadline, base=base, body=call.body, accept=call.accept
        )
        content_type = response.headers.get("content-type", "")
        return images_api.images_from(await exchange.read(response, deadline), route, content_type)

    results = await asyncio.gather(*(generate() for _ in range(call.calls)), return_exceptions=True)
    made = [image for result in results if isinstance(result, list) for image in result]
    if made:  # made and billed by the provider, even when another call failed
        exchange.units, exchange.usage_source = Decimal(len(made)), UsageSource.PROVIDER
    failure = next((result for result in results if isinstance(result, BaseException)), None)
    if failure is not None:
        raise failure
    exchange.model_answered = route.provider_model
    answer = images_api.images_answer(made, request.response_format, int(time.time()))
    return HttpResponse(converter.dump_json(answer), content_type="application/json")
