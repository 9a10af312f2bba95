"""Account lifecycle: verified and disabled accounts, mailed email tokens, client scopes.

Existing accounts start unverified and enabled; existing service clients can introspect only.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import authsvc.db

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("email_verified_at", authsvc.db.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("disabled_at", authsvc.db.UTCDateTime(), nullable=True))
    with op.batch_alter_table("service_clients", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("scopes", sa.String(length=200), server_default="introspect", nullable=False)
        )
    op.create_table(
        "email_tokens",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", authsvc.db.UTCDateTime(), nullable=False),
        sa.Column("expires_at", authsvc.db.UTCDateTime(), nullable=False),
        sa.Column("used_at", authsvc.db.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_email_tokens_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_email_tokens_token_hash")),
    )
    with op.batch_alter_table("email_tokens", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_email_tokens_expires_at"), ["expires_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_email_tokens_user_id"), ["user_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("email_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_email_tokens_user_id"))
        batch_op.drop_index(batch_op.f("ix_email_tokens_expires_at"))
    op.drop_table("email_tokens")
    with op.batch_alter_table("service_clients", schema=None) as batch_op:
        batch_op.drop_column("scopes")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("disabled_at")
        batch_op.drop_column("email_verified_at")
