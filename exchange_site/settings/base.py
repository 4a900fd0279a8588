"""Shared settings. Every value that differs between deployments comes from the environment."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(os.environ.get("BOURSE_VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def embedded_env() -> dict[str, str]:
    """URLs of the embedded servers written by `scripts/bourse.py run` while it runs.

    They let `manage.py` commands started by hand reach the same embedded servers.
    """
    path = VAR_DIR / "embedded.env"
    values: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep:
                values[key.strip()] = value.strip()
    return values


_EMBEDDED = embedded_env()

SECRET_KEY = os.environ.get("SECRET_KEY", "insecure-local-development-key-change-me")
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "http://127.0.0.1:8000,http://localhost:8000")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "rest_framework.authtoken",
    "django_rq",
    "channels",
    "accounts",
    "trading",
    "marketdata",
    "engine_worker",
]

# WhiteNoise last, not second as its docs suggest: it is sync-only, and under daphne (ASGI)
# Django runs every middleware inside it in async mode, where each of Django's middlewares
# hops to a worker thread and back for its process_request/process_response (about a dozen
# hops per request). Innermost, it keeps the chain above it sync: three hops in all.
# Measured on the bot API: +30 % requests/s for a bare 404, +15 % for an order. Static files
# then pass through the (lazy, cheap) middlewares above it.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
]

ROOT_URLCONF = "exchange_site.urls"
ASGI_APPLICATION = "exchange_site.asgi.application"
WSGI_APPLICATION = "exchange_site.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
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

DATABASE_URL = os.environ.get("DATABASE_URL") or _EMBEDDED.get(
    "DATABASE_URL", "postgres://postgres@127.0.0.1:5432/bourse"
)
DATABASES = {
    "default": dj_database_url.parse(
        DATABASE_URL, conn_max_age=int(os.environ.get("DB_CONN_MAX_AGE", "60")), conn_health_checks=True
    )
}
# Plain PostgreSQL, plus TimescaleDB hypertables where the server has the extension.
DATABASES["default"]["ENGINE"] = "exchange_site.db"
# Lets exchange_site.db.prepared prepare the few statements every order request runs (it
# asks with prepare=True); no other query is prepared, Django's cursors bind client-side.
DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = 2**31 - 1
# A connection pool per process (psycopg_pool), for the ASGI server: under daphne every
# request runs in a context of its own, so CONN_MAX_AGE never reuses a connection — each
# request opened a new one and left it open until garbage collection (measured: one
# PostgreSQL session per request, "too many clients" under load). exchange_site/asgi.py
# turns it on (DB_POOL_MAX_SIZE, default 8 there); sync commands and forking RQ workers keep
# persistent connections (0 = no pool).
DB_POOL_MAX_SIZE = int(os.environ.get("DB_POOL_MAX_SIZE", "0"))
if DB_POOL_MAX_SIZE > 0:
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # required with a pool
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1, "max_size": DB_POOL_MAX_SIZE, "timeout": 10,
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("REDIS_URL") or _EMBEDDED.get("REDIS_URL", "redis://127.0.0.1:6379/0")

RQ_QUEUES = {
    name: {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 600}
    for name in ("default", "messages", "db_processor")
}

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL]},
    }
}

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "bourse",
    }
}

AUTH_USER_MODEL = "accounts.User"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "accounts:account"
LOGOUT_REDIRECT_URL = "accounts:login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", BASE_DIR / "staticfiles"))

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.api.authentication.SignedRequestAuthentication",
        # DRF's, with its per-request token look-up as one hand-written query (CPU per order POST).
        "accounts.api.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "exchange_site.api_errors.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

# --- Bourse business settings -------------------------------------------------------------
# Deposits are simulated bank transfers; for a demo exchange they can be confirmed at once.
BOURSE_AUTO_CONFIRM_DEPOSITS = env_bool("BOURSE_AUTO_CONFIRM_DEPOSITS", False)
# Default per-user, per-asset withdrawal limit over a rolling 24 hours (in units of the
# asset); an asset may set its own. None means no limit.
BOURSE_DEFAULT_WITHDRAWAL_LIMIT_24H = (
    Decimal(os.environ["BOURSE_DEFAULT_WITHDRAWAL_LIMIT_24H"])
    if os.environ.get("BOURSE_DEFAULT_WITHDRAWAL_LIMIT_24H")
    else None
)
# Demo markets and a funded market maker on first run (bootstrap_markets); local.py turns it on.
BOURSE_DEMO = env_bool("BOURSE_DEMO", False)
# The user that owns the house (fee) account.
BOURSE_HOUSE_USERNAME = os.environ.get("BOURSE_HOUSE_USERNAME", "house")
# Signed requests: the largest window a client may ask for (ms).
BOURSE_MAX_SIGNATURE_WINDOW_MS = 60_000
# How long an Idempotency-Key's stored answer is kept (hours).
BOURSE_IDEMPOTENCY_TTL_HOURS = int(os.environ.get("BOURSE_IDEMPOTENCY_TTL_HOURS", "24"))
# Trades older than this many days are dropped (whole TimescaleDB chunks; 0 keeps them forever).
BOURSE_TRADE_RETENTION_DAYS = int(os.environ.get("BOURSE_TRADE_RETENTION_DAYS", "365"))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}
