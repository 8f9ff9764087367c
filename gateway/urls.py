"""The API handler's URLs (gateway.handler): the API under API_PREFIX, the probes, and errors in
OpenAI's shape. Everything else is hfproxy_site.urls, on Django's own handler."""

import re

from django.conf import settings
from django.urls import include, path, re_path

from gateway import views

_prefix = settings.API_PREFIX.strip("/")

_ID = r"(?P<response_id>[A-Za-z0-9_-]{1,200})"
# Trailing slashes are accepted: some clients add them.
_endpoints = [
    re_path(r"^chat/completions/?$", views.chat_completions, name="chat-completions"),
    re_path(r"^embeddings/?$", views.embeddings, name="embeddings"),
    re_path(r"^audio/transcriptions/?$", views.audio_transcriptions, name="audio-transcriptions"),
    re_path(r"^images/generations/?$", views.image_generations, name="image-generations"),
    re_path(r"^responses/?$", views.responses, name="responses"),
    # Response ids are letters, digits, `_` and `-`: nothing that could reach another router path.
    re_path(rf"^responses/{_ID}/?$", views.response_detail, name="response-detail"),
    re_path(rf"^responses/{_ID}/cancel/?$", views.response_cancel, name="response-cancel"),
    re_path(rf"^responses/{_ID}/input_items/?$", views.response_input_items, name="response-input-items"),
    re_path(r"^messages/?$", views.messages, name="messages"),
    re_path(r"^messages/count_tokens/?$", views.count_tokens, name="count-tokens"),
    re_path(r"^models/?$", views.models, name="models"),
    path("models/<path:model_id>", views.model_detail, name="model-detail"),
]

urlpatterns = [
    path(_prefix + "/", include(_endpoints)),
    # Any other API path is a 404 in OpenAI's shape, in every mode (DEBUG's 404 page is HTML).
    re_path(rf"^{re.escape(_prefix)}(/.*)?$", views.unknown_api_path),
    # The probes (gateway.routing.PROBE_PATHS): answered under any Host.
    path("health", views.health, name="health"),
    path("metrics", views.prometheus, name="metrics"),
]

handler400 = "gateway.views.bad_request"
handler403 = "gateway.views.permission_denied"
handler404 = "gateway.views.not_found"
handler500 = "gateway.views.server_error"
