"""OpenAI's embeddings API in, Hugging Face's feature-extraction pipeline out, and back.

Pure like the converter: no Django, no I/O. Bad client input raises `InvalidRequest`, an unusable
answer `BadAnswer` (both from `gateway.converter`).
"""

from __future__ import annotations

import base64
import math
import struct
from dataclasses import dataclass
from typing import Any

from gateway.converter import (
    BadAnswer,
    InvalidRequest,
    dump_json,
    is_integer,
    is_model_id,
    parse_answer,
    parse_json_object,
    text_size,
    tokens_for,
)

MAX_EMBEDDING_INPUTS = 2048  # OpenAI's limit per request


@dataclass
class EmbeddingsRequest:
    model: str
    inputs: list[str]
    single: bool  # `input` was one string (the router is sent a list either way)
    encoding_format: str = "float"
    dimensions: int | None = None
    prompt_chars: int = 0


def parse_embeddings_request(raw: bytes, default_model: str) -> EmbeddingsRequest:
    body = parse_json_object(raw)
    model = body.get("model", default_model)
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequest("`model` must be a non-empty string.", "model")
    # The feature-extraction pipeline is HF Inference's own: a provider suffix names nothing more.
    model = model.removesuffix(":hf-inference")
    if not is_model_id(model):
        raise InvalidRequest(
            "`model` must be a Hugging Face model id such as `org/name` (feature-extraction "
            "runs on HF Inference: no provider suffix).",
            "model",
        )

    value = body.get("input")
    single = isinstance(value, str)
    inputs = [value] if single else value
    if not isinstance(inputs, list) or not inputs:
        raise InvalidRequest("`input` must be a non-empty string or a non-empty array of strings.", "input")
    if any(isinstance(item, (int, list)) and not isinstance(item, bool) for item in inputs):
        raise InvalidRequest(
            "Token ids cannot be embedded here: Hugging Face models have their own tokenizers, "
            "and which tokenizer made these ids cannot be known. Send the text instead "
            "(LangChain's OpenAIEmbeddings: pass check_embedding_ctx_length=False).",
            "input",
        )
    if not all(isinstance(item, str) and item for item in inputs):
        raise InvalidRequest("Every `input` must be a non-empty string.", "input")
    if len(inputs) > MAX_EMBEDDING_INPUTS:
        raise InvalidRequest(f"`input` may hold at most {MAX_EMBEDDING_INPUTS} strings.", "input")

    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise InvalidRequest("`encoding_format` must be `float` or `base64`.", "encoding_format")
    dimensions = body.get("dimensions")
    if dimensions is not None and (not is_integer(dimensions) or dimensions < 1):
        raise InvalidRequest("`dimensions` must be a positive integer.", "dimensions")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise InvalidRequest("`user` must be a string.", "user")
    return EmbeddingsRequest(
        model=model,
        inputs=inputs,
        single=single,
        encoding_format=encoding,
        dimensions=int(dimensions) if dimensions is not None else None,
        prompt_chars=text_size(inputs),
    )


def feature_extraction_body(request: EmbeddingsRequest) -> bytes:
    """HF Inference's feature-extraction request: normalised vectors (as OpenAI's are), and
    inputs longer than the model takes truncated rather than refused."""
    return dump_json({"inputs": request.inputs, "normalize": True, "truncate": True})


def embeddings_answer(raw: bytes, request: EmbeddingsRequest) -> dict[str, Any]:
    """The pipeline's bare array of vectors as OpenAI's embeddings answer (usage estimated:
    the pipeline counts nothing)."""
    vectors = parse_answer(raw)
    if isinstance(vectors, dict):
        raise BadAnswer("the router answered with an error", error=vectors)
    if request.single and _is_vector(vectors):
        vectors = [vectors]  # some models answer one input with one vector, not a list of them
    if not isinstance(vectors, list) or len(vectors) != len(request.inputs):
        raise BadAnswer(f"expected {len(request.inputs)} vectors")
    if not all(_is_vector(vector) for vector in vectors):
        raise BadAnswer("the answer is not one vector of numbers per input (a token-level model?)")
    data = []
    for index, vector in enumerate(vectors):
        vector = shorten(vector, request.dimensions) if request.dimensions is not None else normalized(vector)
        embedding = encode_base64(vector) if request.encoding_format == "base64" else vector
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    tokens = tokens_for(request.prompt_chars)
    return {
        "object": "list",
        "data": data,
        "model": request.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _is_vector(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in value)
    )


def shorten(vector: list[float], dimensions: int) -> list[float]:
    """The first `dimensions` values, scaled back to length 1: how OpenAI's `dimensions` works,
    right for models trained for it (Matryoshka embeddings), a plain cut for others."""
    if dimensions > len(vector):
        raise InvalidRequest(
            f"`dimensions` is {dimensions}, but this model's embeddings have {len(vector)}.", "dimensions"
        )
    return normalized(vector[:dimensions])


def normalized(vector: list[float]) -> list[float]:
    """The vector scaled to length 1, as OpenAI's embeddings are: some models ignore the
    pipeline's `normalize` (answers with norms of 6 and 17 have been seen)."""
    norm = math.sqrt(math.fsum(x * x for x in vector))
    if not norm or abs(norm - 1.0) < 1e-4:
        return vector
    return [x / norm for x in vector]


def encode_base64(vector: list[float]) -> str:
    """OpenAI's `base64` format: little-endian float32s, base64-encoded."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
