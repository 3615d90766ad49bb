"""Study-level results: one row per study result (SR + KOS) the node issued for a study.

When the jobs of a study have been quiet for ``study_settle_s``, the worker writes one
study-level SR and one Key Object Selection (``worker/study``); ``study_results`` records each
one it issued, numbered per study (``sequence``), so a study result is built once however many
watchers look (unique study + sequence, unique SR UID), and a later image's replacement can
name its predecessor (a result of a study no image of which was analysed has no SR unless
``send_rejection_sr`` is on: its row records that nothing was sent).
``jobs.study_instance_uid`` gets the index the grouping needs, and ``jobs.updated_at`` the one
that keeps the watcher's poll to the recently changed studies.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``study_results``; index ``jobs.study_instance_uid`` and ``jobs.updated_at``."""
    op.create_index("ix_jobs_study_instance_uid", "jobs", ["study_instance_uid"])
    op.create_index("ix_jobs_updated_at", "jobs", ["updated_at"])
    op.create_table(
        "study_results",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("study_instance_uid", sa.String(64), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("finding", sa.String(16), nullable=False),
        sa.Column("probability", sa.Float()),
        sa.Column("threshold", sa.Float()),
        sa.Column("model_version", sa.String(128)),
        sa.Column("images", sa.Integer(), nullable=False),
        sa.Column("driving_sop_instance_uid", sa.String(64)),
        sa.Column("sr_sop_instance_uid", sa.String(64), unique=True),
        sa.Column("kos_sop_instance_uid", sa.String(64)),
        sa.Column("predecessor_sr_sop_instance_uid", sa.String(64)),
        sa.Column("covers_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("queued_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("study_instance_uid", "sequence", name="uq_study_results_sequence"),
    )
    op.create_index("ix_study_results_study", "study_results", ["study_instance_uid"])


def downgrade() -> None:
    """Drop ``study_results`` and the indexes."""
    op.drop_table("study_results")
    op.drop_index("ix_jobs_updated_at", table_name="jobs")
    op.drop_index("ix_jobs_study_instance_uid", table_name="jobs")
