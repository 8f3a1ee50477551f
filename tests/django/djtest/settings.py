"""Settings of the test project (tests/django). Environment variables pick what a server test needs.

WSBRIDGE_TEST_DB            "sqlite:<path>" or "postgres:<database>" (default: sqlite in memory)
WSBRIDGE_TEST_SESSIONS      "db", "cache", "cached_db" or "signed_cookies" (default: db)
WSBRIDGE_TEST_REDIS_PREFIX  use the Redis layer at 127.0.0.1:6379 with this key prefix
WSBRIDGE_TEST_PROCESSES     WSBRIDGE["PROCESSES"]
WSBRIDGE_TEST_LEGACY        "1": configured as a Channels 1.x site (djtest.legacy): no WSBRIDGE
                            ROUTING, CHANNEL_LAYERS with a 1.x BACKEND name (asgi_redis when
                            WSBRIDGE_TEST_REDIS_PREFIX is set, else asgiref.inmemory) and ROUTING
"""

import os

SECRET_KEY = "wsbridge-tests-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver", ".example.test"]
ROOT_URLCONF = "djtest.urls"
USE_TZ = True

INSTALLED_APPS = [
    "wsbridge_django",  # before staticfiles: its runserver serves WebSockets too
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.staticfiles",
    "djtest",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}]
STATIC_URL = "/static/"
STATIC_ROOT = os.environ.get("WSBRIDGE_TEST_STATIC_ROOT", "/tmp/wsbridge-djtest-static")
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast tests
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"


def _database():
    spec = os.environ.get("WSBRIDGE_TEST_DB", "sqlite::memory:")
    kind, _, name = spec.partition(":")
    if kind == "postgres":
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": name,
            "USER": "postgres",
            "HOST": "127.0.0.1",
            "PORT": "5432",
            "CONN_MAX_AGE": 0,
            "TEST": {"NAME": f"test_{name}"},
        }
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": name if name != ":memory:" else ":memory:",
    }


DATABASES = {"default": _database()}

SESSION_ENGINE = "django.contrib.sessions.backends." + os.environ.get(
    "WSBRIDGE_TEST_SESSIONS", "db"
)
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

WSBRIDGE = {
    # The test project's consumers live on their own Router (djtest.consumers.router)
    # so in-process tests never depend on the process-wide wsbridge.router.
    "ROUTING": "djtest.consumers",
}
if os.environ.get("WSBRIDGE_TEST_REDIS_PREFIX"):
    WSBRIDGE["LAYERS"] = {
        "default": {
            "BACKEND": "redis",
            "CONFIG": {
                "hosts": ["redis://127.0.0.1:6379/0"],
                "prefix": os.environ["WSBRIDGE_TEST_REDIS_PREFIX"],
            },
        }
    }
if os.environ.get("WSBRIDGE_TEST_RECHECK"):
    WSBRIDGE["IDENTITY"] = {"RECHECK_INTERVAL": float(os.environ["WSBRIDGE_TEST_RECHECK"])}
if os.environ.get("WSBRIDGE_TEST_PROCESSES"):
    WSBRIDGE["PROCESSES"] = int(os.environ["WSBRIDGE_TEST_PROCESSES"])

if os.environ.get("WSBRIDGE_TEST_LEGACY"):
    # The settings a Channels 1.x site had, unchanged: wsbridge reads them (with
    # deprecation warnings naming what to write instead).
    WSBRIDGE = {}
    if os.environ.get("WSBRIDGE_TEST_REDIS_PREFIX"):
        CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "asgi_redis.RedisChannelLayer",
                "CONFIG": {
                    "hosts": [("127.0.0.1", 6379)],
                    "prefix": os.environ["WSBRIDGE_TEST_REDIS_PREFIX"],
                },
                "ROUTING": "djtest.legacy.routing.channel_routing",
            }
        }
    else:
        CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "asgiref.inmemory.ChannelLayer",
                "ROUTING": "djtest.legacy.routing.channel_routing",
            }
        }

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    # wsbridge's log lines (refusals, 1011 closes) on stderr, once, whatever the server.
    "loggers": {"wsbridge": {"handlers": ["console"], "level": "INFO", "propagate": False}},
}
