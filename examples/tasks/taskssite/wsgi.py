"""WSGI entry point. The one line that changed: the import below (was django.core.wsgi)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "taskssite.settings")

from wsbridge_django.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
