"""A room chat on a plain WSGI app, without Django (see README.md)."""
