"""hfproxy settings: everything comes from the environment or an optional `.env` file.

`.env.example` documents every variable.
"""

from __future__ import annotations

import ipaddress
import os
import re
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# ENV_FILE="" disables the file (the test suite does, so a developer's .env cannot leak in).
_env_file = os.environ.get("ENV_FILE", str(BASE_DIR / ".env"))
if _env_file and Path(_env_file).is_file():
    environ.Env.read_env(_env_file, overwrite=False)

DEBUG = env.bool("DEBUG", default=False)

SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set SECRET_KEY in the environment or .env "
            "(python -c 'import secrets; print(secrets.token_urlsafe(50))'), "
            "or set DEBUG=true for local development."
        )
    # Development only, and stable so that sessions (and a FIELD_ENCRYPTION_KEY derived from
    # it) survive a restart. Never used without DEBUG.
    SECRET_KEY = "django-insecure-hfproxy-development-only"

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["*"] if DEBUG else [])
if not ALLOWED_HOSTS:
    raise ImproperlyConfigured(
        "ALLOWED_HOSTS is not set: the host names this server answers to, comma-separated "
        "(e.g. proxy.example.com,localhost), or set DEBUG=true for local development."
    )

# --- Production hardening (docs/deployment.md) ------------------------------------------------
# Behind a proxy that terminates TLS and sets X-Forwarded-Proto (nginx, a cloud load balancer):
# requests it marks https count as secure. Never set it without such a proxy in front.
if env.bool("TRUST_X_FORWARDED_PROTO", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Addresses (or networks) of the proxies whose X-Forwarded-For and X-Forwarded-Proto uvicorn
# believes: the client's address (logs, METRICS_ALLOWED_IPS) then comes from them. Empty (the
# default): nobody's, not even localhost's, so that a forged X-Forwarded-For opens nothing.
FORWARDED_ALLOW_IPS = env.list("FORWARDED_ALLOW_IPS", default=[])
# The admin's session and CSRF cookies travel only over HTTPS (SECURE_COOKIES=false for an admin
# reached over plain HTTP on a private network).
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env.bool("SECURE_COOKIES", default=not DEBUG)
# Origins the admin's forms are posted from through a proxy, e.g. https://proxy.example.com.
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# Redirects and HSTS are usually the TLS proxy's job; they can be Django's. The API path never
# redirects (clients would resend a POST as a GET), nor does /health (probed over plain HTTP).
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)

# --- The proxy -----------------------------------------------------------------------------
HF_TOKEN = env.str("HF_TOKEN", default="").strip()
if HF_TOKEN and not (HF_TOKEN.isascii() and HF_TOKEN.isprintable() and " " not in HF_TOKEN):
    raise ImproperlyConfigured("HF_TOKEN contains spaces or control characters; check its value.")
HF_BASE_URL = env.str("HF_BASE_URL", default="https://router.huggingface.co/v1").rstrip("/")
HOST = env.str("HOST", default="0.0.0.0")
PORT = env.int("PORT", default=8000)
# On SIGTERM, how long in-flight requests (streams) may take to finish before they are cut off.
SHUTDOWN_TIMEOUT = env.float("SHUTDOWN_TIMEOUT", default=30.0)
API_PREFIX = "/" + env.str("API_PREFIX", default="/v1").strip("/")
DEFAULT_MODEL = env.str("DEFAULT_MODEL", default="openai/gpt-oss-120b:fireworks-ai")
# Embeddings run on HF Inference's feature-extraction pipeline, not the OpenAI-compatible router.
HF_INFERENCE_URL = env.str("HF_INFERENCE_URL", default="https://router.huggingface.co/hf-inference").rstrip(
    "/"
)
DEFAULT_EMBEDDING_MODEL = env.str("DEFAULT_EMBEDDING_MODEL", default="sentence-transformers/all-MiniLM-L6-v2")
# Speech to text (POST /v1/audio/transcriptions) runs on HF Inference's automatic-speech-recognition.
DEFAULT_TRANSCRIPTION_MODEL = env.str("DEFAULT_TRANSCRIPTION_MODEL", default="openai/whisper-large-v3")
# The router's root, under which each provider has its own routes (`/together/v1/images/
# generations`): by default HF_BASE_URL without its `/v1`.
HF_ROUTER_URL = env.str("HF_ROUTER_URL", default=HF_BASE_URL.removesuffix("/v1")).rstrip("/")
# The Hub, which says which providers serve a model and under which id (inferenceProviderMapping).
HF_HUB_URL = env.str("HF_HUB_URL", default="https://huggingface.co").rstrip("/")
DEFAULT_IMAGE_MODEL = env.str("DEFAULT_IMAGE_MODEL", default="black-forest-labs/FLUX.1-schnell")
# Seconds. REQUEST_TIMEOUT bounds the whole exchange with the router, streams included;
# READ_TIMEOUT bounds the wait for the first byte and every gap between stream chunks.
REQUEST_TIMEOUT = env.float("REQUEST_TIMEOUT", default=300.0)
CONNECT_TIMEOUT = env.float("CONNECT_TIMEOUT", default=10.0)
READ_TIMEOUT = env.float("READ_TIMEOUT", default=120.0)
MAX_REQUEST_BYTES = env.int("MAX_REQUEST_BYTES", default=10 * 1024 * 1024)
# Each worker's connections (gateway.connections): a client must send a request's headers whole,
# at most MAX_HEADER_BYTES, within HEADER_TIMEOUT seconds of connecting or of its previous
# response; past MAX_CONNECTIONS a new connection evicts the one that has owed its headers longest.
# 4,000: UPSTREAM_MAX_CONNECTIONS' streams, and as many idle or arriving connections beside them.
HEADER_TIMEOUT = env.float("HEADER_TIMEOUT", default=10.0)
MAX_HEADER_BYTES = env.int("MAX_HEADER_BYTES", default=32 * 1024)
MAX_CONNECTIONS = env.int("MAX_CONNECTIONS", default=4000)
# Seconds a client may leave its request body unfinished without sending anything (nginx's
# client_body_timeout): then 408.
CLIENT_BODY_TIMEOUT = env.float("CLIENT_BODY_TIMEOUT", default=60.0)
# "aiohttp" (httpx-aiohttp, fast) or "httpx" (httpx's own transport).
UPSTREAM_TRANSPORT = env.str("UPSTREAM_TRANSPORT", default="aiohttp")
# Router connections per worker: one per request in flight, a stream's for its whole length.
# Coding agents hold streams for minutes; one worker holds thousands of waiting streams at ~57 KiB
# each (2,000: ~112 MiB), far fewer generating ones (CPU per event: docs/benchmarks.md "Long
# streams"). Each takes two open files (its client's and this): `serve` checks that they fit.
UPSTREAM_MAX_CONNECTIONS = env.int("UPSTREAM_MAX_CONNECTIONS", default=2000)
# Requests one key may have in flight on each worker (gateway.share): by default half the
# worker's router connections, so that no key can take them all; 0 = no such share.
KEY_MAX_IN_FLIGHT = env.int("KEY_MAX_IN_FLIGHT", default=max(1, UPSTREAM_MAX_CONNECTIONS // 2))
# Seconds the router's model list, and each model's providers from the Hub, are kept.
MODELS_CACHE_TTL = env.float("MODELS_CACHE_TTL", default=60.0)

# --- Accounts ------------------------------------------------------------------------------
# Fernet key(s) encrypting Hugging Face tokens at rest; comma-separated to rotate (first encrypts).
FIELD_ENCRYPTION_KEY = env.str("FIELD_ENCRYPTION_KEY", default="")
# Refuse to start without a usable key (DEBUG derives one from SECRET_KEY): accounts.crypto's check.
from accounts.crypto import fernet_keys  # noqa: E402 (a plain module: no models, no app registry)

fernet_keys(FIELD_ENCRYPTION_KEY, debug=DEBUG)
# Seconds a key lookup is trusted in each process: revocation takes effect within this.
AUTH_CACHE_TTL = env.float("AUTH_CACHE_TTL", default=5.0)
# Seconds between two batch writes of usage records.
USAGE_FLUSH_INTERVAL = env.float("USAGE_FLUSH_INTERVAL", default=0.5)
# Seconds a shutdown waits for the database to take the queued usage records.
USAGE_SHUTDOWN_TIMEOUT = env.float("USAGE_SHUTDOWN_TIMEOUT", default=20.0)
# Each worker's journal of its requests (accounts.journal), replayed should a worker die; local
# to the machine, writable, kept across restarts (a volume in a container).
USAGE_JOURNAL_DIR = env.str("USAGE_JOURNAL_DIR", default=str(BASE_DIR / "usage-journal"))
# Seconds between two fsyncs of the journal: what a machine crash (not a process kill) can lose.
USAGE_JOURNAL_FSYNC = env.float("USAGE_JOURNAL_FSYNC", default=1.0)
# Tokens a request reserves against its key's budgets for its answer when it sets no max_tokens
# (max_completion_tokens, max_output_tokens), besides its prompt's estimate (accounts.limits).
BUDGET_DEFAULT_RESERVATION = env.int("BUDGET_DEFAULT_RESERVATION", default=4096)
# Records a worker keeps in memory while the database is away; the next ones wait in the journal.
USAGE_QUEUE_MAX = env.int("USAGE_QUEUE_MAX", default=10_000)

# --- Alerts (accounts.alerts) --------------------------------------------------------------------
# Percentages of a monthly budget (a key's, a user's default, a team's) that send an alert, once.
ALERT_THRESHOLDS = sorted({int(t) for t in env.list("ALERT_THRESHOLDS", default=["80", "100"])})
# Slack-compatible webhook ({"text": …}); empty: none.
ALERT_WEBHOOK_URL = env.str("ALERT_WEBHOOK_URL", default="")
# Email through SMTP: smtp://user:password@host:587 (submission with STARTTLS: smtp+tls://…);
# empty: no email. DEFAULT_FROM_EMAIL is the sender.
EMAIL_URL = env.str("EMAIL_URL", default="")
if EMAIL_URL:
    globals().update(env.email_url("EMAIL_URL"))
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="hfproxy@localhost")
# Seconds between two checks in each worker (0: none; `manage.py send_alerts` from cron instead),
# and before a failed delivery is tried again.
ALERTS_INTERVAL = env.float("ALERTS_INTERVAL", default=60.0)
ALERT_RETRY_SECONDS = env.float("ALERT_RETRY_SECONDS", default=300.0)

# --- Sign-in (accounts.signin; django-allauth and django-axes) ----------------------------------
# Who may sign in with a password: "everyone" who has one, only "superusers" (everyone else signs
# in with a provider), or nobody ("off": a provider is then required).
PASSWORD_LOGIN = env.str("PASSWORD_LOGIN", default="everyone").strip().lower()
# Who joins on their first sign-in with a provider: a verified address in one of these domains,
# or (Hugging Face) a member of one of these organisations; neither set: nobody, unless SIGNUP_OPEN.
SIGNUP_EMAIL_DOMAINS = env.list("SIGNUP_EMAIL_DOMAINS", default=[])
SIGNUP_HF_ORGS = env.list("SIGNUP_HF_ORGS", default=[])
# Teams a Hugging Face sign-in joins (as a member), by organisation: "acme:ml,acme-research:research".
HF_ORG_TEAMS = env.list("HF_ORG_TEAMS", default=[])
SIGNUP_OPEN = env.bool("SIGNUP_OPEN", default=False)
# A provider's sign-in with a verified address that an existing user has (the first admin's, say)
# signs in as that user, and links them. Only with providers trusted to verify addresses.
SIGNIN_LINK_BY_EMAIL = env.bool("SIGNIN_LINK_BY_EMAIL", default=False)
# Sign in with Hugging Face (an OAuth app of huggingface.co/settings/connected-applications),
# and with any OpenID Connect provider: a JSON list (accounts.providers).
HF_OAUTH_CLIENT_ID = env.str("HF_OAUTH_CLIENT_ID", default="")
HF_OAUTH_CLIENT_SECRET = env.str("HF_OAUTH_CLIENT_SECRET", default="")
HF_OAUTH_SERVER_URL = env.str("HF_OAUTH_SERVER_URL", default="https://huggingface.co")
HF_OAUTH_SCOPES = env.list("HF_OAUTH_SCOPES", default=["openid", "profile"])
OIDC_PROVIDERS = env.str("OIDC_PROVIDERS", default="")
# Password guessing (django-axes): after this many failures for one username from one address,
# that pair is refused for this many minutes.
LOGIN_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
LOGIN_LOCKOUT_MINUTES = env.float("LOGIN_LOCKOUT_MINUTES", default=15.0)

from accounts.providers import openid_connect_apps  # noqa: E402 (a plain module, like accounts.crypto)

_sign_in_apps = openid_connect_apps(
    oidc_providers=OIDC_PROVIDERS,
    hf_client_id=HF_OAUTH_CLIENT_ID,
    hf_client_secret=HF_OAUTH_CLIENT_SECRET,
    hf_server_url=HF_OAUTH_SERVER_URL,
    hf_scopes=HF_OAUTH_SCOPES,
    hf_orgs=SIGNUP_HF_ORGS or HF_ORG_TEAMS,  # either needs read-memberships
)
if PASSWORD_LOGIN not in ("everyone", "superusers", "off"):
    raise ImproperlyConfigured("PASSWORD_LOGIN must be 'everyone', 'superusers' or 'off'.")
if PASSWORD_LOGIN == "off" and not _sign_in_apps:
    raise ImproperlyConfigured(
        "PASSWORD_LOGIN=off leaves no way to sign in: set HF_OAUTH_CLIENT_ID or OIDC_PROVIDERS too."
    )
if SIGNUP_HF_ORGS and not HF_OAUTH_CLIENT_ID:
    raise ImproperlyConfigured("SIGNUP_HF_ORGS needs sign-in with Hugging Face: set HF_OAUTH_CLIENT_ID.")
if LOGIN_FAILURE_LIMIT < 1:
    raise ImproperlyConfigured("LOGIN_FAILURE_LIMIT must be at least 1.")

if UPSTREAM_TRANSPORT not in ("aiohttp", "httpx"):
    raise ImproperlyConfigured("UPSTREAM_TRANSPORT must be 'aiohttp' or 'httpx'.")
if KEY_MAX_IN_FLIGHT < 0:
    raise ImproperlyConfigured("KEY_MAX_IN_FLIGHT must be a number of requests, or 0 for no share.")

# --- Django --------------------------------------------------------------------------------
INSTALLED_APPS = [
    # First, so that its `runserver` (which refuses, pointing to `serve`) wins over staticfiles'.
    "gateway",
    "accounts.apps.HfproxyAdminConfig",  # django.contrib.admin, with hfproxy's site
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "servestatic",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "accounts",
    "allauth",
    "allauth.account",
    "allauth.socialaccount",
    "allauth.socialaccount.providers.openid_connect",
    "axes",
    "portal",
]

# The site's stack (the admin, its static files, the accounts API): Django's own handler, for
# every path but the API's and the probes' (gateway.routing).
MIDDLEWARE = [
    "gateway.middleware.RequestIdMiddleware",
    "gateway.middleware.RefuseNulMiddleware",
    "gateway.middleware.AuditSourceMiddleware",  # what the audit trail says a change came from
    "corsheaders.middleware.CorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # The admin's CSS and JS under uvicorn (Django serves static files only under runserver):
    # ServeStatic, WhiteNoise's fork with native async (WhiteNoise streams through a sync
    # iterator under ASGI, which Django warns about and runs in a thread).
    "servestatic.middleware.ServeStaticMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "gateway.middleware.LanguageMiddleware",  # the pages in the browser's language
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Both work in either mode (no thread hop); axes' last, as its documentation asks.
    "allauth.account.middleware.AccountMiddleware",
    "axes.middleware.AxesMiddleware",
]
# The API's stack (gateway.handler.ApiHandler, also serving /health and /metrics): async-only
# middleware, called on the event loop. No sessions, no CSRF, no redirect to HTTPS (a POST would
# come back as a GET); ALLOWED_HOSTS is checked by the handler, for the API only.
API_MIDDLEWARE = [
    "gateway.middleware.RequestIdMiddleware",
    "gateway.middleware.RefuseNulMiddleware",
    "gateway.middleware.AuditSourceMiddleware",  # what the audit trail says a change came from
    "corsheaders.middleware.CorsMiddleware",
]

# Axes' backend first: it refuses a locked-out username and address before any password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "accounts.backends.PasswordLoginBackend",
]
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "/portal/"

# django-allauth: sign-in with providers only (SOCIALACCOUNT_ONLY: no sign-up, password reset or
# email pages of its own); passwords are checked by hfproxy's sign-in form (accounts.views).
ACCOUNT_ADAPTER = "accounts.adapters.AccountAdapter"
SOCIALACCOUNT_ADAPTER = "accounts.adapters.SocialAccountAdapter"
SOCIALACCOUNT_ONLY = True
ACCOUNT_EMAIL_VERIFICATION = SOCIALACCOUNT_EMAIL_VERIFICATION = "none"  # the provider verified it
ACCOUNT_LOGIN_METHODS = {"username"}
ACCOUNT_SIGNUP_FIELDS = ["email", "username*"]
ACCOUNT_LOGOUT_REDIRECT_URL = "account_login"
SOCIALACCOUNT_AUTO_SIGNUP = True
SOCIALACCOUNT_EMAIL_AUTHENTICATION = SOCIALACCOUNT_EMAIL_AUTHENTICATION_AUTO_CONNECT = SIGNIN_LINK_BY_EMAIL
SOCIALACCOUNT_STORE_TOKENS = False  # a provider's tokens are needed only while signing in
SOCIALACCOUNT_PROVIDERS = {"openid_connect": {"OAUTH_PKCE_ENABLED": True, "APPS": _sign_in_apps}}

# django-axes (LOGIN_FAILURE_LIMIT, LOGIN_LOCKOUT_MINUTES).
AXES_FAILURE_LIMIT = LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(minutes=LOGIN_LOCKOUT_MINUTES)
# A username from one address: guessing cannot lock the admin out from everywhere else.
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "accounts/locked_out.html"

ROOT_URLCONF = "hfproxy_site.urls"
ASGI_APPLICATION = "hfproxy_site.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    options = DATABASES["default"].setdefault("OPTIONS", {})
    options.setdefault("connect_timeout", 3)  # an unreachable server fails in seconds, not minutes
    # No JIT: our queries are short, and the planner's cost of the pages' correlated subqueries
    # made it compile them each time (2.3 of the admin key list's 2.4 s at 10M usage records).
    options.setdefault("options", "-c jit=off")
    # Under ASGI, psycopg's pool instead of CONN_MAX_AGE (connections are per thread there).
    options["pool"] = {
        "min_size": 1,
        "max_size": env.int("DB_POOL_SIZE", default=10),
        # With the server down, a request waits this long for a connection before its 503.
        "timeout": env.float("DB_POOL_TIMEOUT", default=3.0),
    }

# Limit counters (accounts.counters) live in this process's memory, or in Redis (REDIS_URL) so
# that several workers and replicas share them. Django's cache is not used for them.
REDIS_URL = env.str("REDIS_URL", default="")
# Under this prefix our keys live in that database (another deployment can share it under another).
REDIS_KEY_PREFIX = env.str("REDIS_KEY_PREFIX", default="hfproxy:limits:")
# Each worker's connections to Redis: a burst waits for one; seconds to get one, to connect and
# for an answer, after which Redis counts as unavailable.
REDIS_MAX_CONNECTIONS = env.int("REDIS_MAX_CONNECTIONS", default=50)
REDIS_TIMEOUT = env.float("REDIS_TIMEOUT", default=1.0)
# Redis unavailable: requests of keys with limits get 503 (false), or pass, counted in each
# worker's memory as without Redis (true). Keys without limits never need Redis.
LIMITS_FAIL_OPEN = env.bool("LIMITS_FAIL_OPEN", default=False)

# Seconds the usage writer keeps its copy of the price table before reading it again, and
# between refreshes of the table from the router's model list (each worker; 0: only by hand).
PRICES_CACHE_TTL = env.float("PRICES_CACHE_TTL", default=60.0)
PRICES_REFRESH_INTERVAL = env.float("PRICES_REFRESH_INTERVAL", default=6 * 3600.0)

# /metrics (Prometheus): off unless a bearer token or an allow-list of addresses is set.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
METRICS_ALLOWED_IPS = []  # as networks; a bad entry stops the start-up, never a scrape
for _entry in filter(None, (entry.strip() for entry in env.list("METRICS_ALLOWED_IPS", default=[]))):
    try:
        METRICS_ALLOWED_IPS.append(ipaddress.ip_network(_entry, strict=False))
    except ValueError:
        raise ImproperlyConfigured(
            f"METRICS_ALLOWED_IPS: {_entry!r} is not an address or a network"
        ) from None

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# gateway.asgi enforces MAX_REQUEST_BYTES on the bytes actually received; Django's own check
# (on Content-Length) only matters when served some other way.
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BYTES

LANGUAGE_CODE = "en-us"
# The pages' languages: the browser's Accept-Language picks (Django has the admin's Chinese; the
# portal's and the sign-in pages' are in locale/).
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Static files (the admin's) are served by ServeStatic straight from the apps' folders, so no
# collectstatic step is needed to run; set STATIC_ROOT to collect them (the container image does:
# compressed, with hashed names cached for a year).
STATIC_ROOT = env.str("STATIC_ROOT", default="") or None
SERVESTATIC_USE_FINDERS = STATIC_ROOT is None
if STATIC_ROOT:
    STORAGES = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": "servestatic.storage.CompressedManifestStaticFilesStorage"},
    }

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["accounts.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "UNAUTHENTICATED_USER": None,
    "EXCEPTION_HANDLER": "gateway.errors.rest_framework_handler",
}

# --- CORS (django-cors-headers) ------------------------------------------------------------
# On the APIs only (the proxy's and the accounts API, both keyed by a header): never on the admin,
# the index or the probes.
CORS_URLS_REGEX = rf"^({re.escape(API_PREFIX)}|/api)(/|$)"
_cors_origins = env.list("CORS_ORIGINS", default=["*"])
CORS_ALLOW_ALL_ORIGINS = "*" in _cors_origins
CORS_ALLOWED_ORIGINS = [o for o in _cors_origins if o != "*"]
# What JavaScript may read of a response: without these, a browser client cannot see its limits,
# and openai-node in a browser cannot honour retry-after or x-should-retry when it retries.
CORS_EXPOSE_HEADERS = [
    "x-request-id",
    "retry-after",
    "x-should-retry",
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
]
# The headers the official SDKs send (read in openai-node 7.59's and openai-python 3.57's
# sources; the X-Stainless-* ones grow with their helpers: .stream() and .parse() send
# x-stainless-helper-method). "*", the Fetch spec's wildcard, admits the ones they add later:
# browsers honour it for requests without credentials (these carry their key in a header, not a
# cookie), and it never covers Authorization, which must be named.
CORS_ALLOW_HEADERS = [
    "*",
    "accept",
    "authorization",
    "content-type",
    "user-agent",
    "x-api-key",
    "x-request-id",
    "openai-beta",
    "openai-organization",
    "openai-project",
    "x-stainless-arch",
    "x-stainless-async",
    "x-stainless-custom-event-handler",
    "x-stainless-custom-poll-interval",
    "x-stainless-helper-method",
    "x-stainless-lang",
    "x-stainless-os",
    "x-stainless-package-version",
    "x-stainless-poll-helper",
    "x-stainless-raw-response",
    "x-stainless-read-timeout",
    "x-stainless-retry-count",
    "x-stainless-runtime",
    "x-stainless-runtime-version",
    "x-stainless-stream-helper",
    "x-stainless-timeout",
]

# --- Logging -------------------------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    # A line logged while calling the router never carries that call's token (gateway.scrub).
    "filters": {"token": {"()": "gateway.scrub.LogFilter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["token"]}},
    # LOG_LEVEL=DEBUG is for chasing a problem: every library's debug output too (httpx,
    # psycopg, uvicorn…). Secrets stay out of it all the same (tests/faults/test_secrets.py).
    "root": {"handlers": ["console"], "level": "DEBUG" if LOG_LEVEL == "DEBUG" else "WARNING"},
    "loggers": {
        "hfproxy": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        "django": {
            "handlers": ["console"],
            "level": "DEBUG" if LOG_LEVEL == "DEBUG" else "INFO",
            "propagate": False,
        },
    },
}
