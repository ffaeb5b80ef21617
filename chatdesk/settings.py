"""chatdesk settings, read from environment variables.

Every variable is listed with its default in `.env.example` and README.md. The helpers below fail loudly
(ImproperlyConfigured) on a bad value rather than guessing.

Two shapes:
- embedded (no DATABASE_URL, no REDIS_URL): SQLite under var/, Celery over kombu's filesystem transport,
  live events through the in-memory channel layer plus a database tail (see chats/events.py);
- production: DATABASE_URL=postgres://…, REDIS_URL=redis://… — PostgreSQL, Redis broker, channels_redis.
"""

from __future__ import annotations

import os
import secrets
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from agents.daemon import toolspec
from agents.daemon.addresses import DEFAULT_AGENT_URL_ALLOW, AddressAllowlist

BASE_DIR = Path(__file__).resolve().parent.parent

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false, yes/no), got {raw!r}.")


def env_int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}.") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}.")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name} must be at most {maximum}, got {value}.")
    return value


def env_float(
    name: str, default: float, *, minimum: float | None = None, maximum: float | None = None
) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}.") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}.")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name} must be at most {maximum:g}, got {value:g}.")
    return value


def env_decimal(name: str, default: Decimal | None, *, minimum: Decimal | None = None) -> Decimal | None:
    """Return a decimal setting; an empty value means None (for example "no budget")."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    if raw.strip() == "":
        return None
    try:
        value = Decimal(raw.strip())
    except InvalidOperation:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}.") from None
    if not value.is_finite() or (minimum is not None and value < minimum):
        raise ImproperlyConfigured(f"{name} must be a finite number of at least {minimum}, got {raw!r}.")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


VAR_DIR = Path(env_str("CHATDESK_VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def _secret_key() -> str:
    """Return SECRET_KEY from the environment, else one generated once into var/ (never committed)."""
    if key := env_str("SECRET_KEY"):
        return key
    path = VAR_DIR / "secret_key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(50))
    return path.read_text().strip()


SECRET_KEY = _secret_key()
# Old keys, still accepted for signatures (sessions) and for decrypting secrets at rest: see crypto.py.
SECRET_KEY_FALLBACKS = env_list("SECRET_KEY_FALLBACKS", [])
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "chatdesk",
    "agents",
    "chats",
    "desktop",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "chatdesk.urls"
ASGI_APPLICATION = "chatdesk.asgi.application"
WSGI_APPLICATION = None

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

DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 0))}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(VAR_DIR / "chatdesk.sqlite3"),
            # Web, worker and agent processes share the file: wait for the write lock rather than fail.
            # WAL: readers (the stream's event tail) never block the writer, and a commit is one append
            # instead of a rollback journal's several syncs (turns start sooner: bench/bench_engine.py).
            "OPTIONS": {
                "timeout": 20,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "chat-list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"  # WhiteNoise serves from the finders; this only has to exist
STATIC_ROOT.mkdir(exist_ok=True)
# noVNC comes from its npm package, installed by `make` into node_modules/ (never committed).
STATICFILES_DIRS = [p for p in [BASE_DIR / "node_modules" / "@novnc"] if p.exists()]
# daphne serves no static files: WhiteNoise does, straight from the finders (no collectstatic step needed).
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media")))
MEDIA_URL = "media/"

# Request bodies over 1 MiB are refused with 413 (chatdesk.middleware.BodySizeLimitMiddleware).
DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024
CHATDESK_MAX_BODY_BYTES = 1024 * 1024
MIDDLEWARE.insert(0, "chatdesk.middleware.BodySizeLimitMiddleware")

REDIS_URL = env_str("REDIS_URL")

# Celery: Redis in production, kombu's filesystem transport in the embedded default.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_IGNORE_RESULT = True  # turns report through the database, never through a result backend
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Separate deployments (or test runs) sharing one Redis use different queue names and key prefixes.
CELERY_TASK_DEFAULT_QUEUE = env_str("CHATDESK_CELERY_QUEUE", "chatdesk")
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    # kombu's Redis transport with one defect mended: without it a worker running a turn exits for good
    # when Redis restarts (see chatdesk/broker.py).
    CELERY_BROKER_TRANSPORT = "chatdesk.broker:Transport"
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {"visibility_timeout": 3600}
else:
    _queue_dir = VAR_DIR / "celery"
    for _sub in ("in", "processed", "control"):
        (_queue_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir / "in"),
        "data_folder_out": str(_queue_dir / "in"),
        "processed_folder": str(_queue_dir / "processed"),
        "control_folder": str(_queue_dir / "control"),
        "store_processed": False,
        # The filesystem transport has no way to wake a worker: it polls the folder, by default every
        # second, so a turn waited up to 1 s to start. A listing of a small folder costs microseconds, so
        # polling every 50 ms starts turns about as fast as Redis does for well under 1 % of a core while
        # idle (bench/bench_engine.py measures both).
        "polling_interval": env_float("CHATDESK_EMBEDDED_POLL_SECONDS", 0.05, minimum=0.001),
    }

# channels_redis receives with a blocking BZPOPMIN of RedisChannelLayer.brpop_timeout (5 s). redis-py 8
# gives every connection a 5 s socket timeout by default, so an idle stream's receive timed out and daphne
# closed it with 1011 every ~5 s. Reads get a timeout well above the blocking one (the contract test in
# tests/chatdesk/test_channel_layer.py checks the relation); TCP keepalive finds a dead Redis meanwhile.
CHANNEL_LAYER_SOCKET_TIMEOUT = 30.0
CHANNEL_LAYERS: dict[str, dict[str, Any]]
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [
                    {
                        "address": REDIS_URL,
                        "socket_timeout": CHANNEL_LAYER_SOCKET_TIMEOUT,
                        "socket_connect_timeout": 5.0,
                        "socket_keepalive": True,
                    }
                ],
                "prefix": env_str("CHATDESK_CHANNELS_PREFIX", "chatdesk"),
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

REST_FRAMEWORK: dict[str, Any] = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "chatdesk.auth.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": env_int("CHATDESK_PAGE_SIZE", 50, minimum=1),
    "DEFAULT_SCHEMA_CLASS": "chatdesk.schema.AutoSchema",
    "EXCEPTION_HANDLER": "chatdesk.api.exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["chatdesk.parsers.JSONParser"],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
if DEBUG:
    REST_FRAMEWORK["DEFAULT_RENDERER_CLASSES"].append("rest_framework.renderers.BrowsableAPIRenderer")

SPECTACULAR_SETTINGS = {
    "TITLE": "chatdesk API",
    "DESCRIPTION": "Chats with an AI agent that can use a computer. Experimental API.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": "/api/experimental",
    # Swagger UI from the installed sidecar package: /api/docs/ works with no internet access.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "ChatStatusEnum": "chats.models.Chat.Status",
        "WorkspaceAgentStatusEnum": "agents.models.WorkspaceAgent.Status",
        "RecordingKindEnum": "chats.models.Recording.Kind",
        "RecordingStateEnum": "chats.models.Recording.State",
        "ApprovalStateEnum": "chats.models.Approval.State",
        "ApprovalPolicyEnum": "chats.models.ApprovalPolicy",
    },
}

# --- chatdesk -----------------------------------------------------------------------------------
# Anthropic access when no enabled ChatProvider row has a key.
ANTHROPIC_API_KEY = env_str("ANTHROPIC_API_KEY")
ANTHROPIC_BASE_URL = env_str("ANTHROPIC_BASE_URL")
CHATDESK_MODEL = env_str("CHATDESK_MODEL", "claude-sonnet-5-5")
CHATDESK_COMPUTER_USE_MODEL = env_str("CHATDESK_COMPUTER_USE_MODEL", "claude-opus-5-5")
CHATDESK_MAX_STEPS = env_int("CHATDESK_MAX_STEPS", 200, minimum=1)
CHATDESK_MAX_OUTPUT_TOKENS = env_int("CHATDESK_MAX_OUTPUT_TOKENS", 16000, minimum=1)
CHATDESK_KEEP_SCREENSHOTS = env_int("CHATDESK_KEEP_SCREENSHOTS", 3, minimum=0)
# Screenshots leave the request this many at a time, so between KEEP and KEEP + BATCH - 1 are sent and the
# prompt cache's prefix stays the same between batches (chats/engine/request.py).
CHATDESK_SCREENSHOT_PRUNE_BATCH = env_int("CHATDESK_SCREENSHOT_PRUNE_BATCH", 10, minimum=1)
# Default budget of a new root chat's tree in USD; empty: no budget (chats/pricing.py).
CHATDESK_CHAT_BUDGET_USD = env_decimal("CHATDESK_CHAT_BUDGET_USD", Decimal(10), minimum=Decimal(0))
# Which computer actions wait for a person's approval in a new root chat that names no policy: off, risky
# (type, key, hold_key) or all (every action but screenshot, zoom, cursor_position, mouse_move, wait).
CHATDESK_APPROVAL_POLICY = env_str("CHATDESK_APPROVAL_POLICY", "off").strip().lower()
if CHATDESK_APPROVAL_POLICY not in ("off", "risky", "all"):
    raise ImproperlyConfigured(
        f"CHATDESK_APPROVAL_POLICY must be off, risky or all, got {CHATDESK_APPROVAL_POLICY!r}."
    )
# An approval not decided within this many seconds expires: the action is denied.
CHATDESK_APPROVAL_TIMEOUT_SECONDS = env_int("CHATDESK_APPROVAL_TIMEOUT_SECONDS", 900, minimum=1)
# Compact a chat's history once a request would pass this share of its model's context limit.
CHATDESK_COMPACT_THRESHOLD = env_float("CHATDESK_COMPACT_THRESHOLD", 0.7, minimum=0.05)
if CHATDESK_COMPACT_THRESHOLD > 1:
    raise ImproperlyConfigured(
        f"CHATDESK_COMPACT_THRESHOLD is a share of the context limit (at most 1), got {CHATDESK_COMPACT_THRESHOLD}."
    )
CHATDESK_PROVIDER_RETRIES = env_int("CHATDESK_PROVIDER_RETRIES", 4, minimum=0)
CHATDESK_PROVIDER_RETRY_MAX_DELAY = env_float("CHATDESK_PROVIDER_RETRY_MAX_DELAY", 30.0, minimum=0)
# A turn whose worker has not renewed its lease for this long is taken over by the sweep.
CHATDESK_TURN_LEASE_SECONDS = env_int("CHATDESK_TURN_LEASE_SECONDS", 60, minimum=5)
CHATDESK_SWEEP_INTERVAL = env_float("CHATDESK_SWEEP_INTERVAL", 15.0, minimum=1)
# A turn still running after this long is stopped with a clear error (Celery soft time limit; the hard
# limit, a minute later, kills a worker process stuck for good). See chats/tasks.py.
CHATDESK_TURN_TIME_LIMIT = env_int("CHATDESK_TURN_TIME_LIMIT", 6 * 3600, minimum=60)
# A workspace agent is `connected` while its last heartbeat is younger than this. Agents heartbeat every
# 3 s, so a dead one shows `disconnected` within 8 s (one that stops cleanly says so at once).
CHATDESK_AGENT_TIMEOUT_SECONDS = env_int("CHATDESK_AGENT_TIMEOUT_SECONDS", 8, minimum=1)
CHATDESK_AGENT_CONNECT_TIMEOUT = env_float("CHATDESK_AGENT_CONNECT_TIMEOUT", 10.0, minimum=0.1)
# Where the server may connect to reach an agent (hosts, IP networks), checked on the resolved address.
CHATDESK_AGENT_URL_ALLOW = env_list("CHATDESK_AGENT_URL_ALLOW", list(DEFAULT_AGENT_URL_ALLOW))
try:
    AddressAllowlist.parse(CHATDESK_AGENT_URL_ALLOW)
except ValueError as _exc:
    raise ImproperlyConfigured(f"CHATDESK_AGENT_URL_ALLOW: {_exc}.") from None
# A desktop viewer whose browser has not read for this long is dropped (close 4408) instead of buffered.
CHATDESK_DESKTOP_SLOW_VIEWER_SECONDS = env_float("CHATDESK_DESKTOP_SLOW_VIEWER_SECONDS", 10.0, minimum=0.1)
# The workspace tools of root chats (SPEC §11), run by the chat's agent: a bash command is stopped after
# this many seconds, its output is cut to this many bytes (start and end kept), and the text editor's
# `view` shows at most this many characters (its max_characters). Bounds: agents/daemon/toolspec.py.
CHATDESK_BASH_TIMEOUT_SECONDS = env_float(
    "CHATDESK_BASH_TIMEOUT_SECONDS",
    toolspec.BASH_DEFAULT_TIMEOUT,
    minimum=1,
    maximum=toolspec.BASH_MAX_TIMEOUT,
)
CHATDESK_BASH_OUTPUT_LIMIT = env_int(
    "CHATDESK_BASH_OUTPUT_LIMIT",
    toolspec.BASH_DEFAULT_OUTPUT_LIMIT,
    minimum=toolspec.BASH_MIN_OUTPUT_LIMIT,
    maximum=toolspec.BASH_MAX_OUTPUT_LIMIT,
)
CHATDESK_EDITOR_MAX_CHARACTERS = env_int(
    "CHATDESK_EDITOR_MAX_CHARACTERS",
    toolspec.EDITOR_DEFAULT_MAX_CHARACTERS,
    minimum=toolspec.EDITOR_MIN_MAX_CHARACTERS,
    maximum=toolspec.EDITOR_MAX_MAX_CHARACTERS,
)
# Recordings of the desktop (SPEC §9): on/off, frames per second grabbed, and the cap of one recording's
# size (the agent stops recording there; the server never stores more).
CHATDESK_RECORDING = env_bool("CHATDESK_RECORDING", True)
CHATDESK_RECORDING_FPS = env_int("CHATDESK_RECORDING_FPS", 8, minimum=1)
if CHATDESK_RECORDING_FPS > 30:
    raise ImproperlyConfigured(f"CHATDESK_RECORDING_FPS must be at most 30, got {CHATDESK_RECORDING_FPS}.")
CHATDESK_RECORDING_MAX_BYTES = env_int("CHATDESK_RECORDING_MAX_BYTES", 200 * 1024 * 1024, minimum=64 * 1024)
# Stored files (screenshots, recordings) older than this many days lose their bytes (0: kept forever).
CHATDESK_FILE_RETENTION_DAYS = env_int("CHATDESK_FILE_RETENTION_DAYS", 30, minimum=0)
CHATDESK_FILE_PURGE_INTERVAL = env_float("CHATDESK_FILE_PURGE_INTERVAL", 3600.0, minimum=1)
# Keys that encrypt secrets at rest (provider API keys, agent credentials), comma-separated: the first
# encrypts, every one decrypts (rotation). Empty: SECRET_KEY, then SECRET_KEY_FALLBACKS.
CHATDESK_ENCRYPTION_KEY = env_list("CHATDESK_ENCRYPTION_KEY", [])

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"daphne": {"level": "WARNING"}, "django.channels.server": {"level": "WARNING"}},
}

# Behind HTTPS (a TLS-terminating proxy), set CHATDESK_HTTPS=1: secure cookies, HSTS, redirect.
CHATDESK_HTTPS = env_bool("CHATDESK_HTTPS", False)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = SECURE_SSL_REDIRECT = CHATDESK_HTTPS
SECURE_HSTS_SECONDS = 31536000 if CHATDESK_HTTPS else 0
if CHATDESK_HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
