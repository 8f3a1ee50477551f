#!/usr/bin/env bash
# Make sure what the tests need is on this machine and running:
#   - a Redis answering on 127.0.0.1:6379 (started here when none answers;
#     redis-server installed with apt-get when the binary is missing);
#   - Debian's chromium for the browser tests (installed when missing).
# Extra Redis instances (shards, fault tests) are started by the tests.
set -euo pipefail

SUDO=""
if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null; then SUDO="sudo"; fi
APT_UPDATED=""
apt_install() {
    if [ -z "$APT_UPDATED" ]; then
        $SUDO apt-get update -qq >/dev/null
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

redis_answers() {
    # PING over a plain TCP socket, so redis-cli is not needed.
    python3 - <<'PY'
import socket, sys
try:
    s = socket.create_connection(("127.0.0.1", 6379), timeout=1)
    s.sendall(b"PING\r\n")
    sys.exit(0 if s.recv(16).startswith(b"+PONG") else 1)
except OSError:
    sys.exit(1)
PY
}

if ! command -v redis-server >/dev/null; then
    echo "services: installing redis-server"
    apt_install redis-server
fi
if ! redis_answers; then
    echo "services: no Redis on 127.0.0.1:6379, starting one"
    mkdir -p /tmp/wsbridge-redis
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" \
        --appendonly no --dir /tmp/wsbridge-redis \
        --logfile /tmp/wsbridge-redis/redis.log
    for _ in $(seq 50); do redis_answers && break; sleep 0.1; done
    redis_answers || { echo "services: Redis did not start" >&2; exit 1; }
fi
echo "services: redis ok on 127.0.0.1:6379"

# PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth) for the Django ORM tests
# (tests/django/test_django_postgres.py makes and drops its own database).
pg_answers() {
    python3 -c "import socket; socket.create_connection(('127.0.0.1', 5432), timeout=1)" 2>/dev/null
}
if ! pg_answers; then
    if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
        echo "services: installing postgresql"
        apt_install postgresql
    fi
    version="$(ls /etc/postgresql | sort -V | tail -1)"
    echo "services: starting PostgreSQL $version"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    for _ in $(seq 50); do pg_answers && break; sleep 0.1; done
    pg_answers || { echo "services: PostgreSQL did not start" >&2; exit 1; }
fi
echo "services: postgresql ok on 127.0.0.1:5432"

if ! command -v chromium >/dev/null; then
    echo "services: installing chromium"
    apt_install chromium
fi
echo "services: chromium ok ($(chromium --version 2>/dev/null | head -1))"
