"""Run N greenlets doing ``SELECT pg_sleep(S)`` with psycopg2, with or without psycogreen.

    python pg_greenlets.py N S green|plain  -> prints the wall time in seconds

Used by test_django_postgres.py: without psycogreen the queries serialize
(the C driver blocks the whole process), with it they overlap.
"""

from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402

count, seconds, mode = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
if mode == "green":
    from wsbridge_django.db import patch_psycopg2

    assert patch_psycopg2()
import psycopg2  # noqa: E402


def query() -> None:
    conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT pg_sleep(%s)", [seconds])
    finally:
        conn.close()


started = time.monotonic()
gevent.joinall([gevent.spawn(query) for _ in range(count)], raise_error=True)
print(f"{time.monotonic() - started:.3f}")
