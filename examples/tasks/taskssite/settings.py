"""Settings of the tasks example."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "tasks-example-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]
ROOT_URLCONF = "taskssite.urls"
WSGI_APPLICATION = "taskssite.wsgi.application"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

INSTALLED_APPS = [
    "wsbridge_django",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.staticfiles",
    "jobs",
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
        "NAME": os.environ.get("TASKS_DB", str(BASE_DIR / ".tmp" / "tasks.sqlite3")),
    }
}
STATIC_URL = "/static/"
WSBRIDGE = {}
if os.environ.get("TASKS_REDIS"):
    WSBRIDGE["LAYERS"] = {
        "default": {"BACKEND": "redis", "CONFIG": {"hosts": [os.environ["TASKS_REDIS"]]}}
    }

#: Seconds each of the demo task's steps takes (the tests make it short).
TASK_STEP_SECONDS = float(os.environ.get("TASK_STEP_SECONDS", "0.5"))
