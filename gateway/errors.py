"""OpenAI-format errors: the only place that builds an error body.

Every refusal or failure the gateway answers is an `ApiError`; `ApiError.response()` renders it
as `{"error": {"message", "type", "param", "code"}}`, and `sse_event()` as a stream's last event.
`from_upstream()` decides what each router failure means to our client.
"""

from __future__ import annotations

import json
import logging
import math
import re
from typing import Any

from django.db import InterfaceError, OperationalError
from django.http import JsonResponse

from accounts.limits import Refusal
from accounts.models import REJECTED_TOKEN, Outcome
from gateway import metrics
from gateway.converter import BadAnswer, InvalidRequest
from gateway.upstream import UpstreamError

logger = logging.getLogger("hfproxy.errors")


# OpenAI's SDKs retry 429 and 5xx; this header tells them a retry cannot help.
NO_RETRY = {"x-should-retry": "false"}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        outcome: str = Outcome.BAD_REQUEST,
    ) -> None:
        message = _scrub(message)
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = dict(headers or {})
        self.outcome = outcome

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JsonResponse:
        response = JsonResponse(self.body(), status=self.status)
        for name, value in self.headers.items():
            response[name] = value
        return response

    def sse_event(self) -> bytes:
        return b"data: " + json.dumps(self.body()).encode() + b"\n\n"


def invalid_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def request_too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        f"Request body is larger than the limit of {limit} bytes.",
        code="request_too_large",
    )


def body_timeout(seconds: float) -> ApiError:
    return ApiError(
        408,
        f"The request body did not arrive in time (nothing for {seconds:g} seconds).",
        code="request_timeout",
    )


def forbidden(message: str = "Forbidden.") -> ApiError:
    return ApiError(403, message, type="permission_error", code="forbidden")


def not_found(message: str, code: str = "not_found") -> ApiError:
    return ApiError(404, message, code=code)


def method_not_allowed(method: str, allowed: list[str]) -> ApiError:
    return ApiError(
        405,
        f"Method {method} is not allowed here; use {', '.join(allowed)}.",
        code="method_not_allowed",
        headers={"Allow": ", ".join(allowed)},
    )


def invalid_api_key() -> ApiError:
    # One body for every kind of bad key: nothing tells a guesser which part was wrong.
    return ApiError(
        401,
        "Invalid API key. Send your hfproxy key as `Authorization: Bearer hfp_…`.",
        code="invalid_api_key",
        headers={"WWW-Authenticate": "Bearer"},
    )


def model_not_allowed(model: str) -> ApiError:
    return ApiError(
        403,
        f"This API key may not use the model `{model}`.",
        type="permission_error",
        param="model",
        code="model_not_allowed",
        outcome=Outcome.REFUSED,
    )


def refused(refusal: Refusal) -> ApiError:
    """Over a rate limit (429 rate_limit_exceeded) or out of budget (429 insufficient_quota)."""
    metrics.refusals.labels(refusal.kind).inc()
    kind = "insufficient_quota" if refusal.kind == "budget" else "rate_limit_exceeded"
    return ApiError(
        429,
        refusal.message,
        type=kind,
        code=kind,
        headers={**refusal.headers, "Retry-After": str(refusal.retry_after)},
        outcome=Outcome.REFUSED,
    )


# The database failing to answer (a 503 for a moment), as opposed to a query's own error (a bug).
DATABASE_DOWN = (OperationalError, InterfaceError)


def service_unavailable() -> ApiError:
    return ApiError(
        503,
        "The proxy cannot reach its database; try again shortly.",
        type="server_error",
        code="service_unavailable",
        headers={"Retry-After": "5"},
        outcome=Outcome.PROXY_ERROR,
    )


def no_upstream_token(problem: str, token_name: str) -> ApiError:
    """The caller's key has no usable Hugging Face token: fail closed, never another token."""
    if problem == "undecryptable":
        return ApiError(
            500,
            f"The Hugging Face token {token_name!r} of this key cannot be decrypted with the "
            "server's FIELD_ENCRYPTION_KEY. Ask an admin.",
            type="server_error",
            code="upstream_token_unreadable",
            headers=NO_RETRY,
            outcome=Outcome.PROXY_ERROR,
        )
    return ApiError(
        502,
        "This key has no Hugging Face token and the server has none either (HF_TOKEN is not set).",
        type="server_error",
        code="upstream_token_missing",
        headers=NO_RETRY,
        outcome=Outcome.UPSTREAM_ERROR,
    )


def internal_error() -> ApiError:
    return ApiError(
        500,
        "The proxy failed to handle this request.",
        type="server_error",
        code="internal_error",
        outcome=Outcome.PROXY_ERROR,
    )


# Router statuses whose meaning we pass on unchanged, with the error type OpenAI uses for them.
_KEPT_STATUSES = {
    400: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_exceeded",
}


def from_upstream(error: UpstreamError, token_name: str = "") -> ApiError:
    """Translate a router failure into what our client should see.

    Never echoes the Hugging Face token: messages come from the router's body or are ours;
    a rejected token is named by its name. The router's Retry-After goes on; a failure the proxy
    already retried tells the client not to retry (the SDKs retry 5xx twice: six router calls,
    six generations billed, for one call).
    """
    api_error = _from_upstream(error, token_name)
    if error.retried:
        api_error.headers.update(NO_RETRY)
    if error.headers.get("retry-after"):
        api_error.headers.setdefault("Retry-After", error.headers["retry-after"])
    return api_error


def _from_upstream(error: UpstreamError, token_name: str) -> ApiError:
    if error.kind == UpstreamError.TIMEOUT:
        return ApiError(
            504,
            f"The Hugging Face router did not answer in time ({error.detail}).",
            type="server_error",
            code="upstream_timeout",
            outcome=Outcome.TIMEOUT,
        )
    if error.kind == UpstreamError.CONNECTION:
        return ApiError(
            502,
            f"Could not reach the Hugging Face router: {error.detail}.",
            type="server_error",
            code="upstream_unreachable",
            outcome=Outcome.UPSTREAM_ERROR,
        )
    if error.kind == UpstreamError.MALFORMED:
        return bad_answer(error.detail)
    if error.kind == UpstreamError.STREAM_CUT:
        return ApiError(
            502,
            f"The connection to the Hugging Face router broke: {error.detail}.",
            type="server_error",
            code="upstream_bad_response",
            outcome=Outcome.UPSTREAM_ERROR,
        )

    status = error.status or 502
    message = router_message(error.body) or f"The Hugging Face router answered HTTP {status}."
    if status == 401:
        return ApiError(
            502,
            f"The Hugging Face router rejected the proxy's Hugging Face token {token_name!r} "
            f"(HTTP 401: {message}). This is a server configuration problem, not your API key.",
            type="server_error",
            code=REJECTED_TOKEN,
            headers=NO_RETRY,
            outcome=Outcome.UPSTREAM_ERROR,
        )
    if status == 402:
        return ApiError(
            429,
            f"The Hugging Face account behind this proxy is out of credits: {message}",
            type="insufficient_quota",
            code="insufficient_quota",
            headers=NO_RETRY,
            outcome=Outcome.UPSTREAM_ERROR,
        )
    if status in _KEPT_STATUSES:
        return ApiError(
            status,
            message,
            type=_KEPT_STATUSES[status],
            param=router_field(error.body, "param"),
            code=router_field(error.body, "code") or _default_code(status),
            outcome=Outcome.UPSTREAM_ERROR,
        )
    if error.says_when:
        # "Model is loading": a 503 and when to come back, which the SDKs honour.
        loading = _parse(error.body)
        wait = loading.get("estimated_time") if isinstance(loading, dict) else None
        retry_after = error.headers.get("retry-after") or _seconds(wait)
        return ApiError(
            503,
            f"The Hugging Face router is not ready (HTTP 503): {message}",
            type="server_error",
            code="model_loading" if wait is not None else "upstream_unavailable",
            headers={"Retry-After": retry_after} if retry_after else {},
            outcome=Outcome.UPSTREAM_ERROR,
        )
    return ApiError(
        502,
        f"The Hugging Face router failed (HTTP {status}): {message}",
        type="server_error",
        code="upstream_error",
        outcome=Outcome.UPSTREAM_ERROR,
    )


def from_exception(exc: Exception, token_name: str = "") -> ApiError:
    """The `ApiError` any failure while serving a request comes down to."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, Refusal):
        return refused(exc)
    if isinstance(exc, InvalidRequest):
        return invalid_request(exc.message, exc.param)
    if isinstance(exc, UpstreamError):
        return from_upstream(exc, token_name)
    if isinstance(exc, DATABASE_DOWN):
        # Limits read the database for a budget's first count of the month.
        logger.warning("The database failed while serving a request: %s", exc)
        return service_unavailable()
    if isinstance(exc, BadAnswer):
        if exc.error is not None:
            message = router_message(exc.error) or exc.detail
            return ApiError(
                502,
                f"The Hugging Face router reported an error: {message}",
                type="server_error",
                code="upstream_error",
                outcome=Outcome.UPSTREAM_ERROR,
            )
        return bad_answer(exc.detail)
    logger.exception("Unhandled error while serving a request")
    return internal_error()


def bad_answer(detail: str) -> ApiError:
    return ApiError(
        502,
        f"The Hugging Face router sent an invalid answer: {detail}.",
        type="server_error",
        code="upstream_bad_response",
        outcome=Outcome.UPSTREAM_ERROR,
    )


def _seconds(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 86400:
        return str(max(1, math.ceil(value)))
    return ""


def _default_code(status: int) -> str | None:
    return {404: "model_not_found", 429: "rate_limit_exceeded"}.get(status)


def _parse(body: bytes | Any) -> Any:
    if isinstance(body, (bytes, str)):
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            return body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    return body


def router_message(body: bytes | Any) -> str:
    """The human message in a router error body, whatever its shape.

    Seen shapes: a bare string, `{"detail": …}` (FastAPI, `detail` may be a list of
    validation errors), `{"message": …}`, `{"error": "…"}` and `{"error": {"message": …}}`.
    """
    data = _parse(body)
    if isinstance(data, str):
        text = data.strip()
        # An HTML error page (a proxy's or a load balancer's) says nothing a client can use.
        return "" if text.startswith("<") else _clip(text, 300)
    if isinstance(data, list):
        return _clip("; ".join(filter(None, (router_message(item) for item in data))))
    if not isinstance(data, dict):
        return ""
    for key in ("error", "detail", "message", "msg", "error_message"):
        value = data.get(key)
        if isinstance(value, str) and value.strip():
            return _clip(value.strip())
        if isinstance(value, (dict, list)):
            found = router_message(value)
            if found:
                return found
    return ""


def router_field(body: bytes | Any, field: str) -> str | None:
    """`param` or `code` from an OpenAI-shaped router error, when it has one."""
    data = _parse(body)
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        value = data["error"].get(field)
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return str(value)
    return None


# Whatever a message quotes (a router body, a transport error that printed a header), no
# Hugging Face token leaves in it.
_TOKEN_PATTERN = re.compile(r"hf_[A-Za-z0-9]{6,}")


def _scrub(text: str) -> str:
    return _TOKEN_PATTERN.sub("hf_***", text)


def _clip(text: str, limit: int = 1000) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
