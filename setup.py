"""Packaging for wsbridge and its Django app (wsbridge_django)."""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(
    r'^__version__ = "([^"]+)"', (HERE / "wsbridge" / "__init__.py").read_text(), re.M
).group(1)

setup(
    # The distribution; the import names stay wsbridge and wsbridge_django
    # ("wsbridge" on PyPI is an unrelated project).
    name="wsbridge-gevent",
    version=VERSION,
    description=(
        "WebSockets, long-poll, groups and background channels for WSGI sites, "
        "on gevent, with the Django Channels programming model"
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="BSD-3-Clause",
    license_files=["LICENSE"],
    project_urls={
        "Documentation": "https://github.com/wsbridge/wsbridge/tree/main/docs",
        "Source": "https://github.com/wsbridge/wsbridge",
        "Changelog": "https://github.com/wsbridge/wsbridge/blob/main/docs/changelog.rst",
        "Issues": "https://github.com/wsbridge/wsbridge/issues",
    },
    python_requires=">=3.10",
    packages=find_packages(include=["wsbridge", "wsbridge.*"])
    + find_packages("contrib/django", include=["wsbridge_django", "wsbridge_django.*"]),
    package_dir={"wsbridge_django": "contrib/django/wsbridge_django"},
    package_data={
        "wsbridge": ["py.typed", "static/wsbridge/*"],
        "wsbridge_django": ["static/wsbridge/*", "templates/**/*"],
    },
    include_package_data=True,
    install_requires=[
        # 25.4.2: under gunicorn -w 2 with 24.10.x and 24.11.1, group messages handled
        # just after a burst of handshakes did not reach their clients (tests/e2e/
        # test_scaleout.py, 4 of 4 runs); 25.4.2 passes it (and gunicorn 23+ needs >= 24.10)
        "gevent>=25.4.2",
        # wsbridge drives websockets' sans-I/O protocol: 16.0 is the first with a separate
        # fragment size limit (and the newest on Python 3.10); capped at the newest major
        # the matrix tests, since its internals move between majors (docs/topics/versions.rst).
        "websockets>=16.0,<18",
        "msgpack>=1.0",
    ],
    extras_require={
        # 5.1: with 5.0.8 a delayed send on a Redis Cluster arrived at once
        # (tests/layers/test_redis_cluster.py); 5.1.1 passes the whole cluster suite
        "redis": ["redis>=5.1", "cryptography>=42"],
        # wsbridge.metrics: the Prometheus exporter (multi-process mode under gunicorn)
        "metrics": ["prometheus_client>=0.17"],
        "django": ["django>=3.2,<6.1"],
        # gunicorn's gevent worker needs gunicorn[gevent] (checked at worker start since 23)
        "gunicorn": ["gunicorn[gevent]>=22.0"],
        # uWSGI in gevent mode (docs/topics/deployment.rst); 2.0.28 is the first for 3.13.
        "uwsgi": ["pyuwsgi>=2.0.28"],
        "dev": [
            "pytest>=8",
            "pytest-timeout>=2.2",
            # property-based fuzzing of every peer-facing input (tests/adversarial)
            "hypothesis>=6.100",
            "gunicorn>=22.0",
            "gevent-websocket>=0.10.1",
            "kosoku>=0.1.0",
            "websocket-client>=1.7",
            "psycopg[binary]>=3.1",
            "psycopg2-binary>=2.9",
            "psycogreen>=1.0",
            "pytest-django>=4.8",
            "cryptography>=42",
            # channels_redis 4.x interop tests and bench/layer_bench.py
            "channels>=4,<5",
            "channels-redis>=4,<5",
            # the supported-versions matrix (noxfile.py); uv installs its environments
            "nox[uv]>=2024.4",
            "pyuwsgi>=2.0.28",
            "prometheus_client>=0.17",
            "ruff>=0.5",
            "mypy>=1.10",
            "sphinx>=7",
            # examples/flask, docs/topics/flask.rst (run by tests/docs), tests/e2e/one_layer_flask.py
            "flask>=3.0",
        ],
    },
    entry_points={"console_scripts": ["wsbridge = wsbridge.cli:main"]},
    # The supported-versions matrix of noxfile.py and docs/topics/versions.rst.
    classifiers=[
        "Framework :: Django",
        "Framework :: Django :: 3.2",
        "Framework :: Django :: 4.2",
        "Framework :: Django :: 5.2",
        "Framework :: Django :: 6.0",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Topic :: Internet :: WWW/HTTP :: WSGI",
        "Topic :: Internet :: WWW/HTTP :: WSGI :: Server",
    ],
)
