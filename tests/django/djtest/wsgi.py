"""The test project's wsgi.py: the one line a site changes."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djtest.settings")

from wsbridge_django.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
