"""Alembic environment and versions of the job store (``deepcovid db upgrade``)."""
