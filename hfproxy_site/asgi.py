"""ASGI entry point: `uvicorn hfproxy_site.asgi:application`."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hfproxy_site.settings")
site = get_asgi_application()  # Django's own handler (and django.setup())

from gateway.asgi import GatewayASGI  # noqa: E402  (needs Django set up)
from gateway.handler import ApiHandler  # noqa: E402
from gateway.routing import Router  # noqa: E402

# Our ASGI layer (lifespan, body limit) around the two stacks: the API's handler, Django's own.
application = GatewayASGI(Router(api=ApiHandler(), site=site))
