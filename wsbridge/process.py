"""This process: does it serve connections, how many siblings serve beside it.

Small facts that several parts ask about and none owns:

* :func:`mark_serving` / :func:`is_serving`: a wrapped app has taken a
  request or a connection runner started here. The in-memory layer warns
  (once) when a process that serves nothing sends through it: the message
  can only reach this process, which has no connections (a management
  shell, a cron job).
* :func:`expected_processes`: how many processes serve the site
  (``WEB_CONCURRENCY``, gunicorn's ``-w``), for the start-up refusal of an
  in-memory layer shared by several workers.
"""

from __future__ import annotations

import os
import socket
import sys

__all__ = ["mark_serving", "is_serving", "expected_processes", "gunicorn_workers", "identity"]

_serving = False


def mark_serving() -> None:
    """Note that this process serves connections (cheap; called on every new connection)."""
    global _serving
    _serving = True


def is_serving() -> bool:
    """True once a wrapped app took a request or a consumer connection started here."""
    return _serving


def identity() -> str:
    """``host:pid``: how ``wsbridge status`` names this process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def in_gunicorn() -> bool:
    """True in a gunicorn master or worker process."""
    return "gunicorn.arbiter" in sys.modules or os.path.basename(sys.argv[0] or "").startswith(
        "gunicorn"
    )


def expected_processes(configured: int | None = None) -> int:
    """How many processes will serve this site, as far as can be told.

    ``configured`` when given (Django's ``WSBRIDGE["PROCESSES"]``); else
    ``WEB_CONCURRENCY``; else gunicorn's ``-w``/``--workers`` from
    ``GUNICORN_CMD_ARGS`` or from the command line of a gunicorn process
    (or the running arbiter's configuration); else 1.
    """
    if configured:
        return int(configured)
    env = os.environ.get("WEB_CONCURRENCY", "").strip()
    if env.isdigit():
        return int(env)
    workers = gunicorn_workers(os.environ.get("GUNICORN_CMD_ARGS", ""))
    if workers is None and in_gunicorn():
        workers = gunicorn_workers(" ".join(sys.argv[1:]))
    return workers or 1


def gunicorn_workers(cmdline: str) -> int | None:
    """The ``-w N`` / ``--workers N`` / ``--workers=N`` of a command line, or None."""
    words = cmdline.split()
    for i, word in enumerate(words):
        for flag in ("-w", "--workers"):
            if word == flag and i + 1 < len(words) and words[i + 1].isdigit():
                return int(words[i + 1])
            if word.startswith(flag + "=") and word[len(flag) + 1 :].isdigit():
                return int(word[len(flag) + 1 :])
            if flag == "-w" and word.startswith("-w") and word[2:].isdigit():
                return int(word[2:])
    return None
