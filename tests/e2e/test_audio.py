"""Transcriptions end to end: the openai SDK's `audio.transcriptions.create` (json, text,
verbose_json, srt) through a real server to the fake router's automatic-speech-recognition; one
record a request, with the audio's seconds."""

from __future__ import annotations

import io
import wave
from decimal import Decimal

import openai
import pytest

from tests.support import fake_router
from tests.support.harness import router_and_proxy

pytestmark = pytest.mark.e2e
MODEL = "openai/whisper-large-v3"


def wav(seconds: float, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\0\0" * round(rate * seconds))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with router_and_proxy(tmp_path_factory.mktemp("audio")) as (router, proxy):
        yield router, proxy


def records(proxy, count: int) -> list[dict]:
    return proxy.endpoint_records(
        "audio_transcriptions", count, "model_requested, outcome, units, usage_source, provider"
    )


def test_the_sdk_transcribes_in_every_format_and_each_request_is_recorded(served):
    router, proxy = served
    client = openai.OpenAI(base_url=proxy.api, api_key=proxy.keys["team"], max_retries=0)
    audio = wav(1.5)
    heard = fake_router.transcript(audio).strip()

    plain = client.audio.transcriptions.create(model=MODEL, file=("speech.wav", audio, "audio/wav"))
    assert plain.text == heard
    assert router.stats()["last_audio"] == {
        "content_type": "audio/wav",
        "bytes": len(audio),
        "parameters": {},
    }

    text = client.audio.transcriptions.create(model=MODEL, file=("speech.wav", audio), response_format="text")
    assert text == heard

    verbose = client.audio.transcriptions.create(
        model=MODEL,
        file=("speech.wav", audio),
        response_format="verbose_json",
        timestamp_granularities=["segment"],
        language="en",
    )
    assert (verbose.text, verbose.duration, verbose.language) == (heard, 1.5, "en")
    assert [(s.start, s.end) for s in verbose.segments] == [(0.0, 1.0), (1.0, 1.5)]
    assert router.stats()["last_audio"]["parameters"] == {"return_timestamps": True}

    captions = client.audio.transcriptions.create(
        model=MODEL, file=("speech.wav", audio), response_format="srt"
    )
    assert captions.startswith("1\n00:00:00,000 --> 00:00:01,000\n")

    rows = records(proxy, 4)
    assert [(r["model_requested"], r["outcome"], r["usage_source"], r["provider"]) for r in rows] == [
        (MODEL, "ok", "estimated", "hf-inference")
    ] * 4
    assert {Decimal(str(r["units"])) for r in rows} == {Decimal("1.5")}


def test_refusals_reach_the_sdk_as_openai_errors(served):
    _, proxy = served
    client = openai.OpenAI(base_url=proxy.api, api_key=proxy.keys["team"], max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.transcriptions.create(model=f"{MODEL}:fal-ai", file=("speech.wav", wav(0.5)))
    assert caught.value.body["param"] == "model"
    assert "hf-inference" in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:  # HF Inference does not serve it
        client.audio.transcriptions.create(model="nobody/asr", file=("speech.wav", wav(0.5)))
    assert "not supported" in caught.value.message
