"""fast intake: tickets whose opening consequences are still to be written

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 11:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('tickets') as batch:
        batch.add_column(sa.Column('setup_pending', sa.Boolean(), server_default=sa.false(), nullable=False))
    op.create_index('ix_tickets_setup_pending', 'tickets', ['id'], unique=False,
                    postgresql_where=sa.text('setup_pending'), sqlite_where=sa.text('setup_pending'))


def downgrade() -> None:
    op.drop_index('ix_tickets_setup_pending', table_name='tickets')
    with op.batch_alter_table('tickets') as batch:
        batch.drop_column('setup_pending')
