"""rule state for flapping

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 02:36:51.074514
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Rows written before flap detection existed are pending or firing with a true condition and no history.
    with op.batch_alter_table("rule_series_state", schema=None) as batch_op:
        batch_op.add_column(sa.Column("condition", sa.Boolean(), server_default=sa.true(), nullable=False))
        batch_op.add_column(sa.Column("changes", sa.JSON(), server_default="[]", nullable=False))
        batch_op.add_column(sa.Column("flapping", sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    # Inactive rows only carry flap history, which the older schema has no use for.
    op.execute(sa.text("DELETE FROM rule_series_state WHERE state = 'inactive'"))
    with op.batch_alter_table("rule_series_state", schema=None) as batch_op:
        batch_op.drop_column("flapping")
        batch_op.drop_column("changes")
        batch_op.drop_column("condition")
