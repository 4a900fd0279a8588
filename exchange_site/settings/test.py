"""Settings for pytest: real PostgreSQL + TimescaleDB and real Redis, on a Redis DB of its own."""

import os

from .base import *  # noqa: F403
from .base import DATABASES

# The test command points REDIS_URL at a database number reserved for tests
# (redis://127.0.0.1:6379/11 by default) and the suite flushes only that one.
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/11")
RQ_QUEUES = {name: {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 600} for name in ("default", "messages", "db_processor")}
# Redis pub/sub ignores the database number: a prefix of its own keeps two test runs on one
# server (or a test run and a running exchange) from hearing each other's groups.
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL], "prefix": "bourse-test-" + REDIS_URL.rsplit("/", 1)[-1]},
    }
}
CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL, "KEY_PREFIX": "bourse-test"}}
DATABASES["default"]["CONN_MAX_AGE"] = 0
# No pool: pytest-django swaps the database name for the test database under it.
DATABASES["default"].get("OPTIONS", {}).pop("pool", None)
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
DEBUG = False
# Serve static files straight from the finders: tests never run collectstatic.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
