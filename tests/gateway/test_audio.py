"""Transcriptions: OpenAI's multipart form in, HF Inference's automatic-speech-recognition out,
OpenAI's answer back: the pure gateway.audio and gateway.multipart, then the endpoint, its errors
and its records (seconds of audio, priced per second, counted by a USD budget)."""

from __future__ import annotations

import base64
import io
import json
import struct
import wave
from decimal import Decimal

import httpx
import pytest
import respx
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile

from accounts import keys, services
from accounts.models import ApiKey, ModelPrice, UsageRecord
from accounts.usage import writer
from gateway import audio, multipart, upstream
from gateway.converter import BadAnswer, InvalidRequest
from tests.support.clients import AsyncClient

URL = "/v1/audio/transcriptions"
DEFAULT = "openai/whisper-large-v3"
ASR = f"{settings.HF_INFERENCE_URL}/models/{DEFAULT}"


def wav(seconds: float, rate: int = 16000) -> bytes:
    """A mono 16-bit WAV of silence, `seconds` long."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\0\0" * round(rate * seconds))
    return buffer.getvalue()


def flac_header(seconds: int, rate: int = 16000) -> bytes:
    """A FLAC stream's header alone (its STREAMINFO says how long it is): enough to measure."""
    info = (rate << 44) | (0 << 41) | (15 << 36) | (rate * seconds)  # mono, 16 bits, its samples
    streaminfo = struct.pack(">HH", 4096, 4096) + bytes(6) + info.to_bytes(8, "big") + bytes(16)
    return b"fLaC" + bytes([0x80, 0, 0, len(streaminfo)]) + streaminfo


def form(fields: dict | None = None, data: bytes | None = None, **upload) -> multipart.Form:
    files = {}
    if data is not None:
        part = multipart.Part(
            upload.get("filename", "speech.wav"), upload.get("content_type", "audio/wav"), data
        )
        files["file"] = [part]
    return multipart.Form(fields={name: [value] for name, value in (fields or {}).items()}, files=files)


def parse(data: bytes | None = b"RIFF", **fields) -> audio.TranscriptionRequest:
    return audio.parse_transcription_request(form(fields, data), DEFAULT)


# --- The pure modules ---------------------------------------------------------------------------


def test_the_duration_is_read_from_the_file():
    assert audio.audio_seconds(wav(2.5)) == Decimal("2.500")
    assert audio.audio_seconds(flac_header(3)) == Decimal("3.000")
    # Not audio, or a format mutagen cannot read: unknown, not zero.
    assert audio.audio_seconds(b"\x1aE\xdf\xa3 webm, say") is None
    assert audio.audio_seconds(b"RIFF....WAVEbroken") is None


def test_defaults_and_a_plain_upload_goes_as_it_came():
    request = parse(wav(1.0))
    assert (request.model, request.response_format, request.seconds) == (DEFAULT, "json", Decimal("1.000"))
    assert audio.asr_body(request) == (request.audio, "audio/wav")


def test_parameters_send_the_audio_base64_encoded_as_huggingface_hub_does():
    request = parse(b"audio bytes", response_format="verbose_json", temperature="0.4", language="fr")
    body, content_type = audio.asr_body(request)
    assert content_type == "application/json"
    assert json.loads(body) == {
        "inputs": base64.b64encode(b"audio bytes").decode(),
        "parameters": {
            "return_timestamps": True,
            "generation_parameters": {"do_sample": True, "temperature": 0.4},
        },
    }


@pytest.mark.parametrize(
    ("declared", "filename", "sent"),
    [
        ("audio/mpeg", "x.bin", "audio/mpeg"),
        ("application/octet-stream", "talk.flac", "audio/flac"),
        ("", "talk.mp3", "audio/mpeg"),
        ("application/octet-stream", "upload", "application/octet-stream"),
    ],
)
def test_the_audio_keeps_its_content_type_or_takes_its_file_names(declared, filename, sent):
    request = audio.parse_transcription_request(
        form({}, b"x", filename=filename, content_type=declared), DEFAULT
    )
    assert request.content_type == sent


@pytest.mark.parametrize(
    ("model", "parsed"),
    [
        ("distil-whisper/distil-large-v3", "distil-whisper/distil-large-v3"),
        ("openai/whisper-large-v3:hf-inference", DEFAULT),
        ("openai/whisper-large-v3:fastest", DEFAULT),  # a policy: HF Inference is the one route
    ],
)
def test_models_and_suffixes(model, parsed):
    assert parse(model=model).model == parsed


@pytest.mark.parametrize(
    ("data", "fields", "param"),
    [
        (None, {}, "file"),
        (b"", {}, "file"),
        (None, {"file": "not a file"}, "file"),
        (b"x", {"model": "openai/whisper-large-v3:fal-ai"}, "model"),
        (b"x", {"model": "openai/whisper-large-v3:replicate"}, "model"),
        (b"x", {"model": "../../v1/chat/completions"}, "model"),
        (b"x", {"model": "org/name/extra"}, "model"),
        (b"x", {"response_format": "xml"}, "response_format"),
        (b"x", {"timestamp_granularities[]": "word"}, "timestamp_granularities"),
        (b"x", {"stream": "true"}, "stream"),
        (b"x", {"temperature": "hot"}, "temperature"),
        (b"x", {"temperature": "1.5"}, "temperature"),
        (b"x", {"temperature": "nan"}, "temperature"),
    ],
)
def test_bad_requests(data, fields, param):
    with pytest.raises(InvalidRequest) as caught:
        parse(data, **fields)
    assert caught.value.param == param


def test_another_provider_is_refused_naming_the_one_served():
    with pytest.raises(InvalidRequest) as caught:
        parse(model="openai/whisper-large-v3:fal-ai")
    assert "hf-inference" in caught.value.message


def test_multipart_bodies():
    body = (
        b"--b\r\nContent-Disposition: form-data; name=model\r\n\r\norg/m\r\n"
        b'--b\r\nContent-Disposition: form-data; name=file; filename="a.wav"\r\n'
        b"Content-Type: audio/wav\r\n\r\n\x00\x01\r\n--b--\r\n"
    )
    parsed = multipart.parse(body, "multipart/form-data; boundary=b")
    assert parsed == multipart.Form(
        {"model": ["org/m"]}, {"file": [multipart.Part("a.wav", "audio/wav", b"\x00\x01")]}
    )
    for content_type in ("application/json", "multipart/form-data", "multipart/form-data; boundary=\x7f"):
        with pytest.raises(InvalidRequest) as caught:
            multipart.parse(body, content_type)
        assert caught.value.param == "file"


ANSWER = {
    "text": " Hello there. General Kenobi!",
    "chunks": [
        {"text": " Hello there.", "timestamp": [0.0, 1.5]},
        {"text": " General Kenobi!", "timestamp": [1.5, None]},  # Whisper's open last end
    ],
}


def answer(response_format: str, seconds: str | None = "2.25", raw: dict = ANSWER) -> tuple[bytes, str]:
    request = audio.TranscriptionRequest(
        model=DEFAULT,
        audio=b"x",
        content_type="audio/wav",
        response_format=response_format,
        language="en",
        seconds=Decimal(seconds) if seconds else None,
    )
    return audio.transcription_answer(json.dumps(raw).encode(), request)


def test_json_text_and_verbose_json_answers():
    body, content_type = answer("json")
    assert content_type == "application/json"
    assert json.loads(body) == {
        "text": "Hello there. General Kenobi!",
        "usage": {"type": "duration", "seconds": 2.25},
    }
    assert answer("text") == (b"Hello there. General Kenobi!", "text/plain; charset=utf-8")
    verbose = json.loads(answer("verbose_json")[0])
    assert verbose == {
        "task": "transcribe",
        "language": "en",
        "duration": 2.25,
        "text": "Hello there. General Kenobi!",
        "segments": [
            {"id": 0, "start": 0.0, "end": 1.5, "text": " Hello there."},
            {"id": 1, "start": 1.5, "end": 2.25, "text": " General Kenobi!"},
        ],
        "usage": {"type": "duration", "seconds": 2.25},
    }
    # A duration the file did not tell: the last segment's end, and no usage.
    unknown = json.loads(answer("verbose_json", seconds=None)[0])
    assert (unknown["duration"], "usage" in unknown) == (1.5, False)


def test_captions():
    assert answer("srt")[0].decode() == (
        "1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n2\n00:00:01,500 --> 00:00:02,250\nGeneral Kenobi!\n\n"
    )
    assert answer("vtt")[0].decode() == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHello there.\n\n00:00:01.500 --> 00:00:02.250\nGeneral Kenobi!\n\n"
    )
    # A model that gives no timestamps: one cue for the whole audio.
    assert answer("srt", raw={"text": "hi"})[0].decode() == "1\n00:00:00,000 --> 00:00:02,250\nhi\n\n"


@pytest.mark.parametrize(
    "raw", [b"<html>", b'{"error": "Model is loading"}', b'{"chunks": []}', b'{"text": "x", "chunks": [{}]}']
)
def test_answers_that_cannot_be_relayed(raw):
    with pytest.raises(BadAnswer):
        audio.transcription_answer(raw, parse())


# --- Through the endpoint -----------------------------------------------------------------------


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


async def transcribe(
    client, data: bytes | None = None, filename="speech.wav", content_type="audio/wav", **fields
):
    if data is not None:
        fields["file"] = SimpleUploadedFile(filename, data, content_type)
    return await client.post(URL, fields)  # multipart/form-data, as the test client encodes it


async def test_it_sends_the_audio_and_records_its_seconds(async_client, inference, reports):
    route = inference.post(ASR).respond(200, json={"text": " Hello."})
    audio_file = wav(1.25)
    response = await transcribe(async_client, audio_file)
    assert response.status_code == 200
    assert response.json() == {"text": "Hello.", "usage": {"type": "duration", "seconds": 1.25}}
    sent = route.calls.last.request
    assert (sent.content, sent.headers["content-type"]) == (audio_file, "audio/wav")
    assert sent.headers["authorization"] == f"Bearer {settings.HF_TOKEN}"
    (report,) = reports
    assert (report.endpoint, report.model_requested, report.provider, report.outcome) == (
        "audio_transcriptions",
        DEFAULT,
        "hf-inference",
        "ok",
    )
    assert (report.units, report.usage_source, report.usage) == (Decimal("1.250"), "estimated", None)


async def test_verbose_json_and_text_through_the_endpoint(async_client, inference):
    route = inference.post(f"{settings.HF_INFERENCE_URL}/models/distil-whisper/distil-large-v3").respond(
        200, json=ANSWER
    )
    verbose = await transcribe(
        async_client, wav(2.25), model="distil-whisper/distil-large-v3", response_format="verbose_json"
    )
    assert [s["text"] for s in verbose.json()["segments"]] == [" Hello there.", " General Kenobi!"]
    assert json.loads(route.calls.last.request.content)["parameters"] == {"return_timestamps": True}
    text = await transcribe(
        async_client, wav(1), model="distil-whisper/distil-large-v3", response_format="text"
    )
    assert (text["Content-Type"], text.content) == (
        "text/plain; charset=utf-8",
        b"Hello there. General Kenobi!",
    )


async def test_a_duration_it_cannot_read_leaves_the_record_without_units(async_client, inference, reports):
    inference.post(ASR).respond(200, json={"text": "hi"})
    response = await transcribe(
        async_client, b"\x1aE\xdf\xa3 webm", filename="a.webm", content_type="video/webm"
    )
    assert response.json() == {"text": "hi"}
    (report,) = reports
    assert (report.units, report.usage_source) == (None, "missing")


async def test_bad_requests_are_400s_naming_the_field(async_client, inference, reports):
    no_file = await transcribe(async_client, model=DEFAULT)
    empty = await transcribe(async_client, b"")
    not_multipart = await async_client.post(URL, b'{"model": "x"}', content_type="application/json")
    fal = await transcribe(async_client, wav(1), model=f"{DEFAULT}:fal-ai")
    assert [(r.status_code, r.json()["error"]["param"]) for r in (no_file, empty, not_multipart, fal)] == [
        (400, "file"),
        (400, "file"),
        (400, "file"),
        (400, "model"),
    ]
    assert fal.json()["error"]["type"] == "invalid_request_error"
    assert [r.outcome for r in reports] == ["bad_request"] * 4
    assert not inference.calls


async def test_errors_are_openai_errors_and_count_no_seconds(async_client, inference, reports):
    inference.post(ASR).respond(
        503, json={"error": "Model openai/whisper-large-v3 is currently loading", "estimated_time": 20}
    )
    response = await transcribe(async_client, wav(1))
    assert (response.status_code, response["Retry-After"]) == (503, "20")
    assert "currently loading" in response.json()["error"]["message"]
    (report,) = reports
    assert (report.outcome, report.provider, report.units) == ("upstream_error", "hf-inference", None)


async def test_a_key_limited_to_other_models_is_refused(async_client, inference, api_key):
    await ApiKey.objects.aupdate(allowed_models="org/chat-*")
    keys.reset()
    response = await transcribe(async_client, wav(1))
    assert (response.status_code, response.json()["error"]["code"]) == (403, "model_not_allowed")
    # The allow-list names models; HF Inference's route of an allowed one is allowed.
    await ApiKey.objects.aupdate(allowed_models="openai/whisper-*")
    keys.reset()
    inference.post(ASR).respond(200, json={"text": "ok"})
    assert (await transcribe(async_client, wav(1), model=f"{DEFAULT}:fastest")).status_code == 200


@pytest.fixture
def usd_key(user) -> str:
    return services.api_key_create(user=user, name="dollar", usd_budget=Decimal("0.01"))[1]


async def test_a_usd_budget_counts_audio_seconds(usd_key, inference, usage_db):
    await ModelPrice.objects.acreate(
        model=DEFAULT, provider="hf-inference", unit=ModelPrice.Unit.SECONDS, per_unit=Decimal("0.001")
    )
    client = AsyncClient(authorization=f"Bearer {usd_key}")
    inference.post(ASR).respond(200, json={"text": "hi"})

    async def ask() -> int:
        response = await transcribe(client, wav(4))
        await writer.flush()  # priced and counted as it is written
        return response.status_code

    # 4 seconds at $0.001 = $0.004 a request against $0.01: the third crosses it, the fourth is refused.
    assert [await ask() for _ in range(4)] == [200, 200, 200, 429]
    costs = [(r.units, r.cost_usd) async for r in UsageRecord.objects.filter(outcome="ok")]
    assert costs == [(Decimal("4.000"), Decimal("0.004"))] * 3
