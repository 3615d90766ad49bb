"""The operator console: its users and their sessions; the accession number on jobs.

``users`` holds who may log in (argon2 password hashes, a role: viewer or admin);
``console_sessions`` the logged-in sessions (only the SHA-256 of each cookie's token, so a copy
of the database opens no session). ``jobs.accession_number`` is recorded at receipt, so that an
operator can find a job by the accession number a radiologist quotes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``users`` and ``console_sessions``; add ``jobs.accession_number``."""
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("accession_number", sa.String(16)))
    op.create_index("ix_jobs_accession_number", "jobs", ["accession_number"])
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_login_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "console_sessions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column(
            "user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_console_sessions_user_id", "console_sessions", ["user_id"])


def downgrade() -> None:
    """Drop the console's tables and the accession number."""
    op.drop_table("console_sessions")
    op.drop_table("users")
    op.drop_index("ix_jobs_accession_number", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("accession_number")
