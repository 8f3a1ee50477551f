"""``python -m wsbridge_django.launch manage.py CMD ...``: patch gevent first, then run the script.

``manage.py runserver`` and ``runworker`` re-execute themselves through this
module when they find gevent's monkey-patching missing: patching must come
before Django creates its per-thread database connection storage (and
before any database driver is imported), which a command running inside
``manage.py`` is too late for.
"""

from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import runpy  # noqa: E402
import sys  # noqa: E402

LAUNCHED_ENV = "WSBRIDGE_DJANGO_LAUNCHED"


def main() -> None:
    """Run ``sys.argv[1]`` (``manage.py``) as ``__main__`` with the remaining arguments."""
    if len(sys.argv) < 2:
        sys.exit("usage: python -m wsbridge_django.launch manage.py COMMAND [options]")
    script = os.path.abspath(sys.argv[1])
    sys.argv = sys.argv[1:]
    sys.path.insert(0, os.path.dirname(script))  # as `python manage.py` would
    # The PID: exec keeps it, so a process that is still unpatched after its own
    # relaunch can tell; children (the autoreloader's) relaunch themselves.
    os.environ[LAUNCHED_ENV] = str(os.getpid())
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
