"""The OpenAI-compatible endpoints. Each view is short: the work is in relay, catalog, converter."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from urllib.parse import urlencode

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse

from accounts import allowlist, counters, limits, offloop, runtime, usage
from accounts.models import Outcome
from gateway import (
    audio,
    auth,
    catalog,
    converter,
    errors,
    metrics,
    modellist,
    multipart,
    relay,
    reservations,
    tasks,
)
from gateway import images as images_api
from gateway import messages as messages_api
from gateway import responses as responses_api
from gateway.embeddings import parse_embeddings_request
from gateway.exchange import Exchange
from hfproxy_site import __version__

ApiView = Callable[..., Awaitable[HttpResponse]]


def api_view(*methods: str) -> Callable[[ApiView], ApiView]:
    """Authenticate, open the request's `Exchange`, and turn every failure into an error in the
    client's shape: Anthropic's for Anthropic's clients (`errors.speaks_anthropic`, kept as
    `request.anthropic`), else OpenAI's.

    The view gets the exchange as its second argument. Every request that passed authentication
    is reported exactly once: here, or by a streaming response when its stream ends.
    """

    def decorate(view: ApiView) -> ApiView:
        @functools.wraps(view)
        async def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            request.anthropic = errors.speaks_anthropic(request.path, request.headers)
            response = await _serve(view, methods, request, *args, **kwargs)
            # Each request already has its report line; Django need not log errors again.
            response._has_been_logged = True
            return response

        return wrapper

    return decorate


async def _serve(
    view: ApiView, methods: tuple[str, ...], request: HttpRequest, *args, **kwargs
) -> HttpResponse:
    def render(error: errors.ApiError) -> HttpResponse:
        return error.render(request.anthropic)

    if request.method not in methods:
        return render(errors.method_not_allowed(request.method, list(methods)))
    try:
        caller = await auth.authenticate(request)
    except errors.ApiError as error:
        return render(error)
    exchange = Exchange(request_id=request.request_id, endpoint=view.__name__, caller=caller)
    request.exchange = exchange  # for the handler, should the server stop mid-request
    response = None
    try:
        await exchange.open(await _reservation(request, view.__name__, caller))
        response = await view(request, exchange, *args, **kwargs)
    except asyncio.CancelledError:
        exchange.finish(499, Outcome.CLIENT_DISCONNECTED)
        raise
    except Exception as exc:
        if isinstance(exc, (limits.Refusal, limits.Unavailable)) and not exchange.model_requested:
            # Refused before the body was read: the record still says which model was asked for.
            exchange.model_requested = _model_asked_for(request, view.__name__)
        error = errors.from_exception(exc, caller.token_name, caller.upstream_token)
        exchange.finish(error.status, error.outcome, error.code)
        response = render(error)
    else:
        if not response.streaming:
            exchange.finish(response.status_code, Outcome.OK)
    finally:
        if not exchange.finished and (response is None or not response.streaming):
            # Something failed while failing: the request is still recorded, once.
            exchange.finish(500, Outcome.PROXY_ERROR)
    if exchange.admission is not None:
        for name, value in exchange.admission.headers.items():
            response.setdefault(name, value)
    return response


async def _reservation(request: HttpRequest, endpoint: str, caller) -> limits.Reservation:
    if caller.limits == limits.NO_LIMITS and not caller.scopes:
        return limits.NOTHING
    named = _MODEL_FIELD_DEFAULTS.get(endpoint)
    default = getattr(settings, named) if named else ""
    rules = [caller.limits, *(scope.limits for scope in caller.scopes)]
    return await reservations.of(endpoint, request.body, default, rules)


# A refused request's body is read for its model only up to this size: refusals come in bursts,
# when the worker is busiest, and an agent's conversation can be megabytes.
MODEL_LOOKUP_BYTES = 64 * 1024


def _model_asked_for(request: HttpRequest, endpoint: str) -> str:
    if endpoint not in _MODEL_FIELD_DEFAULTS or len(request.body) > MODEL_LOOKUP_BYTES:
        return ""
    try:
        default = getattr(settings, _MODEL_FIELD_DEFAULTS[endpoint])
        model = converter.parse_json_object(request.body).get("model", default)
    except converter.InvalidRequest:
        return ""
    return model if isinstance(model, str) else ""


# The endpoints whose body names a model, and the setting that names it when the body does not.
_MODEL_FIELD_DEFAULTS = {
    "chat_completions": "DEFAULT_MODEL",
    "embeddings": "DEFAULT_EMBEDDING_MODEL",
    "responses": "DEFAULT_MODEL",
    "messages": "DEFAULT_MODEL",
    "count_tokens": "DEFAULT_MODEL",
    "image_generations": "DEFAULT_IMAGE_MODEL",
}


@api_view("POST")
async def chat_completions(request: HttpRequest, exchange: Exchange) -> HttpResponse:
    chat = converter.parse_chat_request(request.body, settings.DEFAULT_MODEL)
    return await relay.chat(chat, exchange)


@api_view("POST")
async def embeddings(request: HttpRequest, exchange: Exchange) -> HttpResponse:
    parsed = parse_embeddings_request(request.body, settings.DEFAULT_EMBEDDING_MODEL)
    return await tasks.embeddings(parsed, exchange)


@api_view("POST")
async def audio_transcriptions(request: HttpRequest, exchange: Exchange) -> HttpResponse:
    form = await multipart.aparse(request.body, request.META.get("CONTENT_TYPE", ""))
    parsed = audio.parse_transcription_request(form, settings.DEFAULT_TRANSCRIPTION_MODEL)
    return await tasks.transcription(parsed, exchange)


@api_view("POST")
async def image_generations(request: HttpRequest, exchange: Exchange) -> HttpResponse:
    parsed = images_api.parse_request(request.body, settings.DEFAULT_IMAGE_MODEL)
    return await tasks.images(parsed, exchange)


@api_view("POST")
async def responses(request: HttpRequest, exchange: Exchange) -> HttpResponse:
    parsed = responses_api.parse_request(request.body, settings.DEFAULT_MODEL)
    return await relay.forward(parsed, exchange, "/responses", responses_api.RESPONSES)


@api_view("GET", "DELETE")
async def response_detail(request: HttpRequest, exchange: Exchange, response_id: str) -> HttpResponse:
    path = f"/responses/{response_id}" + _query(request, "include")
    return await relay.stored_response(exchange, request.method, path, response_id)


@api_view("POST")
async def response_cancel(request: HttpRequest, exchange: Exchange, response_id: str) -> HttpResponse:
    return await relay.stored_response(exchange, "POST", f"/responses/{response_id}/cancel", response_id)


@api_view("GET")
async def response_input_items(request: HttpRequest, exchange: Exchange, response_id: str) -> HttpResponse:
    path = f"/responses/{response_id}/input_items" + _query(
        request, "after", "before", "include", "limit", "order"
    )
    return await relay.stored_response(exchange, "GET", path, response_id)


@api_view("POST")
async def messages(request: HttpRequest, exchange: Exchange) -> HttpResponse:
    parsed = messages_api.parse_request(request.body, settings.DEFAULT_MODEL)
    path = "/messages" + _query(request, "beta")  # Claude Code's `?beta=true`
    return await relay.forward(
        parsed, exchange, path, messages_api.MESSAGES, headers=_anthropic_headers(request)
    )


@api_view("POST")
async def count_tokens(request: HttpRequest, exchange: Exchange) -> HttpResponse:
    parsed = messages_api.parse_request(request.body, settings.DEFAULT_MODEL)
    path = "/messages/count_tokens" + _query(request, "beta")
    return await relay.count_tokens(parsed, exchange, path, headers=_anthropic_headers(request))


def _query(request: HttpRequest, *names: str) -> str:
    """The query parameters the API defines for this endpoint, encoded afresh; others are not
    the router's business."""
    kept = [(name, value) for name in names for value in request.GET.getlist(name)]
    return "?" + urlencode(kept) if kept else ""


def _anthropic_headers(request: HttpRequest) -> dict[str, str]:
    return {name: request.headers[name] for name in messages_api.FORWARDED_HEADERS if name in request.headers}


@api_view("GET")
async def models(request: HttpRequest, exchange: Exchange) -> HttpResponse:
    listing = await catalog.models(exchange)
    allowed = exchange.caller.allowed_models
    if allowed:  # a key sees only the models it may use
        listing = {
            **listing,
            "data": [m for m in listing["data"] if allowlist.model_allowed(allowed, m["id"])],
        }
    if request.anthropic:  # Anthropic's clients read their own shape
        listing = messages_api.models_list(listing)
    return JsonResponse(listing)


@api_view("GET")
async def model_detail(request: HttpRequest, exchange: Exchange, model_id: str) -> HttpResponse:
    entry = modellist.find_model(await catalog.models(exchange), model_id)
    if entry is None or not allowlist.model_allowed(exchange.caller.allowed_models, model_id):
        raise errors.not_found(f"The model `{model_id}` does not exist.", code="model_not_found")
    if request.anthropic:
        entry = messages_api.model_entry(entry)
    return JsonResponse(entry)


def _database_answers() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:
        return False


# A database whose packets are dropped answers nothing for minutes (a pooled connection waits
# for TCP to give up): a probe slower than this is a failure, said at once.
HEALTH_PROBE_SECONDS = 1.0


class _Probe:
    task: asyncio.Future | None = None


# One probe at a time per loop: while one is out, the next /health waits on it rather than
# leave another of the four database threads stuck on a silent server.
_probe = runtime.PerLoop(_Probe)


async def _database_ok() -> bool:
    probe = _probe.get()
    if probe.task is None or probe.task.done():
        # On the database threads of the API path (which return the connection at once), not on
        # asgiref's one shared thread, where the usage writer's batches would hold a probe up.
        probe.task = asyncio.ensure_future(offloop.run(_database_answers))
        probe.task.add_done_callback(lambda task: task.cancelled() or task.exception())
    try:
        return await asyncio.wait_for(asyncio.shield(probe.task), HEALTH_PROBE_SECONDS)
    except (offloop.DatabaseDown, TimeoutError):  # it did not answer moments ago, or now
        return False


async def health(request: HttpRequest) -> HttpResponse:
    """Liveness for load balancers: the database answers, within HEALTH_PROBE_SECONDS (else
    503). Never calls the router. Redis down is "degraded", still 200: keys without limits
    work, and the others get a prompt 503 (or, with LIMITS_FAIL_OPEN, pass) until it is back:
    no reason to take the replica out."""
    ok, redis = await asyncio.gather(_database_ok(), counters.redis_health())
    return JsonResponse(
        {
            "status": "unavailable" if not ok else "degraded" if redis == "unavailable" else "ok",
            "database": "ok" if ok else "unavailable",
            "redis": redis,
            # How far behind this worker's usage writer is (the database away: it grows).
            "usage_writer": {
                "pending": usage.writer.pending,
                "oldest_seconds": round(usage.writer.oldest_unwritten(), 1),
            },
            "version": __version__,
        },
        status=200 if ok else 503,
    )


async def prometheus(request: HttpRequest) -> HttpResponse:
    """Prometheus' scrape: METRICS_TOKEN as a bearer token, or an address in METRICS_ALLOWED_IPS."""
    if not settings.METRICS_TOKEN and not settings.METRICS_ALLOWED_IPS:
        return errors.not_found("Metrics are off: set METRICS_TOKEN or METRICS_ALLOWED_IPS.").response()
    if request.method not in ("GET", "HEAD"):
        return errors.method_not_allowed(request.method, ["GET"]).response()
    if not metrics.allowed(
        request.META.get("REMOTE_ADDR", ""),
        request.META.get("HTTP_AUTHORIZATION", ""),
        settings.METRICS_TOKEN,
        settings.METRICS_ALLOWED_IPS,
    ):
        return errors.forbidden("Not allowed to read the metrics.").response()
    usage.writer.observe_lag()  # this worker's, fresh
    # Reading the workers' files is file I/O: off the event loop.
    body = await sync_to_async(metrics.exposition, thread_sensitive=False)()
    return HttpResponse(body, content_type=metrics.CONTENT_TYPE_LATEST)


async def index(request: HttpRequest) -> HttpResponse:
    prefix = settings.API_PREFIX
    return JsonResponse(
        {
            "service": "hfproxy",
            "description": "OpenAI-compatible gateway to the Hugging Face inference router",
            "version": __version__,
            "endpoints": {
                "chat_completions": f"POST {prefix}/chat/completions",
                "responses": f"POST {prefix}/responses",
                "messages": f"POST {prefix}/messages",
                "embeddings": f"POST {prefix}/embeddings",
                "audio_transcriptions": f"POST {prefix}/audio/transcriptions",
                "image_generations": f"POST {prefix}/images/generations",
                "models": f"GET {prefix}/models",
                "model": f"GET {prefix}/models/{{id}}",
                "health": "GET /health",
            },
            "default_model": settings.DEFAULT_MODEL,
        }
    )


async def unknown_api_path(request: HttpRequest, *args) -> HttpResponse:
    return not_found(request)


# The API handler's error pages (gateway.urls); the site keeps Django's own.


def _render(request: HttpRequest, error: errors.ApiError) -> HttpResponse:
    return error.render(errors.speaks_anthropic(request.path, request.headers))


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    # The one case seen on the API path: a Host header not in ALLOWED_HOSTS.
    message = str(exception) if isinstance(exception, DisallowedHost) else "Bad request."
    return _render(request, errors.invalid_request(message))


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    return _render(request, errors.forbidden())


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return _render(request, errors.not_found(f"Unknown path: {request.path}"))


def server_error(request: HttpRequest) -> HttpResponse:
    return _render(request, errors.internal_error())
