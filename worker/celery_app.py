"""The Celery app the worker process runs (``deepcovid worker``), bound to the settings at start.

Its configuration is :func:`store.broker.make_celery`, shared with the publishers.
"""

from __future__ import annotations

from store.broker import get_app

app = get_app()
