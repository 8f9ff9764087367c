import pytest
from django.db import OperationalError
from rest_framework import exceptions as drf_exceptions

from accounts.authentication import ServiceUnavailable
from accounts.limits import Refusal
from accounts.models import Outcome
from gateway import errors
from gateway.converter import BadAnswer, InvalidRequest
from gateway.upstream import UpstreamError


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"Model is overloaded", "Model is overloaded"),
        (b'"plain json string"', "plain json string"),
        (b'{"detail": "Not allowed"}', "Not allowed"),
        (b'{"detail": [{"loc": ["body", "x"], "msg": "field required"}]}', "field required"),
        (b'{"message": "bad thing"}', "bad thing"),
        (b'{"error": "Model not found"}', "Model not found"),
        (
            b'{"error": {"message": "too long", "type": "invalid_request_error", "code": "context_length"}}',
            "too long",
        ),
        (b"", ""),
        (b"{}", ""),
    ],
)
def test_it_finds_the_message_in_any_router_body(body, message):
    assert errors.router_message(body) == message


def test_it_never_repeats_a_token():
    assert "hf_abcdefghijkl" not in status_error(400, b'{"error": "bad token hf_abcdefghijkl"}').message
    transport_error = UpstreamError(
        UpstreamError.CONNECTION, "Illegal header value b'Bearer hf_SECRETSECRET\\n'"
    )
    assert "hf_SECRETSECRET" not in errors.from_upstream(transport_error).message


def test_errors_a_retry_cannot_fix_say_so():
    assert status_error(401).response()["x-should-retry"] == "false"
    assert status_error(402).response()["x-should-retry"] == "false"
    assert "x-should-retry" not in status_error(503).response()


def status_error(
    status, body=b'{"error": {"message": "nope", "param": "messages", "code": "x1"}}', headers=None
):
    return errors.from_upstream(
        UpstreamError(UpstreamError.STATUS, status=status, body=body, headers=headers)
    )


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (403, "permission_error"),
        (404, "invalid_request_error"),
        (422, "invalid_request_error"),
    ],
)
def test_it_keeps_client_error_statuses(status, kind):
    error = status_error(status)
    assert (error.status, error.type, error.message, error.param, error.code) == (
        status,
        kind,
        "nope",
        "messages",
        "x1",
    )
    assert error.outcome == Outcome.UPSTREAM_ERROR


def test_it_keeps_429_and_its_retry_after():
    error = status_error(429, b'{"detail": "slow down"}', {"retry-after": "12"})
    assert (error.status, error.code, error.headers) == (429, "rate_limit_exceeded", {"Retry-After": "12"})
    assert error.response()["Retry-After"] == "12"


def test_router_401_is_our_token_not_the_client_key():
    error = status_error(401, b'{"error": "Invalid credentials in Authorization header"}')
    assert error.status == 502
    assert error.code == "upstream_auth_failed"
    assert "Hugging Face token" in error.message and "not your API key" in error.message


def test_router_402_is_insufficient_quota():
    error = status_error(402, b'{"error": "You have exceeded your monthly included credits"}')
    assert (error.status, error.type, error.code) == (429, "insufficient_quota", "insufficient_quota")


@pytest.mark.parametrize("status", [500, 502, 503, 504, 418, 301])
def test_other_statuses_are_bad_gateway(status):
    error = status_error(status, b'{"error": "Model too busy"}')
    assert error.status == 502 and error.type == "server_error"
    assert "Model too busy" in error.message


def test_html_error_pages_are_not_repeated():
    error = status_error(502, b"<html><body><h1>502 Bad Gateway</h1>cloudflare</body></html>")
    assert "<" not in error.message and "cloudflare" not in error.message
    assert "HTTP 502" in error.message


def test_long_plain_text_is_clipped():
    assert len(errors.router_message(b"x" * 5000)) <= 301


@pytest.mark.parametrize(
    ("kind", "status", "outcome"),
    [
        (UpstreamError.TIMEOUT, 504, Outcome.TIMEOUT),
        (UpstreamError.CONNECTION, 502, Outcome.UPSTREAM_ERROR),
        (UpstreamError.MALFORMED, 502, Outcome.UPSTREAM_ERROR),
        (UpstreamError.STREAM_CUT, 502, Outcome.UPSTREAM_ERROR),
    ],
)
def test_transport_failures(kind, status, outcome):
    error = errors.from_upstream(UpstreamError(kind, "detail"))
    assert (error.status, error.outcome) == (status, outcome)


def test_error_body_has_the_openai_shape():
    body = errors.invalid_request("bad", "messages").body()
    assert body == {
        "error": {"message": "bad", "type": "invalid_request_error", "param": "messages", "code": None}
    }
    assert errors.invalid_request("bad").sse_event().startswith(b'data: {"error": {"message": "bad"')


def test_converter_failures_map_to_400_and_502():
    invalid = errors.from_exception(InvalidRequest("bad field", "temperature"))
    assert (invalid.status, invalid.param, invalid.outcome) == (400, "temperature", Outcome.BAD_REQUEST)
    bad = errors.from_exception(BadAnswer("not JSON"))
    assert (bad.status, bad.code) == (502, "upstream_bad_response")
    reported = errors.from_exception(BadAnswer("error event", error={"error": {"message": "GPU on fire"}}))
    assert "GPU on fire" in reported.message


def test_a_database_failure_while_serving_is_503():
    error = errors.from_exception(OperationalError("connection refused"))
    assert (error.status, error.code, error.headers["Retry-After"]) == (503, "service_unavailable", "5")


def test_unexpected_exceptions_become_a_500_without_details():
    error = errors.from_exception(RuntimeError("secret internals"))
    assert error.status == 500 and "secret" not in error.message


def test_refusals_say_which_limit_and_when_to_come_back():
    budget = errors.refused(Refusal("budget", "Out of budget.", 60, {"x-ratelimit-limit-requests": "5"}))
    assert (budget.status, budget.type, budget.code, budget.outcome) == (
        429,
        "insufficient_quota",
        "insufficient_quota",
        Outcome.REFUSED,
    )
    assert budget.headers == {"x-ratelimit-limit-requests": "5", "Retry-After": "60"}
    assert errors.refused(Refusal("requests", "Slow down.", 1, {})).code == "rate_limit_exceeded"


def test_a_model_loading_says_when_to_come_back():
    error = status_error(503, b'{"error": "loading", "estimated_time": 12.3}')
    assert (error.status, error.code, error.headers) == (503, "model_loading", {"Retry-After": "13"})
    told = status_error(503, b'{"error": "busy"}', {"retry-after": "7"})
    assert (told.status, told.code, told.headers) == (503, "upstream_unavailable", {"Retry-After": "7"})


def test_a_retried_failure_tells_the_client_not_to_retry():
    failure = UpstreamError(UpstreamError.STATUS, status=500, body=b"busy")
    failure.retried = True
    assert errors.from_upstream(failure).headers == errors.NO_RETRY


def test_the_rejected_token_is_named_never_shown():
    error = errors.from_upstream(UpstreamError(UpstreamError.STATUS, status=401, body=b"no"), "team token")
    assert "'team token'" in error.message and "(HTTP 401: no)" in error.message


def rest_error(exc: Exception):
    return errors.rest_framework_handler(exc, {"request": None, "view": None})


def test_the_api_answers_drf_errors_in_openai_format():
    response = rest_error(drf_exceptions.NotFound("No user is named 'x'."))
    assert response.status_code == 404
    assert response.data == errors.not_found("No user is named 'x'.", code="not_found").body()
    denied = rest_error(drf_exceptions.PermissionDenied("Staff only."))
    assert denied.data["error"] == {
        "message": "Staff only.",
        "type": "permission_error",
        "param": None,
        "code": "permission_denied",
    }
    assert rest_error(drf_exceptions.APIException()).data["error"]["type"] == "server_error"


def test_the_api_401_and_503_are_the_gateways():
    rejected = rest_error(drf_exceptions.AuthenticationFailed("Invalid API key.", code="invalid_api_key"))
    assert (rejected.status_code, rejected.data) == (401, errors.invalid_api_key().body())
    assert rejected["WWW-Authenticate"] == "Bearer"
    unavailable = rest_error(ServiceUnavailable())
    assert (unavailable.status_code, unavailable.data) == (503, errors.service_unavailable().body())
    assert unavailable["Retry-After"] == "5"


def test_other_exceptions_are_left_to_django():
    assert rest_error(RuntimeError("boom")) is None
