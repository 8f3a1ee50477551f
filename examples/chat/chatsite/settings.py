"""Settings of the chat example: a plain Django site plus wsbridge_django."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "chat-example-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]
ROOT_URLCONF = "chatsite.urls"
WSGI_APPLICATION = "chatsite.wsgi.application"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

INSTALLED_APPS = [
    "wsbridge_django",  # first: its runserver serves WebSockets too
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.staticfiles",
    "chat",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        # `make demo` keeps it in an ignored .tmp/ folder.
        "NAME": os.environ.get("CHAT_DB", str(BASE_DIR / ".tmp" / "chat.sqlite3")),
    }
}
STATIC_URL = "/static/"

# Every room keeps its last 200 messages for an hour (a reconnecting page gets
# what it missed) and has presence (who is online, joins and leaves).
GROUPS = {"chat_*": {"history": 200, "history_ttl": 3600, "presence": True}}

# One process, in-memory layer: the embedded default (its history does not
# outlive the process). For several processes, or to lose nothing across a
# restart, the Redis layer:
# WSBRIDGE = {"LAYERS": {"default": {"BACKEND": "redis", "CONFIG": {"hosts": ["redis://127.0.0.1:6379"]}}}}
WSBRIDGE = {"LAYERS": {"default": {"BACKEND": "memory", "CONFIG": {"groups": GROUPS}}}}
if os.environ.get("CHAT_REDIS"):
    WSBRIDGE["LAYERS"] = {
        "default": {
            "BACKEND": "redis",
            "CONFIG": {
                "hosts": [os.environ["CHAT_REDIS"]],
                "prefix": os.environ.get("CHAT_REDIS_PREFIX", "wsbridge"),
                "groups": GROUPS,
                "presence_lease": float(os.environ.get("CHAT_PRESENCE_LEASE", "15")),
            },
        }
    }
