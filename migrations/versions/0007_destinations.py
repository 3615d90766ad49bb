"""One outbox row per result and destination (several destinations); DICOMweb senders' tokens.

A result now goes to every configured destination (a PACS by C-STORE, an archive by STOW-RS, a
RIS ...), each with its own state, attempts and back-off, so ``result_objects`` holds one row
per (SOP Instance UID, destination): the unique key moves from ``sop_instance_uid`` alone to the
pair. ``destination`` widens to 512 characters for DICOMweb URLs. ``api_tokens`` holds the
bearer tokens of STOW-RS senders (``deepcovid tokens add``): a name and the token's SHA-256.

Revision ID: 0007
Revises: 0005
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# 0002 declared the column unique without a name: SQLite reflects it unnamed (the convention
# names it in a batch copy), PostgreSQL named it <table>_<column>_key.
_CONVENTION = {"uq": "uq_%(table_name)s_%(column_0_name)s"}
_OLD_SQLITE = "uq_result_objects_sop_instance_uid"
_OLD_POSTGRESQL = "result_objects_sop_instance_uid_key"
_NEW = "uq_result_objects_sop_instance_uid_destination"


def _old_name() -> str:
    return _OLD_POSTGRESQL if op.get_bind().dialect.name == "postgresql" else _OLD_SQLITE


def upgrade() -> None:
    """Unique (sop_instance_uid, destination) instead of sop_instance_uid; a wider destination."""
    with op.batch_alter_table("result_objects", naming_convention=_CONVENTION) as batch:
        batch.drop_constraint(_old_name(), type_="unique")
        batch.alter_column(
            "destination", existing_type=sa.String(128), type_=sa.String(512), nullable=True
        )
        batch.create_unique_constraint(_NEW, ["sop_instance_uid", "destination"])
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True)),
    )


def downgrade() -> None:
    """Back to one row per result (fails while a result has rows for several destinations)."""
    op.drop_table("api_tokens")
    with op.batch_alter_table("result_objects", naming_convention=_CONVENTION) as batch:
        batch.drop_constraint(_NEW, type_="unique")
        batch.alter_column(
            "destination", existing_type=sa.String(512), type_=sa.String(128), nullable=True
        )
        batch.create_unique_constraint(_old_name(), ["sop_instance_uid"])
