"""Sessions: no index on expires_at, room on each page, so rotations update them in place.

Every rotation moves its session's expires_at. With that column indexed, PostgreSQL can
never update a session row in place (a HOT update): each rotation added an entry to all four
of the table's indexes, and WAL for each. Purging ended sessions, the one reader of that
index, walks the sessions in primary-key order instead (services/maintenance.py).
Fillfactor 80 leaves the room on each page that in-place updates need.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sessions_expires_at"))
    if op.get_context().dialect.name == "postgresql":
        op.execute("ALTER TABLE sessions SET (fillfactor = 80)")


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute("ALTER TABLE sessions RESET (fillfactor)")
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sessions_expires_at"), ["expires_at"], unique=False)
