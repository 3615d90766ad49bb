"""Timestamps are NOT NULL, as ``store/schema.py`` always declared.

0001 and 0002 created ``created_at``/``updated_at``/``at`` as nullable while the models said
``nullable=False``; the schema-versus-migrations test found the drift. Every row has them set
(the store writes them on insert), so the change only adds the constraint.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS: dict[str, tuple[str, ...]] = {
    "jobs": ("created_at", "updated_at"),
    "job_events": ("at",),
    "result_objects": ("created_at", "updated_at"),
}


def _set_nullable(nullable: bool) -> None:
    # SQLite rebuilds each table (copy, drop, rename). With foreign keys on, dropping ``jobs``
    # would cascade-delete every event and result object, so they are off during the rebuild.
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        op.execute("PRAGMA foreign_keys=OFF")
    for table, columns in COLUMNS.items():
        with op.batch_alter_table(table) as batch:  # SQLite rebuilds the table
            for column in columns:
                batch.alter_column(
                    column, existing_type=sa.DateTime(timezone=True), nullable=nullable
                )
    if sqlite:
        op.execute("PRAGMA foreign_keys=ON")


def upgrade() -> None:
    """Add NOT NULL to the timestamps."""
    _set_nullable(False)


def downgrade() -> None:
    """Drop the NOT NULL constraints again."""
    _set_nullable(True)
