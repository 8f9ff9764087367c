"""Test settings: the project's one settings module, with an environment fit for tests.

The variables must be set before that module is imported, so this cannot be a fixture.
"""

import os
import tempfile

os.environ["ENV_FILE"] = ""  # a developer's .env must not steer the tests
os.environ.setdefault("SECRET_KEY", "insecure-test-secret-key-0123456789abcdefghijklmnopqrstuvwxyz")
os.environ["HF_TOKEN"] = "hf_testtoken_for_the_suite_only"
os.environ["HF_BASE_URL"] = "http://router.test/v1"
os.environ["HF_INFERENCE_URL"] = "http://router.test/hf-inference"
os.environ["HF_HUB_URL"] = "http://hub.test"
os.environ["UPSTREAM_TRANSPORT"] = "aiohttp"
os.environ["FIELD_ENCRYPTION_KEY"] = "Jl5dCJQpxBfIsBZV8vsj0mD8Q4QOEbbS3bQw9Dt1Rmo="  # a test-only Fernet key
os.environ["USAGE_FLUSH_INTERVAL"] = "0.05"
# One journal folder per test process, never the project's.
os.environ["USAGE_JOURNAL_DIR"] = os.path.join(tempfile.gettempdir(), f"hfproxy-tests-journal-{os.getpid()}")
os.environ.setdefault("ALLOWED_HOSTS", "testserver,localhost,127.0.0.1")

from hfproxy_site.settings import *  # noqa: F403

# Password hashing at production strength costs half a second a user; tests need none of it.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    # A file, not Django's shared-cache in-memory database: there a table lock fails at once
    # instead of waiting out SQLite's busy timeout, so a key lookup racing the usage writer
    # failed whenever a busy machine made them overlap. One file per test process.
    DATABASES["default"]["TEST"] = {  # noqa: F405
        "NAME": os.path.join(tempfile.gettempdir(), f"hfproxy-tests-{os.getpid()}.sqlite3")
    }

# This test process's own counters in a shared Redis (REDIS_URL, when the limit tests run on
# it): another run resetting its counters cannot touch ours.
REDIS_KEY_PREFIX = f"hfproxy-test:{os.getpid()}:"
