"""Errors: the only place that builds an error body.

Every refusal or failure the gateway answers is an `ApiError`; `ApiError.response()` renders it
in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, `anthropic_response()` in
Anthropic's for its clients (`speaks_anthropic` decides which), and `sse_event()`,
`responses_event()`, `anthropic_event()` as a stream's last event.
`from_upstream()` decides what each router failure means to our client; `rest_framework_handler()`
gives the self-service API (DRF) the same error bodies.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import JsonResponse
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from accounts.limits import Refusal, Unavailable
from accounts.models import REJECTED_TOKEN, Outcome
from gateway import scrub
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

    def scrubbed(self, secrets: tuple[str, ...]) -> ApiError:
        """This error without the request's token in any field (`scrub.secrets_of`)."""
        if secrets:
            self.message = scrub.text(self.message, secrets)
            self.param = scrub.text(self.param, secrets) if self.param else self.param
            self.code = scrub.code(self.code, secrets) if self.code else self.code
            self.headers = {name: scrub.text(value, secrets) for name, value in self.headers.items()}
            self.args = (self.message,)
        return self

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
        """A chat stream's last event."""
        return b"data: " + json.dumps(self.body()).encode() + b"\n\n"

    def responses_event(self, sequence_number: int) -> bytes:
        """A Responses stream's last event: its `error` event."""
        event = {
            "type": "error",
            "code": self.code,
            "message": self.message,
            "param": self.param,
            "sequence_number": sequence_number,
        }
        return b"event: error\ndata: " + json.dumps(event).encode() + b"\n\n"

    # Anthropic's shape, for the Messages API's clients (Claude Code, the anthropic SDKs).

    @property
    def anthropic_status(self) -> int:
        return 529 if self.code == OVERLOADED else self.status

    def anthropic_body(self) -> dict[str, Any]:
        if self.code == "insufficient_quota":  # out of budget or credits: not worth a retry
            return {"type": "error", "error": {"type": "billing_error", "message": self.message}}
        kind = _ANTHROPIC_TYPES.get(
            self.anthropic_status, "api_error" if self.status >= 500 else "invalid_request_error"
        )
        return {"type": "error", "error": {"type": kind, "message": self.message}}

    def anthropic_response(self) -> JsonResponse:
        response = JsonResponse(self.anthropic_body(), status=self.anthropic_status)
        for name, value in self.headers.items():
            response[name] = value
        return response

    def anthropic_event(self) -> bytes:
        return b"event: error\ndata: " + json.dumps(self.anthropic_body()).encode() + b"\n\n"

    def render(self, anthropic: bool) -> JsonResponse:
        return self.anthropic_response() if anthropic else self.response()


def speaks_anthropic(path: str, headers: Any) -> bool:
    """Whether a client reads Anthropic's errors: on the Messages API's paths, or when it sends
    `anthropic-version` (as Anthropic's SDKs and Claude Code always do). `headers`: a request's
    headers, by lower-case name."""
    messages = settings.API_PREFIX + "/messages"
    return path == messages or path.startswith(messages + "/") or "anthropic-version" in headers


# Anthropic's error types by status (its API reference, "Errors").
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
# A provider's "overloaded" (Anthropic's 529): a 503 to OpenAI's clients, a 529 to Anthropic's.
OVERLOADED = "upstream_overloaded"


def invalid_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def request_too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        f"Request body is larger than the limit of {limit} bytes.",
        code="request_too_large",
    )


def headers_too_large(limit: int) -> ApiError:
    return ApiError(
        431,
        f"Request headers are larger than the limit of {limit} bytes.",
        code="request_headers_too_large",
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
        "Invalid API key. Send your hfproxy key as `Authorization: Bearer hfp_…` (or `x-api-key`).",
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


def service_unavailable(what: str = "its database", code: str = "service_unavailable") -> ApiError:
    return ApiError(
        503,
        f"The proxy cannot reach {what}; try again shortly.",
        type="server_error",
        code=code,
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


@dataclass(frozen=True)
class _Answer:
    """What one kind of router failure becomes: the message is a template over `detail`,
    `message` (the router's own), `status` and `token_name`."""

    status: int
    code: str | None
    message: str
    type: str = "server_error"
    headers: dict[str, str] = field(default_factory=dict)
    outcome: str = Outcome.UPSTREAM_ERROR
    # A status passed on unchanged: the router's own `param` and `code` go on with it.
    passes_on: bool = False

    def error(
        self,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        **values: Any,
    ) -> ApiError:
        """The `ApiError` (the router's `code` wins over ours when it has one)."""
        return ApiError(
            self.status,
            self.message.format(**values),
            type=self.type,
            param=param,
            code=code or self.code,
            headers={**self.headers, **(headers or {})},
            outcome=self.outcome,
        )


_BAD_ANSWER = _Answer(
    502, "upstream_bad_response", "The Hugging Face router sent an invalid answer: {detail}."
)
_REPORTED = _Answer(502, "upstream_error", "The Hugging Face router reported an error: {message}")
_NOT_READY = _Answer(
    503, "upstream_unavailable", "The Hugging Face router is not ready (HTTP 503): {message}"
)
_FAILED = _Answer(502, "upstream_error", "The Hugging Face router failed (HTTP {status}): {message}")
_OVERLOADED = _Answer(503, OVERLOADED, "The provider is overloaded: {message}")

# Failures without an HTTP answer, by the UpstreamError's kind.
_BY_KIND = {
    UpstreamError.TIMEOUT: _Answer(
        504,
        "upstream_timeout",
        "The Hugging Face router did not answer in time ({detail}).",
        outcome=Outcome.TIMEOUT,
    ),
    UpstreamError.CONNECTION: _Answer(
        502, "upstream_unreachable", "Could not reach the Hugging Face router: {detail}."
    ),
    UpstreamError.MALFORMED: _BAD_ANSWER,
    UpstreamError.STREAM_CUT: _Answer(
        502, "upstream_bad_response", "The connection to the Hugging Face router broke: {detail}."
    ),
    # Our own pool was full: the router is not to blame, and was not called.
    UpstreamError.SATURATED: _Answer(
        503,
        "proxy_saturated",
        "The proxy is saturated: all its connections to the Hugging Face router are in use. "
        "Try again shortly.",
        headers={"Retry-After": "5"},
        outcome=Outcome.PROXY_ERROR,
    ),
}


def _kept(status: int, type: str, code: str | None = None) -> _Answer:
    return _Answer(status, code, "{message}", type=type, passes_on=True)


# The router's answers by status. Client errors keep their status and meaning (with the type
# OpenAI uses for them); a 401 or 402 is about the proxy's Hugging Face account, not the client.
_BY_STATUS = {
    400: _kept(400, "invalid_request_error"),
    401: _Answer(
        502,
        REJECTED_TOKEN,
        "The Hugging Face router rejected the proxy's Hugging Face token {token_name!r} "
        "(HTTP 401: {message}). This is a server configuration problem, not your API key.",
        headers=NO_RETRY,
    ),
    402: _Answer(
        429,
        "insufficient_quota",
        "The Hugging Face account behind this proxy is out of credits: {message}",
        type="insufficient_quota",
        headers=NO_RETRY,
    ),
    403: _kept(403, "permission_error"),
    404: _kept(404, "invalid_request_error", "model_not_found"),
    413: _kept(413, "invalid_request_error"),
    422: _kept(422, "invalid_request_error"),
    429: _kept(429, "rate_limit_exceeded", "rate_limit_exceeded"),
    529: _OVERLOADED,
}


def from_upstream(error: UpstreamError, token_name: str = "", token: str = "") -> ApiError:
    """Translate a router failure into what our client should see.

    Never echoes the Hugging Face token (`token`, the value the request used): the router's
    body is scrubbed of it before anything is read from it, its `code` is kept only when it is
    a code (`scrub.code`), its Retry-After only when it is one; a rejected token is named by its
    name. A failure the proxy already retried tells the client not to retry (the SDKs retry 5xx
    twice: six router calls, six generations billed, for one call).
    """
    secrets = scrub.secrets_of(token)
    api_error = _from_upstream(error, token_name, secrets)
    if error.retried:
        api_error.headers.update(NO_RETRY)
    retry_after = scrub.retry_after(error.headers.get("retry-after"))
    if retry_after:
        api_error.headers.setdefault("Retry-After", retry_after)
    return api_error.scrubbed(secrets)


def _from_upstream(error: UpstreamError, token_name: str, secrets: tuple[str, ...]) -> ApiError:
    without_answer = _BY_KIND.get(error.kind)
    if without_answer is not None:
        return without_answer.error(detail=error.detail)
    status = error.status or 502
    body = scrub.tree(_parse(error.body), secrets)
    message = router_message(body) or f"The Hugging Face router answered HTTP {status}."
    answer = _BY_STATUS.get(status)
    if answer is not None:
        passed_on = (
            {
                "param": router_field(body, "param"),
                "code": scrub.code(router_field(body, "code"), secrets),
            }
            if answer.passes_on
            else {}
        )
        return answer.error(message=message, token_name=token_name, **passed_on)
    if error.says_when:
        # "Model is loading": a 503 and when to come back, which the SDKs honour.
        wait = body.get("estimated_time") if isinstance(body, dict) else None
        retry_after = scrub.retry_after(error.headers.get("retry-after")) or _seconds(wait)
        return _NOT_READY.error(
            message=message,
            code="model_loading" if wait is not None else None,
            headers={"Retry-After": retry_after} if retry_after else None,
        )
    return _FAILED.error(message=message, status=status)


def from_exception(exc: Exception, token_name: str = "", token: str = "") -> ApiError:
    """The `ApiError` any failure while serving a request comes down to; `token` is the Hugging
    Face token the request used, scrubbed from whatever the router said."""
    if isinstance(exc, UpstreamError):
        return from_upstream(exc, token_name, token)
    secrets = scrub.secrets_of(token)
    if isinstance(exc, BadAnswer) and exc.error is not None:
        return reported(exc.error, exc.detail, secrets)
    return _from_exception(exc).scrubbed(secrets)


def _from_exception(exc: Exception) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, Refusal):
        return refused(exc)
    if isinstance(exc, Unavailable):  # fail closed: LIMITS_FAIL_OPEN is off
        return service_unavailable("the store of its rate limits (Redis)", "limits_unavailable")
    if isinstance(exc, InvalidRequest):
        return invalid_request(exc.message, exc.param)
    if isinstance(exc, DATABASE_DOWN):
        # Limits read the database for a budget's first count of the month.
        logger.warning("The database failed while serving a request: %s", exc)
        return service_unavailable()
    if isinstance(exc, BadAnswer):
        return bad_answer(exc.detail)
    logger.exception("Unhandled error while serving a request")
    return internal_error()


def rest_framework_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's errors (the self-service /api) in OpenAI's error format, like the rest of the proxy
    (REST_FRAMEWORK["EXCEPTION_HANDLER"])."""
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    status = response.status_code
    if status == 401:
        error = invalid_api_key()  # as on /v1, whatever was wrong with the key
    elif status == 503:
        error = service_unavailable()  # the only 503 there: the key's database lookup failed
    else:
        codes = exc.get_codes() if isinstance(exc, drf_exceptions.APIException) else None
        detail = response.data.get("detail") if isinstance(response.data, dict) else None
        kind = "permission_error" if status == 403 else "invalid_request_error"
        error = ApiError(
            status,
            str(detail) if detail else str(response.data),
            type="server_error" if status >= 500 else kind,
            code=codes if isinstance(codes, str) else None,
        )
    response.data = error.body()
    for name, value in error.headers.items():
        response[name] = value
    return response


def reported(error: Any, detail: str = "", secrets: tuple[str, ...] = ()) -> ApiError:
    """An error the router reported inside an answer or a stream, with its own code kept (an
    Anthropic `error` event's type; a Responses `error` event's code) when it is a code: an
    overload stays one. Scrubbed of `secrets` (`scrub.secrets_of`) before it is read."""
    error = scrub.tree(error, secrets)
    code = scrub.code(_reported_code(error), secrets)
    message = router_message(error) or detail
    if code in ("overloaded_error", "overloaded"):
        return _OVERLOADED.error(message=message).scrubbed(secrets)
    return _REPORTED.error(message=message, code=code).scrubbed(secrets)


def _reported_code(error: Any) -> str | None:
    if not isinstance(error, dict):
        return None
    inner = error.get("error") if isinstance(error.get("error"), dict) else {}
    # Anthropic's `{"type": "error", "error": {"type": …}}` says what it is in its type.
    anthropic_type = inner.get("type") if error.get("type") == "error" else None
    for found in (error.get("code"), inner.get("code"), anthropic_type):
        if isinstance(found, str) and found:
            return found
    return None


def bad_answer(detail: str) -> ApiError:
    return _BAD_ANSWER.error(detail=detail)


def _seconds(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 86400:
        return str(max(1, math.ceil(value)))
    return ""


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
