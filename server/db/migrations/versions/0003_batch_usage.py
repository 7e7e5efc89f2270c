"""A batch's token usage (OpenAI's `usage` on the batch object), summed as lines finish.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

COLUMNS = ("input_tokens", "cached_tokens", "output_tokens")


def upgrade() -> None:
    with op.batch_alter_table("batches") as table:
        for name in COLUMNS:
            table.add_column(sa.Column(name, sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("batches") as table:
        for name in COLUMNS:
            table.drop_column(name)
