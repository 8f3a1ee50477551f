"""wsbridge's Django app: an existing WSGI site gains realtime by changing one line.

Add ``"wsbridge_django"`` to ``INSTALLED_APPS`` and, in ``wsgi.py``::

    from wsbridge_django.wsgi import get_wsgi_application
    application = get_wsgi_application()

Consumers in each installed app's ``consumers.py`` are found on start-up;
``scope["session"]`` and ``scope["user"]`` come from the site's own session
cookie. See docs/topics/django.rst.
"""
