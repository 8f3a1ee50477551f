"""The test project's wsgi.py: the one line a site changes."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djtest.settings")

import django  # noqa: E402

if django.VERSION < (4, 2):
    # Django 3.2 speaks psycopg2 only: make it wait through gevent, as a 3.2 site
    # must (docs/topics/upgrading-django.rst); 4.2+ uses psycopg 3 here.
    from wsbridge_django.db import patch_psycopg2

    patch_psycopg2()

from wsbridge_django.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
