"""ASGI entry point: `uvicorn hfproxy_site.asgi:application`."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hfproxy_site.settings")

django_application = get_asgi_application()

from gateway.asgi import GatewayASGI  # noqa: E402  (needs Django set up)

application = GatewayASGI(django_application)
