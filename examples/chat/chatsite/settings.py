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

# One process, in-memory layer: the embedded default. For several processes:
# WSBRIDGE = {"LAYERS": {"default": {"BACKEND": "redis", "CONFIG": {"hosts": ["redis://127.0.0.1:6379"]}}}}
WSBRIDGE = {}
if os.environ.get("CHAT_REDIS"):
    WSBRIDGE["LAYERS"] = {
        "default": {"BACKEND": "redis", "CONFIG": {"hosts": [os.environ["CHAT_REDIS"]]}}
    }
