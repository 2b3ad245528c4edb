"""outbox: the "first in line" index covers unsent rows only

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 20:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

_UNSENT = "delivered_at IS NULL AND dead_at IS NULL"


def upgrade() -> None:
    op.create_index('ix_outbox_unsent_ordering', 'outbox', ['ordering_key', 'id'], unique=False,
                    postgresql_where=sa.text(_UNSENT), sqlite_where=sa.text(_UNSENT))
    op.drop_index('ix_outbox_ordering', table_name='outbox')


def downgrade() -> None:
    op.create_index('ix_outbox_ordering', 'outbox', ['ordering_key', 'id'], unique=False)
    op.drop_index('ix_outbox_unsent_ordering', table_name='outbox')
