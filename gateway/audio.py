"""OpenAI's audio transcriptions in, Hugging Face's automatic-speech-recognition out, and back.

Pure like the converter: no Django, no I/O (the form arrives parsed, from `gateway.multipart`).
Bad client input raises `InvalidRequest`, an unusable answer `BadAnswer`.

What maps onto what: `file` is the body sent to HF Inference (`POST /models/{model}`), as it came
with its content type; `response_format` `verbose_json`, `srt` and `vtt` ask the pipeline for
timestamps (`return_timestamps`), and a `temperature` above 0 for sampling at it
(`generation_parameters`), and with either the audio goes base64-encoded in a JSON body, as
`huggingface_hub` sends it. The task has no parameter for `language` or `prompt`: they are
accepted and not forwarded (Whisper detects the language itself).
"""

from __future__ import annotations

import base64
import io
import math
import mimetypes
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import mutagen

from accounts.prices import ROUTING_POLICIES
from gateway.converter import BadAnswer, InvalidRequest, dump_json, is_model_id, parse_answer

if TYPE_CHECKING:
    from gateway.multipart import Form

PROVIDER = "hf-inference"  # the one provider whose speech recognition route takes a plain upload
RESPONSE_FORMATS = ("json", "text", "verbose_json", "srt", "vtt")
_TIMED = ("verbose_json", "srt", "vtt")
_GENERIC_TYPES = ("", "application/octet-stream")
MILLISECOND = Decimal("0.001")  # the usage record's precision for seconds


@dataclass
class TranscriptionRequest:
    model: str  # an HF model id, without a provider suffix
    audio: bytes
    content_type: str  # the audio's, as the client named it or its file name implies
    response_format: str = "json"
    temperature: float = 0.0
    language: str | None = None
    seconds: Decimal | None = None  # the audio's duration, read from the file; None: unknown

    @property
    def timestamps(self) -> bool:
        return self.response_format in _TIMED


def parse_transcription_request(form: Form, default_model: str) -> TranscriptionRequest:
    """OpenAI's transcription form, checked; the audio's duration measured."""
    uploads = form.files.get("file") or []
    if not uploads:
        named = "file" in form.fields
        raise InvalidRequest(
            "`file` must be an uploaded file (a multipart part with a file name)"
            if named
            else "`file` is required: the audio to transcribe, as a multipart file part.",
            "file",
        )
    upload = uploads[0]
    if not upload.data:
        raise InvalidRequest("`file` is empty.", "file")

    model = _field(form, "model") or default_model
    model, _, suffix = model.strip().partition(":")
    if suffix and suffix != PROVIDER and suffix not in ROUTING_POLICIES:
        raise InvalidRequest(
            f"Speech recognition is served on `{PROVIDER}` only: `{suffix}`'s route takes no "
            f"plain upload (fal-ai's is a queue, replicate's takes a URL). Use `{model}` or "
            f"`{model}:{PROVIDER}`.",
            "model",
        )
    if not is_model_id(model):
        raise InvalidRequest(
            "`model` must be a Hugging Face model id such as `openai/whisper-large-v3`.", "model"
        )

    response_format = _field(form, "response_format") or "json"
    if response_format not in RESPONSE_FORMATS:
        raise InvalidRequest(
            f"`response_format` must be one of {', '.join(RESPONSE_FORMATS)}.", "response_format"
        )
    granularities = form.fields.get("timestamp_granularities[]", []) + form.fields.get(
        "timestamp_granularities", []
    )
    if "word" in granularities:
        raise InvalidRequest(
            "Word timestamps are not offered by Hugging Face's speech recognition: "
            "`timestamp_granularities` may only be `segment`.",
            "timestamp_granularities",
        )
    if (_field(form, "stream") or "false").lower() not in ("false", "0"):
        raise InvalidRequest("Streamed transcriptions are not supported: leave `stream` out.", "stream")

    temperature = _field(form, "temperature")
    try:
        value = float(temperature) if temperature else 0.0
    except ValueError:
        value = math.nan
    if not 0 <= value <= 1:
        raise InvalidRequest("`temperature` must be a number from 0 to 1.", "temperature")

    return TranscriptionRequest(
        model=model,
        audio=upload.data,
        content_type=_content_type(upload.content_type, upload.filename),
        response_format=response_format,
        temperature=value,
        language=_field(form, "language") or None,
        seconds=audio_seconds(upload.data),
    )


def _field(form: Form, name: str) -> str:
    values = form.fields.get(name)
    return values[0].strip() if values else ""


def _content_type(declared: str, filename: str) -> str:
    """The type the client declared, or (for a generic one) the type its file name implies."""
    if declared.lower() not in _GENERIC_TYPES:
        return declared
    return mimetypes.guess_type(filename)[0] or declared or "application/octet-stream"


def audio_seconds(data: bytes) -> Decimal | None:
    """The audio's duration as its container says (wav, mp3, flac, ogg, m4a…), to the
    millisecond; None for a format mutagen does not read (webm…) or a file it cannot parse."""
    try:
        found = mutagen.File(io.BytesIO(data))
        length = found.info.length if found is not None else None
    except Exception:  # a damaged file is the pipeline's to refuse; its length is just unknown
        return None
    if not isinstance(length, (int, float)) or not math.isfinite(length) or length < 0:
        return None
    return Decimal(str(length)).quantize(MILLISECOND)


def asr_body(request: TranscriptionRequest) -> tuple[bytes, str]:
    """The automatic-speech-recognition request's body and content type: the audio itself, or,
    with parameters, a JSON body with the audio base64-encoded (as huggingface_hub sends it)."""
    parameters: dict[str, Any] = {}
    if request.timestamps:
        parameters["return_timestamps"] = True
    if request.temperature > 0:
        # Without do_sample, generate() ignores a temperature.
        parameters["generation_parameters"] = {"do_sample": True, "temperature": request.temperature}
    if not parameters:
        return request.audio, request.content_type
    inputs = base64.b64encode(request.audio).decode()
    return dump_json({"inputs": inputs, "parameters": parameters}), "application/json"


@dataclass
class Segment:
    start: float
    end: float
    text: str


def transcription_answer(raw: bytes, request: TranscriptionRequest) -> tuple[bytes, str]:
    """The pipeline's `{"text", "chunks"?}` as the client's `response_format`: the body and its
    content type."""
    text, segments = _read_answer(raw, request.seconds)
    duration = float(request.seconds) if request.seconds is not None else None
    if request.response_format == "text":
        return text.encode(), "text/plain; charset=utf-8"
    if request.response_format in ("srt", "vtt"):
        if not segments:  # a model without timestamps: the whole audio is one cue
            segments = [Segment(0.0, duration or 0.0, text)]
        captions = srt(segments) if request.response_format == "srt" else vtt(segments)
        return captions.encode(), "text/plain; charset=utf-8"
    answer: dict[str, Any] = {"text": text}
    if request.response_format == "verbose_json":
        if duration is None and segments:
            duration = segments[-1].end
        answer = {
            "task": "transcribe",
            "language": request.language,
            "duration": duration,
            "text": text,
            "segments": [
                {"id": index, "start": s.start, "end": s.end, "text": s.text}
                for index, s in enumerate(segments)
            ],
        }
    if request.seconds is not None:
        answer["usage"] = {"type": "duration", "seconds": float(request.seconds)}
    return dump_json(answer), "application/json"


def _read_answer(raw: bytes, seconds: Decimal | None) -> tuple[str, list[Segment]]:
    answer = parse_answer(raw)
    if isinstance(answer, list) and len(answer) == 1:
        answer = answer[0]  # some deployments answer one input with a list of one
    if not isinstance(answer, dict) or "error" in answer:
        raise BadAnswer(
            "the router answered with an error", error=answer if isinstance(answer, dict) else None
        )
    text = answer.get("text")
    if not isinstance(text, str):
        raise BadAnswer("the answer has no `text`")
    segments = []
    for chunk in answer.get("chunks") or []:
        stamp = chunk.get("timestamp") if isinstance(chunk, dict) else None
        if not isinstance(stamp, (list, tuple)) or len(stamp) != 2 or not _is_number(stamp[0]):
            raise BadAnswer("a chunk of the answer has no `timestamp` [start, end]")
        start = float(stamp[0])
        # Whisper leaves the last chunk's end open when the audio stops mid-sentence.
        end = float(stamp[1]) if _is_number(stamp[1]) else max(start, float(seconds or 0))
        segments.append(Segment(start, end, str(chunk.get("text", ""))))
    return text.strip(), segments


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _clock(seconds: float, decimal_mark: str) -> str:
    milliseconds = round(seconds * 1000)
    hours, rest = divmod(milliseconds, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}{decimal_mark}{rest % 1000:03d}"


def srt(segments: list[Segment]) -> str:
    """SubRip captions: numbered cues, `HH:MM:SS,mmm` times."""
    return "".join(
        f"{number}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{s.text.strip()}\n\n"
        for number, s in enumerate(segments, 1)
    )


def vtt(segments: list[Segment]) -> str:
    """WebVTT captions: `HH:MM:SS.mmm` times."""
    return "WEBVTT\n\n" + "".join(
        f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{s.text.strip()}\n\n" for s in segments
    )
